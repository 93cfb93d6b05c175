"""Deployment: reparameterize, ONNX export, quantize, TensorRT, latency profiling, reports.

It may import `compress` (models, checkpoints), never `kdforge`. Submodules load on first use, so a
command that only needs a name list (the CLI's --help) does not pay for importing torch.
"""

from typing import Any

__all__ = ["reparameterize"]


def __getattr__(name: str) -> Any:
    if name == "reparameterize":
        from export.reparam import reparameterize

        return reparameterize
    raise AttributeError(f"module 'export' has no attribute {name!r}")
