"""KGRAPH_COMPILE_STEPS=0 (policy.py) runs each step as its Python function, never compiled: the
same kernels, compiled and cached apart, called in the same order. What only the compile of the
step would have checked, that Numba can type every line of the generated code in nopython mode,
is still checked: each function of the step's module runs the compile's first stage, Numba's
type inference, on the types of its first call's arguments (a tenth of the compile's time: no
code is generated), and a typing error raises as the compile would have. It types the function
the Python step runs (Numba types a call by compiling its callee, and Python functions it cannot
type), a driver's call against a stand-in (driver_signature) that types the driver's own lines
with the kernels it calls as stand-ins too: the Python step runs the driver's body as Python,
and its every call of a compiled kernel is typed as it runs. Typed against the parallel kernels,
each call compiled its kernel's parallel form, a second or more apiece, most of the test suite's
time; against drivers' serial forms, every kernel a driver calls again (a recurrent driver's every
cell, half a minute of the suite's recurrent checks).

A training step's loop over its steps calls its halves, train_grads and train_apply: typing the
loop would compile them, so only the halves are typed (the loop is the same few lines for every
model, and compiles in the tests of the compiled step)."""

from __future__ import annotations

import inspect

import numba
from numba.core import compiler, typed_passes, types
from numba.core.compiler_lock import global_compiler_lock
from numba.core.compiler_machinery import FunctionPass, register_pass
from numba.core.errors import TypingError
from numba.core.registry import CPUDispatcher
from numba.extending import type_callable

from .serial import is_driver, own_functions, serial_namespace, with_globals


@register_pass(mutates_CFG=False, analysis_only=True)
class _StopAfterTyping(FunctionPass):
    _name = "kgraph_stop_after_typing"

    def __init__(self):
        FunctionPass.__init__(self)

    def run_pass(self, state):
        raise compiler._EarlyPipelineCompletion(state.return_type)


class _TypeOnly(compiler.CompilerBase):
    """Numba's nopython pipeline up to and including type inference."""

    def define_pipelines(self):
        pm = compiler.DefaultPassBuilder.define_untyped_pipeline(self.state)
        pm.add_pass(typed_passes.NopythonTypeInference, "nopython frontend")
        pm.add_pass(_StopAfterTyping, "stop after typing")
        pm.finalize()
        return [pm]


@global_compiler_lock  # as Numba's own compiles: its typing context is not thread-safe (replicas' threads)
def type_check(dispatcher, args, func=None):
    """Type `func` (by default `dispatcher`'s function) for the types of `args` as the
    dispatcher's compile would (its options, nopython mode), generating no code; returns the
    return type, or raises Numba's TypingError."""
    flags = compiler.Flags()
    dispatcher.targetdescr.options.parse_as_flags(flags, dispatcher.targetoptions)
    signature = tuple(numba.typeof(a) for a in args)
    return compiler.compile_extra(
        dispatcher.targetdescr.typing_context,
        dispatcher.targetdescr.target_context,
        func or dispatcher.py_func,
        signature,
        None,
        flags,
        dispatcher.locals,
        pipeline_class=_TypeOnly,
    )


def typed_form(kernel):
    """What Numba types a step's call of `kernel` against: a driver's stand-in, any other kernel
    itself."""
    return driver_signature(kernel) if is_driver(kernel) else kernel


_SIGNATURES: dict = {}


def driver_signature(driver):
    """A stand-in for `driver` that Numba types a call of and that nothing runs: the call's
    arguments are bound to its parameters, and the driver's body is typed for their types (_type_body),
    without compiling the driver or any kernel it calls; None is returned (a driver returns
    nothing: tests/test_kernels.py)."""
    return _stand_in(driver, _type_body)


def _stand_in(kernel, type_body=None):
    """A function Numba types a call of as `kernel`'s (its arguments bound to its parameters, as
    Python would, None returned) and that nothing runs; type_body(kernel, argument types) runs once
    per types."""
    stand_in = _SIGNATURES.get(kernel)
    if stand_in is None:
        func = getattr(kernel, "py_func", kernel)
        name, signature, typed = func.__name__, inspect.signature(func), set()

        def stand_in(*args):
            raise TypeError(f"{name}: a stand-in for typing only")

        @type_callable(stand_in)
        def _typer(context):
            def typer(*args, **kws):
                try:
                    bound = signature.bind(*args, **kws)
                except TypeError as e:
                    raise TypingError(f"{name}(): {e}") from None
                # a parameter left to its default is typed as Numba compiles it: Omitted(default)
                given = len(bound.args)
                bound.apply_defaults()
                args = bound.args[:given] + tuple(types.Omitted(v) for v in bound.args[given:])
                if type_body is not None and args not in typed:
                    type_body(kernel, args)
                    typed.add(args)
                return types.none

            typer.pysig = signature  # Numba folds keywords into place by it
            return typer

        _SIGNATURES[kernel] = stand_in
    return stand_in


def _type_body(driver, argtypes):
    """Numba's type inference of `driver`'s own lines for `argtypes`, as its compile would run it
    (without `parallel`: a prange types as a range), with the kernels it calls as stand-ins but
    its helpers of scalars and views (cpu.SCALAR_HELPERS), whose results it reads: what Numba
    rejects in the driver's lines (a reshape of a view that is not contiguous, say) raises."""
    from ..kernels import cpu

    namespace = dict(driver.py_func.__globals__)
    for name, value in driver.py_func.__globals__.items():
        if name in cpu.PICKERS or (isinstance(value, CPUDispatcher) and name not in cpu.SCALAR_HELPERS):
            namespace[name] = _stand_in(value)
    flags = compiler.Flags()
    options = {k: v for k, v in driver.targetoptions.items() if k != "parallel"}
    driver.targetdescr.options.parse_as_flags(flags, options)
    # called only while typing a call, so under the compiler lock (type_check's, or a compile's)
    result = compiler.compile_extra(
        driver.targetdescr.typing_context,
        driver.targetdescr.target_context,
        with_globals(driver.py_func, namespace),
        tuple(argtypes),
        None,
        flags,
        driver.locals,
        pipeline_class=_TypeOnly,
    )
    if result != types.none:
        raise TypingError(f"{driver.py_func.__name__} returns {result}: a driver returns nothing")


_TWINS: dict = {}


def checked_twin(dispatcher):
    """The step's Python function as background.python_twin runs it (drivers as Python), its own
    module's functions typed by Numba on their first call (typed_form: a driver's call against
    its stand-in)."""
    twin = _TWINS.get(dispatcher)
    if twin is None:
        func = dispatcher.py_func
        own = own_functions(func)
        namespace = serial_namespace(func.__globals__)
        typed_namespace = serial_namespace(func.__globals__, typed_form)
        for name, value in own.items():
            body, typed = with_globals(value.py_func, namespace), with_globals(value.py_func, typed_namespace)
            namespace[name] = _typed_on_first_call(value, body, typed)
        body = with_globals(func, namespace)
        calls_own = (set(func.__code__.co_names) & set(own)) - {func.__name__}
        typed = with_globals(func, typed_namespace)
        twin = _TWINS[dispatcher] = body if calls_own else _typed_on_first_call(dispatcher, body, typed)
    return twin


def _typed_on_first_call(dispatcher, body, typed_body):
    typed = []

    def call(*args):
        if not typed:
            type_check(dispatcher, args, typed_body)
            typed.append(True)
        return body(*args)

    return call
