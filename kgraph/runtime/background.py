"""Compiling a new generated step costs Numba seconds: it links every kernel the step calls into
one module and optimises the whole. The kernels themselves are cached apart (cpu_kernels.py, and
loop kernels shared by hash: loader.shared_kernel), so until the step is compiled the runtime
calls the step's own Python function, which runs the same kernels in the same order: the same
numbers, only each kernel call goes through Numba's dispatcher.

The step compiles meanwhile in a child process into Numba's on-disk cache (a thread would share
the GIL, and every kernel call of the Python step would then wait for it), and the calls switch
over to the compiled step, loaded from that cache, once the child is done. A step already in the
cache loads at once.

On an empty cache the child starts with the step's first call and first compiles, from the last,
the kernels that call is compiling from the first (kernel_trace.py), each kernel by whichever of
the two claims it first (claims.py). A child never outlives its
program, and its CPU time and memory are bounded (child.py): a compile past them ends the child,
and the step compiles in the program on its next call instead.

KGRAPH_BACKGROUND_COMPILE=0 (or KGRAPH_PLAIN=1, kgraph/runtime/policy.py) compiles every step
before its first call, as Numba alone would."""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import numba

from .cache import mark_kernels_compiled
from .child import COMPILER, close, enabled, spawn, wait_for_job, watch_parent
from .claims import Claims, in_program
from .kernel_trace import compile_all, describe, kernel_calls
from .serial import own_functions, serial_namespace, with_globals


def prepare_numba() -> None:
    """Numba loads its typing and lowering registries (about 0.4 s of imports) on the first call of
    any compiled function, or its first compile, from its cache or not: what a program loads on
    import (runtime/executable.py), as TensorFlow and PyTorch set themselves up on import, so that
    a model's first step is only that model's work, and the compile child before its job comes."""
    from numba.core.registry import cpu_target

    cpu_target.typing_context.refresh()
    cpu_target.target_context.refresh()


class StepCompiler:
    """Which callable runs a step now: the compiled dispatcher, or its Python function while the
    dispatcher compiles in a child process."""

    def __init__(self):
        self._jobs: dict = {}  # dispatcher -> [signature, None (first call) or the child]

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
                mark_kernels_compiled()
                return dispatcher
            # The first call runs in Python: the kernels it needs compile (or load) now. Those not
            # in the cache yet, the child starts compiling at once from the last (kernel_trace.py),
            # so the two meet in the middle, then the child compiles the step (finding most of its
            # kernels in the cache). With every kernel cached, the child starts at the next call.
            # Each kernel of the list is claimed by whichever of the two comes to it first
            # (claims.py): the other skips it, or waits for it, rather than compiling it too.
            job = self._jobs[dispatcher] = [sig, None]
            ahead = _missing_kernels(dispatcher, args)
            if ahead:
                kernel_claims = Claims.new()
                directory = kernel_claims.directory if kernel_claims else None
                job[1] = _start(dispatcher, sig, ahead=describe(ahead), claims=directory)
                if kernel_claims:
                    in_program(kernel_claims, ahead, job[1])
                announce_long_compile(dispatcher)
            return python_twin(dispatcher)
        sig, child = job
        if child is None:
            child = job[1] = _start(dispatcher, sig)
            announce_long_compile(dispatcher)
        if child.poll() is None:
            return python_twin(dispatcher)
        close(child)
        return dispatcher  # in the cache now; or the child failed, and this call compiles and raises here

    def compiling(self) -> list:
        """The steps not in the cache when first called: compiling, or compiled since."""
        return list(self._jobs)

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
            close(job[1])

    def stop(self) -> None:
        """End the children still compiling (their steps stay uncompiled): for a program that
        will not call those steps again, such as the benchmarks' one-off models, whose child would
        otherwise take a core from whatever runs next."""
        for child in self._running():
            child.kill()
            child.wait()
            close(child)


# Numba's compile time of a generated step grows faster than its length: CPU seconds measured
# for steps of 400 and 1,090 lines (Dense chains, Adam) at Numba's default optimisation
COMPILE_SECONDS_PER_LINE, COMPILE_GROWTH = 0.0036, 1.4
LONG_COMPILE_SECONDS = 60


def compile_estimate(dispatcher) -> tuple[int, float]:
    """(lines of generated code, about how many CPU seconds Numba takes to compile them) of a
    step's module (a training step compiles its halves, train_grads and train_apply, with it)."""
    lines = Path(inspect.getfile(dispatcher.py_func)).read_text().count("\n")
    return lines, COMPILE_SECONDS_PER_LINE * lines**COMPILE_GROWTH


def announce_long_compile(dispatcher) -> None:
    """Say up front when a step's compile will take minutes (a ~700-layer model's took 14), what
    runs meanwhile, and how to compile it ahead of time."""
    lines, seconds = compile_estimate(dispatcher)
    if seconds < LONG_COMPILE_SECONDS:
        return
    print(
        f"kgraph: {dispatcher.py_func.__name__} is {lines:,} lines of generated code; Numba needs about "
        f"{seconds / 60:.0f} minutes of one core to compile it. It runs uncompiled (slower) until then, and "
        "the compiled step is cached for later runs; `kgraph compile CONFIG` compiles it ahead of time.",
        file=sys.stderr,
        flush=True,
    )


NOTICE_SECONDS = 1.0


