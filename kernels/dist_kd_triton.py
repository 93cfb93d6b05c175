"""Fused Triton kernels for the DIST loss: the loss and its gradients in one forward call.

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

(teacher: swap a and b). The softmax backward then gives
dL/dw = y * (g - sum_c g_c y_c), dL/dz = dL/dw / T, and with `standardize` the z-score backward
(`triton_common.standardize_grad`).

Kernels (no (B, C) fp32 temporaries; O(B) and O(C) fp32 side buffers only):
  1. row kernel: per-row max and sum of exp(w - max) of w_s, w_t (online over CHUNK-wide pieces for
     C > 4096), the z-score moments, and the row Pearson pieces (the row mean of a softmax is exactly
     1/C). Chunked rows merge centred sums of the unnormalized exponentials with Chan's parallel formula,
     so no centred sum comes from a cancelling difference of uncentred ones.
  2. column kernel: programs over column blocks loop over row tiles, recompute y from the logits and the
     row statistics, and merge per-column means and centred (co)moments with Chan's formula (deterministic,
     no atomics); it ends with the column Pearson pieces.
  3. gradient kernel (only when something needs a gradient): per row, g from the row and column pieces,
     the row reduction sum(g * y) (in registers for one tile; chunked: one reducing pass, one writing pass,
     with the z-score sums taken from a weighted online covariance in the reducing pass), then the softmax
     and z-score backward, written in the input dtype with every constant factor folded in.
Reads of each logit tensor: 3 for C <= 4096, 4 beyond (plus 2 for the z-score moments when chunked);
one fewer when no gradient is needed.
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

# Fields of the (ROW_FIELDS, B) and (COL_FIELDS, C) fp32 side buffers (field k of item i at k * n + i).
MAX_S = tl.constexpr(0)  # max of w_s over the row
MAX_T = tl.constexpr(1)
RCP_S = tl.constexpr(2)  # 1 / sum_c exp(w_c - max): y = exp(w - max) * rcp
RCP_T = tl.constexpr(3)
INV_S = tl.constexpr(4)  # w = (x - mean) * inv: inv = 1 / ((std + eps) T) when standardizing, else 1 / T
INV_T = tl.constexpr(5)
MEAN_S = tl.constexpr(6)  # z-score moments (written only when standardizing)
MEAN_T = tl.constexpr(7)
STD_S = tl.constexpr(8)
STD_T = tl.constexpr(9)
P_ROW = tl.constexpr(10)  # row Pearson correlation p_i
INA_ROW = tl.constexpr(11)  # 1 / ||a_c|| of the centred row of y_s (0 for a zero norm)
INB_ROW = tl.constexpr(12)  # 1 / ||b_c|| of y_t
KS_ROW = tl.constexpr(13)  # -k_row ||b_c|| / D_i: the student's gradient factor (teacher: swap a, b)
KT_ROW = tl.constexpr(14)
ROW_FIELDS = 15

ABAR = tl.constexpr(0)  # column mean of y_s over the batch
BBAR = tl.constexpr(1)  # column mean of y_t
P_COL = tl.constexpr(2)  # column Pearson correlation p_c
INA_COL = tl.constexpr(3)  # 1 / ||a_c|| of the centred column of y_s
INB_COL = tl.constexpr(4)
KS_COL = tl.constexpr(5)  # -k_col ||b_c|| / D_c (0 for a one-row batch)
KT_COL = tl.constexpr(6)
COL_FIELDS = 7

COL_TILE = 2048  # elements of one (rows x columns) tile of the column kernel: 8 per thread at 8 warps
COL_WARPS = 8


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
def _online_softmax_step(x, mask, mean, inv, m, STANDARDIZE: tl.constexpr):
    """Online softmax step: the new running max and the exponentials of this chunk against it."""
    w = tl.where(mask, _scaled(x, mean, inv, STANDARDIZE), float("-inf"))
    m_new = tl.maximum(m, tl.max(w, axis=0))
    e = tl.where(mask, tl.exp(w - m_new), 0.0)
    r = tl.exp(m - m_new)
    return m_new, e, r


@triton.jit
def _dist_row_stats_kernel(
    s_ptr,
    t_ptr,
    row_ptr,
    B,
    C,
    stride_sb,
    stride_sc,
    stride_tb,
    stride_tc,
    inv_temp,
    std_eps,
    eps,
    k_row,
    STANDARDIZE: tl.constexpr,
    SINGLE_TILE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """Per row: softmax max and 1 / sum of w_s and w_t, z-score moments, and the row Pearson pieces."""
    row = tl.program_id(0)
    s_base = s_ptr + row.to(tl.int64) * stride_sb
    t_base = t_ptr + row.to(tl.int64) * stride_tb
    inv_c = 1.0 / C
    mean_s = 0.0
    mean_t = 0.0
    inv_s = inv_temp
    inv_t = inv_temp
    if SINGLE_TILE:
        offs = tl.arange(0, BLOCK)
        mask = offs < C
        xs = load_f32(s_base, offs, stride_sc, mask)
        xt = load_f32(t_base, offs, stride_tc, mask)
        if STANDARDIZE:
            mean_s, std_s = tile_moments(xs, mask, C)
            mean_t, std_t = tile_moments(xt, mask, C)
            inv_s = inv_temp / (std_s + std_eps)
            inv_t = inv_temp / (std_t + std_eps)
        ws = tl.where(mask, _scaled(xs, mean_s, inv_s, STANDARDIZE), float("-inf"))
        wt = tl.where(mask, _scaled(xt, mean_t, inv_t, STANDARDIZE), float("-inf"))
        ms = tl.max(ws, axis=0)
        mt = tl.max(wt, axis=0)
        rcp_s = 1.0 / tl.sum(tl.where(mask, tl.exp(ws - ms), 0.0), axis=0)
        rcp_t = 1.0 / tl.sum(tl.where(mask, tl.exp(wt - mt), 0.0), axis=0)
        a = tl.where(mask, _probs(xs, mean_s, inv_s, ms, rcp_s, mask, STANDARDIZE) - inv_c, 0.0)
        b = tl.where(mask, _probs(xt, mean_t, inv_t, mt, rcp_t, mask, STANDARDIZE) - inv_c, 0.0)
        dot = tl.sum(a * b, axis=0)
        aa = tl.sum(a * a, axis=0)
        bb = tl.sum(b * b, axis=0)
    else:
        if STANDARDIZE:
            mean_s, std_s = row_moments(s_base, stride_sc, C, BLOCK)
            mean_t, std_t = row_moments(t_base, stride_tc, C, BLOCK)
            inv_s = inv_temp / (std_s + std_eps)
            inv_t = inv_temp / (std_t + std_eps)
        # Running max m, sum S of exp(w - m), centred second moments M of the exponentials and their
        # co-moment Q over the n entries so far; chunks merge by Chan's formula after rescaling to the
        # new max, so the centred sums never come from a difference of large uncentred ones.
        ms = float("-inf")
        mt = float("-inf")
        ss = 0.0
        st = 0.0
        mss = 0.0
        mtt = 0.0
        q = 0.0
        for start in range(0, C, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < C
            xs = load_f32(s_base, offs, stride_sc, mask)
            xt = load_f32(t_base, offs, stride_tc, mask)
            ms, es, rs = _online_softmax_step(xs, mask, mean_s, inv_s, ms, STANDARDIZE)
            mt, et, rt = _online_softmax_step(xt, mask, mean_t, inv_t, mt, STANDARDIZE)
            n_old = start * 1.0
            n_chunk = tl.sum(mask.to(tl.float32), axis=0)
            n_new = n_old + n_chunk
            ss = ss * rs
            st = st * rt
            mss = mss * (rs * rs)
            mtt = mtt * (rt * rt)
            q = q * (rs * rt)
            cs = tl.sum(es, axis=0)
            ct = tl.sum(et, axis=0)
            chunk_mean_s = cs / n_chunk
            chunk_mean_t = ct / n_chunk
            ds = tl.where(mask, es - chunk_mean_s, 0.0)
            dt = tl.where(mask, et - chunk_mean_t, 0.0)
            delta_s = chunk_mean_s - ss / tl.maximum(n_old, 1.0)
            delta_t = chunk_mean_t - st / tl.maximum(n_old, 1.0)
            weight = n_old * n_chunk / n_new
            mss = mss + tl.sum(ds * ds, axis=0) + delta_s * delta_s * weight
            mtt = mtt + tl.sum(dt * dt, axis=0) + delta_t * delta_t * weight
            q = q + tl.sum(ds * dt, axis=0) + delta_s * delta_t * weight
            ss = ss + cs
            st = st + ct
        rcp_s = 1.0 / ss
        rcp_t = 1.0 / st
        # y = e / S and the row mean of y is 1 / C = mean(e) / S, so the centred sums scale by 1 / S^2.
        dot = q / (ss * st)
        aa = mss / (ss * ss)
        bb = mtt / (st * st)
    p, ina, inb, k_s, k_t = _pearson_pieces(dot, aa, bb, eps, k_row)
    tl.store(row_ptr + MAX_S * B + row, ms)
    tl.store(row_ptr + MAX_T * B + row, mt)
    tl.store(row_ptr + RCP_S * B + row, rcp_s)
    tl.store(row_ptr + RCP_T * B + row, rcp_t)
    tl.store(row_ptr + INV_S * B + row, inv_s)
    tl.store(row_ptr + INV_T * B + row, inv_t)
    if STANDARDIZE:
        tl.store(row_ptr + MEAN_S * B + row, mean_s)
        tl.store(row_ptr + MEAN_T * B + row, mean_t)
        tl.store(row_ptr + STD_S * B + row, std_s)
        tl.store(row_ptr + STD_T * B + row, std_t)
    tl.store(row_ptr + P_ROW * B + row, p)
    tl.store(row_ptr + INA_ROW * B + row, ina)
    tl.store(row_ptr + INB_ROW * B + row, inb)
    tl.store(row_ptr + KS_ROW * B + row, k_s)
    tl.store(row_ptr + KT_ROW * B + row, k_t)


@triton.jit
def _dist_col_stats_kernel(
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
    BLOCK_B: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Per column (over the batch): means of y_s, y_t, the column Pearson and its gradient pieces."""
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
        max_s = tl.load(row_ptr + MAX_S * B + rows, mask=rmask, other=0.0)
        max_t = tl.load(row_ptr + MAX_T * B + rows, mask=rmask, other=0.0)
        rcp_s = tl.load(row_ptr + RCP_S * B + rows, mask=rmask, other=0.0)
        rcp_t = tl.load(row_ptr + RCP_T * B + rows, mask=rmask, other=0.0)
        inv_s = tl.load(row_ptr + INV_S * B + rows, mask=rmask, other=0.0)
        inv_t = tl.load(row_ptr + INV_T * B + rows, mask=rmask, other=0.0)
        mean_s = 0.0
        mean_t = 0.0
        if STANDARDIZE:
            mean_s = tl.load(row_ptr + MEAN_S * B + rows, mask=rmask, other=0.0)[:, None]
            mean_t = tl.load(row_ptr + MEAN_T * B + rows, mask=rmask, other=0.0)[:, None]
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
    tl.store(col_ptr + ABAR * C + cols, mean_a, mask=cmask)
    tl.store(col_ptr + BBAR * C + cols, mean_b, mask=cmask)
    tl.store(col_ptr + P_COL * C + cols, p, mask=cmask)
    tl.store(col_ptr + INA_COL * C + cols, ina, mask=cmask)
    tl.store(col_ptr + INB_COL * C + cols, inb, mask=cmask)
    tl.store(col_ptr + KS_COL * C + cols, k_s, mask=cmask)
    tl.store(col_ptr + KT_COL * C + cols, k_t, mask=cmask)


