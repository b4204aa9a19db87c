"""Hand-written CUDA kernels (numba.cuda) that generated launchers call: the tiled GEMM with a
fused epilogue, the fused activation-gradient + bias-gradient backward, softmax and the
cross-entropy losses, reductions, copies, the image ops of convolutions and pooling (NHWC), the
embedding lookup and its gradient, batch-norm's moving statistics. The element and row maths
(maths.py) and the optimizers' updates (updates.py) are the CPU's too.

float32 only. A kernel that calls a generated device function (the GEMM's epilogue, the
backward's activation gradient) comes from a cached factory, one specialisation per function.
Rows are the leading dimensions flattened; the last axis is the class/feature axis. Kernels
with a barrier never return before it: threads outside the data only skip the work.

Every kernel strides over its work (a grid-stride loop; the tiled kernels over their tiles), so
any grid computes all of it. On a GPU the grid covers the work, a thread an element. Numba's
simulator starts a Python thread for every thread of a launch (about 0.2 ms each, far more than
an element's work), so there the blocks are a few threads (SIM_THREADS, REDUCE_THREADS, the GEMM's
and the bias gradient's tiles) and a one-dimensional launch has SIM_BLOCKS blocks at most: the
same kernels and the same element maths on a fraction of the threads."""

from __future__ import annotations

import functools
import os

from numba import config, cuda, float32

from . import maths as M
from .maths import maximum, minimum

SIMULATED = config.ENABLE_CUDASIM


def _lock_simulated_shared_arrays() -> None:
    """Numba's simulator gives a block's threads one shared array per call site (file and line)
    by looking it up, and on a miss making and storing one, with no lock: two threads that both
    miss (one switched out between the look-up and the store) each get their own, and read what
    the others never wrote (a GRU's weights after one step were about 1e20 in one test run in
    twenty; a forced switch there fails every time). This does the same under a lock; nothing
    where the simulator's internals differ from those it was written against (numba 0.61-0.68)."""
    import sys
    import threading

    import numpy as np
    from numba.core import types
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    shared = getattr(kernelapi, "FakeCUDAShared", None)
    if shared is None or getattr(shared, "_kgraph_locked", False) or not hasattr(shared, "array"):
        return
    dynamic, lock = shared.array, threading.Lock()

    def array(self, shape, dtype):
        if shape == 0 or not isinstance(getattr(self, "_allocations", None), dict):
            return dynamic(self, shape, dtype)  # dynamic shared memory: one buffer, no look-up
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        caller = sys._getframe(1)
        site = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            if site not in self._allocations:
                self._allocations[site] = np.empty(shape, dtype)
            return self._allocations[site]

    shared.array, shared._kgraph_locked = array, True


if SIMULATED:
    _lock_simulated_shared_arrays()
THREADS_1D = 256  # threads per block of the one-dimensional kernels
# In the simulator: a one-dimensional launch's blocks at most (0: as many as on a GPU; two, so
# that striding across blocks is checked there too) and their threads
SIM_BLOCKS = int(os.environ.get("KGRAPH_CUDASIM_BLOCKS", "2")) if SIMULATED else 0
SIM_THREADS = 4
REDUCE_THREADS = 4 if SIMULATED else THREADS_1D  # reduce_all's one block (a barrier a level)


UPDATE_BLOCKS = 1024  # an optimizer update's blocks at most; each thread strides over the rest


