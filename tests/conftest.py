import os
import tempfile

import pytest

_tmp = tempfile.gettempdir()
# The suite checks what kernels compute, not how fast: LLVM's -O0 halves Numba's compile time,
# which is most of the suite's.
os.environ.setdefault("NUMBA_OPT", "0")


def _suite_cache(variable, default):
    """The suite's own cache folder, per optimisation level, inside the user's when they set one.
    Numba's cache does not record the level it compiled at, so a user's cache (their
    NUMBA_CACHE_DIR, KGRAPH_CACHE_DIR or kgraph/kernels/__pycache__) that received the suite's -O0
    code would hand it to their later runs, several times slower; and generated steps go to a cache
    of the suite's, so tests never read a stale one from elsewhere."""
    base = os.environ.get(variable) or os.path.join(_tmp, default)
    name = f"kgraph-suite-opt{os.environ['NUMBA_OPT']}"
    return base if os.path.basename(base) == name else os.path.join(base, name)  # xdist workers: set


os.environ["KGRAPH_CACHE_DIR"] = _suite_cache("KGRAPH_CACHE_DIR", "kgraph-test-cache")
os.environ["NUMBA_CACHE_DIR"] = _suite_cache("NUMBA_CACHE_DIR", "kgraph-test-numba-cache")
os.environ.setdefault("OMP_WAIT_POLICY", "passive")
# Each test model's step compiles before its first call, as Numba alone would: a child compiler per
# model would run beside the tests. tests/test_background.py checks the background compilation.
os.environ.setdefault("KGRAPH_BACKGROUND_COMPILE", "0")
# Nor does it compile at all (kgraph/runtime/policy.py, KGRAPH_COMPILE_STEPS): each call runs the
# step's Python function, which calls the same kernels, compiled and cached apart (shared between
# models), in the same order: the same numbers, without Numba compiling each test model's step,
# which was most of the suite's time. Tests of the compiled step itself are marked compiled_steps.
os.environ.setdefault("KGRAPH_COMPILE_STEPS", "0")


# The slowest tests (each a fresh process: the CUDA simulator's checks, background compiles) go to
# the workers first, so that no worker is left with one of them after the others have finished.
_SLOW_FIRST = ("test_cuda.py", "test_cuda_replicas.py", "test_background.py", "test_recurrent_kernels.py")


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name not in _SLOW_FIRST)  # stable: keeps the order within each


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
