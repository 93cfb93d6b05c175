"""Fused Triton kernel for the Decoupled KD loss: one program per row computes the row's loss and, in the
same pass over the logits, dL/d(student) and dL/d(teacher); autograd's backward only scales them.

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

Two layouts (kernels.triton_common.launch_config): rows of <= 4096 classes sit in one tile and are read
once; longer rows stream CHUNK-wide pieces, with an online (running max, rescaled sum) log-sum-exp for
lse and lse' of both logits plus the NCKD cross term sum_j exp(b_j - m) (b_j - a_j), then one more pass
writes the gradients (two more before it with `standardize`: row moments; and one to reduce the sums).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from kdforge.kernels.standardize import STANDARDIZE_EPS
from kdforge.kernels.triton_common import (
    LaunchConfig,
    fused_backward,
    launch_config,
    load_f32,
    row_moments,
    standardize_grad,
    tile_moments,
)


@triton.jit
def _scale(x, mean, k, STANDARDIZE: tl.constexpr):
    """Logits to a = z / T: (x - mean) * k with k = 1 / ((std + eps) T), or x * (1 / T)."""
    if STANDARDIZE:
        return (x - mean) * k
    else:
        return x * k


@triton.jit
def _tile_lse(x, valid):
    """logsumexp of the valid entries of a tile as (max, log sum exp(x - max)); (0, 0) when none is."""
    m = tl.max(tl.where(valid, x, float("-inf")), axis=0)
    m = tl.where(m == float("-inf"), 0.0, m)
    total = tl.sum(tl.exp(tl.where(valid, x - m, float("-inf"))), axis=0)
    return m, tl.log(tl.where(total > 0, total, 1.0))


@triton.jit
def _online(m, total, x, valid):
    """Fold one chunk into a running (max, sum exp(x - max)); also returns the chunk's exp terms and the
    factor the old sums were rescaled by (no inf - inf while nothing valid has been seen)."""
    m_new = tl.maximum(m, tl.max(tl.where(valid, x, float("-inf")), axis=0))
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
    e = tl.exp(tl.where(valid, x - m_ref, float("-inf")))
    rescale = tl.exp(m - m_ref)
    return m_new, total * rescale + tl.sum(e, axis=0), e, rescale


@triton.jit
def _finish_lse(m, total):
    """A running (max, sum) as (max, log sum), like _tile_lse; (0, 0) when the set was empty."""
    nonempty = total > 0
    return tl.where(nonempty, m, 0.0), tl.log(tl.where(nonempty, total, 1.0))


@triton.jit
def _grads(a, b, is_gt, rest, m_rs, l_rs, m_rt, l_rt, p_s, p_t, r_s, r_t, d, nckd, alpha, beta, scale):
    """dL/dz_s and dL/dz_t of one tile (module docstring); 0 in lanes that are neither target nor rest."""
    log_q_s = (a - m_rs) - l_rs
    log_q_t = (b - m_rt) - l_rt
    q_s = tl.exp(tl.where(rest, log_q_s, float("-inf")))
    q_t = tl.exp(tl.where(rest, log_q_t, float("-inf")))
    g_s = tl.where(is_gt, alpha * (p_s - p_t), alpha * (r_s - r_t) * q_s + beta * (q_s - q_t))
    bin_t = alpha * p_t * r_t * d
    g_t = tl.where(is_gt, bin_t, q_t * (beta * (log_q_t - log_q_s - nckd) - bin_t))
    return g_s * scale, g_t * scale


@triton.jit
def dkd_kernel(
    s_ptr,
    t_ptr,
    target_ptr,
    loss_ptr,
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
    grad_scale,
    eps,
    STANDARDIZE: tl.constexpr,
    WRITE_GS: tl.constexpr,
    WRITE_GT: tl.constexpr,
    SINGLE_TILE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Row `program_id` of DKD: its loss T^2 (alpha TCKD + beta NCKD) into loss_ptr, and with WRITE_* the
    gradients of the batch-mean loss into contiguous (B, C) buffers of the inputs' dtypes."""
    row = tl.program_id(0)
    s_row = s_ptr + row.to(tl.int64) * s_stride_b
    t_row = t_ptr + row.to(tl.int64) * t_stride_b
    g_off = row.to(tl.int64) * C
    label = tl.load(target_ptr + row.to(tl.int64) * target_stride).to(tl.int64)
    has_rest = C > 1
    cols = tl.arange(0, BLOCK)

    if SINGLE_TILE:
        mask = cols < C
        x_s = tl.load(s_row + cols.to(tl.int64) * s_stride_c, mask=mask, other=0.0).to(tl.float32)
        x_t = tl.load(t_row + cols.to(tl.int64) * t_stride_c, mask=mask, other=0.0).to(tl.float32)
        mean_s = 0.0
        mean_t = 0.0
        std_s = 0.0
        std_t = 0.0
        k_s = inv_temperature
        k_t = inv_temperature
        if STANDARDIZE:
            mean_s, std_s = tile_moments(x_s, mask, C)
            mean_t, std_t = tile_moments(x_t, mask, C)
            k_s = inv_temperature / (std_s + eps)
            k_t = inv_temperature / (std_t + eps)
        a = _scale(x_s, mean_s, k_s, STANDARDIZE)
        b = _scale(x_t, mean_t, k_t, STANDARDIZE)
        is_gt = cols == label
        rest = mask & (cols != label)
        m_s, l_s = _tile_lse(a, mask)
        m_t, l_t = _tile_lse(b, mask)
        m_rs, l_rs = _tile_lse(a, rest)
        m_rt, l_rt = _tile_lse(b, rest)
        a_g = tl.sum(tl.where(is_gt, a, 0.0), axis=0)
        b_g = tl.sum(tl.where(is_gt, b, 0.0), axis=0)
        log_q_s = (a - m_rs) - l_rs
        log_q_t = (b - m_rt) - l_rt
        q_t = tl.exp(tl.where(rest, log_q_t, float("-inf")))
        nckd = tl.sum(q_t * (log_q_t - log_q_s), axis=0)
    else:
        mean_s = 0.0
        mean_t = 0.0
        std_s = 0.0
        std_t = 0.0
        k_s = inv_temperature
        k_t = inv_temperature
        if STANDARDIZE:
            mean_s, std_s = row_moments(s_row, s_stride_c, C, BLOCK)
            mean_t, std_t = row_moments(t_row, t_stride_c, C, BLOCK)
            k_s = inv_temperature / (std_s + eps)
            k_t = inv_temperature / (std_t + eps)
        m_s = tl.full((), float("-inf"), tl.float32)
        m_t = tl.full((), float("-inf"), tl.float32)
        m_rs = tl.full((), float("-inf"), tl.float32)
        m_rt = tl.full((), float("-inf"), tl.float32)
        sum_s = tl.zeros((), tl.float32)
        sum_t = tl.zeros((), tl.float32)
        sum_rs = tl.zeros((), tl.float32)
        sum_rt = tl.zeros((), tl.float32)
        cross = tl.zeros((), tl.float32)  # sum_rest exp(b - m_rt) (b - a)
        for start in range(0, C, BLOCK):
            offs = start + cols
            mask = offs < C
            rest = mask & (offs != label)
            x_s = load_f32(s_row, offs, s_stride_c, mask)
            x_t = load_f32(t_row, offs, t_stride_c, mask)
            a = _scale(x_s, mean_s, k_s, STANDARDIZE)
            b = _scale(x_t, mean_t, k_t, STANDARDIZE)
            m_s, sum_s, _, _ = _online(m_s, sum_s, a, mask)
            m_t, sum_t, _, _ = _online(m_t, sum_t, b, mask)
            m_rs, sum_rs, _, _ = _online(m_rs, sum_rs, a, rest)
            m_rt, sum_rt, e_rt, rescale = _online(m_rt, sum_rt, b, rest)
            cross = cross * rescale + tl.sum(e_rt * (b - a), axis=0)
        m_s, l_s = _finish_lse(m_s, sum_s)
        m_t, l_t = _finish_lse(m_t, sum_t)
        m_rs, l_rs = _finish_lse(m_rs, sum_rs)
        m_rt, l_rt = _finish_lse(m_rt, sum_rt)
        a_g = _scale(tl.load(s_row + label * s_stride_c).to(tl.float32), mean_s, k_s, STANDARDIZE)
        b_g = _scale(tl.load(t_row + label * t_stride_c).to(tl.float32), mean_t, k_t, STANDARDIZE)
        # sum q_t (b - a) - (lse'_t - lse'_s), and 0 with no rest
        mean_cross = tl.where(sum_rt > 0, cross / tl.where(sum_rt > 0, sum_rt, 1.0), 0.0)
        nckd = mean_cross - (m_rt - m_rs) - (l_rt - l_rs)

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
    nckd = tl.where(has_rest, nckd, 0.0)
    tl.store(loss_ptr + row, loss_scale * (alpha * tckd + beta * nckd))

    if WRITE_GS or WRITE_GT:
        d = ((b_g - m_rt) - l_rt) - ((a_g - m_rs) - l_rs)  # log-odds difference D
        if SINGLE_TILE:
            g_s, g_t = _grads(
                a,
                b,
                is_gt,
                rest,
                m_rs,
                l_rs,
                m_rt,
                l_rt,
                p_s,
                p_t,
                r_s,
                r_t,
                d,
                nckd,
                alpha,
                beta,
                grad_scale,
            )
            if STANDARDIZE:
                c_s = tl.where(mask, x_s - mean_s, 0.0)
                c_t = tl.where(mask, x_t - mean_t, 0.0)
                g_s = standardize_grad(
                    g_s, c_s, tl.sum(g_s, axis=0), tl.sum(g_s * c_s, axis=0), C, std_s, eps
                )
                g_t = standardize_grad(
                    g_t, c_t, tl.sum(g_t, axis=0), tl.sum(g_t * c_t, axis=0), C, std_t, eps
                )
            if WRITE_GS:
                tl.store(gs_ptr + g_off + cols, g_s.to(gs_ptr.dtype.element_ty), mask=mask)
            if WRITE_GT:
                tl.store(gt_ptr + g_off + cols, g_t.to(gt_ptr.dtype.element_ty), mask=mask)
        else:
            gsum_s = tl.zeros((), tl.float32)
            gsum_t = tl.zeros((), tl.float32)
            gc_s = tl.zeros((), tl.float32)
            gc_t = tl.zeros((), tl.float32)
            if STANDARDIZE:  # sum(g) and sum(g * centred) for standardize_grad, before writing anything
                acc_gs = tl.zeros([BLOCK], tl.float32)
                acc_gt = tl.zeros([BLOCK], tl.float32)
                acc_cs = tl.zeros([BLOCK], tl.float32)
                acc_ct = tl.zeros([BLOCK], tl.float32)
                for start in range(0, C, BLOCK):
                    offs = start + cols
                    mask = offs < C
                    x_s = load_f32(s_row, offs, s_stride_c, mask)
                    x_t = load_f32(t_row, offs, t_stride_c, mask)
                    a = _scale(x_s, mean_s, k_s, STANDARDIZE)
                    b = _scale(x_t, mean_t, k_t, STANDARDIZE)
                    g_s, g_t = _grads(
                        a, b, offs == label, mask & (offs != label),
                        m_rs, l_rs, m_rt, l_rt, p_s, p_t, r_s, r_t, d, nckd, alpha, beta, grad_scale,
                    )  # fmt: skip
                    acc_gs += g_s
                    acc_gt += g_t
                    acc_cs += g_s * tl.where(mask, x_s - mean_s, 0.0)
                    acc_ct += g_t * tl.where(mask, x_t - mean_t, 0.0)
                gsum_s = tl.sum(acc_gs, axis=0)
                gsum_t = tl.sum(acc_gt, axis=0)
                gc_s = tl.sum(acc_cs, axis=0)
                gc_t = tl.sum(acc_ct, axis=0)
            for start in range(0, C, BLOCK):
                offs = start + cols
                mask = offs < C
                x_s = load_f32(s_row, offs, s_stride_c, mask)
                x_t = load_f32(t_row, offs, t_stride_c, mask)
                a = _scale(x_s, mean_s, k_s, STANDARDIZE)
                b = _scale(x_t, mean_t, k_t, STANDARDIZE)
                g_s, g_t = _grads(
                    a, b, offs == label, mask & (offs != label),
                    m_rs, l_rs, m_rt, l_rt, p_s, p_t, r_s, r_t, d, nckd, alpha, beta, grad_scale,
                )  # fmt: skip
                if STANDARDIZE:
                    g_s = standardize_grad(
                        g_s, tl.where(mask, x_s - mean_s, 0.0), gsum_s, gc_s, C, std_s, eps
                    )
                    g_t = standardize_grad(
                        g_t, tl.where(mask, x_t - mean_t, 0.0), gsum_t, gc_t, C, std_t, eps
                    )
                if WRITE_GS:
                    tl.store(gs_ptr + g_off + offs, g_s.to(gs_ptr.dtype.element_ty), mask=mask)
                if WRITE_GT:
                    tl.store(gt_ptr + g_off + offs, g_t.to(gt_ptr.dtype.element_ty), mask=mask)


