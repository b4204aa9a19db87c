"""What a step's Python function calls for the parallel kernels (background.python_twin,
kernel_trace.py, typecheck.checked_twin).

A parallel kernel (`parallel=True`: im2col, pooling, the split GEMMs, column sums, the generated
loops in parts) runs its `parts` in a `prange` whose parts are independent: each writes its own
rows, or its own row of a scratch array that the kernel then adds in order. Run one after the
other, the parts compute the same floats. Numba's parallel compile costs a second or more a
kernel (the parfor passes, the gufunc), which an empty cache's first step would wait for: 10 of
a small CNN's 14 seconds. So the Python function calls instead:

- a driver's (kernels/cpu.py `driver`: a kernel that only splits its work, every element loop in
  a kernel it calls) own Python function, which calls those compiled kernels: nothing of its own
  to compile. A compiled copy would link and optimise everything it calls again, into one
  module: two seconds each for a convolution block and its gradient. Every parallel kernel of
  the CPU library is a driver, and so are the generated loops and updates in parts (a driver
  over its `<name>_rows` kernel: codegen/cpu.py); the recurrent time loops too (`rnn_driver`,
  not parallel): as Python they call only their cell's kernels. (Tests check that every
  parallel kernel of the library and of generated steps is a driver: another would compile
  its parallel form in the step's Python function.)

The compiled step, which the background child compiles, links the parallel ones. Numba's type
inference (typecheck.py) types a call by compiling its callee: it types a driver's call against
a stand-in (typecheck.driver_signature) that types the driver's own lines, since the Python step
runs the driver's body as Python, each call of a compiled kernel typed as it runs."""

from __future__ import annotations

import time
import types

import numba
import numpy as np
from numba.core.registry import CPUDispatcher

from ..kernels import cpu
from . import policy


def is_parallel(value) -> bool:
    return isinstance(value, CPUDispatcher) and bool(value.targetoptions.get("parallel"))


def is_driver(value) -> bool:
    return isinstance(value, CPUDispatcher) and getattr(value, "is_driver", False)


def drivers_namespace(kernels: dict) -> dict:
    """The globals a driver runs with as Python: `kernels` (kgraph.kernels.cpu's, or stand-ins for
    them: kernel_trace.py), but cpu.PYTHON_HELPERS (the helpers of scalars and views, and the
    functions that pick a kernel by its constants) as Python functions reading these same
    globals, and the kernels that have a `numpy_form` (kernels/numpy_forms.py) as that form until
    they are compiled (NumPyUntilCompiled)."""
    namespace = {name: until_compiled(value) for name, value in kernels.items()}
    for name in cpu.PYTHON_HELPERS:
        helper = getattr(cpu, name)
        namespace[name] = with_globals(getattr(helper, "py_func", helper), namespace)  # (some are Python already)
    return namespace


_PYTHON: dict = {}


def python_form(driver):
    """A driver's Python function (`prange` is `range` in Python), calling the compiled kernels
    of its module (kgraph.kernels.cpu, or a generated loop's file) but the helpers of
    cpu.PYTHON_HELPERS, which it calls as Python."""
    form = _PYTHON.get(driver)
    if form is None:
        form = _PYTHON[driver] = with_globals(driver.py_func, drivers_namespace(driver.py_func.__globals__))
    return form


def twin_form(kernel):
    """What a step's Python function calls for `kernel`: its NumPy form (kernels/numpy_forms.py:
    always a copy's or a GEMM's `python_form`, the others' `numpy_form` until compiled), a
    driver's Python function, any other kernel itself."""
    if getattr(kernel, "python_form", None) is not None:
        return kernel.python_form
    if getattr(kernel, "numpy_form", None) is not None:
        return until_compiled(kernel)
    return python_form(kernel) if is_driver(kernel) else kernel


def until_compiled(kernel):
    """`kernel` as a step's Python function calls it where it has a `numpy_form`: a
    NumPyUntilCompiled (one a kernel); other values as they are."""
    if getattr(kernel, "numpy_form", None) is None:
        return kernel
    form = _UNTIL_COMPILED.get(kernel)
    if form is None:
        form = _UNTIL_COMPILED[kernel] = NumPyUntilCompiled(kernel)
    return form


class NumPyUntilCompiled:
    """A kernel with a `numpy_form` (kernels/numpy_forms.py: im2col, col2im, max pooling and its
    gradient) as a step's Python function calls it: for each kind of its arguments (their types),
    its NumPy form until this process has the compiled kernel for them, the compiled kernel from
    then on; the same floats either way. On an empty cache the first step then waits for none of
    these kernels to compile (1.7 s of a CNN's), and the compile child compiles them right after
    the kernels that step waits for; their NumPy forms are 2-80x slower, so the compiled ones take
    over as soon as they are in Numba's cache (looked for every LOOK_EVERY seconds). Where no
    child compiles (KGRAPH_COMPILE_STEPS=0), the kernel compiles on its first call, as every other
    kernel does."""

    LOOK_EVERY = 0.5

    def __init__(self, kernel):
        self.kernel, self.numpy_form = kernel, kernel.numpy_form
        self.ready, self._next_look = set(), {}  # kinds of arguments: compiled / when to look again
        self.__name__ = self.__qualname__ = kernel.py_func.__name__

    def __call__(self, *args):
        kinds = _kinds(args)
        if kinds in self.ready:
            return self.kernel(*args)
        now = time.monotonic()
        if now >= self._next_look.get(kinds, 0.0):
            self._next_look[kinds] = now + self.LOOK_EVERY
            if self._available(args):
                self.ready.add(kinds)
                return self.kernel(*args)
        return self.numpy_form(*args)

    def _available(self, args) -> bool:
        from . import background

        if not policy.compile_steps():
            return True
        sig = tuple(numba.typeof(a) for a in args)
        return sig in self.kernel.overloads or background.in_disk_cache(self.kernel, sig)


def _kinds(args) -> tuple:
    """What the Numba types of `args` depend on, cheaper than numba.typeof: an array's
    array_kind, another value's Python type."""
    return tuple(array_kind(a) if isinstance(a, np.ndarray) else type(a) for a in args)


def array_kind(a) -> tuple:
    """What an array's Numba type depends on: dtype, rank, layout, writeability, alignment."""
    flags = a.flags
    return (a.dtype, a.ndim, flags.c_contiguous, flags.f_contiguous, flags.writeable, flags.aligned)


_UNTIL_COMPILED: dict = {}


_CPU_MODULES: dict = {}


def serial_cpu_kernels(form=twin_form):
    """kgraph.kernels.cpu with each kernel as `form` gives it (`K.` in a Python step)."""
    module = _CPU_MODULES.get(form)
    if module is None:
        module = _CPU_MODULES[form] = types.ModuleType(cpu.__name__, cpu.__doc__)
        module.__dict__.update({k: form(v) if isinstance(v, CPUDispatcher) else v for k, v in vars(cpu).items()})
    return module


def serial_namespace(namespace: dict, form=twin_form) -> dict:
    """A copy of a generated module's globals where the kernels it calls (the CPU library as
    `K`, its loop kernels in parts) are as `form` gives them."""
    out = dict(namespace)
    for name, value in namespace.items():
        if value is cpu:
            out[name] = serial_cpu_kernels(form)
        elif is_parallel(value):
            out[name] = form(value)
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
