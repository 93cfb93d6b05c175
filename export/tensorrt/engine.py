"""Running a serialized TensorRT engine: checked against its sidecar first (no TensorRT needed for that), then
deserialized and bound to torch CUDA tensors for `execute_async_v3` on a dedicated stream."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from kdforge.compress.errors import UserError
from kdforge.export.sidecar import read_sidecar
from kdforge.export.tensorrt.availability import gpu_description, require_tensorrt, trt_logger
from kdforge.export.trust import require_trusted

REBUILD_HINT = "rebuild it with `kdforge deploy CHECKPOINT --backends tensorrt`"
KIND = "tensorrt-engine"

# TensorRT DataType member name -> torch dtype (names, not values, so 10.x and 11.x agree)
TORCH_DTYPES: dict[str, torch.dtype] = {
    "FLOAT": torch.float32,
    "HALF": torch.float16,
    "BF16": torch.bfloat16,
    "INT8": torch.int8,
    "UINT8": torch.uint8,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "BOOL": torch.bool,
}


def engine_metadata(path: str | Path) -> dict[str, Any]:
    """The checked sidecar of a TensorRT engine: catches a truncated, altered or foreign file in one line."""
    record = read_sidecar(path, REBUILD_HINT)
    if record.get("kind") != KIND:
        raise UserError(
            f"{Path(path).name} is not a TensorRT engine (its sidecar says kind {record.get('kind')!r}); "
            f"{REBUILD_HINT}"
        )
    return record


class TensorRTEngine:
    """One engine, one execution context and one CUDA stream; inputs and outputs are torch CUDA tensors.
    Answers the latency profiler's backend interface (prepare / sync / describe) by duck typing."""

    name: ClassVar[str] = "tensorrt"
    copies_included: ClassVar[bool] = False  # prepare() stages inputs on the GPU; timings exclude copies

    def __init__(self, path: str | Path, cuda_graph: bool = False, trust_code: bool = False) -> None:
        self.path = Path(path)
        self.meta = engine_metadata(self.path)  # before TensorRT: a corrupt file gets its own clear line
        # An engine is a program (kernels, possibly plugins or an embedded lean runtime): one kdforge did not
        # build for this user is refused unless trust_code (TensorRT's engine_host_code_allowed stays off).
        require_trusted(self.path, self.meta, trust_code, "a TensorRT engine (a compiled program)")
        self.trt = require_tensorrt()
        self.cuda_graph = cuda_graph
        self.runtime = self.trt.Runtime(trt_logger(self.trt))
        try:
            self.engine = self.runtime.deserialize_cuda_engine(self.path.read_bytes())
        except RuntimeError:  # documented to return None; some builds raise instead
            self.engine = None
        if self.engine is None:
            gpu, _ = gpu_description()
            raise UserError(
                f"{self.path.name} cannot be deserialized by TensorRT {self.trt.__version__} on this GPU "
                f"({gpu}) (built with TensorRT {self.meta.get('tensorrt')} on {self.meta.get('gpu')}); "
                f"{REBUILD_HINT}"
            )
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise UserError(
                f"TensorRT could not create an execution context for {self.path.name} (GPU memory?)"
            )
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT]
        self.output_names = [
            n for n in names if self.engine.get_tensor_mode(n) == self.trt.TensorIOMode.OUTPUT
        ]
        if len(inputs) != 1 or not self.output_names:
            raise UserError(
                f"{self.path.name} has inputs {inputs} and outputs {self.output_names}; kdforge runs engines "
                "with one input and at least one output"
            )
        self.input_name = inputs[0]
        self.input_dims = tuple(int(d) for d in self.engine.get_tensor_shape(self.input_name))[1:]
        limits = self.meta.get("profile", {}).get(self.input_name)
        if not limits:
            raise UserError(
                f"{self.path.name}: its sidecar has no profile for input {self.input_name}; {REBUILD_HINT}"
            )
        self.min_batch, self.max_batch = int(limits["min"][0]), int(limits["max"][0])
        self.stream = torch.cuda.Stream()

    def _dtype(self, name: str) -> torch.dtype:
        """The torch dtype of an IO tensor, from the name of its TensorRT DataType member."""
        kind = self.engine.get_tensor_dtype(name).name
        if kind not in TORCH_DTYPES:
            raise UserError(
                f"{self.path.name}: tensor {name} has data type {kind}, which kdforge cannot feed"
            )
        return TORCH_DTYPES[kind]

    def _check_batch(self, batch: int) -> None:
        """One line when `batch` is outside the engine's optimization profile."""
        if not self.min_batch <= batch <= self.max_batch:
            raise UserError(
                f"{self.path.name} takes batches {self.min_batch}-{self.max_batch} (its optimization "
                f"profile); batch {batch} is outside; rebuild it with a wider batch range"
            )

    def _bind(self, x: torch.Tensor) -> tuple[Callable[[], None], list[torch.Tensor]]:
        """Set the input shape, give TensorRT the addresses of `x` and of new output tensors; return the
        enqueue call and the outputs. The context holds these bindings, so the latest `_bind` wins."""
        self.stream.synchronize()  # earlier work on the old buffers is finished before they may be freed
        if not self.context.set_input_shape(self.input_name, tuple(x.shape)):
            raise UserError(f"{self.path.name}: TensorRT rejected input shape {tuple(x.shape)}")
        self.context.set_tensor_address(self.input_name, x.data_ptr())
        outputs = []
        for name in self.output_names:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise UserError(f"{self.path.name}: output {name} has a data-dependent shape {shape}")
            out = torch.empty(shape, dtype=self._dtype(name), device="cuda")
            self.context.set_tensor_address(name, out.data_ptr())
            outputs.append(out)
        self.stream.wait_stream(torch.cuda.current_stream())  # `x` was written on the caller's stream
        context, stream, engine_name = self.context, self.stream, self.path.name

        def enqueue() -> None:
            with torch.cuda.stream(stream):
                if not context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
                    raise UserError(
                        f"TensorRT failed to enqueue {engine_name} (its errors are printed above)"
                    )

        return enqueue, outputs

    def prepare(self, batch: int) -> Callable[[], torch.Tensor]:
        """A call running one batch of random inputs already on the GPU; returns the first output (not
        synchronized: call `sync`). With `cuda_graph` the call replays a captured CUDA graph."""
        self._check_batch(batch)
        x = torch.randn(batch, *self.input_dims, device="cuda").to(self._dtype(self.input_name))
        enqueue, outputs = self._bind(x)
        first = outputs[0]
        if not self.cuda_graph:

            def run() -> torch.Tensor:
                enqueue()
                _ = x  # the closure keeps the bound input alive
                return first

            return run
        enqueue()  # once outside capture: TensorRT finishes shape-dependent setup after set_input_shape
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, stream=self.stream):
                enqueue()
        except RuntimeError as exc:
            text = " ".join(str(exc).split())[:200]
            raise UserError(
                f"{self.path.name} cannot be captured in a CUDA graph ({text}); run without it"
            ) from exc

        def replay() -> torch.Tensor:
            with torch.cuda.stream(self.stream):
                graph.replay()
            _ = (x, outputs)  # the graph reads and writes these addresses
            return first

        return replay

    def sync(self) -> None:
        """Wait for the work queued on this engine's stream."""
        self.stream.synchronize()

    def infer(self, images: torch.Tensor) -> torch.Tensor:
        """First output for `images` (N, C, H, W; float32, CPU or CUDA), as float32 on the CPU; batches larger
        than the engine's maximum run in chunks."""
        if tuple(images.shape[1:]) != self.input_dims:
            raise UserError(
                f"{self.path.name} takes input (N, {', '.join(map(str, self.input_dims))}), "
                f"got {tuple(images.shape)}"
            )
        if images.shape[0] == 0:
            self._check_batch(0)
        results = []
        for chunk in torch.split(images, self.max_batch):
            self._check_batch(int(chunk.shape[0]))
            x = torch.empty(chunk.shape, dtype=self._dtype(self.input_name), device="cuda")
            x.copy_(chunk)
            enqueue, outputs = self._bind(x)
            enqueue()
            self.sync()
            results.append(outputs[0].float().cpu())
        return torch.cat(results)

    def describe(self) -> dict[str, Any]:
        """What ran: TensorRT version, GPU, the engine's precision and whether a CUDA graph replays it."""
        gpu, capability = gpu_description()
        return {
            "backend": self.name,
            "tensorrt": str(self.trt.__version__),
            "gpu": gpu,
            "compute_capability": capability,
            "precision": self.meta.get("precision"),
            "file": self.path.name,
            "cuda_graph": self.cuda_graph,
            "copies_included": False,
        }
