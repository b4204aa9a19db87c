"""What the runtime does around a call of the compiled step besides calling it. Each policy pays
off in long runs and lives in one named place; KGRAPH_PLAIN=1 turns every one off, for debugging
(a breakpoint in a step then lands in the compiled step's own call, with nothing in between):

- background compilation (background.StepCompiler): a new step runs as its Python function while
  a child process compiles it. Plain: the step compiles in this process before its first call.
- the thread tuner (threads.ThreadPlan): each step times its thread settings and keeps the
  fastest. Plain: one setting, the step whole on one thread (BLAS too).
- several steps a call (model.StepsPerCall): fit runs a run of batches in one call. Plain: one
  step a call, even with compile(steps_per_execution=...).
- gc.freeze once a fit's steps have run FREEZE_AFTER_SECONDS (freeze_compiled_objects, here).
- denormals flushed to zero, as TensorFlow does (flush_denormals, here). Plain: IEEE arithmetic.

Loading and compiling a model run with the cyclic garbage collector paused (gc_paused, here; not a
step policy: the plain path keeps it).

One switch is off by default, and the plain path ignores it: KGRAPH_COMPILE_STEPS=0 never compiles
a step; every call runs the step's Python function (background.python_twin), which calls the same
kernels, compiled and cached apart, in the same order: the same numbers without the whole-step
compile, which takes Numba seconds a model. Numba still types each step on its first call, which
raises what its compile would (typecheck.py). The test suite runs so (tests/conftest.py): its many
small models ran a few calls each after compiling. `kgraph compile` then compiles no step."""

from __future__ import annotations

import contextlib
import gc
import os


# False while a command that runs no step runs (kgraph inspect): runtime/executable.py then
# does not load Numba's typing and lowering registries on import (0.4 s that a first step's call
# would otherwise pay; Numba loads them itself if a step is ever compiled), and no compile child
# starts ahead of a step (child.start_spare).
runs_steps = True


def plain() -> bool:
    """KGRAPH_PLAIN=1 (any value but empty or 0): the plain path, every policy off."""
    return os.environ.get("KGRAPH_PLAIN", "") not in ("", "0")


def compile_steps() -> bool:
    """False where KGRAPH_COMPILE_STEPS=0 (and not on the plain path): steps run as their Python
    functions, never compiled."""
    return plain() or os.environ.get("KGRAPH_COMPILE_STEPS", "1") != "0"


def flush_denormals() -> bool:
    """Flush denormals to zero in this thread (denormals.py; denormal arithmetic made long runs
    8x slower); False on the plain path or where the CPU is not x86."""
    if plain():
        return False
    from .denormals import flush_denormals as flush

    return flush()


_frozen_for = None
# fit freezes once its steps have run this long: the collection before the freeze takes tens of
# milliseconds (66 ms after compiling 784-128-10), which a run of a few steps would pay many
# times over (a short run's 24 steps: 5 ms), and which a long run gets back (every few thousand
# steps a full collection cost 30 ms)
FREEZE_AFTER_SECONDS = 2.0


def freeze_compiled_objects(executable) -> bool:
    """Move what exists now (Numba's compiled steps, the IR) out of the garbage collector's reach,
    once for each set of loaded steps (fit calls it once its steps have run FREEZE_AFTER_SECONDS,
    then at each epoch's start, for a step loaded since): its full collections scanned them every
    few thousand steps, 30 ms each (7% of a run of 784-128-10 at batch 32). True when it froze."""
    global _frozen_for
    key = (id(executable), tuple(getattr(executable, "_functions", ())))
    if plain() or key == _frozen_for:
        return False
    gc.collect()
    gc.freeze()
    _frozen_for = key
    return True


@contextlib.contextmanager
def gc_paused():
    """The cyclic garbage collector off while a model loads and compiles (models.py), back on after,
    even on an error. Loading and compiling allocate millions of objects that all stay alive (the
    IR's nodes, the config's dicts), so each generation-2 collection along the way rescanned them
    all for nothing: 20% of a 5,000-layer `kgraph inspect`. Nested pauses re-enable only at the
    outermost; a collector already off (the caller's choice) stays off. Reference counting still
    frees everything without cycles as it goes; the cycles left wait for the next collection."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
