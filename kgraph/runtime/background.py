"""Compiling a new generated step costs Numba seconds: it links every kernel the step calls into
one module and optimises the whole. The kernels themselves are cached apart (cpu_kernels.py, and
loop kernels shared by hash: loader.shared_kernel), so until the step is compiled the runtime
calls the step's own Python function, which runs the same kernels in the same order: the same
numbers, only each kernel call goes through Numba's dispatcher.

The step compiles meanwhile in a child process into Numba's on-disk cache (a thread would share
the GIL, and every kernel call of the Python step would then wait for it), and the calls switch
over to the compiled step, loaded from that cache, once the child is done. A step already in the
cache loads at once. The child is left to finish if the program ends first: the next run finds
the step in the cache.

KGRAPH_BACKGROUND_COMPILE=0 compiles every step before its first call, as Numba alone would."""
from __future__ import annotations

import inspect
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numba


def enabled() -> bool:
    return os.environ.get("KGRAPH_BACKGROUND_COMPILE", "1") != "0"


class StepCompiler:
    """Which callable runs a step now: the compiled dispatcher, or its Python function while the
    dispatcher compiles in a child process."""

    def __init__(self):
        self._jobs: dict = {}   # dispatcher -> [signature, None (first call) or the child]

    def callable(self, dispatcher, args):
        """`dispatcher` if it runs `args` compiled now (or loads them from the cache at once),
        else its Python function. The argument types are read on the first call only (Numba's
        typeof costs tens of microseconds an array): later calls of a step pass the same types."""
        if not enabled():
            return dispatcher
        job = self._jobs.get(dispatcher)
        if job is None:
            sig = tuple(numba.typeof(a) for a in args)
            if sig in dispatcher.overloads or in_disk_cache(dispatcher, sig):
                return dispatcher
            # The first call runs in Python alone: the kernels it needs compile (or load) now, so
            # the child finds them in the cache rather than compiling them a second time.
            self._jobs[dispatcher] = [sig, None]
            return dispatcher.py_func
        sig, child = job
        if child is None:
            child = job[1] = _start(dispatcher, sig)
        if child.poll() is None:
            return dispatcher.py_func
        return dispatcher   # in the cache now; or the child failed, and this call compiles and raises here

    def _running(self) -> list:
        """The children compiling now."""
        return [job[1] for job in self._jobs.values() if job[1] is not None and job[1].poll() is None]

    def busy(self) -> bool:
        """Whether a child is compiling now (it takes a core)."""
        return bool(self._running())

    def wait(self) -> None:
        """Compile every step that ran in Python so far, and block until all are in the cache
        (benchmarks time the compiled steps; tests)."""
        for dispatcher, job in self._jobs.items():
            if job[1] is None:
                job[1] = _start(dispatcher, job[0])
            job[1].wait()

    def stop(self) -> None:
        """End the children still compiling (their steps stay uncompiled): for a program that
        will not call those steps again, such as the benchmarks' one-off models, whose child would
        otherwise take a core from whatever runs next."""
        for child in self._running():
            child.kill()
            child.wait()


def _start(dispatcher, sig) -> subprocess.Popen:
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    # Silent: it may outlive the program. A failure shows when the caller compiles the step itself.
    child = subprocess.Popen([sys.executable, "-c", "from kgraph.runtime.background import main; main()"],
                             stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    child.stdin.write(pickle.dumps((inspect.getfile(dispatcher.py_func), dispatcher.py_func.__name__, sig)))
    child.stdin.close()
    return child


def main() -> None:
    """The child: compile one signature of one generated function into Numba's cache."""
    from .loader import import_file

    path, name, sig = pickle.loads(sys.stdin.buffer.read())
    getattr(import_file(path), name).compile(sig)


def in_disk_cache(dispatcher, sig) -> bool:
    """Whether Numba's on-disk cache holds `sig` of `dispatcher` (its index, read without loading
    the code). Reads Numba's cache internals; should they change, a step compiles in the child
    and loads from the cache as soon as the child is done."""
    try:
        index = dispatcher._cache._cache_file._load_index()
        return any(key[0] == sig for key in index)
    except Exception:   # noqa: BLE001
        return False
