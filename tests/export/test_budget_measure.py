"""The measurement side of `kdforge run --budget`: targets parse to one-line errors, every timing goes
through the measurement cache (a file timed once is never timed again on the same machine, backend,
batch and threads; other bytes, batch or threads are timed afresh), and the cache file survives a kill
mid-write and refuses to be redirected or exhausted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from kdforge.compress.errors import UserError
from kdforge.compress.models import build as build_model
from kdforge.export.bench.available import LATENCY_BACKENDS, why_unavailable
from kdforge.export.bench.cache import MAX_CACHE_BYTES, MeasurementCache, machine_identity
from kdforge.export.bench.candidate_timing import time_files
from kdforge.export.bench.schema import ROW_FIELDS
from kdforge.export.bench.target import Target, check_target, parse_target
from kdforge.export.bench.timing import TimingPolicy
from kdforge.export.onnx import to_onnx

SHAPE = (3, 16, 16)
POLICY = TimingPolicy(warmup_s=0.01, min_iterations=5, min_duration_s=0.02)
ORT = parse_target("onnxruntime:fp32", threads=1)


@pytest.mark.parametrize(
    ("text", "batch", "threads", "expected"),
    [
        ("onnxruntime:int8-u8", 1, None, Target("onnxruntime", "int8-u8", 1, None)),
        (" tensorrt:int8 ", 8, 2, Target("tensorrt", "int8", 8, 2)),
        ("aoti:fp32", 1, 1, Target("aoti", "fp32", 1, 1)),
        ("onnxruntime-cuda:fp16", 4, None, Target("onnxruntime-cuda", "fp16", 4, None)),
    ],
)
def test_parse_target_accepts_what_each_backend_runs(text, batch, threads, expected) -> None:
    assert parse_target(text, batch, threads) == expected


@pytest.mark.parametrize(
    ("text", "batch", "threads", "message"),
    [
        ("onnxruntime", 1, None, "names no precision; write BACKEND:PRECISION, e.g. onnxruntime:int8-u8"),
        (
            "tflite:int8",
            1,
            None,
            f"unknown target backend 'tflite'; choose from {', '.join(LATENCY_BACKENDS)}",
        ),
        ("onnxruntime:int4", 1, None, "unknown precision 'int4'; onnxruntime runs fp32, fp16, int8, int8-u8"),
        ("tensorrt:int8-u8", 1, None, "tensorrt cannot run int8-u8; tensorrt runs fp32, fp16, int8"),
        ("aoti:fp16", 1, None, "aoti cannot run fp16; aoti runs fp32 (e.g. --target aoti:fp32)"),
        ("torch-compile:int8", 1, None, "torch-compile cannot run int8; torch-compile runs fp32"),
        ("onnxruntime:fp32", 0, None, "the target batch must be an integer >= 1, got 0"),
        ("onnxruntime:fp32", True, None, "the target batch must be an integer >= 1, got True"),
        ("onnxruntime:fp32", 1, 0, "the target threads must be an integer >= 1 (or left out), got 0"),
        ("onnxruntime:fp32", 1, -2, "the target threads must be an integer >= 1 (or left out), got -2"),
    ],
)
def test_parse_target_errors_are_one_line_naming_the_fix(text, batch, threads, message) -> None:
    with pytest.raises(UserError) as caught:
        parse_target(text, batch, threads)
    line = str(caught.value)
    assert "\n" not in line and message in line, line


def test_target_label_and_where_it_can_run() -> None:
    assert parse_target("onnxruntime:int8-u8", 1, 2).label() == "onnxruntime int8-u8, batch 1, 2 threads"
    assert parse_target("aoti:fp32", 4).label() == "aoti fp32, batch 4, default threads"
    assert parse_target("aoti:fp32", 1, None).resolved().threads == torch.get_num_threads()
    check_target(parse_target("tensorrt:int8"), here=False)  # a bundle for another device
    with pytest.raises(UserError, match="unknown target backend"):
        check_target(Target("tflite", "fp32"), here=False)
    why = why_unavailable("tensorrt")
    if why is None:
        check_target(parse_target("tensorrt:int8"))
    else:
        with pytest.raises(UserError) as caught:
            check_target(parse_target("tensorrt:int8"))
        assert str(caught.value) == (
            f"target tensorrt int8, batch 1, default threads is not available here ({why}); time on the "
            "device with --bundle (docs/budget.md)"
        )


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny networks, and the first again with other weights (other bytes, same shape)."""
    folder = tmp_path_factory.mktemp("onnx")
    files = {}
    for name, arch, seed in (("small", "cnn_1_4", 0), ("large", "cnn_2_8", 0), ("small-v2", "cnn_1_4", 1)):
        torch.manual_seed(seed)
        files[name] = to_onnx(build_model(arch, 10).eval(), folder / f"{name}.onnx", (1, *SHAPE))
    return files


def _check_rows(rows: dict[str, dict], names: list[str], cached: bool) -> None:
    assert list(rows) == names
    for row in rows.values():
        assert row["cached"] is cached and row["machine"] == machine_identity()
        assert row["backend"] == "onnxruntime" and row["precision"] == "fp32" and row["threads"] == 1
        assert all(field in row for field in ROW_FIELDS if field != "samples_ms") and "samples_ms" not in row
        assert 0 < row["p50"] <= row["p90"] <= row["p95"] <= row["p99"]


