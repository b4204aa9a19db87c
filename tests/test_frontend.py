"""The Keras frontend: every config dialect, predictions against Keras's, weights order, summary,
and the errors a bad config gets. Needs no TensorFlow and no Numba compilation."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

import ir
from kgraph.frontend import ConfigError, build_model, parse_config_text, read_config_file

FIXTURES = Path(__file__).parent / "fixtures" / "configs"
CONFIGS = sorted(FIXTURES.glob("k*.json"))
NPZ_OF = {"two_input": "two_input_concat"}  # handwritten k21 files named differently


def _arch(path):
    arch = path.stem.split("_", 1)[1]
    return NPZ_OF.get(arch, arch)


def _predict(model, inputs, weights):
    feeds = {spec.node: x for spec, x in zip(model.inputs, inputs)}
    feeds.update({spec.node: w for spec, w in zip(model.weights, weights)})
    graph = model.lower(training=False)
    env = ir.interpret(graph, feeds)
    return [env[graph.outputs[f"output:{k}"]] for k in range(len(model.output_names))]


# ---------------------------------------------------------------- Keras's own configs


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_fixture_parses_in_every_format(path):
    config = read_config_file(path)
    text = path.read_text()
    assert parse_config_text(text) == config
    assert parse_config_text(text, "json") == config
    assert parse_config_text(yaml.safe_dump(config), "yaml") == config
    assert parse_config_text(yaml.safe_dump(config)) == config  # sniffed
    model = build_model(config, seed=0)
    assert model.class_name in ("Sequential", "Functional")


@pytest.mark.parametrize("path", [p for p in CONFIGS if (FIXTURES / f"{_arch(p)}.npz").exists()], ids=lambda p: p.stem)
def test_fixture_predictions_match_keras(path):
    data = np.load(FIXTURES / f"{_arch(path)}.npz")
    model = build_model(read_config_file(path), seed=0)
    if "w_0" in data.files:
        weights = [data[f"w_{k}"] for k in range(len(model.weights))]
        assert f"w_{len(model.weights)}" not in data.files
        assert [w.shape for w in weights] == [w.shape for w in model.weights]
        assert [w.value.shape for w in model.weights] == [w.shape for w in model.weights]
    else:
        weights = [w.value for w in model.weights]
        assert not weights
    inputs = [data[f"x{k}"] for k in range(len(model.inputs))]
    assert [x.shape[1:] for x in inputs] == [i.shape[1:] for i in model.inputs]
    prefix = "k2_" if path.stem.startswith("k2_") and "k2_pred0" in data.files else ""
    outs = _predict(model, inputs, weights)
    for k, out in enumerate(outs):
        np.testing.assert_allclose(out, data[f"{prefix}pred{k}"], rtol=1e-5, atol=1e-6)
    assert f"{prefix}pred{len(outs)}" not in data.files


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_summary_shapes_and_totals(path):
    model = build_model(read_config_file(path), seed=0)
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert text.startswith(f'Model: "{model.name}"')
    assert f" Total params: {model.count_params():,} (" in text
    for info in model.layers:  # a long "name (Class)" wraps at the space, as rich does
        assert info.name[:20] in text and f"({info.class_name.removeprefix('op:')})"[:20] in text
        assert f"{info.params:,}" in text


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in CONFIGS
        if (FIXTURES / f"{_arch(p)}.npz").exists() and "summary" in np.load(FIXTURES / f"{_arch(p)}.npz").files
    ],
    ids=lambda p: p.stem,
)
def test_summary_rows_match_keras(path):
    """Each layer's output shape, parameter count and trainable count as Keras 3 reports them."""
    model = build_model(read_config_file(path), seed=0)
    keras_rows = json.loads(str(np.load(FIXTURES / f"{_arch(path)}.npz")["summary"]))
    ours = {info.name: info for info in model.layers}
    for name, shape, params, trainable in keras_rows:
        info = ours[name]
        assert list(info.output_shapes[-1]) == shape, name
        assert (info.params, info.trainable_params) == (params, trainable), name


# the exact text Keras 3.15 prints for the fixtures (rich table, 88 or 108 columns)
SEQ_MLP_SUMMARY = """\
Model: "sequential"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┓
┃ Layer (type)                         ┃ Output Shape                ┃         Param # ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━┩
│ dense (Dense)                        │ (None, 16)                  │             144 │
├──────────────────────────────────────┼─────────────────────────────┼─────────────────┤
│ dropout (Dropout)                    │ (None, 16)                  │               0 │
├──────────────────────────────────────┼─────────────────────────────┼─────────────────┤
│ dense_1 (Dense)                      │ (None, 3)                   │              51 │
└──────────────────────────────────────┴─────────────────────────────┴─────────────────┘
 Total params: 195 (780.00 B)
 Trainable params: 195 (780.00 B)
 Non-trainable params: 0 (0.00 B)"""

SHARED_SUMMARY = """\
Model: "shared_layer"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━━━━━┓
┃ Layer (type)                  ┃ Output Shape              ┃         Param # ┃ Connected to               ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━━━━━┩
│ left (InputLayer)             │ (None, 6)                 │               0 │ -                          │
├───────────────────────────────┼───────────────────────────┼─────────────────┼────────────────────────────┤
│ right (InputLayer)            │ (None, 6)                 │               0 │ -                          │
├───────────────────────────────┼───────────────────────────┼─────────────────┼────────────────────────────┤
│ shared (Dense)                │ (None, 4)                 │              28 │ left[0][0], right[0][0]    │
├───────────────────────────────┼───────────────────────────┼─────────────────┼────────────────────────────┤
│ sum (Add)                     │ (None, 4)                 │               0 │ shared[0][0], shared[1][0] │
└───────────────────────────────┴───────────────────────────┴─────────────────┴────────────────────────────┘
 Total params: 28 (112.00 B)
 Trainable params: 28 (112.00 B)
 Non-trainable params: 0 (0.00 B)"""


@pytest.mark.parametrize("name, expected", [("k3_seq_mlp", SEQ_MLP_SUMMARY), ("k3_shared_layer", SHARED_SUMMARY)])
def test_summary_is_keras3_text(name, expected):
    path = FIXTURES / f"{name}.json"
    if not path.exists():
        pytest.skip(f"{path.name} not generated")
    lines = []
    build_model(read_config_file(path)).summary(print_fn=lines.append)
    assert "\n".join(lines) == expected


# ---------------------------------------------------------------- handwritten configs, one per dialect


