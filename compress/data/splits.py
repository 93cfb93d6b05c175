"""Stratified, seeded index splits shared by every data set (test / val hold-outs, train_fraction)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

log = logging.getLogger(__name__)

# Stage salts: each split stage draws from its own stream so changing one fraction leaves the others alone.
STAGE_TEST, STAGE_VAL, STAGE_TRAIN_FRACTION = 0, 1, 2


def stratified_split(
    labels: Sequence[int] | np.ndarray,
    fraction: float,
    *,
    seed: int,
    stage: int,
    min_taken: int = 0,
    min_left: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions 0..n-1 into sorted (taken, left), taking round(fraction * n_c) of every class c.

    The draw depends only on (labels, fraction, seed, stage): never on a global RNG. `min_taken` /
    `min_left` keep at least that many samples of a class on the respective side (when it has them).
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng([seed % (1 << 64), stage])
    taken: list[np.ndarray] = []
    for cls in np.unique(labels):  # sorted classes -> the same draw order on every call
        members = np.flatnonzero(labels == cls)
        members = members[rng.permutation(len(members))]
        n = len(members)
        k = int(np.floor(fraction * n + 0.5))
        k = max(k, min(min_taken, n))
        k = min(k, max(n - min_left, 0))
        taken.append(members[:k])
    chosen = np.sort(np.concatenate(taken)) if taken else np.zeros(0, dtype=np.int64)
    left = np.setdiff1d(np.arange(len(labels)), chosen, assume_unique=True)
    return chosen.astype(np.int64), left.astype(np.int64)


def train_val_split(
    labels: Sequence[int] | np.ndarray, *, val_fraction: float, train_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Positions (train, val) in a training pool: a stratified val hold-out, then a stratified train share.

    val is None when val_fraction == 0: callers then validate on the test split (the KD papers' protocol).
    The val set does not depend on train_fraction, so runs with different train fractions select alike.
    """
    labels = np.asarray(labels)
    if val_fraction > 0:
        val, rest = stratified_split(labels, val_fraction, seed=seed, stage=STAGE_VAL, min_left=1)
    else:
        log.info("val_fraction=0: the validation split is the test split (the protocol of the KD papers)")
        val, rest = None, np.arange(len(labels), dtype=np.int64)
    if train_fraction < 1:
        keep, _ = stratified_split(
            labels[rest], train_fraction, seed=seed, stage=STAGE_TRAIN_FRACTION, min_taken=1
        )
        rest = rest[keep]
    return rest, val
