"""The CPU's kernels that generated steps call (`K.` in a step): what differs from CUDA's
schedule (GEMMs through BLAS, images, pooling, reductions, lookups, the GEMMs split in row parts)
and thin loops over rows of the row maths in maths.py. The element maths, the row maths and the
optimizers' updates are maths.py's and updates.py's, shared with CUDA.
Rows are the leading dimensions flattened; the last axis is the class/feature axis.
All are error_model="numpy" (no zero-division checks, so loops vectorise) and cached. Rows are
copied by loops, not `out[i] = x[j]`: Numba's array assignment brings in its shape-mismatch
message's string formatting, a second of compiling on a fresh install's first step."""

from __future__ import annotations


import numpy as np
from numba import prange
from numba.core import types
from numba.extending import overload

from . import maths as M
from . import numpy_forms as F
from . import rnn_rows as R
from .blas import gemm
from .by_type import kernel_jit

jit = kernel_jit(cache=True, error_model="numpy", nogil=True)
# the recurrent loops, whose cell and activation codes stay constants (by_type.py)
rnn_jit = kernel_jit(keep=("cell", "act", "ract"), cache=True, error_model="numpy", nogil=True)
# kernels that run in `parts` (from the runtime; 1: on the calling thread) over Numba's threads
pjit = kernel_jit(cache=True, error_model="numpy", nogil=True, parallel=True)


def driver(func, compile_=pjit):
    """A kernel (parallel: pjit) that only splits its work: every loop over elements is in a
    kernel it calls. A step's Python function (runtime/serial.py) runs it as Python, calling those
    compiled kernels, instead of compiling a serial copy of it: a copy recompiles everything it
    calls into one module, most of a CNN's first step on an empty cache. Its helpers of scalars
    and views (PYTHON_HELPERS) then run as Python too."""
    kernel = compile_(func)
    kernel.is_driver = True
    return kernel


def rnn_driver(func):
    """A recurrent time loop (rnn_jit) that is a driver: every loop over samples or units is in a
    kernel it calls, so that as Python it compiles only the kernels of its cell (a few seconds
    instead of fifteen for an LSTM)."""
    return driver(func, rnn_jit)


# kernels of scalars and views whose results decide a driver's control flow, and the functions
# that only pick the kernel to call by its constants: a driver run as Python calls them as Python
SCALAR_HELPERS = ("part", "_take", "_any_live", "_defaults")
PICKERS = ("_step_rows", "_grad_rows", "_v1_gates", "_v1_reset", "_pool2d", "_pool2d_grad")
PYTHON_HELPERS = SCALAR_HELPERS + PICKERS


@jit
def part(n, t, parts):
    """Rows [start, stop) of n that part t of `parts` owns (the same cut everywhere)."""
    return n * t // parts, n * (t + 1) // parts


@jit
def matmul(a, b, out, trans_a, trans_b):
    """out = op(a) @ op(b) (op: transposed when trans_*) through blas.gemm, whether a compiled
    step calls it or its Python twin (runtime/background.py): the same sgemm, the same numbers."""
    gemm(a, b, out, trans_a, trans_b, 0.0)


@jit
def batch_matmul(a, b, out, trans_a, trans_b):
    """out[i] = op(a[i]) @ op(b[i]) for each leading index i of the 3-D views (attention's heads
    times batch): one sgemm per matrix, on the blocks in place."""
    for i in range(out.shape[0]):
        gemm(a[i], b[i], out[i], trans_a, trans_b, 0.0)


# What a step's Python function calls instead (numpy_forms.py): the same gemm, called from Python
matmul.python_form, batch_matmul.python_form = F.matmul, F.batch_matmul


# ---------------------------------------------------------------- rows: softmax and losses
# The row maths is maths.py's, shared with CUDA; these loops only walk the rows.


@jit
def softmax_rows(x, out):
    for i in range(x.shape[0]):
        M.softmax_row(x[i], out[i])


@jit
def softmax_grad_rows(g, y, out):
    for i in range(g.shape[0]):
        M.softmax_grad_row(g[i], y[i], out[i])


@jit
def softmax_ce_rows(z, t, out):
    for i in range(z.shape[0]):
        out[i] = M.softmax_ce_row(z[i], t[i])


@jit
def softmax_ce_grad_rows(z, t, g, out):
    for i in range(z.shape[0]):
        M.softmax_ce_grad_row(z[i], t[i], g[i], out[i])


@jit
def sparse_softmax_ce_rows(z, labels, out):
    for i in range(z.shape[0]):
        out[i] = M.sparse_softmax_ce_row(z[i], labels[i])


@jit
def sparse_softmax_ce_grad_rows(z, labels, g, out):
    for i in range(z.shape[0]):
        M.sparse_softmax_ce_grad_row(z[i], labels[i], g[i], out[i])


@jit
def pick_rows(p, labels, out):
    for i in range(p.shape[0]):
        out[i] = M.pick(p[i], labels[i])


@jit
def unpick_rows(g, labels, out):
    for i in range(out.shape[0]):
        M.unpick_row(g[i], labels[i], out[i])


@jit
def reduce_3d(x, out, mean):
    """out[a, c] = sum (or mean) over b of x[a, b, c]."""
    out[:] = 0
    for a in range(x.shape[0]):
        oa = out[a]  # rows: the inner loop is contiguous and vectorises
        for b in range(x.shape[1]):
            xb = x[a, b]
            for c in range(xb.shape[0]):
                oa[c] += xb[c]
    if mean and x.shape[1] > 0:
        scale = 1 / x.shape[1]
        for a in range(out.shape[0]):
            for c in range(out.shape[1]):
                out[a, c] *= scale


@driver
def column_sum(x, out, partial, mean, parts):
    """out[c] = the sum (or mean) over the rows of x[r, c]. Each of partial's rows (float64, where
    a part's thousands of rows would lose float32 digits) sums its part of x's rows (the parts
    the step was compiled for, whatever threads run them: the same numbers whole or split), then
    the parts are added in order."""
    chunks = partial.shape[0]
    for t in prange(chunks):
        r0, r1 = part(x.shape[0], t, chunks)
        _rows_sum(x, partial[t], r0, r1)
    sum_parts(partial, out, x.shape[0] if mean else 1)


