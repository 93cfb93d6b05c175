"""`time_files`: the latency of each shipped file (ONNX in the target precision, an AOTInductor .pt2) on a
target backend here, timed together in rotating rounds so their ratios are fair, and never twice: every
row goes through a `MeasurementCache`."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kdforge.compress.digest import sha256_file
from kdforge.compress.errors import UserError
from kdforge.export.bench.cache import MeasurementCache, machine_identity, measurement_key
from kdforge.export.bench.target import Target, check_target
from kdforge.export.bench.timing import TimingPolicy, measure_interleaved

FILE_SUFFIX = {"aoti": ".pt2"}  # every other target times an .onnx file (tensorrt builds its engine here)


def backend_version(backend: str) -> str:
    """The library that runs `backend`, with its version: part of every cache key."""
    if backend.startswith("onnxruntime"):
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}"
    if backend == "tensorrt":
        from kdforge.export.tensorrt import require_tensorrt

        return f"tensorrt {require_tensorrt().__version__}"
    import torch

    return f"torch {torch.__version__}"


def check_input_shape(input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """`input_shape` as (C, H, W) of positive integers, else one line."""
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise UserError(f"input shape must be (C, H, W) of positive integers, got {shape!r:.80}")
    return shape[0], shape[1], shape[2]


def time_files(
    files: dict[str, Path],
    target: Target,
    input_shape: tuple[int, ...],
    policy: TimingPolicy,
    cache: MeasurementCache | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """name -> latency row of each file on `target` here (profiler fields without `samples_ms`, plus
    `cached`, `sha256`, `machine`, `backend_version`, `input_shape`, `policy`), in the order of `files`.
    Files already in `cache` under the same key are not timed again; the others share rotating rounds."""
    check_target(target)
    if target.backend in ("torch", "torch-compile"):
        raise UserError(
            f"target {target.backend} runs a network in Python, not a shipped file; time the file you ship "
            "with --target aoti:fp32, onnxruntime:<precision> or tensorrt:<precision>"
        )
    target = target.resolved()
    shape = check_input_shape(input_shape)
    say = log or (lambda message: None)
    common = {
        "backend_version": backend_version(target.backend),
        "machine": machine_identity(),
        "input_shape": list(shape),
    }
    keys, rows = {}, {}
    for name, given in files.items():
        path = checked_file(name, Path(given), target)
        keys[name] = measurement_key(
            sha256=sha256_file(path),
            backend=target.backend,
            precision=target.precision,
            batch=target.batch,
            threads=target.threads,
            **common,
        )
        if cache is not None and (hit := cache.get(keys[name])) is not None:
            rows[name] = {**hit, "file": path.name, "cached": True}
    fresh = {name: Path(path) for name, path in files.items() if name not in rows}
    if fresh:
        say(f"timing {len(fresh)} file(s) on {target.label()} in rotating rounds ({len(rows)} cached)")
        for name, row in _time_together(fresh, target, shape, policy).items():
            row = {
                **row,
                **common,
                "sha256": keys[name]["sha256"],
                "policy": dataclasses.asdict(policy),
            }
            if cache is not None:
                cache.put(keys[name], row)
            rows[name] = {**row, "cached": False}
    for name in files:
        row = rows[name]
        how = "cached" if row["cached"] else "timed"
        say(f"{name}: p50 {row['p50']:.4f} ms, p90 {row['p90']:.4f} ms ({how}, {target.label()})")
    return {name: rows[name] for name in files}


def checked_file(name: str, path: Path, target: Target) -> Path:
    """`path` when it is a file of the kind `target` times, else one line."""
    suffix = FILE_SUFFIX.get(target.backend, ".onnx")
    if not path.is_file():
        raise UserError(f"candidate {name}: {str(path)!r:.200} not found")
    if path.suffix.lower() != suffix:
        raise UserError(f"candidate {name}: target {target.backend} times {suffix} files, not {path.name!r}")
    return path


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `threads` for the block (AOTInductor's CPU kernels use them)."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _time_together(
    files: dict[str, Path], target: Target, shape: tuple[int, int, int], policy: TimingPolicy
) -> dict[str, dict[str, Any]]:
    """Fresh rows of `files`, every file timed in the same rotating rounds."""
    with tempfile.TemporaryDirectory(prefix="kdforge-time-") as work, _torch_threads(target.threads):
        runners = {
            name: _runner(name, path, target, shape, Path(work) / f"{index}.engine")
            for index, (name, path) in enumerate(files.items())
        }
        calls = {name: runner.prepare(target.batch) for name, runner in runners.items()}
        timers = {name: runner.timer() for name, runner in runners.items()}
        stats = measure_interleaved(calls, target.batch, policy, timers=timers)
        return {
            name: {
                **runners[name].describe(),
                "file": files[name].name,  # tensorrt: the ONNX file, not the engine built from it here
                "backend": target.backend,
                "precision": target.precision,
                **stats[name].as_dict(with_samples=False),
            }
            for name in files
        }


def _runner(name: str, path: Path, target: Target, shape: tuple[int, int, int], engine: Path) -> Any:
    """The profiler backend that runs `path` as `target` says, after checking it takes `shape`."""
    from kdforge.export.bench.backends import ORT_BACKENDS, AotInductor, OnnxRuntime, TensorRT

    if target.backend == "aoti":
        # a package kdforge compiled for this user loads; any other is refused by its signature check
        runner: Any = AotInductor(path)
        takes = tuple(runner.input_shape)
    elif target.backend in ORT_BACKENDS:
        # interleaved: idle ONNX Runtime threads do not spin on the cores the next file needs
        runner = OnnxRuntime(path, threads=target.threads, provider=ORT_BACKENDS[target.backend])
        takes = tuple(runner.input_shape[1:])
    else:
        from kdforge.export.tensorrt import EngineOptions, build_engine

        batch = target.batch
        options = EngineOptions(min_batch=batch, opt_batch=batch, max_batch=batch, timing_cache=False)
        runner = TensorRT(build_engine(path, engine, target.precision, options))
        takes = tuple(runner.engine.meta.get("input_shape", shape))
    if takes != shape:
        raise UserError(
            f"candidate {name}: {path.name} takes input (C, H, W) = {takes}, not {shape}; export it for "
            f"{shape}"
        )
    return runner
