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
target reads nothing out of bounds); `standardize` adds a moments pass first. The backward is one pass
that writes the gradients, after one that reduces the z-score sums with `standardize`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from kdforge.kernels.standardize import STANDARDIZE_EPS
from kdforge.kernels.triton_common import (
    MAX_REGISTERS,
    LaunchConfig,
    body_elems,
    body_loads,
    edge_loads,
    finish_lse,
    grad_scale_tensor,
    launch_config,
    online_lse,
    row_scales,
    row_split,
    standardize_coefs_pair,
    standardize_sums,
    store_grads,
)
from torch.autograd.function import once_differentiable

# Fields of the (B, STATS) fp32 per-row statistics the forward saves for the backward.
(M_RS, L_RS, M_RT, L_RT, P_S, P_T, R_S, R_T, D, NCKD, K_S, K_T, MEAN_S, MEAN_T, STD_S, STD_T, LOSS) = (
    tl.constexpr(i) for i in range(17)
)
STATS = tl.constexpr(17)


@triton.jit
def _fold(m_s, s_s, m_t, s_t, m_rs, s_rs, m_rt, s_rt, cross, a_g, b_g, x_s, x_t, offs, mask, label,
          mean_s, mean_t, k_s, k_t):  # fmt: skip
    """One chunk of the online pass: lse and lse' of both rows, the NCKD cross term, the target logits."""
    a = (x_s - mean_s) * k_s
    b = (x_t - mean_t) * k_t
    is_gt = mask & (offs == label)
    rest = mask & (offs != label)
    m_s, s_s, _, _ = online_lse(m_s, s_s, a, mask)
    m_t, s_t, _, _ = online_lse(m_t, s_t, b, mask)
    m_rs, s_rs, _, _ = online_lse(m_rs, s_rs, a, rest)
    m_rt, s_rt, e_rt, rescale = online_lse(m_rt, s_rt, b, rest)
    cross = cross * rescale + tl.sum(e_rt * (b - a), axis=0)
    a_g += tl.sum(tl.where(is_gt, a, 0.0), axis=0)
    b_g += tl.sum(tl.where(is_gt, b, 0.0), axis=0)
    return m_s, s_s, m_t, s_t, m_rs, s_rs, m_rt, s_rt, cross, a_g, b_g


