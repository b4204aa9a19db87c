"""Kernels compiled once per argument types, never once per constant.

A compiled step passes its kernels constants: a convolution's kernel size and strides, a GEMM's
rows per sample, a recurrent layer's cell and flags. Numba types a constant argument of a call
from compiled code as its value (`Literal[int](25)`) and compiles the callee again for each new
value: 42 forms of gemm_split_m in the test suite, a new im2col, pooling and recurrent loop for
every model's shapes, each compiled anew, and none of them the form that the step's Python twin
(which passes plain ints) had already compiled and cached. A kernel made by `kernel_jit` sees
only the constants' types (int64, bool), so every step and the twin share one compiled form.
The recurrent loops keep their cell and activation codes as constants (`keep`): a compiled step
gets their form for its cell and activations, folded; the twin one form for any."""

from __future__ import annotations

import inspect

from numba import njit
from numba.core import types


# Numba compiles a C-callable wrapper of every function besides the Python one (for cfunc and
# first-class function values), which nothing of kgraph's calls: about 5% of a kernel's compile.
NO_C_WRAPPER = {"no_cfunc_wrapper": True}


def by_type(dispatcher, keep=()):
    """`dispatcher`, compiling (and typing its calls from compiled code) for the arguments' types
    without their literal values, but for the parameters named in `keep`: a constant there is
    compiled in, for code that must fold it (a recurrent cell's activation codes decide its unit
    loop's maths: passed as values, the loop did not vectorise)."""
    template_for = dispatcher.get_call_template
    kept = {i for i, name in enumerate(inspect.signature(dispatcher.py_func).parameters) if name in keep}

    def get_call_template(args, kws):
        args = tuple(a if i in kept else types.unliteral(a) for i, a in enumerate(args))
        return template_for(args, {k: v if k in keep else types.unliteral(v) for k, v in kws.items()})

    dispatcher.get_call_template = get_call_template
    dispatcher.kept_constants = tuple(keep)  # for a copy of it (runtime/serial.py)
    return dispatcher


def kernel_jit(keep=(), **options):
    """numba.njit(**options) for a kernel compiled by argument types (`by_type`), without the C
    ABI wrapper Numba otherwise compiles for every function (NO_C_WRAPPER)."""
    compile_ = njit(**NO_C_WRAPPER, **options)
    return lambda func: by_type(compile_(func), keep)
