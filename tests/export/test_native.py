"""kdforge-runner, the C++ latency runner: built with CMake here (into the default folder in the user's
cache, reused between runs), its outputs match Python AOTInductor on a fixed batch, its statistics match an
independent numpy computation from its own raw samples, its JSON rows conform to the profiler's schema, bad
input is one line, it links libtorch (and libtorch_cuda) for real, and a build with no backend is refused."""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from kdforge.compress.errors import UserError
from kdforge.compress.models import build as build_model
from kdforge.export.aoti import AotiPackage, compile_package
from kdforge.export.bench.schema import row_problems
from kdforge.export.native import build_native, run_native
from kdforge.export.native.build import DEFAULT_BUILD_DIR, default_build_dir
from kdforge.export.onnx.export import to_onnx
from kdforge.export.onnx.parity import ort_session
from kdforge.export.quantize.fp16 import to_fp16

from tests.export.conftest import randomise_batchnorm

pytestmark = pytest.mark.skipif(
    shutil.which("cmake") is None or shutil.which("c++") is None, reason="needs cmake and a C++ compiler"
)
SHAPE = (1, 3, 16, 16)
ONNXRUNTIME_ROOT = os.environ.get("ONNXRUNTIME_ROOT")
CHECKOUT = Path(__file__).resolve().parents[2]
NO_BACKENDS = ("-DKDFORGE_WITH_AOTI=OFF", "-DKDFORGE_WITH_TENSORRT=OFF", "-DKDFORGE_WITH_ONNXRUNTIME=OFF")


@pytest.fixture(scope="module")
def runner() -> Path:
    return build_native().binary  # incremental: seconds when the default build folder is up to date


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    network = randomise_batchnorm(build_model("resnet8", num_classes=10)).eval()
    folder = tmp_path_factory.mktemp("native")
    meta = {
        "input_shape": [3, 16, 16],
        "classes": [str(i) for i in range(10)],
        "mean": [0.5] * 3,
        "std": [0.2] * 3,
    }
    return compile_package(network, folder / "m.pt2", SHAPE, device="cpu", max_batch=32, metadata=meta)


def _run(runner: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(runner), *argv], capture_output=True, text=True, check=False)


def test_native_outputs_match_python_aoti(runner: Path, package: Path, tmp_path: Path) -> None:
    batch = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", batch)
    argv = [
        "--model",
        str(package),
        "--input",
        str(tmp_path / "x.npy"),
        "--dump-output",
        str(tmp_path / "y.npy"),
    ]
    done = _run(
        runner,
        *argv,
        "--min-iters",
        "3",
        "--min-ms",
        "0",
        "--warmup-ms",
        "0",
        "--json",
        str(tmp_path / "o.json"),
    )
    assert done.returncode == 0, done.stderr
    native = np.load(tmp_path / "y.npy")
    python = AotiPackage(package)(torch.from_numpy(batch)).numpy()
    assert native.shape == (5, 10)
    np.testing.assert_allclose(native, python, rtol=1e-5, atol=1e-5)
    report = json.loads((tmp_path / "o.json").read_text())
    assert report["config"]["input"] == str(tmp_path / "x.npy") and [
        r["batch"] for r in report["latency"]
    ] == [5]


def test_native_rows_follow_the_profiler_schema_and_its_statistics(runner: Path, package: Path) -> None:
    from kdforge.export.bench import TimingPolicy

    rows = run_native(package, (1, 4), TimingPolicy(warmup_s=0.0, min_iterations=9, min_duration_s=0.0))
    assert [(r["backend"], r["batch"]) for r in rows] == [("native-aoti", 1), ("native-aoti", 4)]
    for row in rows:
        assert row_problems(row) == [], row_problems(row)
        samples = np.asarray(row["samples_ms"])
        assert row["iterations"] == len(samples) >= 9
        for q in (50, 90, 95, 99):  # numpy's default (linear) percentile of the runner's own samples
            assert row[f"p{q}"] == pytest.approx(np.percentile(samples, q), rel=1e-9)
        assert row["mean"] == pytest.approx(samples.mean(), rel=1e-9)
        assert row["std"] == pytest.approx(samples.std(), rel=1e-9, abs=1e-12)
        assert row["throughput"] == pytest.approx(1000 * row["batch"] / row["p50"], rel=1e-9)
        assert row["copies_included"] is False and row["file"] == "m.pt2"


