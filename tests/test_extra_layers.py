"""The activation, noise and preprocessing layers (kgraph/frontend/extra_layers.py) beyond what the
TF fixtures check: gradients through each layer's IR against finite differences (float64), the
noise layers' training draws and their identity at inference, and the one-line refusals."""

import numpy as np
import pytest

import ir
import kgraph.models as models
from kgraph.frontend import ConfigError, build_model
from kgraph.frontend.preprocessing import interpolation_matrix
from kgraph.passes.autodiff import autodiff

B = 3


def layer(cls, **config):
    return {"class_name": cls, "config": {"name": config.pop("name", cls.lower()), **config}}


def seq(shape, *layers, name="m"):
    return {
        "class_name": "Sequential",
        "keras_version": "3.15.1",
        "config": {
            "name": name,
            "layers": [{"class_name": "InputLayer", "config": {"batch_shape": [None, *shape], "name": "x"}}, *layers],
        },
    }


def _feeds(model, seed):
    rng = np.random.default_rng(seed)
    feeds = {i.node: rng.normal(size=(B, *i.shape[1:])) for i in model.inputs}
    for w in model.weights:  # random weights; variances positive
        feeds[w.node] = (np.abs(rng.normal(size=w.shape)) + 0.5) if w.name == "variance" else rng.normal(size=w.shape)
    return feeds


# each config: one layer after the input, or a short chain; all run in float64
GRAD_CONFIGS = {
    "leaky_relu": seq((4,), layer("LeakyReLU", negative_slope=0.1)),
    "leaky_relu_k2_alpha": seq((4,), layer("LeakyReLU", alpha=0.25)),
    "relu_every_option": seq((4,), layer("ReLU", max_value=1.0, negative_slope=0.2, threshold=0.3)),
    "relu_leaky_capped": seq((4,), layer("ReLU", max_value=0.8, negative_slope=0.3)),
    "relu6": seq((4,), layer("ReLU", max_value=6.0)),
    "prelu_shared": seq((3, 4), layer("PReLU", shared_axes=[1])),
    "prelu": seq((2, 2, 3), layer("PReLU")),
    "elu": seq((4,), layer("ELU", alpha=0.6)),
    "thresholded_relu": seq((4,), layer("ThresholdedReLU", theta=0.2)),
    "softmax_axis1": seq((3, 4), layer("Softmax", axis=1)),
    "softmax_two_axes": seq((2, 3, 2), layer("Softmax", axis=[1, 3])),
    "rescaling": seq((2, 2, 3), layer("Rescaling", scale=[0.5, -1.0, 2.0], offset=[0.1, 0.0, -0.2])),
    "normalization_given": seq((2, 3), layer("Normalization", axis=[1], mean=[0.5, 0.0], variance=[2.0, 0.3])),
    "normalization_adapted": seq((2, 3), layer("Normalization", axis=-1)),
    "normalization_invert": seq((3,), layer("Normalization", mean=0.2, variance=3.0, invert=True)),
    "resizing_bilinear": seq((3, 4, 2), layer("Resizing", height=5, width=3)),
    "resizing_nearest": seq((3, 4, 2), layer("Resizing", height=2, width=7, interpolation="nearest")),
    "center_crop": seq((5, 4, 2), layer("CenterCrop", height=2, width=3)),
    "masking": seq((3, 2), layer("Masking", mask_value=0.5)),
}


@pytest.mark.parametrize("name", GRAD_CONFIGS)
def test_layer_gradient_matches_finite_differences(name):
    model = build_model(GRAD_CONFIGS[name], seed=0, dtype="float64")
    g = model.lower(training=False)
    out = g.outputs["output:0"]
    r = g.source("input", "r", g.type(out))
    loss = g.reduce_sum(g.mul(out, r))
    wrt = [i.node for i in model.inputs] + [w.node for w in model.weights if w.trainable]
    grads = autodiff(g, loss, wrt)
    ir.verify(g)
    feeds = _feeds(model, 1)
    feeds[r] = np.random.default_rng(2).normal(size=g.type(out).concrete(B))
    env = ir.interpret(g, feeds)
    for w in wrt:
        expected = np.zeros_like(feeds[w])
        for idx in np.ndindex(expected.shape):
            plus, minus = dict(feeds), dict(feeds)
            plus[w], minus[w] = feeds[w].copy(), feeds[w].copy()
            plus[w][idx] += 1e-6
            minus[w][idx] -= 1e-6
            expected[idx] = (ir.interpret(g, plus)[loss] - ir.interpret(g, minus)[loss]) / 2e-6
        np.testing.assert_allclose(env[grads[w]], expected, rtol=1e-5, atol=1e-7, err_msg=f"gradient of %{w}")