def k2_dense(name, units, activation="linear", **extra):
    cfg = {
        "name": name,
        "units": units,
        "activation": activation,
        "use_bias": True,
        "kernel_initializer": {
            "class_name": "VarianceScaling",
            "config": {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": None},
        },
        "bias_initializer": {"class_name": "Zeros", "config": {}},
        **extra,
    }
    return {"class_name": "Dense", "config": cfg}


def k2_node(layer, *refs):
    return {**layer, "name": layer["config"]["name"], "inbound_nodes": [[[r[0], r[1], 0, {}] for r in refs]]}


def k2_input(name, dim):
    return {
        "class_name": "InputLayer",
        "name": name,
        "inbound_nodes": [],
        "config": {"batch_input_shape": [None, dim], "dtype": "float32", "name": name},
    }


def k3_tensor(name, index=0):
    return {
        "class_name": "__keras_tensor__",
        "config": {"shape": [None, 1], "dtype": "float32", "keras_history": [name, index, 0]},
    }


def k3_layer(cls, name, inbound=(), **cfg):
    """A Keras 3 layer entry; `inbound`: one args list per call."""
    dtype = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}
    return {
        "module": "keras.layers",
        "class_name": cls,
        "registered_name": None,
        "name": name,
        "config": {"name": name, "trainable": True, "dtype": dtype, **cfg},
        "inbound_nodes": [{"args": list(args), "kwargs": {}} for args in inbound],
    }


def k3_input(name, dim):
    return {
        "module": "keras.layers",
        "class_name": "InputLayer",
        "registered_name": None,
        "name": name,
        "config": {"batch_shape": [None, dim], "dtype": "float32", "name": name},
        "inbound_nodes": [],
    }


def k3_functional(model_name, layers, inputs, outputs, **entry):
    return {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "registered_name": "Functional",
        "config": {
            "name": model_name,
            "trainable": True,
            "layers": layers,
            "input_layers": inputs,
            "output_layers": outputs,
        },
        **entry,
    }


def _dense(x, w, b):
    return x @ w + b


def test_keras21_sequential_bare_list_of_layers():
    config = {
        "class_name": "Sequential",
        "keras_version": "2.1.6",
        "config": [
            {
                **k2_dense("dense_1", 5, "relu"),
                "config": {**k2_dense("dense_1", 5, "relu")["config"], "batch_input_shape": [None, 3]},
            },
            {"class_name": "Dropout", "config": {"name": "dropout_1", "rate": 0.5}},
            k2_dense("dense_2", 2, "softmax"),
        ],
    }
    model = build_model(config, seed=1)
    assert model.class_name == "Sequential"
    assert [(i.name, i.shape) for i in model.inputs] == [("dense_1_input", (None, 3))]
    assert [(w.layer, w.name, w.shape) for w in model.weights] == [
        ("dense_1", "kernel", (3, 5)),
        ("dense_1", "bias", (5,)),
        ("dense_2", "kernel", (5, 2)),
        ("dense_2", "bias", (2,)),
    ]
    x = np.random.default_rng(0).random((4, 3)).astype("float32")
    (y,) = _predict(model, [x], [w.value for w in model.weights])
    h = np.maximum(_dense(x, *[w.value for w in model.weights[:2]]), 0)
    z = _dense(h, *[w.value for w in model.weights[2:]])
    np.testing.assert_allclose(y, np.exp(z) / np.exp(z).sum(-1, keepdims=True), rtol=1e-5)
    assert [info.name for info in model.layers] == ["dense_1", "dropout_1", "dense_2"]


def test_keras2_nested_functional_counts_its_own_first_node():
    inner = {
        "class_name": "Functional",
        "name": "inner",
        "config": {
            "name": "inner",
            "layers": [k2_input("ii", 3), k2_node(k2_dense("d", 2, "tanh"), ("ii", 0))],
            "input_layers": [["ii", 0, 0]],
            "output_layers": [["d", 0, 0]],
        },
        "inbound_nodes": [[["a", 0, 0, {}]], [["b", 0, 0, {}]]],
    }
    config = {
        "class_name": "Functional",
        "keras_version": "2.15.0",
        "config": {
            "name": "outer",
            "layers": [
                k2_input("a", 3),
                k2_input("b", 3),
                inner,
                k2_node({"class_name": "Subtract", "config": {"name": "sub"}}, ("inner", 1), ("inner", 2)),
            ],
            "input_layers": [["a", 0, 0], ["b", 0, 0]],
            "output_layers": [["sub", 0, 0], ["inner", 2, 0]],
        },
    }
    model = build_model(config, seed=2)
    assert [(w.layer, w.path, w.node) for w in model.weights] == [
        ("d", ("inner",), "inner_d_kernel"),
        ("d", ("inner",), "inner_d_bias"),
    ]
    rng = np.random.default_rng(1)
    a, b = rng.random((2, 3)).astype("float32"), rng.random((2, 3)).astype("float32")
    w = [s.value for s in model.weights]
    diff, second = _predict(model, [a, b], w)
    np.testing.assert_allclose(diff, np.tanh(_dense(a, *w)) - np.tanh(_dense(b, *w)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second, np.tanh(_dense(b, *w)), rtol=1e-5)
    assert model.layers[2].params == 8 and model.layers[2].inbound == ["a", "b"]


def test_keras3_nested_functional_shared_and_serialized_activation():
    inner = k3_functional(
        "inner",
        [k3_input("ii", 3), k3_layer("Dense", "d", [[k3_tensor("ii")]], units=2, activation="relu")],
        [["ii", 0, 0]],
        [["d", 0, 0]],
        name="inner",
        inbound_nodes=[{"args": [k3_tensor("a")], "kwargs": {}}, {"args": [k3_tensor("b")], "kwargs": {}}],
    )
    act = {"module": "keras.activations", "class_name": "function", "config": "sigmoid", "registered_name": "function"}
    config = k3_functional(
        "outer",
        [
            k3_input("a", 3),
            k3_input("b", 3),
            inner,
            k3_layer("Maximum", "mx", [[[k3_tensor("inner", 0), k3_tensor("inner", 1)]]]),
            k3_layer("Activation", "act", [[k3_tensor("mx")]], activation=act),
        ],
        [["a", 0, 0], ["b", 0, 0]],
        [["act", 0, 0], ["inner", 2, 0]],
    )  # Keras 3 offsets output_layers only
    model = build_model(config, seed=3)
    assert model.output_names == ["act", "inner"]
    rng = np.random.default_rng(2)
    a, b = rng.random((2, 3)).astype("float32"), rng.random((2, 3)).astype("float32")
    w = [s.value for s in model.weights]
    out, second = _predict(model, [a, b], w)
    ra, rb = np.maximum(_dense(a, *w), 0), np.maximum(_dense(b, *w), 0)
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-np.maximum(ra, rb))), rtol=1e-5)
    np.testing.assert_allclose(second, rb, rtol=1e-5)


def _one_activation(name, keras3):
    if keras3:
        return k3_functional(
            "m",
            [k3_input("x", 4), k3_layer("Activation", "act", [[k3_tensor("x")]], activation=name)],
            [["x", 0, 0]],
            [["act", 0, 0]],
        )
    return {
        "class_name": "Functional",
        "keras_version": "2.15.0",
        "config": {
            "name": "m",
            "layers": [
                k2_input("x", 4),
                k2_node({"class_name": "Activation", "config": {"name": "act", "activation": name}}, ("x", 0)),
            ],
            "input_layers": [["x", 0, 0]],
            "output_layers": [["act", 0, 0]],
        },
    }


