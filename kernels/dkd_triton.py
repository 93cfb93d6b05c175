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
With `standardize`, dL/dx follows from dL/dz through `standardize_grad`, which needs sum(g) and
sum(g * (x - mean)) over the row. C == 1 has no rest: R = 0, q = 0, so the loss and the gradients are 0.
Numerics: every log-sum-exp is kept as (max m, log S) and log-probabilities as (x - m) - log S, never
x - (m + log S), which would round at the logits' scale (1e-3 at 1e4) and leak that error into P.

The forward walks each row once (kernels.triton_common: vectorized body, scalar edge) with an online
(running max, rescaled sum) log-sum-exp for lse and lse' of both logits, the NCKD cross term
sum_j exp(b_j - m) (b_j - a_j) and the target logits a_g, b_g (picked out by comparison, so an out-of-range
target reads nothing out of bounds); `standardize` adds a moments pass first, and the same online pass
also accumulates the z-score backward's row sums (`_zscore_sums`). The backward is one pass that writes
the gradients.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from kdforge.kernels.standardize import STANDARDIZE_EPS
from kdforge.kernels.triton_common import (
    MAX_REGISTERS,
    LaunchConfig,
    backward_grads,
    body_elems,
    body_loads,
    edge_loads,
    finish_lse,
    forward_grads,
    grad_pointers,
    grad_scale_tensor,
    launch_config,
    online_lse,
    row_scales,
    row_split,
    standardize_coefs_pair,
    store_grads,
    zscore_fold,
)
from torch.autograd.function import once_differentiable

# Fields of the (B, STATS) fp32 per-row statistics the forward saves for the backward.
# CS_S, CS_T: with `standardize`, sum(g (x - mean)) of each row per unit of the gradient scale (see
# `_zscore_sums`), so the backward needs no reducing walk.
(M_RS, L_RS, M_RT, L_RT, P_S, P_T, R_S, R_T, D, NCKD, K_S, K_T, MEAN_S, MEAN_T, STD_S, STD_T, LOSS) = (
    tl.constexpr(i) for i in range(17)
)
CS_S, CS_T = tl.constexpr(17), tl.constexpr(18)
STATS = tl.constexpr(19)


@triton.jit
def _fold(m_s, s_s, m_t, s_t, m_rs, s_rs, m_rt, s_rt, cross, a_g, b_g, w_ss, w_ts, w_tt, w_tx, c_sg, c_tg,
          x_s, x_t, offs, mask, label, mean_s, mean_t, k_s, k_t, STANDARDIZE: tl.constexpr):  # fmt: skip
    """One chunk of the online pass: lse and lse' of both rows, the NCKD cross term, the target logits;
    with STANDARDIZE also the sums `_zscore_sums` needs: over the rest, relative to the running maxes of
    lse' (rescaled with them), w_ss = sum e_rs c_s, w_ts = sum e_rt c_s, w_tt = sum e_rt c_t,
    w_tx = sum e_rt (b - a) c_t, and the target's centred logits c_sg, c_tg (c = x - mean)."""
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
        w_ss, w_ts, w_tt, w_tx, c_s, c_t = zscore_fold(
            w_ss, w_ts, w_tt, w_tx, e_rs, rescale_rs, e_rt, rescale, b - a, x_s, x_t, mask, mean_s, mean_t
        )
        c_sg += tl.sum(tl.where(is_gt, c_s, 0.0), axis=0)
        c_tg += tl.sum(tl.where(is_gt, c_t, 0.0), axis=0)
    return m_s, s_s, m_t, s_t, m_rs, s_rs, m_rt, s_rt, cross, a_g, b_g, w_ss, w_ts, w_tt, w_tx, c_sg, c_tg


@triton.jit
def _zscore_sums(
    w_ss, w_ts, w_tt, w_tx, c_sg, c_tg, s_rs, s_rt, mean_cross, p_s, p_t, r_s, r_t, d, alpha, beta
):
    """sum(g c) of the z-score backward per unit of the gradient scale (c = x - mean), from the forward's
    online sums. With Q_s = sum_rest q_s c_s, Q_ts = sum_rest q_t c_s, Q_tt = sum_rest q_t c_t and
    X_t = sum_rest q_t (b - a) c_t (module docstring for g):
      student  alpha (P_s - P_t) c_s,g + (alpha (R_s - R_t) + beta) Q_s - beta Q_ts
      teacher  bin c_t,g + beta (X_t - NCKD' Q_tt) - bin Q_tt,  bin = alpha P_t R_t D,
    NCKD' = sum_rest q_t (b - a) (log q_t - log q_s - NCKD = (b - a) - NCKD'). Both sum(g) are 0."""
    inv_rs = tl.where(s_rs > 0, 1.0 / tl.where(s_rs > 0, s_rs, 1.0), 0.0)  # no rest (C == 1): all 0
    inv_rt = tl.where(s_rt > 0, 1.0 / tl.where(s_rt > 0, s_rt, 1.0), 0.0)
    q_tt = w_tt * inv_rt
    bin_t = alpha * p_t * r_t * d
    cs_s = alpha * (p_s - p_t) * c_sg + (alpha * (r_s - r_t) + beta) * w_ss * inv_rs - beta * w_ts * inv_rt
    cs_t = bin_t * c_tg + beta * (w_tx * inv_rt - mean_cross * q_tt) - bin_t * q_tt
    return cs_s, cs_t


