"""Fused Triton KD loss: a forward that reads both logits once and keeps per-row statistics, and a backward
that recomputes the gradients from the logits with grad_output folded in (fp32 math, one cast at the store).

Per row, with u = k_s (z_s - mean_s) and v = k_t (z_t - mean_t) (k = 1/T and mean = 0, or with
`standardize` the z-score: k = 1 / ((std + eps) T)):
    KL = sum_c p_t (v - u) - lse(v) + lse(u),        loss = T^2 / B * sum_rows KL
(each logsumexp kept as max + log(sum), large offsets cancelled before the logs are added)
    dL/dz_s = g (T / B) (p_s - p_t)
    dL/dz_t = g (T / B) p_t (log p_t - log p_s - KL)        (g = grad_output)
and through the z-score `standardize_grad` (kernels/triton_common.py). The forward is one online-softmax
pass (running max and sum, rescaled as the max grows), after a moments pass with `standardize`; it saves
(max, log sum) of both rows and KL, and with `standardize` the row sums the z-score backward needs
(accumulated in the same online pass, see `_zscore_sums`). The backward is one pass writing the gradients.
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
M_S, L_S, M_T, L_T, KL, K_S, K_T, MEAN_S, MEAN_T, STD_S, STD_T, CS_S, CS_T = (
    tl.constexpr(i) for i in range(13)
)
STATS = tl.constexpr(13)


@triton.jit
def _fold(m_s, sum_s, m_t, sum_t, cross, w_ss, w_ts, w_tt, w_tx, x_s, x_t, mask, mean_s, mean_t, k_s, k_t,
          STANDARDIZE: tl.constexpr):  # fmt: skip
    """One chunk of the online pass: both log-sum-exps and the cross term sum exp(v - m_t) (v - u); with
    STANDARDIZE also the exp-weighted sums of the centred logits c that `_zscore_sums` turns into
    sum(g c): w_ss = sum e_s c_s, w_ts = sum e_t c_s, w_tt = sum e_t c_t, w_tx = sum e_t (v - u) c_t (each
    relative to its running max, rescaled with it)."""
    u = tl.where(mask, (x_s - mean_s) * k_s, 0.0)
    v = tl.where(mask, (x_t - mean_t) * k_t, 0.0)
    m_s, sum_s, e_s, rescale_s = online_lse(m_s, sum_s, u, mask)
    m_t, sum_t, e_t, rescale = online_lse(m_t, sum_t, v, mask)
    cross = cross * rescale + tl.sum(e_t * (v - u), axis=0)
    if STANDARDIZE:
        w_ss, w_ts, w_tt, w_tx, _c_s, _c_t = zscore_fold(
            w_ss, w_ts, w_tt, w_tx, e_s, rescale_s, e_t, rescale, v - u, x_s, x_t, mask, mean_s, mean_t
        )
    return m_s, sum_s, m_t, sum_t, cross, w_ss, w_ts, w_tt, w_tx


@triton.jit
def _zscore_sums(sum_s, sum_t, cross, w_ss, w_ts, w_tt, w_tx):
    """sum(g c) of the z-score backward per unit of the gradient scale, c = x - mean, from the forward's
    online sums. Student: g = p_s - p_t, so sum(g c_s) = sum p_s c_s - sum p_t c_s; teacher:
    g = p_t (log p_t - log p_s - KL) = p_t ((v - u) - X) with X = sum p_t (v - u), so
    sum(g c_t) = sum p_t (v - u) c_t - X sum p_t c_t. Both sum(g) are 0 (softmaxes sum to 1)."""
    x = cross / sum_t
    return w_ss / sum_s - w_ts / sum_t, (w_tx - x * w_tt) / sum_t


@triton.jit
def _kd_forward_kernel(
    s_ptr,
    t_ptr,
    stats_ptr,
    gs_ptr,
    gt_ptr,
    C,
    s_stride_b,
    s_stride_c,
    t_stride_b,
    t_stride_c,
    inv_t,
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
    """One program per row: KL of the row and the statistics the backward recomputes p_s, p_t from; with
    WRITE_GRADS (a row of one chunk, grad_output told in advance as `hint`) also the gradients."""
    row = tl.program_id(0).to(tl.int64)
    s_base = row * s_stride_b
    t_base = row * t_stride_b
    lo, body = row_split(s_base, C, VEC)
    mean_s, std_s, mean_t, std_t, k_s, k_t = row_scales(
        s_ptr, t_ptr, s_base, t_base, s_stride_c, t_stride_c, lo, body, C, inv_t, eps, BLOCK, VEC, STANDARDIZE
    )
    m_s = tl.full((), float("-inf"), tl.float32)
    m_t = tl.full((), float("-inf"), tl.float32)
    sum_s = tl.zeros((), tl.float32)
    sum_t = tl.zeros((), tl.float32)
    cross = tl.zeros((), tl.float32)
    w_ss = tl.zeros((), tl.float32)
    w_ts = tl.zeros((), tl.float32)
    w_tt = tl.zeros((), tl.float32)
    w_tx = tl.zeros((), tl.float32)
    if VEC > 1:
        _e_offs, e_mask, e_x_s, e_x_t = edge_loads(s_ptr, t_ptr, s_base, t_base, lo, body, C, VEC)
        m_s, sum_s, m_t, sum_t, cross, w_ss, w_ts, w_tt, w_tx = _fold(
            m_s, sum_s, m_t, sum_t, cross, w_ss, w_ts, w_tt, w_tx, e_x_s, e_x_t, e_mask,
            mean_s, mean_t, k_s, k_t, STANDARDIZE,
        )  # fmt: skip
    for start in range(0, body, BLOCK):
        _idx, mask, x_s, x_t = body_loads(
            s_ptr, t_ptr, s_base, t_base, s_stride_c, t_stride_c, lo, body, start, BLOCK, VEC
        )
        m_s, sum_s, m_t, sum_t, cross, w_ss, w_ts, w_tt, w_tx = _fold(
            m_s, sum_s, m_t, sum_t, cross, w_ss, w_ts, w_tt, w_tx, x_s, x_t, mask,
            mean_s, mean_t, k_s, k_t, STANDARDIZE,
        )  # fmt: skip
    cs_s = 0.0
    cs_t = 0.0
    if STANDARDIZE:
        cs_s, cs_t = _zscore_sums(sum_s, sum_t, cross, w_ss, w_ts, w_tt, w_tx)
    m_s, l_s = finish_lse(m_s, sum_s)
    m_t, l_t = finish_lse(m_t, sum_t)
    kl = (cross / sum_t - (m_t - m_s)) + (l_s - l_t)
    out = stats_ptr + row * STATS
    tl.store(out + M_S, m_s)
    tl.store(out + L_S, l_s)
    tl.store(out + M_T, m_t)
    tl.store(out + L_T, l_t)
    tl.store(out + KL, kl)
    tl.store(out + K_S, k_s)
    tl.store(out + K_T, k_t)
    tl.store(out + MEAN_S, mean_s)
    tl.store(out + MEAN_T, mean_t)
    tl.store(out + STD_S, std_s)
    tl.store(out + STD_T, std_t)
    tl.store(out + CS_S, cs_s)
    tl.store(out + CS_T, cs_t)
    if WRITE_GRADS:  # the row was just read by this program: the second walk is served by L1/L2
        _row_grads(
            s_ptr, t_ptr, gs_ptr, gt_ptr, s_base, t_base, row * C, s_stride_c, t_stride_c, lo, body, C,
            m_s, l_s, m_t, l_t, kl, k_s, k_t, mean_s, mean_t, std_s, std_t, cs_s, cs_t, hint * grad_factor,
            eps, BLOCK, VEC, STANDARDIZE, GRAD_S, GRAD_T,
        )  # fmt: skip


@triton.jit
def _grads(x_s, x_t, mask, mean_s, mean_t, k_s, k_t, m_s, l_s, m_t, l_t, kl, scale):
    """dL/dz of one chunk for student and teacher (0 on masked lanes), z the (z-scored) logits."""
    log_ps = ((x_s - mean_s) * k_s - m_s) - l_s  # (x - max) - log(sum): exact offsets even at |x| ~ 1e4
    log_pt = ((x_t - mean_t) * k_t - m_t) - l_t
    p_s = tl.exp(tl.where(mask, log_ps, float("-inf")))
    p_t = tl.exp(tl.where(mask, log_pt, float("-inf")))
    return scale * (p_s - p_t), tl.where(mask, scale * p_t * (log_pt - log_ps - kl), 0.0)


@triton.jit
def _row_grads(s_ptr, t_ptr, gs_ptr, gt_ptr, s_base, t_base, g_base, s_stride_c, t_stride_c, lo, body, C,
               m_s, l_s, m_t, l_t, kl, k_s, k_t, mean_s, mean_t, std_s, std_t, cs_s, cs_t, scale, eps,
               BLOCK: tl.constexpr, VEC: tl.constexpr, STANDARDIZE: tl.constexpr,
               GRAD_S: tl.constexpr, GRAD_T: tl.constexpr):  # fmt: skip
    """Write one row's dL/d(student) and, if asked, dL/d(teacher), times `scale` (grad_output T / B), in
    one walk: the z-score backward's row sums come from the forward (sum(g) = 0, sum(g c) = scale cs)."""
    rden_s, shift_s, coef_s, rden_t, shift_t, coef_t = standardize_coefs_pair(
        0.0, scale * cs_s, std_s, 0.0, scale * cs_t, std_t, C, eps, STANDARDIZE
    )
    if VEC > 1:
        e_offs, e_mask, e_x_s, e_x_t = edge_loads(s_ptr, t_ptr, s_base, t_base, lo, body, C, VEC)
        e_g_s, e_g_t = _grads(e_x_s, e_x_t, e_mask, mean_s, mean_t, k_s, k_t, m_s, l_s, m_t, l_t, kl, scale)
        store_grads(
            gs_ptr, gt_ptr, g_base + e_offs, e_g_s, e_g_t, e_x_s, e_x_t, e_mask, mean_s, mean_t,
            rden_s, shift_s, coef_s, rden_t, shift_t, coef_t, STANDARDIZE, GRAD_S, GRAD_T,
        )  # fmt: skip
    for start in range(0, body, BLOCK):
        idx, mask, x_s, x_t = body_loads(
            s_ptr, t_ptr, s_base, t_base, s_stride_c, t_stride_c, lo, body, start, BLOCK, VEC
        )
        g_s, g_t = _grads(x_s, x_t, mask, mean_s, mean_t, k_s, k_t, m_s, l_s, m_t, l_t, kl, scale)
        store_grads(
            gs_ptr, gt_ptr, body_elems(g_base, lo, idx, 1, VEC), g_s, g_t, x_s, x_t, mask, mean_s, mean_t,
            rden_s, shift_s, coef_s, rden_t, shift_t, coef_t, STANDARDIZE, GRAD_S, GRAD_T,
        )  # fmt: skip


