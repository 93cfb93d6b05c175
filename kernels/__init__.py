"""Logit losses for distillation. Knows nothing of models or training.

Each loss has one public function with the same signature on every backend: fused Triton kernels on
CUDA tensors (`<loss>_triton.py`, kernel plus autograd Function), and on CPU tensors the plain-torch
reference (`<loss>_reference.py`) that the kernels are tested against.
"""

from kernels.dist import dist_loss
from kernels.dkd import dkd_loss
from kernels.kd import kd_loss

__all__ = ["dist_loss", "dkd_loss", "kd_loss"]
