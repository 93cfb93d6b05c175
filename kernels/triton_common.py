"""Shared pieces of the fused loss kernels: the launch table, the row walk (an aligned, vectorized body
plus a scalar edge), online log-sum-exp, per-row z-score moments and the z-score backward, and the
per-tensor row statistics that KD and DKD save for their backward.

KD and DKD are two kernels each, DIST three (a row and a column kernel in the forward, a gradient kernel
in the backward). Every forward reads the logits and keeps only O(B) per-row statistics (and O(C)
per-column ones for DIST); every backward reads the logits again and writes the gradients in fp32 math
with grad_output folded in, cast once to the input dtype (a gradient stored before the loss scale is
known underflows in fp16). No forward writes a (B, C) buffer: until the backward allocates the gradients
it returns, the extra memory is O(B + C). That is 5 N*e for KD and DKD rows of one chunk
(kernels/traffic.py).

Row walk: `row_walk` bundles what a program needs to walk its row of both logits, and `walk_row` folds a
visitor over the row's chunks. For contiguous (B, C) inputs a row starts at element r*C, generally not
16-byte aligned. Each row is split into a head (up to VEC-1 elements before the first 16-byte boundary),
an aligned body of whole VEC-element vectors, and a tail (< VEC elements). Head and tail form one masked
"edge" lane group of 2*VEC lanes; the body is walked in BLOCK-wide chunks whose masks are constant over
VEC lanes, so its loads and stores are 16-byte vectors for any C. Strided inputs walk the row with
VEC = 1 (no edge, scalar loads).

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
def row_walk(s_ptr, t_ptr, s_strides, t_strides, C, VEC: tl.constexpr):
    """Row `program_id` of both logits as one bundle for the helpers below: (s_ptr, t_ptr, s_base, t_base,
    s_stride_c, t_stride_c, lo, body, C), from each tensor's (row, column) strides; lo and body as in
    `row_split`."""
    row = tl.program_id(0).to(tl.int64)
    s_base = row * s_strides[0]
    t_base = row * t_strides[0]
    lo, body = row_split(s_base, C, VEC)
    return s_ptr, t_ptr, s_base, t_base, s_strides[1], t_strides[1], lo, body, C


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
def walk_row(walk, acc, visit: tl.constexpr, args, BLOCK: tl.constexpr, VEC: tl.constexpr):
    """One pass over a `row_walk`: acc = visit(acc, offs, g_elems, mask, x_s, x_t, args) for the edge lanes
    (VEC > 1), then for each BLOCK-wide body chunk. offs: in-row offsets; g_elems: the same elements in a
    contiguous (B, C) gradient buffer (VEC-aligned in the body); x_s, x_t: both logits in fp32, 0 where
    masked. A pass that only writes passes a dummy `acc` and gets it back."""
    s_ptr, t_ptr, s_base, t_base, s_stride_c, t_stride_c, lo, body, C = walk
    g_base = tl.program_id(0).to(tl.int64) * C
    if VEC > 1:  # edge names differ from the body's: Triton would carry them into the loop otherwise
        e_offs, e_mask = edge_lanes(lo, body, C, VEC)
        e_x_s = load_f32(s_ptr, s_base + e_offs, e_mask)
        e_x_t = load_f32(t_ptr, t_base + e_offs, e_mask)
        acc = visit(acc, e_offs, g_base + e_offs, e_mask, e_x_s, e_x_t, args)
    for start in range(0, body, BLOCK):
        idx = start + tl.arange(0, BLOCK)
        mask = idx < body
        x_s = load_f32(s_ptr, body_elems(s_base, lo, idx, s_stride_c, VEC), mask)
        x_t = load_f32(t_ptr, body_elems(t_base, lo, idx, t_stride_c, VEC), mask)
        acc = visit(acc, lo + idx, body_elems(g_base, lo, idx, 1, VEC), mask, x_s, x_t, args)
    return acc


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
def _fold_moments(acc, offs, g_elems, mask, x_s, x_t, args):
    """`walk_row` visitor of `row_scales`: both rows' running (count, mean, m2), Chan's merge per chunk."""
    n_s, mean_s, m2_s, n_t, mean_t, m2_t = acc
    n_s, mean_s, m2_s = chan_merge(n_s, mean_s, m2_s, x_s, mask)
    n_t, mean_t, m2_t = chan_merge(n_t, mean_t, m2_t, x_t, mask)
    return n_s, mean_s, m2_s, n_t, mean_t, m2_t


@triton.jit
def row_scales(walk, inv_temp, eps, BLOCK: tl.constexpr, VEC: tl.constexpr, STANDARDIZE: tl.constexpr):
    """The prologue of a row: a scale record (k, mean, std) per logit tensor, the softmax taking
    (x - mean) * k. k = 1/T and mean = std = 0; with STANDARDIZE (one more walk) the row's mean and
    unbiased std and k = 1 / ((std + eps) T)."""
    if STANDARDIZE:
        z = tl.zeros((), tl.float32)
        moments = walk_row(walk, (z, z, z, z, z, z), _fold_moments, 0, BLOCK, VEC)
        _n_s, mean_s, m2_s, _n_t, mean_t, m2_t = moments
        denom = tl.maximum(walk[8] - 1, 1)  # the walk's C - 1: the unbiased std
        std_s = tl.sqrt(m2_s / denom)
        std_t = tl.sqrt(m2_t / denom)
        return (inv_temp / (std_s + eps), mean_s, std_s), (inv_temp / (std_t + eps), mean_t, std_t)
    else:
        return (inv_temp, 0.0, 0.0), (inv_temp, 0.0, 0.0)


@triton.jit
def zscore_fold(w, e_s, rescale_s, e_t, rescale_t, diff, c_s, c_t):
    """Fold one chunk of an online softmax pass into the exp-weighted sums of the centred logits
    c = x - mean from which the z-score backward's sum(g c) follows without a walk of its own:
    w = (sum e_s c_s, sum e_t c_s, sum e_t c_t, sum e_t diff c_t), e_* the chunk's exp terms relative to
    the running max, rescale_* what the old sums are multiplied by."""
    w_ss, w_ts, w_tt, w_tx = w
    w_ss = w_ss * rescale_s + tl.sum(e_s * c_s, axis=0)
    w_ts = w_ts * rescale_t + tl.sum(e_t * c_s, axis=0)
    w_tt = w_tt * rescale_t + tl.sum(e_t * c_t, axis=0)
    w_tx = w_tx * rescale_t + tl.sum(e_t * diff * c_t, axis=0)
    return w_ss, w_ts, w_tt, w_tx


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
def zscore_backward(g, x, mask, zscore):
    """dL/dx of one chunk from g = dL/dz and a row's zscore record (mean, inv_denom, shift, coef)."""
    mean, inv_denom, shift, coef = zscore
    return g * inv_denom - shift - tl.where(mask, x - mean, 0.0) * coef