@jit
def column_total(x, out, p, mean):
    """out[c] = the sum (or mean) over the rows of x[r, c], added in p (a float64 row, as each of
    column_sum's parts): column_sum in one part, on this thread."""
    _rows_sum(x, p, 0, x.shape[0])
    sum_parts(p.reshape((1, p.shape[0])), out, x.shape[0] if mean else 1)


@jit
def _rows_sum(x, p, r0, r1):
    p[:] = 0
    for r in range(r0, r1):
        xr = x[r]
        for c in range(xr.shape[0]):
            p[c] += xr[c]


@jit
def sum_parts(partial, out, count):
    """out[c] = sum over t of partial[t, c], divided by count: a column sum's parts, in order
    (column_sum's, and the generated loops' that also write one)."""
    for c in range(out.shape[0]):
        s = partial[0, c]
        for t in range(1, partial.shape[0]):
            s += partial[t, c]
        out[c] = s / count if count > 1 else s


# A step's buffers: views of its flat arrays (arena, params, grads, state, rng), one call each.
# Numba types a call of one of these once per step function, where the slice it replaces, its
# offset arithmetic and the reshape were nine operations to type apiece: half of the type check
# of a step's Python function (runtime/typecheck.py), and of the typing of its compile.


def _view1(a, start, d0):
    return a[start : start + d0].reshape((d0,))


def _view2(a, start, d0, d1):
    return a[start : start + d0 * d1].reshape((d0, d1))


def _view3(a, start, d0, d1, d2):
    return a[start : start + d0 * d1 * d2].reshape((d0, d1, d2))


def _view4(a, start, d0, d1, d2, d3):
    return a[start : start + d0 * d1 * d2 * d3].reshape((d0, d1, d2, d3))


view1, view2, view3, view4 = (jit(f) for f in (_view1, _view2, _view3, _view4))
VIEWS = ("view1", "view2", "view3", "view4")  # what they return, the step reads (kernel_trace.py)
for _kernel, _form in ((view1, _view1), (view2, _view2), (view3, _view3), (view4, _view4)):
    _kernel.python_form = _form  # a Python step slices as NumPy: nothing to call, nothing to compile


@jit
def copy_flat(x, out):
    """out[i] = x[i] over 1-D arrays (a step's outputs into their rows of the stash, a masked
    sample's state carried)."""
    for i in range(out.shape[0]):
        out[i] = x[i]


@jit
def copy_3d(x, out):
    """out[a, b, c] = x[a, b, c] (a concatenation's part, a slice, a repeat: 3-D views)."""
    for a in range(out.shape[0]):
        for b in range(out.shape[1]):
            for c in range(out.shape[2]):
                out[a, b, c] = x[a, b, c]


def _assign(x, out):
    """out[...] = x: copy_flat's and copy_3d's work as NumPy does it, which a step's Python
    function calls instead (runtime/serial.py): nothing to compile on a first step."""
    out[...] = x


copy_flat.python_form = copy_3d.python_form = _assign


@jit
def broadcast_3d(g, out):
    """out[a, b, c] = g[a, c]."""
    for a in range(out.shape[0]):
        for b in range(out.shape[1]):
            for c in range(out.shape[2]):
                out[a, b, c] = g[a, c]


# ---------------------------------------------------------------- images (NHWC) and lookups

# The image kernels below run their samples in `parts` (passes/split.py); each part its own batch rows.


@driver
def im2col(x, cols, kh, kw, sh, sw, dh, dw, pt, pl, parts):
    for t in prange(parts):
        b0, b1 = part(cols.shape[0], t, parts)
        _im2col(x, cols, b0, b1, kh, kw, sh, sw, dh, dw, pt, pl)


@jit
def _im2col(x, cols, b0, b1, kh, kw, sh, sw, dh, dw, pt, pl):
    """cols[b, oh, ow, (i*kw + j)*C + c] = x[b, oh*sh - pt + i*dh, ow*sw - pl + j*dw, c], 0 outside.
    One output row (b, oh) and one input row r at a time, as 2-D views: 4-D indexing per element
    made this 5x slower for one channel."""
    n_c = x.shape[3]
    for b in range(b0, b1):
        for oh in range(cols.shape[1]):
            dst = cols[b, oh]  # OW x (kh*kw*C)
            for i in range(kh):
                r = oh * sh - pt + i * dh
                for j in range(kw):
                    k = (i * kw + j) * n_c
                    if r < 0 or r >= x.shape[1]:
                        dst[:, k : k + n_c] = 0
                        continue
                    src = x[b, r]  # W x C
                    if n_c == 1:  # one channel (a grayscale input): no channel loop
                        for ow in range(dst.shape[0]):
                            s = ow * sw - pl + j * dw
                            dst[ow, k] = src[s, 0] if 0 <= s < src.shape[0] else 0
                        continue
                    for ow in range(dst.shape[0]):
                        s = ow * sw - pl + j * dw
                        if 0 <= s < src.shape[0]:
                            for c in range(n_c):
                                dst[ow, k + c] = src[s, c]
                        else:
                            for c in range(n_c):
                                dst[ow, k + c] = 0


_im2col.numpy_form = F.im2col_rows  # until compiled: NumPy's strided copies, the same floats


@driver
def col2im(cols, x, kh, kw, sh, sw, dh, dw, pt, pl, parts):
    for t in prange(parts):
        b0, b1 = part(cols.shape[0], t, parts)
        _col2im(cols, x, b0, b1, kh, kw, sh, sw, dh, dw, pt, pl)


@jit
def _col2im(cols, x, b0, b1, kh, kw, sh, sw, dh, dw, pt, pl):
    """The adjoint of im2col: x[b, r, s, c] = sum of the patch entries that read it."""
    x[b0:b1] = 0
    n_c = x.shape[3]
    for b in range(b0, b1):
        for oh in range(cols.shape[1]):
            src = cols[b, oh]
            for i in range(kh):
                r = oh * sh - pt + i * dh
                if r < 0 or r >= x.shape[1]:
                    continue
                dst = x[b, r]
                for j in range(kw):
                    k = (i * kw + j) * n_c
                    for ow in range(src.shape[0]):
                        s = ow * sw - pl + j * dw
                        if 0 <= s < dst.shape[0]:
                            if n_c == 1:
                                dst[s, 0] += src[ow, k]
                                continue
                            for c in range(n_c):
                                dst[s, c] += src[ow, k + c]


