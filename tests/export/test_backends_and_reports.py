"""Bench backends beyond eager/ONNX Runtime (torch.compile, AOTInductor), per-backend clocks, the
backend registry, and the report pieces (plots, teacher-vs-student ratios)."""

from __future__ import annotations

import json
import mmap
import zipfile
from pathlib import Path

import matplotlib.image
import pytest
import torch
from kdforge.compress.config import load_recipe
from kdforge.compress.errors import UserError
from kdforge.compress.models import build
from kdforge.export.aoti import AotiPackage, compile_package
from kdforge.export.bench import TimingPolicy, measure_interleaved
from kdforge.export.bench.available import BACKENDS, available_backends, check_backends, why_unavailable
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
    assert {"torch", "onnxruntime"} <= set(here) and set(here) <= set(BACKENDS)
    with pytest.raises(UserError, match="unknown backend 'onnx-runtime'; choose from torch, ") as caught:
        check_backends(("torch", "onnx-runtime"))
    assert "\n" not in str(caught.value)
    for name in set(BACKENDS) - set(here):
        reason = why_unavailable(name)
        assert reason and "\n" not in reason and ("install" in reason or "GPU" in reason), (name, reason)
        with pytest.raises(UserError):
            check_backends((name,))
    check_backends(tuple(BACKENDS), must_run_here=False)


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
        ("deploy.batches=[0,4]", "deploy.batches: give batch sizes >= 1"),
        ("deploy.min_duration_s=0", "deploy.min_duration_s: must be > 0"),
        ("deploy.calibration_method=kl", "deploy.calibration_method: 'kl' is not one of"),
        ("deploy.precisions=[]", "deploy.precisions: give at least one"),
    ],
)
def test_recipe_deploy_section_is_validated(override: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        load_recipe(None, [override])


def test_recipe_deploy_section_reads_into_deploy_options() -> None:
    from kdforge.export.deploy import DeployOptions

    config = load_recipe(
        None, ["deploy.backends=[torch,aoti]", "deploy.batches=[2,16]", "deploy.min_duration_s=0.5"]
    )
    options = DeployOptions.from_config(config.deploy)
    assert options.backends == ("torch", "aoti") and options.batches == (2, 16)
    assert options.policy.min_duration_s == 0.5
    assert DeployOptions.from_config(load_recipe(None, []).deploy).resolved_backends() == available_backends()
    assert json.dumps(options.precisions)
