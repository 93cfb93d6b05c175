"""The backend names kdforge knows, what each needs, and which of them can run on this machine."""

from __future__ import annotations

import shutil

from kdforge.compress.errors import UserError

LATENCY_BACKENDS = {
    "torch": "PyTorch eager, fp32",
    "torch-compile": "torch.compile (Inductor), fp32, one graph per batch size",
    "aoti": "AOTInductor .pt2 package, fp32",
    "onnxruntime": "ONNX Runtime, CPU execution provider",
    "onnxruntime-cuda": "ONNX Runtime, CUDA execution provider (host copies included)",
    "onnxruntime-trt": "ONNX Runtime, TensorRT execution provider (host copies included)",
    "tensorrt": "TensorRT engine, strongly typed, execute_async_v3",
}
COMPILED = ("torch-compile", "aoti")  # Inductor writes and builds C++ on the CPU


def cxx_compiler() -> str | None:
    """The C++ compiler Inductor would use, if any is on PATH."""
    return shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")


def why_unavailable(name: str) -> str | None:
    """None when backend `name` can run here, else one line saying what is missing and how to get it."""
    if name in COMPILED and cxx_compiler() is None:
        return f"{name} needs a C++ compiler on PATH (install g++ or clang++)"
    if name.startswith("onnxruntime"):
        try:
            import onnxruntime as ort
        except ImportError:
            return f"{name} needs onnxruntime: pip install onnxruntime (or kdforge[gpu], see README)"
        from kdforge.export.bench.backends import ORT_BACKENDS
        from kdforge.export.onnx.parity import ORT_PROVIDERS

        wanted = ORT_PROVIDERS[ORT_BACKENDS[name]][0]
        if wanted not in ort.get_available_providers():
            return (
                f"{name} needs {wanted}, which this ONNX Runtime lacks; install the GPU build as the "
                "README's 'GPU machines' section says"
            )
    if name == "tensorrt":
        from kdforge.export.tensorrt import tensorrt_status

        usable, detail = tensorrt_status()
        if not usable:
            return f"tensorrt: {detail}"
    return None


def available_backends() -> tuple[str, ...]:
    """Every known backend that can run here, in a fixed order."""
    return tuple(name for name in LATENCY_BACKENDS if why_unavailable(name) is None)


def check_backends(names: tuple[str, ...], *, must_run_here: bool = True) -> None:
    """One line for an unknown backend name, or (with `must_run_here`) for one this machine cannot run."""
    for name in names:
        if name not in LATENCY_BACKENDS:
            raise UserError(f"unknown backend {name!r}; choose from {', '.join(LATENCY_BACKENDS)}")
        if must_run_here and (reason := why_unavailable(name)) is not None:
            raise UserError(reason)
