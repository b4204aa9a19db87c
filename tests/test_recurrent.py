"""Recurrent layers (issue 16) against TensorFlow, through the IR's NumPy interpreter: fixtures that
tools/make_tf_fixtures.py wrote (tests/fixtures/rnn: Keras 3 and tf-keras 2 configs, weights,
predictions, the loss and its gradient). The compiled CPU kernels: tests/test_recurrent_kernels.py."""

import json
from pathlib import Path

import numpy as np
import pytest

import ir
import kgraph.models as models
from kgraph import optimizers
from kgraph.frontend.errors import ConfigError
from kgraph.frontend.model import build_model
from kgraph.passes import run_pipeline
from kgraph.passes.autodiff import autodiff
from kgraph.passes.loss import add_loss

FIXTURES = Path(__file__).parent / "fixtures" / "rnn"
CASES = sorted(p.stem for p in FIXTURES.glob("*.npz"))


def _load(case, version):
    config = json.loads((FIXTURES / f"{version}_{case}.json").read_text())
    return config, np.load(FIXTURES / f"{case}.npz")


def _feeds(fm, data, dtype="float32"):
    feeds = {spec.node: data[f"x{k}"].astype(dtype) for k, spec in enumerate(fm.inputs)}
    feeds.update({w.node: data[f"w_{i}"].astype(dtype) for i, w in enumerate(fm.weights)})
    return feeds


def _loss_graph(fm):
    """The training forward graph, Keras's sparse cross-entropy, and the gradient of every weight."""
    g = fm.lower(training=True)
    add_loss(g, [{"name": "sparse_categorical_crossentropy"}])
    grads = autodiff(g, g.outputs["loss"], [w.node for w in fm.weights])
    ir.verify(g)
    return g, grads


def _label_feeds(g, data, dtype):
    """Labels, unit sample weights, and dropout masks that keep everything (the fixtures' gradients
    are TensorFlow's with dropout off)."""
    (y,), (sw,) = g.sources("label"), g.sources("sample_weight")
    feeds = {y.id: data["y0"], sw.id: np.ones(len(data["y0"]), dtype)}
    feeds.update({n.id: np.ones(n.type.concrete(len(data["y0"])), dtype) for n in g.sources("rng")})
    return feeds


def test_every_case_has_both_configs():
    assert len(CASES) >= 13
    for case in CASES:
        assert (FIXTURES / f"k3_{case}.json").exists() and (FIXTURES / f"k2_{case}.json").exists()


@pytest.mark.parametrize("version", ["k3", "k2"])
@pytest.mark.parametrize("case", CASES)
def test_predictions_match_tensorflow(case, version):
    config, data = _load(case, version)
    fm = build_model(config)
    g = fm.lower(training=False)
    out = ir.interpret(g, _feeds(fm, data))[g.outputs["output:0"]]
    expected = data["pred0" if version == "k3" else "k2_pred0"]  # gru_v1: hard_sigmoid differs
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("version", ["k3", "k2"])
@pytest.mark.parametrize("case", CASES)
def test_summary_shapes_and_parameter_counts_match_keras(case, version):
    config, data = _load(case, version)
    fm = build_model(config)
    ours = [info for info in fm.layers if info.class_name != "InputLayer"]  # tf-keras names them otherwise
    keras = [row for row in json.loads(str(data["summary"])) if not row[0].startswith("input_layer")]
    assert len(ours) == len(keras)
    for info, (name, shape, params) in zip(ours, keras):
        assert info.params == params, name
        got = info.output_shapes[0]
        as_lists = [list(s) for s in got] if isinstance(got, list) else list(got)
        assert as_lists == shape, name


@pytest.mark.parametrize("case", CASES)
def test_loss_and_gradients_match_tensorflow(case):
    config, data = _load(case, "k3")
    fm = build_model(config)
    g, grads = _loss_graph(fm)
    env = ir.interpret(g, {**_feeds(fm, data), **_label_feeds(g, data, "float32")})
    np.testing.assert_allclose(env[g.outputs["loss"]], data["loss"], rtol=1e-5)
    for i, w in enumerate(fm.weights):
        np.testing.assert_allclose(
            env[grads[w.node]], data[f"grad_{i}"], rtol=1e-4, atol=1e-6, err_msg=f"gradient of {w.layer}/{w.name}"
        )


