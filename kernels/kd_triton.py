"""Fused Triton KD loss: a forward that reads both logits once and keeps per-row statistics, and a backward
that recomputes the gradients from the logits with grad_output folded in (fp32 math, one cast at the store).

Per row, with u = k_s (z_s - mean_s) and v = k_t (z_t - mean_t) (k = 1/T and mean = 0, or with
`standardize` the z-score: k = 1 / ((std + eps) T)):
    KL = sum_c p_t (v - u) - lse(v) + lse(u),        loss = T^2 / B * sum_rows KL
(each logsumexp kept as max + log(sum), large offsets cancelled before the logs are added)
    dL/dz_s = g (T / B) (p_s - p_t)
    dL/dz_t = g (T / B) p_t (log p_t - log p_s - KL)        (g = grad_output)
and with `standardize` on through the z-score backward (`triton_common.standardize_coefs`). The forward is
one online-softmax pass (running max and sum, rescaled as the max grows), after a moments pass with
`standardize`; it saves a side record per logit tensor (triton_common: max and log-sum, scale, and with
`standardize` the z-score backward's row sum, accumulated in the same online pass, see `_zscore_sums`)
and KL. The backward is one pass writing the gradients: 5 N*e for rows of one chunk.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from kdforge.kernels.standardize import STANDARDIZE_EPS
from kdforge.kernels.triton_common import (
    MAX_REGISTERS,
    SIDE,
    LaunchConfig,
    empty_grads,
    finish_lse,
    grad_outputs,
    grad_pointers,
    grad_scale_tensor,
    launch_config,
    load_side,
    online_lse,
    row_scales,
    row_walk,
    side_log_p,
    side_record,
    store_grads,
    store_side,
    walk_row,
    zscore_fold,
)
from torch.autograd.function import once_differentiable

# The (B, STATS) fp32 per-row statistics: the student's side record, the teacher's, then KL.
KL = tl.constexpr(2 * SIDE.value)
STATS = tl.constexpr(2 * SIDE.value + 1)


@triton.jit
def _fold(acc, offs, g_elems, mask, x_s, x_t, args):
    """`walk_row` visitor of the forward: both running log-sum-exps and the cross term
    sum exp(v - m_t) (v - u); with STANDARDIZE also `zscore_fold`'s exp-weighted sums of the centred logits
    (each relative to its running max, rescaled with it)."""
    m_s, sum_s, m_t, sum_t, cross, w = acc
    (k_s, mean_s, _std_s), (k_t, mean_t, _std_t), STANDARDIZE = args
    u = tl.where(mask, (x_s - mean_s) * k_s, 0.0)
    v = tl.where(mask, (x_t - mean_t) * k_t, 0.0)
    m_s, sum_s, e_s, rescale_s = online_lse(m_s, sum_s, u, mask)
    m_t, sum_t, e_t, rescale_t = online_lse(m_t, sum_t, v, mask)
    cross = cross * rescale_t + tl.sum(e_t * (v - u), axis=0)
    if STANDARDIZE:
        c_s = tl.where(mask, x_s - mean_s, 0.0)
        c_t = tl.where(mask, x_t - mean_t, 0.0)
        w = zscore_fold(w, e_s, rescale_s, e_t, rescale_t, v - u, c_s, c_t)
    return m_s, sum_s, m_t, sum_t, cross, w


@triton.jit
def _zscore_sums(sum_s, sum_t, cross, w):
    """sum(g c) of the z-score backward per unit of the gradient scale, c = x - mean, from the forward's
    online sums w = (w_ss, w_ts, w_tt, w_tx). Student: g = p_s - p_t, so sum(g c_s) = sum p_s c_s -
    sum p_t c_s; teacher: g = p_t (log p_t - log p_s - KL) = p_t ((v - u) - X) with X = sum p_t (v - u),
    so sum(g c_t) = sum p_t (v - u) c_t - X sum p_t c_t. Both sum(g) are 0 (softmaxes sum to 1)."""
    w_ss, w_ts, w_tt, w_tx = w
    x = cross / sum_t
    return w_ss / sum_s - w_ts / sum_t, (w_tx - x * w_tt) / sum_t


@triton.jit
def _kd_forward_kernel(s_ptr, t_ptr, s_strides, t_strides, stats_ptr, C, inv_t, eps,
                       BLOCK: tl.constexpr, VEC: tl.constexpr, STANDARDIZE: tl.constexpr):  # fmt: skip
    """One program per row: KL of the row and the side records the backward recomputes p_s, p_t from."""
    walk = row_walk(s_ptr, t_ptr, s_strides, t_strides, C, VEC)
    scale_s, scale_t = row_scales(walk, inv_t, eps, BLOCK, VEC, STANDARDIZE)
    z = tl.zeros((), tl.float32)
    low = tl.full((), float("-inf"), tl.float32)
    start = (low, z, low, z, z, (z, z, z, z))
    m_s, sum_s, m_t, sum_t, cross, w = walk_row(
        walk, start, _fold, (scale_s, scale_t, STANDARDIZE), BLOCK, VEC
    )
    cs_s = 0.0
    cs_t = 0.0
    if STANDARDIZE:
        cs_s, cs_t = _zscore_sums(sum_s, sum_t, cross, w)
    side_s = side_record(finish_lse(m_s, sum_s), scale_s, cs_s)
    side_t = side_record(finish_lse(m_t, sum_t), scale_t, cs_t)
    out = stats_ptr + tl.program_id(0).to(tl.int64) * STATS
    store_side(out, side_s)
    store_side(out + SIDE, side_t)
    # KL = cross / sum_t - (m_t + l_t) + (m_s + l_s), offsets and logs subtracted separately
    tl.store(out + KL, (cross / sum_t - (side_t[0] - side_s[0])) + (side_s[1] - side_t[1]))


@triton.jit
def _write(acc, offs, g_elems, mask, x_s, x_t, args):
    """`walk_row` visitor of the backward: dL/dz of the chunk for student and teacher times `scale`
    (grad_output T / B; 0 on masked lanes), written through the `grad_outputs` bundle."""
    side_s, side_t, kl, scale, out = args
    log_ps = side_log_p(x_s, side_s)
    log_pt = side_log_p(x_t, side_t)
    p_s = tl.exp(tl.where(mask, log_ps, float("-inf")))
    p_t = tl.exp(tl.where(mask, log_pt, float("-inf")))
    g_t = tl.where(mask, scale * p_t * (log_pt - log_ps - kl), 0.0)
    store_grads(out, g_elems, mask, scale * (p_s - p_t), g_t, x_s, x_t)
    return acc


@triton.jit
def _kd_backward_kernel(s_ptr, t_ptr, s_strides, t_strides, stats_ptr, go_ptr, gs_ptr, gt_ptr, C, grad_factor,
                        eps, BLOCK: tl.constexpr, VEC: tl.constexpr, STANDARDIZE: tl.constexpr,
                        GRAD_S: tl.constexpr, GRAD_T: tl.constexpr):  # fmt: skip
    """One program per row: dL/d(student) and, if asked, dL/d(teacher) times grad_output, in one walk."""
    walk = row_walk(s_ptr, t_ptr, s_strides, t_strides, C, VEC)
    st = stats_ptr + tl.program_id(0).to(tl.int64) * STATS
    side_s = load_side(st)
    side_t = load_side(st + SIDE)
    scale = tl.load(go_ptr).to(tl.float32) * grad_factor
    out = grad_outputs(gs_ptr, gt_ptr, side_s, side_t, scale, C, eps, STANDARDIZE, GRAD_S, GRAD_T)
    args = (side_s, side_t, tl.load(st + KL), scale, out)
    walk_row(walk, tl.zeros((), tl.float32), _write, args, BLOCK, VEC)


def _forward(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, standardize: bool, config: LaunchConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward kernel: (loss, per-row statistics)."""
    batch, classes = student.shape
    stats = torch.empty((batch, STATS.value), dtype=torch.float32, device=student.device)
    _kd_forward_kernel[(batch,)](
        student, teacher, student.stride(), teacher.stride(), stats, classes, 1.0 / temperature,
        STANDARDIZE_EPS, BLOCK=config.block, VEC=config.vec, STANDARDIZE=standardize,
        num_warps=config.num_warps, maxnreg=MAX_REGISTERS,
    )  # fmt: skip
    return stats[:, KL.value].sum() * (temperature * temperature / batch), stats