def test_hard_sigmoid_follows_the_keras_that_wrote_the_config():
    x = np.array([[-4.0, -1.0, 1.0, 2.6]], "float32")
    (k3,) = _predict(build_model(_one_activation("hard_sigmoid", True)), [x], [])
    (k2,) = _predict(build_model(_one_activation("hard_sigmoid", False)), [x], [])
    np.testing.assert_allclose(k3, np.clip(x / 6 + 0.5, 0, 1), rtol=1e-6)
    np.testing.assert_allclose(k2, np.clip(0.2 * x + 0.5, 0, 1), rtol=1e-6)


def test_yaml_with_python_tuples_as_keras2_writes_it():
    text = """\
class_name: Sequential
keras_version: 2.2.4
config:
  name: s
  layers:
  - class_name: Dense
    config: {name: d, units: 2, activation: linear, batch_input_shape: !!python/tuple [null, 3],
             kernel_regularizer: {class_name: L1L2, config: {l1: 0.0, l2: 9.999999747378752e-05}}}
"""
    model = build_model(parse_config_text(text))
    assert model.inputs[0].shape == (None, 3)
    assert model.weights[0].regularizer == {"l1": 0.0, "l2": 9.999999747378752e-05}
    assert model.weights[1].regularizer is None


# ---------------------------------------------------------------- lowering


def _dropout_model(rate=0.5):
    return {
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {"class_name": "InputLayer", "config": {"name": "x", "batch_input_shape": [None, 3]}},
                k2_dense("d", 4, "relu"),
                {"class_name": "Dropout", "config": {"name": "drop", "rate": rate}},
                k2_dense("out", 2),
            ],
        },
    }


def test_lower_ids_are_stable_and_dropout_masks_only_when_training():
    model = build_model(_dropout_model(), seed=0)
    train, infer = model.lower(training=True), model.lower(training=False)
    for g in (train, infer, model.lower(training=True)):
        ir.verify(g)
        assert [n.id for n in g.sources("input")] == [i.node for i in model.inputs]
        assert [n.id for n in g.sources("param")] == [w.node for w in model.weights]
        assert g.type(model.inputs[0].node) == ir.TensorType(("B", 3), "float32")
    (mask,) = train.sources("rng")
    assert mask.attrs == {"rate": 0.5, "layer": "drop"} and mask.type.shape == ("B", 4)
    assert [u.op for u in train.users(mask.id)] == ["mul"]
    assert not infer.sources("rng")
    assert list(infer.outputs) == ["output:0"]
    assert "d_matmul" in str(infer) and "relu(" in str(infer)


def test_dense_is_matmul_add_activation():
    g = build_model(_dropout_model()).lower(training=False)
    ops = [n.op for n in g.nodes() if not n.is_source]
    assert ops == ["matmul", "add", "relu", "matmul", "add"]


def test_seed_makes_weights_reproducible_and_dtype_applies():
    a, b = build_model(_dropout_model(), seed=5), build_model(_dropout_model(), seed=5)
    assert all(np.array_equal(x.value, y.value) for x, y in zip(a.weights, b.weights))
    c = build_model(_dropout_model(), seed=5, dtype="float64")
    assert c.weights[0].value.dtype == np.float64 and c.inputs[0].dtype == "float64"
    assert c.lower(False).type(c.weights[0].node).dtype == "float64"


# ---------------------------------------------------------------- initializers


def _init_model(initializer, units=64, dim=32):
    return {
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {
                    "class_name": "Dense",
                    "config": {
                        "name": "d",
                        "units": units,
                        "batch_input_shape": [None, dim],
                        "kernel_initializer": initializer,
                        "bias_initializer": "ones",
                    },
                }
            ],
        },
    }


@pytest.mark.parametrize(
    "init, limit",
    [
        ("glorot_uniform", np.sqrt(6 / 96)),
        ("he_uniform", np.sqrt(6 / 32)),
        ("lecun_uniform", np.sqrt(3 / 32)),
        ({"class_name": "RandomUniform", "config": {"minval": -0.2, "maxval": 0.2}}, 0.2),
    ],
)
def test_uniform_initializers_stay_in_their_limits(init, limit):
    w = build_model(_init_model(init), seed=0).weights[0].value
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.9 * limit


@pytest.mark.parametrize(
    "init, std",
    [
        ("glorot_normal", np.sqrt(2 / 96)),
        ("he_normal", np.sqrt(2 / 32)),
        ("lecun_normal", np.sqrt(1 / 32)),
        ({"class_name": "TruncatedNormal", "config": {"stddev": 0.1}}, 0.1 * 0.8796),
        ({"class_name": "RandomNormal", "config": {"stddev": 0.1}}, 0.1),
        (
            {
                "class_name": "VarianceScaling",
                "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
            },
            np.sqrt(2 / 64),
        ),
    ],
)
def test_normal_initializers_have_keras_variance(init, std):
    value = build_model(_init_model(init), seed=0).weights[0].value
    assert abs(value.std() / std - 1) < 0.06


def test_truncated_normal_is_cut_at_two_stddev():
    w = build_model(_init_model({"class_name": "TruncatedNormal", "config": {"stddev": 0.1}}), seed=0).weights[0].value
    assert np.abs(w).max() <= 0.2


def test_deterministic_initializers():
    assert np.all(build_model(_init_model("zeros"), seed=0).weights[0].value == 0)
    model = build_model(_init_model({"class_name": "Constant", "config": {"value": 0.3}}), seed=0)
    assert np.all(model.weights[0].value == np.float32(0.3)) and np.all(model.weights[1].value == 1)
    eye = build_model(_init_model({"class_name": "Identity", "config": {"gain": 2.0}}, 5, 3)).weights[0].value
    np.testing.assert_array_equal(eye, 2 * np.eye(3, 5))
    q = build_model(_init_model("orthogonal", 8, 20), seed=0).weights[0].value
    np.testing.assert_allclose(q.T @ q, np.eye(8), atol=1e-5)


def test_initializer_seed_in_config_fixes_the_value():
    init = {"class_name": "GlorotUniform", "config": {"seed": 7}}
    a, b = build_model(_init_model(init), seed=1), build_model(_init_model(init), seed=2)
    np.testing.assert_array_equal(a.weights[0].value, b.weights[0].value)


# ---------------------------------------------------------------- bad input


def test_unsupported_layers_are_listed_at_once():
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {"class_name": "Conv3D", "config": {"name": "conv", "batch_input_shape": [None, 8, 8, 8, 1]}},
                {"class_name": "Lambda", "config": {"name": "lam", "function": ["4wEAAAAAAAAA", None, None]}},
                {"class_name": "ConvLSTM2D", "config": {"name": "rnn"}},
            ],
        },
    }
    with pytest.raises(ConfigError) as e:
        build_model(config)
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("Conv3D 'conv'", "Lambda 'lam'", "ConvLSTM2D 'rnn'", "never decodes or runs", "Dense", "Concatenate"):
        assert part in msg


