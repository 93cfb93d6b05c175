"""Fused Triton kernels for the DIST loss: a forward that reads the logits twice (a row pass and a column
pass) and keeps O(B) and O(C) statistics, and a backward that recomputes the gradients from the logits
with grad_output folded in (fp32 math, one cast at the store).

Notation: y_s = softmax(w_s), y_t = softmax(w_t) with w = z / T (z the logits, z-scored per row when
`standardize`). For two vectors a, b of length n with centred versions a_c = a - mean(a), b_c:

    p = N / D,   N = a_c . b_c,   D = ||a_c|| ||b_c|| + eps.

Gradient: d p / d a_c = b_c / D - N ||b_c|| a_c / (||a_c|| D^2) = (||b_c|| / D) (b^ - p a^) with the
unit vectors a^ = a_c / ||a_c||, b^ = b_c / ||b_c||: the second form is what the kernels evaluate, with
||b_c|| / D = 1 / (||a_c|| + eps / ||b_c||) and p = (N / ||a_c|| / ||b_c||) / (1 + eps / ||a_c|| / ||b_c||),
so nothing overflows or underflows (as D^2 would) even for eps = 0 and tiny norms. The a^ term is taken
as 0 where ||a_c|| = 0, as the reference's safe norm does (the b_c / D term stays: b_c / eps); p and its
gradient are 0 where D = 0 (eps = 0 and a zero norm). Centring is the projection P = I - 11^T / n, so
d p / d a = P (d p / d a_c); a_c and b_c have mean zero, so P leaves the expression unchanged (for n = 1,
P = 0: a one-row batch has no intra gradient). With k_row = T^2 beta / B, k_col = T^2 gamma / C, row
pieces a_c = y_s[i, :] - 1/C (b_c likewise) and column pieces a_c = y_s[:, c] - mean_i y_s[:, c],

    g_s[i, c] = dL / dy_s[i, c] = -k_row [||b_c|| / D (b^ - p a^)]_row i - k_col [same]_column c

(teacher: swap a and b). Each bracket is affine in (y_s, y_t), so it folds into three coefficients:
g_s[i, c] = (A_i + A_c) y_t + (B_i + B_c) y_s + (G_i + G_c), with A, B, G per row (saved by the row kernel)
and per column (saved by the column kernel): three fp32 loads per element and gradient in the backward.
The softmax backward then gives dL/dw = y * (g - sum_c g_c y_c), dL/dz = dL/dw / T, and with
`standardize` the z-score backward (`triton_common.standardize_coefs`).

Kernels (no (B, C) temporaries; O(B) and O(C) fp32 side buffers only):
  1. row kernel (forward): per row, after a moments pass with `standardize`, one online pass for the max
     and sum of exp(w - max) of w_s, w_t and the centred (co)moments of the exponentials (merged chunk by
     chunk with Chan's formula, so no centred sum comes from a cancelling difference of uncentred ones):
     the row Pearson correlation and the row coefficients.
  2. column kernel (forward): programs over column blocks loop over row tiles, recompute y from the logits
     and the row statistics, merge per-column means and centred (co)moments with Chan's formula
     (deterministic, no atomics); the column Pearson correlation and the column coefficients.
  3. gradient kernel (backward): per row, one pass reducing sum(g * y) (and, with the z-score, a
     y-weighted online covariance that gives its sums), then one pass writing the gradients.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from kdforge.kernels.standardize import STANDARDIZE_EPS
from kdforge.kernels.triton_common import (
    MAX_REGISTERS,
    LaunchConfig,
    empty_grads,
    grad_pointers,
    grad_scale_tensor,
    launch_config,
    row_scales,
    row_walk,
    standardize_coefs,
    walk_row,
    zscore_backward,
)
from torch.autograd.function import once_differentiable

# Fields of the (B, ROW_FIELDS) per-row statistics (row-major: one program writes one row's fields).
(MAX_S, MAX_T, RCP_S, RCP_T, INV_S, INV_T, MEAN_S, MEAN_T, STD_S, STD_T, P_ROW) = (
    tl.constexpr(i) for i in range(11)
)
(RA_S, RB_S, RG_S, RA_T, RB_T, RG_T) = (tl.constexpr(i) for i in range(11, 17))  # row coefficients
ROW_FIELDS = tl.constexpr(17)
# Fields of the (COL_FIELDS, C) per-column statistics (field-major: a field is contiguous over columns).
(P_COL, CA_S, CB_S, CG_S, CA_T, CB_T, CG_T) = (tl.constexpr(i) for i in range(7))
COL_FIELDS = tl.constexpr(7)

COL_TILE = 1024  # elements of one (rows x columns) tile of the column kernel: 4 per thread at 8 warps
COL_WARPS = 8
COL_MAX_C = 256  # columns per program at tiny batches: each thread carries five accumulators per column


@triton.jit
def _scaled(x, mean, inv, STANDARDIZE: tl.constexpr):
    """w = z / T of logits x (one shared expression, so every kernel recomputes the same bits)."""
    if STANDARDIZE:
        x = x - mean
    return x * inv


@triton.jit
def _probs(x, mean, inv, m, rcp, mask, STANDARDIZE: tl.constexpr):
    """Softmax probabilities exp(w - max) / sum, 0 outside the mask (not exp(w - logsumexp): at large
    |w| the rounding of logsumexp would cost relative accuracy in every probability)."""
    return tl.exp(tl.where(mask, _scaled(x, mean, inv, STANDARDIZE) - m, float("-inf"))) * rcp


@triton.jit
def _pearson_pieces(dot, aa, bb, eps, k):
    """From N = a_c.b_c, ||a_c||^2, ||b_c||^2: p = N / D, 1 / ||a_c||, 1 / ||b_c|| and the gradient
    factors -k ||b_c|| / D, -k ||a_c|| / D, in forms that stay finite for eps = 0 and tiny norms."""
    na = tl.sqrt(aa)
    nb = tl.sqrt(bb)
    safe_na = tl.where(na > 0, na, 1.0)
    safe_nb = tl.where(nb > 0, nb, 1.0)
    both = (na > 0) & (nb > 0)
    p = tl.where(both, (dot / safe_na / safe_nb) / (1.0 + eps / safe_na / safe_nb), 0.0)
    den_s = na + eps / safe_nb  # D / ||b_c||
    den_t = nb + eps / safe_na  # D / ||a_c||
    k_s = tl.where((nb > 0) & (den_s > 0), -k / tl.where(den_s > 0, den_s, 1.0), 0.0)
    k_t = tl.where((na > 0) & (den_t > 0), -k / tl.where(den_t > 0, den_t, 1.0), 0.0)
    return p, tl.where(na > 0, 1.0 / safe_na, 0.0), tl.where(nb > 0, 1.0 / safe_nb, 0.0), k_s, k_t


@triton.jit
def _coefficients(p, ina, inb, k_s, k_t):
    """The pieces k (b^ - p a^) as g_s = A y_t + B y_s + G0 (G0 = -(A bbar + B abar), the centring applied
    by the caller) for the student, and with a, b swapped for the teacher: (A_s, B_s, A_t, B_t)."""
    return k_s * inb, -k_s * p * ina, k_t * ina, -k_t * p * inb


@triton.jit
def _row_fold(acc, offs, g_elems, mask, xs, xt, args):
    """`walk_row` visitor of the row pass: running max m, sum S of exp(w - m), centred second moments M of
    the exponentials and their co-moment Q over the n entries so far, merged by Chan's formula after
    rescaling to the new max."""
    n, ms, mt, ss, st, mss, mtt, q = acc
    (inv_s, mean_s, _std_s), (inv_t, mean_t, _std_t), STANDARDIZE = args
    ws = tl.where(mask, _scaled(xs, mean_s, inv_s, STANDARDIZE), float("-inf"))
    wt = tl.where(mask, _scaled(xt, mean_t, inv_t, STANDARDIZE), float("-inf"))
    ms_new = tl.maximum(ms, tl.max(ws, axis=0))
    mt_new = tl.maximum(mt, tl.max(wt, axis=0))
    ms_ref = tl.where(ms_new == float("-inf"), 0.0, ms_new)
    mt_ref = tl.where(mt_new == float("-inf"), 0.0, mt_new)
    es = tl.exp(ws - ms_ref)  # 0 on masked lanes
    et = tl.exp(wt - mt_ref)
    rs = tl.exp(ms - ms_ref)
    rt = tl.exp(mt - mt_ref)
    n_chunk = tl.sum(mask.to(tl.float32), axis=0)
    n_new = n + n_chunk
    ss = ss * rs
    st = st * rt
    mss = mss * (rs * rs)
    mtt = mtt * (rt * rt)
    q = q * (rs * rt)
    cs = tl.sum(es, axis=0)
    ct = tl.sum(et, axis=0)
    safe_chunk = tl.maximum(n_chunk, 1.0)
    chunk_mean_s = cs / safe_chunk
    chunk_mean_t = ct / safe_chunk
    ds = tl.where(mask, es - chunk_mean_s, 0.0)
    dt = tl.where(mask, et - chunk_mean_t, 0.0)
    delta_s = chunk_mean_s - ss / tl.maximum(n, 1.0)
    delta_t = chunk_mean_t - st / tl.maximum(n, 1.0)
    weight = n * n_chunk / tl.maximum(n_new, 1.0)
    mss = mss + tl.sum(ds * ds, axis=0) + delta_s * delta_s * weight
    mtt = mtt + tl.sum(dt * dt, axis=0) + delta_t * delta_t * weight
    q = q + tl.sum(ds * dt, axis=0) + delta_s * delta_t * weight
    return n_new, ms_new, mt_new, ss + cs, st + ct, mss, mtt, q


@triton.jit
def _dist_row_kernel(s_ptr, t_ptr, s_strides, t_strides, row_ptr, C, inv_temp, std_eps, eps, k_row,
                     STANDARDIZE: tl.constexpr, BLOCK: tl.constexpr, VEC: tl.constexpr):  # fmt: skip
    """Per row: softmax max and 1 / sum of w_s and w_t, z-score moments, the row Pearson correlation and
    the row coefficients of both gradients."""
    row = tl.program_id(0).to(tl.int64)
    walk = row_walk(s_ptr, t_ptr, s_strides, t_strides, C, VEC)
    scale_s, scale_t = row_scales(walk, inv_temp, std_eps, BLOCK, VEC, STANDARDIZE)
    inv_s, mean_s, std_s = scale_s
    inv_t, mean_t, std_t = scale_t
    z = tl.zeros((), tl.float32)
    low = tl.full((), float("-inf"), tl.float32)
    start = (z, low, low, z, z, z, z, z)
    _n, ms, mt, ss, st, mss, mtt, q = walk_row(
        walk, start, _row_fold, (scale_s, scale_t, STANDARDIZE), BLOCK, VEC
    )
    # y = e / S and the row mean of y is 1 / C = mean(e) / S, so the centred sums scale by 1 / S^2.
    p, ina, inb, k_s, k_t = _pearson_pieces(q / (ss * st), mss / (ss * ss), mtt / (st * st), eps, k_row)
    a_s, b_s, a_t, b_t = _coefficients(p, ina, inb, k_s, k_t)
    out = row_ptr + row * ROW_FIELDS
    tl.store(out + MAX_S, ms)
    tl.store(out + MAX_T, mt)
    tl.store(out + RCP_S, 1.0 / ss)
    tl.store(out + RCP_T, 1.0 / st)
    tl.store(out + INV_S, inv_s)
    tl.store(out + INV_T, inv_t)
    tl.store(out + MEAN_S, mean_s)
    tl.store(out + MEAN_T, mean_t)
    tl.store(out + STD_S, std_s)
    tl.store(out + STD_T, std_t)
    tl.store(out + P_ROW, p)
    tl.store(out + RA_S, a_s)
    tl.store(out + RB_S, b_s)
    tl.store(out + RG_S, -(a_s + b_s) / C)  # the row centre of a softmax row is exactly 1 / C
    tl.store(out + RA_T, a_t)
    tl.store(out + RB_T, b_t)
    tl.store(out + RG_T, -(a_t + b_t) / C)


@triton.jit
def _dist_col_kernel(
    s_ptr,
    t_ptr,
    row_ptr,
    col_ptr,
    B,
    C,
    stride_sb,
    stride_sc,
    stride_tb,
    stride_tc,
    eps,
    k_col,
    STANDARDIZE: tl.constexpr,
    COEFFS_S: tl.constexpr,
    COEFFS_T: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Per column (over the batch): the column Pearson correlation and, as asked, the column coefficients."""
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = cols < C
    s_cols = cols.to(tl.int64) * stride_sc
    t_cols = cols.to(tl.int64) * stride_tc
    mean_a = tl.zeros([BLOCK_C], tl.float32)
    mean_b = tl.zeros([BLOCK_C], tl.float32)
    m_aa = tl.zeros([BLOCK_C], tl.float32)
    m_bb = tl.zeros([BLOCK_C], tl.float32)
    m_ab = tl.zeros([BLOCK_C], tl.float32)
    for start in range(0, B, BLOCK_B):
        rows = start + tl.arange(0, BLOCK_B)
        rmask = rows < B
        mask = rmask[:, None] & cmask[None, :]
        fields = row_ptr + rows.to(tl.int64) * ROW_FIELDS
        max_s = tl.load(fields + MAX_S, mask=rmask, other=0.0)
        max_t = tl.load(fields + MAX_T, mask=rmask, other=0.0)
        rcp_s = tl.load(fields + RCP_S, mask=rmask, other=0.0)
        rcp_t = tl.load(fields + RCP_T, mask=rmask, other=0.0)
        inv_s = tl.load(fields + INV_S, mask=rmask, other=0.0)
        inv_t = tl.load(fields + INV_T, mask=rmask, other=0.0)
        mean_s = 0.0
        mean_t = 0.0
        if STANDARDIZE:
            mean_s = tl.load(fields + MEAN_S, mask=rmask, other=0.0)[:, None]
            mean_t = tl.load(fields + MEAN_T, mask=rmask, other=0.0)[:, None]
        s_rows = rows.to(tl.int64) * stride_sb
        t_rows = rows.to(tl.int64) * stride_tb
        xs = tl.load(s_ptr + s_rows[:, None] + s_cols[None, :], mask=mask, other=0.0).to(tl.float32)
        xt = tl.load(t_ptr + t_rows[:, None] + t_cols[None, :], mask=mask, other=0.0).to(tl.float32)
        ys = _probs(xs, mean_s, inv_s[:, None], max_s[:, None], rcp_s[:, None], mask, STANDARDIZE)
        yt = _probs(xt, mean_t, inv_t[:, None], max_t[:, None], rcp_t[:, None], mask, STANDARDIZE)
        # Chan's merge of this tile's per-column mean and centred (co)moments into the running ones.
        n_old = start * 1.0
        n_tile = tl.sum(rmask.to(tl.float32), axis=0)
        n_new = n_old + n_tile
        tile_a = tl.sum(ys, axis=0) / n_tile
        tile_b = tl.sum(yt, axis=0) / n_tile
        da = tl.where(mask, ys - tile_a[None, :], 0.0)
        db = tl.where(mask, yt - tile_b[None, :], 0.0)
        delta_a = tile_a - mean_a
        delta_b = tile_b - mean_b
        weight = n_old * n_tile / n_new
        m_aa = m_aa + tl.sum(da * da, axis=0) + delta_a * delta_a * weight
        m_bb = m_bb + tl.sum(db * db, axis=0) + delta_b * delta_b * weight
        m_ab = m_ab + tl.sum(da * db, axis=0) + delta_a * delta_b * weight
        mean_a = mean_a + delta_a * (n_tile / n_new)
        mean_b = mean_b + delta_b * (n_tile / n_new)
    p, ina, inb, k_s, k_t = _pearson_pieces(m_ab, m_aa, m_bb, eps, k_col)
    a_s, b_s, a_t, b_t = _coefficients(p, ina, inb, k_s, k_t)
    tl.store(col_ptr + P_COL * C + cols, p, mask=cmask)
    if COEFFS_S:
        tl.store(col_ptr + CA_S * C + cols, a_s, mask=cmask)
        tl.store(col_ptr + CB_S * C + cols, b_s, mask=cmask)
        tl.store(col_ptr + CG_S * C + cols, -(a_s * mean_b + b_s * mean_a), mask=cmask)
    if COEFFS_T:
        tl.store(col_ptr + CA_T * C + cols, a_t, mask=cmask)
        tl.store(col_ptr + CB_T * C + cols, b_t, mask=cmask)
        tl.store(col_ptr + CG_T * C + cols, -(a_t * mean_a + b_t * mean_b), mask=cmask)


