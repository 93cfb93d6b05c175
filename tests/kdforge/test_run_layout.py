"""RunLayout names every file a run writes: a tiny `kdforge run` (teacher, CE student, a multi-branch RSD
student and its merged form; deploy off) leaves exactly the files its layout names."""

from __future__ import annotations

import io
import json
from pathlib import Path

from kdforge.compress.jobs import Session
from kdforge.compress.layout import RunLayout
from rich.console import Console

from kdforge.pipeline import run_pipeline
from tests.compress.conftest import tiny_config


def _named(stage: RunLayout, merged: bool = False) -> set[Path]:
    """The files of a finished training stage, as the layout names them; a checkpoint's JSON twin and
    training-state file are the checkpoint module's, beside the checkpoint it names."""
    state = [p for p in stage.checkpoints.glob(f"{stage.last.stem}.state-*.pt")]
    checkpoints = [stage.best, stage.last, *([stage.merged] if merged else [])]
    return {
        stage.config_yaml,
        stage.metrics,
        stage.result_json,
        stage.lock,
        *checkpoints,
        *(c.with_suffix(".json") for c in checkpoints),
        *state,
    }


def test_the_layout_names_every_file_a_run_writes(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path / "run")
    config = tiny_config(
        "teacher_train.epochs=1",
        "student_train.epochs=1",
        "method.name=rsd",
        "deploy.enabled=false",
        "teacher.arch=cnn_2_8",
        "student.arch=cnn_2_8",  # the layout, not the networks, is under test
    )
    run_pipeline(config, layout.root, Session(progress=False), console=Console(file=io.StringIO()))

    written = {p for p in layout.root.rglob("*") if p.is_file()}
    teacher, ce, rsd = layout.teacher, layout.student("ce"), layout.student("rsd")
    expected = {layout.results_json, layout.results_md, layout.lock}
    expected |= _named(teacher) | _named(ce) | _named(rsd, merged=True)
    assert written == expected
    assert len([p for p in written if ".state-" in p.name]) == 3, "one training state per stage"
    for stage in (teacher, ce, rsd):
        result = json.loads(stage.result_json.read_text())
        assert (result["best_path"], result["last_path"]) == (str(stage.best), str(stage.last))
    rows = json.loads(layout.results_json.read_text())["rows"]
    assert rows[-1]["checkpoint"] == str(rsd.merged)
    assert layout.teacher_strategy("standard") == teacher
    assert layout.teacher_strategy("generous").root == layout.root / "teacher-generous"
