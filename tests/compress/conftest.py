"""Small, fast recipes shared by the training tests (digits at 16x16, a fraction of the train split)."""

from __future__ import annotations

from pathlib import Path

import pytest
from kdforge.compress.config import RunConfig, load_recipe

TINY = [
    "data.image_size=16",
    "data.batch_size=32",
    "data.eval_batch_size=128",
    "teacher.arch=resnet14",
    "student.arch=resnet8",
    "teacher_train.epochs=3",
    "student_train.epochs=3",
    "teacher_train.schedule=cosine",
    "student_train.schedule=cosine",
    "teacher_train.lr=0.1",
    "student_train.lr=0.1",
    "teacher_train.deterministic=true",
    "student_train.deterministic=true",
    "device=cpu",
]


def tiny_config(*overrides: str) -> RunConfig:
    """A digits recipe that trains in seconds on 2 CPU cores."""
    return load_recipe(None, [*TINY, *overrides])


@pytest.fixture
def tiny() -> RunConfig:
    return tiny_config()


def foreign_checkpoint(directory: Path, arch: str, classes: int) -> Path:
    """A kdforge checkpoint of an untrained `arch` with `classes` outputs (for refusal tests)."""
    from kdforge.compress.models import build
    from kdforge.compress.train.checkpoint import save_checkpoint

    meta = {"role": "teacher", "model": {"arch": arch, "options": {}, "num_classes": classes}}
    return save_checkpoint(directory, "best", build(arch, classes), meta)
