"""Shared pieces of the fused loss kernels: the launch table per class count, and per-row logit
standardization (z-score with the unbiased std) and its backward as Triton device functions.

Launch table (why these sizes): a single-tile kernel keeps several fp32 row-arrays live (both logits,
both probabilities, both gradients, temporaries) at <= 16 elements per thread per array, since
BLOCK / (32 * num_warps) <= 16 below. Compiled for sm_90, the heaviest variant (DKD, 4096 classes,
standardize, both gradients) uses 187 registers per thread, under the 255 limit: nothing spills, at the
cost of lower occupancy; the chunked variants use about 105.
Rows longer than SINGLE_TILE_MAX stream in CHUNK-wide pieces with an online softmax (running max and
sum), 8 elements per thread per array, so any C (tested to 262,144 on GPU) runs without spilling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

SINGLE_TILE_MAX = 4096
CHUNK = 2048
CHUNK_WARPS = 8


@dataclass(frozen=True)
class LaunchConfig:
    """Block width over classes, warps per program, and whether one block covers the whole row."""

    block: int
    num_warps: int
    single_tile: bool


def launch_config(num_classes: int) -> LaunchConfig:
    """The table above: one tile up to 4096 classes, 2048-wide chunks beyond."""
    if num_classes <= SINGLE_TILE_MAX:
        block = max(16, triton.next_power_of_2(num_classes))
        warps = 1 if block <= 256 else 2 if block <= 1024 else 4 if block <= 2048 else 8
        return LaunchConfig(block, warps, True)
    return LaunchConfig(CHUNK, CHUNK_WARPS, False)


@triton.jit
def load_f32(base, offs, stride_c, mask):
    """One strided chunk of a row as fp32 (int64 offsets; masked lanes 0; math never in bf16/fp16)."""
    return tl.load(base + offs.to(tl.int64) * stride_c, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def tile_moments(x, mask, C):
    """Mean and unbiased std of the masked entries of one tile (std 0 for C == 1 or a constant row)."""
    mean = tl.sum(tl.where(mask, x, 0.0), axis=0) / C
    centred = tl.where(mask, x - mean, 0.0)
    var = tl.sum(centred * centred, axis=0) / tl.maximum(C - 1, 1)
    return mean, tl.sqrt(var)


@triton.jit
def row_moments(base, stride_c, C, BLOCK: tl.constexpr):
    """Mean and unbiased std of one strided row, in two chunked passes (exact at large |x|)."""
    acc = tl.zeros([BLOCK], tl.float32)
    for start in range(0, C, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < C
        acc += load_f32(base, offs, stride_c, mask)
    mean = tl.sum(acc, axis=0) / C
    acc2 = tl.zeros([BLOCK], tl.float32)
    for start in range(0, C, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < C
        x = load_f32(base, offs, stride_c, mask)
        centred = tl.where(mask, x - mean, 0.0)
        acc2 += centred * centred
    var = tl.sum(acc2, axis=0) / tl.maximum(C - 1, 1)
    return mean, tl.sqrt(var)


@triton.jit
def standardize_grad(g, centred, g_sum, g_centred_sum, C, std, eps):
    """dL/dx from g = dL/dz for z = (x - mean) / (std + eps) with the unbiased std.

    dL/dx_j = (g_j - mean(g)) / (std + eps) - (x_j - mean) * sum_c g_c (x_c - mean) / ((C-1) std (std+eps)^2);
    the second term is taken as 0 where std == 0 (a constant row: x_j - mean is 0 there anyway).
    """
    denom = std + eps
    safe = tl.where(std > 0, std, 1.0)
    coef = tl.where(std > 0, g_centred_sum / (tl.maximum(C - 1, 1) * safe * denom * denom), 0.0)
    return (g - g_sum / C) / denom - centred * coef


SCALE_BLOCK = 4096


@triton.jit
def _scale_kernel(src_ptr, scale_ptr, dst_ptr, n, BLOCK: tl.constexpr):
    """dst = src * scale, math in fp32, stored in dst's dtype (int64 offsets)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    mask = offs < n
    scale = tl.load(scale_ptr).to(tl.float32)
    x = tl.load(src_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(dst_ptr + offs, (x * scale).to(dst_ptr.dtype.element_ty), mask=mask)


def scale_gradient(buffer: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    """A new tensor `buffer * grad_output` (the backward of a fused loss): the saved buffer is never
    written, so a second backward (retain_graph) sees it intact; the scale stays on the device."""
    out = torch.empty_like(buffer)
    scale = grad_output.detach().to(device=buffer.device, dtype=torch.float32).reshape(1)
    n = buffer.numel()
    _scale_kernel[(triton.cdiv(n, SCALE_BLOCK),)](buffer, scale, out, n, BLOCK=SCALE_BLOCK, num_warps=8)
    return out


def fused_backward(
    saved: tuple[torch.Tensor | None, ...], grad_output: torch.Tensor, non_tensor_args: int
) -> tuple[torch.Tensor | None, ...]:
    """The whole backward of a fused loss Function: each saved gradient buffer (student, teacher) scaled by
    grad_output into a new tensor, then None for each further forward argument."""
    grads = tuple(scale_gradient(g, grad_output) if g is not None else None for g in saved)
    return grads + (None,) * non_tensor_args
