"""Dot (Keras 2/3) and Keras 1's Merge (converted by kgraph/frontend/keras1.py) against NumPy; Dot's
training is checked against TensorFlow by the dot_adam and dot_attention_sgd (Dot over sequences)
fixtures of tests/test_tf_fidelity.py."""

import numpy as np
import pytest

import kgraph
from kgraph.frontend import ConfigError

RNG = np.random.default_rng(0)
A, B = RNG.normal(size=(4, 5)).astype(np.float32), RNG.normal(size=(4, 5)).astype(np.float32)
COS = (
    (A * B).sum(1, keepdims=True) / np.linalg.norm(A, axis=1, keepdims=True) / np.linalg.norm(B, axis=1, keepdims=True)
)


def _model(layer, shape=(5,), shape_b=None):
    layer = {**layer, "name": layer["config"]["name"]}
    return kgraph.models.model_from_config(
        {
            "class_name": "Model",
            "config": {
                "name": "m",
                "layers": [
                    {
                        "class_name": "InputLayer",
                        "config": {"batch_input_shape": [None, *shape], "name": "a"},
                        "inbound_nodes": [],
                        "name": "a",
                    },
                    {
                        "class_name": "InputLayer",
                        "config": {"batch_input_shape": [None, *(shape_b or shape)], "name": "b"},
                        "inbound_nodes": [],
                        "name": "b",
                    },
                    {**layer, "inbound_nodes": [[["a", 0, 0, {}], ["b", 0, 0, {}]]]},
                ],
                "input_layers": [["a", 0, 0], ["b", 0, 0]],
                "output_layers": [[layer["name"], 0, 0]],
            },
            "keras_version": "1.2.2" if layer["class_name"] == "Merge" else "2.15.0",
        }
    )


@pytest.mark.parametrize(
    "layer, expected",
    [
        ({"class_name": "Dot", "config": {"name": "d", "axes": 1}}, (A * B).sum(1, keepdims=True)),
        ({"class_name": "Dot", "config": {"name": "d", "axes": [-1, -1], "normalize": True}}, COS),
        ({"class_name": "Merge", "config": {"name": "d", "mode": "sum"}}, A + B),
        ({"class_name": "Merge", "config": {"name": "d", "mode": "mul"}}, A * B),
        ({"class_name": "Merge", "config": {"name": "d", "mode": "ave"}}, (A + B) / 2),
        ({"class_name": "Merge", "config": {"name": "d", "mode": "max"}}, np.maximum(A, B)),
        (
            {"class_name": "Merge", "config": {"name": "d", "mode": "concat", "concat_axis": -1}},
            np.concatenate([A, B], 1),
        ),
        ({"class_name": "Merge", "config": {"name": "d", "mode": "dot", "dot_axes": 1}}, (A * B).sum(1, keepdims=True)),
        ({"class_name": "Merge", "config": {"name": "d", "mode": "cos", "dot_axes": 1}}, COS),
    ],
)
def test_forward_against_numpy(layer, expected):
    model = _model(layer)
    np.testing.assert_allclose(model.predict([A, B], verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert model.output_shape == (None, *expected.shape[1:])


S, T = RNG.normal(size=(4, 3, 5)).astype(np.float32), RNG.normal(size=(4, 6, 5)).astype(np.float32)
U = RNG.normal(size=(4, 3, 2)).astype(np.float32)


def _unit(x, axis):
    return x / np.linalg.norm(x, axis=axis, keepdims=True)


@pytest.mark.parametrize(
    "layer, a, b, expected",
    [
        # Keras's batch_dot: x's remaining axis, then y's
        ({"class_name": "Dot", "config": {"name": "d", "axes": 2}}, S, T, np.einsum("bik,bjk->bij", S, T)),
        ({"class_name": "Dot", "config": {"name": "d", "axes": [-1, 2]}}, S, T, np.einsum("bik,bjk->bij", S, T)),
        ({"class_name": "Dot", "config": {"name": "d", "axes": 1}}, S, U, np.einsum("bki,bkj->bij", S, U)),
        (
            {"class_name": "Dot", "config": {"name": "d", "axes": [2, 1]}},
            U,
            S[:, :2],
            np.einsum("bik,bkj->bij", U, S[:, :2]),
        ),
        (
            {"class_name": "Dot", "config": {"name": "d", "axes": [1, 2]}},
            S[:, :2],
            U,
            np.einsum("bki,bjk->bij", S[:, :2], U),
        ),
        (
            {"class_name": "Dot", "config": {"name": "d", "axes": 2, "normalize": True}},
            S,
            T,
            np.einsum("bik,bjk->bij", _unit(S, 2), _unit(T, 2)),
        ),
        (
            {"class_name": "Dot", "config": {"name": "d", "axes": 1, "normalize": True}},
            S,
            U,
            np.einsum("bki,bkj->bij", _unit(S, 1), _unit(U, 1)),
        ),
        (
            {"class_name": "Merge", "config": {"name": "d", "mode": "dot", "dot_axes": [2, 2]}},
            S,
            T,
            np.einsum("bik,bjk->bij", S, T),
        ),
    ],
)
def test_dot_over_sequences_is_a_matrix_product_per_sample(layer, a, b, expected):
    model = _model(layer, a.shape[1:], b.shape[1:])
    np.testing.assert_allclose(model.predict([a, b], verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert model.output_shape == (None, *expected.shape[1:])


@pytest.mark.parametrize(
    "layer, shape, message",
    [
        ({"class_name": "Dot", "config": {"name": "d", "axes": 2}}, (3, 4, 5), r"\(None, n\) or two of shape"),
        ({"class_name": "Dot", "config": {"name": "d", "axes": 3}}, (3, 5), "out of range"),
        ({"class_name": "Dot", "config": {"name": "d", "axes": 0}}, (5,), "contract the batch axis"),
        ({"class_name": "Dot", "config": {"name": "d", "axes": "x"}}, (5,), "axes must be an integer"),
        (
            {"class_name": "Merge", "config": {"name": "d", "mode": "gAAAAAB...", "mode_type": "lambda"}},
            (5,),
            "never runs a saved function's bytecode",
        ),
        ({"class_name": "Merge", "config": {"name": "d", "mode": "xor"}}, (5,), "Merge mode 'xor' is not supported"),
    ],
)
def test_refusals_are_one_line(layer, shape, message):
    with pytest.raises(ConfigError, match=message) as info:
        _model(layer, shape)
    assert "\n" not in str(info.value)
