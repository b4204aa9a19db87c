"""Recurrent layers (issue 16) compiled for the CPU (kgraph/kernels/cpu.py rnn_forward, rnn_backward,
reverse_time): predictions against TensorFlow's for every fixture of tests/fixtures/rnn, a training
step against TensorFlow's gradient (SGD) and a few Adam steps against the IR interpreter's
gradients, and the compiled gradient against finite differences with a mask and go_backwards."""

import json
from pathlib import Path

import numpy as np
import pytest

import ir
import kgraph.models as models
from kgraph.frontend.model import build_model
from kgraph.optimizers import SGD, Adam
from kgraph.passes.autodiff import autodiff
from kgraph.passes.loss import add_loss

FIXTURES = Path(__file__).parent / "fixtures" / "rnn"
CASES = sorted(p.stem for p in FIXTURES.glob("*.npz"))


@pytest.fixture(autouse=True)
def python_steps(monkeypatch):
    """The generated steps run as their Python functions (background.py's twin), calling the
    compiled kernels: the same kernels and numbers, without a Numba compile of each test model's
    step (the example's test in test_cli-like form below compiles one whole)."""
    from kgraph.runtime.background import StepCompiler, python_twin

    monkeypatch.setattr(StepCompiler, "callable", lambda self, dispatcher, args: python_twin(dispatcher))


def _load(case, version="k3"):
    config = json.loads((FIXTURES / f"{version}_{case}.json").read_text())
    return config, np.load(FIXTURES / f"{case}.npz")


def _inputs(data):
    xs = [data[k] for k in sorted(data) if k.startswith("x")]
    return xs[0] if len(xs) == 1 else xs


def _model(config, data, optimizer=None):
    model = models.model_from_config(config, seed=0)
    model.set_weights([data[f"w_{i}"] for i in range(len(model.get_weights()))])
    if optimizer is not None:
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    return model


def _trains(case):
    """Cases whose training step is TensorFlow's fixture: no mask on the output (the fixtures'
    losses are unmasked; tests/fixtures/tf/seq_label_* train masked ones) and no dropout (the
    fixtures' gradients have none)."""
    fm = build_model(_load(case)[0])
    return not fm.masked_outputs and not fm.lower(training=True).sources("rng")


TRAINABLE = [c for c in CASES if _trains(c)]


def test_every_fixture_is_covered():
    assert len(CASES) >= 13 and len(TRAINABLE) >= 9


