"""kgraph/kernels/cache_at_o0.py: at NUMBA_OPT=0 (the suite's level) a kernel that calls another
kernel is cached, and a function that truly needs a process address still is not."""

import ctypes
import subprocess
import sys
import textwrap

import pytest
from numba import config, njit

import kgraph.kernels  # noqa: F401  (installs the passes)

pytestmark = pytest.mark.skipif(config.OPT != 0, reason="the passes are installed at NUMBA_OPT=0 only")


def _library(dispatcher):
    (signature,) = dispatcher.signatures
    return dispatcher.overloads[signature].library


def test_a_call_of_another_jitted_function_leaves_no_dynamic_global():
    @njit
    def inner(x):
        return x * 2.0

    @njit
    def outer(x):
        return inner(x) + 1.0

    assert outer(1.5) == 4.0
    assert not _library(outer).has_dynamic_globals


def test_a_used_process_address_still_refuses_the_cache():
    libm = ctypes.CDLL(None)
    cos = libm.cos
    cos.restype, cos.argtypes = ctypes.c_double, [ctypes.c_double]

    @njit
    def through_pointer(x):
        return cos(x)

    assert through_pointer(0.0) == 1.0
    assert _library(through_pointer).has_dynamic_globals


def test_a_kernel_calling_kernels_loads_from_the_cache_in_the_next_process(tmp_path):
    code = textwrap.dedent(
        """
        import numpy as np
        from kgraph.kernels import cpu
        a, b = np.ones((4, 3), np.float32), np.ones((3, 5), np.float32)
        out = np.zeros((4, 5), np.float32)
        cpu.matmul(a, b, out, False, False)
        assert (out == 3).all()
        stats = cpu.matmul.stats
        print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
        """
    )
    env = {"NUMBA_OPT": "0", "NUMBA_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0 and "Cannot cache" not in r.stderr, r.stderr[-2000:]
    assert [r.stdout.split() for r in runs] == [["0", "1"], ["1", "0"]]