@pytest.mark.parametrize("case", ["bilstm", "mask_merge", "initial_state"])
def test_the_train_pipeline_takes_tensorflows_first_sgd_step(case):
    """The whole train step (loss, autodiff, SGD, fusion, planning) in the interpreter: the
    weights after one step are TensorFlow's gradient step."""
    config, data = _load(case, "k3")
    fm = build_model(config)
    lr = 0.1
    compiled = run_pipeline(
        "train",
        fm.lower(training=True),
        [w.node for w in fm.weights],
        losses=[{"name": "sparse_categorical_crossentropy"}],
        optimizer=("sgd", {}),
    )
    g = compiled.graph
    ir.verify(g)
    feeds = {**_feeds(fm, data), **_label_feeds(g, data, "float32")}
    feeds.update({n.id: np.float32(lr) if n.id == "lr" else np.float64(1) for n in g.sources("scalar")})
    env = ir.interpret(g, feeds)
    np.testing.assert_allclose(env[g.outputs["loss"]], data["loss"], rtol=1e-5)
    for i, w in enumerate(fm.weights):  # update ops wrote the fed arrays in place
        np.testing.assert_allclose(
            feeds[w.node], data[f"w_{i}"] - lr * data[f"grad_{i}"], rtol=1e-5, atol=1e-6, err_msg=f"{w.layer}/{w.name}"
        )


@pytest.mark.parametrize("case", ["mask_zero", "bilstm", "states", "gru_v1", "masking"])
def test_gradients_match_finite_differences(case):
    """float64, central differences of the interpreted loss at a few entries of every weight."""
    config, data = _load(case, "k2")
    fm = build_model(config, dtype="float64")
    g, grads = _loss_graph(fm)
    feeds = {**_feeds(fm, data, "float64"), **_label_feeds(g, data, "float64")}
    env = ir.interpret(g, feeds)
    loss = g.outputs["loss"]
    rng = np.random.default_rng(0)
    for w in fm.weights:
        value = feeds[w.node]
        for flat in rng.choice(value.size, size=min(3, value.size), replace=False):
            idx = np.unravel_index(flat, value.shape)
            diffs = []
            for eps in (1e-6, -1e-6):
                moved = value.copy()
                moved[idx] += eps
                diffs.append(ir.interpret(g, {**feeds, w.node: moved})[loss])
            expected = (diffs[0] - diffs[1]) / 2e-6
            np.testing.assert_allclose(
                env[grads[w.node]][idx], expected, rtol=1e-5, atol=1e-8, err_msg=f"{w.layer}/{w.name}{idx}"
            )


