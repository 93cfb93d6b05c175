"""Inference backends behind one interface: `prepare(batch)` returns a zero-argument call that runs one
batch already resident where the backend computes (host->device copies excluded, and said so)."""

from __future__ import annotations

import abc
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from compress.errors import UserError


class Backend(abc.ABC):
    """One way of running a network."""

    name: ClassVar[str] = ""
    copies_included: ClassVar[bool] = False

    @abc.abstractmethod
    def prepare(self, batch: int) -> Callable[[], object]:
        """A call running one forward pass at `batch` on pre-staged inputs."""

    def sync(self) -> None:  # noqa: B027 - a no-op on the CPU backends, overridden for GPU streams
        """Wait for queued work (a GPU stream); nothing on the CPU."""

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "copies_included": self.copies_included}


class TorchEager(Backend):
    """PyTorch eager under inference_mode, on CPU or CUDA."""

    name = "torch"

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], device: str = "cpu") -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UserError("backend torch on cuda needs a CUDA GPU; use device cpu")
        self.model = model.eval().to(self.device)
        self.input_shape = tuple(input_shape[1:])

    def prepare(self, batch: int) -> Callable[[], object]:
        x = torch.randn(batch, *self.input_shape, device=self.device)

        def run() -> object:
            with torch.inference_mode():
                return self.model(x)

        return run

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "device": str(self.device), "threads": torch.get_num_threads()}


class OnnxRuntime(Backend):
    """ONNX Runtime with the CPU execution provider (one session, intra-op threads = torch's)."""

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        from export.onnx.parity import ort_session

        self.path = Path(path)
        self.threads = threads or torch.get_num_threads()
        self.session = ort_session(path, self.threads, spinning=False)  # backends are timed in turn
        spec = self.session.get_inputs()[0]
        self.input_name, self.input_shape = spec.name, spec.shape
        self.dtype = np.float16 if "float16" in spec.type else np.float32

    def prepare(self, batch: int) -> Callable[[], object]:
        fixed = self.input_shape[0]
        if isinstance(fixed, int) and fixed != batch:
            raise UserError(
                f"{self.path.name} has a fixed batch of {fixed}; bench it at --batches {fixed} or re-export "
                "with a dynamic batch"
            )
        dims = [d if isinstance(d, int) else None for d in self.input_shape[1:]]
        if any(d is None for d in dims):
            raise UserError(
                f"{self.path.name}: input {self.input_name} has symbolic non-batch dims {self.input_shape}"
            )
        x = np.random.default_rng(0).standard_normal((batch, *dims)).astype(self.dtype)
        feed = {self.input_name: x}
        return lambda: self.session.run(None, feed)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "provider": "CPUExecutionProvider",
            "threads": self.threads,
            "file": self.path.name,
            "size_mb": round(os.path.getsize(self.path) / 1e6, 3),
        }