@triton.jit
def _dy(col_ptr, C, offs, mask, ys, yt, row_coefs, STUDENT: tl.constexpr):
    """dL/dy of one chunk, row plus column coefficients: (A_i + A_c) y_other + (B_i + B_c) y_own + G."""
    ra, rb, rg = row_coefs
    if STUDENT:
        ca = tl.load(col_ptr + CA_S * C + offs, mask=mask, other=0.0)
        cb = tl.load(col_ptr + CB_S * C + offs, mask=mask, other=0.0)
        cg = tl.load(col_ptr + CG_S * C + offs, mask=mask, other=0.0)
        return (ra + ca) * yt + (rb + cb) * ys + (rg + cg)
    else:
        ca = tl.load(col_ptr + CA_T * C + offs, mask=mask, other=0.0)
        cb = tl.load(col_ptr + CB_T * C + offs, mask=mask, other=0.0)
        cg = tl.load(col_ptr + CG_T * C + offs, mask=mask, other=0.0)
        return (ra + ca) * ys + (rb + cb) * yt + (rg + cg)


@triton.jit
def _load_side(fields, MAX: tl.constexpr, RCP: tl.constexpr, INV: tl.constexpr, MEAN: tl.constexpr,
               STD: tl.constexpr, RA: tl.constexpr, RB: tl.constexpr, RG: tl.constexpr):  # fmt: skip
    """One logit tensor's row statistics for the gradient kernel: its softmax (max, 1 / sum, 1 / T or the
    z-score factor, mean), its std and its row coefficients (A, B, G)."""
    softmax = (tl.load(fields + MAX), tl.load(fields + RCP), tl.load(fields + INV), tl.load(fields + MEAN))
    return softmax, tl.load(fields + STD), (tl.load(fields + RA), tl.load(fields + RB), tl.load(fields + RG))


