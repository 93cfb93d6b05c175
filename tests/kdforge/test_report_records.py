"""report.md is built from records (the stage rows of results.json, the deploy records of deploy.json),
never from Markdown read back, and `kdforge run` writes its deploy folders and report where RunLayout says."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from kdforge.compress.config import DeployConfig
from kdforge.compress.layout import RunLayout
from kdforge.export.report.training import StageRow
from rich.console import Console

from kdforge.pipeline import deploy_and_report, write_results
from tests.compress.conftest import tiny_config

ROWS = [
    StageRow("teacher", "resnet14", "ce", 0.174, 97.25, 96.5, 3, 12.3, "runs/x/teacher/best"),
    StageRow("student", "resnet8", "ce", 0.078, 91.12, 90.75, 2, 4.5, "runs/x/student-ce/best"),
    StageRow("student", "resnet8", "kd", 0.078, 93.37, 92.0, 3, 5.25, "runs/x/student-kd/best"),
]


def _record(arch: str, scale: float, top1: float) -> dict[str, Any]:
    """A deploy record (deploy.json) of two variants at batches 1 and 8."""
    variants = (("torch", "fp32", 1.0, 4.0), ("onnxruntime", "int8", 0.25, 1.0))
    latency = [
        {"backend": b, "precision": p, "batch": n, "p50": scale * n * base, "size_mb": size}
        for b, p, base, size in variants
        for n in (1, 8)
    ]
    return {
        "arch": arch,
        "checkpoint": f"/nowhere/{arch}.safetensors",
        "accuracy": {"torch fp32": top1, "onnxruntime int8": top1 - 0.5},
        "latency": latency,
        "readiness": {},
        "files": {"fp32": f"/nowhere/{arch}.onnx"},
        "options": {"precisions": ["fp32", "int8"], "backends": ["torch", "onnxruntime"], "batches": [1, 8]},
        "environment": {"torch": "x", "threads": 2},
    }


def test_report_holds_the_numbers_of_results_json_and_deploy_json_without_reading_markdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = RunLayout(tmp_path / "run")
    layout.root.mkdir()
    config = tiny_config()
    write_results(layout.root, config, ROWS)
    records = {"teacher": _record("resnet14", 3.0, 97.25), "student": _record("resnet8", 1.0, 93.37)}
    started: dict[str, Path] = {}

    def deploy(path: str, stage: Path, options: DeployConfig, log: Any = None) -> dict[str, Any]:
        role = "teacher" if "teacher" in path else "student"
        started[role] = Path(stage)
        return records[role]

    real_read_text = Path.read_text

    def read_text(self: Path, *args: Any, **kwargs: Any) -> str:
        assert self.suffix != ".md", f"the report read Markdown back: {self}"
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr("kdforge.export.deploy.deploy", deploy)
    monkeypatch.setattr(Path, "read_text", read_text)
    rows = [StageRow(**row) for row in json.loads(layout.results_json.read_text())["rows"]]
    report, _ = deploy_and_report(
        config, layout.root, rows, "teacher.safetensors", "student.safetensors", DeployConfig(), False,
        Console(file=io.StringIO()),
    )  # fmt: skip

    assert report == layout.report_md
    assert started == {role: layout.deploy(role).root for role in ("teacher", "student")}
    lines = real_read_text(report).splitlines()
    for row in ROWS:
        cells = f"| {row.params_m:.3f} | {row.test_top1:.2f} | {row.last_test_top1:.2f} | {row.best_epoch} "
        assert any(line.startswith(f"| {row.stage} | {row.arch} | {row.method} {cells}") for line in lines)
    for role, record in records.items():
        for entry in record["latency"]:
            mine = [
                line for line in lines if line.startswith(f"| {role} {record['arch']} | {entry['backend']} ")
            ]
            assert len(mine) == 1 and f"| {entry['p50']:.3f} |" in mine[0]
            top1 = record["accuracy"][f"{entry['backend']} {entry['precision']}"]
            assert f"| {top1:.2f} |" in mine[0]
