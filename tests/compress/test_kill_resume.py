"""Kill anywhere, resume exactly: SIGKILL at random moments (mid-step, mid-evaluation, mid-checkpoint
write, mid-epoch between step checkpoints), resume with --resume, and end with weights bitwise identical
to an uninterrupted run (CPU, deterministic mode)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.compress.conftest import TINY
from tests.fault_harness import REPO, cli, kill_and_resume, same_tensors

SETS = [*TINY, "teacher.arch=resnet8", "teacher_train.checkpoint_every_steps=3"]


def _argv(out: Path) -> list[str]:
    return ["teacher", str(REPO / "recipes" / "digits.yaml"), "--out", str(out), "--no-progress",
            *[arg for item in SETS for arg in ("--set", item)]]  # fmt: skip


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_bitwise_identical_weights(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    code, seconds = cli(_argv(reference))
    assert code == 0
    generator = random.Random(7)
    for trial in range(3):
        out = tmp_path / f"killed{trial}"
        points = [generator.uniform(0.3, 1.0) * seconds for _ in range(2)]
        counts = kill_and_resume(_argv(out), points)
        assert counts["kills"] >= 1, f"no kill landed in trial {trial} ({points})"
        for name in ("last", "best"):
            expected, got = (
                reference / "checkpoints" / f"{name}.safetensors",
                out / "checkpoints" / f"{name}.safetensors",
            )
            assert same_tensors(expected, got), (trial, name, points)
        assert not list((out / "checkpoints").glob("*.tmp")), "no torn file left"


def test_a_kill_between_step_checkpoints_resumes_inside_the_epoch(tmp_path: Path) -> None:
    import json

    reference, out = tmp_path / "reference", tmp_path / "killed"
    assert cli(_argv(reference))[0] == 0
    last = out / "checkpoints" / "last.json"

    def mid_epoch_checkpoint_written() -> bool:
        try:
            return json.loads(last.read_text()).get("batch_in_epoch", 0) > 0
        except (OSError, ValueError):
            return False

    assert cli(_argv(out), kill_when=mid_epoch_checkpoint_written)[0] == -9
    resumed_from = json.loads(last.read_text())
    assert resumed_from["batch_in_epoch"] % 3 == 0 and resumed_from["batch_in_epoch"] > 0
    assert cli([*_argv(out), "--resume"])[0] == 0
    for name in ("last", "best"):
        assert same_tensors(
            reference / "checkpoints" / f"{name}.safetensors", out / "checkpoints" / f"{name}.safetensors"
        )
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2, 3], "one metrics line per epoch, none repeated"
    reference_metrics = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [m["train_loss"] for m in metrics] == [m["train_loss"] for m in reference_metrics]
