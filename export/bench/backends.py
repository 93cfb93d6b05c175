"""Inference backends behind one interface: `prepare(batch)` returns a zero-argument call that runs one
batch already resident where the backend computes (host->device copies excluded unless a backend says
`copies_included`), and `timer()` says how one call is timed (host clock, or CUDA events on GPU)."""

from __future__ import annotations

import abc
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from kdforge.compress.device import resolve_device
from kdforge.compress.errors import UserError, first_line
from kdforge.export.bench.timing import Timer, cuda_event_timer, wall_clock_timer
from torch import nn


class Backend(abc.ABC):
    """One way of running a network."""

    name: ClassVar[str] = ""
    copies_included: ClassVar[bool] = False

    @abc.abstractmethod
    def prepare(self, batch: int) -> Callable[[], object]:
        """A call running one forward pass at `batch` on pre-staged inputs."""

    def sync(self) -> None:  # noqa: B027 - a no-op on the CPU backends, overridden for GPU streams
        """Wait for queued work (a GPU stream); nothing on the CPU."""

    def timer(self) -> Timer:
        """How one call is timed: the host clock after `sync`."""
        return wall_clock_timer(self.sync)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "copies_included": self.copies_included}


class _TorchDevice(Backend):
    """Shared by the backends that run torch tensors on a CPU or a CUDA device."""

    device: torch.device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timer(self) -> Timer:
        if self.device.type == "cuda":
            return cuda_event_timer(torch.cuda.current_stream(self.device))
        return super().timer()

    def describe(self) -> dict[str, Any]:
        if self.device.type != "cuda":
            return {**super().describe(), "device": "cpu", "threads": torch.get_num_threads()}
        peak = torch.cuda.max_memory_allocated(self.device) / 1e6  # since the process started
        return {
            **super().describe(),
            "device": torch.cuda.get_device_name(self.device),
            "cuda_max_allocated_mb": peak,
        }


class TorchEager(_TorchDevice):
    """PyTorch eager under inference_mode, on CPU or CUDA."""

    name = "torch"

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], device: str = "cpu") -> None:
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.input_shape = tuple(input_shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def prepare(self, batch: int) -> Callable[[], object]:
        x = torch.randn(batch, *self.input_shape, device=self.device)

        def run() -> object:
            with torch.inference_mode():
                return self.forward(x)

        return run


class TorchCompile(TorchEager):
    """torch.compile (Inductor), one graph per batch size; compiled in `prepare`, outside the timing."""

    name = "torch-compile"

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], device: str = "cpu") -> None:
        super().__init__(model, input_shape, device)
        self.compiled = torch.compile(self.model, dynamic=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.compiled(x)

    def prepare(self, batch: int) -> Callable[[], object]:
        run = super().prepare(batch)
        try:
            run()
        except Exception as exc:  # inductor needs a working C++ compiler on the CPU
            raise UserError(f"torch.compile failed at batch {batch}: {first_line(exc)}") from exc
        return run


class AotInductor(_TorchDevice):
    """An AOTInductor `.pt2` package on the device it was compiled for."""

    name = "aoti"

    def __init__(self, path: str | Path, trust_code: bool = False) -> None:
        from kdforge.export.aoti import AotiPackage

        self.path = Path(path)
        self.package = AotiPackage(path, trust_code=trust_code)
        self.device = self.package.device
        self.input_shape = tuple(self.package.meta["input_shape"])

    def prepare(self, batch: int) -> Callable[[], object]:
        self.package.check_batch(batch)
        x = torch.randn(batch, *self.input_shape, device=self.device)

        def run() -> object:
            with torch.inference_mode():
                return self.package.runner(x)

        return run

    def describe(self) -> dict[str, Any]:
        size = os.path.getsize(self.path) / 1e6
        return {**super().describe(), "file": self.path.name, "size_mb": round(size, 3)}


ORT_BACKENDS = {"onnxruntime": "cpu", "onnxruntime-cuda": "cuda", "onnxruntime-trt": "tensorrt"}


class OnnxRuntime(Backend):
    """ONNX Runtime: the CPU execution provider (intra-op threads = torch's), or the CUDA / TensorRT
    providers, which are fed host arrays, so their figures include the copies."""

    name = "onnxruntime"

    def __init__(
        self, path: str | Path, threads: int | None = None, provider: str = "cpu", alone: bool = False
    ) -> None:
        from kdforge.export.onnx.parity import ort_session

        self.path = Path(path)
        self.provider = provider
        self.threads = threads or torch.get_num_threads()
        # Timed in turn with other variants, idle ONNX Runtime threads must not spin on the cores the next
        # variant needs; timed `alone`, they spin between ops as in production (steadier, faster figures).
        self.spinning = alone
        self.session = ort_session(path, self.threads, spinning=alone, provider=provider)
        spec = self.session.get_inputs()[0]
        self.input_name, self.input_shape = spec.name, spec.shape
        self.dtype = np.float16 if "float16" in spec.type else np.float32

    @property
    def backend_name(self) -> str:
        return next(name for name, provider in ORT_BACKENDS.items() if provider == self.provider)

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
            "backend": self.backend_name,
            "copies_included": self.provider != "cpu",
            "provider": self.session.get_providers()[0],
            "threads": self.threads,
            "thread_spinning": self.spinning,
            "file": self.path.name,
            "size_mb": round(os.path.getsize(self.path) / 1e6, 3),
        }


class TensorRT(Backend):
    """A serialized TensorRT engine run with execute_async_v3 on its own CUDA stream (CUDA events)."""

    name = "tensorrt"

    def __init__(self, path: str | Path, cuda_graph: bool = False, trust_code: bool = False) -> None:
        from kdforge.export.tensorrt import TensorRTEngine

        self.path = Path(path)
        self.engine = TensorRTEngine(path, cuda_graph=cuda_graph, trust_code=trust_code)

    def prepare(self, batch: int) -> Callable[[], object]:
        return self.engine.prepare(batch)

    def sync(self) -> None:
        self.engine.sync()

    def timer(self) -> Timer:
        return cuda_event_timer(self.engine.stream)

    def describe(self) -> dict[str, Any]:
        size = round(os.path.getsize(self.path) / 1e6, 3)
        return {**super().describe(), **self.engine.describe(), "file": self.path.name, "size_mb": size}
