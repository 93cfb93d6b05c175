"""kdforge-runner's TensorRT backend (export/native/tensorrt_backend.cpp, the real source) built against the
test doubles of TensorRT and CUDA in tests/native_fake_sdk: its buffers, float16 conversions, CUDA-graph
replay, JSON rows and one-line errors (an engine from another TensorRT version, a batch outside the profile,
no GPU) run here without a GPU. The doubles compute out[n, k] = (k + 1) * sum(x[n]), checked with numpy.
What they cannot show (TensorRT's real kernels and API) runs in benchmarks/gpu_suite.sh on a GPU machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from kdforge.export.bench import TimingPolicy
from kdforge.export.bench.schema import row_problems
from kdforge.export.native import build_native, run_native

pytestmark = pytest.mark.skipif(
    shutil.which("cmake") is None or shutil.which("c++") is None, reason="needs cmake and a C++ compiler"
)
FAKE_SDK = Path(__file__).resolve().parents[1] / "native_fake_sdk"
BUILD_DIR = Path(__file__).resolve().parents[2] / "build" / "native-fake-tensorrt"  # a test build: checkout
QUICK = ("--min-iters", "3", "--min-ms", "0", "--warmup-ms", "0")


@pytest.fixture(scope="module")
def runner() -> Path:
    build = build_native(BUILD_DIR, cmake_options=(f"-DKDFORGE_FAKE_TENSORRT={FAKE_SDK}",))
    assert "tensorrt-test-double" in build.backends, build.backends
    return build.binary


def write_engine(
    folder: Path,
    name: str = "m.engine",
    *,
    io_type: str = "float32",
    version: str = "10.3.0.26",
    batches: tuple[int, int] = (1, 8),
    sidecar: bool = True,
) -> Path:
    path = folder / name
    path.write_text(
        f"kdforge-fake-tensorrt-engine\nversion {version}\ninput images {io_type} -1 3 4 4\n"
        f"profile {batches[0]} {batches[1]}\noutput logits {io_type} 10\noutput extra float32 2\n"
    )
    if sidecar:
        info = {"kind": "tensorrt-engine", "tensorrt": version, "gpu": "Fake GPU 0", "precision": "fp16"}
        (folder / f"{name}.json").write_text(json.dumps(info))
    return path


def reference(x: np.ndarray, half: bool) -> np.ndarray:
    """out[n, k] = (k + 1) * sum(x[n]), through float16 inputs and outputs when the engine has them."""
    given = x.astype(np.float16).astype(np.float64) if half else x.astype(np.float64)
    out = np.arange(1, 11) * given.reshape(len(x), -1).sum(axis=1, keepdims=True)
    return out.astype(np.float16).astype(np.float32) if half else out.astype(np.float32)


def _run(runner: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(runner), *argv], capture_output=True, text=True, check=False, env={**os.environ, **(env or {})}
    )


@pytest.mark.parametrize("io_type", ["float32", "float16"])
@pytest.mark.parametrize("graph", [False, True], ids=["enqueue", "cuda-graph"])
def test_engine_outputs_follow_the_engine_through_device_buffers(
    runner: Path, tmp_path: Path, io_type: str, graph: bool
) -> None:
    engine = write_engine(tmp_path, io_type=io_type)
    x = np.random.default_rng(0).standard_normal((5, 3, 4, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npy"
    argv = ["--model", str(engine), "--input", str(tmp_path / "x.npy"), "--dump-output", str(out)]
    flags = ["--cuda-graph"] if graph else []
    report = {"KDFORGE_FAKE_TENSORRT_REPORT": "1"}
    done = _run(runner, *argv, *QUICK, *flags, "--json", str(tmp_path / "o.json"), env=report)
    assert done.returncode == 0, done.stderr
    half = io_type == "float16"
    np.testing.assert_allclose(np.load(out), reference(x, half), rtol=2e-3 if half else 1e-5)
    (row,) = json.loads((tmp_path / "o.json").read_text())["latency"]
    assert row_problems(row) == [], row_problems(row)
    assert (row["backend"], row["clock"], row["cuda_graph"], row["copies_included"]) == (
        "tensorrt",
        "cuda-events",
        graph,
        False,
    )
    facts = (row["tensorrt"], row["device"], row["precision"], row["batch"])
    assert facts == ("10.3.0.26", "Fake GPU 0", "fp16", 5)
    # Every timed run computes: directly, or by replaying the graph captured once (after one direct run that
    # lets TensorRT finish its setup outside the capture). The run that --dump-output reads counts too.
    runs = row["iterations"] + 1
    counted = (
        f"fake-tensorrt: {runs + 1} executions, {runs} graph launches"
        if graph
        else (f"fake-tensorrt: {runs} executions, 0 graph launches")
    )
    assert counted in done.stderr, done.stderr


def test_run_native_times_an_engine_at_each_batch_of_its_profile(runner: Path, tmp_path: Path) -> None:
    engine = write_engine(tmp_path, batches=(2, 6))
    rows = run_native(engine, (2, 6), TimingPolicy(0.0, 4, 0.0), build_dir=BUILD_DIR, extra=("--cuda-graph",))
    assert [(r["backend"], r["batch"]) for r in rows] == [("native-tensorrt", 2), ("native-tensorrt", 6)]
    assert all(row_problems(r) == [] and r["iterations"] >= 4 for r in rows)


def test_bad_engines_and_devices_are_one_line_and_exit_2(runner: Path, tmp_path: Path) -> None:
    engine = write_engine(tmp_path)
    bare = write_engine(tmp_path, "bare.engine", sidecar=False)
    int_input = write_engine(tmp_path, "ints.engine", io_type="int32")
    garbage = tmp_path / "garbage.engine"
    garbage.write_bytes(b"\x00\x01 not an engine")
    newer = {"KDFORGE_FAKE_TENSORRT_VERSION": "10.7.0.23"}
    cases = [
        (["--model", str(engine), "--batch", "9"], {}, "takes batches 1-8 (its optimization profile)"),
        (
            ["--model", str(engine)],
            newer,
            "m.engine cannot be deserialized by TensorRT 10.7.0.23 on Fake GPU 0 (built with TensorRT "
            "10.3.0.26 on Fake GPU 0)",
        ),
        (["--model", str(bare)], newer, "(no sidecar bare.engine.json says what built it)"),
        (["--model", str(garbage)], {}, "garbage.engine cannot be deserialized by TensorRT 10.3.0.26"),
        (["--model", str(engine)], {"KDFORGE_FAKE_CUDA_DEVICES": "0"}, "needs a CUDA GPU and none is"),
        (["--model", str(engine), "--device", "cpu"], {}, "runs on a CUDA GPU; use --device cuda"),
        (["--model", str(engine), "--device", "cuda:3"], {}, "this machine has CUDA devices 0-0"),
        (["--model", str(int_input)], {}, "input images is int32; kdforge-runner feeds float32 or float16"),
        (["--model", str(tmp_path / "gone.engine")], {}, "gone.engine not found"),
    ]
    for argv, env, message in cases:
        done = _run(runner, *argv, *QUICK, env=env)
        line = done.stderr.strip()
        assert done.returncode == 2, (argv, env, done.stderr)
        assert "\n" not in line and line.startswith("kdforge-runner: error: "), (argv, line)
        assert message in line, (argv, line)