def _covering(n: int, threads: int) -> int:
    """Blocks of `threads` that cover n elements (at least one)."""
    return max(1, -(-n // threads))


def blocks(n: int, threads: int = THREADS_1D) -> int:
    """Blocks of `threads` covering n elements; SIM_BLOCKS at most in the simulator."""
    return min(_covering(n, threads), SIM_BLOCKS) if SIM_BLOCKS else _covering(n, threads)


def threads(n: int) -> int:
    """Threads per block of a one-dimensional kernel over n elements: whole warps, THREADS_1D at
    most (a small layer's step launches no idle threads); SIM_THREADS in the simulator. Only
    reduce_all needs REDUCE_THREADS exactly; the others stride by cuda.grid and cuda.gridsize."""
    return SIM_THREADS if SIM_BLOCKS else min(THREADS_1D, 32 * _covering(n, 32))


def update_blocks(n: int) -> int:
    return min(blocks(n), UPDATE_BLOCKS)


# ---------------------------------------------------------------- GEMM
# A block of 16x16 threads computes a 64x64 tile of the output; each thread a 4x4 register tile
# at rows ty + 16*i and columns tx + 16*j (so a warp's stores are coalesced), walking K in steps
# of 16 through shared memory. Numba's simulator runs every thread of a block as a Python thread
# that waits at each barrier: there the same kernel runs on blocks of 4x4 threads (a 16x16 tile),
# a sixteenth of the threads, unless KGRAPH_CUDASIM_GEMM_THREADS=16 asks for the GPU's blocks (the
# tests' kernel checks do).
THREADS_2D = int(os.environ.get("KGRAPH_CUDASIM_GEMM_THREADS", "4")) if SIMULATED else 16
TM = TN = 4
BM, BN, BK = THREADS_2D * TM, THREADS_2D * TN, 16
LOADS = BM * BK // THREADS_2D**2  # elements of each staged tile one thread loads
if LOADS * THREADS_2D**2 != BM * BK:  # a tile the threads cannot stage evenly would be read half-loaded
    raise ValueError(f"KGRAPH_CUDASIM_GEMM_THREADS={THREADS_2D}: the GEMM's blocks need 4, 8, 16 or 32 threads a side")
PAD_M, PAD_N = BM + 1, BN + 1  # shared tiles' row lengths: the +1 spreads stores over the banks


def gemm_grid(m: int, n: int) -> tuple:
    """(columns, rows) of tile blocks; a grid's y is 65535 at most (the kernel strides past it)."""
    return blocks(n, BN), min(blocks(m, BM), 65535)


@cuda.jit(device=True)
def _tile_element(x, k_first, e, rows, r0, r_size, k0, k_size):
    """(kk, r, x's value there) of a thread's e-th element of a staged GEMM tile: `rows` rows
    from r0 by BK from k0, 0 outside x. x holds k along its first axis where k_first, else along
    its second; consecutive e follow x's stored order, so adjacent threads read adjacent addresses."""
    if k_first:
        kk, r = e // rows, e % rows
    else:
        r, kk = e // BK, e % BK
    v = float32(0)
    if r0 + r < r_size and k0 + kk < k_size:
        v = x[k0 + kk, r0 + r] if k_first else x[r0 + r, k0 + kk]
    return kk, r, v


@cuda.jit(device=True)
def product(acc, bias, j):
    """The epilogue of a plain matrix product: none."""
    return acc


@functools.lru_cache(maxsize=None)
def gemm(transpose_a: bool, transpose_b: bool, epilogue, accumulate: bool = False):
    """out[i, j] = epilogue(sum_k op(a)[i, k] * op(b)[k, j], bias, j), accumulated in float32;
    op transposes when its flag is set; with accumulate, out[i, j] += that instead (C += A·B).
    The operands may be strided views (a column range of a matrix: the recurrent layers' gate
    blocks), a specialisation of their own. Launch on gemm_grid(M, N) blocks of (16, 16) threads."""

    @cuda.jit
    def kernel(a, b, bias, out):
        m_size, n_size = out.shape
        k_size = a.shape[0] if transpose_a else a.shape[1]
        sa = cuda.shared.array((BK, PAD_M), float32)  # sa[k, m]
        sb = cuda.shared.array((BK, PAD_N), float32)  # sb[k, n]
        acc = cuda.local.array((TM, TN), float32)
        ra = cuda.local.array(TM, float32)
        rb = cuda.local.array(TN, float32)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        tid = ty * THREADS_2D + tx
        # the block's tiles, striding over the grid (a block's threads take the same tiles, so
        # all of them reach each barrier)
        for row0 in range(cuda.blockIdx.y * BM, m_size, cuda.gridDim.y * BM):
            for col0 in range(cuda.blockIdx.x * BN, n_size, cuda.gridDim.x * BN):
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] = 0
                for k0 in range(0, k_size, BK):
                    # stage both tiles, zero outside the operands; adjacent threads read adjacent
                    # addresses of each operand as it is stored (along k, or along m / n if transposed)
                    for step in range(LOADS):
                        e = tid + step * THREADS_2D * THREADS_2D
                        # a is (K, M) if transposed, else (M, K); b is (N, K) if transposed, else (K, N)
                        kk, mm, v = _tile_element(a, transpose_a, e, BM, row0, m_size, k0, k_size)
                        sa[kk, mm] = v
                        kk, nn, v = _tile_element(b, not transpose_b, e, BN, col0, n_size, k0, k_size)
                        sb[kk, nn] = v
                    cuda.syncthreads()
                    for kk in range(BK):
                        for i in range(TM):
                            ra[i] = sa[kk, ty + i * THREADS_2D]
                        for j in range(TN):
                            rb[j] = sb[kk, tx + j * THREADS_2D]
                        for i in range(TM):
                            for j in range(TN):
                                acc[i, j] += ra[i] * rb[j]
                    cuda.syncthreads()
                for i in range(TM):
                    r = row0 + ty + i * THREADS_2D
                    for j in range(TN):
                        c = col0 + tx + j * THREADS_2D
                        if r < m_size and c < n_size:
                            if accumulate:
                                out[r, c] += epilogue(acc[i, j], bias, c)
                            else:
                                out[r, c] = epilogue(acc[i, j], bias, c)

    return kernel


# ---------------------------------------------------------------- fused backward
BIAS_COLS, BIAS_ROWS = (4, 2) if SIMULATED else (32, 8)  # a block's columns and rows of threads


def bias_grad_grid(cols: int) -> int:
    return blocks(cols, BIAS_COLS)


@functools.lru_cache(maxsize=None)
def act_grad_bias(grad):
    """out = grad(g, v) elementwise over (rows, cols) and gb = out summed over the rows, in one
    pass. A block of (32, 8) threads owns 32 columns at a time (coalesced rows); its 8 rows of
    threads stride down the rows and add their partial sums in shared memory: no atomics, so the sum
    is the same from run to run. Launch on bias_grad_grid(cols) blocks."""

    @cuda.jit
    def kernel(g, v, out, gb):
        partial = cuda.shared.array((BIAS_ROWS, BIAS_COLS), float32)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        for j0 in range(cuda.blockIdx.x * BIAS_COLS, out.shape[1], cuda.gridDim.x * BIAS_COLS):
            j = j0 + tx
            s = float32(0)
            if j < out.shape[1]:
                for i in range(ty, out.shape[0], BIAS_ROWS):
                    r = grad(g[i, j], v[i, j])
                    out[i, j] = r
                    s += r
            partial[ty, tx] = s
            cuda.syncthreads()
            if ty == 0 and j < out.shape[1]:
                for k in range(1, BIAS_ROWS):
                    s += partial[k, tx]
                gb[j] = s
            cuda.syncthreads()  # read before the block's next columns overwrite it

    return kernel


# ---------------------------------------------------------------- rows: softmax and losses
# one thread per row (the class axis is short in the models this serves), each running the row
# maths of maths.py, the same as the CPU's


@cuda.jit
def softmax_rows(x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        M.softmax_row(x[i], out[i])


@cuda.jit
def softmax_grad_rows(g, y, out):
    for i in range(cuda.grid(1), g.shape[0], cuda.gridsize(1)):
        M.softmax_grad_row(g[i], y[i], out[i])


@cuda.jit
def softmax_ce_rows(z, t, out):
    for i in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
        out[i] = M.softmax_ce_row(z[i], t[i])


@cuda.jit
def softmax_ce_grad_rows(z, t, g, out):
    for i in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
        M.softmax_ce_grad_row(z[i], t[i], g[i], out[i])


@cuda.jit
def sparse_softmax_ce_rows(z, labels, out):
    for i in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
        out[i] = M.sparse_softmax_ce_row(z[i], labels[i])


@cuda.jit
def sparse_softmax_ce_grad_rows(z, labels, g, out):
    for i in range(cuda.grid(1), z.shape[0], cuda.gridsize(1)):
        M.sparse_softmax_ce_grad_row(z[i], labels[i], g[i], out[i])


@cuda.jit
def pick_rows(p, labels, out):
    for i in range(cuda.grid(1), p.shape[0], cuda.gridsize(1)):
        out[i] = M.pick(p[i], labels[i])


@cuda.jit
def unpick_rows(g, labels, out):
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        M.unpick_row(g[i], labels[i], out[i])


# ---------------------------------------------------------------- reductions, broadcasts, copies


@cuda.jit
def reduce_3d(x, out, scale):
    """out[a, c] = scale * sum over b of x[a, b, c]: a thread per output, adjacent threads at
    adjacent c (coalesced reads of each x[a, b, :])."""
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        a, c = t // out.shape[1], t % out.shape[1]
        s = float32(0)
        for b in range(x.shape[1]):
            s += x[a, b, c]
        out[a, c] = s * float32(scale)


@cuda.jit
def reduce_all(x, out, scale):
    """out[0] = scale * sum(x), one block of REDUCE_THREADS: each thread sums a strided share, then a
    tree in shared memory."""
    partial = cuda.shared.array(REDUCE_THREADS, float32)
    t = cuda.threadIdx.x
    s = float32(0)
    for i in range(t, x.size, REDUCE_THREADS):
        s += x[i]
    partial[t] = s
    cuda.syncthreads()
    width = REDUCE_THREADS // 2
    while width > 0:
        if t < width:
            partial[t] += partial[t + width]
        cuda.syncthreads()
        width //= 2
    if t == 0:
        out[0] = partial[0] * float32(scale)


@cuda.jit(device=True)
def _index_3d(t, shape):
    """(a, b, c) of flat index t into a C-contiguous array of 3-dim `shape`."""
    return t // (shape[1] * shape[2]), (t // shape[2]) % shape[1], t % shape[2]


@cuda.jit
def reduce_max_3d(x, out):
    """out[a, c] = max over b of x[a, b, c]: a thread per output, as reduce_3d."""
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        a, c = t // out.shape[1], t % out.shape[1]
        m = x[a, 0, c]
        for b in range(1, x.shape[1]):
            m = maximum(m, x[a, b, c])
        out[a, c] = m


@cuda.jit
def broadcast_3d(g, out):
    """out[a, b, c] = g[a, c]."""
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        a, b, c = _index_3d(t, out.shape)
        out[a, b, c] = g[a, c]


@cuda.jit
def fill(out, value):
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[t] = value


@cuda.jit
def scale(x, factor):
    """x *= factor, a grid-stride loop (a replica's gradients by its shard's share of the batch)."""
    f = float32(factor)
    for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        x[t] *= f


@cuda.jit
def copy_3d(src, src_start, dst, dst_start, n):
    """dst[a, dst_start + b, c] = src[a, src_start + b, c] for b < n (concat and slice)."""
    for t in range(cuda.grid(1), src.shape[0] * n * src.shape[2], cuda.gridsize(1)):
        a, b, c = _index_3d(t, (src.shape[0], n, src.shape[2]))
        dst[a, dst_start + b, c] = src[a, src_start + b, c]


@cuda.jit
def repeat_3d(x, out):
    """out[a, j, c] = x[a, j // n, c] with n = out.shape[1] // x.shape[1]: each entry of the middle
    axis n times in a row (np.repeat)."""
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        a, j, c = _index_3d(t, out.shape)
        out[a, j, c] = x[a, j // (out.shape[1] // x.shape[1]), c]


# ---------------------------------------------------------------- images (NHWC) and lookups
# A thread per output element, channels innermost: adjacent threads touch adjacent addresses.
# Gradients gather what reaches each input element instead of scattering into it, so they need
# no atomics and sum in the same order on every run (the embedding's gradient is the exception).


@cuda.jit(device=True)
def _index_nhwc(t, shape):
    """(b, h, w, c) of flat index t into an NHWC array of `shape`."""
    c = t % shape[3]
    t //= shape[3]
    w = t % shape[2]
    t //= shape[2]
    return t // shape[1], t % shape[1], w, c


@cuda.jit
def im2col(x, cols, kh, kw, sh, sw, dh, dw, pt, pl):
    """cols[b, oh, ow, (i*kw + j)*C + c] = x[b, oh*sh - pt + i*dh, ow*sw - pl + j*dw, c], 0 outside.
    (kh is unused: it keeps the arguments those of col2im and the CPU kernels.)"""
    for t in range(cuda.grid(1), cols.size, cuda.gridsize(1)):
        b, oh, ow, k = _index_nhwc(t, cols.shape)
        tap, c = k // x.shape[3], k % x.shape[3]
        r = oh * sh - pt + (tap // kw) * dh
        s = ow * sw - pl + (tap % kw) * dw
        v = float32(0)
        if 0 <= r < x.shape[1] and 0 <= s < x.shape[2]:
            v = x[b, r, s, c]
        cols[b, oh, ow, k] = v


@cuda.jit(device=True)
def _window_at(p, stride, n):
    """The window o < n that starts at padded position p (p = o*stride), or -1."""
    if p < 0 or p % stride != 0 or p // stride >= n:
        return -1
    return p // stride


@cuda.jit
def col2im(cols, x, kh, kw, sh, sw, dh, dw, pt, pl):
    """The adjoint of im2col: x[b, r, s, c] = sum of the patch entries that read it, gathered over
    the kernel taps (i, j) whose window position lands on (r, s)."""
    for t in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        b, r, s, c = _index_nhwc(t, x.shape)
        acc = float32(0)
        for i in range(kh):
            oh = _window_at(r + pt - i * dh, sh, cols.shape[1])
            if oh >= 0:
                for j in range(kw):
                    ow = _window_at(s + pl - j * dw, sw, cols.shape[2])
                    if ow >= 0:
                        acc += cols[b, oh, ow, (i * kw + j) * x.shape[3] + c]
        x[b, r, s, c] = acc


@cuda.jit(device=True)
def _window(o, stride, pad, size, length):
    """[lo, hi) of the unpadded input rows that pooling window o covers."""
    lo = o * stride - pad
    return maximum(lo, 0), minimum(lo + size, length)


@cuda.jit(device=True)
def _windows_over(p, stride, size, n):
    """[lo, hi) of the pooling windows o < n (starting at o*stride, `size` long) that cover padded
    position p >= 0."""
    lo = 0 if p < size else (p - size) // stride + 1
    return lo, minimum(p // stride + 1, n)


@cuda.jit
def pool2d(x, y, is_max, ph, pw, sh, sw, pt, pl):
    """Max or average over each window; padding never counts."""
    for t in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        b, oh, ow, c = _index_nhwc(t, y.shape)
        r0, r1 = _window(oh, sh, pt, ph, x.shape[1])
        s0, s1 = _window(ow, sw, pl, pw, x.shape[2])
        acc = x[b, r0, s0, c] if is_max else float32(0)
        for r in range(r0, r1):
            for s in range(s0, s1):
                acc = maximum(acc, x[b, r, s, c]) if is_max else acc + x[b, r, s, c]
        y[b, oh, ow, c] = acc if is_max else acc / float32((r1 - r0) * (s1 - s0))


@cuda.jit(device=True)
def _first_maximum(x, b, c, r0, s0, s1, top, r, s):
    """Whether (r, s) is the first position of the window from (r0, s0), row by row, where x
    equals top (the window's maximum): the one that receives the gradient, as TensorFlow routes it."""
    for rr in range(r0, r + 1):
        for ss in range(s0, s1):
            if rr == r and ss == s:
                return True
            if x[b, rr, ss, c] == top:
                return False
    return True


@cuda.jit
def pool2d_grad(g, x, y, gx, is_max, ph, pw, sh, sw, pt, pl, relu):
    """The VJP of pool2d, a thread per input element summing over the windows that cover it. Max:
    each window's g goes to its first maximum. Avg: g spread evenly over the window. relu: x is a
    ReLU's output, whose gradient applies too (nothing where x is 0)."""
    for t in range(cuda.grid(1), gx.size, cuda.gridsize(1)):
        b, r, s, c = _index_nhwc(t, gx.shape)
        v = x[b, r, s, c]
        acc = float32(0)
        oh0, oh1 = _windows_over(r + pt, sh, ph, y.shape[1])
        ow0, ow1 = _windows_over(s + pl, sw, pw, y.shape[2])
        for oh in range(oh0, oh1):
            r0, r1 = _window(oh, sh, pt, ph, x.shape[1])
            for ow in range(ow0, ow1):
                s0, s1 = _window(ow, sw, pl, pw, x.shape[2])
                if not is_max:
                    acc += g[b, oh, ow, c] / float32((r1 - r0) * (s1 - s0))
                elif v == y[b, oh, ow, c] and _first_maximum(x, b, c, r0, s0, s1, v, r, s):
                    acc += g[b, oh, ow, c]
        gx[b, r, s, c] = acc if not relu or v > 0 else float32(0)


@cuda.jit
def gather_rows(table, ids, out):
    """out[n, :] = table[int(ids[n]), :] (float ids are truncated, as Keras casts them)."""
    for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        n, j = t // out.shape[1], t % out.shape[1]
        out[n, j] = 0
        if -1 < ids[n] < table.shape[0]:  # as the CPU's: an id outside the table reads zeros
            out[n, j] = table[int(ids[n]), j]


@cuda.jit
def scatter_add_rows(g, ids, out):
    """out[int(ids[n]), :] += g[n, :], atomically (ids repeat): the VJP of gather_rows. Zero out
    first. The atomics make the order of each sum, and so its last bits, vary from run to run."""
    for t in range(cuda.grid(1), g.size, cuda.gridsize(1)):
        n, j = t // g.shape[1], t % g.shape[1]
        if -1 < ids[n] < out.shape[0]:
            cuda.atomic.add(out, (int(ids[n]), j), g[n, j])


@cuda.jit
def moving_average(m, x, momentum):
    """m = m*momentum + x*(1 - momentum) in place: batch-norm's moving statistics (grid-stride)."""
    mu, rest = float32(momentum), float32(1 - momentum)
    for i in range(cuda.grid(1), m.size, cuda.gridsize(1)):
        m[i] = m[i] * mu + x[i] * rest


@cuda.jit
def constrain(w, kind, min_value, max_value, rate):
    """Keras's weight constraint in place, as the CPU's constrain: a thread per (before, after)
    column of the weight viewed as (before, over, after) (grid-stride)."""
    after = w.shape[2]
    for k in range(cuda.grid(1), w.shape[0] * after, cuda.gridsize(1)):
        M.constrain_column(w, k // after, k % after, kind, min_value, max_value, rate)


# ---------------------------------------------------------------- recurrent layers
# The time loop of a SimpleRNN, LSTM or GRU, as the CPU's rnn_forward / rnn_backward runs it
# (kgraph/kernels/cpu.py): the launcher walks the steps on the host, and per step launches the
# recurrent GEMM (gemm above, on the workspace's views) and one of these kernels, a thread per
# (sample, unit), each calling the unit maths of maths.py that the CPU's loops call. Arrays are
# the CPU kernels' (absent optional operands: a 1-element stand-in, their flags False); t is the
# step in processing order, k = T-1-t the input step read when going backwards.


@cuda.jit(device=True)
def _unit(i, h):
    """(b, j): the (sample, unit) of flat index i over state-shaped h."""
    return i // h.shape[1], i % h.shape[1]


@cuda.jit
def rnn_start(h0, c0, keep, h, c, he, initial, lstm, dropped):
    """The state before the first step: h0 and c0 (or zeros), and the first he."""
    for i in range(cuda.grid(1), h.size, cuda.gridsize(1)):
        b, j = _unit(i, h)
        h[b, j] = h0[b, j] if initial else float32(0)
        c[b, j] = c0[b, j] if initial and lstm else float32(0)
        M.rnn_recurrent_input(h, keep, he, b, j, dropped)


@cuda.jit
def gru_v1_gates(xp, rec, gates, he, rhe, t, backwards, ract):
    """A GRU with reset_after=False, between its two GEMMs of step t."""
    for i in range(cuda.grid(1), he.size, cuda.gridsize(1)):
        b, j = _unit(i, he)
        nt = xp.shape[1]
        k = nt - 1 - t if backwards else t
        M.gru_v1_gates(xp, rec, gates, he, rhe, b, j, k, t if gates.shape[1] == nt else 0, ract)


@cuda.jit
def rnn_step(xp, rec, rb, mask, keep, gates, out, h, c, he, t, cell, act, ract, backwards, v1, has_rb, masked, dropped):
    """Step t after its recurrent GEMM (rec): the new state, and the next step's he."""
    for i in range(cuda.grid(1), h.size, cuda.gridsize(1)):
        b, j = _unit(i, h)
        nt = xp.shape[1]
        k = nt - 1 - t if backwards else t
        st = t if gates.shape[1] == nt else 0
        M.rnn_unit(xp, rec, rb, mask, gates, out, h, c, b, j, t, k, st, cell, act, ract, v1, has_rb, masked)
        M.rnn_recurrent_input(h, keep, he, b, j, dropped)


@cuda.jit
def rnn_step_grad(
    g, out, mask, keep, h0, c0, gates, dz, dzs, drec, rhes, hes, acc, direct, dh, dc,
    t, cell, act, ract, backwards, v1, ra, masked, dropped, initial, carry,
):  # fmt: skip
    """Step t back through time, before the recurrent GEMM of its gradient (dzs); with carry, d h
    from the step after it first (its GEMM's acc and its direct part: rnn_carry_grad's work, one
    launch a step fewer)."""
    for i in range(cuda.grid(1), dh.size, cuda.gridsize(1)):
        b, j = _unit(i, dh)
        if carry:
            M.rnn_carry_grad(acc, keep, direct, dh, b, j, dropped)
        k = out.shape[1] - 1 - t if backwards else t
        M.rnn_unit_grad(
            g, out, mask, keep, h0, c0, gates, dz, dzs, drec, rhes, hes, direct, dh, dc,
            b, j, t, k, cell, act, ract, v1, ra, masked, dropped, initial,
        )  # fmt: skip


@cuda.jit
def gru_v1_reset_grad(acc, gates, hes, mask, dz, dzs, t, backwards, ract, masked):
    """A GRU with reset_after=False, between the candidate's gradient GEMM and z and r's."""
    for i in range(cuda.grid(1), acc.size, cuda.gridsize(1)):
        b, j = _unit(i, acc)
        k = gates.shape[1] - 1 - t if backwards else t
        M.gru_v1_reset_grad(acc, gates, hes, mask, dz, dzs, b, j, t, k, ract, masked)


@cuda.jit
def rnn_carry_grad(acc, keep, direct, dh, dropped):
    """d h before the first step (d h0), from its gradient GEMM (acc) and the direct part."""
    for i in range(cuda.grid(1), dh.size, cuda.gridsize(1)):
        b, j = _unit(i, dh)
        M.rnn_carry_grad(acc, keep, direct, dh, b, j, dropped)


@cuda.jit
def reverse_time(x, out):
    """out[:, t] = x[:, T-1-t] over [B, T, rest]."""
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        b, t, c = _index_3d(i, out.shape)
        out[b, t, c] = x[b, out.shape[1] - 1 - t, c]


def batch_matmul(trans_a: bool, trans_b: bool):
    """A kernel computing out[i] = op(a[i]) @ op(b[i]) over 3-D views (attention's matrices per
    batch and head), a thread per output element: the matrices are small (sequence by sequence)."""

    @cuda.jit
    def kernel(a, b, out):
        for t in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            m, n = out.shape[1], out.shape[2]
            i, r, c = t // (m * n), (t // n) % m, t % n
            acc = float32(0)
            for k in range(a.shape[1] if trans_a else a.shape[2]):
                x = a[i, k, r] if trans_a else a[i, r, k]
                y = b[i, c, k] if trans_b else b[i, k, c]
                acc += x * y
            out[i, r, c] = acc

    return kernel
