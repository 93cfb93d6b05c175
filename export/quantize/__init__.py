"""Precision variants of an ONNX file: fp16, and int8 with explicit Q/DQ (calibrated on real images)."""

from kdforge.export.quantize.accuracy import onnx_top1
from kdforge.export.quantize.fp16 import to_fp16
from kdforge.export.quantize.int8 import CALIBRATION_METHODS, to_int8

__all__ = ["CALIBRATION_METHODS", "onnx_top1", "to_fp16", "to_int8"]