@triton.jit
def _chunk(offs, mask, xs, xt, rows):
    """y_s, y_t and, as asked, dL/dy_s and dL/dy_t of one chunk (0 where not asked)."""
    soft_s, soft_t, coefs_s, coefs_t, col_ptr, C, STANDARDIZE, GRAD_S, GRAD_T = rows
    m_s, rcp_s, inv_s, mean_s = soft_s
    m_t, rcp_t, inv_t, mean_t = soft_t
    ys = _probs(xs, mean_s, inv_s, m_s, rcp_s, mask, STANDARDIZE)
    yt = _probs(xt, mean_t, inv_t, m_t, rcp_t, mask, STANDARDIZE)
    gs = tl.zeros_like(ys)  # tensors, not 0.0: flags read from a tuple make a branch of either kind
    gt = tl.zeros_like(yt)
    if GRAD_S:
        gs = _dy(col_ptr, C, offs, mask, ys, yt, coefs_s, True)
    if GRAD_T:
        gt = _dy(col_ptr, C, offs, mask, ys, yt, coefs_t, False)
    return ys, yt, gs, gt


@triton.jit
def _cov_merge(w, mg, mx, cov, y, g, xc):
    """One chunk of the y-weighted online covariance of g and the centred logits xc (Chan's formula)."""
    wk = tl.sum(y, axis=0)
    safe_wk = tl.where(wk > 0, wk, 1.0)
    mgk = tl.sum(y * g, axis=0) / safe_wk
    mxk = tl.sum(y * xc, axis=0) / safe_wk
    covk = tl.sum(y * (g - mgk) * (xc - mxk), axis=0)
    w_new = w + wk
    f = wk / tl.where(w_new > 0, w_new, 1.0)
    cov = cov + covk + (mgk - mg) * (mxk - mx) * w * f
    mg = mg + (mgk - mg) * f
    mx = mx + (mxk - mx) * f
    return w_new, mg, mx, cov