def test_yaml_python_object_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    text = f"class_name: !!python/object/apply:os.system ['touch {marker}']\nconfig: {{}}\n"
    with pytest.raises(ConfigError, match="refused YAML at line 1"):
        parse_config_text(text, "yaml")
    assert not marker.exists()


@pytest.mark.parametrize(
    "text, fmt, match",
    [
        ('{"class_name": "Sequential",\n "config": [}', "json", "malformed JSON at line 2"),
        ("class_name: Sequential\nconfig: [a, b\n", "yaml", "malformed YAML at line 3"),
        ("[1, 2]", None, "is a mapping"),
        ("{}", "toml", "unknown config format"),
    ],
)
def test_malformed_text(text, fmt, match):
    with pytest.raises(ConfigError, match=match):
        parse_config_text(text, fmt)


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.json"):
        read_config_file(tmp_path / "nope.json")
    (tmp_path / "m.txt").write_text("{}")
    with pytest.raises(ConfigError, match="unknown config file type"):
        read_config_file(tmp_path / "m.txt")
    (tmp_path / "m.yml").write_text(yaml.safe_dump(_dropout_model()))
    assert read_config_file(tmp_path / "m.yml") == _dropout_model()


def test_add_shape_mismatch_names_layer_and_shapes():
    config = {
        "class_name": "Functional",
        "config": {
            "name": "m",
            "layers": [
                k2_input("a", 3),
                k2_input("b", 4),
                k2_node({"class_name": "Add", "config": {"name": "plus"}}, ("a", 0), ("b", 0)),
            ],
            "input_layers": [["a", 0, 0], ["b", 0, 0]],
            "output_layers": [["plus", 0, 0]],
        },
    }
    with pytest.raises(ConfigError, match=r"Add layer 'plus': input shapes \(None, 3\) and \(None, 4\) do not match"):
        build_model(config)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"activation": "sparsemax"}, "unsupported activation 'sparsemax'"),
        ({"kernel_initializer": "lecun_magic"}, "unsupported initializer 'lecun_magic'"),
        ({"kernel_regularizer": "l3"}, "unsupported regularizer 'l3'"),
        ({"kernel_constraint": {"class_name": "Clip", "config": {}}}, "unsupported constraint 'Clip'"),
        ({"kernel_constraint": {"class_name": "MaxNorm", "config": {"max_value": "2"}}}, "max_value must be a number"),
        ({"units": 0}, "units must be a positive integer"),
    ],
)
def test_bad_dense_options(change, match):
    config = _dropout_model()
    config["config"]["layers"][1]["config"].update(change)
    with pytest.raises(ConfigError, match=match):
        build_model(config)


def test_not_a_model_and_unknown_input_shape():
    with pytest.raises(ConfigError, match="top-level class 'Dense' is not a model"):
        build_model({"class_name": "Dense", "config": {}})
    with pytest.raises(ConfigError, match="has no declared shape"):
        build_model({"class_name": "Sequential", "config": {"name": "s", "layers": [k2_dense("d", 2)]}})


# ---------------------------------------------------------------- transposed convolutions' output_padding


def _transpose_model(rank, **config):
    shape = [None, 4, 3, 2] if rank == 2 else [None, 4, 2]
    return {
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {"class_name": "InputLayer", "config": {"name": "x", "batch_shape": shape}},
                {"class_name": f"Conv{rank}DTranspose", "config": {"name": "up", "filters": 3, **config}},
            ],
        },
    }


def _keras_length(n, k, s, d, padding, extra):
    """keras.src.backend.common.backend_utils._get_output_shape_given_tf_padding."""
    eff = (k - 1) * d + 1
    if padding == "valid":
        return (n - 1) * s + eff + (max(eff, s) - eff if extra is None else extra)
    return n * s if extra is None else (n - 1) * s + eff % 2 + extra


