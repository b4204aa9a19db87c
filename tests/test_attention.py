"""Attention layers (issue 22) as Keras 3 and tf-keras 2 save them: fixtures that
tools/make_tf_fixtures.py wrote (tests/fixtures/attention: both configs, weights, predictions, a
loss and its gradient, each Keras's weights files), through the IR's NumPy interpreter. Training
on the CPU against TensorFlow is test_tf_fidelity.py's (mha_*, attention_*, additive_attention_*)."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest

import ir
import kgraph.models as models
from kgraph.frontend.errors import ConfigError
from kgraph.frontend.model import build_model
from kgraph.frontend.normalize import describe
from kgraph.passes.autodiff import autodiff
from kgraph.passes.loss import add_loss

FIXTURES = Path(__file__).parent / "fixtures" / "attention"
CASES = sorted(p.stem for p in FIXTURES.glob("*.npz"))


def _load(case, version):
    return json.loads((FIXTURES / f"{version}_{case}.json").read_text()), np.load(FIXTURES / f"{case}.npz")


def _feeds(fm, data):
    feeds = {spec.node: data[f"x{k}"] for k, spec in enumerate(fm.inputs)}
    feeds.update({w.node: data[f"w_{i}"] for i, w in enumerate(fm.weights)})
    return feeds


def test_every_layer_has_a_case():
    assert CASES == ["additive", "luong", "mha", "mha_keras_masks", "mha_mask", "scored_keras_masks"]


@pytest.mark.parametrize("version", ["k3", "k2"])
@pytest.mark.parametrize("case", CASES)
def test_predictions_match_tensorflow(case, version):
    config, data = _load(case, version)
    fm = build_model(config)
    g = fm.lower(training=False)
    out = ir.interpret(g, _feeds(fm, data))[g.outputs["output:0"]]
    np.testing.assert_allclose(out, data["pred0" if version == "k3" else "k2_pred0"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("version", ["k3", "k2"])
@pytest.mark.parametrize("case", CASES)
def test_summary_shapes_and_parameter_counts_match_keras(case, version):
    config, data = _load(case, version)
    fm = build_model(config)
    ours = [info for info in fm.layers if info.class_name != "InputLayer"]
    inputs = {ref[0] for ref in describe(config).inputs} | {"input_layer", "input_layer_1", "input_layer_2"}
    keras = [row for row in json.loads(str(data["summary"])) if row[0] not in inputs]  # tf-keras names them otherwise
    assert [(i.params, _lists(i.output_shapes[0])) for i in ours] == [(p, s) for _, s, p in keras]


def _lists(shape):
    """A shape, or a layer's list of shapes (return_attention_scores), as json gives them: lists."""
    return [_lists(d) for d in shape] if isinstance(shape, (list, tuple)) else shape


@pytest.mark.parametrize("case", CASES)
def test_loss_and_gradients_match_tensorflow(case):
    config, data = _load(case, "k3")
    fm = build_model(config)
    g = fm.lower(training=True)
    add_loss(g, [{"name": "sparse_categorical_crossentropy"}])
    grads = autodiff(g, g.outputs["loss"], [w.node for w in fm.weights])
    (y,), (sw,) = g.sources("label"), g.sources("sample_weight")
    env = ir.interpret(g, {**_feeds(fm, data), y.id: data["y0"], sw.id: np.ones(len(data["y0"]), np.float32)})
    np.testing.assert_allclose(env[g.outputs["loss"]], data["loss"], rtol=1e-5)
    for i, w in enumerate(fm.weights):
        np.testing.assert_allclose(
            env[grads[w.node]], data[f"grad_{i}"], rtol=1e-4, atol=1e-6, err_msg=f"gradient of {w.layer}/{w.name}"
        )