def _launch(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    standardize: bool,
    need_student_grad: bool,
    need_teacher_grad: bool,
    config: LaunchConfig | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Run the kernel: the float32 loss and the gradient buffers asked for (None otherwise).

    `config` overrides launch_config(C) (tests force the chunked path at small C with it).
    """
    B, C = student.shape
    config = config or launch_config(C)
    loss_rows = torch.empty(B, dtype=torch.float32, device=student.device)
    grad_s = torch.empty((B, C), dtype=student.dtype, device=student.device) if need_student_grad else None
    grad_t = torch.empty((B, C), dtype=teacher.dtype, device=teacher.device) if need_teacher_grad else None
    dkd_kernel[(B,)](
        student,
        teacher,
        target,
        loss_rows,
        grad_s if grad_s is not None else loss_rows,  # never touched when its WRITE_* flag is off
        grad_t if grad_t is not None else loss_rows,
        C,
        student.stride(0),
        student.stride(1),
        teacher.stride(0),
        teacher.stride(1),
        target.stride(0),
        1.0 / temperature,
        float(alpha),
        float(beta),
        float(temperature) ** 2,
        float(temperature) / B,
        STANDARDIZE_EPS,
        STANDARDIZE=standardize,
        WRITE_GS=grad_s is not None,
        WRITE_GT=grad_t is not None,
        SINGLE_TILE=config.single_tile,
        BLOCK=config.block,
        num_warps=config.num_warps,
    )
    return loss_rows.sum() / B, grad_s, grad_t


class DKDLossFunction(torch.autograd.Function):
    """Autograd wrapper: forward runs the fused kernel (loss and gradients), backward scales the gradients."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        student: torch.Tensor,
        teacher: torch.Tensor,
        target: torch.Tensor,
        alpha: float,
        beta: float,
        temperature: float,
        standardize: bool,
    ) -> torch.Tensor:
        loss, grad_s, grad_t = _launch(
            student,
            teacher,
            target,
            alpha,
            beta,
            temperature,
            standardize,
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
        )
        ctx.save_for_backward(grad_s, grad_t)
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return fused_backward(ctx.saved_tensors, grad_output, non_tensor_args=5)


def dkd_loss_triton(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    standardize: bool = False,
) -> torch.Tensor:
    """DKD on the fused kernel (arguments already validated by kernels.dkd.dkd_loss): a float32 scalar.

    Without autograd (grad mode off, or neither logit requires grad) no gradient buffer is allocated.
    """
    if torch.is_grad_enabled() and (student.requires_grad or teacher.requires_grad):
        return DKDLossFunction.apply(student, teacher, target, alpha, beta, temperature, standardize)
    return _launch(student, teacher, target, alpha, beta, temperature, standardize, False, False)[0]