def _direct_transpose(x, kernel, bias, strides, dilation, padding, size):
    """TensorFlow's conv_transpose by its definition: every input scatters x[i] @ kernel[a].T to
    i*stride + a*dilation - pad, pad being what a convolution over `size` pads at the start."""
    b, *spatial, _ = x.shape
    out = np.zeros((b, *size, kernel.shape[-2]))
    pads = []
    for n, k, s, d, o in zip(spatial, kernel.shape, strides, dilation, size):
        total = max((n - 1) * s + (k - 1) * d + 1 - o, 0) if padding == "same" else 0
        pads.append(total // 2)
    for i in np.ndindex(*spatial):
        for a in np.ndindex(*kernel.shape[:-2]):
            r = tuple(ii * s + aa * d - p for ii, aa, s, d, p in zip(i, a, strides, dilation, pads))
            if all(0 <= rr < o for rr, o in zip(r, size)):
                out[(slice(None), *r)] += x[(slice(None), *i)] @ kernel[a].T
    return out + bias


@pytest.mark.parametrize(
    "rank, config",
    [
        (2, {"kernel_size": 3, "strides": 2, "padding": "valid", "output_padding": 1}),
        (2, {"kernel_size": [3, 2], "strides": [2, 3], "padding": "same", "output_padding": [1, 2]}),
        (2, {"kernel_size": 2, "strides": 3, "padding": "valid", "output_padding": [0, 2]}),
        (2, {"kernel_size": 3, "strides": 2, "padding": "same", "output_padding": 0}),
        (2, {"kernel_size": 2, "strides": 1, "padding": "valid", "dilation_rate": 2, "output_padding": None}),
        (1, {"kernel_size": 3, "strides": 2, "padding": "same", "output_padding": 1}),
    ],
    ids=["valid", "same_asymmetric", "valid_wide_stride", "same_zero", "dilated_none", "conv1d"],
)
def test_conv_transpose_output_padding_matches_its_definition(rank, config):
    model = build_model(_transpose_model(rank, **config), seed=0, dtype="float64")
    x = np.random.default_rng(0).normal(size=(2, *model.inputs[0].shape[1:]))
    kernel, bias = (w.value for w in model.weights)
    bias = np.random.default_rng(1).normal(size=bias.shape)
    per_axis = [
        (v if isinstance(v, list) else [v] * rank)
        for v in (config["kernel_size"], config["strides"], config.get("dilation_rate", 1), config["output_padding"])
    ]
    size = tuple(_keras_length(n, k, s, d, config["padding"], e) for n, k, s, d, e in zip(x.shape[1:-1], *per_axis))
    graph = model.lower(training=False)
    env = ir.interpret(graph, {model.inputs[0].node: x, model.weights[0].node: kernel, model.weights[1].node: bias})
    got = env[graph.outputs["output:0"]]
    assert got.shape[1:-1] == size
    np.testing.assert_allclose(
        got, _direct_transpose(x, kernel, bias, *per_axis[1:3], config["padding"], size), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize(
    "config, match",
    [
        ({"kernel_size": 3, "strides": 2, "output_padding": 2}, r"output_padding \(2, 2\) must be less than strides"),
        (
            {"kernel_size": 2, "strides": 2, "padding": "same", "output_padding": 0},
            "makes an output of length 6, which the matching convolution does not map back",
        ),
        ({"kernel_size": 3, "strides": 2, "output_padding": [1]}, "output_padding must be 2 non-negative integers"),
    ],
)
def test_bad_output_padding(config, match):
    with pytest.raises(ConfigError, match=match):
        build_model(_transpose_model(2, **config))


@pytest.mark.parametrize(
    "value, expected",
    [
        ("max_norm", {"kind": "max_norm", "axes": (0,), "max_value": 2.0}),
        ("nonneg", {"kind": "non_neg", "axes": ()}),  # Keras 2's alias
        ({"class_name": "UnitNorm", "config": {"axis": -1}}, {"kind": "unit_norm", "axes": (1,)}),
        (
            {"module": "keras.constraints", "class_name": "MinMaxNorm", "config": {"rate": 0.5, "axis": [0]}},
            {"kind": "min_max_norm", "axes": (0,), "min_value": 0.0, "max_value": 1.0, "rate": 0.5},
        ),
        ({"name": "MaxNorm", "m": 3, "axis": 0}, {"kind": "max_norm", "axes": (0,), "max_value": 3.0}),  # Keras 1
    ],
)
def test_constraints_in_every_keras_spelling(value, expected):
    """Keras 1's {"name", "m"}, Keras 2's and 3's class configs and strings: the constrain op's attrs."""
    from kgraph.frontend.constraints import parse_constraint

    assert parse_constraint(value, "layer 'd'", (4, 3)) == expected


def _with_op(op_entry):
    """A Keras 3 functional config: Input (4,) -> the op -> Dense(2)."""
    tensor = {"class_name": "__keras_tensor__", "config": {"shape": [None, 4], "keras_history": ["x", 0, 0]}}
    op_entry = json.loads(json.dumps(op_entry).replace('"TENSOR"', json.dumps(tensor)))
    dense_in = {"class_name": "__keras_tensor__", "config": {"keras_history": [op_entry["name"], 0, 0]}}
    return {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": {
            "name": "m",
            "layers": [
                {
                    "module": "keras.layers",
                    "class_name": "InputLayer",
                    "name": "x",
                    "config": {"batch_shape": [None, 4], "name": "x"},
                    "inbound_nodes": [],
                },
                op_entry,
                {
                    "module": "keras.layers",
                    "class_name": "Dense",
                    "name": "d",
                    "config": {"name": "d", "units": 2},
                    "inbound_nodes": [{"args": [dense_in], "kwargs": {}}],
                },
            ],
            "input_layers": [["x", 0, 0]],
            "output_layers": [["d", 0, 0]],
        },
    }


def test_a_keras_op_is_never_read_as_the_layer_of_its_name():
    """x * 2.0 is written as class Multiply of module keras.src.ops.numpy with args [x, 2.0]: it
    was read as the Multiply layer of one input, which dropped the 2.0 (predictions silently off)."""
    op = {"module": "keras.src.ops.numpy", "class_name": "Multiply", "name": "multiply", "config": {"name": "multiply"}}
    op["inbound_nodes"] = [{"args": ["TENSOR", 2.0], "kwargs": {}}]
    from kgraph.models import Model

    twice = Model(build_model(_with_op(op), seed=0), seed=0)
    op["class_name"], op["inbound_nodes"] = "Absolute", [{"args": ["TENSOR"], "kwargs": {}}]
    plain = Model(build_model(_with_op(op), seed=0), seed=0)  # the same Dense weights (seed 0)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(twice.predict(x, verbose=0), plain.predict(2 * x, verbose=0), rtol=1e-6)
    op["class_name"] = "Cumsum"
    with pytest.raises(ConfigError, match=r"unsupported keras\.ops operations: Cumsum 'multiply'; supported: Abs, "):
        build_model(_with_op(op))


def test_a_tf_keras_tensorflow_call_is_read_as_its_keras_op_or_refused_by_name():
    """tf-keras writes `x * 2.0` as a TFOpLambda layer calling tf.math.multiply, its one tensor's
    entry alone as the node and the constant as keyword y (frontend/tf_ops.py)."""
    from kgraph.frontend.normalize import describe

    config = json.loads((FIXTURES / "k2_tensor_ops.json").read_text())
    ops = {layer.name: layer.class_name for layer in describe(config).layers if layer.class_name.startswith("op:")}
    assert {"op:Multiply", "op:Subtract", "op:TrueDivide", "op:GetItem", "op:Matmul", "op:Clip"} <= set(ops.values())
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "TFOpLambda" and layer["config"]["function"] == "math.multiply":
            layer["config"]["function"] = "math.cumsum"
    with pytest.raises(
        ConfigError, match=r"TFOpLambda layer 'tf\.math\.multiply' calls tf\.math\.cumsum, which is not"
    ):
        build_model(config)


@pytest.mark.parametrize(
    "index, message",
    [
        ([0], r"indexing the batch axis \(0\) is not supported"),
        ([None], "a new axis before the batch axis is not supported"),
        (
            [{"class_name": "__ellipsis__", "config": {}}, {"class_name": "__ellipsis__", "config": {}}],
            "an index with more than one",
        ),
    ],
)
def test_an_index_kgraph_cannot_take_says_why(index, message):
    op = {"module": "keras.src.ops.numpy", "class_name": "GetItem", "name": "get_item", "config": {"name": "get_item"}}
    op["inbound_nodes"] = [{"args": ["TENSOR", index], "kwargs": {}}]
    with pytest.raises(ConfigError, match=r"keras\.ops\.GetItem 'get_item': " + message):
        build_model(_with_op(op))


def test_an_op_option_is_used_or_refused_never_dropped():
    """keras.ops.elu(x, alpha=0.5) runs with its alpha; keras.ops.max(x, axis, initial=...) is
    refused (kgraph dropped both before)."""
    from kgraph.models import Model

    op = {"module": "keras.src.ops.nn", "class_name": "Elu", "name": "elu", "config": {"name": "elu", "alpha": 0.5}}
    op["inbound_nodes"] = [{"args": ["TENSOR"], "kwargs": {}}]
    model = Model(build_model(_with_op(op), seed=0), seed=0)
    negate = dict(op, class_name="Negative", config={"name": "elu"})
    x = -np.arange(1, 9, dtype=np.float32).reshape(2, 4) / 4
    reference = Model(build_model(_with_op(negate), seed=0), seed=0)  # the same Dense weights, on elu(x) computed here
    np.testing.assert_allclose(model.predict(x, verbose=0), reference.predict(-0.5 * np.expm1(x), verbose=0), rtol=1e-5)
    op["class_name"], op["config"] = "Max", {"name": "elu", "axis": 1, "keepdims": True, "initial": 0.5}
    with pytest.raises(ConfigError, match=r"keras\.ops\.Max 'elu': initial=0\.5 is not supported"):
        build_model(_with_op(op))


@pytest.mark.parametrize(
    "value, message",
    [
        ([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]], r"shapes \(None, 4\) and \(2, 4\) do not broadcast"),
        ([1.0, 2.0, 3.0], r"shapes \(None, 4\) and \(3,\) do not broadcast"),
        ([[1.0, 2.0], [3.0]], "its constant tensor operand is not a non-empty array of finite numbers"),
        ("abc", "its constant tensor operand is not a non-empty array of finite numbers"),
    ],
)
def test_a_constant_tensor_operand_broadcasts_over_the_batch_or_is_refused(value, message):
    """Keras 3 saves a tensor no input depends on as its value (`__tensor__`); one that would reach
    the batch axis, does not broadcast or is not an array of numbers is refused naming the op."""
    from kgraph.models import Model

    op = {"module": "keras.src.ops.numpy", "class_name": "Subtract", "name": "sub", "config": {"name": "sub"}}
    constant = {"class_name": "__tensor__", "config": {"value": [[0.5, 1.0, 1.5, 2.0]], "dtype": "float32"}}
    op["inbound_nodes"] = [{"args": [constant, "TENSOR"], "kwargs": {}}]
    model = Model(build_model(_with_op(op), seed=0), seed=0)
    op["class_name"], op["inbound_nodes"] = "Negative", [{"args": ["TENSOR"], "kwargs": {}}]
    negated = Model(build_model(_with_op(op), seed=0), seed=0)  # the same Dense weights (seed 0)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_allclose(model.predict(x, verbose=0), negated.predict(x - [0.5, 1, 1.5, 2], verbose=0), rtol=1e-6)
    op["class_name"] = "Subtract"
    op["inbound_nodes"] = [{"args": ["TENSOR", dict(constant, config={"value": value})], "kwargs": {}}]
    with pytest.raises(ConfigError, match=r"keras\.ops\.Subtract 'sub': " + message):
        build_model(_with_op(op))