@triton.jit
def _kd_backward_kernel(
    s_ptr,
    t_ptr,
    stats_ptr,
    go_ptr,
    gs_ptr,
    gt_ptr,
    C,
    s_stride_b,
    s_stride_c,
    t_stride_b,
    t_stride_c,
    hint,
    grad_factor,
    eps,
    BLOCK: tl.constexpr,
    VEC: tl.constexpr,
    STANDARDIZE: tl.constexpr,
    GRAD_S: tl.constexpr,
    GRAD_T: tl.constexpr,
):
    """One program per row: dL/d(student) and, if asked, dL/d(teacher) times grad_output, unless the
    forward already wrote them for grad_output == `hint` (NaN when it did not)."""
    row = tl.program_id(0).to(tl.int64)
    s_base = row * s_stride_b
    t_base = row * t_stride_b
    lo, body = row_split(s_base, C, VEC)
    st = stats_ptr + row * STATS
    m_s = tl.load(st + M_S)
    l_s = tl.load(st + L_S)
    m_t = tl.load(st + M_T)
    l_t = tl.load(st + L_T)
    kl = tl.load(st + KL)
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
            m_s, l_s, m_t, l_t, kl, k_s, k_t, mean_s, mean_t, std_s, std_t, cs_s, cs_t, go * grad_factor,
            eps, BLOCK, VEC, STANDARDIZE, GRAD_S, GRAD_T,
        )  # fmt: skip