@triton.jit
def _dkd_forward_kernel(
    s_ptr,
    t_ptr,
    target_ptr,
    stats_ptr,
    gs_ptr,
    gt_ptr,
    C,
    s_stride_b,
    s_stride_c,
    t_stride_b,
    t_stride_c,
    target_stride,
    inv_temperature,
    alpha,
    beta,
    loss_scale,
    hint,
    grad_factor,
    eps,
    BLOCK: tl.constexpr,
    VEC: tl.constexpr,
    STANDARDIZE: tl.constexpr,
    WRITE_GRADS: tl.constexpr,
    GRAD_S: tl.constexpr,
    GRAD_T: tl.constexpr,
):
    """Row `program_id`: its loss T^2 (alpha TCKD + beta NCKD) and the statistics of the backward; with
    WRITE_GRADS (a row of one chunk, grad_output told in advance as `hint`) also the gradients."""
    row = tl.program_id(0).to(tl.int64)
    s_base = row * s_stride_b
    t_base = row * t_stride_b
    label = tl.load(target_ptr + row * target_stride).to(tl.int32)
    lo, body = row_split(s_base, C, VEC)
    mean_s, std_s, mean_t, std_t, k_s, k_t = row_scales(
        s_ptr, t_ptr, s_base, t_base, s_stride_c, t_stride_c, lo, body, C, inv_temperature, eps,
        BLOCK, VEC, STANDARDIZE,
    )  # fmt: skip
    m_s = tl.full((), float("-inf"), tl.float32)
    m_t = tl.full((), float("-inf"), tl.float32)
    m_rs = tl.full((), float("-inf"), tl.float32)
    m_rt = tl.full((), float("-inf"), tl.float32)
    s_s = tl.zeros((), tl.float32)
    s_t = tl.zeros((), tl.float32)
    s_rs = tl.zeros((), tl.float32)
    s_rt = tl.zeros((), tl.float32)
    cross = tl.zeros((), tl.float32)  # sum_rest exp(b - m_rt) (b - a)
    a_g = tl.zeros((), tl.float32)
    b_g = tl.zeros((), tl.float32)
    w_ss = tl.zeros((), tl.float32)  # `_fold`'s z-score sums (kept at 0 without STANDARDIZE)
    w_ts = tl.zeros((), tl.float32)
    w_tt = tl.zeros((), tl.float32)
    w_tx = tl.zeros((), tl.float32)
    c_sg = tl.zeros((), tl.float32)
    c_tg = tl.zeros((), tl.float32)
    if VEC > 1:
        e_offs, e_mask, e_x_s, e_x_t = edge_loads(s_ptr, t_ptr, s_base, t_base, lo, body, C, VEC)
        (m_s, s_s, m_t, s_t, m_rs, s_rs, m_rt, s_rt, cross, a_g, b_g,
         w_ss, w_ts, w_tt, w_tx, c_sg, c_tg) = _fold(
            m_s, s_s, m_t, s_t, m_rs, s_rs, m_rt, s_rt, cross, a_g, b_g, w_ss, w_ts, w_tt, w_tx, c_sg, c_tg,
            e_x_s, e_x_t, e_offs, e_mask, label, mean_s, mean_t, k_s, k_t, STANDARDIZE,
        )  # fmt: skip
    for start in range(0, body, BLOCK):
        idx, mask, x_s, x_t = body_loads(
            s_ptr, t_ptr, s_base, t_base, s_stride_c, t_stride_c, lo, body, start, BLOCK, VEC
        )
        (m_s, s_s, m_t, s_t, m_rs, s_rs, m_rt, s_rt, cross, a_g, b_g,
         w_ss, w_ts, w_tt, w_tx, c_sg, c_tg) = _fold(
            m_s, s_s, m_t, s_t, m_rs, s_rs, m_rt, s_rt, cross, a_g, b_g, w_ss, w_ts, w_tt, w_tx, c_sg, c_tg,
            x_s, x_t, lo + idx, mask, label, mean_s, mean_t, k_s, k_t, STANDARDIZE,
        )  # fmt: skip
    m_s, l_s = finish_lse(m_s, s_s)
    m_t, l_t = finish_lse(m_t, s_t)
    m_rs, l_rs = finish_lse(m_rs, s_rs)
    m_rt, l_rt = finish_lse(m_rt, s_rt)
    has_rest = C > 1
    # sum q_t (b - a) - (lse'_t - lse'_s), and 0 with no rest
    mean_cross = tl.where(s_rt > 0, cross / tl.where(s_rt > 0, s_rt, 1.0), 0.0)
    nckd = tl.where(has_rest, mean_cross - (m_rt - m_rs) - (l_rt - l_rs), 0.0)
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
    cs_s = 0.0
    cs_t = 0.0
    if STANDARDIZE:
        cs_s, cs_t = _zscore_sums(
            w_ss, w_ts, w_tt, w_tx, c_sg, c_tg, s_rs, s_rt, mean_cross, p_s, p_t, r_s, r_t, d, alpha, beta
        )
    out = stats_ptr + row * STATS
    tl.store(out + M_RS, m_rs)
    tl.store(out + L_RS, l_rs)
    tl.store(out + M_RT, m_rt)
    tl.store(out + L_RT, l_rt)
    tl.store(out + P_S, p_s)
    tl.store(out + P_T, p_t)
    tl.store(out + R_S, r_s)
    tl.store(out + R_T, r_t)
    tl.store(out + D, d)
    tl.store(out + NCKD, nckd)
    tl.store(out + K_S, k_s)
    tl.store(out + K_T, k_t)
    tl.store(out + MEAN_S, mean_s)
    tl.store(out + MEAN_T, mean_t)
    tl.store(out + STD_S, std_s)
    tl.store(out + STD_T, std_t)
    tl.store(out + LOSS, loss_scale * (alpha * tckd + beta * nckd))
    tl.store(out + CS_S, cs_s)
    tl.store(out + CS_T, cs_t)
    if WRITE_GRADS:  # the row was just read by this program: the second walk is served by L1/L2
        _row_grads(
            s_ptr, t_ptr, gs_ptr, gt_ptr, s_base, t_base, row * C, s_stride_c, t_stride_c, lo, body, C, label,
            m_rs, l_rs, m_rt, l_rt, p_s, p_t, r_s, r_t, d, nckd, k_s, k_t, mean_s, mean_t, std_s, std_t,
            cs_s, cs_t, alpha, beta, hint * grad_factor, eps, BLOCK, VEC, STANDARDIZE, GRAD_S, GRAD_T,
        )  # fmt: skip


