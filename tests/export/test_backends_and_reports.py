"""Bench backends beyond eager/ONNX Runtime (torch.compile, AOTInductor), per-backend clocks, the
backend registry, and the report pieces (plots, teacher-vs-student ratios)."""

from __future__ import annotations

import json
import mmap
import zipfile
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest
import torch
from kdforge.compress.config import load_recipe
from kdforge.compress.errors import UserError
from kdforge.compress.models import build
from kdforge.export.aoti import AotiPackage, compile_package
from kdforge.export.bench import TimingPolicy, measure_interleaved
from kdforge.export.bench.available import (
    LATENCY_BACKENDS,
    available_backends,
    check_backends,
    why_unavailable,
)
from kdforge.export.bench.backends import AotInductor, TorchCompile, TorchEager
from kdforge.export.report import comparison_rows, plot_latency_vs_batch, plot_teacher_vs_student

from tests.export.conftest import randomise_batchnorm

SHAPE = (1, 3, 16, 16)


@pytest.fixture(scope="module")
def network() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomise_batchnorm(build("resnet8", num_classes=10)).eval()


def test_aoti_package_matches_eager_across_its_batch_range(network, tmp_path: Path) -> None:
    meta = {"classes": list("abcdefghij"), "mean": [0.5] * 3, "std": [0.25] * 3, "input_shape": [3, 16, 16]}
    path = compile_package(network, tmp_path / "m.pt2", SHAPE, device="cpu", max_batch=8, metadata=meta)
    package = AotiPackage(path)
    assert package.meta["batch_range"] == [1, 8] and package.meta["device"] == "cpu"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt2", "m.pt2.json"], "no staging left"
    with zipfile.ZipFile(path) as archive:  # the archive's folder is the package's own name
        assert {name.split("/")[0] for name in archive.namelist()} == {"m"}
    assert {k: package.meta[k] for k in meta} == meta
    for batch in (1, 5, 8):
        x = torch.randn(batch, *SHAPE[1:])
        with torch.no_grad():
            expected = network(x)
        torch.testing.assert_close(package(x), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(UserError, match="compiled for batches 1-8, not 9"):
        package(torch.randn(9, *SHAPE[1:]))
    runner = AotInductor(path)
    out = runner.prepare(3)()
    assert out.shape == (3, 10)
    assert runner.describe()["backend"] == "aoti" and runner.describe()["file"] == "m.pt2"


def test_compile_package_refuses_a_wrong_suffix(network, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"must end in \.pt2"):
        compile_package(network, tmp_path / "m.so", SHAPE)
    assert not list(tmp_path.iterdir()), "nothing is left behind"


def test_torch_compile_backend_computes_what_eager_does(network) -> None:
    eager, compiled = TorchEager(network, SHAPE), TorchCompile(network, SHAPE)
    torch.manual_seed(1)
    x = eager.prepare(4)
    torch.manual_seed(1)
    y = compiled.prepare(4)
    torch.testing.assert_close(y(), x(), rtol=1e-4, atol=1e-4)
    assert compiled.describe()["backend"] == "torch-compile"


def test_each_call_is_timed_by_its_own_clock() -> None:
    ticks = iter(range(1, 1000))
    clocks = {
        "events": lambda call: (call(), 7.0)[1],
        "counter": lambda call: (call(), float(next(ticks)))[1],
    }
    calls = {"events": lambda: None, "counter": lambda: None, "host": lambda: None}
    stats = measure_interleaved(calls, 4, TimingPolicy(0.0, 5, 0.0), timers=clocks)
    assert stats["events"].samples_ms == [7.0] * 5
    assert sorted(stats["counter"].samples_ms) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert stats["counter"].p50 == 3.0 and stats["events"].throughput == pytest.approx(4000 / 7.0)
    assert all(0 <= s < 1000 for s in stats["host"].samples_ms), "the host clock, in milliseconds"


def test_page_faults_are_counted_per_call_and_charged_to_the_call_that_took_them() -> None:
    pages = 64

    def touch_fresh_pages() -> None:  # a new anonymous mapping each call: every page faults once
        region = mmap.mmap(-1, pages * mmap.PAGESIZE)
        region.madvise(mmap.MADV_NOHUGEPAGE)
        for offset in range(0, pages * mmap.PAGESIZE, mmap.PAGESIZE):
            region[offset] = 1
        region.close()

    calls = {"fresh": touch_fresh_pages, "idle": lambda: None}
    stats = measure_interleaved(calls, 1, TimingPolicy(0.0, 20, 0.0))
    assert stats["fresh"].page_faults_per_run >= pages
    assert stats["idle"].page_faults_per_run < 1, "the other call's faults are not charged to this one"


def test_backend_registry_names_what_is_missing_in_one_line() -> None:
    here = available_backends()
    assert {"torch", "onnxruntime"} <= set(here) and set(here) <= set(LATENCY_BACKENDS)
    with pytest.raises(UserError, match="unknown backend 'onnx-runtime'; choose from torch, ") as caught:
        check_backends(("torch", "onnx-runtime"))
    assert "\n" not in str(caught.value)
    for name in set(LATENCY_BACKENDS) - set(here):
        reason = why_unavailable(name)
        assert reason and "\n" not in reason and ("install" in reason or "GPU" in reason), (name, reason)
        with pytest.raises(UserError):
            check_backends((name,))
    check_backends(tuple(LATENCY_BACKENDS), must_run_here=False)


def _rows(scale: float, sizes: dict[str, float]) -> list[dict]:
    return [
        {
            "backend": b,
            "precision": p,
            "batch": n,
            "p50": scale * n * base,
            "p90": 1.2 * scale * n * base,
            "size_mb": sizes[p],
        }
        for b, p, base in (
            ("torch", "fp32", 1.0),
            ("onnxruntime", "fp32", 0.5),
            ("onnxruntime", "int8", 0.25),
        )
        for n in (1, 8)
    ]


def test_comparison_rows_give_the_students_speedup_and_size_ratio() -> None:
    teacher = {
        "arch": "big",
        "accuracy": {"torch fp32": 99.0, "onnxruntime int8": 98.0},
        "latency": _rows(6.0, {"fp32": 12.0, "int8": 3.0}),
    }
    student = {
        "arch": "small",
        "accuracy": {"torch fp32": 97.0, "onnxruntime fp32": 97.0},
        "latency": _rows(2.0, {"fp32": 1.0, "int8": 0.5}),
    }
    records = comparison_rows(teacher, student)
    assert [(r["network"], r["backend"], r["precision"]) for r in records][:2] == [
        ("teacher big", "torch", "fp32"),
        ("student small", "torch", "fp32"),
    ]
    int8 = next(r for r in records if r["network"] == "student small" and r["precision"] == "int8")
    assert int8["speedup"] == {1: pytest.approx(3.0), 8: pytest.approx(3.0)}
    assert int8["size_ratio"] == pytest.approx(6.0) and int8["p50"] == {1: 0.5, 8: 4.0}
    assert int8["top1"] is None, "never borrowed from another precision"
    teacher_ort = next(r for r in records if r["network"] == "teacher big" and r["backend"] == "onnxruntime")
    assert teacher_ort["top1"] is None and not teacher_ort["measured_top1"]


def test_report_has_a_tensorrt_ready_column_from_each_files_lint_verdict(tmp_path: Path) -> None:
    from kdforge.export.report import write_report

    def verdict(target: str, ready: bool, errors: int = 0) -> dict[str, object]:
        return {"target": target, "ready": ready, "errors": errors, "checked": [], "problems": []}

    environment = {"torch": "x", "threads": 2}
    teacher = {
        "arch": "big",
        "accuracy": {"torch fp32": 99.0},
        "latency": _rows(6.0, {"fp32": 12.0, "int8": 3.0}),
        "readiness": {"fp32": verdict("tensorrt", True), "int8": verdict("tensorrt", False, 2)},
        "environment": environment,
    }
    student = {
        "arch": "small",
        "accuracy": {"torch fp32": 97.0},
        "latency": _rows(2.0, {"fp32": 1.0, "int8": 0.5}),
        "readiness": {"fp32": verdict("tensorrt", True), "int8": verdict("onnxruntime", True)},
        "environment": environment,
    }
    (tmp_path / "deploy-teacher").mkdir()
    report = write_report(tmp_path, "t", [], teacher, student, ["kdforge run"], headline="Said.")
    lines = report.read_text().splitlines()
    assert lines[2] == "**Said.**", "the outcome sentence leads the report"
    header = next(line for line in lines if line.startswith("| network |")).split(" | ")
    column = header.index("TensorRT-ready")
    cells = {
        tuple(cell.strip() for cell in row.split("|")[1:4]): row.split("|")[1 + column].strip()
        for row in lines
        if row.startswith(("| teacher", "| student"))
    }
    assert cells[("teacher big", "onnxruntime", "fp32")] == "yes"
    assert cells[("teacher big", "onnxruntime", "int8")] == "no (2 problems)"
    assert cells[("student small", "onnxruntime", "int8")] == "n/a (ONNX Runtime form)"


def test_plots_are_png_images(tmp_path: Path) -> None:
    rows = _rows(1.0, {"fp32": 1.0, "int8": 0.5})
    for path in (
        plot_latency_vs_batch(rows, tmp_path / "latency.png", "latency"),
        plot_teacher_vs_student(_rows(3.0, {"fp32": 1, "int8": 1}), rows, 8, tmp_path / "pair.png", "pair"),
    ):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = matplotlib.image.imread(path).shape
        assert width > 500 and height > 300
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latency.png", "pair.png"], "no temp files left"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("deploy.batches=[0,4]", r"deploy.batches\[0\]: must be > 0, got 0"),
        ("deploy.batches=[]", r"deploy.batches: give at least 1 value\(s\), got \[\]"),
        ("deploy.min_duration_s=0", "deploy.min_duration_s: must be > 0"),
        ("deploy.calibration_images=0", "deploy.calibration_images: must be > 0"),
        ("deploy.calibration_method=kl", "deploy.calibration_method: 'kl' is not one of"),
        ("deploy.precisions=[]", r"deploy.precisions: give at least 1 value\(s\)"),
        ("deploy.precisions=[int4]", r"deploy.precisions\[0\]: 'int4' is not one of 'fp32', 'fp16'"),
        ("deploy.cuda_graph=maybe", "deploy.cuda_graph: expected true/false"),
    ],
)
def test_recipe_deploy_section_is_validated(override: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_recipe(None, [override])


def test_recipe_deploy_section_is_what_deploy_records() -> None:
    from kdforge.export.deploy import recorded_options, resolved_backends, timing_policy

    config = load_recipe(
        None,
        [
            "deploy.backends=[torch,aoti]",
            "deploy.batches=[2,16]",
            "deploy.min_duration_s=0.5",
            "deploy.cuda_graph=true",
        ],
    )
    assert resolved_backends(config.deploy) == ("torch", "aoti") and config.deploy.batches == [2, 16]
    assert timing_policy(config.deploy).min_duration_s == 0.5
    recorded = recorded_options(config.deploy)
    assert recorded["cuda_graph"] is True and recorded["policy"]["min_duration_s"] == 0.5
    assert json.loads(json.dumps(recorded)) == recorded, "a JSON round trip compares equal on resume"
    assert "enabled" not in recorded  # a pipeline switch, not an input of the deploy
    assert recorded_options(load_recipe(None, []).deploy)["backends"] == list(available_backends())


def test_precisions_and_calibration_methods_are_declared_once() -> None:
    import typing

    from kdforge.compress.config import CalibrationMethod
    from kdforge.export.deploy import PRECISIONS
    from kdforge.export.quantize import CALIBRATION_METHODS

    assert PRECISIONS == ("fp32", "fp16", "int8", "int8-u8")
    assert typing.get_args(CalibrationMethod) == CALIBRATION_METHODS


def test_a_deploy_config_built_in_code_is_checked_like_a_recipe(tmp_path: Path) -> None:
    from kdforge.compress.config import DeployConfig
    from kdforge.export.deploy import deploy

    with pytest.raises(UserError, match=r"deploy.batches\[0\]: must be > 0, got 0"):
        deploy(tmp_path / "none.safetensors", tmp_path, DeployConfig(batches=[0]))
    with pytest.raises(UserError, match="unknown backend 'tensorrtt'"):
        deploy(tmp_path / "none.safetensors", tmp_path, DeployConfig(backends=["tensorrtt"]))


def test_row_fields_are_latency_stats_fields_plus_the_row_only_ones() -> None:
    import dataclasses

    from kdforge.export.bench import LatencyStats
    from kdforge.export.bench.schema import ROW_FIELDS, ROW_ONLY_FIELDS, row_problems

    stats = [f.name for f in dataclasses.fields(LatencyStats)]
    assert list(ROW_FIELDS) == [*ROW_ONLY_FIELDS, *stats]
    row = {"backend": "torch", "copies_included": False, **_stats(4).as_dict()}
    assert row_problems(row) == []
    assert row_problems({**row, "iterations": 4.0}) == ["iterations is float"]
    assert row_problems({**row, "p50": True}) == ["p50 is a boolean"]


def _stats(batch: int) -> Any:
    from kdforge.export.bench import summarize

    return summarize([1.0, 2.0, 3.0], batch, 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "kdforge-runner wrote invalid JSON"),
        ('{"rows": []}', "kdforge-runner's JSON has no list of latency rows under 'latency'"),
        ('{"latency": [1]}', "kdforge-runner's JSON has no list of latency rows under 'latency'"),
        ("DROP p50", r"latency row 0 \(backend native, batch 2\) does not conform: missing p50; rebuild"),
        ("P90 LOW", "does not conform: percentiles are not ordered; rebuild"),
        ("BATCH TEXT", r"latency row 0 \(backend native, batch two\) does not conform: batch is str"),
    ],
)
def test_rows_read_back_from_the_runner_are_checked_in_one_line(text: str, message: str) -> None:
    from kdforge.export.bench.schema import read_rows

    row = {"backend": "native", "copies_included": False, **_stats(2).as_dict()}
    if text == "DROP p50":
        text = json.dumps({"latency": [{k: v for k, v in row.items() if k != "p50"}]})
    elif text == "P90 LOW":
        text = json.dumps({"latency": [{**row, "p90": row["p50"] - 1}]})
    elif text == "BATCH TEXT":
        text = json.dumps({"latency": [{**row, "batch": "two"}]})
    with pytest.raises(UserError, match=message) as caught:
        read_rows(text, "kdforge-runner", "; rebuild it")
    assert "\n" not in str(caught.value)
    assert read_rows(json.dumps({"latency": [row]}), "kdforge-runner") == [row]


def test_run_native_refuses_a_malformed_row_from_the_runner(tmp_path: Path, monkeypatch) -> None:
    """The runner's JSON goes through read_rows: a row missing a field is one line, not a KeyError later."""
    import subprocess
    import sys

    from kdforge.export.native import run as native_run

    row = {"backend": "aoti", "copies_included": False, **_stats(1).as_dict()}
    del row["p99"]
    fake = tmp_path / "kdforge-runner"
    fake.write_text(
        f"#!{sys.executable}\nimport json, sys\nout = sys.argv[sys.argv.index('--json') + 1]\n"
        f"open(out, 'w').write(json.dumps({{'latency': [{row!r}]}}))\n"
    )
    fake.chmod(0o755)

    class Found:
        binary = fake

    monkeypatch.setattr(native_run, "find_runner", lambda build_dir: Found())
    with pytest.raises(UserError, match=r"kdforge-runner's latency row 0 .* missing p99; rebuild it"):
        native_run.run_native(tmp_path / "m.pt2", (1,))
    assert subprocess.run([str(fake), "--json", str(tmp_path / "x.json")], check=False).returncode == 0
