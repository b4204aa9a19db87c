import os
import tempfile

import pytest

_tmp = tempfile.gettempdir()
# generated steps go to a per-suite cache, so tests never read a stale one from elsewhere
os.environ.setdefault("KGRAPH_CACHE_DIR", os.path.join(_tmp, "kgraph-test-cache"))
# The suite checks what kernels compute, not how fast: LLVM's -O0 halves Numba's compile time,
# which is most of the suite's. Its compiled code goes to a cache of its own so that a user's
# optimised caches (kgraph/kernels/__pycache__) never receive -O0 code.
os.environ.setdefault("NUMBA_OPT", "0")
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.join(_tmp, "kgraph-test-numba-cache"))
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
# Each test model's step compiles before its first call, as Numba alone would: a child compiler per
# model would run beside the tests. tests/test_background.py checks the background compilation.
os.environ.setdefault("KGRAPH_BACKGROUND_COMPILE", "0")
# Nor does it compile at all (kgraph/runtime/policy.py, KGRAPH_COMPILE_STEPS): each call runs the
# step's Python function, which calls the same kernels, compiled and cached apart (shared between
# models), in the same order: the same numbers, without Numba compiling each test model's step,
# which was most of the suite's time. Tests of the compiled step itself are marked compiled_steps.
os.environ.setdefault("KGRAPH_COMPILE_STEPS", "0")


def pytest_configure(config):
    config.addinivalue_line("markers", "compiled_steps: the test's steps compile, as outside the suite")


@pytest.fixture(autouse=True)
def _compiled_steps(request, monkeypatch):
    if request.node.get_closest_marker("compiled_steps"):
        monkeypatch.setenv("KGRAPH_COMPILE_STEPS", "1")


@pytest.fixture
def calls(monkeypatch):
    """The `steps` of every call of a train step (tests of steps per call and of the plain path)."""
    from kgraph.runtime.executable import Executable  # here: numba loads after the settings above

    seen = []
    run = Executable.run

    def counting(self, kind, *args, **kwargs):
        if kind == "train":
            seen.append(kwargs.get("steps", 1))
        return run(self, kind, *args, **kwargs)

    monkeypatch.setattr(Executable, "run", counting)
    return seen