@triton.jit
def _dy(
    col_ptr,
    C,
    offs,
    mask,
    ys,
    yt,
    inv_c,
    p_r,
    ina_r,
    inb_r,
    ks_r,
    kt_r,
    GRAD_S: tl.constexpr,
    GRAD_T: tl.constexpr,
):
    """dL/dy_s and dL/dy_t of one piece of a row: row term + column term, each k (b^ - p a^)."""
    abar = tl.load(col_ptr + ABAR * C + offs, mask=mask, other=0.0)
    bbar = tl.load(col_ptr + BBAR * C + offs, mask=mask, other=0.0)
    p_c = tl.load(col_ptr + P_COL * C + offs, mask=mask, other=0.0)
    ina_c = tl.load(col_ptr + INA_COL * C + offs, mask=mask, other=0.0)
    inb_c = tl.load(col_ptr + INB_COL * C + offs, mask=mask, other=0.0)
    a_row = (ys - inv_c) * ina_r
    b_row = (yt - inv_c) * inb_r
    a_col = (ys - abar) * ina_c
    b_col = (yt - bbar) * inb_c
    gs = tl.zeros_like(ys)
    gt = tl.zeros_like(yt)
    if GRAD_S:
        ks_c = tl.load(col_ptr + KS_COL * C + offs, mask=mask, other=0.0)
        gs = ks_r * (b_row - p_r * a_row) + ks_c * (b_col - p_c * a_col)
    if GRAD_T:
        kt_c = tl.load(col_ptr + KT_COL * C + offs, mask=mask, other=0.0)
        gt = kt_r * (a_row - p_r * b_row) + kt_c * (a_col - p_c * b_col)
    return gs, gt


