"""Shared pieces of the fused loss kernels: the launch table, the row walk (an aligned, vectorized body
plus a scalar edge), online log-sum-exp, per-row z-score moments and the z-score backward.

Every loss is two kernels: the forward reads both logits once and keeps O(B) per-row statistics (O(C)
per-column ones for DIST); the backward reads the logits again and writes the gradient in fp32 math with
grad_output folded in, cast once to the input dtype (a gradient stored before the loss scale is known
underflows in fp16). The forward never writes a (B, C) buffer, so its extra peak memory is O(B + C).

Row walk: for contiguous (B, C) inputs a row starts at element r*C, generally not 16-byte aligned. Each row
is split into a head (up to VEC-1 elements before the first 16-byte boundary), an aligned body of whole
VEC-element vectors, and a tail (< VEC elements). Head and tail form one masked "edge" lane group of 2*VEC
lanes; the body is walked in BLOCK-wide chunks whose masks are constant over VEC lanes, so its loads and
stores are 16-byte vectors for any C. Strided inputs walk the row with VEC = 1 (no edge, scalar loads).

Launch table: a row is walked in BLOCK-wide chunks, BLOCK the next power of two of C up to CHUNK (one
chunk: a second pass over such a row, where one is needed, re-reads at most 8 KB per tensor that the same
program just read), with one warp per 256 lanes: 8 elements per thread per array, one 16-byte vector of
a 16-bit row. No variant spills on sm_90 (tests/kernels/test_sm90_resources.py compiles them for sm_90
and reads the register and stack use of the cubins ptxas makes; every launch passes maxnreg=MAX_REGISTERS).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

CHUNK = 2048
VECTOR_BYTES = 16
# ptxas's .maxnreg for every launch. Without one ptxas picks its own register budget and, at a few
# occupancy steps (64, 80, 128), spills a register or two rather than exceed it; with a cap it allocates
# what the kernel needs up to the cap: 128 keeps two 8-warp programs per SM.
MAX_REGISTERS = 128


@dataclass(frozen=True)
class LaunchConfig:
    """Chunk width over classes, warps per program, and elements per 16-byte vector (1: strided walk)."""

    block: int
    num_warps: int
    vec: int = 1


def vector_width(*tensors: torch.Tensor) -> int:
    """Elements per 16-byte vector when every tensor is a contiguous (B, C) matrix, else 1."""
    for tensor in tensors:
        if tensor.stride(1) != 1 or (tensor.shape[0] > 1 and tensor.stride(0) != tensor.shape[1]):
            return 1
    return VECTOR_BYTES // min(tensor.element_size() for tensor in tensors)


def launch_config(num_classes: int, *tensors: torch.Tensor) -> LaunchConfig:
    """The table above; vectors where every tensor is a contiguous (B, C) matrix."""
    block = min(max(16, triton.next_power_of_2(num_classes)), CHUNK)
    return LaunchConfig(block, max(1, block // 256), vector_width(*tensors) if tensors else 1)


def one_chunk(num_classes: int, config: LaunchConfig) -> bool:
    """Whether rows of `num_classes` are walked in a single chunk under `config` (the whole row in one
    program's registers, so a second walk over it is served by L1/L2)."""
    return num_classes <= config.block


def empty_grads(
    student: torch.Tensor, teacher: torch.Tensor, need_student: bool, need_teacher: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Contiguous (B, C) gradient buffers in the inputs' dtypes, None where no gradient is asked for."""
    shape = (student.shape[0], student.shape[1])
    grad_s = torch.empty(shape, dtype=student.dtype, device=student.device) if need_student else None
    grad_t = torch.empty(shape, dtype=teacher.dtype, device=teacher.device) if need_teacher else None
    return grad_s, grad_t


NOT_WRITTEN = float("nan")  # the told grad_output of buffers the forward did not fill: nothing equals it


def forward_grads(
    ctx, student: torch.Tensor, teacher: torch.Tensor, expected_grad: float | None, config: LaunchConfig
) -> tuple[tuple[torch.Tensor | None, torch.Tensor | None], float]:
    """The forward's share of a told grad_output (`expected_grad`): for one-chunk rows, the gradient
    buffers to fill now and the grad_output to fill them for, kept on `ctx` for `backward_grads`;
    otherwise (None, None) and nothing kept."""
    ctx.early = None
    if expected_grad is None or not one_chunk(student.shape[1], config):
        return (None, None), 1.0
    ctx.early = (empty_grads(student, teacher, *ctx.needs_input_grad[:2]), expected_grad)
    return ctx.early


def backward_grads(
    ctx, student: torch.Tensor, teacher: torch.Tensor
) -> tuple[tuple[torch.Tensor | None, torch.Tensor | None], float]:
    """The backward's gradient buffers and the grad_output they already hold: the forward's (handed over
    to autograd), or new ones and NOT_WRITTEN, which makes the backward kernel write them."""
    if ctx.early is None:
        return empty_grads(student, teacher, *ctx.needs_input_grad[:2]), NOT_WRITTEN
    early, ctx.early = ctx.early, None
    return early


def grad_pointers(
    grads: tuple[torch.Tensor | None, torch.Tensor | None], fallback: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel arguments for (gs_ptr, gt_ptr): an absent buffer is replaced by the other one, or by
    `fallback` when both are absent; the kernels' GRAD_S/GRAD_T flags keep them from being written."""
    grad_s, grad_t = grads
    stand_in = grad_s if grad_s is not None else grad_t if grad_t is not None else fallback
    return (grad_s if grad_s is not None else stand_in, grad_t if grad_t is not None else stand_in)


def grad_scale_tensor(grad_output: torch.Tensor) -> torch.Tensor:
    """grad_output as a 1-element fp32 tensor on its device: kernels load it, the host never reads it."""
    return grad_output.detach().reshape(1).to(torch.float32)


# ----------------------------------------------------------------------------------------- row walk
@triton.jit
def row_split(row_base, C, VEC: tl.constexpr):
    """(lo, body): the head length before the first VEC-aligned element of a row that starts at element
    `row_base`, and the aligned body length (a multiple of VEC). VEC == 1: (0, C)."""
    if VEC > 1:
        lo = tl.minimum((VEC - row_base % VEC) % VEC, C).to(tl.int32)
        return lo, ((C - lo) // VEC) * VEC
    else:
        return 0, C


@triton.jit
def edge_lanes(lo, body, C, VEC: tl.constexpr):
    """In-row offsets and mask of the 2*VEC edge lanes: the head [0, lo) and the tail [lo + body, C)."""
    lane = tl.arange(0, 2 * VEC)
    head = lane < VEC
    offs = tl.where(head, lane, lo + body + lane - VEC)
    return offs, tl.where(head, lane < lo, offs < C)


@triton.jit
def body_elems(row_base, lo, idx, stride_c, VEC: tl.constexpr):
    """Element offsets (from the tensor's start) of body lanes idx (in-row offset lo + idx): provably
    VEC-aligned when VEC > 1 (contiguous rows, stride_c == 1), int64 strided otherwise."""
    if VEC > 1:
        return ((row_base + lo) // VEC) * VEC + idx
    else:
        return row_base + idx.to(tl.int64) * stride_c


@triton.jit
def load_f32(ptr, elems, mask):
    """Masked load as fp32 (masked lanes 0; no math ever in bf16/fp16)."""
    return tl.load(ptr + elems, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def edge_loads(s_ptr, t_ptr, s_base, t_base, lo, body, C, VEC: tl.constexpr):
    """The edge lanes of a row (`edge_lanes`) with both logits loaded there: (offs, mask, x_s, x_t)."""
    offs, mask = edge_lanes(lo, body, C, VEC)
    return offs, mask, load_f32(s_ptr, s_base + offs, mask), load_f32(t_ptr, t_base + offs, mask)


@triton.jit
def body_loads(s_ptr, t_ptr, s_base, t_base, s_stride_c, t_stride_c, lo, body, start,
               BLOCK: tl.constexpr, VEC: tl.constexpr):  # fmt: skip
    """The body chunk at `start` with both logits loaded: (idx, mask, x_s, x_t), idx its body lanes (in-row
    offset lo + idx)."""
    idx = start + tl.arange(0, BLOCK)
    mask = idx < body
    x_s = load_f32(s_ptr, body_elems(s_base, lo, idx, s_stride_c, VEC), mask)
    x_t = load_f32(t_ptr, body_elems(t_base, lo, idx, t_stride_c, VEC), mask)
    return idx, mask, x_s, x_t


# --------------------------------------------------------------------------------- online softmax
@triton.jit
def online_lse(m, total, x, valid):
    """Fold a chunk into a running (max, sum exp(x - max)); also returns the chunk's exp terms and the
    factor the old sums were rescaled by. Safe while nothing valid has been seen (no inf - inf)."""
    m_new = tl.maximum(m, tl.max(tl.where(valid, x, float("-inf")), axis=0))
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
    e = tl.exp(tl.where(valid, x - m_ref, float("-inf")))
    rescale = tl.exp(m - m_ref)
    return m_new, total * rescale + tl.sum(e, axis=0), e, rescale


@triton.jit
def finish_lse(m, total):
    """A running (max, sum) as (max, log sum); (0, 0) when the set was empty."""
    nonempty = total > 0
    return tl.where(nonempty, m, 0.0), tl.log(tl.where(nonempty, total, 1.0))


# ------------------------------------------------------------------------------------- z-score
@triton.jit
def chan_merge(n, mean, m2, x, valid):
    """Fold a chunk into a running (count, mean, centred sum of squares) by Chan's formula."""
    k = tl.sum(valid.to(tl.float32), axis=0)
    safe_k = tl.maximum(k, 1.0)
    chunk_mean = tl.sum(tl.where(valid, x, 0.0), axis=0) / safe_k
    d = tl.where(valid, x - chunk_mean, 0.0)
    n_new = n + k
    delta = chunk_mean - mean
    f = k / tl.maximum(n_new, 1.0)
    return n_new, mean + delta * f, m2 + tl.sum(d * d, axis=0) + delta * delta * n * f


@triton.jit
def row_moments(
    s_ptr, t_ptr, s_base, t_base, s_stride_c, t_stride_c, lo, body, C, BLOCK: tl.constexpr, VEC: tl.constexpr
):
    """Mean and unbiased std of one row of each logit tensor, in one pass (Chan's merge per chunk)."""
    n_s = 0.0
    mean_s = 0.0
    m2_s = 0.0
    n_t = 0.0
    mean_t = 0.0
    m2_t = 0.0
    if VEC > 1:
        _e_offs, e_mask, e_x_s, e_x_t = edge_loads(s_ptr, t_ptr, s_base, t_base, lo, body, C, VEC)
        n_s, mean_s, m2_s = chan_merge(n_s, mean_s, m2_s, e_x_s, e_mask)
        n_t, mean_t, m2_t = chan_merge(n_t, mean_t, m2_t, e_x_t, e_mask)
    for start in range(0, body, BLOCK):
        _idx, mask, x_s, x_t = body_loads(
            s_ptr, t_ptr, s_base, t_base, s_stride_c, t_stride_c, lo, body, start, BLOCK, VEC
        )
        n_s, mean_s, m2_s = chan_merge(n_s, mean_s, m2_s, x_s, mask)
        n_t, mean_t, m2_t = chan_merge(n_t, mean_t, m2_t, x_t, mask)
    denom = tl.maximum(C - 1, 1)
    return mean_s, tl.sqrt(m2_s / denom), mean_t, tl.sqrt(m2_t / denom)


@triton.jit
def standardize_coefs(g_sum, g_centred_sum, C, std, eps):
    """The three row constants of the z-score backward: dL/dx = g * inv_denom - shift - (x - mean) * coef
    for g = dL/dz, z = (x - mean) / (std + eps) with the unbiased std, from sum(g) and sum(g (x - mean)).

    dL/dx_j = (g_j - mean(g)) / (std + eps) - (x_j - mean) * sum_c g_c (x_c - mean) / ((C-1) std (std+eps)^2);
    the second term is taken as 0 where std == 0 (a constant row: x_j - mean is 0 there anyway).
    """
    denom = std + eps
    safe = tl.where(std > 0, std, 1.0)
    coef = tl.where(std > 0, g_centred_sum / (tl.maximum(C - 1, 1) * safe * denom * denom), 0.0)
    inv_denom = 1.0 / denom
    return inv_denom, g_sum / C * inv_denom, coef


@triton.jit
def row_scales(s_ptr, t_ptr, s_base, t_base, s_stride_c, t_stride_c, lo, body, C, inv_temp, eps,
               BLOCK: tl.constexpr, VEC: tl.constexpr, STANDARDIZE: tl.constexpr):  # fmt: skip
    """The prologue of a row: (mean_s, std_s, mean_t, std_t, k_s, k_t), the logits' factor k = 1/T and
    means and stds 0 (constants), or with STANDARDIZE the `row_moments` and k = 1 / ((std + eps) T)."""
    mean_s = 0.0
    mean_t = 0.0
    std_s = 0.0
    std_t = 0.0
    k_s = inv_temp
    k_t = inv_temp
    if STANDARDIZE:
        mean_s, std_s, mean_t, std_t = row_moments(
            s_ptr, t_ptr, s_base, t_base, s_stride_c, t_stride_c, lo, body, C, BLOCK, VEC
        )
        k_s = inv_temp / (std_s + eps)
        k_t = inv_temp / (std_t + eps)
    return mean_s, std_s, mean_t, std_t, k_s, k_t


@triton.jit
def zscore_fold(w_ss, w_ts, w_tt, w_tx, e_s, rescale_s, e_t, rescale_t, diff, x_s, x_t, mask, mean_s, mean_t):
    """Fold one chunk of an online softmax pass into the exp-weighted sums of centred logits c = x - mean
    from which the z-score backward's sum(g c) follows without a walk of its own: w_ss = sum e_s c_s,
    w_ts = sum e_t c_s, w_tt = sum e_t c_t, w_tx = sum e_t diff c_t (e_* the chunk's exp terms relative to
    the running max, rescale_* what the old sums are multiplied by). Also returns c_s, c_t."""
    c_s = tl.where(mask, x_s - mean_s, 0.0)
    c_t = tl.where(mask, x_t - mean_t, 0.0)
    w_ss = w_ss * rescale_s + tl.sum(e_s * c_s, axis=0)
    w_ts = w_ts * rescale_t + tl.sum(e_t * c_s, axis=0)
    w_tt = w_tt * rescale_t + tl.sum(e_t * c_t, axis=0)
    w_tx = w_tx * rescale_t + tl.sum(e_t * diff * c_t, axis=0)
    return w_ss, w_ts, w_tt, w_tx, c_s, c_t


@triton.jit
def standardize_coefs_pair(sum_s, csum_s, std_s, sum_t, csum_t, std_t, C, eps, STANDARDIZE: tl.constexpr):
    """`standardize_coefs` of both rows, (rden_s, shift_s, coef_s, rden_t, shift_t, coef_t); without
    STANDARDIZE the constants (1, 0, 0) that `standardize_apply` is never called with."""
    rden_s = 1.0
    rden_t = 1.0
    shift_s = 0.0
    shift_t = 0.0
    coef_s = 0.0
    coef_t = 0.0
    if STANDARDIZE:
        rden_s, shift_s, coef_s = standardize_coefs(sum_s, csum_s, C, std_s, eps)
        rden_t, shift_t, coef_t = standardize_coefs(sum_t, csum_t, C, std_t, eps)
    return rden_s, shift_s, coef_s, rden_t, shift_t, coef_t


@triton.jit
def standardize_apply(g, centred, inv_denom, shift, coef):
    """dL/dx of one chunk from g = dL/dz and the constants of `standardize_coefs`."""
    return g * inv_denom - shift - centred * coef


@triton.jit
def store_grad(ptr, elems, g, x, mask, mean, inv_denom, shift, coef, STANDARDIZE: tl.constexpr):
    """Write one chunk of a gradient dL/dz (through the z-score backward when standardizing), cast once."""
    if STANDARDIZE:
        g = standardize_apply(g, tl.where(mask, x - mean, 0.0), inv_denom, shift, coef)
    tl.store(ptr + elems, g.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def store_grads(gs_ptr, gt_ptr, elems, g_s, g_t, x_s, x_t, mask, mean_s, mean_t,
                rden_s, shift_s, coef_s, rden_t, shift_t, coef_t,
                STANDARDIZE: tl.constexpr, GRAD_S: tl.constexpr, GRAD_T: tl.constexpr):  # fmt: skip
    """`store_grad` of the student's and the teacher's gradient, as asked."""
    if GRAD_S:
        store_grad(gs_ptr, elems, g_s, x_s, mask, mean_s, rden_s, shift_s, coef_s, STANDARDIZE)
    if GRAD_T:
        store_grad(gt_ptr, elems, g_t, x_t, mask, mean_t, rden_t, shift_t, coef_t, STANDARDIZE)
