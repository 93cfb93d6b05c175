"""Faults a shared box throws at a run: a second run on the same directory, a lock left by a killed run,
a disk that fills up or turns read-only mid-run. Each ends in one line (exit 2) and loses nothing."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from kdforge.compress.errors import UserError
from kdforge.compress.runlock import LOCK_NAME, run_lock
from kdforge.compress.train.checkpoint import load_model

from kdforge.cli import main
from tests.compress.conftest import TINY

REPO = Path(__file__).resolve().parents[2]
DIGITS = str(REPO / "recipes" / "digits.yaml")
SETS = [arg for item in [*TINY, "teacher.arch=resnet8", "teacher_train.epochs=3"] for arg in ("--set", item)]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line (epoch summaries before it go to stderr too)."""
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert len(errors) == 1 and errors[0].startswith("kdforge: error: ") and err.endswith(errors[0]), err
    return errors[0]


def test_a_held_directory_refuses_a_second_holder(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        with (
            pytest.raises(UserError, match=f"in use by kdforge process {os.getpid()} on ") as caught,
            run_lock(tmp_path),
        ):
            pass
        assert "\n" not in str(caught.value) and "choose another --out" in str(caught.value)
    with run_lock(tmp_path):  # released on exit
        pass


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_warning(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)
    (tmp_path / LOCK_NAME).write_text(f'{{"pid": {pid}, "host": "box", "started": "then"}}')
    with (
        pytest.warns(UserWarning, match=f"left by process {pid} \\(no longer running\\)"),
        run_lock(tmp_path),
    ):
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean exit leaves nothing to take over
        with run_lock(tmp_path):
            pass


def test_a_second_run_on_a_busy_directory_exits_2_naming_the_holder(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom kdforge.compress.runlock import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n",
            str(out),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["teacher", DIGITS, "--out", str(out), "--no-progress", *SETS]) == 2
        assert f"is in use by kdforge process {holder.pid}" in _error_line(capsys)
        assert not (out / "checkpoints").exists(), "nothing was written"
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(
    ("code", "message"),
    [(errno.ENOSPC, "no space left on the device"), (errno.EROFS, "read-only file system")],
)
def test_disk_full_or_read_only_mid_run_keeps_the_last_checkpoint(
    code: int, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    out = tmp_path / "run"
    real_replace = os.replace
    saves: list[str] = []

    def failing_replace(source, target, *args, **kwargs):
        if str(target).endswith("last.safetensors"):
            saves.append(str(target))
            if len(saves) == 2:  # epoch 2's checkpoint: the disk is full now
                raise OSError(code, os.strerror(code))
        return real_replace(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_replace)
    assert main(["teacher", DIGITS, "--out", str(out), "--no-progress", *SETS]) == 2
    assert message in _error_line(capsys)
    monkeypatch.setattr(os, "replace", real_replace)
    checkpoints = out / "checkpoints"
    assert not [p.name for p in checkpoints.iterdir() if p.name.endswith(".tmp")], "no partial file"
    _, checkpoint = load_model(checkpoints / "last.safetensors")
    assert checkpoint.meta["epoch"] == 1, "the last complete checkpoint is epoch 1's"
    assert main(["teacher", DIGITS, "--out", str(out), "--no-progress", "--resume", *SETS]) == 0
    assert load_model(checkpoints / "last.safetensors")[1].meta["epoch"] == 3


def _poison(monkeypatch: pytest.MonkeyPatch, bad: set[tuple[int, int]]) -> None:
    """CE's loss is NaN at the given (epoch, step within the epoch), both counted from 0."""
    from kdforge.compress.methods.ce import CE

    where = {"epoch": 0, "step": 0}
    original_start, original_forward = CE.on_epoch_start, CE.forward_train

    def on_epoch_start(self, epoch: int, epochs: int) -> None:
        where.update(epoch=epoch, step=0)
        original_start(self, epoch, epochs)

    def forward_train(self, images, labels):
        logits, losses = original_forward(self, images, labels)
        if (where["epoch"], where["step"]) in bad:
            losses = {name: value * float("nan") for name, value in losses.items()}
        where["step"] += 1
        return logits, losses

    monkeypatch.setattr(CE, "on_epoch_start", on_epoch_start)
    monkeypatch.setattr(CE, "forward_train", forward_train)


def test_a_nan_loss_stops_by_default_keeping_the_last_checkpoint_and_recording_the_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import json

    _poison(monkeypatch, {(1, 2)})
    out = tmp_path / "run"
    assert main(["teacher", DIGITS, "--out", str(out), "--no-progress", *SETS]) == 2
    line = _error_line(capsys)
    assert "non-finite loss at epoch 2" in line and "nonfinite.jsonl" in line and "ce=nan" in line
    records = [json.loads(x) for x in (out / "nonfinite.jsonl").read_text().splitlines()]
    assert len(records) == 1 and records[0]["epoch"] == 2 and records[0]["terms"] == {"ce": "nan"}
    assert len(records[0]["labels"]) == len(records[0]["samples"]) > 0
    from kdforge.compress.data import build_data

    from tests.compress.conftest import tiny_config

    data = build_data(tiny_config("teacher.arch=resnet8").data)
    labels = [int(data.train[i][1]) for i in records[0]["samples"]]
    assert labels == records[0]["labels"], "the recorded positions name the batch's samples"
    assert load_model(out / "checkpoints" / "last.safetensors")[1].meta["epoch"] == 1


def test_skip_policy_skips_within_its_limit_then_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import torch

    _poison(monkeypatch, {(0, 1), (1, 0), (2, 3)})
    out = tmp_path / "skip"
    skip = ["--set", "teacher_train.nonfinite=skip", "--set", "teacher_train.nonfinite_limit=3"]
    assert main(["teacher", DIGITS, "--out", str(out), "--no-progress", *SETS, *skip]) == 0
    model, checkpoint = load_model(out / "checkpoints" / "last.safetensors")
    assert all(torch.isfinite(p).all() for p in model.parameters()), "no NaN reached the weights"
    state = torch.load(out / "checkpoints" / checkpoint.meta["state_file"], weights_only=True)
    assert state["skipped_updates"] == 3
    assert len((out / "nonfinite.jsonl").read_text().splitlines()) == 3

    out = tmp_path / "limit"
    skip[-1] = "teacher_train.nonfinite_limit=2"
    assert main(["teacher", DIGITS, "--out", str(out), "--no-progress", *SETS, *skip]) == 2
    assert "2 updates skipped already (limit 2)" in _error_line(capsys)


def test_resume_removes_the_temporary_files_of_writes_a_kill_interrupted(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["teacher", DIGITS, "--out", str(out), "--no-progress", *SETS]) == 0
    debris = [out / "checkpoints" / ".last.safetensors.k1ll3d.tmp", out / ".config.yaml.k1ll3d.tmp"]
    for path in debris:
        path.write_bytes(b"half a file")
    staging = out / ".resnet8-fp32.4242.tmp"  # an AOTInductor compile's staging folder (export.aoti)
    staging.mkdir()
    (staging / "resnet8-fp32.pt2").write_bytes(b"half a package")
    assert main(["teacher", DIGITS, "--out", str(out), "--no-progress", "--resume", *SETS]) == 0
    assert not any(path.exists() for path in [*debris, staging])
    assert (out / "checkpoints" / "last.safetensors").is_file()
