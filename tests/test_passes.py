"""Passes checked on their own: batch norm folded into the GEMM before it at inference (and the
refusals), against the unfolded graph in the NumPy interpreter."""

import numpy as np
import pytest

import ir
import kgraph.models as models
from kgraph.passes import fold_batch_norm, lower_batch_norm, run_pipeline


def _layer(cls, name, **config):
    return {"class_name": cls, "config": {"name": name, **config}}


def _sequential(shape, *layers):
    return {
        "class_name": "Sequential",
        "config": {"name": "folds", "layers": [_layer("InputLayer", "x", batch_shape=[None, *shape]), *layers]},
    }


# every fold and refusal: (layer before the batch norm, batch norm, decision)
IMAGE_MODEL = _sequential(
    (5, 5, 2),
    _layer("Conv2D", "conv", filters=3, kernel_size=3, padding="same"),
    _layer("BatchNormalization", "bn_conv"),
    _layer("Activation", "relu", activation="relu"),
    _layer("Conv2D", "conv_relu", filters=3, kernel_size=2, activation="relu"),
    _layer("BatchNormalization", "bn_after_relu"),
    _layer("SeparableConv2D", "sep", filters=4, kernel_size=2, use_bias=False),
    _layer("BatchNormalization", "bn_sep", center=False),
    _layer("DepthwiseConv2D", "depthwise", kernel_size=1),
    _layer("BatchNormalization", "bn_depthwise"),
    _layer("Flatten", "flat"),
    _layer("Dense", "dense", units=6, use_bias=False),
    _layer("BatchNormalization", "bn_dense", scale=False),
    _layer("Dense", "head", units=3),
    _layer("BatchNormalization", "bn_out", epsilon=0.01),
)
SEQUENCE_MODEL = _sequential(
    (6, 3),
    _layer("Conv1D", "conv1d", filters=4, kernel_size=2),
    _layer("BatchNormalization", "bn_conv1d"),
    _layer("BatchNormalization", "bn_axis1", axis=1),
    _layer("Flatten", "flat"),
    _layer("Dense", "head", units=2),
)


def _random_weights(model, seed):
    rng = np.random.default_rng(seed)
    out = []
    for spec in model.frontend.weights:
        w = rng.normal(scale=0.5, size=spec.shape)
        out.append((np.abs(w) + 0.5 if spec.name == "moving_variance" else w).astype(np.float32))
    return out


def _unfolded(model, x, weights):
    """The predictions of the frontend's graph, batch norms unfolded, in the NumPy interpreter."""
    fm = model.frontend
    graph = fm.lower(training=False)
    env = ir.interpret(graph, {fm.inputs[0].node: x, **{w.node: v for w, v in zip(fm.weights, weights)}})
    return env[graph.outputs["output:0"]]


def _decisions(model):
    return {
        d.reason if d.fused else d.node: d for d in model.compiled["predict"].decisions if d.kind == "batch-norm fold"
    }


@pytest.mark.parametrize(
    "config, shape", [(IMAGE_MODEL, (5, 5, 2)), (SEQUENCE_MODEL, (6, 3))], ids=["image", "sequence"]
)
def test_folded_predictions_match_the_unfolded_graph_after_set_weights(config, shape):
    model = models.model_from_config(config, seed=0)
    x = np.random.default_rng(1).normal(size=(4, *shape)).astype(np.float32)
    for seed in (2, 3):  # the second set_weights changes every statistic the fold read
        weights = _random_weights(model, seed)
        model.set_weights(weights)
        np.testing.assert_allclose(model.predict(x, verbose=0), _unfolded(model, x, weights), rtol=1e-5, atol=1e-6)


def test_folds_and_refusals_are_reported():
    model = models.model_from_config(IMAGE_MODEL, seed=0)
    model.predict(np.zeros((1, 5, 5, 2), np.float32), verbose=0)
    decisions = _decisions(model)
    for bn in ("bn_conv", "bn_sep", "bn_dense", "bn_out"):
        assert decisions[f"%{bn} folded into the kernel and bias"].fused
    assert "relu activation comes before the normalization" in decisions["bn_after_relu"].reason
    assert "not the output of a dense or convolution GEMM" in decisions["bn_depthwise"].reason
    graph = model.compiled["predict"].graph
    assert sum(n.op == "fused_dense" for n in graph.nodes()) == 5  # conv, sep's pointwise, dense, head; conv_relu
    assert "bn_conv" not in graph and "bn_dense" not in graph

    sequence = models.model_from_config(SEQUENCE_MODEL, seed=0)
    sequence.predict(np.zeros((1, 6, 3), np.float32), verbose=0)
    decisions = _decisions(sequence)
    assert decisions["%bn_conv1d folded into the kernel and bias"].fused  # through the [B,1,W,C] reshape
    assert "normalizes axis 1" in decisions["bn_axis1"].reason