@pytest.mark.parametrize(
    "filename",
    ["bilstm.keras", "bilstm_k2.h5", "cells.keras", "cells_k2.h5", "time_distributed.keras", "time_distributed_k2.h5"],
)
def test_weights_files_written_by_keras_load(filename):
    """Keras 3 keeps a recurrent layer's variables in its cell's group (a Bidirectional's in its
    forward and backward layers' cells); tf-keras's .h5 lists them by name. Both load, and kgraph
    writes Keras 3's layout back."""
    data = np.load(FIXTURES / f"{filename.split('.')[0].removesuffix('_k2')}.npz")
    model = models.load_model(FIXTURES / filename, compile=False)
    expected = [data[f"w_{i}"] for i in range(len(model.get_weights()))]
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "case, group, index",
    [("bilstm", "bidirectional/backward_layer/cell", 4), ("cells", "rnn_1/cell/cells/simple_rnn_cell", 6)],
)
def test_saved_weights_keep_keras_3s_cell_groups(tmp_path, case, group, index):
    config, data = _load(case, "k3")
    model = models.model_from_config(config)
    model.set_weights([data[f"w_{i}"] for i in range(len(model.get_weights()))])
    model.save_weights(tmp_path / "w.weights.h5")
    import h5py

    with h5py.File(tmp_path / "w.weights.h5") as f:
        np.testing.assert_array_equal(f[f"layers/{group}/vars/0"], data[f"w_{index}"])
    again = models.model_from_config(config)
    again.load_weights(tmp_path / "w.weights.h5")
    for got, want in zip(again.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(got, want)


def test_dropout_draws_one_mask_per_sequence_and_none_at_inference():
    """Keras's masks: dropout one keep mask over the input features, recurrent_dropout one over the
    state the recurrent kernel multiplies, each drawn once per sequence; predictions ignore both."""
    config = _lstm_config(dropout=0.25, recurrent_dropout=0.5)
    fm = build_model(config)
    assert not fm.lower(training=False).sources("rng")
    g = fm.lower(training=True)
    shapes = sorted((n.attrs["rate"], n.type.shape) for n in g.sources("rng"))
    assert shapes == [(0.25, ("B", 1, 2)), (0.5, ("B", 3))]
    (rnn,) = [n for n in g.nodes() if n.op == "rnn_sequence"]
    assert rnn.attrs["recurrent_dropout"]


def test_lstm_bias_starts_with_ones_for_the_forget_gate():
    for flag, forget in ((True, 1.0), (False, 0.0)):
        fm = build_model(_lstm_config(unit_forget_bias=flag), seed=0)
        bias = next(w.value for w in fm.weights if w.name == "bias")
        np.testing.assert_array_equal(bias, [0, 0, 0, forget, forget, forget, 0, 0, 0, 0, 0, 0])


def test_gru_reset_after_defaults_to_the_writers_keras():
    """Keras 2.0-2.2 wrote no reset_after and computed h before the reset gate; Keras 3's default is True."""

    def bias_shape(cfg):
        config = _lstm_config(**cfg)
        config["config"]["layers"][1]["class_name"] = "GRU"
        return next(w.shape for w in build_model(config).weights if w.name == "bias")

    assert bias_shape({"implementation": 1}) == (9,)
    assert bias_shape({}) == (2, 9)
    assert bias_shape({"implementation": 1, "reset_after": True}) == (2, 9)


# ---------------------------------------------------------------- masks


def test_masked_steps_carry_the_state():
    """A row padded with zeros gives the LSTM's output of its last real step, as Keras's mask does."""
    config, data = _load("embed_lstm", "k3")
    config = json.loads(json.dumps(config).replace('"mask_zero": false', '"mask_zero": true'))
    fm = build_model(config)
    g = fm.lower(training=False)
    lstm = next(n.id for n in g.nodes() if n.op == "rnn_sequence")
    x = np.array([[3, 5, 7, 0, 0, 0, 0], [3, 5, 7, 9, 0, 0, 0]], np.float32)
    feeds = _feeds(fm, {**data, "x0": x})
    states = ir.interpret(g, feeds)[lstm]
    np.testing.assert_array_equal(states[0, 3:], np.repeat(states[0, 2:3], 4, axis=0))
    assert not np.allclose(states[1, 3], states[1, 2])


# ---------------------------------------------------------------- refusals, one line each


def _lstm_config(**extra):
    layer = {"class_name": "LSTM", "config": {"name": "lstm", "units": 3, **extra}}
    return {
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [{"class_name": "InputLayer", "config": {"batch_shape": [None, 4, 2], "name": "x"}}, layer],
        },
    }


@pytest.mark.parametrize(
    "extra, words",
    [
        ({"stateful": True}, "stateful=True is not supported"),
        ({"unroll": True}, "unroll=True is not supported"),
        ({"time_major": True}, "time_major=True is not supported"),
        ({"dropout": 1.0}, "dropout must be in [0, 1), got 1.0"),
        ({"recurrent_dropout": "x"}, "recurrent_dropout must be in [0, 1)"),
        (
            {"recurrent_constraint": {"class_name": "MaxNorm", "config": {"axis": 2}}},
            "constraint axis 2 is not an axis",
        ),
        ({"activation": "softmax"}, "activation 'softmax' is not supported in a recurrent layer"),
        ({"units": 0}, "units must be a positive integer"),
        ({"units": None, "output_dim": 3}, "Keras 1 recurrent layers are not supported"),
    ],
)
def test_unsupported_arguments_are_refused_in_one_line(extra, words):
    with pytest.raises(ConfigError) as e:
        build_model(_lstm_config(**extra))
    assert words in str(e.value) and "LSTM layer 'lstm'" in str(e.value) and "\n" not in str(e.value)


