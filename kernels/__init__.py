"""Logit losses for distillation. Knows nothing of models or training.

Every loss has one public function with the same signature on every backend; the plain-torch
reference lives in `kernels.reference` and is what the fused Triton kernels are tested against.
"""

from kernels.kd import kd_loss

__all__ = ["kd_loss"]
