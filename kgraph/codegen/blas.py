"""BLAS sgemm called directly from Numba, on row-major blocks of larger arrays.

`np.dot` in Numba copies any operand that is not contiguous, so it cannot multiply a block of
rows or columns in place, and it always overwrites its output. `gemm` takes 2-D float32 views
whose rows are contiguous but may be strided (x[:, k0:k1], out[:, n0:n1]) and a `beta`, and
calls the same OpenBLAS sgemm NumPy-in-Numba calls (SciPy's cython_blas)."""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.linalg import ensure_blas


ensure_blas()  # SciPy's BLAS, and an integer width this Numba was built for

# numba_xxgemm is Numba's own C shim over that sgemm (what np.dot calls): an external symbol,
# so functions calling it can be cached, unlike a ctypes pointer.
_xxgemm = types.ExternalFunction("numba_xxgemm", types.intc(
    types.char, types.char, types.char, types.intp, types.intp, types.intp,     # kind, transa, transb, m, n, k
    types.CPointer(types.float32), types.CPointer(types.float32), types.intp,   # alpha, a, lda
    types.CPointer(types.float32), types.intp, types.CPointer(types.float32),   # b, ldb, beta
    types.CPointer(types.float32), types.intp))                                 # c, ldc


@intrinsic
def _by_ref(typingctx, value):
    """A pointer to a stack copy of a scalar (BLAS takes alpha and beta by reference); valid
    until the calling function returns, and no heap allocation."""
    def codegen(context, builder, signature, args):
        return cgutils.alloca_once_value(builder, args[0])

    return types.CPointer(value)(value), codegen


_N, _T = ord("N"), ord("T")


@njit(cache=True, nogil=True)
def _row_stride(a) -> int:
    """Elements between rows of a 2-D view whose rows are contiguous (its leading dimension)."""
    return max(a.strides[0] // a.itemsize, a.shape[1], 1)


@njit(cache=True, nogil=True)
def gemm(a, b, out, trans_a, trans_b, beta):
    """out = op(a) @ op(b) + beta * out, row-major float32, op = transpose when trans_*.
    Column-major BLAS sees each row-major matrix transposed, so it computes
    out^T = op(b)^T @ op(a)^T: the operands swap places and keep their flags."""
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:  # BLAS would not touch out; the product of empty matrices is 0
        for i in range(m):
            for j in range(n):
                out[i, j] = out[i, j] * beta if beta else 0
        return
    _xxgemm(ord("s"), _T if trans_b else _N, _T if trans_a else _N, n, m, k, _by_ref(np.float32(1.0)),
            b.ctypes, _row_stride(b), a.ctypes, _row_stride(a), _by_ref(np.float32(beta)),
            out.ctypes, _row_stride(out))