def _masked_embedding_then(*layers):
    return {
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, 5], "name": "x"}},
                {
                    "class_name": "Embedding",
                    "config": {"name": "e", "input_dim": 9, "output_dim": 2, "mask_zero": True},
                },
                *layers,
            ],
        },
    }


def test_global_max_pooling_drops_the_mask_as_keras_3_does():
    """Keras 3's GlobalMaxPooling1D does not support masking: it warns that it destroys the mask
    and takes the max over every step, the padded ones too (checked against Keras 3.15: a padding
    row of 10s gives 10s); Dot likewise multiplies every step."""
    m = models.model_from_config(
        _masked_embedding_then({"class_name": "GlobalMaxPooling1D", "config": {"name": "gmp"}})
    )
    table = np.arange(18, dtype=np.float32).reshape(9, 2) / 100
    table[0] = 10.0  # the padding id's row
    m.set_weights([table])
    np.testing.assert_array_equal(m.predict(np.array([[1, 2, 0, 0, 0]]), verbose=0), [[10.0, 10.0]])
    np.testing.assert_array_equal(m.predict(np.array([[1, 2, 3, 4, 5]]), verbose=0), [table[1:6].max(0)])


@pytest.mark.parametrize(
    "layer",
    [
        {"class_name": "Rescaling", "config": {"name": "r", "scale": 2.0, "offset": 0.0}},
        {
            "class_name": "Normalization",
            "config": {"name": "r", "axis": -1, "mean": [0.5, 0.5], "variance": [4.0, 4.0]},
        },
    ],
    ids=lambda layer: layer["class_name"],
)
def test_rescaling_and_normalization_pass_the_mask_on_as_keras_3s_do(layer):
    """Keras 3's Rescaling and Normalization (and GroupNormalization, whose statistics take every
    step) support masking: the LSTM after them skips the padded steps, whatever the padding id's
    embedding row holds."""
    lstm = {"class_name": "LSTM", "config": {"name": "lstm", "units": 3}}
    m = models.model_from_config(_masked_embedding_then(layer, lstm), seed=0)
    x = np.array([[1, 2, 0, 0, 0]])
    before = m.predict(x, verbose=0)
    weights = m.get_weights()
    weights[0] = weights[0].copy()
    weights[0][0] = 5.0  # the padding id's row
    m.set_weights(weights)
    np.testing.assert_array_equal(m.predict(x, verbose=0), before)


def test_a_concatenation_of_masked_sequences_along_the_steps_is_refused():
    config = _masked_embedding_then()
    config["class_name"] = "Functional"
    layers = config["config"]["layers"]
    layers[0]["inbound_nodes"] = []
    layers[1]["inbound_nodes"] = [[["x", 0, 0, {}]]]
    layers.append(
        {
            "class_name": "Concatenate",
            "config": {"name": "cat", "axis": 1},
            "inbound_nodes": [[["e", 0, 0, {}], ["e", 0, 0, {}]]],
        }
    )
    config["config"].update(input_layers=[["x", 0, 0]], output_layers=[["cat", 0, 0]])
    with pytest.raises(ConfigError, match="Concatenate layer 'cat': concatenates masked sequences .* along axis 1"):
        build_model(config)


def test_bidirectional_of_a_dense_layer_is_refused():
    config = _lstm_config()
    config["config"]["layers"][1] = {
        "class_name": "Bidirectional",
        "config": {"name": "bi", "layer": {"class_name": "Dense", "config": {"name": "d", "units": 2}}},
    }
    with pytest.raises(ConfigError, match="Bidirectional layer 'bi': wraps 'Dense'"):
        build_model(config)