@triton.jit
def _reduce(red, g, y, x, mask, mean, STANDARDIZE: tl.constexpr):
    """One chunk of one tensor's reducing pass, red = (sig, w, mg, mx, cov): sig = sum g y, or with the
    z-score the y-weighted covariance of g and the centred logits (see `_dist_grad_kernel`)."""
    sig, w, mg, mx, cov = red
    if STANDARDIZE:
        w, mg, mx, cov = _cov_merge(w, mg, mx, cov, y, g, tl.where(mask, x - mean, 0.0))
    else:
        sig += tl.sum(g * y, axis=0)
    return sig, w, mg, mx, cov


@triton.jit
def _reduce_chunk(acc, offs, g_elems, mask, xs, xt, rows):
    """`walk_row` visitor of the gradient kernel's first pass: `_reduce` of each gradient asked for."""
    red_s, red_t = acc
    ys, yt, gs, gt = _chunk(offs, mask, xs, xt, rows)
    soft_s, soft_t, _coefs_s, _coefs_t, _col_ptr, _C, STANDARDIZE, GRAD_S, GRAD_T = rows
    if GRAD_S:
        red_s = _reduce(red_s, gs, ys, xs, mask, soft_s[3], STANDARDIZE)
    if GRAD_T:
        red_t = _reduce(red_t, gt, yt, xt, mask, soft_t[3], STANDARDIZE)
    return red_s, red_t


