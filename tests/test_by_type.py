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

    rs = np.random.RandomState(0)
    x, y = rs.rand(4, 28, 28, 1).astype(np.float32), np.eye(10, dtype=np.float32)[rs.randint(0, 10, 4)]
    _one_compiled_step(cnn_bn("by_type", filters=(4,)), "adam", "categorical_crossentropy", x, y)
    kernels = [v for v in vars(cpu).values() if isinstance(v, CPUDispatcher)]
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
    # GRU reset_after=False's loops, under a test of the cell Numba keeps: empty for another cell
    for overload, picker in ((cpu._v1_gates_for_cell, cpu._v1_gates), (cpu._v1_reset_for_cell, cpu._v1_reset)):
        count = len(inspect.signature(overload).parameters)
        cell = list(inspect.signature(overload).parameters).index("cell")
        for code in cpu.CELL_NAMES:
            args = [types.int64] * count
            args[cell] = types.literal(code)
            impl = overload(*args)
            assert (impl is picker) == (code == cpu.GRU), code
            assert impl is picker or (impl.__code__.co_names == () and impl(*args) is None), code
        assert overload(*[types.int64] * count) is picker


def test_a_constant_cells_compiled_rows_compute_the_python_dispatchs_floats():
    """_step_rows and _grad_rows compiled for a constant cell (a SimpleRNN's: its kernels are the
    cheapest to compile) pass their arguments on as the Python dispatch does: the same floats, bit
    for bit, in the `_ts` and the `_any` forms, with a masked sample."""
    from numba import njit

    from kgraph.kernels import cpu
    from kgraph.kernels import rnn_rows as R

    @njit
    def step_rows(xp, rec, rb, gates, h, c, out, mask, k, t, st, act, ract, v1, ts, has_rb, masked):
        cpu._step_rows(xp, rec, rb, gates, h, c, out, mask, k, t, st, 0, act, ract, v1, ts, has_rb, masked)

    @njit
    def grad_rows(g, out, prev, mask, keep, gates, dz, dzs, drec, rhes, hes, direct, dh, dc, t, k, act, ract, ra, v1, ts, masked, dropped):  # fmt: skip
        cpu._grad_rows(g, out, prev, mask, keep, gates, dz, dzs, drec, rhes, hes, direct, dh, dc, t, k, 0, act, ract, ra, v1, ts, masked, dropped)  # fmt: skip

    assert cpu.SIMPLE == 0
    rs = np.random.RandomState(2)
    b, t, h = 3, 4, 5
    seq, row, none = (b, t, h), (b, h), (0, t, h)
    forward = {"xp": seq, "rec": row, "rb": (h,), "gates": seq, "h": row, "c": row, "out": seq}
    backward = {"g": seq, "out": seq, "prev": row, "keep": row, "gates": seq, "dz": seq, "dzs": row}
    backward |= {"drec": none, "rhes": none, "hes": seq, "direct": row, "dh": row, "dc": row}
    mask = np.ones((b, t), np.float32)
    mask[1, 1] = 0  # a masked sample at step 1 (k)
    for ts in (True, False):
        codes = (R.TANH if ts else R.M.RNN_ACTIVATIONS.index("relu"), R.SIGMOID)
        start = {
            k: rs.randn(*shape).astype(np.float32)
            for k, shape in (forward | {"g_" + k: v for k, v in backward.items()}).items()
        }
        runs = []
        for compiled in (True, False):
            a = {k: v.copy() for k, v in start.items()}
            f = [a[k] for k in forward]
            g = [a["g_" + k] for k in backward]
            if compiled:
                step_rows(*f, mask, 1, 2, 3, *codes, False, ts, False, True)
                grad_rows(*g[:3], mask, *g[3:], 2, 1, *codes, False, False, ts, True, True)
            else:  # the Python dispatch, as a driver run as Python calls it
                cpu._step_rows(*f, mask, 1, 2, 3, 0, *codes, False, ts, False, True)
                cpu._grad_rows(*g[:3], mask, *g[3:], 2, 1, 0, *codes, False, False, ts, True, True)
            runs.append(a)
        for k in start:
            np.testing.assert_array_equal(runs[0][k], runs[1][k], err_msg=f"{k}, ts={ts}")
        assert not np.array_equal(runs[0]["out"], start["out"]) and not np.array_equal(runs[0]["g_dz"], start["g_dz"])