@contextmanager
def compile_notice(step: str, module: str):
    """Around a step's first call: when Numba is still compiling NOTICE_SECONDS into it (the kernel
    library on an empty cache, or the step itself when it compiles in this process), one line on
    stderr says what compiles and that it happens once. A call that only loads cached code, or
    ends sooner, says nothing."""
    from numba.core import event

    compiling = []

    class Listener(event.Listener):
        def on_start(self, ev):
            compiling.append(ev.data["dispatcher"].py_func)

        def on_end(self, ev):
            pass

    def say():
        if compiling:
            print(compile_message(step, module, compiling), file=sys.stderr, flush=True)

    timer = threading.Timer(NOTICE_SECONDS, say)
    timer.daemon = True
    with event.install_listener("numba:compile", Listener()):
        timer.start()
        try:
            yield
        finally:
            timer.cancel()


def compile_message(step: str, module: str, functions) -> str:
    """The line compile_notice prints: the step (the functions of its generated `module`) or the
    kernels it calls (kgraph's library, loop kernels shared between steps), or both."""
    step = {"train": "training", "test": "evaluation", "predict": "prediction"}.get(step.split("@")[0], step)
    own = any(f.__module__ == module for f in functions)
    kernels = any(f.__module__ != module for f in functions)
    what = " and ".join(w for w, on in ((f"the {step} step", own), ("kgraph's kernels", kernels)) if on)
    return (
        f"kgraph: compiling {what} with Numba; this happens once on this machine "
        "(once per model for a step): the compiled code is cached and later runs load it."
    )


_TWINS: dict = {}


def python_twin(dispatcher):
    """The step's Python function, calling the Python functions of its own module's compiled
    functions too (a training step calls its halves, train_grads and train_apply): only the
    kernels it calls from elsewhere, compiled or cached apart, run compiled meanwhile, the
    parallel ones (drivers) as Python (serial.py: the same numbers, a fraction of the compile)."""
    twin = _TWINS.get(dispatcher)
    if twin is None:
        func = dispatcher.py_func
        namespace = serial_namespace(func.__globals__)
        for name, value in own_functions(func).items():
            namespace[name] = with_globals(value.py_func, namespace)
        twin = _TWINS[dispatcher] = with_globals(func, namespace)
    return twin


def _missing_kernels(dispatcher, args) -> list:
    """[(kernel, signature)] the step's first call will compile, last first, then those it runs
    in their NumPy forms until they are compiled (serial.NumPyUntilCompiled), first first: the
    child's list (kernel_trace.py); none if the trace fails: it is only a hint."""
    try:
        missing = [(k, s) for k, s in kernel_calls(dispatcher, args) if not in_disk_cache(k, s)]
        numpy_formed = [(k, s) for k, s in missing if getattr(k, "numpy_form", None) is not None]
        return [m for m in missing[::-1] if m not in numpy_formed] + numpy_formed
    except Exception:  # noqa: BLE001 - e.g. a MemoryError for a huge arena's stand-in
        return []


def _start(dispatcher, sig, ahead=(), claims=None) -> subprocess.Popen:
    """The child compiling `sig` of `dispatcher`, after the kernels `ahead` (kernel_trace.describe)
    not claimed in the directory `claims` by this program first (claims.py)."""
    from ..kernels import fingerprint

    payload = pickle.dumps(
        (inspect.getfile(dispatcher.py_func), dispatcher.py_func.__name__, sig, fingerprint(), list(ahead), claims)
    )
    return spawn(COMPILER, payload)


def main() -> None:
    """The child: compile one signature of one generated function into Numba's cache (and
    before it, the kernels the parent's first call is compiling, from the other end)."""
    from ..kernels import fingerprint
    from .loader import import_file

    # maybe started ahead of its job (child.start_spare): the kernels' fingerprint as this process
    # read them, and Numba's typing and lowering registries (0.4 s, the first compile's), first
    fingerprint()
    prepare_numba()
    payload = wait_for_job()
    if not payload:  # no job came: the program ended, or needed none
        return
    path, name, sig, kernels, ahead, claims_directory = pickle.loads(payload)
    watch_parent()
    if fingerprint() != kernels:
        # kgraph's kernels changed on disk since the parent loaded them (an upgrade mid-run): the
        # step would link other kernel files than the parent's and cache them under the step's
        # name, which every later load would then fail to import. The parent compiles it instead.
        sys.exit(f"kgraph's kernels changed since this program started ({kernels} -> {fingerprint()})")
    # the kernels the parent's first call is waiting for, from its last one, but those it claimed
    compile_all(ahead, Claims(claims_directory) if claims_directory else None)
    getattr(import_file(path), name).compile(sig)


def has_cached_code(dispatcher) -> bool:
    """Whether Numba's on-disk cache holds any signature of `dispatcher`."""
    return bool(_cached_signatures(dispatcher))


def in_disk_cache(dispatcher, sig) -> bool:
    """Whether Numba's on-disk cache holds `sig` of `dispatcher`."""
    return sig in _cached_signatures(dispatcher)


def _cached_signatures(dispatcher) -> list:
    """The signatures in `dispatcher`'s index in Numba's on-disk cache, read without loading the
    code. Reads Numba's cache internals; should they change, a step compiles in the child and
    loads from the cache as soon as the child is done."""
    try:
        return [key[0] for key in dispatcher._cache._cache_file._load_index()]
    except Exception:  # noqa: BLE001
        return []