@triton.jit
def _finish(red, mean, std, k, C, std_eps, STANDARDIZE: tl.constexpr):
    """(sigma, zscore) of one tensor's gradient from its reducing pass: sigma = sum_c g_c y_c and the
    z-score backward's (mean, inv_denom, shift, coef) from sum_c y_c (g_c - sigma) = sigma (1 - W) and
    sum_c y_c (g_c - sigma) xc_c = cov + W (1 - W) mg mx (W = sum_c y_c, 1 up to rounding; sigma = W mg),
    both times the softmax backward's factor k."""
    sig, w, mg, mx, cov = red
    zscore = (0.0, 1.0, 0.0, 0.0)  # unused without STANDARDIZE
    if STANDARDIZE:
        sig = w * mg
        rden, shift, coef = standardize_coefs(
            sig * (1.0 - w) * k, (cov + w * (1.0 - w) * mg * mx) * k, C, std, std_eps
        )
        zscore = (mean, rden, shift, coef)
    return sig, zscore


@triton.jit
def _write(ptr, elems, g, y, x, mask, sig, k, zscore, STANDARDIZE: tl.constexpr):
    """Softmax (and z-score) backward of one chunk, written in the buffer's dtype."""
    dx = y * (g - sig) * k
    if STANDARDIZE:
        dx = zscore_backward(dx, x, mask, zscore)
    tl.store(ptr + elems, dx.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _write_chunk(acc, offs, g_elems, mask, xs, xt, args):
    """`walk_row` visitor of the gradient kernel's second pass: recompute g and write the gradients asked
    for, out_* = (pointer, sigma, zscore)."""
    rows, k, out_s, out_t = args
    ys, yt, gs, gt = _chunk(offs, mask, xs, xt, rows)
    _soft_s, _soft_t, _coefs_s, _coefs_t, _col_ptr, _C, STANDARDIZE, GRAD_S, GRAD_T = rows
    if GRAD_S:
        gs_ptr, sig_s, zscore_s = out_s
        _write(gs_ptr, g_elems, gs, ys, xs, mask, sig_s, k, zscore_s, STANDARDIZE)
    if GRAD_T:
        gt_ptr, sig_t, zscore_t = out_t
        _write(gt_ptr, g_elems, gt, yt, xt, mask, sig_t, k, zscore_t, STANDARDIZE)
    return acc


@triton.jit
def _dist_grad_kernel(s_ptr, t_ptr, s_strides, t_strides, row_ptr, col_ptr, go_ptr, gs_ptr, gt_ptr, C,
                      inv_temp, std_eps, STANDARDIZE: tl.constexpr, BLOCK: tl.constexpr, VEC: tl.constexpr,
                      GRAD_S: tl.constexpr, GRAD_T: tl.constexpr):  # fmt: skip
    """Per row: grad_output times dL/d(student) and dL/d(teacher) (as asked), into contiguous buffers.

    Pass 1: sigma = sum_c g_c y_c per tensor; with the z-score also the y-weighted covariance of g and
    the centred logits, which is sum_c dL/dw_c (x_c - mean) without a cancelling difference. Pass 2:
    recompute g and write the gradients (grad_output folded into the softmax backward's factor)."""
    walk = row_walk(s_ptr, t_ptr, s_strides, t_strides, C, VEC)
    fields = row_ptr + tl.program_id(0).to(tl.int64) * ROW_FIELDS
    soft_s, std_s, coefs_s = _load_side(fields, MAX_S, RCP_S, INV_S, MEAN_S, STD_S, RA_S, RB_S, RG_S)
    soft_t, std_t, coefs_t = _load_side(fields, MAX_T, RCP_T, INV_T, MEAN_T, STD_T, RA_T, RB_T, RG_T)
    rows = (soft_s, soft_t, coefs_s, coefs_t, col_ptr, C, STANDARDIZE, GRAD_S, GRAD_T)
    z = tl.zeros((), tl.float32)
    red_s, red_t = walk_row(walk, ((z, z, z, z, z), (z, z, z, z, z)), _reduce_chunk, rows, BLOCK, VEC)
    k = inv_temp * tl.load(go_ptr).to(tl.float32)
    sig_s, zscore_s = _finish(red_s, soft_s[3], std_s, k, C, std_eps, STANDARDIZE)
    sig_t, zscore_t = _finish(red_t, soft_t[3], std_t, k, C, std_eps, STANDARDIZE)
    args = (rows, k, (gs_ptr, sig_s, zscore_s), (gt_ptr, sig_t, zscore_t))
    walk_row(walk, z, _write_chunk, args, BLOCK, VEC)


def _column_tiles(batch: int, num_classes: int) -> tuple[int, int]:
    """(BLOCK_B, BLOCK_C) of the column kernel: COL_TILE elements per tile, and 16 to 64 columns per
    program when the batch is large (enough programs to fill a GPU at ImageNet-sized C); small batches
    take wider column blocks instead (up to COL_MAX_C), so tiny-B calls launch few programs."""
    block_c = min(max(16, triton.next_power_of_2(triton.cdiv(num_classes, 128))), 64)
    block_b = min(triton.next_power_of_2(batch), COL_TILE // block_c)
    block_c = min(max(16, triton.next_power_of_2(num_classes)), COL_TILE // block_b, COL_MAX_C)
    return block_b, block_c


def _forward(
    student: torch.Tensor,
    teacher: torch.Tensor,
    beta: float,
    gamma: float,
    temperature: float,
    standardize: bool,
    eps: float,
    config: LaunchConfig,
    coeffs_s: bool,
    coeffs_t: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row and column kernels: the loss (0-dim fp32), per-row and per-column statistics."""
    batch, num_classes = student.shape
    device = student.device
    rows = torch.empty((batch, ROW_FIELDS.value), dtype=torch.float32, device=device)
    cols = torch.empty((COL_FIELDS.value, num_classes), dtype=torch.float32, device=device)
    t2 = temperature * temperature
    # A one-row batch has a zero centring projection over the batch: no gradient from the intra term.
    k_col = t2 * gamma / num_classes if batch > 1 else 0.0
    strides = (*student.stride(), *teacher.stride())
    _dist_row_kernel[(batch,)](
        student,
        teacher,
        student.stride(),
        teacher.stride(),
        rows,
        num_classes,
        1.0 / temperature,
        STANDARDIZE_EPS,
        eps,
        t2 * beta / batch,
        STANDARDIZE=standardize,
        BLOCK=config.block,
        VEC=config.vec,
        num_warps=config.num_warps,
        maxnreg=MAX_REGISTERS,
    )
    block_b, block_c = _column_tiles(batch, num_classes)
    _dist_col_kernel[(triton.cdiv(num_classes, block_c),)](
        student,
        teacher,
        rows,
        cols,
        batch,
        num_classes,
        *strides,
        eps,
        k_col,
        STANDARDIZE=standardize,
        COEFFS_S=coeffs_s,
        COEFFS_T=coeffs_t,
        BLOCK_B=block_b,
        BLOCK_C=block_c,
        num_warps=COL_WARPS,
        maxnreg=MAX_REGISTERS,
    )
    inter = 1.0 - rows[:, P_ROW.value].mean()
    intra = 1.0 - cols[P_COL.value].mean()
    return t2 * (beta * inter + gamma * intra), rows, cols


class DISTLossFunction(torch.autograd.Function):
    """Autograd wrapper: the forward keeps O(B + C) statistics; the backward recomputes the gradients."""

    @staticmethod
    def forward(
        ctx,
        student: torch.Tensor,
        teacher: torch.Tensor,
        beta: float,
        gamma: float,
        temperature: float,
        standardize: bool,
        eps: float,
        config: LaunchConfig,
    ) -> torch.Tensor:
        grad_s, grad_t = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        loss, rows, cols = _forward(
            student, teacher, beta, gamma, temperature, standardize, eps, config, grad_s, grad_t
        )
        ctx.save_for_backward(student, teacher, rows, cols)
        ctx.args = (temperature, standardize, config)
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor):
        student, teacher, rows, cols = ctx.saved_tensors
        temperature, standardize, config = ctx.args
        batch, num_classes = student.shape
        grad_s, grad_t = empty_grads(student, teacher, *ctx.needs_input_grad[:2])
        if grad_s is not None or grad_t is not None:
            _dist_grad_kernel[(batch,)](
                student,
                teacher,
                student.stride(),
                teacher.stride(),
                rows,
                cols,
                grad_scale_tensor(grad_output),
                *grad_pointers((grad_s, grad_t), student),
                num_classes,
                1.0 / temperature,
                STANDARDIZE_EPS,
                STANDARDIZE=standardize,
                BLOCK=config.block,
                VEC=config.vec,
                GRAD_S=grad_s is not None,
                GRAD_T=grad_t is not None,
                num_warps=config.num_warps,
                maxnreg=MAX_REGISTERS,
            )
        return grad_s, grad_t, None, None, None, None, None, None


def dist_loss_triton(
    student: torch.Tensor,
    teacher: torch.Tensor,
    beta: float,
    gamma: float,
    temperature: float,
    standardize: bool,
    eps: float,
    config: LaunchConfig | None = None,
) -> torch.Tensor:
    """DIST through the fused kernels (arguments validated, defaults declared by `dist_loss`); no gradient
    work when none is needed.
    `config` overrides the launch table (tests force chunked walks at small C with it)."""
    config = config or launch_config(student.shape[1], student, teacher)
    args = (float(beta), float(gamma), float(temperature), bool(standardize), float(eps), config)
    if torch.is_grad_enabled() and (student.requires_grad or teacher.requires_grad):
        return DISTLossFunction.apply(student, teacher, *args)
    return _forward(student, teacher, *args, False, False)[0]