@pytest.mark.parametrize(
    "class_name, args, config, message",
    [
        ("Power", ["TENSOR", 1.5], {}, r"power 1\.5 is not supported \(0\.5, or an integer from -8 to 8\)"),
        ("Power", ["TENSOR", 9], {}, r"power 9 is not supported"),
        ("Cast", ["TENSOR"], {"dtype": "int32"}, r"a cast to 'int32' is not supported \(to a float dtype or bool\)"),
        ("Where", ["TENSOR", 1.0], {}, r"takes 3 operands, each a tensor, a number or a constant tensor"),
    ],
)
def test_an_op_kgraph_cannot_compute_as_keras_is_refused_naming_it(class_name, args, config, message):
    """pow(x, 1.5) as exp(1.5 log x) would give a NaN gradient at x = 0 where pow's is 0;
    kgraph's tensors are floats, so a cast to an integer would not round as Keras's."""
    op = {"module": "keras.src.ops.numpy", "class_name": class_name, "name": "op", "config": {"name": "op", **config}}
    op["inbound_nodes"] = [{"args": args, "kwargs": {}}]
    with pytest.raises(ConfigError, match=rf"keras\.ops\.{class_name} 'op': " + message):
        build_model(_with_op(op))


def test_a_max_norm_over_no_axis_is_over_the_whole_weight():
    from kgraph.frontend.constraints import parse_constraint

    spec = parse_constraint({"class_name": "MaxNorm", "config": {"max_value": 1, "axis": None}}, "here", (3, 4, 2))
    assert spec["axes"] == (0, 1, 2)


def test_a_new_axis_in_an_index_is_a_reshape():
    """x[:, None] (Keras 3) and x[..., tf.newaxis] (tf-keras) insert an axis of size 1."""
    from kgraph.models import Model

    whole = {"class_name": "__slice__", "config": {"start": None, "stop": None, "step": None}}
    op = {"module": "keras.src.ops.numpy", "class_name": "GetItem", "name": "get_item", "config": {"name": "get_item"}}
    op["inbound_nodes"] = [{"args": ["TENSOR", [whole, None]], "kwargs": {}}]
    model = Model(build_model(_with_op(op), seed=0), seed=0)
    op["class_name"], op["inbound_nodes"] = "Absolute", [{"args": ["TENSOR"], "kwargs": {}}]
    plain = Model(build_model(_with_op(op), seed=0), seed=0)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    got = model.predict(x, verbose=0)
    assert got.shape == (2, 1, 2)
    np.testing.assert_allclose(got[:, 0], plain.predict(x, verbose=0), rtol=1e-6)