def test_activity_regularization_penalty_and_its_gradient():
    model = build_model(
        seq((4,), layer("Dense", units=3), layer("ActivityRegularization", l1=0.1, l2=0.2)), seed=0, dtype="float64"
    )
    g = model.lower(training=True)
    (spec,) = model.activity_regularizers
    penalty = g.outputs[spec["output"]]
    feeds = _feeds(model, 3)
    kernel, bias = (w.node for w in model.weights)
    grads = autodiff(g, penalty, [kernel])
    env = ir.interpret(g, feeds)
    y = env[g.outputs["output:0"]]
    np.testing.assert_allclose(env[penalty], (0.1 * np.abs(y).sum() + 0.2 * (y * y).sum()) / B, rtol=1e-12)
    x = feeds[model.inputs[0].node]
    np.testing.assert_allclose(env[grads[kernel]], x.T @ (0.1 * np.sign(y) + 0.4 * y) / B, rtol=1e-10)


def test_interpolation_matrices_keep_constants_and_the_identity():
    for n_in, n_out in [(3, 5), (7, 2), (4, 4), (1, 3)]:
        for method in ("bilinear", "nearest"):
            m = interpolation_matrix(n_in, n_out, method, "float64")
            np.testing.assert_allclose(m.sum(axis=0), 1.0)  # each output a weighted mean
            assert (m >= 0).all()
    np.testing.assert_array_equal(interpolation_matrix(4, 4, "bilinear", "float64"), np.eye(4))
    # half-pixel centers: upsampling 2 -> 4 reads 0, 0.25/0.75, 0.75/0.25, 1
    np.testing.assert_allclose(
        interpolation_matrix(2, 4, "bilinear", "float64"), [[1.0, 0.75, 0.25, 0.0], [0.0, 0.25, 0.75, 1.0]]
    )


# ---------------------------------------------------------------- noise layers

NOISE = {
    "SpatialDropout1D": layer("SpatialDropout1D", rate=0.5),
    "GaussianNoise": layer("GaussianNoise", stddev=0.5),
    "GaussianDropout": layer("GaussianDropout", rate=0.4),
    "AlphaDropout": layer("AlphaDropout", rate=0.3),
}


@pytest.mark.parametrize("cls", NOISE)
def test_noise_layer_trains_and_is_the_identity_at_predict(cls):
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(8, 5, 4)).astype("float32"), rng.normal(size=(8, 5, 2)).astype("float32")
    dense = layer("Dense", units=2, name="dense")
    noisy = models.model_from_config(seq((5, 4), NOISE[cls], dense, name=f"noise_{cls.lower()}"))
    plain = models.model_from_config(seq((5, 4), dense, name="plain"))
    plain.set_weights(noisy.get_weights())
    np.testing.assert_array_equal(noisy.predict(x, verbose=0), plain.predict(x, verbose=0))
    for m in (noisy, plain):
        m.compile(optimizer="sgd", loss="mse")
    clean = plain.evaluate(x, y, verbose=0)
    losses = [noisy.train_on_batch(x, y) for _ in range(3)]
    assert np.all(np.isfinite(losses))
    assert abs(losses[0] - clean) > 1e-3  # the first step's loss is before its update: noise made it differ


def test_noise_draws_have_keras_distributions():
    """The training graph's random sources: spatial masks share one draw per channel; Gaussian
    noise is standard normal scaled by stddev."""
    model = build_model(seq((6, 3), layer("SpatialDropout1D", rate=0.25), layer("GaussianNoise", stddev=0.5)))
    g = model.lower(training=True)
    mask, noise = g.sources("rng")
    assert g.type(mask.id).shape == ("B", 1, 3) and mask.attrs["rate"] == 0.25
    assert noise.attrs["dist"] == "normal" and g.type(noise.id).shape == ("B", 6, 3)
    assert not model.lower(training=False).sources("rng")
    x = np.ones((2, 6, 3), "float32")
    feeds = {
        model.inputs[0].node: x,
        mask.id: np.array([[[0, 4 / 3, 4 / 3]], [[4 / 3, 0, 4 / 3]]], "float32"),
        noise.id: np.full((2, 6, 3), 0.2, "float32"),
    }
    out = ir.interpret(g, feeds)[g.outputs["output:0"]]
    np.testing.assert_allclose(out, feeds[mask.id] * x + 0.1, rtol=1e-6)


