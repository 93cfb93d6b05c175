"""Plain-torch reference of the Decoupled KD loss (fp32 or wider math, autograd for gradients): the CPU
path of `dkd_loss` and the baseline the Triton kernel is tested against.

Every log-probability comes from a log_softmax, never from log(1 - p): log(1 - p_gt) is the logsumexp of the
non-target log-probabilities, so it stays exact when p_gt rounds to 1.
"""

from __future__ import annotations

import torch
from kdforge.kernels.defaults import DKD_TEMPERATURE
from kdforge.kernels.standardize import prepare_logits


def dkd_loss_reference(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = DKD_TEMPERATURE,
    standardize: bool = False,
) -> torch.Tensor:
    """DKD: T^2 * batch-mean(alpha * TCKD + beta * NCKD), computed in fp32 or wider (see kernels.dkd)."""
    student, teacher = prepare_logits(student, teacher, standardize)
    if student.shape[1] == 1:
        # No non-target class: both binary distributions are (1, 0) and NCKD is empty, so the loss is 0.
        return (student.sum() + teacher.sum()) * 0.0
    index = target.long().view(-1, 1)
    gt = torch.zeros_like(student, dtype=torch.bool).scatter_(1, index, True)
    s, t = student / temperature, teacher / temperature

    def log_parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        log_p = torch.log_softmax(x, dim=1)  # x - max - log(sum): no lse rounded at the logits' scale
        log_p_gt = log_p.gather(1, index).squeeze(1)
        # log(1 - p_gt) = logsumexp of the non-target log-probabilities: finite for C >= 2, no cancellation
        log_p_rest = torch.logsumexp(log_p.masked_fill(gt, float("-inf")), dim=1)
        # log_softmax over the non-target classes only; 0 at the target, where q = 0 weights it
        log_q = torch.log_softmax(x.masked_fill(gt, float("-inf")), dim=1)
        return log_p_gt, log_p_rest, torch.where(gt, torch.zeros_like(log_q), log_q)

    s_gt, s_rest, s_log_q = log_parts(s)
    t_gt, t_rest, t_log_q = log_parts(t)
    tckd = t_gt.exp() * (t_gt - s_gt) + t_rest.exp() * (t_rest - s_rest)
    q_t = torch.where(gt, torch.zeros_like(t_log_q), t_log_q.exp())
    nckd = (q_t * (t_log_q - s_log_q)).sum(dim=1)
    return (alpha * tckd + beta * nckd).mean() * temperature**2