_col2im.numpy_form = F.col2im_rows  # until compiled: its sums in the kernel's order, the same floats


def _pool_loops_for(is_max):
    """The pooling loops over samples [b0, b1), forward (pool_rows) and backward (pool_grad_rows),
    for max (is_max) or average pooling: `is_max` is a closure's constant, whose branches Numba
    drops before typing, so that a step's Python function, which runs the drivers as Python,
    compiles only its layer's form (as the recurrent cells': _cell_rows_for). The windows' bounds
    are computed in place: a helper function cost each kernel's compile 0.05 s."""

    def pool_rows(x, y, b0, b1, ph, pw, sh, sw, pt, pl):
        """Channels innermost (NHWC), so each window's inner loop runs over contiguous memory."""
        n_c = y.shape[3]
        for b in range(b0, b1):
            for oh in range(y.shape[1]):
                lo = oh * sh - pt  # window oh covers the unpadded rows [r0, r1)
                r0, r1 = max(lo, 0), min(lo + ph, x.shape[1])
                for ow in range(y.shape[2]):
                    lo = ow * sw - pl
                    s0, s1 = max(lo, 0), min(lo + pw, x.shape[2])
                    out, first = y[b, oh, ow], x[b, r0, s0]
                    for c in range(n_c):
                        out[c] = first[c] if is_max else 0
                    for r in range(r0, r1):
                        for s in range(s0, s1):
                            row = x[b, r, s]
                            for c in range(n_c):
                                out[c] = max(out[c], row[c]) if is_max else out[c] + row[c]
                    if not is_max:
                        inv = 1 / ((r1 - r0) * (s1 - s0))
                        for c in range(n_c):
                            out[c] *= inv

    def pool_grad_rows(g, x, y, gx, left, acc, b0, b1, ph, pw, sh, sw, pt, pl, relu, sums):
        """Max: each window's g to its first maximum (as TensorFlow). Avg: spread over the window.
        Channels innermost. `left` holds the g each channel's window has not yet given to a maximum:
        a select instead of a branch per element, so the channel loop vectorises (4x faster).
        relu: x is a ReLU's output, and the ReLU's gradient applies too: nothing where x is 0 (at a
        window's maximum, where its top is 0). sums: acc[c] adds what each window wrote to channel c
        (the caller zeroes it: a part may come in several blocks)."""
        gx[b0:b1] = 0
        n_c = y.shape[3]
        zero = gx.dtype.type(0)
        for b in range(b0, b1):
            for oh in range(y.shape[1]):
                lo = oh * sh - pt  # window oh covers the unpadded rows [r0, r1)
                r0, r1 = max(lo, 0), min(lo + ph, x.shape[1])
                for ow in range(y.shape[2]):
                    lo = ow * sw - pl
                    s0, s1 = max(lo, 0), min(lo + pw, x.shape[2])
                    gy, top = g[b, oh, ow], y[b, oh, ow]
                    share = gx.dtype.type(1 / ((r1 - r0) * (s1 - s0)))
                    if is_max:
                        for c in range(n_c):
                            left[c] = gy[c] if not relu or top[c] > zero else zero
                    for r in range(r0, r1):
                        for s in range(s0, s1):
                            row, grow = x[b, r, s], gx[b, r, s]
                            if is_max:
                                for c in range(n_c):
                                    hit = row[c] == top[c]
                                    rest = left[c]
                                    grow[c] += rest if hit else zero
                                    left[c] = zero if hit else rest
                            else:
                                for c in range(n_c):
                                    v = gy[c] * share if not relu or row[c] > zero else zero
                                    grow[c] += v
                                    if sums:
                                        acc[c] += v
                    if is_max and sums:  # what the window gave: all it had (0 left), or none (its top NaN)
                        for c in range(n_c):
                            acc[c] += (gy[c] if not relu or top[c] > zero else zero) - left[c]

    kernels = []
    for func, name in ((pool_rows, "_pool2d"), (pool_grad_rows, "_pool2d_grad")):
        func.__name__ = func.__qualname__ = f"{name}_{'max' if is_max else 'avg'}"
        kernels.append(jit(func))
    return kernels


_pool2d_max, _pool2d_grad_max = _pool_loops_for(True)
# until compiled: maxima and the sums of the windows' gradients in the kernels' orders, the same floats
_pool2d_max.numpy_form, _pool2d_grad_max.numpy_form = F.pool2d_max_rows, F.pool2d_grad_max_rows
_pool2d_avg, _pool2d_grad_avg = _pool_loops_for(False)


@jit
def _pool2d(x, y, b0, b1, is_max, ph, pw, sh, sw, pt, pl):
    """Pooling over samples [b0, b1): max or average (a driver run as Python calls this as Python:
    PYTHON_HELPERS, and compiles only the form it calls)."""
    if is_max:
        _pool2d_max(x, y, b0, b1, ph, pw, sh, sw, pt, pl)
    else:
        _pool2d_avg(x, y, b0, b1, ph, pw, sh, sw, pt, pl)


@jit
def _pool2d_grad(g, x, y, gx, left, acc, b0, b1, is_max, ph, pw, sh, sw, pt, pl, relu, sums):
    """Pooling's gradient over samples [b0, b1) (as _pool2d)."""
    if is_max:
        _pool2d_grad_max(g, x, y, gx, left, acc, b0, b1, ph, pw, sh, sw, pt, pl, relu, sums)
    else:
        _pool2d_grad_avg(g, x, y, gx, left, acc, b0, b1, ph, pw, sh, sw, pt, pl, relu, sums)


@driver
def pool2d(x, y, is_max, ph, pw, sh, sw, pt, pl, parts):
    for t in prange(parts):
        b0, b1 = part(y.shape[0], t, parts)
        _pool2d(x, y, b0, b1, is_max, ph, pw, sh, sw, pt, pl)


