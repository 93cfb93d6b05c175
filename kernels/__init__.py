"""Logit losses for distillation. Knows nothing of models or training.

Each loss has one public function with the same signature on every backend: fused Triton kernels on
CUDA tensors (`<loss>_triton.py`, kernel plus autograd Function), and on CPU tensors the plain-torch
reference (`<loss>_reference.py`) that the kernels are tested against.
"""

# Imported as a top-level `kernels` (a checkout's root on sys.path): refuse, this is kdforge.kernels.
if __name__ != "kdforge.kernels":
    raise ImportError(f"this folder is kdforge.kernels: import kdforge.kernels, not {__name__}")

from kdforge.kernels.dist_kd import DIST_TEMPERATURE, dist_loss
from kdforge.kernels.dkd import dkd_loss
from kdforge.kernels.kd import kd_loss

__all__ = ["DIST_TEMPERATURE", "dist_loss", "dkd_loss", "kd_loss"]