def _forward(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float,
    standardize: bool,
    config: LaunchConfig,
    grads: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None),
    hint: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward kernel: (loss, per-row statistics). Buffers in `grads` (rows of one chunk only) are
    filled with the gradients for grad_output == `hint`."""
    batch, classes = student.shape
    stats = torch.empty((batch, STATS.value), dtype=torch.float32, device=student.device)
    grad_s, grad_t = grads
    _kd_forward_kernel[(batch,)](
        student,
        teacher,
        stats,
        *grad_pointers(grads, stats),
        classes,
        *student.stride(),
        *teacher.stride(),
        1.0 / temperature,
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
    return stats[:, KL.value].sum() * (temperature * temperature / batch), stats


class KDLossFunction(torch.autograd.Function):
    """Autograd wrapper: the forward keeps O(B) statistics; the backward recomputes the gradients, unless
    the forward of one-chunk rows already wrote them for the grad_output it was told (`expected_grad`)."""

    @staticmethod
    def forward(
        ctx,
        student: torch.Tensor,
        teacher: torch.Tensor,
        temperature: float,
        standardize: bool,
        config: LaunchConfig,
        expected_grad: float | None,
    ):
        grads, hint = forward_grads(ctx, student, teacher, expected_grad, config)
        loss, stats = _forward(student, teacher, temperature, standardize, config, grads, hint)
        ctx.save_for_backward(student, teacher, stats)
        ctx.args = (temperature, standardize, config)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        student, teacher, stats = ctx.saved_tensors
        temperature, standardize, config = ctx.args
        batch, classes = student.shape
        (grad_s, grad_t), hint = backward_grads(ctx, student, teacher)
        if grad_s is None and grad_t is None:
            return None, None, None, None, None, None
        _kd_backward_kernel[(batch,)](
            student,
            teacher,
            stats,
            grad_scale_tensor(grad_output),
            *grad_pointers((grad_s, grad_t), student),
            classes,
            *student.stride(),
            *teacher.stride(),
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
        return grad_s, grad_t, None, None, None, None


def kd_loss_triton(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float,
    standardize: bool,
    config: LaunchConfig | None = None,
    expected_grad: float | None = None,
) -> torch.Tensor:
    """The fused kernels behind `kd_loss(backend="triton")` (arguments already validated); `config`
    overrides the launch table (tests force chunked walks at small C with it); `expected_grad` as in
    `kd_loss`."""
    config = config or launch_config(student.shape[1], student, teacher)
    temperature, standardize = float(temperature), bool(standardize)
    if torch.is_grad_enabled() and (student.requires_grad or teacher.requires_grad):
        return KDLossFunction.apply(student, teacher, temperature, standardize, config, expected_grad)
    return _forward(student, teacher, temperature, standardize, config)[0]