@pytest.mark.parametrize("filename", [f"{c}{suffix}" for c in CASES for suffix in (".keras", "_k2.h5", "_k2.keras")])
def test_each_keras_weights_file_loads(filename):
    """Keras 3 keeps MultiHeadAttention's kernels in its query_dense, key_dense, value_dense and
    output_dense groups, tf-keras's .keras archive in _query_dense, ...; tf-keras's .h5 lists them by
    name (query/kernel:0, ...)."""
    data = np.load(FIXTURES / f"{filename.split('.')[0].removesuffix('_k2')}.npz")
    model = models.load_model(FIXTURES / filename, compile=False)
    weights = model.get_weights()
    assert len(weights) == len([k for k in data.files if k.startswith("w_")])
    for i, got in enumerate(weights):
        np.testing.assert_array_equal(got, data[f"w_{i}"])


def test_saved_weights_keep_keras_3s_einsum_groups(tmp_path):
    import h5py

    config, data = _load("mha", "k3")
    model = models.model_from_config(config)
    model.set_weights([data[f"w_{i}"] for i in range(len(model.get_weights()))])
    model.save_weights(tmp_path / "w.weights.h5")
    with h5py.File(tmp_path / "w.weights.h5") as f:
        np.testing.assert_array_equal(f["layers/multi_head_attention/value_dense/vars/1"], data["w_5"])
        np.testing.assert_array_equal(f["layers/multi_head_attention/output_dense/vars/0"], data["w_6"])


@pytest.mark.parametrize("version", ["k3", "k2"])
def test_calls_keep_keyword_tensors_and_options(version):
    """value= / key= tensors (Keras 3: kwargs of __keras_tensor__; tf-keras: a kwargs dict beside
    the query's reference) come after the positional ones, with their names; use_causal_mask too."""
    config, _ = _load("mha", version)
    first, second = [layer for layer in describe(config).layers if layer.class_name == "MultiHeadAttention"]
    assert [r[0] for r in first.calls[0]] == [r[0] for r in describe(config).inputs]  # query, value, key
    assert first.call_names[0][2] == "key" and first.call_names[0][0] is None
    assert second.call_options[0].get("use_causal_mask") is True


