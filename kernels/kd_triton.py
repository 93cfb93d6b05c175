"""Fused Triton KD loss: forward and backward in one pass per row, gradients written during the forward.

Per row, with u = z_s / T and v = z_t / T (z the logits, z-scored per row when `standardize`):
    KL = sum_c p_t (v - u) - lse(v) + lse(u),        loss = T^2 / B * sum_rows KL
(each logsumexp kept as max + log(sum), large offsets cancelled before the logs are added)
    dL/dz_s = (T / B) (p_s - p_t)
    dL/dz_t = (T / B) p_t (log p_t - log p_s - KL)
and through the z-score `standardize_grad` (kernels/triton_common.py). Rows up to 4096 classes are one
tile held in registers (logits read once); longer rows stream 2048-wide chunks: one pass with an online
softmax (running max and sum, rescaled as the max grows) and one pass that writes the gradients
(the second read comes from L2 on a GPU). `standardize` adds the moments passes and one reduction pass.
The autograd backward only scales the saved gradient buffers by grad_output.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from kdforge.kernels.standardize import STANDARDIZE_EPS
from kdforge.kernels.triton_common import (
    fused_backward,
    launch_config,
    load_f32,
    row_moments,
    standardize_grad,
    tile_moments,
)


@triton.jit
def _kd_grads(u, v, mask, max_s, lsum_s, max_t, lsum_t, kl, grad_scale):
    """grad_scale * dKL/du for student and teacher at one tile (zero on masked lanes)."""
    log_ps = (u - max_s) - lsum_s  # log-softmax as (x - max) - log(sum): exact offsets even at |x| ~ 1e4
    log_pt = (v - max_t) - lsum_t
    p_s = tl.exp(tl.where(mask, log_ps, float("-inf")))  # masked lanes: exp(-inf) = 0, no overflow
    p_t = tl.exp(tl.where(mask, log_pt, float("-inf")))
    g_s = grad_scale * (p_s - p_t)
    g_t = tl.where(mask, grad_scale * p_t * (log_pt - log_ps - kl), 0.0)
    return g_s, g_t


@triton.jit
def _kd_single_tile(
    s_row,
    t_row,
    gs_row,
    gt_row,
    s_stride_c,
    t_stride_c,
    C,
    inv_t,
    grad_scale,
    loss_scale,
    eps,
    BLOCK: tl.constexpr,
    STANDARDIZE: tl.constexpr,
    GRAD_S: tl.constexpr,
    GRAD_T: tl.constexpr,
):
    offs = tl.arange(0, BLOCK)
    mask = offs < C
    x_s = load_f32(s_row, offs, s_stride_c, mask)
    x_t = load_f32(t_row, offs, t_stride_c, mask)
    if STANDARDIZE:
        mean_s, std_s = tile_moments(x_s, mask, C)
        mean_t, std_t = tile_moments(x_t, mask, C)
        c_s = tl.where(mask, x_s - mean_s, 0.0)
        c_t = tl.where(mask, x_t - mean_t, 0.0)
        u = c_s / (std_s + eps) * inv_t
        v = c_t / (std_t + eps) * inv_t
    else:
        u = x_s * inv_t
        v = x_t * inv_t
    u = tl.where(mask, u, 0.0)  # finite everywhere; masked lanes are excluded explicitly below
    v = tl.where(mask, v, 0.0)
    max_s = tl.max(tl.where(mask, u, float("-inf")), axis=0)
    max_t = tl.max(tl.where(mask, v, float("-inf")), axis=0)
    e_s = tl.exp(tl.where(mask, u - max_s, float("-inf")))
    e_t = tl.exp(tl.where(mask, v - max_t, float("-inf")))
    sum_t = tl.sum(e_t, axis=0)
    lsum_s = tl.log(tl.sum(e_s, axis=0))
    lsum_t = tl.log(sum_t)
    cross = tl.sum(e_t * (v - u), axis=0) / sum_t
    kl = (cross - (max_t - max_s)) + (lsum_s - lsum_t)
    if GRAD_S or GRAD_T:
        g_s, g_t = _kd_grads(u, v, mask, max_s, lsum_s, max_t, lsum_t, kl, grad_scale)
        if STANDARDIZE:
            # dL/dz_logits = inv_t * dL/du; the z-score backward needs two row sums of that
            g_s = g_s * inv_t
            g_t = g_t * inv_t
            g_s = standardize_grad(g_s, c_s, tl.sum(g_s, axis=0), tl.sum(g_s * c_s, axis=0), C, std_s, eps)
            g_t = standardize_grad(g_t, c_t, tl.sum(g_t, axis=0), tl.sum(g_t * c_t, axis=0), C, std_t, eps)
        else:
            g_s = g_s * inv_t
            g_t = g_t * inv_t
        if GRAD_S:
            tl.store(gs_row + offs, g_s.to(gs_row.dtype.element_ty), mask=mask)
        if GRAD_T:
            tl.store(gt_row + offs, g_t.to(gt_row.dtype.element_ty), mask=mask)
    return kl * loss_scale


@triton.jit
def _kd_chunked(
    s_row,
    t_row,
    gs_row,
    gt_row,
    s_stride_c,
    t_stride_c,
    C,
    inv_t,
    grad_scale,
    loss_scale,
    eps,
    BLOCK: tl.constexpr,
    STANDARDIZE: tl.constexpr,
    GRAD_S: tl.constexpr,
    GRAD_T: tl.constexpr,
):
    mean_s = 0.0
    mean_t = 0.0
    rden_s = 1.0
    rden_t = 1.0
    std_s = 0.0
    std_t = 0.0
    if STANDARDIZE:
        mean_s, std_s = row_moments(s_row, s_stride_c, C, BLOCK)
        mean_t, std_t = row_moments(t_row, t_stride_c, C, BLOCK)
        rden_s = 1.0 / (std_s + eps)
        rden_t = 1.0 / (std_t + eps)
    # pass 1: online softmax of u and v, and the teacher-weighted cross term sum p_t (v - u)
    max_s = float("-inf")
    max_t = float("-inf")
    sum_s = 0.0
    sum_t = 0.0
    cross = 0.0
    for start in range(0, C, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < C
        u = tl.where(mask, (load_f32(s_row, offs, s_stride_c, mask) - mean_s) * rden_s * inv_t, 0.0)
        v = tl.where(mask, (load_f32(t_row, offs, t_stride_c, mask) - mean_t) * rden_t * inv_t, 0.0)
        new_s = tl.maximum(max_s, tl.max(tl.where(mask, u, float("-inf")), axis=0))
        new_t = tl.maximum(max_t, tl.max(tl.where(mask, v, float("-inf")), axis=0))
        e_t = tl.exp(tl.where(mask, v - new_t, float("-inf")))
        rescale_t = tl.exp(max_t - new_t)
        sum_s = sum_s * tl.exp(max_s - new_s) + tl.sum(
            tl.exp(tl.where(mask, u - new_s, float("-inf"))), axis=0
        )
        sum_t = sum_t * rescale_t + tl.sum(e_t, axis=0)
        cross = cross * rescale_t + tl.sum(e_t * (v - u), axis=0)
        max_s = new_s
        max_t = new_t
    lsum_s = tl.log(sum_s)
    lsum_t = tl.log(sum_t)
    kl = (cross / sum_t - (max_t - max_s)) + (lsum_s - lsum_t)
    if GRAD_S or GRAD_T:
        gsum_s = 0.0
        gsum_t = 0.0
        gcs_s = 0.0
        gcs_t = 0.0
        if STANDARDIZE:  # pass 2: the row sums the z-score backward needs
            for start in range(0, C, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                mask = offs < C
                c_s = tl.where(mask, load_f32(s_row, offs, s_stride_c, mask) - mean_s, 0.0)
                c_t = tl.where(mask, load_f32(t_row, offs, t_stride_c, mask) - mean_t, 0.0)
                u = c_s * rden_s * inv_t
                v = c_t * rden_t * inv_t
                g_s, g_t = _kd_grads(u, v, mask, max_s, lsum_s, max_t, lsum_t, kl, grad_scale * inv_t)
                gsum_s += tl.sum(g_s, axis=0)
                gsum_t += tl.sum(g_t, axis=0)
                gcs_s += tl.sum(g_s * c_s, axis=0)
                gcs_t += tl.sum(g_t * c_t, axis=0)
        for start in range(0, C, BLOCK):  # last pass: write the gradients
            offs = start + tl.arange(0, BLOCK)
            mask = offs < C
            c_s = tl.where(mask, load_f32(s_row, offs, s_stride_c, mask) - mean_s, 0.0)
            c_t = tl.where(mask, load_f32(t_row, offs, t_stride_c, mask) - mean_t, 0.0)
            u = c_s * rden_s * inv_t
            v = c_t * rden_t * inv_t
            g_s, g_t = _kd_grads(u, v, mask, max_s, lsum_s, max_t, lsum_t, kl, grad_scale * inv_t)
            if STANDARDIZE:
                g_s = standardize_grad(g_s, c_s, gsum_s, gcs_s, C, std_s, eps)
                g_t = standardize_grad(g_t, c_t, gsum_t, gcs_t, C, std_t, eps)
            if GRAD_S:
                tl.store(gs_row + offs, g_s.to(gs_row.dtype.element_ty), mask=mask)
            if GRAD_T:
                tl.store(gt_row + offs, g_t.to(gt_row.dtype.element_ty), mask=mask)
    return kl * loss_scale


@triton.jit
def _kd_kernel(
    s_ptr,
    t_ptr,
    gs_ptr,
    gt_ptr,
    loss_ptr,
    s_stride_b,
    s_stride_c,
    t_stride_b,
    t_stride_c,
    C,
    inv_t,
    grad_scale,
    loss_scale,
    eps,
    BLOCK: tl.constexpr,
    SINGLE_TILE: tl.constexpr,
    STANDARDIZE: tl.constexpr,
    GRAD_S: tl.constexpr,
    GRAD_T: tl.constexpr,
):
    """One program per row: writes T^2 * KL of the row and, if asked, both gradient rows."""
    row = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + row * s_stride_b
    t_row = t_ptr + row * t_stride_b
    gs_row = gs_ptr + row * C
    gt_row = gt_ptr + row * C
    if SINGLE_TILE:
        loss = _kd_single_tile(
            s_row,
            t_row,
            gs_row,
            gt_row,
            s_stride_c,
            t_stride_c,
            C,
            inv_t,
            grad_scale,
            loss_scale,
            eps,
            BLOCK,
            STANDARDIZE,
            GRAD_S,
            GRAD_T,
        )
    else:
        loss = _kd_chunked(
            s_row,
            t_row,
            gs_row,
            gt_row,
            s_stride_c,
            t_stride_c,
            C,
            inv_t,
            grad_scale,
            loss_scale,
            eps,
            BLOCK,
            STANDARDIZE,
            GRAD_S,
            GRAD_T,
        )
    tl.store(loss_ptr + row, loss)


class KDLossFunction(torch.autograd.Function):
    """Autograd wrapper: the forward launches the fused kernel; the backward scales its gradient buffers."""

    @staticmethod
    def forward(ctx, student: torch.Tensor, teacher: torch.Tensor, temperature: float, standardize: bool):
        batch, classes = student.shape
        grad_s_needed, grad_t_needed = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        row_loss = torch.empty(batch, dtype=torch.float32, device=student.device)
        grad_s = (
            torch.empty((batch, classes), dtype=student.dtype, device=student.device)
            if grad_s_needed
            else None
        )
        grad_t = (
            torch.empty((batch, classes), dtype=teacher.dtype, device=teacher.device)
            if grad_t_needed
            else None
        )
        config = launch_config(classes)
        _kd_kernel[(batch,)](
            student,
            teacher,
            grad_s if grad_s is not None else row_loss,
            grad_t if grad_t is not None else row_loss,
            row_loss,
            student.stride(0),
            student.stride(1),
            teacher.stride(0),
            teacher.stride(1),
            classes,
            1.0 / temperature,
            temperature * temperature / batch,
            temperature * temperature,
            STANDARDIZE_EPS,
            BLOCK=config.block,
            SINGLE_TILE=config.single_tile,
            STANDARDIZE=standardize,
            GRAD_S=grad_s is not None,
            GRAD_T=grad_t is not None,
            num_warps=config.num_warps,
        )
        ctx.save_for_backward(grad_s, grad_t)
        return row_loss.sum() / batch

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return fused_backward(ctx.saved_tensors, grad_output, non_tensor_args=2)


def kd_loss_triton(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float, standardize: bool
) -> torch.Tensor:
    """The fused kernel behind `kd_loss(backend="triton")` (arguments already validated)."""
    return KDLossFunction.apply(student, teacher, float(temperature), bool(standardize))