@triton.jit
def _grads(x_s, x_t, offs, mask, label, mean_s, mean_t, k_s, k_t, m_rs, l_rs, m_rt, l_rt, p_s, p_t, r_s, r_t,
           d, nckd, alpha, beta, scale):  # fmt: skip
    """dL/dz_s and dL/dz_t of one chunk (module docstring); 0 in lanes that are neither target nor rest."""
    a = (x_s - mean_s) * k_s
    b = (x_t - mean_t) * k_t
    is_gt = offs == label
    rest = mask & (offs != label)
    log_q_s = (a - m_rs) - l_rs
    log_q_t = (b - m_rt) - l_rt
    q_s = tl.exp(tl.where(rest, log_q_s, float("-inf")))
    q_t = tl.exp(tl.where(rest, log_q_t, float("-inf")))
    g_s = tl.where(is_gt, alpha * (p_s - p_t), alpha * (r_s - r_t) * q_s + beta * (q_s - q_t))
    bin_t = alpha * p_t * r_t * d
    g_t = tl.where(is_gt, bin_t, q_t * (beta * (log_q_t - log_q_s - nckd) - bin_t))
    return g_s * scale, g_t * scale


@triton.jit
def _row_grads(s_ptr, t_ptr, gs_ptr, gt_ptr, s_base, t_base, g_base, s_stride_c, t_stride_c, lo, body, C,
               label, m_rs, l_rs, m_rt, l_rt, p_s, p_t, r_s, r_t, d, nckd, k_s, k_t, mean_s, mean_t, std_s,
               std_t, cs_s, cs_t, alpha, beta, scale, eps, BLOCK: tl.constexpr, VEC: tl.constexpr,
               STANDARDIZE: tl.constexpr, GRAD_S: tl.constexpr, GRAD_T: tl.constexpr):  # fmt: skip
    """Write one row's dL/d(student) and, if asked, dL/d(teacher), times `scale` (grad_output T / B), in
    one walk: the z-score backward's row sums come from the forward (sum(g) = 0, sum(g c) = scale cs)."""
    rden_s, shift_s, coef_s, rden_t, shift_t, coef_t = standardize_coefs_pair(
        0.0, scale * cs_s, std_s, 0.0, scale * cs_t, std_t, C, eps, STANDARDIZE
    )
    if VEC > 1:
        e_offs, e_mask, e_x_s, e_x_t = edge_loads(s_ptr, t_ptr, s_base, t_base, lo, body, C, VEC)
        e_g_s, e_g_t = _grads(
            e_x_s, e_x_t, e_offs, e_mask, label, mean_s, mean_t, k_s, k_t,
            m_rs, l_rs, m_rt, l_rt, p_s, p_t, r_s, r_t, d, nckd, alpha, beta, scale,
        )  # fmt: skip
        store_grads(
            gs_ptr, gt_ptr, g_base + e_offs, e_g_s, e_g_t, e_x_s, e_x_t, e_mask, mean_s, mean_t,
            rden_s, shift_s, coef_s, rden_t, shift_t, coef_t, STANDARDIZE, GRAD_S, GRAD_T,
        )  # fmt: skip
    for start in range(0, body, BLOCK):
        idx, mask, x_s, x_t = body_loads(
            s_ptr, t_ptr, s_base, t_base, s_stride_c, t_stride_c, lo, body, start, BLOCK, VEC
        )
        g_s, g_t = _grads(
            x_s, x_t, lo + idx, mask, label, mean_s, mean_t, k_s, k_t,
            m_rs, l_rs, m_rt, l_rt, p_s, p_t, r_s, r_t, d, nckd, alpha, beta, scale,
        )  # fmt: skip
        store_grads(
            gs_ptr, gt_ptr, body_elems(g_base, lo, idx, 1, VEC), g_s, g_t, x_s, x_t, mask, mean_s, mean_t,
            rden_s, shift_s, coef_s, rden_t, shift_t, coef_t, STANDARDIZE, GRAD_S, GRAD_T,
        )  # fmt: skip