@pytest.mark.parametrize("version", ["k3", "k2"])
@pytest.mark.parametrize("case", CASES)
def test_compiled_predictions_match_tensorflow(case, version):
    config, data = _load(case, version)
    model = _model(config, data)
    expected = data["pred0" if version == "k3" else "k2_pred0"]  # gru_v1: Keras 2's hard_sigmoid differs
    np.testing.assert_allclose(model.predict(_inputs(data), verbose=0), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", TRAINABLE)
def test_a_compiled_sgd_step_is_tensorflows(case):
    """The loss before the step and the weights after it: w - lr * TensorFlow's gradient."""
    config, data = _load(case)
    lr = 0.1
    model = _model(config, data, SGD(learning_rate=lr))
    loss = model.train_on_batch(_inputs(data), data["y0"])
    np.testing.assert_allclose(loss, data["loss"], rtol=1e-5)
    for i, w in enumerate(model.get_weights()):
        np.testing.assert_allclose(w, data[f"w_{i}"] - lr * data[f"grad_{i}"], rtol=1e-5, atol=1e-6, err_msg=f"w_{i}")


def _interpreted_loss_and_grads(config, weights, data, dtype="float32", masks=None):
    """The IR interpreter's loss and gradients of every weight (float64 when asked); masks: the
    dropout keep masks by rng node (default: keep everything)."""
    fm = build_model(config, dtype=dtype)
    g = fm.lower(training=True)
    add_loss(g, [{"name": "sparse_categorical_crossentropy"}])
    grads = autodiff(g, g.outputs["loss"], [w.node for w in fm.weights])
    xs = _inputs(data)
    xs = xs if isinstance(xs, list) else [xs]
    feeds = {spec.node: x.astype(dtype) for spec, x in zip(fm.inputs, xs)}
    feeds.update({w.node: v.astype(dtype) for w, v in zip(fm.weights, weights)})
    (y,), (sw,) = g.sources("label"), g.sources("sample_weight")
    feeds.update({y.id: data["y0"], sw.id: np.ones(len(data["y0"]), dtype)})
    for n in g.sources("rng"):
        feeds[n.id] = np.ones(n.type.concrete(len(data["y0"])), dtype) if masks is None else masks[n.id].astype(dtype)
    env = ir.interpret(g, feeds)
    return env[g.outputs["loss"]], [env[grads[w.node]] for w in fm.weights]


@pytest.mark.parametrize("case", ["bilstm", "stacked_gru", "gru_v1", "mask_merge", "initial_state"])
def test_compiled_adam_steps_follow_the_interpreter(case):
    """Three Adam steps: each step's loss and weights against Keras's Adam applied to the IR
    interpreter's gradient at the same weights (float64 NumPy)."""
    config, data = _load(case)
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    model = _model(config, data, Adam(learning_rate=lr))
    weights = [data[f"w_{i}"].astype(np.float64) for i in range(len(model.get_weights()))]
    m = [np.zeros_like(w) for w in weights]
    v = [np.zeros_like(w) for w in weights]
    for step in range(1, 4):
        loss, grads = _interpreted_loss_and_grads(config, weights, data)
        np.testing.assert_allclose(model.train_on_batch(_inputs(data), data["y0"]), loss, rtol=1e-5)
        rate = lr * np.sqrt(1 - b2**step) / (1 - b1**step)
        for i, gr in enumerate(grads):
            m[i] += (1 - b1) * (gr - m[i])
            v[i] += (1 - b2) * (gr * gr - v[i])
            weights[i] = weights[i] - rate * m[i] / (np.sqrt(v[i]) + eps)
        for i, w in enumerate(model.get_weights()):
            np.testing.assert_allclose(w, weights[i], rtol=1e-4, atol=2e-6, err_msg=f"step {step} w_{i}")


def _tiny(cell, **layer):
    """Embedding(mask_zero) -> cell(go_backwards) -> Dense(3): the mask and go_backwards in one model."""
    rnn = {"units": 4, "go_backwards": True, **layer}
    return {
        "class_name": "Sequential",
        "config": {
            "name": f"tiny_{cell.lower()}",
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, 6], "name": "x"}},
                {
                    "class_name": "Embedding",
                    "config": {"name": "e", "input_dim": 9, "output_dim": 3, "mask_zero": True},
                },
                {"class_name": cell, "config": {"name": "r", **rnn}},
                {"class_name": "Dense", "config": {"name": "d", "units": 3, "activation": "softmax"}},
            ],
        },
    }


@pytest.mark.parametrize(
    "cell, layer",
    [("LSTM", {}), ("GRU", {}), ("GRU", {"reset_after": False}), ("SimpleRNN", {})],
)
def test_compiled_gradient_matches_finite_differences(cell, layer):
    """The compiled gradient (an SGD step of rate 1) against central differences of the compiled
    loss (float32: a loose bound) and against the float64 interpreter's gradient (a tight one)."""
    config = _tiny(cell, **layer)
    rng = np.random.default_rng(1)
    x = rng.integers(1, 9, size=(5, 6))
    x[0, 4:] = 0  # padding, and a masked step inside a sequence
    x[2, 1] = 0
    data = {"x0": x, "y0": rng.integers(0, 3, size=5)}
    model = models.model_from_config(config, seed=3)
    model.compile(optimizer=SGD(learning_rate=1.0), loss="sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]

    def loss_at(weights):
        model.set_weights(weights)
        return float(model.test_on_batch(x, data["y0"]))

    diffs = {}
    for i, w in enumerate(before):
        for flat in rng.choice(w.size, size=min(3, w.size), replace=False):
            idx = np.unravel_index(flat, w.shape)
            moved = [v.copy() for v in before]
            moved[i][idx] += 1e-2
            up = loss_at(moved)
            moved[i][idx] -= 2e-2
            diffs[i, idx] = (up - loss_at(moved)) / 2e-2
    model.set_weights(before)
    model.train_on_batch(x, data["y0"])
    compiled = [b - a for b, a in zip(before, model.get_weights())]
    for (i, idx), expected in diffs.items():
        np.testing.assert_allclose(compiled[i][idx], expected, rtol=2e-2, atol=2e-4, err_msg=f"w_{i}{idx}")
    _, exact = _interpreted_loss_and_grads(config, before, data, "float64")
    for i, (got, want) in enumerate(zip(compiled, exact)):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6, err_msg=f"w_{i}")


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_a_compiled_step_with_dropout_and_recurrent_dropout_is_the_interpreters(cell):
    """dropout and recurrent_dropout in training: the compiled gradient (an SGD step of rate 1)
    against the float64 interpreter's, fed the keep masks the compiled step drew."""
    config = _tiny(cell, dropout=0.3, recurrent_dropout=0.4)
    rng = np.random.default_rng(2)
    x = rng.integers(1, 9, size=(5, 6))
    x[1, :2] = 0
    data = {"x0": x, "y0": rng.integers(0, 3, size=5)}
    model = models.model_from_config(config, seed=4)
    model.compile(optimizer=SGD(learning_rate=1.0), loss="sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    model.train_on_batch(x, data["y0"])
    compiled = [b - a for b, a in zip(before, model.get_weights())]
    sources = model.compiled["train"].graph.sources("rng")
    masks = {n.id: model.executable.rng_mask("train", n.id, 5) for n in sources}
    assert len(masks) == 2 and all(0 < (m == 0).mean() < 1 for m in masks.values())  # some dropped, some kept
    _, exact = _interpreted_loss_and_grads(config, before, data, "float64", masks)
    for i, (got, want) in enumerate(zip(compiled, exact)):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6, err_msg=f"w_{i}")


