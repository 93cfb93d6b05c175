"""Whether TensorRT can be used here: the `tensorrt` module, a CUDA GPU, and a major version we build for
(10.x, as on JetPack 6, or 11.x). Every refusal is one line that names the fix."""

from __future__ import annotations

import importlib
import weakref
from types import ModuleType
from typing import Any

import torch
from kdforge.compress.errors import UserError, first_line
from kdforge.export.trt_versions import TRT_VERSIONS

INSTALL_HINT = "pip install 'kdforge[tensorrt]' on a machine with an NVIDIA GPU"

# Keyed by the module object itself (weakly): an id() key could be reused by another module object once
# the first is gone (a test's fake TensorRT), handing it a logger of the old one.
_loggers: weakref.WeakKeyDictionary[ModuleType, Any] = weakref.WeakKeyDictionary()


def require_tensorrt() -> ModuleType:
    """The imported `tensorrt` module, once it is known to be usable on this machine (else one UserError)."""
    try:
        trt = importlib.import_module("tensorrt")
    except ModuleNotFoundError as exc:
        if exc.name not in (None, "tensorrt"):  # installed, but one of its own imports is missing
            raise UserError(f"TensorRT cannot be imported ({first_line(exc)}); {INSTALL_HINT}") from None
        raise UserError(f"TensorRT is not installed: {INSTALL_HINT}") from None
    except (ImportError, OSError) as exc:  # e.g. the wheel is there but libnvinfer cannot be loaded
        raise UserError(f"TensorRT cannot be imported ({first_line(exc)}); {INSTALL_HINT}") from None
    if not torch.cuda.is_available():
        raise UserError(
            "TensorRT needs a CUDA GPU and none is visible here (torch.cuda.is_available() is False); "
            "run on a machine with an NVIDIA GPU and a CUDA build of PyTorch"
        )
    version = str(getattr(trt, "__version__", "unknown"))
    major = version.split(".")[0]
    if not major.isdigit() or int(major) not in TRT_VERSIONS:
        supported = " and ".join(f"{m}.x" for m in TRT_VERSIONS)
        raise UserError(f"TensorRT {version} is not supported; kdforge builds with TensorRT {supported}")
    return trt


def trt_logger(trt: ModuleType) -> Any:
    """One `trt.Logger` (warnings and errors to stderr) shared by builders and runtimes, as TensorRT asks."""
    if trt not in _loggers:
        _loggers[trt] = trt.Logger(trt.Logger.WARNING)
    return _loggers[trt]


def gpu_description() -> tuple[str, str]:
    """(name, compute capability such as '9.0') of the current CUDA device."""
    major, minor = torch.cuda.get_device_capability()
    return torch.cuda.get_device_name(), f"{major}.{minor}"


def tensorrt_status() -> tuple[bool, str]:
    """(usable?, one-line detail) for `kdforge doctor`; never raises."""
    try:
        trt = require_tensorrt()
        name, capability = gpu_description()
    except UserError as exc:
        return False, first_line(exc)
    except Exception as exc:  # a broken driver or install must not break `doctor`
        return False, f"TensorRT check failed: {type(exc).__name__}: {first_line(exc)}"
    return True, f"tensorrt {trt.__version__}: GPU {name} (compute capability {capability})"
