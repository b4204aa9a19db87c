"""NumPy forms of CPU kernels: what a step's Python function (runtime/serial.py) calls instead of
them, computing the same floats.

- `python_form`: for kernels NumPy runs as fast (the copies, cpu.copy_flat's `_assign`; the GEMMs,
  which call the same compiled sgemm): always.
- `numpy_form`: for im2col, col2im, max pooling and its gradient: while the step compiles, until
  the compiled kernel is in the process or in Numba's cache (serial.NumPyUntilCompiled), so that a
  fresh install's first step does not wait for Numba to compile them (im2col alone is half a
  second). They are 2x (im2col, col2im) to 20-80x (pooling) slower than the kernels.

Each writes the bits its kernel writes (tests/test_kernels.py runs both), NaN payloads aside: where
two NaNs meet in a sum, which one survives is the compiler's choice. Copies and zeros (im2col),
maxima taken in the kernel's order with its rule for NaN (max pooling), sums in the kernel's order
(col2im, the pooling gradient), the same sgemm call (the GEMMs). A kernel whose arithmetic NumPy
would round differently (exp, log, sums in another order) has none. The forms compute with NumPy's
floating-point warnings off, as the kernels run."""

from __future__ import annotations

import functools

import numpy as np

from .blas import gemm


def matmul(a, b, out, trans_a, trans_b):
    """cpu.matmul: the same compiled gemm, called from Python."""
    gemm(a, b, out, trans_a, trans_b, 0.0)


def batch_matmul(a, b, out, trans_a, trans_b):
    """cpu.batch_matmul: the same gemm for each leading index."""
    for i in range(out.shape[0]):
        gemm(a[i], b[i], out[i], trans_a, trans_b, 0.0)


def _quiet(form):
    """`form` with NumPy's floating-point warnings off: an inf or NaN gradient raises nothing in
    the kernels either."""

    @functools.wraps(form)
    def quiet(*args):
        with np.errstate(all="ignore"):
            form(*args)

    return quiet


@_quiet
def im2col_rows(x, cols, b0, b1, kh, kw, sh, sw, dh, dw, pt, pl):
    """cpu._im2col: cols[b, oh, ow, (i*kw + j)*C + c] = x[b, oh*sh - pt + i*dh, ow*sw - pl + j*dw, c]
    for b in [b0, b1), 0 outside x: one strided copy of a zero-padded x per kernel offset (i, j)."""
    x, cols = x[b0:b1], cols[b0:b1]
    if cols.size == 0:
        return
    n_c, (oh, ow) = x.shape[3], cols.shape[1:3]
    padded = _padded(x, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, 0)
    for i in range(kh):
        for j in range(kw):
            k = (i * kw + j) * n_c
            cols[:, :, :, k : k + n_c] = _windows(padded, i * dh, j * dw, oh, ow, sh, sw)


@_quiet
def col2im_rows(cols, x, b0, b1, kh, kw, sh, sw, dh, dw, pt, pl):
    """cpu._col2im, im2col's adjoint: x[b, r, s, c] = the sum of the patch entries that read it, for
    b in [b0, b1). The kernel adds an element's entries by output row, then kernel column: here
    by kernel row from the last (the later output rows), then kernel column, the same order."""
    cols, n_c = cols[b0:b1], x.shape[3]
    if cols.size == 0:
        x[b0:b1] = 0
        return
    oh, ow = cols.shape[1:3]
    sums = np.zeros(_padded_shape(x[b0:b1].shape, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl), x.dtype)
    for i in reversed(range(kh)):
        for j in range(kw):
            k = (i * kw + j) * n_c
            _windows(sums, i * dh, j * dw, oh, ow, sh, sw)[...] += cols[:, :, :, k : k + n_c]
    x[b0:b1] = sums[:, pt : pt + x.shape[1], pl : pl + x.shape[2]]


@_quiet
def pool2d_max_rows(x, y, b0, b1, ph, pw, sh, sw, pt, pl):
    """cpu._pool2d_max: each window's maximum for b in [b0, b1), over its rows and columns inside
    x. As the kernel: a window starts from its first element and takes a later one only when it
    is greater (Numba's max(a, b)), so a NaN is kept or passed over where the kernel's is."""
    x, y = x[b0:b1], y[b0:b1]
    if y.size == 0:
        return
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


@_quiet
def pool2d_grad_max_rows(g, x, y, gx, left, acc, b0, b1, ph, pw, sh, sw, pt, pl, relu, sums):
    """cpu._pool2d_grad_max for b in [b0, b1): each window's g (none where `relu` and its maximum is
    not above 0) to the first of its elements equal to its maximum in the kernel's order (rows,
    then columns), added into gx window after window (the kernel's order where windows overlap);
    with `sums`, what each window gave added into acc in window order (np.add.accumulate: in
    sequence); `left` ends as the kernel leaves it (what the last window did not give)."""
    g, x, y = g[b0:b1], x[b0:b1], y[b0:b1]
    if y.size == 0:
        gx[b0:b1] = 0
        return
    oh, ow = y.shape[1:3]
    give = np.where(y > 0, g, np.zeros_like(g)) if relu else g
    padded = _padded(x, oh, ow, ph, pw, sh, sw, 1, 1, pt, pl, np.nan)  # NaN equals no maximum
    none = ph * pw
    first = np.full(y.shape, none, np.int32)  # each window's offset i*pw + j that gets its g
    for i in range(ph):
        for j in range(pw):
            first[(_windows(padded, i, j, oh, ow, sh, sw) == y) & (first == none)] = i * pw + j
    del padded
    zero = gx.dtype.type(0)
    added = np.zeros(_padded_shape(x.shape, oh, ow, ph, pw, sh, sw, 1, 1, pt, pl), gx.dtype)
    for i in reversed(range(ph)):  # an element's windows by row (the later kernel row first), then column
        for j in reversed(range(pw)):
            _windows(added, i, j, oh, ow, sh, sw)[...] += np.where(first == i * pw + j, give, zero)
    gx[b0:b1] = added[:, pt : pt + x.shape[1], pl : pl + x.shape[2]]
    rest = np.where(first == none, give, zero)  # what each window did not give
    left[:] = rest[-1, -1, -1]
    if sums:
        terms = (give - rest).reshape(-1, acc.shape[0])
        acc[:] = np.add.accumulate(np.concatenate([acc[None], terms]), axis=0)[-1]


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
    """padded[:, r + oh'*sh, s + ow'*sw] for every output position (oh', ow') (oh, ow >= 1): a view."""
    return padded[:, r : r + (oh - 1) * sh + 1 : sh, s : s + (ow - 1) * sw + 1 : sw]