@triton.jit
def _dkd_backward_kernel(
    s_ptr,
    t_ptr,
    target_ptr,
    stats_ptr,
    go_ptr,
    gs_ptr,
    gt_ptr,
    C,
    s_stride_b,
    s_stride_c,
    t_stride_b,
    t_stride_c,
    target_stride,
    alpha,
    beta,
    hint,
    grad_factor,
    eps,
    BLOCK: tl.constexpr,
    VEC: tl.constexpr,
    STANDARDIZE: tl.constexpr,
    GRAD_S: tl.constexpr,
    GRAD_T: tl.constexpr,
):
    """Row `program_id`: the gradients of the batch-mean loss times grad_output, into contiguous (B, C)
    buffers of the inputs' dtypes, unless the forward already wrote them for grad_output == `hint` (NaN
    when it did not)."""
    row = tl.program_id(0).to(tl.int64)
    s_base = row * s_stride_b
    t_base = row * t_stride_b
    label = tl.load(target_ptr + row * target_stride).to(tl.int32)
    lo, body = row_split(s_base, C, VEC)
    st = stats_ptr + row * STATS
    m_rs = tl.load(st + M_RS)
    l_rs = tl.load(st + L_RS)
    m_rt = tl.load(st + M_RT)
    l_rt = tl.load(st + L_RT)
    p_s = tl.load(st + P_S)
    p_t = tl.load(st + P_T)
    r_s = tl.load(st + R_S)
    r_t = tl.load(st + R_T)
    d = tl.load(st + D)
    nckd = tl.load(st + NCKD)
    k_s = tl.load(st + K_S)
    k_t = tl.load(st + K_T)
    mean_s = tl.load(st + MEAN_S)
    mean_t = tl.load(st + MEAN_T)
    std_s = tl.load(st + STD_S)
    std_t = tl.load(st + STD_T)
    cs_s = tl.load(st + CS_S)
    cs_t = tl.load(st + CS_T)
    go = tl.load(go_ptr).to(tl.float32)
    if go != hint:  # always, unless the forward wrote them for this very grad_output (hint NaN: it did not)
        _row_grads(
            s_ptr, t_ptr, gs_ptr, gt_ptr, s_base, t_base, row * C, s_stride_c, t_stride_c, lo, body, C,
            label, m_rs, l_rs, m_rt, l_rt, p_s, p_t, r_s, r_t, d, nckd, k_s, k_t, mean_s, mean_t, std_s,
            std_t, cs_s, cs_t, alpha, beta, go * grad_factor, eps, BLOCK, VEC, STANDARDIZE, GRAD_S, GRAD_T,
        )  # fmt: skip


