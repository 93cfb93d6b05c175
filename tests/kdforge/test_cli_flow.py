"""The training commands take their default folders from RunLayout, and printing a result only prints
(merging a multi-branch student is `merge_and_evaluate`, in the command's flow)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import pytest
from kdforge.compress.layout import RunLayout
from kdforge.compress.train.trainer import TrainResult
from rich.console import Console

from kdforge.cli import _compress_run, _print_result, _teacher_run
from tests.compress.conftest import tiny_config


def _args() -> argparse.Namespace:
    return argparse.Namespace(out=None)


def test_compress_defaults_to_the_teacher_of_the_recipes_strategy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tiny_config("teacher_strategy.name=generous")
    runs = RunLayout.default(config.name)
    runs.teacher_strategy("generous").checkpoints.mkdir(parents=True)
    runs.teacher_strategy("generous").best.write_bytes(b"")
    called: dict[str, Any] = {}

    def distill(config: Any, out: Path, session: Any, *, teacher_path: str, method: Any) -> None:
        called.update(out=Path(out), teacher=teacher_path)

    monkeypatch.setattr("kdforge.compress.jobs.distill_student", distill)
    _compress_run(_args(), config, Console(file=io.StringIO()), None)  # type: ignore[arg-type]
    assert called == {
        "out": runs.student(config.method.name).root,
        "teacher": str(runs.teacher_strategy("generous").best),
    }


def test_teacher_goes_to_its_strategys_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = tiny_config("teacher_strategy.name=generous")
    runs = RunLayout.default(config.name)
    runs.teacher.checkpoints.mkdir(parents=True)
    runs.teacher.best.write_bytes(b"")
    called: dict[str, Any] = {}

    def train(config: Any, out: Path, session: Any, *, standard_checkpoint: str) -> None:
        called.update(out=Path(out), standard=standard_checkpoint)

    monkeypatch.setattr("kdforge.compress.jobs.train_teacher", train)
    _teacher_run(_args(), config, Console(file=io.StringIO()), None)  # type: ignore[arg-type]
    assert called == {"out": runs.teacher_strategy("generous").root, "standard": str(runs.teacher.best)}


def test_printing_a_result_writes_nothing(tmp_path: Path) -> None:
    best = tmp_path / "checkpoints" / "best.safetensors"
    result = TrainResult(2, 90.0, 91.0, 99.0, 90.5, 1, 1.0, str(best), str(best))
    shown = io.StringIO()
    _print_result(result, ("merged.safetensors", 91.0), Console(file=shown, width=200))
    assert "test top-1 91.00%" in shown.getvalue() and "merged (deployable) network" in shown.getvalue()
    assert list(tmp_path.iterdir()) == []
