"""The kernels a new step's first call will compile, in the order it calls them, found without
running any of them: the step's Python function (its own code only) runs once over zero-filled
stand-ins of its arguments, every kernel replaced by a recorder of its argument types.

On an empty cache the first call waits for Numba to compile each kernel in turn (a tenth of a
second or more each, dozens of them). The background child (background.py) takes the list and
compiles it from the last kernel back while this process compiles from the first, each loading
from Numba's cache what the other finished: two cores, about half the wait. Then the child goes
on to compile the step itself.

A trace is a hint, never a result: any surprise (a kernel's value used, an argument it cannot
stand in for) ends it with what it has so far."""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import numba
from numba.core import types
from numba.core.registry import CPUDispatcher

from .abi import StepsArgs
from .serial import (
    array_kind,
    drivers_namespace,
    is_driver,
    own_functions,
    serial_cpu_kernels,
    serial_namespace,
    with_globals,
)

MAX_CALLS = 20_000  # kernel calls, repeats included: a bound on the trace's own time (under 0.2 s)


class _Done(Exception):
    """The trace has run long enough."""


def kernel_calls(dispatcher, args) -> list:
    """[(kernel, signature)] of the kernels `dispatcher`'s Python function (as the step's first
    call runs it, background.python_twin: drivers as Python) calls with `args`, each once,
    first call first."""
    calls: dict = {}  # (kernel, signature) -> None: an ordered set
    count = [0]  # calls recorded, repeats included
    func = dispatcher.py_func
    namespace = serial_namespace(func.__globals__)
    own, library = own_functions(func), serial_cpu_kernels()  # `K.`, as serial_namespace gives it
    for name, value in list(namespace.items()):
        if name in own:
            namespace[name] = with_globals(value.py_func, namespace)
        elif is_driver(func.__globals__.get(name)):  # a generated loop in parts: as Python, recording
            driver = func.__globals__[name].py_func
            namespace[name] = with_globals(driver, _recording_globals(driver.__globals__, calls, count))
        elif isinstance(value, CPUDispatcher):
            namespace[name] = _Recorder(value, calls, count)
        elif value is library:
            namespace[name] = _RecordingModule(calls, count)
    try:
        stand_ins = [_stand_in(a) for a in args]
        if func.__code__.co_varnames[:1] == StepsArgs._fields[:1]:  # n, the steps of a call (abi.py)
            stand_ins[0] = min(args[0], 1)  # one: the others call the same kernels
        with np.errstate(all="ignore"):  # the stand-ins' zeros (a rate of 0): their numbers are never read
            with_globals(func, namespace)(*stand_ins)
    except Exception:  # noqa: BLE001 - _Done, or a surprise: keep what was seen so far
        pass
    return list(calls)


def describe(calls) -> list:
    """The calls as a child process can find them again: (module, file, name, signature)."""
    return [(k.py_func.__module__, inspect.getfile(k.py_func), k.py_func.__name__, sig) for k, sig in calls]


def resolve(module, path, name):
    """The kernel a description names, in this process (a generated one imported from its file)."""
    from .loader import import_file

    source = import_file(path) if module.startswith("kgraph_generated.") else importlib.import_module(module)
    return getattr(source, name)


def compile_all(described, kernel_claims=None) -> None:
    """In the child: compile (or load from the cache) each kernel of `described`, in that order,
    but those the program claimed first (`kernel_claims`: claims.py); one that fails is left to
    the step's own call."""
    for i, (*where, sig) in enumerate(described):
        if kernel_claims is not None and not kernel_claims.take(i):
            continue  # the program is compiling it
        try:
            resolve(*where).compile(sig)
        except Exception:  # noqa: BLE001
            pass
        finally:
            if kernel_claims is not None:
                kernel_claims.done(i)