def test_the_plan_keeps_the_gates_for_the_backward_pass(capsys):
    from kgraph.cli import main

    assert main(["inspect", str(FIXTURES / "k3_bilstm.json"), "--plan"]) == 0
    out = capsys.readouterr().out
    saved = [line.split() for line in out.splitlines() if "_states:saved" in line]
    assert len(saved) == 4  # two Bidirectional LSTMs: each direction keeps its gates
    for row in saved:  # from the forward node until its backward node, later in the step
        first, last = int(row[-2].strip("[,")), int(row[-1].strip("]"))
        assert last > first
    assert "%rnn_sequence_grad:workspace" in out


def test_the_lstm_text_classifier_example_trains(capsys):
    """examples/lstm_text_classifier.json (Embedding(mask_zero) + LSTM) learns the generated
    reviews with `kgraph train`: good words outnumbering bad ones, wherever they are."""
    from kgraph.cli import main

    example = Path(__file__).parent.parent / "examples" / "lstm_text_classifier.json"
    assert main(["train", str(example), "--data", "reviews", "--epochs", "2", "--seed", "0", "--verbose", "0"]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.split("validation accuracy:")[1].split()[0])
    assert accuracy > 0.8, out


def test_every_rnn_activation_code_is_the_ir_activation():
    """maths.rnn_act / rnn_act_grad by code (in Python) against ir/ops/recurrent.py's act and
    act_grad of the same name: the code table and the IR's activations agree."""
    from ir.ops.recurrent import ACTIVATION_NAMES, act, act_grad
    from kgraph.kernels import maths as E

    assert sorted(E.RNN_ACTIVATIONS) == sorted(ACTIVATION_NAMES)  # every activation a layer may have
    x = np.linspace(-3.1, 3.3, 41)
    for code, name in enumerate(E.RNN_ACTIVATIONS):
        got = np.array([E.rnn_act(code, v) for v in x])
        np.testing.assert_allclose(got, act(name, x), rtol=1e-12, atol=1e-12, err_msg=name)
        got = np.array([E.rnn_act_grad(code, v) for v in x])
        np.testing.assert_allclose(got, act_grad(name, x), rtol=1e-9, atol=1e-12, err_msg=name)


CELL_CASES = [
    ("simple", {}),
    ("lstm", {}),
    ("gru", {"reset_after": True}),
    ("gru", {"reset_after": False}),
    ("lstm", {"activation": "relu", "recurrent_activation": "hard_sigmoid_k2"}),
    ("gru", {"reset_after": True, "activation": "softsign", "recurrent_activation": "hard_sigmoid"}),
]