def test_python_profiler_rows_follow_the_same_schema(package: Path) -> None:
    from kdforge.export.bench import TimingPolicy
    from kdforge.export.bench.run import bench_artifact

    rows = bench_artifact(package, ("aoti",), (2,), TimingPolicy(0.0, 3, 0.0))
    assert rows and all(row_problems(r) == [] for r in rows)
    assert row_problems({**rows[0], "p90": rows[0]["p50"] - 1}) == ["percentiles are not ordered"]
    assert "missing samples_ms" in row_problems({k: v for k, v in rows[0].items() if k != "samples_ms"})


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="heap retention uses glibc's mallopt")
def test_heap_retention_stops_per_run_page_faults(runner: Path, package: Path, tmp_path: Path) -> None:
    # At batch 32 one activation is 32*16*16*16 floats = 128 pages. With glibc's defaults the runs free
    # their activations back to the kernel and fault them in again; retained, they stay mapped.
    policy = ["--batch", "32", "--min-iters", "30", "--min-ms", "0", "--warmup-ms", "100"]
    faults, heap = {}, {}
    for mode, flags in (("retained", []), ("released", ["--release-memory"])):
        out = tmp_path / f"{mode}.json"
        done = _run(runner, "--model", str(package), *policy, "--json", str(out), *flags)
        assert done.returncode == 0, done.stderr
        report = json.loads(out.read_text())
        (row,) = report["latency"]
        assert row_problems(row) == [] and row["heap"] == report["config"]["heap"]
        faults[mode], heap[mode] = row["page_faults_per_run"], row["heap"]
    assert heap == {"retained": "retained", "released": "system default"}
    assert faults["released"] >= 64, faults
    assert faults["retained"] <= 8, faults


def test_bad_input_is_one_line_and_a_nonzero_exit(runner: Path, package: Path, tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    not_npy = tmp_path / "x.npy"
    not_npy.write_bytes(b"garbage")
    cases = [
        (["--model", str(tmp_path / "missing.pt2")], "missing.pt2 not found"),
        (["--model", str(package), "--batch", "64"], "was compiled for batches 1-32, not 64"),
        (["--model", str(package), "--batch", "0"], "--batch: batch sizes are integers >= 1"),
        (["--model", str(package), "--input", str(not_npy)], "is not a .npy file"),
        (["--model", str(package), "--frobnicate"], "unknown option --frobnicate"),
        (["--batch", "1"], "--model is required"),
    ]
    compiled = _run(runner, "--list-backends").stdout
    if "tensorrt" not in compiled:
        cases.append((["--model", str(engine)], "built without TensorRT"))
    for argv, message in cases:
        done = _run(runner, *argv)
        assert done.returncode == 2, (argv, done.stderr)
        line = done.stderr.strip()
        assert "\n" not in line and line.startswith("kdforge-runner: error: ") and message in line, (
            argv,
            line,
        )


def test_runner_help_and_a_bare_call(runner: Path) -> None:
    for flag in ("--help", "-h"):
        done = _run(runner, flag)
        assert done.returncode == 0 and done.stderr == "", (flag, done.stderr)
        assert done.stdout.startswith("usage: kdforge-runner --model M") and "--list-backends" in done.stdout
    bare = _run(runner)
    assert bare.returncode == 2 and bare.stdout == "" and bare.stderr.startswith("usage: kdforge-runner")
    assert _run(runner, "--model", "m.pt2", "--help").returncode == 0  # help wins over everything else
    assert _run(runner, "--version").stdout.startswith("kdforge-runner ")
    assert "aoti" in _run(runner, "--list-backends").stdout


@pytest.mark.skipif(shutil.which("readelf") is None, reason="needs readelf (binutils)")
def test_runner_links_libtorch_and_libtorch_cuda(runner: Path) -> None:
    # The runner calls nothing in libtorch_cuda, so a linker defaulting to --as-needed would drop it (and
    # CUDA packages would find no CUDA backend): it must be a NEEDED entry of the binary itself.
    dynamic = _run(Path(shutil.which("readelf") or "readelf"), "-d", str(runner)).stdout
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic))
    expected = {"libtorch.so"}
    if (Path(torch.__file__).parent / "lib" / "libtorch_cuda.so").is_file():
        expected.add("libtorch_cuda.so")
    assert expected <= needed, sorted(needed)


def test_default_build_dir_is_a_per_environment_user_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    folder = default_build_dir()
    assert folder.parent == tmp_path / "kdforge" / "native" and folder == default_build_dir()
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    assert default_build_dir().parent == Path.home() / ".cache" / "kdforge" / "native"
    assert Path(sys.prefix).resolve() not in DEFAULT_BUILD_DIR.parents  # not inside the install


def test_build_native_refuses_a_runner_without_backends(monkeypatch, tmp_path: Path, capsys) -> None:
    import kdforge.export.native

    from kdforge.cli import main

    monkeypatch.setattr(
        kdforge.export.native, "build_native", functools.partial(build_native, cmake_options=NO_BACKENDS)
    )
    assert main(["build-native", "--build-dir", str(tmp_path / "none")]) == 2
    captured = capsys.readouterr()
    line = captured.err.strip()
    assert "\n" not in line and line.startswith("kdforge: error: no backend found"), captured.err
    assert "KDFORGE_WITH_*=OFF" in line
    assert not (tmp_path / "none" / "kdforge-runner").exists()  # refused before compiling anything