@triton.jit
def _dkd_forward_kernel(
    s_ptr,
    t_ptr,
    target_ptr,
    stats_ptr,
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
    eps,
    BLOCK: tl.constexpr,
    VEC: tl.constexpr,
    STANDARDIZE: tl.constexpr,
):
    """Row `program_id`: its loss T^2 (alpha TCKD + beta NCKD) and the statistics of the backward."""
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
    if VEC > 1:
        e_offs, e_mask, e_x_s, e_x_t = edge_loads(s_ptr, t_ptr, s_base, t_base, lo, body, C, VEC)
        m_s, s_s, m_t, s_t, m_rs, s_rs, m_rt, s_rt, cross, a_g, b_g = _fold(
            m_s, s_s, m_t, s_t, m_rs, s_rs, m_rt, s_rt, cross, a_g, b_g,
            e_x_s, e_x_t, e_offs, e_mask, label, mean_s, mean_t, k_s, k_t,
        )  # fmt: skip
    for start in range(0, body, BLOCK):
        idx, mask, x_s, x_t = body_loads(
            s_ptr, t_ptr, s_base, t_base, s_stride_c, t_stride_c, lo, body, start, BLOCK, VEC
        )
        m_s, s_s, m_t, s_t, m_rs, s_rs, m_rt, s_rt, cross, a_g, b_g = _fold(
            m_s, s_s, m_t, s_t, m_rs, s_rs, m_rt, s_rt, cross, a_g, b_g,
            x_s, x_t, lo + idx, mask, label, mean_s, mean_t, k_s, k_t,
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
    grad_factor,
    eps,
    BLOCK: tl.constexpr,
    VEC: tl.constexpr,
    STANDARDIZE: tl.constexpr,
    GRAD_S: tl.constexpr,
    GRAD_T: tl.constexpr,
):
    """Row `program_id`: the gradients of the batch-mean loss times grad_output, into contiguous (B, C)
    buffers of the inputs' dtypes."""
    row = tl.program_id(0).to(tl.int64)
    s_base = row * s_stride_b
    t_base = row * t_stride_b
    g_base = row * C
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
    scale = tl.load(go_ptr).to(tl.float32) * grad_factor
    sum_s = tl.zeros((), tl.float32)
    sum_t = tl.zeros((), tl.float32)
    csum_s = tl.zeros((), tl.float32)
    csum_t = tl.zeros((), tl.float32)
    if STANDARDIZE:  # sum(g) and sum(g * centred) for standardize_grad, before writing anything
        if VEC > 1:
            e_offs, e_mask, e_x_s, e_x_t = edge_loads(s_ptr, t_ptr, s_base, t_base, lo, body, C, VEC)
            e_g_s, e_g_t = _grads(
                e_x_s, e_x_t, e_offs, e_mask, label, mean_s, mean_t, k_s, k_t,
                m_rs, l_rs, m_rt, l_rt, p_s, p_t, r_s, r_t, d, nckd, alpha, beta, scale,
            )  # fmt: skip
            sum_s, csum_s, sum_t, csum_t = standardize_sums(
                sum_s, csum_s, sum_t, csum_t, tl.where(e_mask, e_g_s, 0.0), tl.where(e_mask, e_g_t, 0.0),
                e_x_s, e_x_t, e_mask, mean_s, mean_t,
            )  # fmt: skip
        for start in range(0, body, BLOCK):
            idx, mask, x_s, x_t = body_loads(
                s_ptr, t_ptr, s_base, t_base, s_stride_c, t_stride_c, lo, body, start, BLOCK, VEC
            )
            g_s, g_t = _grads(
                x_s, x_t, lo + idx, mask, label, mean_s, mean_t, k_s, k_t,
                m_rs, l_rs, m_rt, l_rt, p_s, p_t, r_s, r_t, d, nckd, alpha, beta, scale,
            )  # fmt: skip
            sum_s, csum_s, sum_t, csum_t = standardize_sums(
                sum_s, csum_s, sum_t, csum_t, tl.where(mask, g_s, 0.0), tl.where(mask, g_t, 0.0),
                x_s, x_t, mask, mean_s, mean_t,
            )  # fmt: skip
    rden_s, shift_s, coef_s, rden_t, shift_t, coef_t = standardize_coefs_pair(
        sum_s, csum_s, std_s, sum_t, csum_t, std_t, C, eps, STANDARDIZE
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
        student,
        teacher,
        target,
        stats,
        classes,
        *student.stride(),
        *teacher.stride(),
        target.stride(0),
        1.0 / temperature,
        alpha,
        beta,
        temperature * temperature,
        STANDARDIZE_EPS,
        BLOCK=config.block,
        VEC=config.vec,
        STANDARDIZE=standardize,
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
    alpha: float,
    beta: float,
    temperature: float,
    standardize: bool,
    config: LaunchConfig,
    need_student_grad: bool,
    need_teacher_grad: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The backward kernel: new gradient buffers (None where not asked) times grad_output."""
    batch, classes = student.shape
    grad_s = (
        torch.empty((batch, classes), dtype=student.dtype, device=student.device)
        if need_student_grad
        else None
    )
    grad_t = (
        torch.empty((batch, classes), dtype=teacher.dtype, device=teacher.device)
        if need_teacher_grad
        else None
    )
    if grad_s is None and grad_t is None:
        return None, None
    _dkd_backward_kernel[(batch,)](
        student,
        teacher,
        target,
        stats,
        grad_scale_tensor(grad_output),
        grad_s if grad_s is not None else grad_t,
        grad_t if grad_t is not None else grad_s,
        classes,
        *student.stride(),
        *teacher.stride(),
        target.stride(0),
        alpha,
        beta,
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
        loss, stats = _forward(student, teacher, target, alpha, beta, temperature, standardize, config)
        ctx.save_for_backward(student, teacher, target, stats)
        ctx.args = (alpha, beta, temperature, standardize, config)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        student, teacher, target, stats = ctx.saved_tensors
        grads = _backward(
            student,
            teacher,
            target,
            stats,
            grad_output,
            *ctx.args,
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
        )
        return (*grads,) + (None,) * 6


def dkd_loss_triton(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
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