@pytest.mark.parametrize("everything", [False, True], ids=["plain", "mask-dropout-h0-backwards"])
@pytest.mark.parametrize("cell, extra", CELL_CASES)
def test_the_kernels_match_the_numpy_reference(cell, extra, everything):
    """rnn_forward and rnn_backward called directly (float32) against ir/ops/recurrent.py's loop
    and backward pass through time (float64): every output and gradient, with a step mask, a
    recurrent dropout keep mask, initial states, go_backwards and a GRU's recurrent bias."""
    from ir.ops.recurrent import CELLS, _bptt, _rnn
    from kgraph.codegen.lowering import rnn_codes
    from kgraph.kernels import cpu as K
    from kgraph.passes.recurrent import backward_workspace, forward_workspace, gate_width

    rng = np.random.default_rng(7)
    b, t, h = 3, 5, 4
    g = CELLS[cell] * h
    attrs = {"cell": cell, **extra, "go_backwards": everything}
    flags = {
        "recurrent_bias": everything and cell == "gru" and attrs.get("reset_after", True),
        "masked": everything,
        "recurrent_dropout": everything,
        "initial": everything,
    }
    xp, u = rng.normal(size=(b, t, g)), rng.normal(size=(h, g)) * 0.5
    rb = rng.normal(size=g)
    mask = np.ones((b, t))
    mask[0, 3:], mask[1, 1] = 0, 0
    keep = (rng.random((b, h)) > 0.3) / 0.7
    h0, c0 = rng.normal(size=(b, h)), rng.normal(size=(b, h))
    present = [
        v
        for v, on in ((rb, flags["recurrent_bias"]), (mask, flags["masked"]), (keep, flags["recurrent_dropout"]))
        if on
    ]
    args = [xp, u, *present] + ([h0] + ([c0] if cell == "lstm" else []) if flags["initial"] else [])
    expected = _rnn(*args, **attrs, **flags)
    gout = rng.normal(size=expected.shape)
    grads = _bptt(gout, args, **attrs, **flags)

    f32 = [np.ascontiguousarray(a, np.float32) for a in (xp, u, rb, mask, keep, h0, c0, gout)]
    xp32, u32, rb32, mask32, keep32, h032, c032, g32 = f32
    codes = rnn_codes({"activation": "tanh", "recurrent_activation": "sigmoid", **attrs})
    switches = (everything, bool(attrs.get("reset_after", True)))
    out = np.zeros(expected.shape, np.float32)
    gates = np.zeros((b, t, gate_width(attrs, h)), np.float32)
    ws = np.zeros(b * forward_workspace(attrs, h, saved=True), np.float32)
    K.rnn_forward(xp32, u32, rb32, mask32, keep32, h032, c032, out, gates, ws, *codes, *switches, *flags.values())
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)

    dz, du, drb = np.zeros_like(xp32), np.zeros_like(u32), np.zeros_like(rb32)
    dh0, dc0 = np.zeros_like(h032), np.zeros_like(c032)
    ws = np.zeros(b * backward_workspace(attrs, h, t, with_dxp=True), np.float32)
    K.rnn_backward(
        g32, out, xp32, u32, mask32, keep32, h032, c032, gates, dz, du, drb, dh0, dc0, ws, *codes, *switches,
        *(flags[k] for k in ("masked", "recurrent_dropout", "initial")), True, flags["recurrent_bias"], flags["initial"], flags["initial"] and cell == "lstm",
    )  # fmt: skip
    got = [dz, du] + ([drb] if flags["recurrent_bias"] else []) + [None] * (2 * everything)
    got += ([dh0] + ([dc0] if cell == "lstm" else [])) if flags["initial"] else []
    for k, (mine, ref) in enumerate(zip(got, grads)):
        if ref is not None:
            np.testing.assert_allclose(mine, ref, rtol=1e-4, atol=1e-4, err_msg=f"gradient {k}")