# ---------------------------------------------------------------- KD/DKD per-tensor row statistics
# A side record: one logit tensor's row statistics, (m, log_sum, k, mean, std, cs): the softmax of
# (x - mean) * k as its max m and log-sum (KD: over all classes; DKD: over the non-target ones), the scale
# record of `row_scales`, and with STANDARDIZE cs = sum(g (x - mean)) of the row's dL/dz per unit of the
# gradient scale, summed in the forward's online pass so the backward needs no reducing walk.
SIDE = tl.constexpr(6)


@triton.jit
def side_record(lse, scale, cs):
    """A side record from a finished log-sum-exp (m, log_sum) (`finish_lse`), a scale record and cs."""
    m, log_sum = lse
    k, mean, std = scale
    return m, log_sum, k, mean, std, cs


@triton.jit
def store_side(ptr, side):
    """Write a side record to ptr[0:SIDE]."""
    m, log_sum, k, mean, std, cs = side
    tl.store(ptr, m)
    tl.store(ptr + 1, log_sum)
    tl.store(ptr + 2, k)
    tl.store(ptr + 3, mean)
    tl.store(ptr + 4, std)
    tl.store(ptr + 5, cs)


@triton.jit
def load_side(ptr):
    """Read the side record at ptr[0:SIDE]."""
    return (tl.load(ptr), tl.load(ptr + 1), tl.load(ptr + 2), tl.load(ptr + 3), tl.load(ptr + 4),
            tl.load(ptr + 5))  # fmt: skip


@triton.jit
def side_log_p(x, side):
    """Log-probabilities of logits x under a side's softmax, ((x - mean) k - m) - log_sum: relative to the
    max, never x - (m + log_sum), which would round at the logits' scale (1e-3 at 1e4)."""
    m, log_sum, k, mean, _std, _cs = side
    return ((x - mean) * k - m) - log_sum


@triton.jit
def grad_outputs(gs_ptr, gt_ptr, side_s, side_t, scale, C, eps,
                 STANDARDIZE: tl.constexpr, GRAD_S: tl.constexpr, GRAD_T: tl.constexpr):  # fmt: skip
    """The bundle `store_grads` writes a row through: (gs_ptr, gt_ptr, zscore_s, zscore_t, STANDARDIZE,
    GRAD_S, GRAD_T), zscore_* the z-score backward's (mean, inv_denom, shift, coef) of a softmax
    gradient (sum(g) = 0) times `scale`, sum(g (x - mean)) = scale * cs."""
    zscore_s = (0.0, 1.0, 0.0, 0.0)  # unused without STANDARDIZE
    zscore_t = (0.0, 1.0, 0.0, 0.0)
    if STANDARDIZE:
        _m, _log_sum, _k, mean_s, std_s, cs_s = side_s
        _m, _log_sum, _k, mean_t, std_t, cs_t = side_t
        rden_s, shift_s, coef_s = standardize_coefs(0.0, scale * cs_s, C, std_s, eps)
        rden_t, shift_t, coef_t = standardize_coefs(0.0, scale * cs_t, C, std_t, eps)
        zscore_s = (mean_s, rden_s, shift_s, coef_s)
        zscore_t = (mean_t, rden_t, shift_t, coef_t)
    return gs_ptr, gt_ptr, zscore_s, zscore_t, STANDARDIZE, GRAD_S, GRAD_T


@triton.jit
def store_grad(ptr, elems, g, x, mask, zscore, STANDARDIZE: tl.constexpr):
    """Write one chunk of a gradient dL/dz (through the z-score backward when standardizing), cast once."""
    if STANDARDIZE:
        g = zscore_backward(g, x, mask, zscore)
    tl.store(ptr + elems, g.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def store_grads(out, elems, mask, g_s, g_t, x_s, x_t):
    """`store_grad` of the student's and, if asked, the teacher's chunk through a `grad_outputs` bundle."""
    gs_ptr, gt_ptr, zscore_s, zscore_t, STANDARDIZE, GRAD_S, GRAD_T = out
    if GRAD_S:
        store_grad(gs_ptr, elems, g_s, x_s, mask, zscore_s, STANDARDIZE)
    if GRAD_T:
        store_grad(gt_ptr, elems, g_t, x_t, mask, zscore_t, STANDARDIZE)
