"""Measure where the model ships: the whole remote loop with this machine as the device (two AOTInductor
packages bundled, measure.sh timing them with kdforge-runner, the rows imported back), the trtexec path
(a hand-written --exportTimes file checked against statistics.median, the script's trtexec flags through
a stand-in trtexec), and results/ treated as hostile input."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kdforge.compress.errors import UserError
from kdforge.compress.models import build as build_model
from kdforge.export.aoti import compile_package
from kdforge.export.bench.bundle import (
    BUNDLE_FORMAT,
    MAX_RESULT_BYTES,
    import_rows,
    read_manifest,
    write_bundle,
)
from kdforge.export.bench.cache import machine_identity, stored_row_problems
from kdforge.export.bench.candidate_timing import time_files
from kdforge.export.bench.target import parse_target
from kdforge.export.bench.timing import TimingPolicy
from kdforge.export.bench.trtexec import trtexec_row
from kdforge.export.onnx import to_onnx

SHAPE = (3, 16, 16)
POLICY = TimingPolicy(warmup_s=0.01, min_iterations=5, min_duration_s=0.02)
AOTI = parse_target("aoti:fp32")
TRT = parse_target("tensorrt:fp16")
needs_cxx = pytest.mark.skipif(
    shutil.which("cmake") is None or shutil.which("c++") is None, reason="needs cmake and a C++ compiler"
)


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def _measure(bundle: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "KDFORGE_RUNNER"}
    return subprocess.run(
        ["sh", str(bundle / "measure.sh"), *argv],
        env={**environment, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("c++") is None:
        pytest.skip("needs cmake and a C++ compiler")
    folder = tmp_path_factory.mktemp("packages")
    meta = {"input_shape": list(SHAPE)}
    built = {}
    for name, arch in (("small", "cnn_1_4"), ("large", "cnn_2_8")):
        torch.manual_seed(0)
        network = build_model(arch, 10).eval()
        built[name] = compile_package(
            network, folder / f"{name}.pt2", (1, *SHAPE), max_batch=2, metadata=meta
        )
    return built


@pytest.fixture(scope="module")
def runner() -> Path:
    from kdforge.export.native import build_native

    return build_native().binary  # the folder test_native.py builds in: seconds when it is up to date


@pytest.fixture(scope="module")
def measured(packages: dict[str, Path], runner: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle of the two packages, timed by its measure.sh with the runner built here."""
    bundle = write_bundle(tmp_path_factory.mktemp("remote") / "bundle", packages, AOTI, SHAPE, POLICY)
    done = _measure(bundle, KDFORGE_RUNNER=str(runner))
    assert done.returncode == 0, done.stderr
    return bundle


@needs_cxx
def test_the_bundle_holds_what_the_device_needs(measured: Path, packages: dict[str, Path]) -> None:
    manifest = json.loads((measured / "manifest.json").read_text())
    assert manifest["format"] == BUNDLE_FORMAT and manifest["version"] == 1
    assert manifest["target"] == {"backend": "aoti", "precision": "fp32", "batch": 1, "threads": None}
    assert manifest["input_shape"] == [3, 16, 16] and manifest["policy"]["min_iterations"] == 5
    assert [c["name"] for c in manifest["candidates"]] == ["small", "large"]
    for candidate in manifest["candidates"]:
        shipped = measured / candidate["file"]
        assert candidate["sha256"] == _sha256(shipped) == _sha256(packages[candidate["name"]])
        assert (measured / candidate["sidecar"]).is_file()
    native = {p.name for p in (measured / "native").iterdir()}
    assert {"CMakeLists.txt", "runner.cmake", "main.cpp", "aoti_backend.cpp", "backend.h"} <= native
    assert os.access(measured / "measure.sh", os.X_OK)
    assert read_manifest(measured) == manifest


@needs_cxx
def test_the_remote_loop_brings_back_plausible_rows(measured: Path) -> None:
    rows = import_rows(measured / "results")
    manifest = read_manifest(measured)
    assert list(rows) == ["small", "large"]
    for candidate in manifest["candidates"]:
        row = rows[candidate["name"]]
        assert stored_row_problems(row) == [] and "samples_ms" not in row
        assert row["sha256"] == candidate["sha256"] and row["file"] == f"{candidate['name']}.pt2"
        assert row["backend"] == "native-aoti" and row["precision"] == "fp32" and row["batch"] == 1
        assert row["backend_version"].startswith("kdforge-runner ") and row["cached"] is False
        assert row["imported"] == str(measured / "results" / f"{candidate['name']}.json")
        assert row["iterations"] >= 5 and 0 < row["p50"] <= row["p90"] <= row["p99"] < 1000
        assert row["machine"] == machine_identity()  # measure.sh names this machine as kdforge does


