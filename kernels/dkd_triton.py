"""Fused Triton kernels for the Decoupled KD loss: the forward reads both logits once per row and keeps
per-row statistics; the backward recomputes dL/d(student) (and dL/d(teacher) when it requires grad) from
the logits with grad_output folded in, in fp32, cast once when written.

Notation for one row: a = z_s / T, b = z_t / T (z the logits, z-scored first with `standardize`), g the
target class, "rest" the other classes. lse = logsumexp over all classes, lse' over the rest only:
  P = p_g = exp(x_g - lse),  R = 1 - P = exp(lse' - lse)  (never exp(lse) - exp(x_g): that cancels),
  q_j = exp(x_j - lse') for j != g (softmax over the rest), 0 at g.
  TCKD = P_t (log P_t - log P_s) + R_t (log R_t - log R_s)
  NCKD = sum_{j != g} q_t,j (log q_t,j - log q_s,j)
  L    = T^2 / B * sum_rows (alpha TCKD + beta NCKD)

Gradients (per row, before the T^2/B * 1/T = T/B factor that turns d/da into dL/dz):
  student  dTCKD/da_g = P_s - P_t            dTCKD/da_j = (R_s - R_t) q_s,j        (j != g)
           dNCKD/da_g = 0                    dNCKD/da_j = q_s,j - q_t,j
  teacher  dTCKD/db_g = P_t R_t D            dTCKD/db_j = -P_t R_t D q_t,j
           dNCKD/db_g = 0                    dNCKD/db_j = q_t,j (log q_t,j - log q_s,j - NCKD)
  with D = (log P_t - log R_t) - (log P_s - log R_s) = (b_g - lse'_t) - (a_g - lse'_s), the log-odds
  difference: dP_t/db_j = P_t (delta_jg - p_t,j) and d KL(u||v)/du = log u - log v (up to a constant).
With `standardize`, dL/dx follows from dL/dz through the z-score backward
(`triton_common.standardize_coefs`), which needs sum(g) (0 here) and sum(g * (x - mean)) over the row.
C == 1 has no rest: R = 0, q = 0, so the loss and the gradients are 0.
Numerics: every log-sum-exp is kept as (max m, log S) and log-probabilities as (x - m) - log S, never
x - (m + log S), which would round at the logits' scale (1e-3 at 1e4) and leak that error into P.

The forward walks each row once (kernels.triton_common: vectorized body, scalar edge) with an online
(running max, rescaled sum) log-sum-exp for lse and lse' of both logits, the NCKD cross term
sum_j exp(b_j - m) (b_j - a_j) and the target logits a_g, b_g (picked out by comparison, so an out-of-range
target reads nothing out of bounds); `standardize` adds a moments pass first, and the same online pass
also accumulates the z-score backward's row sums (`_zscore_sums`). It saves a side record per logit
tensor (triton_common; its log-sum-exp is lse', over the rest) and the binary terms. The backward is one
pass that writes the gradients: 5 N*e for rows of one chunk.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from kdforge.kernels.defaults import DKD_TEMPERATURE
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

# The (B, STATS) fp32 per-row statistics: the student's and the teacher's side record (lse' over the rest),
# the binary terms (P_s, P_t, R_s, R_t, D) and NCKD, then the row's loss.
TERMS = tl.constexpr(2 * SIDE.value)
LOSS = tl.constexpr(2 * SIDE.value + 6)
STATS = tl.constexpr(2 * SIDE.value + 7)


@triton.jit
def _fold(acc, offs, g_elems, mask, x_s, x_t, args):
    """`walk_row` visitor of the forward: lse of both rows and lse' over the rest (running max and sum each),
    the NCKD cross term, the target logits a_g, b_g; with STANDARDIZE also the sums `_zscore_sums` needs:
    `zscore_fold`'s over the rest, relative to the running maxes of lse' (rescaled with them), and the
    target's centred logits c_g = (c_sg, c_tg) (c = x - mean)."""
    (m_s, s_s, m_t, s_t), (m_rs, s_rs, m_rt, s_rt), cross, (a_g, b_g), w, (c_sg, c_tg) = acc
    label, (k_s, mean_s, _std_s), (k_t, mean_t, _std_t), STANDARDIZE = args
    a = (x_s - mean_s) * k_s
    b = (x_t - mean_t) * k_t
    is_gt = mask & (offs == label)
    rest = mask & (offs != label)
    m_s, s_s, _, _ = online_lse(m_s, s_s, a, mask)
    m_t, s_t, _, _ = online_lse(m_t, s_t, b, mask)
    m_rs, s_rs, e_rs, rescale_rs = online_lse(m_rs, s_rs, a, rest)
    m_rt, s_rt, e_rt, rescale = online_lse(m_rt, s_rt, b, rest)
    cross = cross * rescale + tl.sum(e_rt * (b - a), axis=0)
    a_g += tl.sum(tl.where(is_gt, a, 0.0), axis=0)
    b_g += tl.sum(tl.where(is_gt, b, 0.0), axis=0)
    if STANDARDIZE:
        c_s = tl.where(mask, x_s - mean_s, 0.0)
        c_t = tl.where(mask, x_t - mean_t, 0.0)
        w = zscore_fold(w, e_rs, rescale_rs, e_rt, rescale, b - a, c_s, c_t)
        c_sg += tl.sum(tl.where(is_gt, c_s, 0.0), axis=0)
        c_tg += tl.sum(tl.where(is_gt, c_t, 0.0), axis=0)
    return (m_s, s_s, m_t, s_t), (m_rs, s_rs, m_rt, s_rt), cross, (a_g, b_g), w, (c_sg, c_tg)


