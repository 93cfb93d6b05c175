"""Deployment: reparameterize, ONNX export, quantize, TensorRT, latency profiling, reports.

It may import `compress` (models, checkpoints), never `kdforge`.
"""

from export.reparam import reparameterize

__all__ = ["reparameterize"]