class KDLossFunction(torch.autograd.Function):
    """Autograd wrapper: the forward keeps O(B) statistics; the backward recomputes the gradients."""

    @staticmethod
    def forward(
        ctx,
        student: torch.Tensor,
        teacher: torch.Tensor,
        temperature: float,
        standardize: bool,
        config: LaunchConfig,
    ):
        loss, stats = _forward(student, teacher, temperature, standardize, config)
        ctx.save_for_backward(student, teacher, stats)
        ctx.args = (temperature, standardize, config)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        student, teacher, stats = ctx.saved_tensors
        temperature, standardize, config = ctx.args
        batch, classes = student.shape
        grad_s, grad_t = empty_grads(student, teacher, *ctx.needs_input_grad[:2])
        if grad_s is None and grad_t is None:
            return None, None, None, None, None
        _kd_backward_kernel[(batch,)](
            student, teacher, student.stride(), teacher.stride(), stats, grad_scale_tensor(grad_output),
            *grad_pointers((grad_s, grad_t), student), classes, temperature / batch, STANDARDIZE_EPS,
            BLOCK=config.block, VEC=config.vec, STANDARDIZE=standardize, GRAD_S=grad_s is not None,
            GRAD_T=grad_t is not None, num_warps=config.num_warps, maxnreg=MAX_REGISTERS,
        )  # fmt: skip
        return grad_s, grad_t, None, None, None


def kd_loss_triton(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float,
    standardize: bool,
    config: LaunchConfig | None = None,
) -> torch.Tensor:
    """The fused kernels behind `kd_loss(backend="triton")` (arguments already validated); `config`
    overrides the launch table (tests force chunked walks at small C with it)."""
    config = config or launch_config(student.shape[1], student, teacher)
    temperature, standardize = float(temperature), bool(standardize)
    if torch.is_grad_enabled() and (student.requires_grad or teacher.requires_grad):
        return KDLossFunction.apply(student, teacher, temperature, standardize, config)
    return _forward(student, teacher, temperature, standardize, config)[0]