@triton.jit
def _zscore_sums(w, c_g, s_rs, s_rt, mean_cross, terms, alpha, beta):
    """sum(g c) of the z-score backward per unit of the gradient scale (c = x - mean), from the forward's
    online sums. With Q_s = sum_rest q_s c_s, Q_ts = sum_rest q_t c_s, Q_tt = sum_rest q_t c_t and
    X_t = sum_rest q_t (b - a) c_t (module docstring for g):
      student  alpha (P_s - P_t) c_s,g + (alpha (R_s - R_t) + beta) Q_s - beta Q_ts
      teacher  bin c_t,g + beta (X_t - NCKD' Q_tt) - bin Q_tt,  bin = alpha P_t R_t D,
    NCKD' = sum_rest q_t (b - a) (log q_t - log q_s - NCKD = (b - a) - NCKD'). Both sum(g) are 0."""
    w_ss, w_ts, w_tt, w_tx = w
    c_sg, c_tg = c_g
    p_s, p_t, r_s, r_t, d, _nckd = terms
    inv_rs = tl.where(s_rs > 0, 1.0 / tl.where(s_rs > 0, s_rs, 1.0), 0.0)  # no rest (C == 1): all 0
    inv_rt = tl.where(s_rt > 0, 1.0 / tl.where(s_rt > 0, s_rt, 1.0), 0.0)
    q_tt = w_tt * inv_rt
    bin_t = alpha * p_t * r_t * d
    cs_s = alpha * (p_s - p_t) * c_sg + (alpha * (r_s - r_t) + beta) * w_ss * inv_rs - beta * w_ts * inv_rt
    cs_t = bin_t * c_tg + beta * (w_tx * inv_rt - mean_cross * q_tt) - bin_t * q_tt
    return cs_s, cs_t


@triton.jit
def _terms(lse_s, lse_t, lse_rs, lse_rt, target, mean_cross, has_rest):
    """The binary terms and NCKD of a row, (P_s, P_t, R_s, R_t, D, NCKD), and its TCKD, from the finished
    online pass: lse_* and lse_r* the (max, log-sum) of lse and lse' of both rows (module docstring)."""
    m_s, l_s = lse_s
    m_t, l_t = lse_t
    m_rs, l_rs = lse_rs
    m_rt, l_rt = lse_rt
    a_g, b_g = target
    # Each log-probability relative to its max, never as x - lse: lse rounds at the logits' scale (1e-3
    # at 1e4), which would put that error into p_gt (a 0.5 could read 0.50025).
    log_p_s = (a_g - m_s) - l_s
    log_p_t = (b_g - m_t) - l_t
    log_r_s = (m_rs - m_s) + (l_rs - l_s)
    log_r_t = (m_rt - m_t) + (l_rt - l_t)
    p_s = tl.exp(log_p_s)
    p_t = tl.exp(log_p_t)
    r_s = tl.exp(tl.where(has_rest, log_r_s, float("-inf")))  # log_r_* are placeholders for C == 1
    r_t = tl.exp(tl.where(has_rest, log_r_t, float("-inf")))
    tckd = p_t * (log_p_t - log_p_s) + r_t * (log_r_t - log_r_s)
    d = ((b_g - m_rt) - l_rt) - ((a_g - m_rs) - l_rs)  # log-odds difference D
    # sum q_t (b - a) - (lse'_t - lse'_s), and 0 with no rest
    nckd = tl.where(has_rest, mean_cross - (m_rt - m_rs) - (l_rt - l_rs), 0.0)
    return (p_s, p_t, r_s, r_t, d, nckd), tckd