@driver
def pool2d_grad(g, x, y, gx, scratch, bias, is_max, ph, pw, sh, sw, pt, pl, relu, sums):
    """scratch: a row per part, planned in the arena (no allocation in the step): its first C
    columns hold the g each channel of the part's current window has not yet given to a maximum;
    when `sums`, the next C the part's column sums of what it wrote, added in order into `bias`
    (the bias gradient, gx summed over all but the channels): one pass over gx instead of two.
    The parts the step was compiled for, whatever threads run them: the same sums whole or split."""
    chunks, n_c = scratch.shape[0], y.shape[3]
    for t in prange(chunks):
        b0, b1 = part(y.shape[0], t, chunks)
        left, acc = scratch[t, :n_c], scratch[t, n_c : 2 * n_c] if sums else scratch[t, :n_c]
        acc[:] = 0
        _pool2d_grad(g, x, y, gx, left, acc, b0, b1, is_max, ph, pw, sh, sw, pt, pl, relu, sums)
    if sums:
        sum_parts(scratch[:, n_c : 2 * n_c], bias, 1)


# ---------------------------------------------------------------- a convolution a block of samples at a time
# A convolution of few input channels (passes/split.py block_convolutions) is memory-bound: its
# im2col patches, GEMM output, bias + activation and pooling each pass over arrays of several MB.
# Run in turn on a few samples at a time, each kernel reads what the one before wrote while it is
# still in the core's cache. The same kernels on the same rows: the same floats as one at a time.


@jit
def _bias_relu(rows, bias, r0, r1, relu):
    """rows[r] = rows[r] + bias, then ReLU'd when `relu`, for r in r0..r1: the maths of the
    generated GEMM epilogue (E.relu). A loop each, so each vectorises."""
    n = rows.shape[1]
    for r in range(r0, r1):
        row = rows[r]
        if relu:
            for c in range(n):
                row[c] = M.relu(row[c] + bias[c])
        else:
            for c in range(n):
                row[c] = row[c] + bias[c]


@driver
def conv_block(x, cols, patches, w, bias, out, rows, y, kh, kw, sh, sw, dh, dw, pt, pl, relu, pooled, is_max, ph, pw, psh, psw, ppt, ppl, block, parts):  # fmt: skip
    """im2col(x) -> cols, cols @ w + bias -> out (ReLU'd when `relu`), then (when `pooled`)
    pooling of out -> y, `block` samples at a time in each of `parts` (y is unused without
    pooling). patches and rows: cols and out as matrices (a pixel a row), passed in: a reshape
    here cost the kernel's compile 0.1 s each."""
    per = out.shape[1] * out.shape[2]
    for t in prange(parts):
        b0, b1 = part(out.shape[0], t, parts)
        for s0 in range(b0, b1, block):
            s1 = min(s0 + block, b1)
            _im2col(x, cols, s0, s1, kh, kw, sh, sw, dh, dw, pt, pl)
            gemm(patches[s0 * per : s1 * per], w, rows[s0 * per : s1 * per], False, False, 0.0)
            _bias_relu(rows, bias, s0 * per, s1 * per, relu)
            if pooled:
                _pool2d(out, y, s0, s1, is_max, ph, pw, psh, psw, ppt, ppl)


@driver
def pool2d_grad_kernel_grad(g, x, y, gx, rows, scratch, bias, patches, dkernel, partials, is_max, ph, pw, sh, sw, pt, pl, relu, sums, block):  # fmt: skip
    """pool2d_grad (and the bias gradient it sums, when `sums`), then the convolution's kernel
    gradient dkernel = cols^T @ gx, `block` samples at a time: each part adds its blocks' products
    into partials[t] in order, then the parts are added in order. The floats depend on the parts
    the step was compiled for and on `block`, never on the threads that run them (they differ
    from gemm_split_batch's, which multiplies a part's rows at once, by rounding). rows and patches:
    gx and the convolution's im2col patches as matrices (a pixel a row)."""
    chunks, n_c = scratch.shape[0], y.shape[3]
    per = gx.shape[1] * gx.shape[2]
    for t in prange(chunks):
        b0, b1 = part(y.shape[0], t, chunks)
        left, acc = scratch[t, :n_c], scratch[t, n_c : 2 * n_c] if sums else scratch[t, :n_c]
        acc[:] = 0
        partials[t] = 0  # a part with no samples adds nothing
        for s0 in range(b0, b1, block):
            s1 = min(s0 + block, b1)
            _pool2d_grad(g, x, y, gx, left, acc, s0, s1, is_max, ph, pw, sh, sw, pt, pl, relu, sums)
            gemm(patches[s0 * per : s1 * per], rows[s0 * per : s1 * per], partials[t], True, False, 1.0)
    if sums:
        sum_parts(scratch[:, n_c : 2 * n_c], bias, 1)
    sum_parts(partials.reshape((chunks, dkernel.size)), dkernel.reshape(dkernel.size), 1)


@jit
def reduce_max_3d(x, out):
    """out[a, c] = max over b of x[a, b, c]."""
    for a in range(x.shape[0]):
        for c in range(x.shape[2]):
            m = x[a, 0, c]
            for b in range(1, x.shape[1]):
                m = max(m, x[a, b, c])
            out[a, c] = m


@jit
def gather_rows(table, ids, out):
    """out[n] = table[int(ids[n])], a float id truncated toward 0 as Keras casts it (-0.5 reads
    row 0). An id outside the table (or NaN) reads zeros, as TensorFlow's GPU gather does: the
    data checks refuse such ids first, and no id can read out of bounds."""
    for n in range(ids.shape[0]):
        if -1 < ids[n] < table.shape[0]:
            row = table[int(ids[n])]
            for c in range(out.shape[1]):
                out[n, c] = row[c]
        else:
            for c in range(out.shape[1]):
                out[n, c] = 0


@jit
def scatter_add_rows(g, ids, out):
    out[:] = 0
    for n in range(ids.shape[0]):
        if -1 < ids[n] < out.shape[0]:  # as gather_rows: an id outside the table adds nowhere
            row = out[int(ids[n])]
            for c in range(row.shape[0]):  # a loop: see the module's docstring
                row[c] += g[n, c]


@jit
def constrain(w, kind, min_value, max_value, rate):
    """Keras's weight constraint in place (maths.constrained), on the weight viewed as (before,
    over, after): each (before, after) column by its L2 norm over `over` (NonNeg: each weight)."""
    for a in range(w.shape[0]):
        for c in range(w.shape[2]):
            M.constrain_column(w, a, c, kind, min_value, max_value, rate)


@jit
def moving_average(m, x, momentum):
    mu = m.dtype.type(momentum)
    rest = m.dtype.type(1.0 - momentum)
    for i in range(m.shape[0]):
        m[i] = m[i] * mu + x[i] * rest


