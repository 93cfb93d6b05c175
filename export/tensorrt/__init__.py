"""TensorRT: strongly typed engines built from kdforge's ONNX files (fp32, fp16, int8 Q/DQ), checked against
their JSON sidecars, and run from torch CUDA tensors. TensorRT itself is imported only when needed."""

from kdforge.export.tensorrt.availability import INSTALL_HINT, require_tensorrt, tensorrt_status
from kdforge.export.tensorrt.build import EngineOptions, build_engine
from kdforge.export.tensorrt.engine import REBUILD_HINT, TensorRTEngine, engine_metadata

__all__ = [
    "INSTALL_HINT",
    "REBUILD_HINT",
    "EngineOptions",
    "TensorRTEngine",
    "build_engine",
    "engine_metadata",
    "require_tensorrt",
    "tensorrt_status",
]