@triton.jit
def _store_terms(ptr, terms):
    """Write (P_s, P_t, R_s, R_t, D, NCKD) to ptr[0:6]."""
    p_s, p_t, r_s, r_t, d, nckd = terms
    tl.store(ptr, p_s)
    tl.store(ptr + 1, p_t)
    tl.store(ptr + 2, r_s)
    tl.store(ptr + 3, r_t)
    tl.store(ptr + 4, d)
    tl.store(ptr + 5, nckd)


@triton.jit
def _load_terms(ptr):
    """Read (P_s, P_t, R_s, R_t, D, NCKD) from ptr[0:6]."""
    return (
        tl.load(ptr),
        tl.load(ptr + 1),
        tl.load(ptr + 2),
        tl.load(ptr + 3),
        tl.load(ptr + 4),
        tl.load(ptr + 5),
    )


@triton.jit
def _dkd_forward_kernel(s_ptr, t_ptr, s_strides, t_strides, target_ptr, target_stride, stats_ptr, C,
                        inv_temperature, alpha, beta, loss_scale, eps,
                        BLOCK: tl.constexpr, VEC: tl.constexpr, STANDARDIZE: tl.constexpr):  # fmt: skip
    """Row `program_id`: its loss T^2 (alpha TCKD + beta NCKD) and the statistics of the backward."""
    row = tl.program_id(0).to(tl.int64)
    label = tl.load(target_ptr + row * target_stride).to(tl.int32)
    walk = row_walk(s_ptr, t_ptr, s_strides, t_strides, C, VEC)
    scale_s, scale_t = row_scales(walk, inv_temperature, eps, BLOCK, VEC, STANDARDIZE)
    z = tl.zeros((), tl.float32)
    low = tl.full((), float("-inf"), tl.float32)
    start = ((low, z, low, z), (low, z, low, z), z, (z, z), (z, z, z, z), (z, z))
    args = (label, scale_s, scale_t, STANDARDIZE)
    (m_s, s_s, m_t, s_t), (m_rs, s_rs, m_rt, s_rt), cross, target, w, c_g = walk_row(
        walk, start, _fold, args, BLOCK, VEC
    )
    lse_rs = finish_lse(m_rs, s_rs)
    lse_rt = finish_lse(m_rt, s_rt)
    lse_s = finish_lse(m_s, s_s)
    lse_t = finish_lse(m_t, s_t)
    mean_cross = tl.where(s_rt > 0, cross / tl.where(s_rt > 0, s_rt, 1.0), 0.0)  # sum_rest q_t (b - a)
    terms, tckd = _terms(lse_s, lse_t, lse_rs, lse_rt, target, mean_cross, C > 1)
    cs_s = 0.0
    cs_t = 0.0
    if STANDARDIZE:
        cs_s, cs_t = _zscore_sums(w, c_g, s_rs, s_rt, mean_cross, terms, alpha, beta)
    out = stats_ptr + row * STATS
    store_side(out, side_record(lse_rs, scale_s, cs_s))
    store_side(out + SIDE, side_record(lse_rt, scale_t, cs_t))
    _store_terms(out + TERMS, terms)
    tl.store(out + LOSS, loss_scale * (alpha * tckd + beta * terms[5]))


@triton.jit
def _write(acc, offs, g_elems, mask, x_s, x_t, args):
    """`walk_row` visitor of the backward: dL/dz_s and dL/dz_t of the chunk times `scale` (module
    docstring; 0 in lanes that are neither target nor rest), written through the `grad_outputs` bundle."""
    label, side_s, side_t, terms, alpha, beta, scale, out = args
    p_s, p_t, r_s, r_t, d, nckd = terms
    is_gt = offs == label
    rest = mask & (offs != label)
    log_q_s = side_log_p(x_s, side_s)
    log_q_t = side_log_p(x_t, side_t)
    q_s = tl.exp(tl.where(rest, log_q_s, float("-inf")))
    q_t = tl.exp(tl.where(rest, log_q_t, float("-inf")))
    g_s = tl.where(is_gt, alpha * (p_s - p_t), alpha * (r_s - r_t) * q_s + beta * (q_s - q_t))
    bin_t = alpha * p_t * r_t * d
    g_t = tl.where(is_gt, bin_t, q_t * (beta * (log_q_t - log_q_s - nckd) - bin_t))
    store_grads(out, g_elems, mask, g_s * scale, g_t * scale, x_s, x_t)
    return acc


