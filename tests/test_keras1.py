"""Keras 1.x configs (Keras 1.2's to_json) convert on load as Keras 2 converted them, or are
refused with a line naming the Keras 1 argument. Each converted model is checked against the
Keras 2 config a user would write for it: same layers, shapes, and predictions with the same weights."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest

import kgraph.models as models
from kgraph.frontend import ConfigError
from kgraph.frontend.keras1 import is_keras1, upgrade

KERAS1 = Path(__file__).parent / "fixtures" / "configs" / "keras1"


def _load(name):
    return json.loads((KERAS1 / name).read_text())


def _seq(*layers):
    return {"class_name": "Sequential", "config": {"name": "seq", "layers": list(layers)}}


def _layer(cls, **config):
    return {"class_name": cls, "config": config}


def _same_predictions(keras1_config, keras2_config, x):
    a = models.model_from_json(json.dumps(keras1_config))
    b = models.model_from_json(json.dumps(keras2_config))
    assert [(l.name, l.class_name, l.output_shapes) for l in a.frontend.layers] == [
        (l.name, l.class_name, l.output_shapes) for l in b.frontend.layers
    ]
    assert [w.shape for w in a.get_weights()] == [w.shape for w in b.get_weights()]
    b.set_weights(a.get_weights())
    np.testing.assert_allclose(a.predict(x, verbose=0), b.predict(x, verbose=0), rtol=1e-6, atol=1e-7)
    return a


def test_keras1_mlp_converts_and_trains():
    config = _load("mlp.json")
    keras2 = _seq(
        _layer(
            "Dense",
            name="dense_1",
            units=32,
            activation="relu",
            batch_input_shape=[None, 64],
            kernel_regularizer={"class_name": "L1L2", "config": {"l1": 0.0, "l2": 0.0010000000474974513}},
        ),
        _layer("Dropout", name="dropout_1", rate=0.2),
        _layer("Dense", name="dense_2", units=16, activation="tanh", use_bias=False),
        _layer("Dense", name="dense_3", units=10, activation="softmax"),
    )
    x = np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32)
    model = _same_predictions(config, keras2, x)
    up = upgrade(config)["config"]
    assert up[1]["config"]["rate"] == 0.2 and up[2]["config"]["use_bias"] is False
    assert up[3]["config"]["kernel_initializer"] == "random_uniform"  # Keras 1's "uniform"
    assert "batch_input_shape" not in up[2]["config"]  # only the first layer's input_dim is an input
    # W_regularizer became kernel_regularizer: the loss holds its penalty
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    y = np.arange(5) % 10
    loss = model.evaluate(x, y, verbose=0)
    w = model.get_weights()[0]
    keras2["config"]["layers"][0]["config"]["kernel_regularizer"] = None
    plain = models.model_from_json(json.dumps(keras2))
    plain.set_weights(model.get_weights())
    plain.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    assert loss == pytest.approx(
        plain.evaluate(x, y, verbose=0) + 0.0010000000474974513 * float(np.sum(w * w)), rel=1e-5
    )
    history = model.fit(x, y, epochs=2, batch_size=5, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


def test_keras1_cnn_with_theano_ordering():
    config = _load("cnn_th.json")
    keras2 = _seq(
        _layer(
            "Conv2D",
            name="convolution2d_1",
            filters=4,
            kernel_size=[3, 3],
            strides=[1, 1],
            padding="same",
            data_format="channels_first",
            activation="relu",
            batch_input_shape=[None, 1, 8, 8],
        ),
        _layer("BatchNormalization", name="batchnormalization_1", axis=1, momentum=0.99, epsilon=0.001),
        _layer(
            "Conv2D",
            name="convolution2d_2",
            filters=3,
            kernel_size=[3, 2],
            strides=[2, 1],
            padding="valid",
            data_format="channels_first",
            activation="linear",
        ),
        _layer(
            "MaxPooling2D",
            name="maxpooling2d_1",
            pool_size=[2, 2],
            strides=[1, 1],
            padding="valid",
            data_format="channels_first",
        ),
        _layer("Flatten", name="flatten_1"),
        _layer("Dense", name="dense_1", units=10, activation="softmax"),
    )
    x = np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(np.float32)
    model = _same_predictions(config, keras2, x)
    assert [l.output_shapes for l in model.frontend.layers][2:4] == [[(None, 3, 3, 7)], [(None, 3, 2, 6)]]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert np.isfinite(model.train_on_batch(x, np.array([1, 2, 3])))
    assert np.abs(model.get_weights()[4]).max() > 0  # the moving mean (one per channel, axis 1) moved


def test_keras1_conv1d_takes_its_input_from_input_dim_and_input_length():
    config = _load("conv1d.json")
    keras2 = _seq(
        _layer(
            "Conv1D",
            name="convolution1d_1",
            filters=5,
            kernel_size=3,
            strides=1,
            padding="valid",
            activation="relu",
            batch_input_shape=[None, 12, 2],
        ),
        _layer("MaxPooling1D", name="maxpooling1d_1", pool_size=2, strides=2, padding="valid"),
        _layer("Flatten", name="flatten_1"),
        _layer("Dense", name="dense_1", units=1, activation="sigmoid"),
    )
    x = np.random.default_rng(2).standard_normal((4, 12, 2)).astype(np.float32)
    _same_predictions(config, keras2, x)


def test_keras1_functional_with_merge_layers():
    config = _load("functional.json")
    keras2 = copy.deepcopy(config)
    del keras2["keras_version"]
    for entry in keras2["config"]["layers"]:
        c = entry["config"]
        if entry["class_name"] == "Dense":
            entry["config"] = {
                "name": c["name"],
                "units": c["output_dim"],
                "activation": c["activation"],
                "kernel_initializer": "zeros" if c["init"] == "zero" else c["init"],
            }
        elif entry["class_name"] == "Merge":
            entry["class_name"] = "Concatenate" if c["mode"] == "concat" else "Add"
            entry["config"] = {"name": c["name"], **({"axis": -1} if c["mode"] == "concat" else {})}
        else:
            entry["config"] = {"name": c["name"], "batch_input_shape": c["batch_input_shape"], "dtype": "float32"}
        # Keras 2 writes a kwargs dict in each inbound entry; Keras 1 did not
        entry["inbound_nodes"] = [[[*ref, {}] for ref in node] for node in entry["inbound_nodes"]]
    x = np.random.default_rng(3).standard_normal((4, 16)).astype(np.float32)
    a = models.model_from_json(json.dumps(config))
    b = models.model_from_json(json.dumps(keras2))
    b.set_weights(a.get_weights())
    for pa, pb in zip(a.predict(x, verbose=0), b.predict(x, verbose=0)):
        np.testing.assert_allclose(pa, pb, rtol=1e-6)
    assert [l.class_name for l in a.frontend.layers][3:5] == ["Concatenate", "Add"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda c: c[0]["config"].update(W_constraint={"name": "MaxOut"}),
            "Dense layer 'dense_1': unsupported constraint 'MaxOut'; supported: MaxNorm, NonNeg, UnitNorm, MinMaxNorm",
        ),
        (
            lambda c: c.insert(
                1, {"class_name": "BatchNormalization", "config": {"name": "bn", "mode": 2, "axis": -1}}
            ),
            "Keras 1 BatchNormalization layer 'bn': argument mode=2 has no Keras 2 equivalent; kgraph supports only mode=0",
        ),
        (
            lambda c: c.insert(1, {"class_name": "Merge", "config": {"name": "m", "mode": "concat", "layers": [{}]}}),
            "Keras 1 Merge layer 'm': a Merge of models inside a Sequential is not supported",
        ),
        (
            lambda c: c.insert(1, {"class_name": "Merge", "config": {"name": "m", "mode": "xor"}}),
            "Keras 1 Merge layer 'm': Merge mode 'xor' is not supported",
        ),
        (
            lambda c: c[0]["config"].update(border_mode="full"),
            "border_mode='full' (Keras 2 has no such padding) is not supported",
        ),
    ],
)
def test_keras1_arguments_kgraph_cannot_run_are_named(edit, message):
    config = _load("mlp.json" if "full" not in message else "cnn_th.json")
    edit(config["config"])
    with pytest.raises(ConfigError) as e:
        models.model_from_json(json.dumps(config))
    assert message in str(e.value)


def test_keras1_weight_constraints_hold_after_each_update():
    """Keras 1's W_constraint {"name": "MaxNorm", "m": ...} is Keras 2's kernel_constraint: after
    each step every column of the kernel has a norm of at most m."""
    config = _load("mlp.json")
    config["config"][0]["config"].update(W_constraint={"name": "MaxNorm", "m": 0.5, "axis": 0})
    model = models.model_from_json(json.dumps(config))
    model.compile(optimizer="sgd", loss="mse")
    kernel = model.get_weights()[0]
    x = np.random.default_rng(0).standard_normal((8, kernel.shape[0])).astype(np.float32)
    y = np.ones((8, model.output_shape[-1]), np.float32)
    assert np.linalg.norm(kernel, axis=0).max() > 0.5  # the constraint has something to do
    model.train_on_batch(x, y)
    assert np.linalg.norm(model.get_weights()[0], axis=0).max() <= 0.5 + 1e-6


def test_configs_of_later_kerases_are_left_alone():
    keras2 = _seq(
        _layer("Embedding", name="e", input_dim=10, output_dim=4, batch_input_shape=[None, 3]),
        _layer("Flatten", name="f"),
        _layer("Dense", name="d", units=2),
    )
    assert not is_keras1(keras2) and upgrade(keras2) is keras2
    assert is_keras1({"class_name": "Sequential", "config": [_layer("Dense", name="d", output_dim=3)]})


def test_keras1_separable_atrous_and_embedding_layers():
    sep = {
        "name": "sep",
        "nb_filter": 4,
        "nb_row": 3,
        "nb_col": 3,
        "init": "he_normal",
        "border_mode": "same",
        "subsample": [1, 1],
        "depth_multiplier": 1,
        "dim_ordering": "tf",
        "depthwise_regularizer": None,
        "pointwise_regularizer": None,
        "b_regularizer": None,
        "activity_regularizer": None,
        "depthwise_constraint": None,
        "pointwise_constraint": None,
        "b_constraint": None,
        "bias": True,
        "activation": "relu",
        "batch_input_shape": [None, 6, 6, 2],
    }
    atrous = {
        "name": "at",
        "nb_filter": 2,
        "nb_row": 3,
        "nb_col": 3,
        "init": "glorot_uniform",
        "border_mode": "valid",
        "subsample": [1, 1],
        "atrous_rate": [2, 2],
        "dim_ordering": "tf",
        "W_regularizer": None,
        "b_regularizer": None,
        "activity_regularizer": None,
        "W_constraint": None,
        "b_constraint": None,
        "bias": True,
        "activation": "linear",
    }
    keras1 = {
        "class_name": "Sequential",
        "keras_version": "1.2.2",
        "config": [
            {"class_name": "SeparableConvolution2D", "config": sep},
            {"class_name": "AtrousConvolution2D", "config": atrous},
            {"class_name": "GlobalAveragePooling2D", "config": {"name": "g", "dim_ordering": "tf"}},
        ],
    }
    keras2 = _seq(
        _layer(
            "SeparableConv2D",
            name="sep",
            filters=4,
            kernel_size=[3, 3],
            padding="same",
            strides=[1, 1],
            activation="relu",
            batch_input_shape=[None, 6, 6, 2],
        ),
        _layer("Conv2D", name="at", filters=2, kernel_size=[3, 3], dilation_rate=[2, 2]),
        _layer("GlobalAveragePooling2D", name="g"),
    )
    x = np.random.default_rng(4).standard_normal((2, 6, 6, 2)).astype(np.float32)
    _same_predictions(keras1, keras2, x)
    up = upgrade(keras1)["config"][0]["config"]
    assert up["depthwise_initializer"] == up["pointwise_initializer"] == "he_normal"

    emb1 = {
        "class_name": "Sequential",
        "keras_version": "1.2.2",
        "config": [
            {
                "class_name": "Embedding",
                "config": {
                    "name": "e",
                    "input_dim": 20,
                    "output_dim": 3,
                    "init": "uniform",
                    "W_regularizer": None,
                    "W_constraint": None,
                    "activity_regularizer": None,
                    "mask_zero": False,
                    "input_length": 5,
                    "dropout": 0.0,
                    "batch_input_shape": [None, 5],
                    "input_dtype": "int32",
                },
            },
            {"class_name": "Flatten", "config": {"name": "f"}},
        ],
    }
    emb2 = _seq(
        _layer(
            "Embedding",
            name="e",
            input_dim=20,
            output_dim=3,
            embeddings_initializer="random_uniform",
            input_length=5,
            batch_input_shape=[None, 5],
            dtype="int32",
        ),
        _layer("Flatten", name="f"),
    )
    _same_predictions(emb1, emb2, np.array([[1, 2, 3, 4, 19], [0, 0, 5, 6, 7]], np.float32))
    emb1["config"][0]["config"]["dropout"] = 0.5
    with pytest.raises(ConfigError, match="Keras 1 Embedding layer 'e': argument dropout=0.5 has no Keras 2"):
        models.model_from_json(json.dumps(emb1))
