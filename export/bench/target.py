"""Where a latency budget is measured: a backend, the precision of the file it runs, the batch and the
intra-op threads (`kdforge run --budget 0.4ms --target onnxruntime:int8-u8 --batch 1`)."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from kdforge.compress.config import Precision
from kdforge.compress.errors import UserError
from kdforge.compress.text import shown
from kdforge.export.bench.available import LATENCY_BACKENDS, why_unavailable

PRECISIONS: tuple[str, ...] = typing.get_args(Precision)
# int8-u8 is ONNX Runtime CPU's form, which TensorRT does not build (export/tensorrt/build.py)
TENSORRT_PRECISIONS = ("fp32", "fp16", "int8")


def runs_precisions(backend: str) -> tuple[str, ...]:
    """The precisions `backend` runs: ONNX Runtime every ONNX form kdforge writes, TensorRT the strongly
    typed ones, the torch-based backends (aoti, torch, torch-compile) the float network only."""
    if backend.startswith("onnxruntime"):
        return PRECISIONS
    if backend == "tensorrt":
        return TENSORRT_PRECISIONS
    return ("fp32",)


@dataclass(frozen=True)
class Target:
    """A backend and precision to time shipped files on, at one batch size with a number of threads."""

    backend: str  # as kdforge deploy names backends: onnxruntime, onnxruntime-cuda, tensorrt, aoti, ...
    precision: str  # fp32 | fp16 | int8 | int8-u8 (kdforge.compress.config.Precision)
    batch: int = 1
    threads: int | None = None  # intra-op threads; None: the backend's default where it runs

    def label(self) -> str:
        """One line for tables and logs, e.g. 'onnxruntime int8-u8, batch 1, 2 threads'."""
        if self.threads is None:
            threads = "default threads"
        else:
            threads = f"{self.threads} thread{'s' if self.threads != 1 else ''}"
        return f"{self.backend} {self.precision}, batch {self.batch}, {threads}"

    def resolved(self) -> Target:
        """This target with `threads` fixed to what the backend uses here when none was given (torch's
        intra-op threads: what OnnxRuntime and AOTInductor default to), so records say the number."""
        if self.threads is not None:
            return self
        import torch

        return dataclasses.replace(self, threads=torch.get_num_threads())


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def target_problem(target: Target) -> str | None:
    """What is wrong with `target`, as one line naming the fix (None when nothing is)."""
    if target.backend not in LATENCY_BACKENDS:
        return f"unknown target backend {shown(target.backend)}; choose from {', '.join(LATENCY_BACKENDS)}"
    runs = runs_precisions(target.backend)
    if target.precision not in runs:
        if target.precision not in PRECISIONS:
            what = f"unknown precision {shown(target.precision)}"
        else:
            what = f"{target.backend} cannot run {target.precision}"
        return f"{what}; {target.backend} runs {', '.join(runs)} (e.g. --target {target.backend}:{runs[0]})"
    if not _is_count(target.batch) or target.batch < 1:
        return f"the target batch must be an integer >= 1, got {shown(target.batch)}"
    if target.threads is not None and (not _is_count(target.threads) or target.threads < 1):
        return f"the target threads must be an integer >= 1 (or left out), got {shown(target.threads)}"
    return None


def parse_target(text: str, batch: int = 1, threads: int | None = None) -> Target:
    """The target `BACKEND:PRECISION` (e.g. 'onnxruntime:int8-u8') at `batch` with `threads`; one line
    naming the fix when any part is wrong."""
    backend, colon, precision = str(text).strip().partition(":")
    if not colon:
        raise UserError(
            f"target {shown(text)} names no precision; write BACKEND:PRECISION, e.g. onnxruntime:int8-u8"
        )
    target = Target(backend.strip(), precision.strip(), batch, threads)
    if (problem := target_problem(target)) is not None:
        raise UserError(problem)
    return target


def check_target(target: Target, *, here: bool = True) -> None:
    """Refuse (one line) a target that is malformed or, with `here`, whose backend cannot run on this
    machine; `here=False` is for a bundle timed on another device."""
    if (problem := target_problem(target)) is not None:
        raise UserError(problem)
    if here and (why := why_unavailable(target.backend)) is not None:
        raise UserError(
            f"target {target.label()} is not available here ({why}); time on the device with --bundle "
            "(docs/budget.md)"
        )