@triton.jit
def _dkd_backward_kernel(s_ptr, t_ptr, s_strides, t_strides, target_ptr, target_stride, stats_ptr, go_ptr,
                         gs_ptr, gt_ptr, C, alpha, beta, grad_factor, eps, BLOCK: tl.constexpr,
                         VEC: tl.constexpr, STANDARDIZE: tl.constexpr, GRAD_S: tl.constexpr,
                         GRAD_T: tl.constexpr):  # fmt: skip
    """Row `program_id`: the gradients of the batch-mean loss times grad_output, into contiguous (B, C)
    buffers of the inputs' dtypes, in one walk."""
    row = tl.program_id(0).to(tl.int64)
    label = tl.load(target_ptr + row * target_stride).to(tl.int32)
    walk = row_walk(s_ptr, t_ptr, s_strides, t_strides, C, VEC)
    st = stats_ptr + row * STATS
    side_s = load_side(st)
    side_t = load_side(st + SIDE)
    scale = tl.load(go_ptr).to(tl.float32) * grad_factor
    out = grad_outputs(gs_ptr, gt_ptr, side_s, side_t, scale, C, eps, STANDARDIZE, GRAD_S, GRAD_T)
    args = (label, side_s, side_t, _load_terms(st + TERMS), alpha, beta, scale, out)
    walk_row(walk, tl.zeros((), tl.float32), _write, args, BLOCK, VEC)


def _forward(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    standardize: bool,
    config: LaunchConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward kernel: (float32 loss, per-row statistics)."""
    batch, classes = student.shape
    stats = torch.empty((batch, STATS.value), dtype=torch.float32, device=student.device)
    _dkd_forward_kernel[(batch,)](
        student, teacher, student.stride(), teacher.stride(), target, target.stride(0), stats, classes,
        1.0 / temperature, alpha, beta, temperature * temperature, STANDARDIZE_EPS, BLOCK=config.block,
        VEC=config.vec, STANDARDIZE=standardize, num_warps=config.num_warps, maxnreg=MAX_REGISTERS,
    )  # fmt: skip
    return stats[:, LOSS.value].sum() / batch, stats


def _backward(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    stats: torch.Tensor,
    grad_output: torch.Tensor,
    needs: tuple[bool, bool],
    alpha: float,
    beta: float,
    temperature: float,
    standardize: bool,
    config: LaunchConfig,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The backward kernel: the gradients asked for in `needs` (student, teacher), times grad_output."""
    grad_s, grad_t = empty_grads(student, teacher, *needs)
    if grad_s is None and grad_t is None:
        return None, None
    batch, classes = student.shape
    _dkd_backward_kernel[(batch,)](
        student, teacher, student.stride(), teacher.stride(), target, target.stride(0), stats,
        grad_scale_tensor(grad_output), *grad_pointers((grad_s, grad_t), student), classes, alpha, beta,
        temperature / batch, STANDARDIZE_EPS, BLOCK=config.block, VEC=config.vec, STANDARDIZE=standardize,
        GRAD_S=grad_s is not None, GRAD_T=grad_t is not None, num_warps=config.num_warps,
        maxnreg=MAX_REGISTERS,
    )  # fmt: skip
    return grad_s, grad_t


class DKDLossFunction(torch.autograd.Function):
    """Autograd wrapper: the forward keeps O(B) statistics; the backward recomputes the gradients."""

    @staticmethod
    def forward(
        ctx,
        student: torch.Tensor,
        teacher: torch.Tensor,
        target: torch.Tensor,
        alpha: float,
        beta: float,
        temperature: float,
        standardize: bool,
        config: LaunchConfig,
    ) -> torch.Tensor:
        args = (alpha, beta, temperature, standardize, config)
        loss, stats = _forward(student, teacher, target, *args)
        ctx.save_for_backward(student, teacher, target, stats)
        ctx.args = args
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        student, teacher, target, stats = ctx.saved_tensors
        needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        grads = _backward(student, teacher, target, stats, grad_output, needs, *ctx.args)
        return (*grads,) + (None,) * 6


def dkd_loss_triton(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = DKD_TEMPERATURE,
    standardize: bool = False,
    config: LaunchConfig | None = None,
) -> torch.Tensor:
    """DKD on the fused kernels (arguments already validated by kernels.dkd.dkd_loss): a float32 scalar.

    Without autograd (grad mode off, or neither logit requires grad) only the forward runs. `config`
    overrides the launch table (tests force chunked walks at small C with it).
    """
    config = config or launch_config(student.shape[1], student, teacher)
    args = (float(alpha), float(beta), float(temperature), bool(standardize), config)
    if torch.is_grad_enabled() and (student.requires_grad or teacher.requires_grad):
        return DKDLossFunction.apply(student, teacher, target, *args)
    return _forward(student, teacher, target, *args)[0]
