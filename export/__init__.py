"""Deployment: reparameterize, ONNX export, quantize, TensorRT, latency profiling, reports.

Empty until the deploy issues land; it may import `compress` (models, checkpoints), never `kdforge`.
"""
