"""A resumed run draws the same `torch`, `numpy` and `random` numbers as the uninterrupted run at that point.

CE and KD draw nothing from the global RNGs, so a resume that forgot to restore them would still end with
identical weights; here a probe draws from all three after every optimizer step, at an epoch boundary and
inside an epoch (a step checkpoint), so a resume that skips the restore fails in seconds."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from kdforge.compress.config import MethodConfig, RunConfig
from kdforge.compress.data import DataBundle, build_data
from kdforge.compress.methods import build_method
from kdforge.compress.models import build
from kdforge.compress.train.checkpoint import read_checkpoint
from kdforge.compress.train.meta import network_meta
from kdforge.compress.train.trainer import Trainer

from tests.compress.conftest import tiny_config

Draw = tuple[list[float], list[float], float]


class Stopped(Exception):
    """Raised by the probe: the run dies there, as if killed, with `last` as its latest checkpoint."""


def _draw() -> Draw:
    """A few numbers from each global RNG a method or augmentation might use."""
    return torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()


def _run(
    config: RunConfig, data: DataBundle, out: Path, *, resume: bool, stop_at: int | None = None
) -> list[Draw]:
    """Train the tiny CE network in `out`, drawing after every optimizer step; dies before the draw of step
    `stop_at` (counted from this process's first step) when given. Returns the draws made."""
    torch.manual_seed(config.seed)
    method = build_method(MethodConfig("ce"), build(config.teacher.arch, data.num_classes), None)
    draws: list[Draw] = []

    def probe() -> None:
        if stop_at is not None and len(draws) + 1 == stop_at:
            raise Stopped
        draws.append(_draw())

    method.after_step = probe  # type: ignore[method-assign]
    trainer = Trainer(
        method,
        data,
        config.teacher_train,
        out,
        seed=config.seed,
        device=torch.device("cpu"),
        meta=network_meta(config.teacher, data, "teacher", "ce", config),
        resume=resume,
        progress=False,
    )
    if stop_at is None:
        trainer.fit()
    else:
        with pytest.raises(Stopped):
            trainer.fit()
    return draws


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, DataBundle, list[Draw]]:
    """The uninterrupted run's draws, step by step."""
    config = tiny_config(
        "teacher.arch=resnet8",
        "data.train_fraction=0.25",
        "teacher_train.epochs=2",
        "teacher_train.checkpoint_every_steps=3",
    )
    data = build_data(config.data)
    return config, data, _run(config, data, tmp_path_factory.mktemp("reference"), resume=False)


@pytest.mark.parametrize("where", ["epoch boundary", "inside an epoch"])
def test_a_resumed_run_draws_what_the_uninterrupted_run_draws(
    reference: tuple[RunConfig, DataBundle, list[Draw]], tmp_path: Path, where: str
) -> None:
    config, data, expected = reference
    steps_per_epoch = len(expected) // config.teacher_train.epochs
    assert steps_per_epoch > 4, "the epoch must hold a step checkpoint"
    stop_at = steps_per_epoch + 1 if where == "epoch boundary" else 5  # a step checkpoint is at step 3
    _run(config, data, tmp_path, resume=False, stop_at=stop_at)
    restored = int(read_checkpoint(tmp_path / "checkpoints" / "last.safetensors").meta["step"])
    assert restored == (steps_per_epoch if where == "epoch boundary" else 3)
    assert expected[restored] != expected[0], "the probe's draws must move the RNGs on"
    resumed = _run(config, data, tmp_path, resume=True)
    assert len(resumed) == len(expected) - restored
    for step, (got, want) in enumerate(zip(resumed, expected[restored:], strict=True), start=restored + 1):
        assert got == want, f"step {step}: the resumed run drew {got}, the uninterrupted run {want}"
