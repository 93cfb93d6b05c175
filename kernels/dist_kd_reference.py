"""Plain-torch reference of the DIST loss (fp32 or wider math, autograd for gradients): the CPU path of
`dist_loss` and the baseline the Triton kernels are tested against.

Follows the official DIST code (Huang et al., NeurIPS 2022): Pearson correlation is the cosine of the
centred vectors with `eps` added to the product of the two norms. Guards keep every case finite where
the reference code would give NaN: norms go through a safe square root (gradient 0 at a zero norm, i.e.
the d/da of a/||a|| term is taken as 0 there), and with eps = 0 the correlation is the dot product of
safely normalized vectors (0, with zero gradient, where a norm is 0).
"""

from __future__ import annotations

import torch
from kdforge.kernels.standardize import prepare_logits


def _safe_norm(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Euclidean norm along `dim` whose gradient is 0 (not NaN) where the norm is 0."""
    sq = (x * x).sum(dim)
    positive = sq > 0
    return torch.where(positive, torch.where(positive, sq, torch.ones_like(sq)).sqrt(), torch.zeros_like(sq))


def pearson_correlation(a: torch.Tensor, b: torch.Tensor, eps: float, dim: int = 1) -> torch.Tensor:
    """Centred cosine along `dim`: (a_c . b_c) / (||a_c|| ||b_c|| + eps), 0 where the denominator is 0.

    For eps = 0 it is evaluated as the dot product of the unit vectors a_c / ||a_c||, b_c / ||b_c||, whose
    gradients stay finite for tiny norms (N / D's backward divides by D^2, which underflows in fp32).
    With eps > 0 the denominator is at least eps, so the reference code's form is kept as is.
    """
    a = a - a.mean(dim, keepdim=True)
    b = b - b.mean(dim, keepdim=True)
    if eps == 0:
        return (_unit(a, dim) * _unit(b, dim)).sum(dim)
    return (a * b).sum(dim) / (_safe_norm(a, dim) * _safe_norm(b, dim) + eps)


def _unit(x: torch.Tensor, dim: int) -> torch.Tensor:
    """x / ||x|| along `dim`, 0 (with zero gradient) where ||x||^2 is 0. x is first divided by its
    (detached) largest magnitude, which the unit vector does not depend on, so no intermediate gradient
    (~1 / ||x||^2 through the norm) overflows for tiny norms; the result's gradient is ~1 / ||x||."""
    detached = x.detach()
    positive = (detached * detached).sum(dim, keepdim=True) > 0
    scale = detached.abs().amax(dim, keepdim=True)
    one = torch.ones_like(scale)
    scaled = x / torch.where(positive, scale, one)
    norm = torch.where(positive, _safe_norm(scaled, dim).unsqueeze(dim), one)
    return torch.where(positive, scaled / norm, torch.zeros_like(x))


def dist_loss_reference(
    student: torch.Tensor,
    teacher: torch.Tensor,
    beta: float,
    gamma: float,
    temperature: float,
    standardize: bool,
    eps: float,
) -> torch.Tensor:
    """DIST: T^2 * (beta * (1 - mean_rows pearson) + gamma * (1 - mean_columns pearson)) of the softmaxes.

    No defaults: `dist_loss` (kernels/dist_kd.py) declares them once for every backend."""
    student, teacher = prepare_logits(student, teacher, standardize)
    y_s = torch.softmax(student / temperature, dim=1)
    y_t = torch.softmax(teacher / temperature, dim=1)
    inter = 1 - pearson_correlation(y_s, y_t, eps, dim=1).mean()
    intra = 1 - pearson_correlation(y_s, y_t, eps, dim=0).mean()
    return temperature**2 * (beta * inter + gamma * intra)