@needs_cxx
def test_packages_compiled_here_are_timed_here_too(packages: dict[str, Path]) -> None:
    rows = time_files(packages, parse_target("aoti:fp32", threads=1), SHAPE, POLICY)
    assert [row["file"] for row in rows.values()] == ["small.pt2", "large.pt2"]
    assert all(
        row["threads"] == 1 and row["backend_version"] == f"torch {torch.__version__}"
        for row in rows.values()
    )
    assert all(stored_row_problems(row) == [] and row["p50"] > 0 for row in rows.values())


@needs_cxx
def test_writing_the_same_bundle_again_keeps_it(measured: Path, packages: dict[str, Path]) -> None:
    before = sorted(p.name for p in (measured / "results").iterdir())
    assert write_bundle(measured, packages, AOTI, SHAPE, POLICY) == measured
    assert sorted(p.name for p in (measured / "results").iterdir()) == before
    with pytest.raises(UserError, match="holds another bundle"):
        write_bundle(measured, packages, AOTI, SHAPE, TimingPolicy(min_iterations=9))


@needs_cxx
def test_measure_sh_refuses_a_file_damaged_on_the_way(measured: Path, runner: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(measured, copy, symlinks=True, ignore=shutil.ignore_patterns("results", "build"))
    with open(copy / "models" / "large.pt2", "r+b") as handle:
        handle.seek(100)
        handle.write(b"\0damaged\0")
    done = _measure(copy, KDFORGE_RUNNER=str(runner))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "measure.sh: error: models/large.pt2 is damaged (its SHA-256 differs from manifest.json's); copy the "
        "bundle again"
    )