@pytest.mark.parametrize(
    "policy",
    [
        {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "mixed_float16"}, "registered_name": None},
        {"class_name": "Policy", "config": {"name": "mixed_bfloat16"}},  # tf-keras 2
        "float64",
    ],
)
def test_a_dtype_policy_kgraph_does_not_follow_is_said_once_at_loading(policy):
    """A model trained with mixed precision (or in float64) computes in float32 here: a warning
    names the policy, where the difference from Keras's numbers was silent."""
    config = json.loads((FIXTURES / "k3_seq_mlp.json").read_text())
    for layer in config["config"]["layers"]:
        if layer["class_name"] != "InputLayer":
            layer["config"]["dtype"] = policy
    name = policy if isinstance(policy, str) else policy["config"]["name"]
    with pytest.warns(
        UserWarning, match=rf"layers use the dtype policies '{name}' \(3 layers, e\.g\. 'dense'\); kgraph"
    ):
        build_model(config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_model(json.loads((FIXTURES / "k3_seq_mlp.json").read_text()))  # float32: nothing to say


def test_summary_names_an_op_by_its_class_as_keras_does():
    config = json.loads((FIXTURES / "k3_tensor_compare.json").read_text())
    lines = []
    build_model(config).summary(print_fn=lines.append)
    assert any("greater (Greater)" in line for line in lines) and not any("op:" in line for line in lines)


def test_a_comparison_passes_no_gradient_so_a_mask_made_from_it_trains():
    """h * cast(h > 0) is relu(h): the comparison gives no gradient (compile() raised "op greater
    has no gradient rule"), h's flows through the product, and training matches relu's."""
    from kgraph.models import Model

    def tensor(name):
        return {"class_name": "__keras_tensor__", "config": {"keras_history": [name, 0, 0]}}

    greater = {"module": "keras.src.ops.numpy", "class_name": "Greater", "name": "gt", "config": {"name": "gt"}}
    greater["inbound_nodes"] = [{"args": ["TENSOR", 0.0], "kwargs": {}}]
    cast = {"module": "keras.src.ops.core", "class_name": "Cast", "name": "cast", "config": {"dtype": "float32"}}
    cast["inbound_nodes"] = [{"args": [tensor("gt")], "kwargs": {}}]
    mul = {"module": "keras.src.ops.numpy", "class_name": "Multiply", "name": "mask", "config": {"name": "mask"}}
    mul["inbound_nodes"] = [{"args": ["TENSOR", tensor("cast")], "kwargs": {}}]
    masked = _with_op(greater)
    layers = masked["config"]["layers"]
    layers[2:2] = [
        json.loads(json.dumps(cast)),
        json.loads(json.dumps(mul).replace('"TENSOR"', json.dumps(tensor("x")))),
    ]
    layers[-1]["inbound_nodes"] = [{"args": [tensor("mask")], "kwargs": {}}]
    relu = {"module": "keras.src.ops.nn", "class_name": "Relu", "name": "relu", "config": {"name": "relu"}}
    relu["inbound_nodes"] = [{"args": ["TENSOR"], "kwargs": {}}]
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    y = np.random.default_rng(1).normal(size=(8, 2)).astype(np.float32)
    trained = []
    for config in (masked, _with_op(relu)):
        model = Model(build_model(config, seed=0), seed=0)
        model.compile(optimizer="sgd", loss="mse")
        trained.append((model.train_on_batch(x, y), model.get_weights()))
    np.testing.assert_allclose(trained[0][0], trained[1][0], rtol=1e-6)
    for a, b in zip(trained[0][1], trained[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_constant_tensors_in_where_and_as_tf_keras_writes_a_tf_constant():
    """where(x > c, x - c, c) with c a (1, 4) constant (refused before: Where took tensors and
    numbers only), and tf-keras's tf.constant operand, which it writes as the values' nested list."""
    from kgraph.frontend.tf_ops import keras3_op_entry
    from kgraph.models import Model

    constant = {"class_name": "__tensor__", "config": {"value": [[0.5, 1.0, 1.5, 2.0]]}}
    op = {"module": "keras.src.ops.numpy", "class_name": "Where", "name": "w", "config": {"name": "w"}}
    op["inbound_nodes"] = [{"args": ["TENSOR", constant, 0.0], "kwargs": {}}]
    model = Model(build_model(_with_op(op), seed=0), seed=0)
    op["class_name"], op["inbound_nodes"] = "Negative", [{"args": ["TENSOR"], "kwargs": {}}]
    negated = Model(build_model(_with_op(op), seed=0), seed=0)  # the same Dense weights (seed 0)
    x = np.array([[1.0, 0.0, -2.0, 3.0], [0.0, 2.0, 0.0, -1.0]], np.float32)
    picked = np.where(x != 0, [0.5, 1.0, 1.5, 2.0], 0.0).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), negated.predict(-picked, verbose=0), rtol=1e-6)

    entry = {
        "class_name": "TFOpLambda",
        "name": "tf.math.multiply",
        "config": {"name": "tf.math.multiply", "function": "math.multiply"},
        "inbound_nodes": [["dense", 0, 0, {"y": [[0.5, 1.0]], "name": None}]],
    }
    args = keras3_op_entry(entry, "here")["inbound_nodes"][0]["args"]
    assert args[1] == {"class_name": "__tensor__", "config": {"value": [[0.5, 1.0]]}}


@pytest.mark.parametrize(
    "class_name, args, reference",
    [
        ("LogicalAnd", ["TENSOR", 1.0], lambda x: (x != 0) & True),
        ("LogicalOr", ["TENSOR", 0.0], lambda x: x != 0),
        ("LogicalXor", ["TENSOR", 1.0], lambda x: (x != 0) ^ True),
        ("LogicalNot", ["TENSOR"], lambda x: x == 0),
    ],
)
def test_logical_ops_read_nonzero_as_true(class_name, args, reference):
    from kgraph.models import Model

    op = {"module": "keras.src.ops.numpy", "class_name": class_name, "name": "op", "config": {"name": "op"}}
    op["inbound_nodes"] = [{"args": args, "kwargs": {}}]
    model = Model(build_model(_with_op(op), seed=0), seed=0)
    op["class_name"], op["inbound_nodes"] = "Negative", [{"args": ["TENSOR"], "kwargs": {}}]
    negated = Model(build_model(_with_op(op), seed=0), seed=0)  # the same Dense weights (seed 0)
    x = np.array([[1.0, 0.0, -2.0, 0.0], [0.0, 2.0, 0.5, -1.0]], np.float32)
    expected = -reference(x).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), negated.predict(expected, verbose=0), rtol=1e-6)


def _more_ops_with(name, config=None, slice_=None, kwargs=None):
    """k3_more_ops.json with layer `name`'s config updated, its second slice entry replaced or
    keyword arguments added to its call."""
    model = json.loads((FIXTURES / "k3_more_ops.json").read_text())
    (layer,) = [entry for entry in model["config"]["layers"] if entry["name"] == name]
    layer["config"].update(config or {})
    if slice_ is not None:
        layer["inbound_nodes"][0]["args"][1][1] = {"class_name": "__slice__", "config": slice_}
    layer["inbound_nodes"][0]["kwargs"].update(kwargs or {})
    return model


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("pad", {"config": {"mode": "reflect"}}, r"keras.ops.Pad 'pad': mode 'reflect' is not supported \(constant\)"),
        ("pad", {"kwargs": {"constant_values": 1.0}}, r"'pad': constant_values=1.0 is not supported \(0\)"),
        ("flip", {"kwargs": {"unknown": 1.0}}, r"'flip': keyword arguments \['unknown'\] are not supported"),
        ("pad", {"config": {"pad_width": [[1, 0], [0, 0], [0, 0]]}}, "'pad': padding the batch axis is not supported"),
        (
            "tile",
            {"config": {"repeats": [2, 1, 1]}},
            r"repeats \[2, 1, 1\] would tile the batch axis of \(None, 6, 4\)",
        ),
        ("norm", {"config": {"ord": 3}}, "ord=3 over 1 axes is not supported"),
        ("leaky_relu", {"config": {"alpha": 0.3}}, r"options \['alpha'\] are not supported"),
        ("flip", {"config": {"axis": None}}, "flipping every axis, the batch's too, is not supported"),
        (
            "get_item_8",
            {"slice_": {"start": None, "stop": None, "step": 0}},
            "slice ::0 of axis 1: a step is a non-zero",
        ),
        ("get_item_8", {"slice_": {"start": 1, "stop": 1, "step": 2}}, "an empty slice 1:1:2 of axis 1"),
    ],
)
def test_more_ops_refuse_what_they_do_not_compute_by_name(name, change, message):
    with pytest.raises(ConfigError, match=message):
        build_model(_more_ops_with(name, **change))


def _op_alone(class_name, config, args=()):
    """A Keras 3 functional config: Input (6, 4) -> the op (its further positional args) -> output."""
    tensor = {"class_name": "__keras_tensor__", "config": {"shape": [None, 6, 4], "keras_history": ["x", 0, 0]}}
    op = {"module": "keras.src.ops.numpy", "class_name": class_name, "name": "op", "config": {"name": "op", **config}}
    op["inbound_nodes"] = [{"args": [tensor, *args], "kwargs": {}}]
    source = {"class_name": "InputLayer", "name": "x", "config": {"batch_shape": [None, 6, 4], "name": "x"}}
    layers = [{"module": "keras.layers", **source, "inbound_nodes": []}, op]
    return {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": {"name": "m", "layers": layers, "input_layers": [["x", 0, 0]], "output_layers": [["op", 0, 0]]},
    }


def _every(start, stop, step):
    return {"class_name": "__slice__", "config": {"start": start, "stop": stop, "step": step}}


