"""Deployment: ONNX export, quantize, TensorRT, latency profiling, reports.

It may import `compress` (models, checkpoints, the merge of multi-branch blocks), never `kdforge`.
Submodules load on first use, so a command that only needs a name list (the CLI's --help) does not pay
for importing torch.
"""

# Imported as a top-level `export` (a checkout's root on sys.path): refuse, this is kdforge.export.
if __name__ != "kdforge.export":
    raise ImportError(f"this folder is kdforge.export: import kdforge.export, not {__name__}")

from typing import Any

__all__ = ["reparameterize", "to_onnx"]


def __getattr__(name: str) -> Any:
    if name == "reparameterize":
        from kdforge.compress.reparam import reparameterize  # the deploy path's first step, owned by compress

        return reparameterize
    if name == "to_onnx":
        from kdforge.export.onnx import to_onnx

        return to_onnx
    raise AttributeError(f"module 'kdforge.export' has no attribute {name!r}")