@pytest.mark.slow
@needs_cxx
def test_measure_sh_builds_the_runner_from_the_bundled_sources(measured: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(measured, copy, symlinks=True, ignore=shutil.ignore_patterns("results", "build"))
    done = _measure(copy, "--python", sys.executable, "--jobs", "2")
    assert done.returncode == 0, done.stderr + (copy / "build" / "build.log").read_text()[-2000:]
    assert (copy / "build" / "kdforge-runner").is_file() and "building kdforge-runner" in done.stderr
    assert list(import_rows(copy / "results")) == ["small", "large"]


def test_write_bundle_refuses_what_the_device_cannot_time(packages: dict[str, Path], tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my own")
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    small = {"small": packages["small"]}
    cases = [
        (foreign, small, AOTI, SHAPE, "holds files kdforge did not write for a bundle ('notes.txt')"),
        (link, small, AOTI, SHAPE, "is not a folder; choose a new or empty folder for the bundle"),
        (tmp_path / "b", small, parse_target("onnxruntime-cuda:fp16"), SHAPE, "needs kdforge on the device"),
        (tmp_path / "b", {"../up": packages["small"]}, AOTI, SHAPE, "candidate name '../up' cannot name"),
        (tmp_path / "b", small, AOTI, (3, 32, 32), "takes input (3, 16, 16) at batches 1-2, not (3, 32, 32)"),
        (tmp_path / "b", small, parse_target("aoti:fp32", 4), SHAPE, "at batch 4; compile it for those"),
        (tmp_path / "b", small, TRT, SHAPE, "target tensorrt times .onnx files, not 'small.pt2'"),
    ]
    for out, files, target, shape, message in cases:
        with pytest.raises(UserError) as caught:
            write_bundle(out, files, target, shape, POLICY)
        assert "\n" not in str(caught.value) and message in str(caught.value), str(caught.value)
    assert sorted(os.listdir(foreign)) == ["notes.txt"] and not (tmp_path / "b").exists()


# --- trtexec and hostile results: a TensorRT bundle of a tiny ONNX file (no TensorRT needed to write one)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("onnx")
    return to_onnx(build_model("cnn_1_4", 10).eval(), folder / "tiny.onnx", (1, *SHAPE))


@pytest.fixture
def trt_bundle(onnx_file: Path, tmp_path: Path) -> Path:
    bundle = write_bundle(tmp_path / "bundle", {"tiny": onnx_file}, TRT, SHAPE, POLICY)
    (bundle / "results").mkdir()
    (bundle / "results" / "machine.txt").write_text("Jetson test board, 6 logical cores, GPU Orin\n")
    (bundle / "results" / "tiny.sha256").write_text(_sha256(onnx_file) + "\n")
    return bundle


TIMES = [0.52, 0.48, 0.61, 0.50, 0.49, 0.75, 0.47, 0.51, 0.53]


def _export_times(values: list[float], field: str = "computeMs") -> str:
    records = [
        {
            "startInMs": 10.0 * i,
            "endInMs": 10.0 * i,
            "startComputeMs": 10.0 * i,
            field: v,
            "endToEndMs": v + 0.1,
        }
        for i, v in enumerate(values)
    ]
    return json.dumps(records)


def test_trtexec_times_import_with_the_median_of_compute_times(trt_bundle: Path) -> None:
    results = trt_bundle / "results"
    (results / "tiny.trtexec.json").write_text(_export_times(TIMES))
    (results / "tiny.trtexec.log").write_text("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec\n")
    (row,) = import_rows(results).values()
    assert row["p50"] == pytest.approx(statistics.median(TIMES), rel=1e-12)
    assert row["iterations"] == len(TIMES) and row["copies_included"] is False
    assert row["backend"] == "trtexec" and row["clock"] == "trtexec computeMs"
    assert row["backend_version"] == "trtexec TensorRT v100300" and row["precision"] == "fp16"
    assert row["machine"] == "Jetson test board, 6 logical cores, GPU Orin" and stored_row_problems(row) == []

    (results / "tiny.trtexec.json").write_text(_export_times(TIMES, field="latencyMs"))
    (row,) = import_rows(results).values()
    assert row["copies_included"] is True and row["clock"] == "trtexec latencyMs"


def _stand_in(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_trtexec(tmp_path: Path) -> Path:
    """A stand-in trtexec: records its arguments, writes the engine and the --exportTimes file it is given."""
    return _stand_in(
        tmp_path / "trtexec",
        'printf "%s\\n" "$@" >> "$FAKE_ARGV"\n'
        'for a in "$@"; do case $a in --exportTimes=*) times=${a#--exportTimes=} ;; '
        "--saveEngine=*) engine=${a#--saveEngine=} ;; esac; done\n"
        "echo '&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec'\n"
        ': > "$engine"\n'
        f"if [ -n \"${{times:-}}\" ]; then printf '%s\\n' '{_export_times(TIMES)}' > \"$times\"; fi\n",
    )


def test_the_script_drives_trtexec_with_strongly_typed_flags(
    trt_bundle: Path, fake_trtexec: Path, tmp_path: Path
) -> None:
    argv = tmp_path / "argv.txt"
    done = _measure(trt_bundle, "--tool", "trtexec", "--trtexec", str(fake_trtexec), FAKE_ARGV=str(argv))
    assert done.returncode == 0, done.stderr
    bundle = trt_bundle.resolve()
    assert argv.read_text().splitlines() == [
        f"--onnx={bundle}/models/tiny.onnx",
        "--stronglyTyped",
        f"--saveEngine={bundle}/build/engines/tiny.engine",
        f"--exportTimes={bundle}/results/tiny.trtexec.json",
        "--warmUp=10",
        "--duration=1",
        "--iterations=5",
        "--noDataTransfers",
        "--shapes=input:1x3x16x16",
    ]
    (row,) = import_rows(trt_bundle / "results").values()
    assert row["p50"] == pytest.approx(statistics.median(TIMES)) and row["machine"] == machine_identity()


def test_the_runner_times_tensorrt_engines_that_trtexec_built(
    trt_bundle: Path, fake_trtexec: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    report.write_text(_runner_report())
    runner = _stand_in(
        tmp_path / "kdforge-runner",
        'if [ "$1" = --list-backends ]; then echo "aoti, tensorrt"; exit 0; fi\n'
        'printf "%s\\n" "$@" > "$FAKE_RUNNER_ARGV"\n'
        'while [ $# -gt 0 ]; do if [ "$1" = --json ]; then out=$2; fi; shift; done\n'
        'cat "$FAKE_REPORT" > "$out"\n',
    )
    argv, runner_argv = tmp_path / "argv.txt", tmp_path / "runner-argv.txt"
    done = _measure(
        trt_bundle,
        "--trtexec",
        str(fake_trtexec),
        KDFORGE_RUNNER=str(runner),
        FAKE_ARGV=str(argv),
        FAKE_RUNNER_ARGV=str(runner_argv),
        FAKE_REPORT=str(report),
    )
    assert done.returncode == 0, done.stderr
    bundle = trt_bundle.resolve()
    engine = f"{bundle}/build/engines/tiny.engine"
    assert argv.read_text().splitlines() == [
        f"--onnx={bundle}/models/tiny.onnx",
        "--stronglyTyped",
        f"--saveEngine={engine}",
        "--skipInference",
        "--shapes=input:1x3x16x16",
    ]
    assert runner_argv.read_text().splitlines() == [
        *("--model", engine, "--batch", "1", "--warmup-ms", "10.000", "--min-iters", "5"),
        *("--min-ms", "20.000", "--json", f"{bundle}/results/tiny.json"),
    ]
    (row,) = import_rows(trt_bundle / "results").values()
    assert row["backend"] == "native-tensorrt" and row["tool"] == "kdforge-runner"


def _runner_report(**changes: object) -> str:
    row = {**trtexec_row(TIMES, 1, "computeMs"), "backend": "tensorrt", "file": "tiny.engine", **changes}
    return json.dumps({"runner": "kdforge-runner", "version": "0.1.0", "latency": [row]})


def test_hostile_results_are_refused_in_one_line(trt_bundle: Path, tmp_path: Path) -> None:
    results = trt_bundle / "results"
    outside = tmp_path / "outside.json"
    outside.write_text(_export_times(TIMES))

    def sparse(path: Path) -> None:
        with open(path, "wb") as handle:
            handle.truncate(MAX_RESULT_BYTES + 1)

    cases = [
        (lambda: sparse(results / "tiny.trtexec.json"), "is over 32 MiB"),
        (
            lambda: (results / "tiny.trtexec.json").symlink_to(outside),
            "is a symbolic link; kdforge reads only",
        ),
        (lambda: os.mkfifo(results / "tiny.trtexec.json"), "is not a regular file"),
        (lambda: (results / "tiny.json").write_text(_runner_report(p90=0.01)), "percentiles are not ordered"),
        (lambda: (results / "tiny.json").write_text(_runner_report(file="other.engine")), "not tiny.engine"),
        (lambda: (results / "tiny.json").write_text(_runner_report(batch=4)), "has no row at batch 1"),
        (lambda: (results / "tiny.json").write_text("[" * 100_000), "is not a kdforge-runner report"),
        (
            lambda: (results / "tiny.trtexec.json").write_text('[{"computeMs": NaN}]'),
            "not trtexec --exportTimes",
        ),
        (lambda: (results / "tiny.trtexec.json").write_text('[{"computeMs": -1}]'), "not a time in ms"),
        (lambda: (results / "tiny.trtexec.json").write_text('{"computeMs": 1}'), "a list of per-inference"),
        (
            lambda: (
                (results / "tiny.sha256").write_text("0" * 64),
                (results / "tiny.json").write_text(_runner_report()),
            ),
            "results of tiny are of another file than the manifest's models/tiny.onnx",
        ),
        (lambda: None, "holds no results of this bundle's candidates"),
    ]
    for make, message in cases:
        for stale in ("tiny.json", "tiny.trtexec.json"):
            (results / stale).unlink(missing_ok=True)
        (results / "tiny.sha256").write_text(_sha256(trt_bundle / "models" / "tiny.onnx"))
        make()
        with pytest.raises(UserError) as caught:
            import_rows(results)
        assert "\n" not in str(caught.value) and message in str(caught.value), (message, str(caught.value))

    for stale in ("tiny.json", "tiny.trtexec.json"):
        (results / stale).unlink(missing_ok=True)
    (results / "tiny.json").write_text(_runner_report())  # well-formed: imported
    (results / "evil.trtexec.json").write_text(_export_times(TIMES))  # not in the manifest: never read
    rows = import_rows(results)
    assert list(rows) == ["tiny"] and rows["tiny"]["backend"] == "native-tensorrt"
    assert rows["tiny"]["backend_version"] == "kdforge-runner 0.1.0"


def test_a_hostile_manifest_is_refused(trt_bundle: Path) -> None:
    manifest = json.loads((trt_bundle / "manifest.json").read_text())
    for change, message in (
        (
            {"candidates": [{**manifest["candidates"][0], "name": "../../etc/x"}]},
            "is not a plain, unique name",
        ),
        (
            {"candidates": [{**manifest["candidates"][0], "file": "/etc/passwd"}]},
            "file is not models/tiny.onnx",
        ),
        ({"target": {**manifest["target"], "backend": "torch"}}, "is not one a bundle times"),
        ({"format": "something else"}, "is not a kdforge bundle manifest"),
        ({"version": 99}, "is bundle version 99, not 1"),
    ):
        (trt_bundle / "manifest.json").write_text(json.dumps({**manifest, **change}))
        with pytest.raises(UserError) as caught:
            import_rows(trt_bundle / "results")
        assert "\n" not in str(caught.value) and message in str(caught.value), str(caught.value)