def test_cmake_by_hand_from_the_checkout_uses_the_given_python(tmp_path: Path) -> None:
    # the root CMakeLists.txt of a checkout builds the same runner as the packaged export/native/ one, and
    # -DPython3_EXECUTABLE=<python> takes libtorch from that Python's torch
    options = ["-DKDFORGE_WITH_TENSORRT=OFF", "-DKDFORGE_WITH_ONNXRUNTIME=OFF"]
    argv = ["cmake", "-S", str(CHECKOUT), "-B", str(tmp_path), f"-DPython3_EXECUTABLE={sys.executable}"]
    done = subprocess.run([*argv, *options], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "backends.txt").read_text().strip() == "aoti"
    assert f"AOTInductor from {Path(torch.__file__).parent}" in done.stdout
    assert "CMake Warning" not in done.stderr, done.stderr


def test_run_native_reports_the_runners_error_as_a_user_error(runner: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"missing\.pt2 not found"):
        run_native(tmp_path / "missing.pt2", (1,))


def test_build_native_from_the_cli_reuses_the_build_and_names_the_backends(runner: Path, capsys) -> None:
    from kdforge.cli import main

    before = runner.stat().st_mtime_ns
    assert main(["build-native"]) == 0
    printed = capsys.readouterr().out
    assert f"built {runner}; backends compiled in: aoti" in printed
    assert runner.stat().st_mtime_ns == before, "an up-to-date build is reused, not relinked"


def test_bench_native_adds_the_runners_rows(runner: Path, package: Path, capsys) -> None:
    from kdforge.cli import main

    argv = [
        "bench",
        str(package),
        "--backends",
        "aoti",
        "--native",
        "--batches",
        "1,2",
        "--min-duration",
        "0.01",
    ]
    assert main(argv) == 0
    rows = [line.split()[:2] for line in capsys.readouterr().out.strip().splitlines()[1:]]
    assert rows == [["aoti", "1"], ["aoti", "2"], ["native-aoti", "1"], ["native-aoti", "2"]]


def test_deploy_adds_native_rows_to_its_tables(runner: Path, tmp_path: Path) -> None:
    from kdforge.compress.config import DeployConfig
    from kdforge.compress.jobs import Session, train_teacher
    from kdforge.export.bench import TimingPolicy
    from kdforge.export.deploy import deploy

    from tests.compress.conftest import tiny_config

    trained = train_teacher(
        tiny_config("teacher.arch=resnet8", "teacher_train.epochs=1"),
        tmp_path / "t",
        session=Session(progress=False),
    )
    config = DeployConfig(
        precisions=["fp32"], backends=["aoti"], batches=[1, 2], device="cpu", native="always"
    )
    result = deploy(trained.best_path, tmp_path / "deploy", config, policy=TimingPolicy(0.0, 3, 0.0))
    rows = [(r["backend"], r["precision"], r["batch"]) for r in result["latency"]]
    assert rows == [
        ("aoti", "fp32", 1),
        ("aoti", "fp32", 2),
        ("native-aoti", "fp32", 1),
        ("native-aoti", "fp32", 2),
    ]
    assert all(row_problems(r) == [] for r in result["latency"])
    assert "| native-aoti | fp32 | 2 |" in (tmp_path / "deploy" / "deploy.md").read_text()


@pytest.mark.skipif(
    not ONNXRUNTIME_ROOT,
    reason="set ONNXRUNTIME_ROOT to an ONNX Runtime release (include/ with the C++ API headers, lib/) to "
    "build and test the runner's ONNX Runtime backend: no package here ships the headers",
)
def test_native_onnxruntime_matches_python_onnxruntime(tmp_path: Path) -> None:
    build = build_native(CHECKOUT / "build" / "native-onnxruntime", onnxruntime_root=ONNXRUNTIME_ROOT)
    assert "onnxruntime" in build.backends, build.backends
    torch.manual_seed(0)
    network = randomise_batchnorm(build_model("resnet8", num_classes=10)).eval()
    fp32 = to_onnx(network, tmp_path / "m.onnx", SHAPE)
    fp16 = to_fp16(fp32, tmp_path / "m16.onnx", keep_io_types=False)  # half inputs: the runner converts
    batch = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", batch)
    for path, tolerance in ((fp32, 1e-5), (fp16, 1e-3)):
        out, report = tmp_path / f"{path.stem}.npy", tmp_path / f"{path.stem}.json"
        argv = ["--model", str(path), "--input", str(tmp_path / "x.npy"), "--dump-output", str(out)]
        done = _run(build.binary, *argv, "--min-iters", "3", "--min-ms", "0", "--json", str(report))
        assert done.returncode == 0, done.stderr
        session = ort_session(path, 1)
        spec = session.get_inputs()[0]
        given = batch.astype(np.float16) if spec.type == "tensor(float16)" else batch
        expected = session.run(None, {spec.name: given})[0].astype(np.float32)
        np.testing.assert_allclose(np.load(out), expected, rtol=tolerance, atol=tolerance)
        (row,) = json.loads(report.read_text())["latency"]
        assert row_problems(row) == [] and row["backend"] == "onnxruntime" and row["batch"] == 5
    np.save(tmp_path / "wrong.npy", batch[:, :1])
    done = _run(build.binary, "--model", str(fp32), "--input", str(tmp_path / "wrong.npy"))
    assert done.returncode == 2 and "takes input (-1, 3, 16, 16)" in done.stderr.strip(), done.stderr