class _Recorder:
    def __init__(self, kernel, calls: dict, count: list):
        self.kernel, self.calls, self.count = kernel, calls, count
        self.parameters = inspect.signature(kernel.py_func).parameters

    def __call__(self, *args, **kwargs):
        if kwargs:  # Numba folds keywords into place, omitted defaults as Omitted
            bound = inspect.Signature(list(self.parameters.values())).bind(*args, **kwargs)
            values = [bound.arguments.get(p, _OMITTED) for p in self.parameters]
            sig = tuple(
                types.Omitted(p.default) if v is _OMITTED else numba.typeof(v)
                for p, v in zip(self.parameters.values(), values)
            )
        else:
            sig = tuple(_type_of(a) for a in args)
        if self.kernel._can_compile:  # not gemm: compiled for its one signature on import
            self.calls[(self.kernel, sig)] = None
        self.count[0] += 1
        if self.count[0] > MAX_CALLS:
            raise _Done
        return None


def _nothing(*args, **kwargs):
    return None


_OMITTED = object()
_ARRAY_TYPES: dict = {}


def _type_of(value):
    """numba.typeof, from what an array's type depends on (a driver's time loop calls its kernels
    thousands of times with views of the same kinds: typeof itself was most of the trace)."""
    if not isinstance(value, np.ndarray):
        return numba.typeof(value)
    key = array_kind(value)
    if key not in _ARRAY_TYPES:
        _ARRAY_TYPES[key] = numba.typeof(value)
    return _ARRAY_TYPES[key]


class _RecordingModule:
    """The CPU kernels (`K.`) as a step's Python function calls them (serial.twin_form), whose
    compiled kernels record instead of running, and whose drivers run as Python over kernels that
    record (but their helpers of scalars and views, whose results decide what they do next)."""

    def __init__(self, calls: dict, count: list):
        from ..kernels import cpu

        self._calls, self._count = calls, count
        self._driver_globals = _recording_globals(vars(cpu), calls, count)

    def __getattr__(self, name):
        from ..kernels import cpu

        kernel = getattr(cpu, name)
        if name in cpu.VIEWS:  # a buffer's view, which the step reads next: sliced, as the Python step does
            return kernel.python_form
        if getattr(kernel, "python_form", None) is not None:  # a copy or a GEMM: NumPy, nothing to compile
            return _nothing
        if getattr(kernel, "numpy_form", None) is not None:  # NumPy until the child has compiled it
            return _Recorder(kernel, self._calls, self._count)
        if is_driver(kernel):
            return with_globals(kernel.py_func, self._driver_globals)
        value = getattr(serial_cpu_kernels(), name)
        return _Recorder(value, self._calls, self._count) if isinstance(value, CPUDispatcher) else value


def _recording_globals(namespace: dict, calls: dict, count: list) -> dict:
    """The globals a driver (kgraph.kernels.cpu's, or a generated loop's) runs with in the trace:
    its kernels recording, `K.` a recording module, its helpers as Python (drivers_namespace)."""
    from ..kernels import cpu

    recording = {}
    for name, value in namespace.items():
        if isinstance(value, CPUDispatcher):
            value = _Recorder(value, calls, count)
        elif value is cpu:
            value = _RecordingModule(calls, count)
        recording[name] = value
    recording = drivers_namespace(recording)
    # every time step live: over a zero stand-in mask each would look masked, and the trace would
    # miss the kernels of live steps (most of a masked recurrent layer's)
    recording["_any_live"] = lambda mask, k, masked: True
    return recording


def _stand_in(value):
    """A zero-filled array of `value`'s shape, dtype, strides and writeability (so of its Numba
    type), sharing none of its memory; other values as they are."""
    if not isinstance(value, np.ndarray):
        return value
    writeable = value.flags.writeable
    if value.size == 0 or min(value.strides, default=0) < 0:
        out = np.zeros_like(value)
        out.flags.writeable = writeable
        return out
    span = 1 + sum((n - 1) * s for n, s in zip(value.shape, value.strides)) // value.itemsize
    base = np.zeros(span, value.dtype)  # calloc: pages the trace never touches cost nothing
    return np.lib.stride_tricks.as_strided(base, value.shape, value.strides, writeable=writeable)