@pytest.mark.parametrize(
    "class_name, config, args, numpy",
    [
        ("GetItem", {}, [[_every(None, None, None), _every(2, None, 3)]], lambda x: x[:, 2::3]),
        ("GetItem", {}, [[_every(None, None, None), _every(-5, 5, 2), 3]], lambda x: x[:, -5:5:2, 3]),
        ("GetItem", {}, [[_every(None, None, None), _every(None, None, -1)]], lambda x: x[:, ::-1]),
        (
            "GetItem",
            {},
            [[_every(None, None, None), _every(5, 0, -2), _every(None, None, -3)]],
            lambda x: x[:, 5:0:-2, ::-3],
        ),
        ("GetItem", {}, [[{"class_name": "__ellipsis__"}, _every(1, None, 2)]], lambda x: x[..., 1::2]),
        (
            "Pad",
            {"pad_width": [[0, 0], [2, 1], [0, 3]], "mode": "constant"},
            [],
            lambda x: np.pad(x, ((0, 0), (2, 1), (0, 3))),
        ),
        ("Tile", {"repeats": [3]}, [], lambda x: np.tile(x, 3)),
        ("Flip", {"axis": [-1, 1]}, [], lambda x: x[:, ::-1, ::-1]),
        ("Repeat", {"repeats": 2, "axis": 2}, [], lambda x: np.repeat(x, 2, axis=2)),
        ("Take", {"axis": 2}, [[3, -4, 3]], lambda x: x[:, :, [3, 0, 3]]),
        ("Moveaxis", {"source": [1, 2], "destination": [2, 1]}, [], lambda x: np.moveaxis(x, [1, 2], [2, 1])),
        ("Var", {"axis": [1, 2], "keepdims": True}, [], lambda x: x.var(axis=(1, 2), keepdims=True)),
        ("Logsumexp", {"axis": 2}, [], lambda x: np.log(np.exp(x).sum(axis=2))),
        ("Expm1", {}, [], np.expm1),
        ("Norm", {"ord": 1, "axis": 1}, [], lambda x: np.abs(x).sum(axis=1)),
        ("Normalize", {"axis": 2, "order": 2}, [], lambda x: x / np.sqrt((x * x).sum(axis=2, keepdims=True))),
        # a NumPy array passed to an op is saved as "__numpy__"
        (
            "Einsum",
            {"subscripts": "bij,jk->bik"},
            [{"class_name": "__numpy__", "config": {"value": [[1, 2]] * 4}}],
            lambda x: x @ np.array([[1, 2]] * 4),
        ),
    ],
)
def test_more_ops_compute_what_numpy_does(class_name, config, args, numpy):
    from kgraph.models import model_from_json

    model = model_from_json(json.dumps(_op_alone(class_name, config, args)))
    x = np.random.RandomState(0).normal(size=(3, 6, 4)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), numpy(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "class_name, config, numpy",
    [
        ("Celu", {"alpha": 2.0}, lambda x: np.maximum(x, 0) + 2.0 * np.expm1(np.minimum(x, 0) / 2.0)),
        ("Squareplus", {"b": 1.5}, lambda x: (x + np.sqrt(x * x + 1.5)) / 2),
        ("HardShrink", {"threshold": 0.3}, lambda x: np.where(np.abs(x) > 0.3, x, 0)),
        ("SoftShrink", {"threshold": 0.8}, lambda x: np.where(x > 0.8, x - 0.8, np.where(x < -0.8, x + 0.8, 0))),
    ],
)
def test_an_op_activations_options_reach_its_kernel(class_name, config, numpy):
    from kgraph.models import model_from_json

    model = model_from_json(json.dumps(_op_alone(class_name, config)))
    x = np.random.RandomState(0).normal(size=(3, 6, 4)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), numpy(x), rtol=1e-5, atol=1e-6)


def _encoding_model(layer_class, config, batch_shape):
    layers = [
        {"class_name": "InputLayer", "config": {"batch_shape": batch_shape, "name": "ids"}},
        {"class_name": layer_class, "config": {"name": "encode", **config}},
    ]
    return {"class_name": "Sequential", "config": {"name": "s", "layers": layers}, "keras_version": "3.15.1"}


def test_categorical_encodings_refuse_what_keras_would_compute_otherwise():
    with pytest.raises(ConfigError, match=r"multi_hot of one id a sample .* encodes the whole batch as one sample"):
        build_model(_encoding_model("CategoryEncoding", {"num_tokens": 4, "output_mode": "multi_hot"}, [None]))
    with pytest.raises(ConfigError, match="no bin_boundaries in the config \\(the layer was never adapted\\)"):
        build_model(_encoding_model("Discretization", {"num_bins": 4, "bin_boundaries": None}, [None, 3]))
    with pytest.raises(ConfigError, match="output_mode 'tf_idf' is not one of one_hot, multi_hot, count"):
        build_model(_encoding_model("CategoryEncoding", {"num_tokens": 4, "output_mode": "tf_idf"}, [None, 2]))


def test_category_encoding_counts_ids_in_range_only():
    """Ids at or past num_tokens (and negative ones) count nowhere, as TensorFlow's one_hot drops
    them; a repeated id counts twice in count mode, once in multi_hot; a float id counts as Keras's
    cast to int truncates it (3.7 as 3, -0.5 as 0)."""
    from kgraph.models import model_from_json

    ids = np.array([[0, 3, 3.7], [5, -1, 2], [-0.5, 1.999, 4]], np.float32)
    for mode, want in [
        ("count", [[1, 0, 0, 2], [0, 0, 1, 0], [1, 1, 0, 0]]),
        ("multi_hot", [[1, 0, 0, 1], [0, 0, 1, 0], [1, 1, 0, 0]]),
    ]:
        model = model_from_json(
            json.dumps(_encoding_model("CategoryEncoding", {"num_tokens": 4, "output_mode": mode}, [None, 3]))
        )
        np.testing.assert_array_equal(model.predict(ids, verbose=0), want)


@pytest.mark.parametrize(
    "equation, message",
    [
        ("bij->ij", "the output must start with the batch axis 'b'"),
        ("bii->bi", "names 3 axes of a rank-3 operand once each"),
        ("bij", "the equation must be explicit"),
        ("bij->bik", "is not made of input letters"),
    ],
)
def test_einsum_refuses_what_it_cannot_compute_by_name(equation, message):
    with pytest.raises(ConfigError, match=message):
        build_model(_op_alone("Einsum", {"subscripts": equation}))


def test_einsum_of_one_operand_sums_and_transposes_as_numpy():
    from kgraph.models import model_from_json

    x = np.random.RandomState(0).normal(size=(3, 6, 4)).astype(np.float32)
    for equation in ("bij->bji", "bij->bj", "bij->b", "b...->b..."):
        model = model_from_json(json.dumps(_op_alone("Einsum", {"subscripts": equation})))
        np.testing.assert_allclose(model.predict(x, verbose=0), np.einsum(equation, x), rtol=1e-5, atol=1e-6)
