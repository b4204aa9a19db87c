"""NumPy forms of the CPU kernels that only move data or only call BLAS: what a step's Python
function (runtime/serial.py) calls for them while the step compiles, so that a fresh install's
first step does not wait for Numba to compile them (im2col alone is half a second).

Each writes the floats its kernel writes, bit for bit (tests/test_kernels.py runs both): copies
and zeros (im2col), maxima taken in the kernel's order with its rule for NaN (max pooling), the
same compiled sgemm call (matmul). Kernels with arithmetic whose rounding depends on how it is
written (sums, exp, log) have none: NumPy would round differently."""

from __future__ import annotations

import numpy as np

from .blas import gemm


def matmul(a, b, out, trans_a, trans_b):
    """cpu.matmul: the same compiled gemm, called from Python."""
    gemm(a, b, out, trans_a, trans_b, 0.0)


def batch_matmul(a, b, out, trans_a, trans_b):
    """cpu.batch_matmul: the same gemm for each leading index."""
    for i in range(out.shape[0]):
        gemm(a[i], b[i], out[i], trans_a, trans_b, 0.0)


def im2col_rows(x, cols, b0, b1, kh, kw, sh, sw, dh, dw, pt, pl):
    """cpu._im2col: cols[b, oh, ow, (i*kw + j)*C + c] = x[b, oh*sh - pt + i*dh, ow*sw - pl + j*dw, c]
    for b in [b0, b1), 0 outside x: one strided copy of a zero-padded x per kernel offset (i, j)."""
    x, cols = x[b0:b1], cols[b0:b1]
    n_c, (oh, ow) = x.shape[3], cols.shape[1:3]
    padded = _padded(x, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, 0)
    for i in range(kh):
        for j in range(kw):
            k = (i * kw + j) * n_c
            cols[:, :, :, k : k + n_c] = _windows(padded, i * dh, j * dw, oh, ow, sh, sw)


def col2im_rows(cols, x, b0, b1, kh, kw, sh, sw, dh, dw, pt, pl):
    """cpu._col2im, im2col's adjoint: x[b, r, s, c] = the sum of the patch entries that read it, for
    b in [b0, b1). The kernel adds an element's entries by output row, then kernel column: here
    by kernel row from the last (the later output rows), then kernel column, the same order."""
    cols, n_c = cols[b0:b1], x.shape[3]
    if cols.size == 0:
        x[b0:b1] = 0
        return
    oh, ow = cols.shape[1:3]
    padded = np.zeros(_padded_shape(x[b0:b1].shape, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl), x.dtype)
    for i in reversed(range(kh)):
        for j in range(kw):
            k = (i * kw + j) * n_c
            _windows(padded, i * dh, j * dw, oh, ow, sh, sw)[...] += cols[:, :, :, k : k + n_c]
    x[b0:b1] = padded[:, pt : pt + x.shape[1], pl : pl + x.shape[2]]


def pool2d_max_rows(x, y, b0, b1, ph, pw, sh, sw, pt, pl):
    """cpu._pool2d_max: each window's maximum for b in [b0, b1), over its rows and columns inside
    x. As the kernel: a window starts from its first element and takes a later one only when it
    is greater (Numba's max(a, b)), so a NaN is kept or passed over where the kernel's is."""
    x, y = x[b0:b1], y[b0:b1]
    oh, ow = y.shape[1:3]
    first_row = np.maximum(np.arange(oh) * sh - pt, 0)
    first_col = np.maximum(np.arange(ow) * sw - pl, 0)
    top = x[:, first_row][:, :, first_col]  # a copy
    padded = _padded(x, oh, ow, ph, pw, sh, sw, 1, 1, pt, pl, -np.inf)  # -inf is never greater
    for i in range(ph):
        for j in range(pw):
            value = _windows(padded, i, j, oh, ow, sh, sw)
            np.copyto(top, value, where=value > top)
    y[...] = top


def _padded(x, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, fill):
    """x inside a border of `fill`: pt rows above, pl columns left, and as many below and right as
    the last window reaches past x."""
    out = np.full(_padded_shape(x.shape, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl), fill, x.dtype)
    out[:, pt : pt + x.shape[1], pl : pl + x.shape[2]] = x
    return out


def _padded_shape(shape, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl):
    n, h, w, n_c = shape
    return n, max(pt + h, (oh - 1) * sh + (kh - 1) * dh + 1), max(pl + w, (ow - 1) * sw + (kw - 1) * dw + 1), n_c


def _windows(padded, r, s, oh, ow, sh, sw):
    """padded[:, r + oh'*sh, s + ow'*sw] for every output position (oh', ow'): a view."""
    return padded[:, r : r + (oh - 1) * sh + 1 : sh, s : s + (ow - 1) * sw + 1 : sw] if oh and ow else padded[:, :0, :0]


def pool2d_grad_max_rows(g, x, y, gx, left, acc, b0, b1, ph, pw, sh, sw, pt, pl, relu, sums):
    """cpu._pool2d_grad_max for b in [b0, b1): each window's g (none where `relu` and its maximum
    is not above 0) to the first of its elements equal to its maximum, in the kernel's window
    order (rows, then columns), added into gx by window (the kernel's order where windows
    overlap); with `sums`, what each window gave added into acc window after window (a
    cumulative sum: sequential by definition); `left` ends as the kernel leaves it."""
    g, x, y = g[b0:b1], x[b0:b1], y[b0:b1]
    if y.size == 0:
        gx[b0:b1] = 0
        return
    oh, ow = y.shape[1:3]
    give = g if not relu else np.where(y > 0, g, np.zeros_like(g))
    padded = _padded(x, oh, ow, ph, pw, sh, sw, 1, 1, pt, pl, np.nan)  # NaN equals no maximum
    rest, given = give.copy(), {}
    for i in range(ph):
        for j in range(pw):
            hit = _windows(padded, i, j, oh, ow, sh, sw) == y
            given[i, j] = np.where(hit, rest, 0).astype(gx.dtype)
            rest[hit] = 0
    sums_of = np.zeros(padded.shape, gx.dtype)
    for i in reversed(range(ph)):  # for one element: windows by row (the later kernel row first), then column
        for j in reversed(range(pw)):
            _windows(sums_of, i, j, oh, ow, sh, sw)[...] += given[i, j]
    gx[b0:b1] = sums_of[:, pt : pt + x.shape[1], pl : pl + x.shape[2]]
    left[:] = rest[-1, -1, -1]
    if sums:
        terms = (give - rest).reshape(-1, acc.shape[0])
        acc[:] = np.cumsum(np.concatenate([acc[None], terms]), axis=0)[-1]
