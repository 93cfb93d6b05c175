"""scikit-learn's bundled handwritten digits (1,797 real 8x8 grey images, 10 classes), upsampled to RGB.

Tiny and offline, so recipes and tests train real models in seconds on a CPU. The 20 % test split,
the val hold-out and the train share are stratified and fixed by `split_seed` alone.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from kdforge.compress.config import DataConfig
from kdforge.compress.data.bundle import DataBundle, tensor_bundle
from kdforge.compress.data.splits import STAGE_TEST, stratified_split, train_val_split

TEST_FRACTION = 0.2
CLASSES = [str(d) for d in range(10)]


@functools.cache
def load_raw() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as (N, 8, 8) float values 0..16 and (N,) int labels, as `load_digits()` gives them.

    Reads scikit-learn's bundled digits.csv.gz directly when it is where load_digits reads it from
    (saves importing scikit-learn, ~1 s); otherwise calls load_digits(). Never downloads.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.origin is not None:
        path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            if table.shape == (1797, 65):
                return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target.astype(np.int64)


def load_images(image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as float (N, 3, image_size, image_size) in [0, 1] (bilinear), and their labels."""
    raw_images, raw_labels = load_raw()
    images = torch.from_numpy(raw_images).float().div_(16.0).unsqueeze(1)
    if image_size != images.shape[-1]:
        images = F.interpolate(
            images, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=False
        )
    return images.expand(-1, 3, -1, -1).contiguous(), torch.from_numpy(raw_labels.copy()).long()


def build(cfg: DataConfig) -> DataBundle:
    """Digits split stratified into train / val / test; shifts only (digits are not flip-symmetric)."""
    images, labels = load_images(cfg.image_size)
    test_pos, pool_pos = stratified_split(
        labels.numpy(), TEST_FRACTION, seed=cfg.split_seed, stage=STAGE_TEST, min_left=1
    )
    train, val = train_val_split(
        labels[pool_pos].numpy(),
        val_fraction=cfg.val_fraction,
        train_fraction=cfg.train_fraction,
        seed=cfg.split_seed,
    )
    train_pos = pool_pos[train]
    # Normalisation from the images of the whole training split (val held out), labelled or not, so
    # networks trained on different shares of it (a teacher with more labels) see the same inputs.
    every, _ = train_val_split(
        labels[pool_pos].numpy(), val_fraction=cfg.val_fraction, train_fraction=1.0, seed=cfg.split_seed
    )
    stats = images[torch.from_numpy(pool_pos[every])]
    mean = stats.mean(dim=(0, 2, 3)).tolist()
    std = stats.std(dim=(0, 2, 3), correction=0).tolist()
    return tensor_bundle(
        cfg,
        (images, labels),
        train_pos,
        None if val is None else pool_pos[val],
        (images, labels),
        test_pos,
        classes=CLASSES,
        mean=mean,
        std=std,
        pad=cfg.image_size // 8,
        flip=False,
    )