def test_train_step_never_folds():
    model = models.model_from_config(IMAGE_MODEL, seed=0)
    fm = model.frontend
    compiled = run_pipeline(
        "test", fm.lower(training=False), [w.node for w in fm.weights], losses=[{"name": "mean_squared_error"}]
    )
    assert sum(d.kind == "batch-norm fold" and d.fused for d in compiled.decisions) == 4
    compiled = run_pipeline(
        "train",
        fm.lower(training=True),
        [w.node for w in fm.weights],
        losses=[{"name": "mean_squared_error"}],
        optimizer=("sgd", {}),
        trainable=[w.node for w in fm.weights if w.trainable],
    )
    assert not [d for d in compiled.decisions if d.kind == "batch-norm fold"]


def _dense_bn_graph(extra_reader):
    g = ir.Graph("bn")
    f32 = "float32"
    x = g.source("input", "x", ir.TensorType(("B", 3), f32))
    w = g.source("param", "w", ir.TensorType((3, 2), f32))
    stats = [g.source("param", n, ir.TensorType((2,), f32)) for n in ("mean", "var", "gamma", "beta")]
    mm = g.matmul(x, w, name="mm")
    g.outputs["output:0"] = g.batch_norm(mm, *stats, axis=1, epsilon=1e-3, name="bn")
    if extra_reader:
        g.outputs["output:1"] = g.relu(mm, name="other")
    return g, [x, w, *stats]


@pytest.mark.parametrize("extra_reader", [False, True], ids=["folds", "gemm_read_twice"])
def test_fold_is_exact_or_refused(extra_reader):
    g, sources = _dense_bn_graph(extra_reader)
    rng = np.random.default_rng(4)
    feeds = {s: rng.normal(size=g.type(s).concrete(5)).astype(np.float32) for s in sources}
    feeds["var"] = np.abs(feeds["var"]) + 0.5
    before = ir.interpret(g, feeds)[g.outputs["output:0"]]
    (decision,) = fold_batch_norm(g)
    lower_batch_norm(g)
    ir.verify(g)
    assert decision.fused is not extra_reader
    if extra_reader:
        assert str(decision) == (
            "refused batch-norm fold          %bn: %mm has other readers, which need it unnormalized"
        )
    np.testing.assert_allclose(ir.interpret(g, feeds)[g.outputs["output:0"]], before, rtol=1e-5, atol=1e-6)


def test_train_and_test_steps_compute_only_the_outputs_their_metrics_read():
    """Keras's fit and evaluate return the loss and metrics, never the predictions: a training or
    test step returns the outputs its metrics read, and an output without a metric is computed only
    as far as its loss needs it (a softmax classifier's loss reads the logits: no softmax). The
    losses and weights are the same floats either way."""
    from pathlib import Path

    config = (Path(__file__).parent / "fixtures" / "configs" / "k3_multi_output.json").read_text()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 7)).astype(np.float32)
    ys = [np.arange(32, dtype=np.int32) % 4, rng.standard_normal((32, 2)).astype(np.float32)]
    runs = {}
    for read in ("reg", "both"):
        model = models.model_from_json(config, seed=0)
        metrics = {"reg": ["mae"]} if read == "reg" else {"cls": ["accuracy"], "reg": ["mae"]}
        model.compile(optimizer="adam", loss=["sparse_categorical_crossentropy", "mse"], metrics=metrics)
        for kind in ("train", "test"):
            returned = {k for k in model.executable.steps[kind].outputs if k.startswith("output:")}
            assert returned == ({"output:1"} if read == "reg" else {"output:0", "output:1"}), (read, kind)
            ops = {n.op for n in model.compiled[kind].graph.nodes()}
            assert ("softmax" in ops) == (read == "both"), (read, kind, sorted(ops))
        history = model.fit(x, ys, batch_size=8, epochs=2, shuffle=False, verbose=0).history
        runs[read] = (history, model.evaluate(x, ys, verbose=0, return_dict=True), model.get_weights())
    (h_reg, e_reg, w_reg), (h_both, e_both, w_both) = runs["reg"], runs["both"]
    assert "cls_accuracy" not in h_reg and "cls_accuracy" in h_both and "cls_accuracy" in e_both
    for key in ("loss", "reg_mae", "cls_loss", "reg_loss"):
        assert h_reg[key] == h_both[key], key
        assert e_reg[key] == e_both[key], key
    for a, b in zip(w_reg, w_both):
        np.testing.assert_array_equal(a, b)
