"""ONNX export with checks, simplification, metadata, and parity against PyTorch in ONNX Runtime."""

from kdforge.export.onnx.export import SUPPORTED_OPSETS, onnx_metadata, to_onnx
from kdforge.export.onnx.parity import ParityResult, check_parity, ort_session

__all__ = ["SUPPORTED_OPSETS", "ParityResult", "check_parity", "onnx_metadata", "ort_session", "to_onnx"]