def _forward(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    standardize: bool,
    config: LaunchConfig,
    grads: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
    hint: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward kernel: (float32 loss, per-row statistics). Buffers in `grads` (rows of one chunk only)
    are filled with the gradients for grad_output == `hint`."""
    batch, classes = student.shape
    stats = torch.empty((batch, STATS.value), dtype=torch.float32, device=student.device)
    grad_s, grad_t = grads
    _dkd_forward_kernel[(batch,)](
        student,
        teacher,
        target,
        stats,
        *grad_pointers(grads, stats),
        classes,
        *student.stride(),
        *teacher.stride(),
        target.stride(0),
        1.0 / temperature,
        alpha,
        beta,
        temperature * temperature,
        hint,
        temperature / batch,
        STANDARDIZE_EPS,
        BLOCK=config.block,
        VEC=config.vec,
        STANDARDIZE=standardize,
        WRITE_GRADS=grad_s is not None or grad_t is not None,
        GRAD_S=grad_s is not None,
        GRAD_T=grad_t is not None,
        num_warps=config.num_warps,
        maxnreg=MAX_REGISTERS,
    )
    return stats[:, LOSS.value].sum() / batch, stats


def _backward(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    stats: torch.Tensor,
    grad_output: torch.Tensor,
    grads: tuple[torch.Tensor | None, torch.Tensor | None],
    hint: float,
    alpha: float,
    beta: float,
    temperature: float,
    standardize: bool,
    config: LaunchConfig,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The backward kernel into `grads`: written from the logits times grad_output, unless the forward
    already wrote them for grad_output == `hint` (NOT_WRITTEN when it did not)."""
    grad_s, grad_t = grads
    if grad_s is None and grad_t is None:
        return None, None
    batch, classes = student.shape
    _dkd_backward_kernel[(batch,)](
        student,
        teacher,
        target,
        stats,
        grad_scale_tensor(grad_output),
        *grad_pointers(grads, student),
        classes,
        *student.stride(),
        *teacher.stride(),
        target.stride(0),
        alpha,
        beta,
        hint,
        temperature / batch,
        STANDARDIZE_EPS,
        BLOCK=config.block,
        VEC=config.vec,
        STANDARDIZE=standardize,
        GRAD_S=grad_s is not None,
        GRAD_T=grad_t is not None,
        num_warps=config.num_warps,
        maxnreg=MAX_REGISTERS,
    )
    return grad_s, grad_t


class DKDLossFunction(torch.autograd.Function):
    """Autograd wrapper: the forward keeps O(B) statistics; the backward recomputes the gradients, unless
    the forward of one-chunk rows already wrote them for the grad_output it was told (`expected_grad`)."""

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
        expected_grad: float | None,
    ) -> torch.Tensor:
        grads, hint = forward_grads(ctx, student, teacher, expected_grad, config)
        args = (alpha, beta, temperature, standardize, config)
        loss, stats = _forward(student, teacher, target, *args, grads, hint)
        ctx.save_for_backward(student, teacher, target, stats)
        ctx.args = args
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        student, teacher, target, stats = ctx.saved_tensors
        grads, hint = backward_grads(ctx, student, teacher)
        grads = _backward(student, teacher, target, stats, grad_output, grads, hint, *ctx.args)
        return (*grads,) + (None,) * 7


def dkd_loss_triton(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    standardize: bool = False,
    config: LaunchConfig | None = None,
    expected_grad: float | None = None,
) -> torch.Tensor:
    """DKD on the fused kernels (arguments already validated by kernels.dkd.dkd_loss): a float32 scalar.

    Without autograd (grad mode off, or neither logit requires grad) only the forward runs. `config`
    overrides the launch table (tests force chunked walks at small C with it); `expected_grad` as in
    `dkd_loss`.
    """
    config = config or launch_config(student.shape[1], student, teacher)
    args = (float(alpha), float(beta), float(temperature), bool(standardize), config)
    if torch.is_grad_enabled() and (student.requires_grad or teacher.requires_grad):
        return DKDLossFunction.apply(student, teacher, target, *args, expected_grad)
    return _forward(student, teacher, target, *args)[0]