# ---------------------------------------------------------------- GEMMs split by a weight's rows
# See kgraph/passes/split.py. Each core runs one-thread BLAS on its rows of the weight W (K x N);
# `parts` comes from the runtime: 1 runs the GEMM whole (a step large enough for BLAS's own
# threads), where that computes the same floats (each element's whole sum in one GEMM).


@driver
def gemm_split_k(x, w, out, partials, unused_parts=1):
    """out = x @ w; part t multiplies x[:, rows t] by w[rows t] into out (t = 0) or partials[t-1],
    then each part sums its rows of the partial products. Always the parts the step was compiled
    for, whatever threads run them (one thread: in turn): a whole GEMM adds its products in another
    order, and a seeded run's floats would depend on the thread setting the tuner timed fastest.
    unused_parts: the runtime's parts, which steps generated before 2026-12-07 still pass (a
    trainer written by `kgraph compile -o` then runs on)."""
    parts = partials.shape[0] + 1
    for t in prange(parts):
        k0, k1 = part(w.shape[0], t, parts)
        if t == 0:
            gemm(x[:, k0:k1], w[k0:k1], out, False, False, 0.0)
        else:
            gemm(x[:, k0:k1], w[k0:k1], partials[t - 1], False, False, 0.0)
    for t in prange(parts):
        r0, r1 = part(out.shape[0], t, parts)
        _add_parts(partials, out, r0, r1)


@jit
def _add_parts(partials, out, r0, r1):
    """out[i] += partials[p, i] for each p in order, for rows i in r0..r1."""
    for p in range(partials.shape[0]):
        for i in range(r0, r1):
            for j in range(out.shape[1]):
                out[i, j] += partials[p, i, j]