def test_the_cache_times_each_file_once_per_key(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "latency.jsonl"
    pair = {"small": onnx_files["small"], "large": onnx_files["large"]}
    logged: list[str] = []
    cache = MeasurementCache(path)
    first = time_files(pair, ORT, SHAPE, POLICY, cache, logged.append)
    _check_rows(first, ["small", "large"], cached=False)
    assert cache.timed == 2 and len(path.read_text().splitlines()) == 2
    assert logged[0].startswith("timing 2 file(s) on onnxruntime fp32, batch 1, 1 thread in rotating rounds")
    assert len(logged) == 3 and logged[1].startswith("small: p50 ")

    again = MeasurementCache(path)  # as a resumed run reads it
    second = time_files(pair, ORT, SHAPE, POLICY, again)
    _check_rows(second, ["small", "large"], cached=True)
    assert again.timed == 0
    assert [second[n]["p50"] for n in pair] == [first[n]["p50"] for n in pair]

    changed = {"small": onnx_files["small-v2"], "large": onnx_files["large"]}  # same name, other bytes
    third = time_files(changed, ORT, SHAPE, POLICY, again)
    assert again.timed == 1 and not third["small"]["cached"] and third["large"]["cached"]
    assert third["small"]["sha256"] != second["small"]["sha256"]

    for other in (parse_target("onnxruntime:fp32", 2, 1), parse_target("onnxruntime:fp32", 1, 2)):
        before = again.timed
        rows = time_files(pair, other, SHAPE, POLICY, again)
        assert again.timed == before + 2 and not any(row["cached"] for row in rows.values())
    assert MeasurementCache(path).timed == 0 and len(MeasurementCache(path)) == 7


def test_a_truncated_last_line_is_ignored(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "latency.jsonl"
    one = {"small": onnx_files["small"]}
    time_files(one, ORT, SHAPE, POLICY, MeasurementCache(path))
    whole = path.read_bytes()
    with open(path, "ab") as handle:  # a kill in the middle of the next record
        handle.write(whole[: len(whole) // 2])
    cache = MeasurementCache(path)
    assert len(cache) == 1 and time_files(one, ORT, SHAPE, POLICY, cache)["small"]["cached"]
    time_files({"large": onnx_files["large"]}, ORT, SHAPE, POLICY, cache)
    lines = path.read_bytes().split(b"\n")
    assert lines[1] == whole[: len(whole) // 2] and lines[-1] == b""  # the torn line stays on its own
    assert len(MeasurementCache(path)) == 2


def test_the_cache_file_is_data_not_a_path_to_follow(tmp_path: Path) -> None:
    record = {"kdforge-latency": 1, "key": {"sha256": "x"}, "row": {"p50": 1}}  # a key of the wrong form
    garbage = [b"not json", b"[1, 2]", json.dumps(record).encode(), b"{" * 100_000, b"\xff\xfe", b"1" * 5000]
    path = tmp_path / "latency.jsonl"
    path.write_bytes(b"\n".join(garbage) + b"\n")
    assert len(MeasurementCache(path)) == 0

    outside = tmp_path / "outside.jsonl"
    outside.write_text("")
    link = tmp_path / "link.jsonl"
    link.symlink_to(outside)
    fifo = tmp_path / "fifo.jsonl"
    os.mkfifo(fifo)  # opening it for reading would block without O_NONBLOCK
    huge = tmp_path / "huge.jsonl"
    with open(huge, "wb") as handle:
        handle.truncate(MAX_CACHE_BYTES + 1)  # sparse: no disk used
    for given, message in (
        (link, "is a symbolic link; kdforge writes only a real file there: remove the link"),
        (fifo, "is not a regular file; delete it"),
        (huge, "is over 64 MiB; delete it (kdforge times the files again)"),
    ):
        with pytest.raises(UserError) as caught:
            MeasurementCache(given)
        assert "\n" not in str(caught.value) and message in str(caught.value)


def test_time_files_refuses_what_it_cannot_time(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    small = {"small": onnx_files["small"]}
    cases = [
        (small, ORT, (3, 32, 32), "small.onnx takes input (C, H, W) = (3, 16, 16), not (3, 32, 32)"),
        (small, ORT, (3, 16), "input shape must be (C, H, W) of positive integers"),
        (small, parse_target("aoti:fp32"), SHAPE, "target aoti times .pt2 files, not 'small.onnx'"),
        ({"gone": tmp_path / "gone.onnx"}, ORT, SHAPE, "candidate gone:"),
        (small, parse_target("torch:fp32"), SHAPE, "runs a network in Python, not a shipped file"),
    ]
    for files, target, shape, message in cases:
        with pytest.raises(UserError) as caught:
            time_files(files, target, shape, POLICY)
        assert "\n" not in str(caught.value) and message in str(caught.value), str(caught.value)


def test_machine_identity_is_short_and_stable() -> None:
    identity = machine_identity()
    assert identity == machine_identity() and 0 < len(identity) <= 200 and "\n" not in identity
    assert f"{os.cpu_count()} logical cores" in identity


@pytest.mark.tensorrt
@pytest.mark.gpu
@pytest.mark.skipif(why_unavailable("tensorrt") is not None, reason=f"{why_unavailable('tensorrt')}")
def test_tensorrt_targets_build_an_engine_from_each_onnx(onnx_files: dict[str, Path], tmp_path: Path) -> None:
    cache = MeasurementCache(tmp_path / "latency.jsonl")
    pair = {"small": onnx_files["small"], "large": onnx_files["large"]}
    rows = time_files(pair, parse_target("tensorrt:fp32", 2), SHAPE, POLICY, cache)
    assert cache.timed == 2 and [row["file"] for row in rows.values()] == ["small.onnx", "large.onnx"]
    assert all(row["backend_version"].startswith("tensorrt ") and row["p50"] > 0 for row in rows.values())
