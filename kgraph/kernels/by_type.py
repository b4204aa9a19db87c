"""Kernels compiled once per argument types, never once per constant.

A compiled step passes its kernels constants: a convolution's kernel size and strides, a GEMM's
rows per sample, a recurrent layer's cell and flags. Numba types a constant argument of a call
from compiled code as its value (`Literal[int](25)`) and compiles the callee again for each new
value: 42 forms of gemm_split_m in the test suite, a new im2col, pooling and recurrent loop for
every model's shapes, each compiled anew, and none of them the form that the step's Python twin
(which passes plain ints) had already compiled and cached. A kernel made by `kernel_jit` sees
only the constants' types (int64, bool), so every step and the twin share one compiled form."""

from __future__ import annotations

from numba import njit
from numba.core import types


def by_type(dispatcher):
    """`dispatcher`, compiling (and typing its calls from compiled code) for the arguments' types
    without their literal values."""
    template_for = dispatcher.get_call_template

    def get_call_template(args, kws):
        return template_for(tuple(types.unliteral(a) for a in args), {k: types.unliteral(v) for k, v in kws.items()})

    dispatcher.get_call_template = get_call_template
    return dispatcher


def kernel_jit(**options):
    """numba.njit(**options) for a kernel compiled by argument types (`by_type`)."""
    compile_ = njit(**options)
    return lambda func: by_type(compile_(func))