@driver
def gemm_split_m(a, b, out, trans_b, per, parts):
    """out = a @ op(b) (op: transposed when trans_b) over rows of `per` rows a sample (a
    convolution's pixels, a sequence's steps); part t computes the rows of its samples."""
    if parts == 1:
        gemm(a, b, out, False, trans_b, 0.0)
        return
    for t in prange(parts):
        s0, s1 = part(out.shape[0] // per, t, parts)
        gemm(a[s0 * per : s1 * per], b, out[s0 * per : s1 * per], False, trans_b, 0.0)


@driver
def gemm_split_rows(x, g, out, parts):
    """out = x^T @ g (a weight's gradient); part t computes its rows out[rows t]."""
    if parts == 1:
        gemm(x, g, out, True, False, 0.0)
        return
    for t in prange(parts):
        k0, k1 = part(out.shape[0], t, parts)
        gemm(x[:, k0:k1], g, out[k0:k1], True, False, 0.0)


@driver
def gemm_split_batch(x, g, out, partials):
    """out = x^T @ g (a weight's gradient over many rows a sample: a convolution's pixels); part t
    multiplies its rows into partials[t], then the parts are added in order: the parts the step
    was compiled for, whatever threads run them, so the same numbers whole or split."""
    chunks = partials.shape[0]
    for t in prange(chunks):
        r0, r1 = part(x.shape[0], t, chunks)
        gemm(x[r0:r1], g[r0:r1], partials[t], True, False, 0.0)
    sum_parts(partials.reshape((chunks, out.size)), out.reshape(out.size), 1)


@driver
def gemm_split_cols(g, w, out, parts):
    """out = g @ w^T (an input's gradient); part t computes its columns out[:, rows t of w]."""
    if parts == 1:
        gemm(g, w, out, False, True, 0.0)
        return
    for t in prange(parts):
        k0, k1 = part(w.shape[0], t, parts)
        gemm(g, w[k0:k1], out[:, k0:k1], False, True, 0.0)


# ---------------------------------------------------------------- recurrent layers
# The time loop of a SimpleRNN, LSTM or GRU (ir/ops/recurrent.py says what the operands are): the
# input projection of every step was one GEMM before the loop; here each step runs one GEMM of
# the state by the recurrent kernel, then one fused loop over the samples' rows computing every
# gate (rnn_rows.py, through the cell maths of maths.py). The backward pass walks the steps in
# reverse the same way, and the recurrent kernel's gradient is one GEMM over all steps at the end.
# A step where every sample is masked (bucket padding beyond a batch's longest row) skips its
# GEMMs: its results do not depend on them. Absent optional operands come as empty arrays, their
# flags False. Scratch arrays are slices of the planned workspace `ws`, in the order
# passes/recurrent.py sizes them.

SIMPLE, LSTM, GRU = M.SIMPLE, M.LSTM, M.GRU


@jit
def _take(ws, start, shape):
    """ws[start:start + prod(shape)] shaped as `shape` (2-D or 3-D), and the next start."""
    n = 1
    for d in shape:
        n *= d
    return ws[start : start + n].reshape(shape), start + n


@jit
def _any_live(mask, k, masked):
    """Whether some sample's step k is unmasked."""
    if not masked:
        return True
    for b in range(mask.shape[0]):
        if mask[b, k] != 0:
            return True
    return False


@jit
def _copy(x, out):
    """out[i, j] = x[i, j] (rows by loops: see the module's docstring)."""
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = x[i, j]


@jit
def _defaults(cell, act, ract):
    """Whether the layer has Keras's default activations, which rnn_rows' `_ts` loops fix."""
    return act == R.TANH and (cell == SIMPLE or ract == R.SIGMOID)


@rnn_driver
def rnn_forward(
    xp,
    u,
    rb,
    mask,
    keep,
    h0,
    c0,
    out,
    gates,
    ws,
    cell,
    act,
    ract,
    backwards,
    reset_after,
    has_rb,
    masked,
    dropped,
    initial,
):
    """out[:, t] = the state after step t (LSTM: h then c); gates[:, t] the step's
    pre-activations, kept for the backward pass (gates has one step when nothing is kept).
    ws: h, c, he (the state the recurrent kernel multiplies), rhe (GRU reset_after=False:
    r * he), rec (the recurrent product, [B, G])."""
    nb, nt, ng = xp.shape
    nh = u.shape[0]
    h, s = _take(ws, 0, (nb, nh))
    c, s = _take(ws, s, (nb, nh))
    he, s = _take(ws, s, (nb, nh))
    rhe, s = _take(ws, s, (nb, nh))
    rec, s = _take(ws, s, (nb, ng))
    h[:] = 0
    c[:] = 0
    if initial:
        _copy(h0, h)
        if cell == LSTM:
            _copy(c0, c)
    v1 = cell == GRU and not reset_after
    ts = _defaults(cell, act, ract)
    hin = he if dropped else h  # what the recurrent kernel multiplies
    for t in range(nt):
        k = nt - 1 - t if backwards else t
        st = t if gates.shape[1] == nt else 0
        if not _any_live(mask, k, masked):  # every sample carries its state
            _copy(h, out[:, t, :nh])
            if cell == LSTM:
                _copy(c, out[:, t, nh:])
            continue
        if dropped:
            _keep_rows(h, keep, he)
        if v1:  # z and r first: the candidate's recurrent product reads r * he
            gemm(hin, u[:, : 2 * nh], rec[:, : 2 * nh], False, False, 0.0)
            _v1_gates(xp, rec, gates, hin, rhe, k, st, cell, ract, ts)
            gemm(rhe, u[:, 2 * nh :], rec[:, 2 * nh :], False, False, 0.0)
        else:
            gemm(hin, u, rec, False, False, 0.0)
        _step_rows(xp, rec, rb, gates, h, c, out, mask, k, t, st, cell, act, ract, v1, ts, has_rb, masked)


@jit
def _keep_rows(h, keep, he):
    """he = h * keep (the recurrent dropout's kept state)."""
    for b in range(h.shape[0]):
        for j in range(h.shape[1]):
            he[b, j] = h[b, j] * keep[b, j]


@rnn_jit
def _gru_v1_gates_rows(xp, rec, gates, hin, rhe, k, st, ract, ts):
    for b in range(xp.shape[0]):
        if ts:
            R.gru_v1_gates_row_ts(xp[b, k], rec[b], gates[b, st], hin[b], rhe[b], ract)
        else:
            R.gru_v1_gates_row_any(xp[b, k], rec[b], gates[b, st], hin[b], rhe[b], ract)


def _cell_rows_for(cell, ts):
    """The loops over the samples of one time step of `cell`, forward (step_rows) and backward
    (grad_rows), each sample's row through rnn_rows' `_ts` (Keras's default activations) or
    `_any` loops. `cell` and `ts` are a closure's constants, whose branches Numba drops before
    typing: a kernel for one cell's one form, not every cell's rows in each (the step's Python
    function, which runs rnn_forward and rnn_backward as Python, compiles only its layer's).
    Each gets its own name (`_lstm_step_rows_ts`, ...) before it is compiled: Numba names a
    kernel's cache index after it, and one index shared by the six would tell them apart by a
    hash kgraph's cache check (runtime/background.py) does not read."""

    def step_rows(xp, rec, rb, gates, h, c, out, mask, k, t, st, act, ract, v1, has_rb, masked):
        nh = h.shape[1]
        for b in range(h.shape[0]):
            xb, rr, gb, hb, cb, ob = xp[b, k], rec[b], gates[b, st], h[b], c[b], out[b, t]
            if masked and mask[b, k] == 0:  # the sample carries its state
                copy_flat(hb, ob[:nh])
                if cell == LSTM:
                    copy_flat(cb, ob[nh:])
            elif cell == SIMPLE:
                if ts:
                    R.simple_row_ts(xb, rr, gb, hb, ob, act)
                else:
                    R.simple_row_any(xb, rr, gb, hb, ob, act)
            elif cell == LSTM:
                if ts:
                    R.lstm_row_ts(xb, rr, gb, hb, cb, ob, act, ract)
                else:
                    R.lstm_row_any(xb, rr, gb, hb, cb, ob, act, ract)
            elif v1:
                if ts:
                    R.gru_v1_row_ts(xb, rr, gb, hb, ob, act, ract)
                else:
                    R.gru_v1_row_any(xb, rr, gb, hb, ob, act, ract)
            # has_rb as a constant (rnn_rows' functions compile per constant): a bias read under a
            # per-unit `if` kept the unit loop from vectorising (the GRU's step 5-10% slower)
            elif ts and has_rb:
                R.gru_row_ts(xb, rr, rb, gb, hb, ob, act, ract, True)
            elif ts:
                R.gru_row_ts(xb, rr, rb, gb, hb, ob, act, ract, False)
            elif has_rb:
                R.gru_row_any(xb, rr, rb, gb, hb, ob, act, ract, True)
            else:
                R.gru_row_any(xb, rr, rb, gb, hb, ob, act, ract, False)

    def grad_rows(g, out, prev, mask, keep, gates, dz, dzs, drec, rhes, hes, direct, dh, dc, t, k, act, ract, ra, v1, masked, dropped):  # fmt: skip
        """Step t's gradient for every sample, before the step's recurrent GEMM."""
        for b in range(dh.shape[0]):
            pb = out[b, t - 1] if t > 0 else prev[b]  # the state before the step (LSTM: h then c)
            keepb = keep[b] if dropped else dh[b]  # (not read unless dropped)
            gtb, gb, dzb, dzsb, hesb, dirb, dhb = g[b, t], gates[b, t], dz[b, k], dzs[b], hes[b, k], direct[b], dh[b]
            if masked and mask[b, k] == 0:
                dzb[:] = 0
                dzsb[:] = 0
                if ra:
                    drec[b, k] = 0
                if v1:
                    rhes[b, k] = 0
                R.dead_grad_row(gtb, pb, keepb, hesb, dirb, dhb, dc[b], cell == LSTM, dropped)
            elif cell == SIMPLE:
                if ts:
                    R.simple_grad_row_ts(gtb, pb, keepb, gb, dzb, dzsb, hesb, dirb, dhb, act, dropped)
                else:
                    R.simple_grad_row_any(gtb, pb, keepb, gb, dzb, dzsb, hesb, dirb, dhb, act, dropped)
            elif cell == LSTM:
                ob, dcb = out[b, t], dc[b]
                if ts:
                    R.lstm_grad_row_ts(gtb, pb, keepb, gb, ob, dzb, dzsb, hesb, dirb, dhb, dcb, act, ract, dropped)
                else:
                    R.lstm_grad_row_any(gtb, pb, keepb, gb, ob, dzb, dzsb, hesb, dirb, dhb, dcb, act, ract, dropped)
            elif ra:
                if ts:
                    R.gru_grad_row_ts(gtb, pb, keepb, gb, dzb, dzsb, drec[b, k], hesb, dirb, dhb, act, ract, dropped)
                else:
                    R.gru_grad_row_any(gtb, pb, keepb, gb, dzb, dzsb, drec[b, k], hesb, dirb, dhb, act, ract, dropped)
            elif ts:
                R.gru_v1_grad_row_ts(gtb, pb, keepb, gb, dzb, dzsb, rhes[b, k], hesb, dirb, dhb, act, ract, dropped)
            else:
                R.gru_v1_grad_row_any(gtb, pb, keepb, gb, dzb, dzsb, rhes[b, k], hesb, dirb, dhb, act, ract, dropped)

    kernels = []
    for func, part in ((step_rows, "step"), (grad_rows, "grad")):
        func.__name__ = func.__qualname__ = f"_{CELL_NAMES[cell]}_{part}_rows_{'ts' if ts else 'any'}"
        kernels.append(rnn_jit(func))
    return kernels


CELL_NAMES = {SIMPLE: "simple", LSTM: "lstm", GRU: "gru"}
_simple_step_rows_ts, _simple_grad_rows_ts = _cell_rows_for(SIMPLE, True)
_simple_step_rows_any, _simple_grad_rows_any = _cell_rows_for(SIMPLE, False)
_lstm_step_rows_ts, _lstm_grad_rows_ts = _cell_rows_for(LSTM, True)
_lstm_step_rows_any, _lstm_grad_rows_any = _cell_rows_for(LSTM, False)
_gru_step_rows_ts, _gru_grad_rows_ts = _cell_rows_for(GRU, True)
_gru_step_rows_any, _gru_grad_rows_any = _cell_rows_for(GRU, False)


def _step_rows(xp, rec, rb, gates, h, c, out, mask, k, t, st, cell, act, ract, v1, ts, has_rb, masked):
    """The forward loop over the samples for `cell` and `ts`. A driver run as Python calls this as
    Python (PYTHON_HELPERS); compiled code calls _step_rows_for_cell's form of it."""
    args = (xp, rec, rb, gates, h, c, out, mask, k, t, st, act, ract, v1, has_rb, masked)
    if cell == SIMPLE and ts:
        _simple_step_rows_ts(*args)
    elif cell == SIMPLE:
        _simple_step_rows_any(*args)
    elif cell == LSTM and ts:
        _lstm_step_rows_ts(*args)
    elif cell == LSTM:
        _lstm_step_rows_any(*args)
    elif ts:
        _gru_step_rows_ts(*args)
    else:
        _gru_step_rows_any(*args)


@overload(_step_rows, prefer_literal=True)
def _step_rows_for_cell(xp, rec, rb, gates, h, c, out, mask, k, t, st, cell, act, ract, v1, ts, has_rb, masked):
    """In compiled code: for a constant cell (rnn_jit keeps the time loops' cell constant, as a
    compiled step passes it) a form that calls only that cell's two kernels; Numba does not drop
    a branch on a constant argument, so _step_rows compiled all six (half of an LSTM step's
    compile). For any cell, _step_rows itself."""
    if not isinstance(cell, types.IntegerLiteral):
        return _step_rows
    on_ts, on_any = _cell_kernels(cell.literal_value, "step")

    def step_rows(xp, rec, rb, gates, h, c, out, mask, k, t, st, cell, act, ract, v1, ts, has_rb, masked):
        if ts:
            on_ts(xp, rec, rb, gates, h, c, out, mask, k, t, st, act, ract, v1, has_rb, masked)
        else:
            on_any(xp, rec, rb, gates, h, c, out, mask, k, t, st, act, ract, v1, has_rb, masked)

    return step_rows


def _grad_rows(g, out, prev, mask, keep, gates, dz, dzs, drec, rhes, hes, direct, dh, dc, t, k, cell, act, ract, ra, v1, ts, masked, dropped):  # fmt: skip
    """The backward loop over the samples for `cell` and `ts` (as _step_rows)."""
    args = (g, out, prev, mask, keep, gates, dz, dzs, drec, rhes, hes, direct, dh, dc, t, k, act, ract, ra, v1, masked, dropped)  # fmt: skip
    if cell == SIMPLE and ts:
        _simple_grad_rows_ts(*args)
    elif cell == SIMPLE:
        _simple_grad_rows_any(*args)
    elif cell == LSTM and ts:
        _lstm_grad_rows_ts(*args)
    elif cell == LSTM:
        _lstm_grad_rows_any(*args)
    elif ts:
        _gru_grad_rows_ts(*args)
    else:
        _gru_grad_rows_any(*args)


@overload(_grad_rows, prefer_literal=True)
def _grad_rows_for_cell(g, out, prev, mask, keep, gates, dz, dzs, drec, rhes, hes, direct, dh, dc, t, k, cell, act, ract, ra, v1, ts, masked, dropped):  # fmt: skip
    """_grad_rows in compiled code (as _step_rows_for_cell)."""
    if not isinstance(cell, types.IntegerLiteral):
        return _grad_rows
    on_ts, on_any = _cell_kernels(cell.literal_value, "grad")

    def grad_rows(g, out, prev, mask, keep, gates, dz, dzs, drec, rhes, hes, direct, dh, dc, t, k, cell, act, ract, ra, v1, ts, masked, dropped):  # fmt: skip
        if ts:
            on_ts(g, out, prev, mask, keep, gates, dz, dzs, drec, rhes, hes, direct, dh, dc, t, k, act, ract, ra, v1, masked, dropped)  # fmt: skip
        else:
            on_any(g, out, prev, mask, keep, gates, dz, dzs, drec, rhes, hes, direct, dh, dc, t, k, act, ract, ra, v1, masked, dropped)  # fmt: skip

    return grad_rows


def _v1_gates(xp, rec, gates, hin, rhe, k, st, cell, ract, ts):
    """GRU reset_after=False's gates for every sample (_gru_v1_gates_rows), which rnn_forward
    calls under a test of `cell` that Numba keeps: compiled for another constant cell (an LSTM's),
    _v1_gates_for_cell's empty form, so that its compile leaves the GRU's loop out."""
    _gru_v1_gates_rows(xp, rec, gates, hin, rhe, k, st, ract, ts)


@overload(_v1_gates, prefer_literal=True)
def _v1_gates_for_cell(xp, rec, gates, hin, rhe, k, st, cell, ract, ts):
    if isinstance(cell, types.IntegerLiteral) and cell.literal_value != GRU:
        return lambda xp, rec, gates, hin, rhe, k, st, cell, ract, ts: None
    return _v1_gates


def _v1_reset(acc, gates, hes, dz, dzs, mask, t, k, cell, ract, ts, masked):
    """GRU reset_after=False's d r for every sample (_gru_v1_reset_rows), as _v1_gates."""
    _gru_v1_reset_rows(acc, gates, hes, dz, dzs, mask, t, k, ract, ts, masked)


@overload(_v1_reset, prefer_literal=True)
def _v1_reset_for_cell(acc, gates, hes, dz, dzs, mask, t, k, cell, ract, ts, masked):
    if isinstance(cell, types.IntegerLiteral) and cell.literal_value != GRU:
        return lambda acc, gates, hes, dz, dzs, mask, t, k, cell, ract, ts, masked: None
    return _v1_reset


def _cell_kernels(cell, part):
    """`cell`'s `part` ("step" or "grad") rows kernels: its `_ts` form, its `_any` form."""
    return tuple(globals()[f"_{CELL_NAMES[cell]}_{part}_rows_{form}"] for form in ("ts", "any"))


@rnn_driver
def rnn_backward(
    g,
    out,
    xp,
    u,
    mask,
    keep,
    h0,
    c0,
    gates,
    dz,
    du,
    drb,
    dh0,
    dc0,
    ws,
    cell,
    act,
    ract,
    backwards,
    reset_after,
    masked,
    dropped,
    initial,
    want_du,
    want_drb,
    want_dh0,
    want_dc0,
):
    """The backward pass through time of rnn_forward, which wrote out and gates. g: the
    cotangent of out. Writes dz (d xp, [B, T, G]), and where wanted du (d U), drb (d recurrent
    bias), dh0 and dc0 (d initial state). ws: he per step (input order, for du's GEMM), r * he
    per step (GRU reset_after=False), the recurrent gradient per step (GRU reset_after=True:
    its candidate part is d ah * r, not d ah), then per step: the gradient the recurrent kernel
    multiplies [B, G], acc (its product), direct (d h_prev not through U), dh, dc."""
    nb, nt, ng = xp.shape
    nh = u.shape[0]
    v1, ra = cell == GRU and not reset_after, cell == GRU and reset_after
    ts = _defaults(cell, act, ract)
    hes, s = _take(ws, 0, (nb, nt, nh))
    rhes, s = _take(ws, s, (nb if v1 else 0, nt, nh))
    drec, s = _take(ws, s, (nb if ra else 0, nt, ng))
    dzs, s = _take(ws, s, (nb, ng))
    acc, s = _take(ws, s, (nb, nh))
    direct, s = _take(ws, s, (nb, nh))
    dh, s = _take(ws, s, (nb, nh))
    dc, s = _take(ws, s, (nb, nh))
    dh[:] = 0
    dc[:] = 0
    prev = np.zeros((nb, out.shape[2]), out.dtype)  # the state before step 0, as out's rows
    if initial:
        _copy(h0, prev[:, :nh])
        if cell == LSTM:
            _copy(c0, prev[:, nh:])
    for t in range(nt - 1, -1, -1):
        k = nt - 1 - t if backwards else t
        _grad_rows(g, out, prev, mask, keep, gates, dz, dzs, drec, rhes, hes, direct, dh, dc, t, k, cell, act, ract, ra, v1, ts, masked, dropped)  # fmt: skip
        if not _any_live(mask, k, masked):  # every gradient went to direct: the GEMMs would add zeros
            _copy(direct, dh)
            continue
        if v1:  # d r needs d (r * he) = d ah @ Uh^T first
            gemm(dzs[:, 2 * nh :], u[:, 2 * nh :], acc, False, True, 0.0)
            _v1_reset(acc, gates, hes, dz, dzs, mask, t, k, cell, ract, ts, masked)
            gemm(dzs[:, : 2 * nh], u[:, : 2 * nh], acc, False, True, 1.0)
        else:
            gemm(dzs, u, acc, False, True, 0.0)
        _carry_rows(acc, keep, direct, dh, dropped)
    if want_du:  # one GEMM over every step of the batch
        he2 = hes.reshape((nb * nt, nh))
        if v1:
            dz2 = dz.reshape((nb * nt, ng))
            gemm(he2, dz2[:, : 2 * nh], du[:, : 2 * nh], True, False, 0.0)
            gemm(rhes.reshape((nb * nt, nh)), dz2[:, 2 * nh :], du[:, 2 * nh :], True, False, 0.0)
        else:
            gemm(he2, (drec if ra else dz).reshape((nb * nt, ng)), du, True, False, 0.0)
    if want_drb:
        _rows_sum(drec.reshape((nb * nt, ng)), drb, 0, nb * nt)
    if want_dh0:
        _copy(dh, dh0)
    if want_dc0:
        _copy(dc, dc0)


@rnn_jit
def _gru_v1_reset_rows(acc, gates, hes, dz, dzs, mask, t, k, ract, ts, masked):
    """d r (GRU reset_after=False) for every sample, from acc = d (r * he) (a masked sample's: 0)."""
    for b in range(acc.shape[0]):
        if masked and mask[b, k] == 0:
            acc[b] = 0
        elif ts:
            R.gru_v1_reset_grad_row_ts(acc[b], gates[b, t], hes[b, k], dz[b, k], dzs[b], ract)
        else:
            R.gru_v1_reset_grad_row_any(acc[b], gates[b, t], hes[b, k], dz[b, k], dzs[b], ract)


@jit
def _carry_rows(acc, keep, direct, dh, dropped):
    """d h before the step for every sample: through the recurrent kernel and direct."""
    for b in range(dh.shape[0]):
        R.carry_grad_row(acc[b], keep[b] if dropped else dh[b], direct[b], dh[b], dropped)


@jit
def reverse_time(x, out):
    """out[:, t] = x[:, T-1-t] over [B, T, rest]."""
    nt = x.shape[1]
    for b in range(x.shape[0]):
        for t in range(nt):
            for i in range(x.shape[2]):
                out[b, t, i] = x[b, nt - 1 - t, i]