def test_the_fast_tanh_is_eigens_on_float32_and_exact_on_float64():
    """maths.fast_tanh / fast_sigmoid (the recurrent cells' activations) compiled: float32 takes
    Eigen's rational tanh, within 4e-7 of tanh over a dense grid (and odd, and saturating);
    float64 is math.tanh and the exact sigmoid, bit for bit, as the gradient checks need."""
    import math

    from numba import njit

    from kgraph.kernels import maths as E

    @njit
    def both(x, t, s):
        for i in range(x.shape[0]):
            t[i], s[i] = E.fast_tanh(x[i]), E.fast_sigmoid(x[i])

    x = np.concatenate([np.linspace(-20, 20, 2_000_001), np.geomspace(1e-30, 1, 20_001)]).astype(np.float32)
    x = np.concatenate([x, -x])
    t, s = np.empty_like(x), np.empty_like(x)
    both(x, t, s)
    x64 = x.astype(np.float64)
    assert np.abs(t - np.tanh(x64)).max() < 4e-7
    assert np.abs(s - 1 / (1 + np.exp(-x64))).max() < 3e-7
    assert np.array_equal(t[: len(x) // 2], -t[len(x) // 2 :]) and np.abs(t).max() <= 1
    small = np.abs(x) < 4e-4
    assert np.array_equal(t[small], x[small])

    x64 = np.linspace(-30, 30, 10_001)
    t64, s64 = np.empty_like(x64), np.empty_like(x64)
    both(x64, t64, s64)
    assert np.array_equal(t64, [math.tanh(v) for v in x64])
    assert np.array_equal(s64, [E.sigmoid(v) for v in x64])
    assert E.fast_tanh(np.float32(0.5)) == t[np.searchsorted(x[: len(x) // 2], np.float32(0.5))]  # Python too


@pytest.mark.parametrize("cell, extra", CELL_CASES[:4])
def test_steps_where_every_sample_is_masked_skip_their_gemms_bit_for_bit(cell, extra, monkeypatch):
    """A batch padded beyond its longest row (the last steps masked for every sample): the kernels
    skip those steps' recurrent GEMMs, and every output and gradient is what the loop gives
    without skipping (rnn_forward / rnn_backward run as Python with _any_live always True)."""
    from ir.ops.recurrent import CELLS
    from kgraph.codegen.lowering import rnn_codes
    from kgraph.kernels import cpu as K
    from kgraph.passes.recurrent import backward_workspace, forward_workspace, gate_width

    rng = np.random.default_rng(3)
    b, t, h = 3, 7, 5
    f = np.float32
    attrs = {"cell": cell, **extra, "go_backwards": False}
    g = CELLS[cell] * h
    xp, u = rng.normal(size=(b, t, g)).astype(f), (rng.normal(size=(h, g)) * 0.5).astype(f)
    mask = np.ones((b, t), f)
    mask[:, 4:], mask[1, 2:] = 0, 0  # steps 4-6 are padding for every row
    h0, c0 = rng.normal(size=(b, h)).astype(f), rng.normal(size=(b, h)).astype(f)
    rb, keep = np.zeros(g, f), np.zeros((b, h), f)
    codes = rnn_codes({"activation": "tanh", "recurrent_activation": "sigmoid", **attrs})
    switches = (False, bool(attrs.get("reset_after", True)))
    width = 2 * h if cell == "lstm" else h

    def run(forward, backward):
        out, gates = np.zeros((b, t, width), f), np.zeros((b, t, gate_width(attrs, h)), f)
        ws = np.zeros(b * forward_workspace(attrs, h, saved=True), f)
        forward(xp, u, rb, mask, keep, h0, c0, out, gates, ws, *codes, *switches, False, True, False, True)
        gout = np.random.default_rng(4).normal(size=out.shape).astype(f)
        dz, du, dh0, dc0 = np.zeros_like(xp), np.zeros_like(u), np.zeros_like(h0), np.zeros_like(c0)
        ws = np.zeros(b * backward_workspace(attrs, h, t, with_dxp=True), f)
        backward(
            gout, out, xp, u, mask, keep, h0, c0, gates, dz, du, rb, dh0, dc0, ws, *codes, *switches,
            True, False, True, True, False, True, cell == "lstm",
        )  # fmt: skip
        return out, dz, du, dh0, dc0

    skipped = run(K.rnn_forward, K.rnn_backward)
    # as a step's Python function runs them (drivers: runtime/serial.py), the same floats
    from kgraph.runtime import serial

    twin = run(serial.python_form(K.rnn_forward), serial.python_form(K.rnn_backward))
    for name, a, c in zip(("out", "dz", "du", "dh0", "dc0"), skipped, twin):
        np.testing.assert_array_equal(a, c, err_msg=f"{name} as Python")
    monkeypatch.setattr(K, "_any_live", lambda mask, k, masked: True)
    computed = run(K.rnn_forward.py_func, K.rnn_backward.py_func)
    for name, a, c in zip(("out", "dz", "du", "dh0", "dc0"), skipped, computed):
        np.testing.assert_array_equal(a, c, err_msg=name)
    assert np.array_equal(skipped[0][:, 4:], np.repeat(skipped[0][:, 3:4], 3, axis=1))