def test_inspect_shows_the_train_step_and_its_plan(capsys):
    from kgraph.cli import main

    assert main(["inspect", str(FIXTURES / "k3_bilstm.json"), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "%rnn_sequence_grad" in out and "memory plan at batch" in out


TAGGER = {
    "class_name": "Sequential",
    "config": {
        "name": "tagger",
        "layers": [
            {"class_name": "InputLayer", "config": {"batch_shape": [None, 5], "name": "x"}},
            {"class_name": "Embedding", "config": {"name": "e", "input_dim": 9, "output_dim": 2, "mask_zero": True}},
            {"class_name": "Dense", "config": {"name": "d", "units": 3}},
        ],
    },
}


def test_a_masked_outputs_loss_is_its_mean_over_the_kept_steps():
    """Keras's apply_mask: the steps' losses weighted by the output's mask and sample weights, summed,
    divided by the number of kept steps; 0 (not NaN) for a batch with none kept. The fixtures
    tests/fixtures/tf/seq_label_* check it (and the metrics) against TensorFlow's training."""
    model = models.model_from_config(TAGGER, seed=0)
    fm = model.frontend
    g, masks = fm.lower_with_masks(training=True)
    assert fm.masked_outputs == [0] and list(masks) == [0]
    add_loss(g, [{"name": "mean_squared_error"}], masks=masks)
    (y,), (sw,) = g.sources("label"), g.sources("sample_weight")
    rng = np.random.default_rng(0)
    ids = np.array([[3, 1, 0, 0, 0], [0, 0, 0, 0, 0], [2, 8, 4, 6, 5]], np.float32)
    target, weights = rng.normal(size=(3, 5, 3)).astype(np.float32), rng.uniform(size=(3, 5)).astype(np.float32)
    feeds = {**_feeds(fm, {"x0": ids, **{f"w_{i}": w for i, w in enumerate(model.get_weights())}}), y.id: target}
    for x, sws in ((ids, weights), (np.zeros_like(ids), weights)):
        feeds[fm.inputs[0].node] = x
        env = ir.interpret(g, {**feeds, sw.id: sws})
        per_step = np.mean((env[g.outputs["output:0"]] - target) ** 2, axis=-1)
        kept = x != 0
        expected = (per_step * sws * kept).sum() / max(kept.sum(), 1)
        np.testing.assert_allclose(env[g.outputs["loss"]], expected, rtol=1e-6)
        np.testing.assert_array_equal(env[g.outputs["mask:0"]], kept)
    assert env[g.outputs["loss"]] == 0.0
    config = json.loads(json.dumps(TAGGER).replace('"mask_zero": true', '"mask_zero": false'))
    assert models.model_from_config(config).frontend.masked_outputs == []


def test_a_masked_outputs_loss_has_finite_difference_gradients_when_the_mask_depends_on_weights():
    """Dense (no bias: zero steps stay zero) -> Masking -> LSTM -> Dense per step: the mask is a
    function of the first kernel, yet takes no gradient (Keras's has none either)."""
    dense = lambda name, **kw: {"class_name": "Dense", "config": {"name": name, "units": 3, **kw}}
    layers = [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 4, 3], "name": "x"}},
        dense("d0", use_bias=False),
        {"class_name": "Masking", "config": {"name": "mk", "mask_value": 0.0}},
        {"class_name": "LSTM", "config": {"name": "l", "units": 2, "return_sequences": True}},
        dense("d"),
    ]
    fm = build_model({"class_name": "Sequential", "config": {"name": "m", "layers": layers}}, dtype="float64")
    g, masks = fm.lower_with_masks(training=True)
    add_loss(g, [{"name": "mean_squared_error"}], masks=masks)
    grads = autodiff(g, g.outputs["loss"], [w.node for w in fm.weights])
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 4, 3))
    x[0, 2:], x[2, 0] = 0, 0
    (y,), (sw,) = g.sources("label"), g.sources("sample_weight")
    feeds = {fm.inputs[0].node: x, y.id: rng.normal(size=(3, 4, 3)), sw.id: np.ones((3, 4))}
    feeds.update({w.node: rng.normal(size=w.shape) for w in fm.weights})
    env, loss = ir.interpret(g, feeds), g.outputs["loss"]
    np.testing.assert_array_equal(env[g.outputs["mask:0"]], np.abs(x).sum(-1) != 0)
    for w in fm.weights:
        value = feeds[w.node]
        idx = np.unravel_index(rng.integers(value.size), value.shape)
        diffs = []
        for eps in (1e-6, -1e-6):
            moved = value.copy()
            moved[idx] += eps
            diffs.append(ir.interpret(g, {**feeds, w.node: moved})[loss])
        np.testing.assert_allclose(env[grads[w.node]][idx], (diffs[0] - diffs[1]) / 2e-6, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_fit_logs_a_masked_outputs_loss_and_metric_over_the_kept_steps(steps_per_execution):
    """Several batches (in one call each, or two per call): the epoch's loss is the mean of the
    batches' masked losses, its mae the mean over every kept step of the epoch (learning rate 0)."""
    model = models.model_from_config(TAGGER, seed=0)
    model.compile(
        optimizer=optimizers.SGD(learning_rate=0.0),
        loss="mse",
        metrics=["mae"],
        steps_per_execution=steps_per_execution,
    )
    rng = np.random.default_rng(3)
    ids = rng.integers(1, 9, size=(8, 5)).astype(np.float32)
    ids[0, 1:], ids[3, 3:], ids[6, :] = 0, 0, 0
    y = rng.normal(size=(8, 5, 3)).astype(np.float32)
    logs = model.fit(ids, y, batch_size=2, epochs=1, shuffle=False, verbose=0).history
    error, kept = model.predict(ids, verbose=0) - y, ids != 0
    mse, mae = (error**2).mean(-1), np.abs(error).mean(-1)
    batches = [(mse[i : i + 2] * kept[i : i + 2]).sum() / max(kept[i : i + 2].sum(), 1) for i in range(0, 8, 2)]
    np.testing.assert_allclose(logs["loss"][0], np.mean(batches), rtol=1e-5)
    np.testing.assert_allclose(logs["mae"][0], (mae * kept).sum() / kept.sum(), rtol=1e-5)


def test_a_masked_outputs_metrics_are_means_over_the_kept_steps():
    """Keras's MeanMetricWrapper weights the values by the output's mask over all batches; the
    root mean squared error (a Mean of a new tensor) sees no mask."""
    from kgraph.runtime.metrics import RootMeanSquaredError, SparseCategoricalAccuracy

    rng = np.random.default_rng(1)
    acc, hits, kept = SparseCategoricalAccuracy(), 0, 0
    for _ in range(2):
        pred, labels = rng.uniform(size=(4, 5, 3)), rng.integers(0, 3, size=(4, 5))
        mask = rng.integers(0, 2, size=(4, 5)).astype(np.float32)
        acc.update(labels, pred, mask)
        hits, kept = hits + ((pred.argmax(-1) == labels) * mask).sum(), kept + mask.sum()
    np.testing.assert_allclose(acc.result(), hits / kept)
    assert not RootMeanSquaredError.reads_mask


@pytest.mark.parametrize("keras_version, masked", [("3.15.1", False), ("2.15.0", True)])
def test_a_merge_with_an_unmasked_input_drops_the_mask_in_keras_3_only(keras_version, masked):
    """Keras 3's merges pass on no mask when an input has none (checked against TensorFlow: the
    LSTM after Add([Embedding(mask_zero), features]) reads the padded steps); tf-keras's pass on
    the masks the inputs have."""
    layers = [
        {"class_name": "InputLayer", "name": "ids", "config": {"batch_input_shape": [None, 5], "name": "ids"}},
        {"class_name": "InputLayer", "name": "f", "config": {"batch_input_shape": [None, 5, 4], "name": "f"}},
        {
            "class_name": "Embedding",
            "name": "e",
            "config": {"name": "e", "input_dim": 9, "output_dim": 4, "mask_zero": True},
            "inbound_nodes": [[["ids", 0, 0, {}]]],
        },
        {
            "class_name": "Add",
            "name": "add",
            "config": {"name": "add"},
            "inbound_nodes": [[["e", 0, 0, {}], ["f", 0, 0, {}]]],
        },
        {
            "class_name": "LSTM",
            "name": "lstm",
            "config": {"name": "lstm", "units": 2},
            "inbound_nodes": [[["add", 0, 0, {}]]],
        },
    ]
    config = {
        "class_name": "Functional",
        "config": {
            "name": "m",
            "layers": layers,
            "input_layers": [["ids", 0, 0], ["f", 0, 0]],
            "output_layers": [["lstm", 0, 0]],
        },
        "keras_version": keras_version,
    }
    g = build_model(config).lower(training=False)
    assert [n.attrs["masked"] for n in g.nodes() if n.op == "rnn_sequence"] == [masked]
