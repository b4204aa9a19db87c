"""BLAS sgemm called directly from Numba, on row-major blocks of larger arrays.

`np.dot` in Numba copies any operand that is not contiguous, so it cannot multiply a block of
rows or columns in place, and it always overwrites its output. `gemm` takes 2-D float32 views
whose rows are contiguous but may be strided (x[:, k0:k1], out[:, n0:n1]) and a `beta`.

It calls NumPy's own OpenBLAS where NumPy's wheels bundle one (scipy-openblas64): a newer build
than SciPy's, whose sgemm runs the 32-row GEMMs of a small batch 1.5x faster here (784-128-10 at
batch 32: 87 us against 135 for the forward GEMM). Elsewhere it calls the sgemm Numba's np.dot
calls (SciPy's cython_blas)."""

from __future__ import annotations

import ctypes
import os

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic
from numba.np.linalg import ensure_blas

from .by_type import NO_C_WRAPPER


ensure_blas()  # SciPy's BLAS, and an integer width this Numba was built for

# numba_xxgemm is Numba's own C shim over that sgemm (what np.dot calls): an external symbol,
# so functions calling it can be cached, unlike a ctypes pointer.
_xxgemm = types.ExternalFunction(
    "numba_xxgemm",
    types.intc(
        types.char,
        types.char,
        types.char,
        types.intp,
        types.intp,
        types.intp,  # kind, transa, transb, m, n, k
        types.CPointer(types.float32),
        types.CPointer(types.float32),
        types.intp,  # alpha, a, lda
        types.CPointer(types.float32),
        types.intp,
        types.CPointer(types.float32),  # b, ldb, beta
        types.CPointer(types.float32),
        types.intp,
    ),
)  # c, ldc


@intrinsic
def _by_ref(typingctx, value):
    """A pointer to a stack copy of a scalar (BLAS takes alpha and beta by reference); valid
    until the calling function returns, and no heap allocation."""

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once_value(builder, args[0])

    return types.CPointer(value)(value), codegen


_N, _T = ord("N"), ord("T")


# One compiled form each, for any layout of the views and any flags: called with a literal flag or
# a C-contiguous array, Numba would otherwise compile a form per combination (twelve of these
# three in a small CNN's step: two seconds of a fresh install's first step).
# The operands are read-only to gemm (a writable array converts to read-only, not the reverse:
# the user's read-only inputs reach the first GEMM as they are).
_MATRIX = types.Array(types.float32, 2, "A")
_OPERAND = types.Array(types.float32, 2, "A", readonly=True)
_GEMM_SIGNATURE = types.void(_OPERAND, _OPERAND, _MATRIX, types.boolean, types.boolean, types.float64)


@njit(types.intp(_OPERAND), cache=True, nogil=True, **NO_C_WRAPPER)
def _row_stride(a) -> int:
    """Elements between rows of a 2-D view whose rows are contiguous (its leading dimension)."""
    return max(a.strides[0] // a.itemsize, a.shape[1], 1)


def _numpy_cblas_sgemm() -> str | None:
    """The name of cblas_sgemm in the OpenBLAS NumPy loaded (found by threadpoolctl), its library
    made visible to Numba's linker; None when NumPy has no such library."""
    from threadpoolctl import threadpool_info

    for lib in threadpool_info():
        path = lib.get("filepath", "")
        if lib.get("internal_api") == "openblas" and "scipy_openblas64_" in os.path.basename(path):
            if hasattr(ctypes.CDLL(path), "scipy_cblas_sgemm64_"):
                llvm.load_library_permanently(path)
                return "scipy_cblas_sgemm64_"
    return None


_CBLAS_NAME = _numpy_cblas_sgemm()
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # CBLAS's enums
# void cblas_sgemm(order, transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc), 64-bit sizes
_cblas_sgemm = types.ExternalFunction(
    _CBLAS_NAME or "scipy_cblas_sgemm64_",
    types.void(
        types.intc,
        types.intc,
        types.intc,
        types.int64,
        types.int64,
        types.int64,
        types.float32,
        types.CPointer(types.float32),
        types.int64,
        types.CPointer(types.float32),
        types.int64,
        types.float32,
        types.CPointer(types.float32),
        types.int64,
    ),
)


@njit(
    types.UniTuple(types.intp, 3)(_OPERAND, _MATRIX, types.boolean, types.float64),
    cache=True,
    nogil=True,
    **NO_C_WRAPPER,
)
def _product_shape(a, out, trans_a, beta):
    """(m, n, k) of out = op(a) @ op(b) + beta * out; k is 0 when BLAS has nothing to do: out is
    empty, or the product is (out is then beta * out, which BLAS would not write)."""
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if k == 0:
        for i in range(m):
            for j in range(n):
                out[i, j] = out[i, j] * beta if beta else 0
    return m, n, (k if m and n else 0)


def _gemm_cblas(a, b, out, trans_a, trans_b, beta):
    """out = op(a) @ op(b) + beta * out, row-major float32, op = transpose when trans_*."""
    m, n, k = _product_shape(a, out, trans_a, beta)
    if k == 0:
        return
    _cblas_sgemm(
        _ROW_MAJOR,
        _TRANS if trans_a else _NO_TRANS,
        _TRANS if trans_b else _NO_TRANS,
        m,
        n,
        k,
        np.float32(1.0),
        a.ctypes,
        _row_stride(a),
        b.ctypes,
        _row_stride(b),
        np.float32(beta),
        out.ctypes,
        _row_stride(out),
    )


def _gemm_scipy(a, b, out, trans_a, trans_b, beta):
    """out = op(a) @ op(b) + beta * out, row-major float32, op = transpose when trans_*.
    Column-major BLAS sees each row-major matrix transposed, so it computes
    out^T = op(b)^T @ op(a)^T: the operands swap places and keep their flags."""
    m, n, k = _product_shape(a, out, trans_a, beta)
    if k == 0:
        return
    _xxgemm(
        ord("s"),
        _T if trans_b else _N,
        _T if trans_a else _N,
        n,
        m,
        k,
        _by_ref(np.float32(1.0)),
        b.ctypes,
        _row_stride(b),
        a.ctypes,
        _row_stride(a),
        _by_ref(np.float32(beta)),
        out.ctypes,
        _row_stride(out),
    )


def compiled(implementation):
    """`_gemm_cblas` or `_gemm_scipy` compiled for _GEMM_SIGNATURE (at once, or from the cache)."""
    return njit(_GEMM_SIGNATURE, cache=True, nogil=True, **NO_C_WRAPPER)(implementation)


gemm = compiled(_gemm_cblas if _CBLAS_NAME else _gemm_scipy)  # only the one this machine uses compiles
