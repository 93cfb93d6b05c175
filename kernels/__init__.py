"""Logit losses for distillation. Knows nothing of models or training.

Each loss has one public function with the same signature on every backend: fused Triton kernels on
CUDA tensors (`<loss>_triton.py`, kernel plus autograd Function), and on CPU tensors the plain-torch
reference (`<loss>_reference.py`) that the kernels are tested against.
"""

# Imported as a top-level `kernels` (a checkout's root on sys.path): refuse, this is kdforge.kernels.
if __name__ != "kdforge.kernels":
    raise ImportError(f"this folder is kdforge.kernels: import kdforge.kernels, not {__name__}")

from typing import TYPE_CHECKING, Any

from kdforge.kernels.defaults import DIST_TEMPERATURE, DKD_TEMPERATURE, KD_TEMPERATURE

if TYPE_CHECKING:
    from kdforge.kernels.dist_kd import dist_loss
    from kdforge.kernels.dkd import dkd_loss
    from kdforge.kernels.kd import kd_loss

__all__ = ["DIST_TEMPERATURE", "DKD_TEMPERATURE", "KD_TEMPERATURE", "dist_loss", "dkd_loss", "kd_loss"]

# The losses import torch (and Triton) on first use, not with the package: kdforge.kernels.defaults is read
# while a recipe is checked, before torch loads.
_LOSSES = {"dist_loss": "dist_kd", "dkd_loss": "dkd", "kd_loss": "kd"}


def __getattr__(name: str) -> Any:
    if name in _LOSSES:
        import importlib

        return getattr(importlib.import_module(f"kdforge.kernels.{_LOSSES[name]}"), name)
    raise AttributeError(f"module 'kdforge.kernels' has no attribute {name!r}")