def _mha_config(version="k3", **changes):
    config, _ = _load("mha", version)
    config = copy.deepcopy(config)
    layer = next(e for e in config["config"]["layers"] if e["class_name"] == "MultiHeadAttention")
    layer["config"].update(changes.pop("config", {}))
    node = layer["inbound_nodes"][0]
    kwargs = node["kwargs"] if version == "k3" else node[0][3]
    kwargs.update(changes)
    return config


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"return_attention_scores": 1}, "return_attention_scores must be true or false, got 1"),
        ({"config": {"attention_axes": [1, 2]}}, "attention_axes=[1, 2] is not supported"),
        ({"config": {"use_gate": True}}, "use_gate=True is not supported"),
        (
            {"config": {"kernel_constraint": {"class_name": "UnitNorm", "config": {"axis": [0, 2]}}}},
            "constraint axis [0, 2] is not supported: kgraph takes norms over adjacent axes",
        ),
        ({"config": {"num_heads": 0}}, "num_heads must be a positive integer"),
    ],
)
def test_what_is_not_supported_is_refused_in_one_line(changes, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        build_model(_mha_config(**changes))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("version", ["k3", "k2"])
def test_an_attention_mask_of_another_shape_is_refused(version):
    config, _ = _load("mha_mask", version)
    mask = next(e for e in config["config"]["layers"] if e["name"] == "mask")
    mask["config"]["batch_shape" if version == "k3" else "batch_input_shape"] = [None, 4, 4]
    with pytest.raises(ConfigError, match=r"attention_mask \(None, 4, 4\) is not \(None, query steps"):
        build_model(config)


def test_an_attention_mask_trains_on_the_cpu():
    """The compiled step reads the mask as TensorFlow does: its predictions, and the gradient of
    its first SGD step."""
    config, data = _load("mha_mask", "k3")
    model = models.model_from_config(config)
    model.set_weights([data[f"w_{i}"] for i in range(len(model.get_weights()))])
    xs = [data[f"x{k}"] for k in range(3)]
    np.testing.assert_allclose(model.predict(xs, verbose=0), data["pred0"], rtol=1e-5, atol=1e-6)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    before = model.get_weights()
    model.train_on_batch(xs, data["y0"])
    np.testing.assert_allclose(
        before[2] - model.get_weights()[2], 0.01 * data["grad_2"], rtol=1e-4, atol=1e-7
    )  # SGD's default rate times TensorFlow's gradient of the value kernel


def test_a_keyword_tensor_of_another_layer_is_refused():
    config, _ = _load("luong", "k2")
    entry = next(e for e in config["config"]["layers"] if e["class_name"] == "Dense")
    entry["inbound_nodes"][0][0][3]["value"] = ["input_1", 0, 0]
    with pytest.raises(ConfigError, match=r"Dense layer .*keyword arguments \(value\) are not supported"):
        build_model(config)


def _masked_attention_config(cls="Attention"):
    """ids -> Embedding(mask_zero) -> self-attention of class cls -> GlobalAveragePooling1D (masked);
    outputs the attention's and the average."""
    config = {"name": "att", "num_heads": 2, "key_dim": 3} if cls == "MultiHeadAttention" else {"name": "att"}
    return {
        "class_name": "Functional",
        "config": {
            "name": "m",
            "layers": [
                {"class_name": "InputLayer", "name": "ids", "config": {"batch_input_shape": [None, 5], "name": "ids"}},
                {
                    "class_name": "Embedding",
                    "name": "emb",
                    "config": {"name": "emb", "input_dim": 10, "output_dim": 4, "mask_zero": True},
                    "inbound_nodes": [[["ids", 0, 0, {}]]],
                },
                {
                    "class_name": cls,
                    "name": "att",
                    "config": config,
                    "inbound_nodes": [[["emb", 0, 0, {}], ["emb", 0, 0, {}]]],
                },
                {
                    "class_name": "GlobalAveragePooling1D",
                    "name": "pool",
                    "config": {"name": "pool"},
                    "inbound_nodes": [[["att", 0, 0, {}]]],
                },
            ],
            "input_layers": [["ids", 0, 0]],
            "output_layers": [["att", 0, 0], ["pool", 0, 0]],
        },
        "keras_version": "2.15.0",
    }


@pytest.mark.parametrize("cls", ["MultiHeadAttention", "Attention", "AdditiveAttention"])
def test_padding_changes_nothing_the_mask_keeps(cls):
    """With Embedding(mask_zero) masks, padding a batch with more 0 ids changes no output at the
    kept query steps (each sees the same key steps: hidden scores weigh exactly 0), and Attention's
    output at the padded steps is 0; the masked average over the steps is unchanged too."""
    config = _masked_attention_config(cls)
    ids = np.array([[3, 1, 4, 0, 0], [5, 9, 2, 6, 5], [7, 0, 0, 0, 0]], np.float32)
    outs, weights = [], None
    for steps in (5, 8):
        config["config"]["layers"][0]["config"]["batch_input_shape"] = [None, steps]
        fm = build_model(config)
        weights = weights or {w.node: w.value for w in fm.weights}
        g = fm.lower(training=False)
        env = ir.interpret(g, {fm.inputs[0].node: np.pad(ids, ((0, 0), (0, steps - 5))), **weights})
        outs.append((env[g.outputs["output:0"]], env[g.outputs["output:1"]]))
    (a, pooled_a), (b, pooled_b) = outs
    kept = ids > 0
    np.testing.assert_allclose(a[kept], b[:, :5][kept], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled_a, pooled_b, rtol=1e-5, atol=1e-6)
    if cls != "MultiHeadAttention":
        assert np.all(b[:, :5][~kept] == 0) and np.all(b[:, 5:] == 0)


def test_causal_mask_hides_later_steps():
    """A query step's output depends on the value steps up to its own only (the -1e9 Keras adds
    gives exact zeros in the softmax), whatever the later steps hold."""
    config, data = _load("additive", "k3")
    fm = build_model(config)
    g = fm.lower(training=False)
    (node,) = [n.id for n in g.nodes() if n.op == "softmax" and "additive_attention_1" in n.id]
    feeds = _feeds(fm, data)
    v = fm.inputs[1].node
    changed = dict(feeds, **{v: feeds[v].copy()})
    changed[v][:, 2:] += 1.0
    a, b = ir.interpret(g, feeds)[node], ir.interpret(g, changed)[node]
    assert np.all(a[:, 0, 1:] == 0) and np.all(a[:, 1, 2:] == 0)
    np.testing.assert_array_equal(a[:, :2], b[:, :2])


def test_keras_2s_causal_argument_is_use_causal_mask():
    """tf-keras before 2.10 saved Attention(causal=True) in the layer's config, not in its call."""
    config, data = _load("additive", "k2")
    entry = next(e for e in config["config"]["layers"] if e["name"] == "additive_attention_1")
    assert entry["inbound_nodes"][0][0][3].pop("use_causal_mask") is True
    entry["config"]["causal"] = True
    fm = build_model(config)
    g = fm.lower(training=False)
    out = ir.interpret(g, _feeds(fm, data))[g.outputs["output:0"]]
    np.testing.assert_allclose(out, data["k2_pred0"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", ["MultiHeadAttention", "Attention"])
def test_dropout_masks_the_attention_weights_in_training_only(cls):
    """Keras drops attention weights (per sample, head, query and key step), in training only."""
    config, _ = _load("mha" if cls == "MultiHeadAttention" else "luong", "k3")
    for entry in config["config"]["layers"]:
        if entry["class_name"] == cls:
            entry["config"]["dropout"] = 0.25
    fm = build_model(config)
    assert not fm.lower(training=False).sources("rng")
    shapes = [n.type.shape for n in fm.lower(training=True).sources("rng")]
    want = [(ir.BATCH, 2, 5, 4), (ir.BATCH, 2, 5, 5)] if cls == "MultiHeadAttention" else [(ir.BATCH, 5, 4)] * 2
    assert sorted(shapes) == sorted(want)


@pytest.mark.parametrize(
    "case, version", [("mha_keras_masks", "k3"), ("scored_keras_masks", "k3"), ("scored_keras_masks", "k2")]
)
def test_masked_gradients_match_finite_differences(case, version):
    """float64, central differences of the interpreted loss at a few entries of every weight, with
    the Keras masks hiding scores (a padded query step of Keras 3's MultiHeadAttention hides every
    key step: its scores get no gradient). tf-keras's MultiHeadAttention adds -1e9 to such a row,
    where a difference of 1e-6 drowns in the rounding of 1e9: not checked so."""
    config, data = _load(case, version)
    fm = build_model(config, dtype="float64")
    g = fm.lower(training=True)
    add_loss(g, [{"name": "sparse_categorical_crossentropy"}])
    grads = autodiff(g, g.outputs["loss"], [w.node for w in fm.weights])
    (y,), (sw,) = g.sources("label"), g.sources("sample_weight")
    feeds = {k: np.asarray(v, np.float64) for k, v in _feeds(fm, data).items()}
    feeds.update({y.id: data["y0"], sw.id: np.ones(len(data["y0"]))})
    loss, env = g.outputs["loss"], ir.interpret(g, feeds)
    rng = np.random.default_rng(0)
    for w in fm.weights:
        value = feeds[w.node]
        for flat in rng.choice(value.size, size=min(2, value.size), replace=False):
            idx = np.unravel_index(flat, value.shape)
            diffs = []
            for eps in (1e-6, -1e-6):
                moved = value.copy()
                moved[idx] += eps
                diffs.append(ir.interpret(g, {**feeds, w.node: moved})[loss])
            np.testing.assert_allclose(
                env[grads[w.node]][idx],
                (diffs[0] - diffs[1]) / 2e-6,
                rtol=1e-5,
                atol=1e-8,
                err_msg=f"{w.layer}/{w.name}{idx}",
            )
