"""The serial forms of the parallel kernels, for a step's Python function (background.python_twin,
typecheck.checked_twin).

A parallel kernel (`parallel=True`: im2col, pooling, the split GEMMs, column sums, the generated
loops in parts) runs its `parts` in a `prange` whose parts are independent: each writes its own
rows, or its own row of a scratch array that the kernel then adds in order. Run one after the
other, the parts compute the same floats. Numba's parallel compile costs a second or more a
kernel (the parfor passes, the gufunc), which an empty cache's first step would wait for: 10 of
a small CNN's 14 seconds. So the Python function calls each kernel's serial form (the same
function compiled without parallel=True, where `prange` is `range`): it compiles in a tenth of
the time. The compiled step, which the background child compiles, links the parallel ones."""

from __future__ import annotations

import types

from numba import njit
from numba.core.caching import NullCache
from numba.core.registry import CPUDispatcher

from ..kernels import cpu
from ..kernels.by_type import by_type

_SERIAL: dict = {}
_ORIGINAL: dict = {}  # serial form -> its parallel kernel


def is_parallel(value) -> bool:
    return isinstance(value, CPUDispatcher) and bool(value.targetoptions.get("parallel"))


def serial_form(dispatcher):
    """`dispatcher`'s function compiled without parallel=True. The copy has its own qualified
    name, so Numba caches it in its own file (its cache index does not tell the two apart)."""
    twin = _SERIAL.get(dispatcher)
    if twin is None:
        func = dispatcher.py_func
        copy = with_globals(func, func.__globals__)
        copy.__qualname__ = f"{func.__qualname__}__serial"
        copy.__module__ = func.__module__
        copy.__doc__ = func.__doc__
        options = {k: v for k, v in dispatcher.targetoptions.items() if k not in ("parallel", "nopython")}
        cached = not isinstance(dispatcher._cache, NullCache)  # `cache` is not among the target options
        twin = _SERIAL[dispatcher] = by_type(
            njit(cache=cached, **options)(copy), getattr(dispatcher, "kept_constants", ())
        )
        _ORIGINAL[twin] = dispatcher
    return twin


def original_of(kernel):
    """The parallel kernel of a serial form; any other kernel itself."""
    return _ORIGINAL.get(kernel, kernel)


_SERIAL_CPU = None


def serial_cpu_kernels():
    """kgraph.kernels.cpu with its parallel kernels swapped for their serial forms (`K.` in a
    Python step)."""
    global _SERIAL_CPU
    if _SERIAL_CPU is None:
        module = types.ModuleType(cpu.__name__, cpu.__doc__)
        module.__dict__.update({k: serial_form(v) if is_parallel(v) else v for k, v in vars(cpu).items()})
        _SERIAL_CPU = module
    return _SERIAL_CPU


def serial_namespace(namespace: dict) -> dict:
    """A copy of a generated module's globals where the parallel kernels it calls (the CPU
    library as `K`, its loop kernels in parts) are their serial forms."""
    out = dict(namespace)
    for name, value in namespace.items():
        if value is cpu:
            out[name] = serial_cpu_kernels()
        elif is_parallel(value):
            out[name] = serial_form(value)
    return out


def own_functions(func) -> dict:
    """The compiled functions of `func`'s own generated module (a training step's halves,
    train_grads and train_apply), by name: a Python step runs them as Python too."""
    return {
        name: value
        for name, value in func.__globals__.items()
        if isinstance(value, CPUDispatcher) and value.py_func.__module__ == func.__module__
    }


def with_globals(func, namespace: dict):
    """`func` reading its globals from `namespace` (a step's Python function, calling its
    kernels from serial_namespace)."""
    return types.FunctionType(func.__code__, namespace, func.__name__, func.__defaults__, func.__closure__)
