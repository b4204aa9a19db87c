"""The kernels compile once per argument types, not once per constant a step passes them
(kgraph/kernels/by_type.py)."""

import inspect
import uuid
from pathlib import Path

import numpy as np
import pytest
from numba import njit
from numba.core.registry import CPUDispatcher

from kgraph.kernels.by_type import kernel_jit


def _scale(x, k):
    return x * k


def test_a_kernel_compiles_once_for_every_value_of_its_constants():
    by_type, plain = kernel_jit()(_scale), njit(_scale)

    @njit
    def calls(x):
        return by_type(x, 2) + by_type(x, 3) + plain(x, 2) + plain(x, 3)

    assert calls(1.0) == 10.0
    assert [str(s) for s in by_type.signatures] == ["(float64, int64)"]
    # what Numba does without it: a form per value
    assert [str(s) for s in plain.signatures] == ["(float64, Literal[int](2))", "(float64, Literal[int](3))"]


def _one_compiled_step(config, optimizer, loss, x, y=None):
    """One training step of `config` (without y: one predict step), compiled, under a name of its
    own (a step found in the cache would load whole, its kernels inside it), which leaves no file
    in the suite's cache."""
    from kgraph import models

    config = {**config, "config": {**config["config"], "name": f"{config['config']['name']}_{uuid.uuid4().hex}"}}
    model = models.model_from_config(config, seed=0)
    model.compile(optimizer=optimizer, loss=loss)
    try:
        assert np.isfinite(model.train_on_batch(x, y) if y is not None else model.predict(x, verbose=0)).all()
    finally:
        for step in model.executable.steps.values():
            Path(step.module).unlink(missing_ok=True)


def _literal_parameters(kernel) -> set:
    """The parameters that some compiled form of `kernel` has as a constant (Numba's Literal)."""
    names = list(inspect.signature(kernel.py_func).parameters)
    return {names[i] for sig in kernel.signatures for i, t in enumerate(sig) if "Literal" in str(t)}


@pytest.mark.compiled_steps
def test_a_compiled_step_calls_the_kernels_forms_for_types():
    """A compiled convolution step (im2col, the split GEMMs, pooling, with their sizes
    as constants) and the step's Python twin (plain ints) use one form of each kernel."""
    from benchmarks.models import cnn_bn
    from kgraph.kernels import cpu
    from kgraph.runtime import serial

    rs = np.random.RandomState(0)
    x, y = rs.rand(4, 28, 28, 1).astype(np.float32), np.eye(10, dtype=np.float32)[rs.randint(0, 10, 4)]
    _one_compiled_step(cnn_bn("by_type", filters=(4,)), "adam", "categorical_crossentropy", x, y)
    kernels = [v for v in vars(cpu).values() if isinstance(v, CPUDispatcher)]
    kernels += [serial.serial_form(k) for k in kernels if serial.is_parallel(k)]
    called = [k for k in kernels if k.signatures]
    assert {"im2col", "gemm_split_m", "pool2d", "pool2d_grad"} <= {k.py_func.__name__ for k in called}
    for kernel in called:  # (a recurrent loop keeps its cell's codes: the test below)
        assert _literal_parameters(kernel) <= set(getattr(kernel, "kept_constants", ())), kernel


@pytest.mark.compiled_steps
def test_a_compiled_recurrent_step_folds_its_activations():
    """The recurrent loops keep the cell and activation codes as constants: a relu SimpleRNN's
    step calls the time loop's form for relu's code, which passes it on to the unit loop
    (rnn_rows' `_any` form, for other than Keras's default activations), where it folds the
    activation's switch so that the loop vectorises (passed as a value, it ran 2x slower)."""
    from kgraph.kernels import cpu
    from kgraph.kernels import rnn_rows as R

    layers = [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 4, 3], "name": "x"}},
        {"class_name": "SimpleRNN", "config": {"name": "r", "units": 3, "activation": "relu"}},
        {"class_name": "Dense", "config": {"name": "d", "units": 2}},
    ]
    config = {"class_name": "Sequential", "config": {"name": "by_type_rnn", "layers": layers}}
    rs = np.random.RandomState(0)
    _one_compiled_step(config, "sgd", "mse", rs.rand(5, 4, 3).astype(np.float32))  # a predict step: rnn_forward
    assert _literal_parameters(cpu.rnn_forward) == {"cell", "act", "ract"}  # only the kept constants
    names = list(inspect.signature(cpu.rnn_forward.py_func).parameters)
    relu = R.M.RNN_ACTIVATIONS.index("relu")  # the compiled step's form, with relu's code
    assert f"Literal[int]({relu})" in {str(sig[names.index("act")]) for sig in cpu.rnn_forward.signatures}


def test_a_constant_cell_picks_only_its_cells_kernels():
    """The time loops call their samples' loops through _step_rows/_grad_rows: compiled for a
    constant cell (the cell a compiled step passes, kept), only that cell's two kernels (Numba
    drops no branch on a constant argument: all six compiled, half an LSTM step's compile); for
    any cell, all six."""
    from numba.core import types

    from kgraph.kernels import cpu

    for part, overload in (("step", cpu._step_rows_for_cell), ("grad", cpu._grad_rows_for_cell)):
        count = len(inspect.signature(overload).parameters)
        cell = list(inspect.signature(overload).parameters).index("cell")
        for code, name in cpu.CELL_NAMES.items():
            args = [types.int64] * count
            args[cell] = types.literal(code)
            impl = overload(*args)
            called = {c.cell_contents.py_func.__name__ for c in impl.__closure__}
            assert called == {f"_{name}_{part}_rows_ts", f"_{name}_{part}_rows_any"}, (part, name)
        args = [types.int64] * count
        assert overload(*args) is getattr(cpu, f"_{part}_rows")