def test_runtime_draws_standard_normals_for_normal_sources():
    from kgraph.runtime.abi import Manifest
    from kgraph.runtime.executable import Executable

    m = Manifest.from_json(
        {
            "kind": "train",
            "module": "",
            "function": "",
            "arena": [0, 0],
            "rng": [10, 0],
            "rng_masks": [
                {
                    "node": "n",
                    "offset": 0,
                    "batch": True,
                    "size": 10,
                    "rate": 0.0,
                    "dist": "normal",
                    "shape": ["B", 10],
                    "layer": "noise",
                }
            ],
            "inputs": [],
            "labels": [],
            "outputs": {},
            "state": [],
            "state_size": 0,
        }
    )
    exe = Executable.__new__(Executable)
    exe.random, exe.dtype = np.random.default_rng(0), np.dtype("float32")
    buf = np.zeros(10 * 1000, "float32")
    exe.draw_masks(buf, m, 1000)
    assert abs(buf.mean()) < 0.02 and abs(buf.std() - 1) < 0.02


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "config, match",
    [
        (layer("LeakyReLU", negative_slope=-0.1), "negative_slope must be a number >= 0"),
        (layer("ReLU", max_value=-1.0), "max_value must be a number >= 0"),
        (
            layer("PReLU", alpha_constraint={"class_name": "RadialConstraint", "config": {}}),
            "unsupported constraint 'RadialConstraint'; supported: MaxNorm, NonNeg, UnitNorm, MinMaxNorm",
        ),
        (layer("PReLU", shared_axes=[3]), "shared_axes"),
        (layer("Softmax", axis=0), "not made of non-batch axes"),
        # an axis past the input's rank is refused, as Keras refuses it, not wrapped around to another
        (layer("LayerNormalization", axis=3), r"axis 3 is not made of non-batch axes of input \(None, 3, 4\)"),
        (layer("LayerNormalization", axis=[1, 5]), "not made of non-batch axes"),
        (layer("BatchNormalization", axis=-3), "not made of non-batch axes"),
        (layer("RMSNormalization", axis=3), "not made of non-batch axes"),
        (layer("UnitNormalization", axis=[True]), "not made of non-batch axes"),
        (layer("GaussianDropout", rate=1.0), r"rate must be a number in \[0, 1\)"),
        (layer("SpatialDropout2D", rate=0.1), "takes rank-4 inputs"),
        (layer("Normalization", mean=[1.0, 2.0]), "mean and variance must be given together"),
        (layer("Normalization", mean=[1.0, 2.0, 3.0], variance=[1.0, 2.0, 3.0]), "does not broadcast"),
        (layer("Rescaling", scale=[1.0, 2.0, 3.0]), "does not broadcast"),
        (layer("Rescaling", scale="big"), "scale must be a number or a list"),
    ],
)
def test_bad_options_get_one_line(config, match):
    with pytest.raises(ConfigError, match=match) as info:
        build_model(seq((3, 4), config))
    assert "\n" not in str(info.value) and config["class_name"] in str(info.value)


@pytest.mark.parametrize(
    "config, match",
    [
        (layer("Resizing", height=4, width=4, interpolation="bicubic"), "interpolation 'bicubic' is not supported"),
        (layer("Resizing", height=4, width=4, crop_to_aspect_ratio=True), "crop_to_aspect_ratio=True is not supported"),
        (layer("Resizing", height=4, width=4, antialias=True), "antialias=True is not supported"),
        (layer("Resizing", height=0, width=4), "height must be a positive integer"),
        (layer("CenterCrop", height=9, width=2), "needs Keras's resize of smaller images"),
    ],
)
def test_bad_image_options_get_one_line(config, match):
    with pytest.raises(ConfigError, match=match) as info:
        build_model(seq((5, 6, 3), config))
    assert "\n" not in str(info.value)


def test_rescaling_reads_keras3_serialized_numpy_arrays():
    numpy_array = {"class_name": "__numpy__", "config": {"value": [0.5, 2.0], "dtype": "float32"}}
    model = build_model(seq((3, 2), layer("Rescaling", scale=numpy_array, offset=1.0)))
    g = model.lower(training=False)
    x = np.random.default_rng(5).normal(size=(B, 3, 2)).astype("float32")
    out = ir.interpret(g, {model.inputs[0].node: x})[g.outputs["output:0"]]
    np.testing.assert_allclose(out, x * np.float32([0.5, 2.0]) + 1.0, rtol=1e-6)
