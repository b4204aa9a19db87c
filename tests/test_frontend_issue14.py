"""Valid configs the frontend refused (issue 14): Sequential layers without names, functional
models nested in Sequential and Functional models as tf-keras 2 numbers their calls, and models
whose every layer is frozen."""

import json
from pathlib import Path

import numpy as np
import pytest

import kgraph.models as models

NESTED = json.loads((Path(__file__).parent / "fixtures" / "files" / "tf" / "nested_configs.json").read_text())


def test_sequential_layers_without_names_get_the_names_keras_gives():
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {"class_name": "Dense", "config": {"units": 4, "activation": "relu", "batch_input_shape": [None, 3]}},
                {
                    "class_name": "Dense",
                    "config": {"name": "dense", "units": 3},
                },  # "dense" is taken: the first is dense_1
                {"class_name": "LayerNormalization", "config": {}},
                {"class_name": "Dense", "config": {"units": 2}},
            ],
        },
    }
    model = models.model_from_json(json.dumps(config))
    assert [l.name for l in model.frontend.layers] == ["dense_1", "dense", "layer_normalization", "dense_2"]
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    w1, b1, w2, b2, gamma, beta, w3, b3 = model.get_weights()
    h = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-3) * gamma + beta
    np.testing.assert_allclose(model.predict(x, verbose=0), h @ w3 + b3, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["seq_middle", "seq_first", "seq_last", "functional"])
@pytest.mark.parametrize("keras", ["k3", "tfk2"])
def test_functional_models_nested_in_sequential_and_functional(keras, case):
    """tf-keras 2 numbers a nested functional model's calls from 1 (node 0 is its own Input's):
    the configs TF wrote, with TF's weights, give TF's predictions."""
    entry = NESTED[keras][case]
    model = models.model_from_json(json.dumps(entry["config"]))
    model.set_weights([np.asarray(w, np.float32) for w in entry["weights"]])
    x = np.asarray(NESTED["x"], np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), np.asarray(entry["pred"]), rtol=1e-5, atol=1e-6)


def test_a_model_with_every_layer_frozen_trains_updating_nothing():
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "frozen",
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, 3], "name": "x"}},
                {"class_name": "Dense", "config": {"name": "a", "units": 4, "activation": "relu", "trainable": False}},
                {"class_name": "Dense", "config": {"name": "b", "units": 2, "trainable": False}},
            ],
        },
    }
    model = models.model_from_json(json.dumps(config))
    with pytest.warns(UserWarning, match="model 'frozen' has no trainable weights: training updates nothing"):
        model.compile(optimizer="adam", loss="mse")
    before = model.get_weights()
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    y = np.ones((8, 2), np.float32)
    history = model.fit(x, y, epochs=2, batch_size=4, verbose=0, shuffle=False)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer.iterations == 4  # the steps ran, as in Keras
    expected = np.mean((model.predict(x, verbose=0) - y) ** 2)
    np.testing.assert_allclose(history.history["loss"], [expected, expected], rtol=1e-5)
