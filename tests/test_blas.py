"""kgraph/kernels/blas.py: sgemm on row-major blocks of larger arrays, through NumPy's OpenBLAS
(where NumPy bundles one) or SciPy's, against NumPy's matmul."""

import numpy as np
import pytest

from kgraph.kernels import blas

IMPLEMENTATIONS = [blas._gemm_scipy] + ([blas._gemm_cblas] if blas._CBLAS_NAME else [])


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_gemm_on_blocks_matches_numpy(implementation, trans_a, trans_b, beta):
    gemm = blas.gemm if blas.gemm.py_func is implementation else blas.compiled(implementation)
    rs = np.random.RandomState(0)
    m, n, k = 5, 7, 9
    big_a = rs.standard_normal((20, 20)).astype(np.float32)
    big_b = rs.standard_normal((20, 20)).astype(np.float32)
    a = big_a[2 : 2 + (k if trans_a else m), 3 : 3 + (m if trans_a else k)]  # strided rows, contiguous within
    b = big_b[1 : 1 + (n if trans_b else k), 4 : 4 + (k if trans_b else n)]
    big_out = rs.standard_normal((12, 12)).astype(np.float32)
    out = big_out[3 : 3 + m, 2 : 2 + n]
    expected = (a.T if trans_a else a) @ (b.T if trans_b else b) + beta * out
    untouched = big_out.copy()
    gemm(a, b, out, trans_a, trans_b, beta)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    outside = np.ones_like(big_out, bool)
    outside[3 : 3 + m, 2 : 2 + n] = False
    np.testing.assert_array_equal(big_out[outside], untouched[outside])  # nothing beside the block


def test_numpy_openblas_is_found_where_numpy_bundles_it():
    from threadpoolctl import threadpool_info

    bundled = any("scipy_openblas64_" in i.get("filepath", "") for i in threadpool_info())
    assert (blas._CBLAS_NAME is not None) == bundled
    assert blas.gemm.py_func is (blas._gemm_cblas if bundled else blas._gemm_scipy)


def test_gemm_compiles_once_for_every_layout_and_flag():
    """Views of any layout, flags literal or not: the one compiled form (a form per combination
    cost a fresh install's first CNN step two seconds of compiling)."""
    from numba import njit

    @njit
    def callers(a, b, out):
        blas.gemm(a, b, out, False, True, 0.0)
        blas.gemm(a[:, 1:], b[:, 1:], out[1:], False, True, 1.0)
        blas.gemm(a, a, out[:2, :2], True, False, 0.0)

    a = np.ones((3, 3), np.float32)
    out = np.zeros((3, 3), np.float32)
    blas.gemm(a, a, out, False, False, 0.0)
    callers(a, a.copy(), out)
    frozen = a.copy()
    frozen.flags.writeable = False  # np.load(mmap_mode="r"), np.frombuffer: the user's inputs may be
    callers(frozen, frozen, out)
    assert len(blas.gemm.overloads) == 1
    np.testing.assert_array_equal(out[:2, :2], np.full((2, 2), 3, np.float32))