@triton.jit
def _tile_backward(g, y, x, mask, mean, std, inv_temp, C, std_eps, STANDARDIZE: tl.constexpr):
    """dL/dx of one whole row held in registers: softmax backward, then the z-score backward."""
    sigma = tl.sum(g * y, axis=0)
    dz = y * (g - sigma) * inv_temp
    if STANDARDIZE:
        centred = tl.where(mask, x - mean, 0.0)
        dz = standardize_grad(dz, centred, tl.sum(dz, axis=0), tl.sum(dz * centred, axis=0), C, std, std_eps)
    return dz


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
def _dist_grad_kernel(
    s_ptr,
    t_ptr,
    row_ptr,
    col_ptr,
    gs_ptr,
    gt_ptr,
    B,
    C,
    stride_sb,
    stride_sc,
    stride_tb,
    stride_tc,
    inv_temp,
    std_eps,
    STANDARDIZE: tl.constexpr,
    SINGLE_TILE: tl.constexpr,
    BLOCK: tl.constexpr,
    GRAD_S: tl.constexpr,
    GRAD_T: tl.constexpr,
):
    """Per row: dL/d(student) and dL/d(teacher) (as asked) into contiguous buffers of the input dtype."""
    row = tl.program_id(0)
    s_base = s_ptr + row.to(tl.int64) * stride_sb
    t_base = t_ptr + row.to(tl.int64) * stride_tb
    gs_base = gs_ptr + row.to(tl.int64) * C
    gt_base = gt_ptr + row.to(tl.int64) * C
    inv_c = 1.0 / C
    max_s = tl.load(row_ptr + MAX_S * B + row)
    max_t = tl.load(row_ptr + MAX_T * B + row)
    rcp_s = tl.load(row_ptr + RCP_S * B + row)
    rcp_t = tl.load(row_ptr + RCP_T * B + row)
    inv_s = tl.load(row_ptr + INV_S * B + row)
    inv_t = tl.load(row_ptr + INV_T * B + row)
    p_r = tl.load(row_ptr + P_ROW * B + row)
    ina_r = tl.load(row_ptr + INA_ROW * B + row)
    inb_r = tl.load(row_ptr + INB_ROW * B + row)
    ks_r = tl.load(row_ptr + KS_ROW * B + row)
    kt_r = tl.load(row_ptr + KT_ROW * B + row)
    mean_s = 0.0
    mean_t = 0.0
    std_s = 0.0
    std_t = 0.0
    if STANDARDIZE:
        mean_s = tl.load(row_ptr + MEAN_S * B + row)
        mean_t = tl.load(row_ptr + MEAN_T * B + row)
        std_s = tl.load(row_ptr + STD_S * B + row)
        std_t = tl.load(row_ptr + STD_T * B + row)
    if SINGLE_TILE:
        offs = tl.arange(0, BLOCK)
        mask = offs < C
        xs = load_f32(s_base, offs, stride_sc, mask)
        xt = load_f32(t_base, offs, stride_tc, mask)
        ys = _probs(xs, mean_s, inv_s, max_s, rcp_s, mask, STANDARDIZE)
        yt = _probs(xt, mean_t, inv_t, max_t, rcp_t, mask, STANDARDIZE)
        gs, gt = _dy(col_ptr, C, offs, mask, ys, yt, inv_c, p_r, ina_r, inb_r, ks_r, kt_r, GRAD_S, GRAD_T)
        if GRAD_S:
            dxs = _tile_backward(gs, ys, xs, mask, mean_s, std_s, inv_temp, C, std_eps, STANDARDIZE)
            tl.store(gs_base + offs, dxs.to(gs_ptr.dtype.element_ty), mask=mask)
        if GRAD_T:
            dxt = _tile_backward(gt, yt, xt, mask, mean_t, std_t, inv_temp, C, std_eps, STANDARDIZE)
            tl.store(gt_base + offs, dxt.to(gt_ptr.dtype.element_ty), mask=mask)
    else:
        # Pass 1: sigma = sum_c g_c y_c per tensor; with the z-score also the y-weighted covariance of g
        # and the centred logits, which is sum_c dL/dw_c (x_c - mean) without a cancelling difference.
        sig_s = 0.0
        sig_t = 0.0
        w_s = 0.0
        mg_s = 0.0
        mx_s = 0.0
        cov_s = 0.0
        w_t = 0.0
        mg_t = 0.0
        mx_t = 0.0
        cov_t = 0.0
        for start in range(0, C, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < C
            xs = load_f32(s_base, offs, stride_sc, mask)
            xt = load_f32(t_base, offs, stride_tc, mask)
            ys = _probs(xs, mean_s, inv_s, max_s, rcp_s, mask, STANDARDIZE)
            yt = _probs(xt, mean_t, inv_t, max_t, rcp_t, mask, STANDARDIZE)
            gs, gt = _dy(col_ptr, C, offs, mask, ys, yt, inv_c, p_r, ina_r, inb_r, ks_r, kt_r, GRAD_S, GRAD_T)
            if GRAD_S:
                if STANDARDIZE:
                    xcs = tl.where(mask, xs - mean_s, 0.0)
                    w_s, mg_s, mx_s, cov_s = _cov_merge(w_s, mg_s, mx_s, cov_s, ys, gs, xcs)
                else:
                    sig_s += tl.sum(gs * ys, axis=0)
            if GRAD_T:
                if STANDARDIZE:
                    xct = tl.where(mask, xt - mean_t, 0.0)
                    w_t, mg_t, mx_t, cov_t = _cov_merge(w_t, mg_t, mx_t, cov_t, yt, gt, xct)
                else:
                    sig_t += tl.sum(gt * yt, axis=0)
        # sum_c y_c (g_c - sigma) = sigma (1 - W) and sum_c y_c (g_c - sigma) xc_c = cov + W (1 - W) mg mx,
        # with W = sum_c y_c (1 up to rounding) and sigma = W mg.
        gsum_s = 0.0
        gcen_s = 0.0
        gsum_t = 0.0
        gcen_t = 0.0
        if STANDARDIZE:
            sig_s = w_s * mg_s
            sig_t = w_t * mg_t
            gsum_s = sig_s * (1.0 - w_s) * inv_temp
            gsum_t = sig_t * (1.0 - w_t) * inv_temp
            gcen_s = (cov_s + w_s * (1.0 - w_s) * mg_s * mx_s) * inv_temp
            gcen_t = (cov_t + w_t * (1.0 - w_t) * mg_t * mx_t) * inv_temp
        # Pass 2: recompute g and write the gradients.
        for start in range(0, C, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < C
            xs = load_f32(s_base, offs, stride_sc, mask)
            xt = load_f32(t_base, offs, stride_tc, mask)
            ys = _probs(xs, mean_s, inv_s, max_s, rcp_s, mask, STANDARDIZE)
            yt = _probs(xt, mean_t, inv_t, max_t, rcp_t, mask, STANDARDIZE)
            gs, gt = _dy(col_ptr, C, offs, mask, ys, yt, inv_c, p_r, ina_r, inb_r, ks_r, kt_r, GRAD_S, GRAD_T)
            if GRAD_S:
                dxs = ys * (gs - sig_s) * inv_temp
                if STANDARDIZE:
                    xcs = tl.where(mask, xs - mean_s, 0.0)
                    dxs = standardize_grad(dxs, xcs, gsum_s, gcen_s, C, std_s, std_eps)
                tl.store(gs_base + offs.to(tl.int64), dxs.to(gs_ptr.dtype.element_ty), mask=mask)
            if GRAD_T:
                dxt = yt * (gt - sig_t) * inv_temp
                if STANDARDIZE:
                    xct = tl.where(mask, xt - mean_t, 0.0)
                    dxt = standardize_grad(dxt, xct, gsum_t, gcen_t, C, std_t, std_eps)
                tl.store(gt_base + offs.to(tl.int64), dxt.to(gt_ptr.dtype.element_ty), mask=mask)


def _column_tiles(batch: int, num_classes: int) -> tuple[int, int]:
    """(BLOCK_B, BLOCK_C) of the column kernel: COL_TILE elements per tile, and 16 to 64 columns per
    program when the batch is large (enough programs to fill a GPU at ImageNet-sized C); small batches
    take wider column blocks instead, so tiny-B calls launch few programs."""
    block_c = min(max(16, triton.next_power_of_2(triton.cdiv(num_classes, 128))), 64)
    block_b = min(triton.next_power_of_2(batch), COL_TILE // block_c)
    block_c = min(max(16, triton.next_power_of_2(num_classes)), COL_TILE // block_b)
    return block_b, block_c


def _dist_forward(
    student: torch.Tensor,
    teacher: torch.Tensor,
    beta: float,
    gamma: float,
    temperature: float,
    standardize: bool,
    eps: float,
    grad_student: bool,
    grad_teacher: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The three launches: loss (0-dim fp32) and the gradient buffers asked for (else None)."""
    batch, num_classes = student.shape
    device = student.device
    config = launch_config(num_classes)
    rows = torch.empty((ROW_FIELDS, batch), dtype=torch.float32, device=device)
    cols = torch.empty((COL_FIELDS, num_classes), dtype=torch.float32, device=device)
    inv_temp = 1.0 / temperature
    t2 = temperature * temperature
    k_row = t2 * beta / batch
    # A one-row batch has a zero centring projection over the batch: no gradient from the intra term.
    k_col = t2 * gamma / num_classes if batch > 1 else 0.0
    strides = (*student.stride(), *teacher.stride())
    _dist_row_stats_kernel[(batch,)](
        student,
        teacher,
        rows,
        batch,
        num_classes,
        *strides,
        inv_temp,
        STANDARDIZE_EPS,
        eps,
        k_row,
        STANDARDIZE=standardize,
        SINGLE_TILE=config.single_tile,
        BLOCK=config.block,
        num_warps=config.num_warps,
    )
    block_b, block_c = _column_tiles(batch, num_classes)
    _dist_col_stats_kernel[(triton.cdiv(num_classes, block_c),)](
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
        BLOCK_B=block_b,
        BLOCK_C=block_c,
        num_warps=COL_WARPS,
    )
    grad_s = torch.empty((batch, num_classes), dtype=student.dtype, device=device) if grad_student else None
    grad_t = torch.empty((batch, num_classes), dtype=teacher.dtype, device=device) if grad_teacher else None
    if grad_student or grad_teacher:
        _dist_grad_kernel[(batch,)](
            student,
            teacher,
            rows,
            cols,
            grad_s if grad_s is not None else grad_t,
            grad_t if grad_t is not None else grad_s,
            batch,
            num_classes,
            *strides,
            inv_temp,
            STANDARDIZE_EPS,
            STANDARDIZE=standardize,
            SINGLE_TILE=config.single_tile,
            BLOCK=config.block,
            GRAD_S=grad_student,
            GRAD_T=grad_teacher,
            num_warps=config.num_warps,
        )
    inter = 1.0 - rows[P_ROW.value].mean()
    intra = 1.0 - cols[P_COL.value].mean()
    loss = t2 * (beta * inter + gamma * intra)
    return loss, grad_s, grad_t


class DISTLossFunction(torch.autograd.Function):
    """Fused DIST: forward computes the loss and writes the gradients; backward only scales them."""

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
    ) -> torch.Tensor:
        loss, grad_s, grad_t = _dist_forward(
            student,
            teacher,
            beta,
            gamma,
            temperature,
            standardize,
            eps,
            ctx.needs_input_grad[0],
            ctx.needs_input_grad[1],
        )
        ctx.save_for_backward(grad_s, grad_t)
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return fused_backward(ctx.saved_tensors, grad_output, non_tensor_args=5)


def dist_loss_triton(
    student: torch.Tensor,
    teacher: torch.Tensor,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
    standardize: bool = False,
    eps: float = 1e-8,
) -> torch.Tensor:
    """DIST through the fused kernels (arguments already validated); no gradient work when none is needed."""
    beta, gamma, temperature, eps = float(beta), float(gamma), float(temperature), float(eps)
    if torch.is_grad_enabled() and (student.requires_grad or teacher.requires_grad):
        return DISTLossFunction.apply(student, teacher, beta, gamma, temperature, bool(standardize), eps)
    loss, _, _ = _dist_forward(
        student, teacher, beta, gamma, temperature, bool(standardize), eps, False, False
    )
    return loss
