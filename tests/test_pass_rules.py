"""Each pass on small hand-built graphs (tinygrad's habit): the graph before, the graph or the
property expected after, and the kernels each fusion rule leaves. Every rewrite is also run in
the NumPy interpreter against the graph before it. No Numba here: these run in seconds."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ir
from ir import Role
from ir.ops import ACTIVATIONS, REGISTRY, OpDef, Pattern
from ir.ops.elementwise import same_type
from kgraph.frontend import build_model
from kgraph.passes import (
    add_loss,
    add_optimizer,
    autodiff,
    dce,
    fold_batch_norm,
    fuse_bias_grad,
    fuse_column_sums,
    fuse_pool_relu_grad,
    fuse_dense,
    fuse_elementwise,
    fuse_updates,
    lower_batch_norm,
    read_scalar_broadcasts,
    plan_memory,
    run_pipeline,
    split,
    updates_last,
)

ROOT = Path(__file__).resolve().parent.parent


def f32(*shape):
    return ir.TensorType(shape, "float32")


def kernels(g) -> int:
    """What a step runs: every node but sources, views and results another kernel writes."""
    return sum(
        not n.is_source and ir.get_op(n.op).pattern is not Pattern.VIEW and "computed_by" not in n.attrs
        for n in g.nodes()
    )


def ops(g) -> list:
    return [n.op for n in g.nodes() if not n.is_source]


def feeds_for(g, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for n in g.sources():
        if n.op == "const":
            continue
        shape = n.type.concrete(batch)
        if n.op == "label" and n.type.dtype == "int32":
            out[n.id] = rng.integers(0, 3, size=shape).astype(np.int32)
        else:
            out[n.id] = rng.normal(size=shape).astype(n.type.dtype)
    return out


def outputs(g, feeds):
    env = ir.interpret(g, {k: v.copy() for k, v in feeds.items() if k in g})
    return {k: env[v] for k, v in g.outputs.items()}


def assert_same_outputs(before, after, feeds):
    want, got = outputs(before, feeds), outputs(after, feeds)
    assert want.keys() == got.keys()
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, err_msg=k)


def dense(act="relu", batch_dims=("B",), name="dense"):
    """x @ w + b [-> act], the graph a Dense layer lowers to."""
    g = ir.Graph(name)
    x = g.source("input", "x", f32(*batch_dims, 4))
    w = g.source("param", "w", f32(4, 3))
    b = g.source("param", "b", f32(3))
    y = g.add(g.matmul(x, w, name="mm"), b, name="z")
    if act:
        y = g.add_node(act, [y], name="act")
    g.outputs["output:0"] = y
    return g


# ---------------------------------------------------------------- fold


def _dense_bn(between=None):
    g = ir.Graph("bn")
    x = g.source("input", "x", f32("B", 1, 5, 3))
    w = g.source("param", "w", f32(3, 2))
    b = g.source("param", "b", f32(2))
    stats = [g.source("param", n, f32(2)) for n in ("mean", "var", "gamma", "beta")]
    y = g.add(g.matmul(x, w, name="mm"), b, name="z")
    if between:
        y = g.add_node(between, [y], name="between")
    y = g.reshape(y, shape=("B", 5, 2), name="flat")  # a Conv1D's [B,1,W,C] -> [B,W,C]
    g.outputs["output:0"] = g.batch_norm(y, *stats, axis=2, epsilon=1e-3, name="bn")
    return g


def _bn_feeds(g):
    f = feeds_for(g)
    f["var"] = np.abs(f["var"]) + 0.5
    return f


def test_fold_puts_the_batch_norm_into_the_kernel_and_bias_through_a_view():
    before = _dense_bn()
    g = before.clone()
    (d,) = fold_batch_norm(g)
    assert d.fused and d.node == "mm"
    assert "batch_norm" not in ops(g)
    assert g.node("mm").inputs[1] == "bn_folded_kernel"  # x @ (w * inv)
    assert g.node("z").inputs[0] == "mm" and g.node("z").inputs[1] != "b"  # + the folded bias
    assert_same_outputs(before, g, _bn_feeds(before))


def test_fold_refuses_an_activation_between_and_lowering_keeps_the_numbers():
    before = _dense_bn(between="relu")
    g = before.clone()
    (d,) = fold_batch_norm(g)
    assert not d.fused and d.reason == "the layer's relu activation comes before the normalization"
    assert "batch_norm" in ops(g)
    lower_batch_norm(g)
    assert "batch_norm" not in ops(g) and g.node("mm").inputs[1] == "w"
    assert {ir.get_op(op).pattern for op in ops(g)} <= {Pattern.GEMM, Pattern.ELEMWISE, Pattern.VIEW}
    assert_same_outputs(before, g, _bn_feeds(before))


# ---------------------------------------------------------------- loss


def _classifier(act, loss, **spec):
    g = ir.Graph("clf")
    z = g.source("input", "z", f32("B", 3))
    g.outputs["output:0"] = g.add_node(act, [z], name="probs")
    add_loss(g, [{"name": loss, **spec}])
    return g


def _loss_value(g, feeds):
    return float(outputs(g, feeds)["loss"])


def _log_softmax(z):
    z = z.astype(np.float64)
    return z - z.max(-1, keepdims=True) - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))


@pytest.mark.parametrize(
    "loss, fused",
    [
        ("categorical_crossentropy", "softmax_cross_entropy"),
        ("sparse_categorical_crossentropy", "sparse_softmax_cross_entropy"),
    ],
)
def test_softmax_and_cross_entropy_become_one_kernel_on_the_logits(loss, fused):
    g = _classifier("softmax", loss)
    (ce,) = [n for n in g.nodes() if n.op == fused]
    assert ce.inputs[0] == "z"  # the logits, not the softmax's output
    assert not g.users("probs")  # the loss reads no probability (dce drops it in training)
    assert "log" not in ops(g) and "clip" not in ops(g)
    assert kernels(g) == 4  # the softmax (the model's output), the cross-entropy, its weighted mean
    f = feeds_for(g)
    y, sw = f["y0"], f["sw0"]
    logp = _log_softmax(f["z"])
    per_row = (
        -np.take_along_axis(logp, y[:, None].astype(int), -1)[:, 0] if y.dtype == np.int32 else -(y * logp).sum(-1)
    )
    np.testing.assert_allclose(_loss_value(g, f), np.mean(per_row * sw), rtol=1e-5)


def test_cross_entropy_of_other_probabilities_takes_the_clipped_log():
    g = _classifier("sigmoid", "categorical_crossentropy")
    assert "softmax_cross_entropy" not in ops(g) and "clip" in ops(g)
    assert g.users("probs")


def test_sigmoid_and_binary_cross_entropy_read_the_logits():
    g = _classifier("sigmoid", "binary_crossentropy")
    assert not g.users("probs") and "clip" not in ops(g)
    f = feeds_for(g)
    t, z = f["y0"].astype(np.float64), f["z"].astype(np.float64)
    per_row = np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z))), -1)
    np.testing.assert_allclose(_loss_value(g, f), np.mean(per_row * f["sw0"]), rtol=1e-5)


def test_the_logits_pair_is_the_declared_role(monkeypatch):
    """softmax+cross-entropy is chosen by softmax's Role.SOFTMAX, not by its name."""
    monkeypatch.setitem(REGISTRY, "softmax", _without(REGISTRY["softmax"], Role.SOFTMAX))
    g = _classifier("softmax", "categorical_crossentropy")
    assert "softmax_cross_entropy" not in ops(g) and g.users("probs")


def _without(opdef, role):
    return OpDef(opdef.name, opdef.pattern, opdef.infer, opdef.forward, opdef.vjp, opdef.doc, opdef.roles - {role})


# ---------------------------------------------------------------- autodiff


def test_autodiff_matches_the_analytic_gradient_and_sums_shared_uses():
    g = ir.Graph("ad")
    x = g.source("input", "x", f32("B", 4))
    w = g.source("param", "w", f32(4, 2))
    h = g.matmul(x, w)
    loss = g.reduce_sum(g.add(g.square(h), g.reduce_sum(g.mul(w, w))), axes=None)  # w used three times
    grads = autodiff(g, loss, [w])
    assert set(grads) == {"w"}
    f = feeds_for(g, batch=5)
    env = ir.interpret(g, f)
    xv, wv = f["x"].astype(np.float64), f["w"].astype(np.float64)
    want = 2 * xv.T @ (xv @ wv) + 5 * 2 * 2 * wv  # sum over B=5 rows and 2 columns of sum(w*w)
    np.testing.assert_allclose(env[grads["w"]], want, rtol=1e-4)


def test_autodiff_gives_inputs_no_gradient_and_refuses_an_unused_parameter():
    g = ir.Graph("ad")
    x = g.source("input", "x", f32("B", 2))
    w = g.source("param", "w", f32(2))
    unused = g.source("param", "unused", f32(2))
    loss = g.reduce_sum(g.mul(x, w), axes=None)
    first_backward = len(g)
    g.outputs["loss"], g.outputs["grad"] = loss, autodiff(g, loss, [w])[w]
    dce(g)
    backward = [n for n in g.nodes() if n.order >= first_backward]
    # g * x for w; nothing computes g * w, the gradient of the input, once dce has run
    assert any(n.op == "mul" and x in n.inputs for n in backward)
    assert not any(n.op == "mul" and w in n.inputs for n in backward)
    with pytest.raises(ValueError, match="parameter %unused does not affect the loss"):
        autodiff(g, loss, [w, unused])


# ---------------------------------------------------------------- optimizer


def _two_params():
    g = ir.Graph("opt")
    ws = [g.source("param", f"w{k}", f32(3)) for k in range(2)]
    grads = {w: g.source("input", f"g{k}", f32(3)) for k, w in enumerate(ws)}
    return g, grads


def test_optimizer_adds_one_update_per_parameter_with_contiguous_slots():
    g, grads = _two_params()
    add_optimizer(g, grads, "adam", {})
    updates = [n for n in g.nodes() if n.op == "adam_update"]
    assert [u.inputs[:2] for u in updates] == [("w0", "g0"), ("w1", "g1")]
    # the slots of one kind are created for all parameters before the next kind
    assert [n.id for n in g.sources("state")] == ["w0_m", "w1_m", "w0_v", "w1_v"]
    assert [u.inputs[2:4] for u in updates] == [("w0_m", "w0_v"), ("w1_m", "w1_v")]


def test_sgd_update_and_global_clipping_in_the_interpreter():
    g, grads = _two_params()
    add_optimizer(g, grads, "sgd", {"global_clipnorm": 1.0})
    f = feeds_for(g)
    f["lr"], f["step"] = np.float32(0.5), 1.0
    f["g0"], f["g1"] = np.full(3, 3.0, np.float32), np.full(3, 4.0, np.float32)  # norm 5*sqrt(3)
    w0 = f["w0"].copy()
    ir.interpret(g, f)  # the update writes w0 in place
    np.testing.assert_allclose(f["w0"], w0 - 0.5 * 3.0 / (5 * np.sqrt(3)), rtol=1e-5)


# ---------------------------------------------------------------- fusion: dense


@pytest.mark.parametrize("act", ["relu", "tanh", "gelu", None])
def test_dense_bias_and_activation_become_one_gemm(act):
    before = dense(act)
    g = before.clone()
    decisions = fuse_dense(g, training=False)
    assert kernels(before) == (3 if act else 2) and kernels(g) == 1
    (fd,) = [n for n in g.nodes() if not n.is_source]
    assert fd.op == "fused_dense" and fd.attrs["activation"] == (act or "linear")
    assert [str(d) for d in decisions] == [
        f"fused   dense+bias+activation    %{fd.id}: matmul+bias_add" + (f"+{act}" if act else "")
    ]
    assert_same_outputs(before, g, feeds_for(before))


def test_dense_on_a_sequence_fuses_over_the_last_axis():
    before = dense("relu", batch_dims=("B", 5))
    g = before.clone()
    fuse_dense(g, training=False)
    assert kernels(g) == 1
    assert_same_outputs(before, g, feeds_for(before))


def test_dense_whose_gemm_is_read_twice_does_not_fuse():
    g = dense("relu")
    g.outputs["output:1"] = g.exp("mm")
    (d,) = fuse_dense(g, training=False)
    assert not d.fused and d.reason == "the GEMM's output is not only a bias add"
    assert "fused_dense" not in ops(g)


def test_backward_and_input_gemms_do_not_fuse():
    g = ir.Graph("not_a_layer")
    a = g.source("input", "a", f32("B", 4))
    c = g.source("input", "c", f32(4, 3))
    b = g.source("param", "b", f32(3))
    w = g.source("param", "w", f32(3, 4))
    g.outputs["output:0"] = g.relu(g.add(g.matmul(a, c), b))  # a GEMM of two inputs
    g.outputs["output:1"] = g.add(g.matmul(a, w, transpose_b=True), b)  # g @ W^T, a backward GEMM
    fuse_dense(g, training=False)
    assert "fused_dense" not in ops(g)


def test_an_activation_whose_gradient_reads_its_input_keeps_the_bias_add_apart():
    """gelu's derivative reads its input: in training the bias add's output is read twice."""
    g = dense("gelu")
    g.outputs["output:1"] = g.act_grad("act", "z", activation="gelu")  # as autodiff writes it
    decisions = fuse_dense(g, training=True)
    assert [d.reason for d in decisions if not d.fused] == [
        "gelu's gradient reads its input, so the bias add must stay apart"
    ]
    fd = next(n for n in g.nodes() if n.op == "fused_dense")
    assert fd.attrs["activation"] == "linear" and g.node("act").inputs == (fd.id,)


def test_a_declared_activation_fuses_with_no_pass_edited(monkeypatch):
    """A new activation is an ACTIVATIONS entry and an op with Role.ACTIVATION: the GEMM takes it."""
    cube = (lambda x, **a: x * x * x, lambda x, **a: 3 * x * x, False)
    monkeypatch.setitem(ACTIVATIONS, "cube", cube)
    monkeypatch.setitem(
        REGISTRY,
        "cube",
        OpDef("cube", Pattern.ELEMWISE, same_type, lambda x: x * x * x, roles=frozenset({Role.CHAIN, Role.ACTIVATION})),
    )
    before = dense("cube")
    g = before.clone()
    fuse_dense(g, training=False)
    assert kernels(g) == 1 and g.node(g.outputs["output:0"]).attrs["activation"] == "cube"
    assert_same_outputs(before, g, feeds_for(before))
    # the same op without the role stays a separate kernel
    monkeypatch.setitem(REGISTRY, "cube", _without(REGISTRY["cube"], Role.ACTIVATION))
    g = before.clone()
    fuse_dense(g, training=False)
    assert kernels(g) == 2 and g.node(g.outputs["output:0"]).op == "cube"


# ---------------------------------------------------------------- fusion: the bias gradient


def _dense_backward(act):
    """The training graph of one dense layer with a sum-of-outputs loss."""
    g = dense(act)
    loss = g.reduce_sum(g.outputs["output:0"], axes=None)
    g.outputs["loss"] = loss
    grads = autodiff(g, loss, ["w", "b"])
    for p, gr in grads.items():
        g.outputs[f"grad:{p}"] = gr
    return g


def test_activation_grad_also_writes_the_bias_gradient():
    before = _dense_backward("relu")
    g = before.clone()
    (d,) = [d for d in fuse_bias_grad(g) if d.fused]
    act_grad = g.node(d.node)
    bias_grad = g.node(act_grad.attrs["bias_grad"])
    assert act_grad.op == "act_grad" and bias_grad.op == "reduce_sum"
    assert bias_grad.attrs["computed_by"] == act_grad.id and g.outputs["grad:b"] == bias_grad.id
    assert kernels(g) == kernels(before) - 1
    assert_same_outputs(before, g, feeds_for(before))


def test_a_column_sum_of_no_activation_gradient_is_refused():
    before = _dense_backward(None)  # the bias gradient sums the loss's gradient directly
    g = before.clone()
    decisions = fuse_bias_grad(g)
    assert decisions and not any(d.fused for d in decisions)
    assert all("not an activation gradient" in d.reason for d in decisions)
    assert kernels(g) == kernels(before)


@pytest.mark.parametrize("reduce", ["reduce_mean", "reduce_sum"])
def test_a_fused_loop_also_writes_its_column_sum_or_mean(reduce):
    """Batch norm's variance, mean((x - mean)^2) over the leading axes: the loop writes the mean
    (and is still stored for its other reader); a sum over other axes stays a reduction."""
    before = ir.Graph("variance")
    x, y, _ = _three(before, shape=("B", 3, 4))
    mean = before.reduce_mean(x, axes=(0, 1), name="mean")
    square = before.square(before.sub(x, mean))
    before.outputs["output:0"] = getattr(before, reduce)(square, axes=(0, 1))
    before.outputs["output:1"] = before.reduce_sum(before.mul(square, y), axes=(0,))  # not every leading axis
    g = before.clone()
    fuse_elementwise(g)
    decisions = fuse_column_sums(g)
    (d,) = [d for d in decisions if d.fused]
    loop, stat = g.node(d.node), g.node(g.outputs["output:0"])
    assert loop.op == "fused_elementwise" and loop.attrs["bias_grad"] == stat.id and stat.op == reduce
    assert stat.attrs["computed_by"] == loop.id and "computed_by" not in g.node(g.outputs["output:1"]).attrs
    assert kernels(g) == kernels(before) - 2  # sub+square: one loop, which writes the statistic
    assert_same_outputs(before, g, feeds_for(before))


def _relu_pool_backward(mode, also_read=False):
    """relu -> pool2d -> sum, differentiated: act_grad(pool2d_grad(g, r, y), r). also_read: the
    pooling gradient is an output too."""
    g = ir.Graph("relu_pool")
    x = g.source("input", "x", f32("B", 6, 6, 3))
    r = g.relu(x, name="r")
    y = g.pool2d(r, mode=mode, pool=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0))
    g.outputs["loss"] = g.reduce_sum(g.mul(y, y), axes=None)
    grads = autodiff(g, g.outputs["loss"], ["x"])
    g.outputs["grad:x"] = grads["x"]
    if also_read:
        (pool_grad,) = [n.id for n in g.nodes() if n.op == "pool2d_grad"]
        g.outputs["pool_grad"] = pool_grad
    return g


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pooling_gradient_applies_the_relu_gradient_after_it(mode):
    before = _relu_pool_backward(mode)
    g = before.clone()
    (d,) = fuse_pool_relu_grad(g)
    assert d.fused and g.node(d.node).op == "pool2d_grad" and g.node(d.node).attrs["relu"]
    assert "act_grad" not in {n.op for n in g.nodes()} and kernels(g) == kernels(before) - 1
    assert_same_outputs(before, g, feeds_for(before))


def test_a_pooling_gradient_read_elsewhere_keeps_the_relu_gradient_apart():
    before = _relu_pool_backward("max", also_read=True)
    g = before.clone()
    (d,) = fuse_pool_relu_grad(g)
    assert not d.fused and "other readers" in d.reason and kernels(g) == kernels(before)


def test_the_training_step_of_a_dense_relu_layer_in_kernels():
    """forward: one fused GEMM; backward: the weight-gradient GEMM and act_grad+bias grad."""
    g = dense("relu")
    g.outputs["loss"] = g.reduce_sum(g.outputs.pop("output:0"), axes=None)
    grads = autodiff(g, g.outputs["loss"], ["w", "b"])
    add_optimizer(g, grads, "sgd", {})
    fuse_dense(g, training=True)
    dce(g)
    fuse_bias_grad(g)
    fuse_elementwise(g)
    fuse_updates(g)
    dce(g)
    assert sorted(ops(g)) == [
        "act_grad",
        "broadcast_like",
        "fused_dense",
        "fused_update",
        "matmul",
        "reduce_sum",
        "reduce_sum",
    ]
    assert kernels(g) == 6  # the bias gradient's reduce_sum is written by act_grad


# ---------------------------------------------------------------- fusion: elementwise chains


def _three(g, shape=("B", 4)):
    return [g.source("input", n, f32(*shape)) for n in "xyz"]


def test_a_consumer_and_its_producers_become_one_loop():
    before = ir.Graph("chain")
    x, y, z = _three(before)
    before.outputs["output:0"] = before.add(before.mul(x, y), before.exp(z))
    g = before.clone()
    decisions = fuse_elementwise(g)
    assert kernels(before) == 3 and kernels(g) == 1
    (fe,) = [n for n in g.nodes() if not n.is_source]
    assert fe.op == "fused_elementwise" and fe.attrs["fused"] == ["exp", "mul", "add"]
    assert [d.fused for d in decisions] == [True]
    assert_same_outputs(before, g, feeds_for(before))


def test_a_longer_chain_becomes_one_loop():
    before = ir.Graph("chain")
    x, y, z = _three(before)
    before.outputs["output:0"] = before.log(before.exp(before.add(before.mul(x, y), z)))
    g = before.clone()
    fuse_elementwise(g)
    assert kernels(g) == 1
    (node,) = [n for n in g.nodes() if n.op == "fused_elementwise"]
    assert node.attrs["fused"] == ["mul", "add", "exp", "log"]
    assert_same_outputs(before, g, feeds_for(before))


def test_no_fused_loop_passes_the_chain_limit():
    """Two chains of 12 ops meeting in an add: merging both would make 25 ops (the limit counts
    every producer a merge takes in, not each alone)."""
    from kgraph.passes.fusion import MAX_CHAIN

    before = ir.Graph("long")
    x, y, _ = _three(before)
    chains = []
    for v in (x, y):
        for k in range(12):
            v = before.neg(v) if k % 2 else before.abs(v)
        chains.append(v)
    before.outputs["output:0"] = before.add(*chains)
    g = before.clone()
    fuse_elementwise(g)
    sizes = [len(n.attrs["fused"]) for n in g.nodes() if n.op == "fused_elementwise"]
    assert max(sizes) == MAX_CHAIN and kernels(g) == 2  # 24 ops in one loop, the 25th alone
    assert_same_outputs(before, g, feeds_for(before))


def _normalised(g, x):
    """Batch norm's x_hat = (x - mean) * inv: one full-size operand, two small ones."""
    mean = g.reduce_mean(x, axes=(0,), name="mean")
    inv = g.exp(g.neg(mean), name="inv")
    return g.mul(g.sub(x, mean), inv, name="x_hat")


def test_a_value_that_reads_one_full_operand_is_recomputed_in_each_reader():
    before = ir.Graph("recompute")
    x, y, _ = _three(before)
    x_hat = _normalised(before, x)
    before.outputs["output:0"] = before.add(before.mul(y, x_hat), before.exp(x_hat))
    g = before.clone()
    fuse_elementwise(g)
    assert "x_hat" not in g  # written and read back twice costs more than reading x twice
    full = [n for n in g.nodes() if n.op == "fused_elementwise" and n.type.shape == g.type(x).shape]
    assert len(full) == 1 and full[0].attrs["fused"].count("sub") == 2  # both readers took it in
    assert_same_outputs(before, g, feeds_for(before))


def test_an_output_is_not_recomputed():
    before = ir.Graph("recompute_output")
    x, y, _ = _three(before)
    x_hat = _normalised(before, x)
    before.outputs["output:0"] = before.add(before.mul(y, x_hat), before.exp(x_hat))
    before.outputs["output:1"] = x_hat
    g = before.clone()
    fuse_elementwise(g)
    subs = sum(n.attrs.get("fused", [n.op]).count("sub") for n in g.nodes() if not n.is_source)
    assert subs == 1  # the output is stored, and its readers read it
    assert_same_outputs(before, g, feeds_for(before))


def test_a_value_whose_two_readers_fuse_joins_their_loop():
    before = ir.Graph("shared")
    x, y, _ = _three(before)
    a = before.mul(x, y, name="shared")
    before.outputs["output:0"] = before.add(before.exp(a), before.log(before.abs(a)))
    g = before.clone()
    fuse_elementwise(g)
    # exp+add took in abs+log, and the value's two readers are then one: it joins them
    assert kernels(g) == 1
    assert_same_outputs(before, g, feeds_for(before))


def test_a_value_that_reads_two_full_operands_is_stored_for_its_readers():
    before = ir.Graph("stored")
    x, y, _ = _three(before)
    a = before.mul(x, y, name="shared")
    before.outputs["output:0"] = before.exp(a)
    before.outputs["output:1"] = before.log(before.abs(a))
    g = before.clone()
    fuse_elementwise(g)
    assert "shared" in g and g.node("shared").op == "mul"  # recomputed, each reader would read x and y
    assert kernels(g) == 3  # mul; exp; abs+log
    assert_same_outputs(before, g, feeds_for(before))


def test_a_value_read_twice_by_one_consumer_is_not_recomputed():
    before = ir.Graph("square")
    x, _, _ = _three(before)
    a = before.exp(x, name="a")
    before.outputs["output:0"] = before.mul(a, a)
    g = before.clone()
    assert not fuse_elementwise(g)
    assert ops(g) == ["exp", "mul"]


def test_a_graph_output_is_not_fused_away():
    g = ir.Graph("out")
    x, y, _ = _three(g)
    a = g.mul(x, y, name="a")
    g.outputs["output:0"] = a
    g.outputs["output:1"] = g.exp(a)
    fuse_elementwise(g)
    assert g.node("a").op == "mul" and kernels(g) == 2


def test_a_smaller_operand_does_not_join_the_loop():
    before = ir.Graph("bias")
    x = before.source("input", "x", f32("B", 4))
    b, c = before.source("param", "b", f32(4)), before.source("param", "c", f32(4))
    before.outputs["output:0"] = before.add(before.exp(x), before.mul(b, c, name="scale"), name="sum")
    g = before.clone()
    decisions = fuse_elementwise(g)
    assert kernels(g) == 2 and g.node("scale").op == "mul"
    assert [(d.fused, d.reason) for d in decisions] == [(False, "shape f32[4] differs from %sum's"), (True, "exp+add")]
    assert_same_outputs(before, g, feeds_for(before))


def test_gradient_views_and_broadcasts_are_not_chain_members():
    """broadcast_like reads a reduced operand: it stays its own kernel."""
    g = ir.Graph("bcast")
    x = g.source("input", "x", f32("B", 4))
    s = g.reduce_sum(x, axes=(1,))
    g.outputs["output:0"] = g.exp(g.broadcast_like(g.neg(s), x, axes=(1,)))
    fuse_elementwise(g)
    assert ops(g) == ["reduce_sum", "neg", "broadcast_like", "exp"]


def _loss_seed(weights_rank=1):
    """A mean loss's gradient: its seed (one element) broadcast to the per-sample losses, divided
    by their count and weighted by the sample weights (a scalar weight: the loop's shape would
    be the seed's)."""
    g = ir.Graph("seed")
    losses = g.source("input", "losses", f32("B"))
    weights = g.source("input", "weights", f32("B") if weights_rank else f32())
    seed = g.const(1.0)
    grad = g.mul(g.div(g.broadcast_like(seed, losses, name="spread"), g.count(losses)), weights, name="weighted")
    g.outputs["output:0"] = grad
    return g


def test_a_loop_reads_a_one_element_broadcast_as_it_is():
    before = _loss_seed()
    g = before.clone()
    fuse_elementwise(g)
    assert ops(g) == ["broadcast_like", "count", "fused_elementwise"]
    decisions = read_scalar_broadcasts(g)
    dce(g)
    ir.verify(g)
    assert ops(g) == ["count", "fused_elementwise"]
    (loop,) = [n for n in g.nodes() if n.op == "fused_elementwise"]
    assert g.node(loop.inputs[0]).op == "const" and loop.type == f32("B")
    assert [str(d) for d in decisions] == [
        f"read    scalar broadcast         %spread: %{loop.id} reads %{loop.inputs[0]}"
    ]
    assert_same_outputs(before, g, feeds_for(before))


def test_a_broadcast_stays_where_the_loop_would_lose_its_shape_or_the_operand_is_larger():
    g = _loss_seed(weights_rank=0)  # every other operand one element too: the loop's shape is the broadcast's
    fuse_elementwise(g)
    (decision,) = read_scalar_broadcasts(g)
    assert not decision.fused and str(decision).endswith("would be f32[]-shaped") and "broadcast_like" in ops(g)
    g = ir.Graph("rows")  # a row's sum broadcast back over the row: not one element
    x = g.source("input", "x", f32("B", 4))
    g.outputs["output:0"] = g.mul(g.broadcast_like(g.reduce_sum(x, axes=(1,)), x, axes=(1,)), x)
    assert read_scalar_broadcasts(g) == [] and "broadcast_like" in ops(g)


# ---------------------------------------------------------------- fusion: the optimizer update


def test_the_updates_of_all_parameters_become_one_loop():
    before, grads = _two_params()
    add_optimizer(before, grads, "sgd", {"momentum": 0.9})
    g = before.clone()
    (d,) = fuse_updates(g)
    assert d.fused and kernels(before) == 2 and kernels(g) == 1
    (fu,) = [n for n in g.nodes() if n.op == "fused_update"]
    assert fu.attrs["update"] == "sgd_update" and fu.attrs["per_param"] == 3
    f = feeds_for(before)
    f["lr"], f["step"] = np.float32(0.1), np.float64(1.0)
    want, got = {k: v.copy() for k, v in f.items()}, {k: v.copy() for k, v in f.items()}
    ir.interpret(before, want)
    ir.interpret(g, got)
    for p in ("w0", "w1", "w0_momentum", "w1_momentum"):
        np.testing.assert_allclose(got[p], want[p], rtol=1e-6)


def test_updates_of_different_rules_stay_apart():
    g, grads = _two_params()
    add_optimizer(g, grads, "sgd", {})
    first = next(n for n in g.nodes() if n.op == "sgd_update")
    first.attrs["momentum"] = 0.5
    (d,) = fuse_updates(g)
    assert not d.fused and d.reason == "parameters use different update rules" and kernels(g) == 2


# ---------------------------------------------------------------- dce


def test_dce_keeps_outputs_updates_and_model_sources():
    g = ir.Graph("dce")
    x = g.source("input", "x", f32("B", 2))
    w = g.source("param", "w", f32(2))
    g.source("param", "unused_w", f32(2))
    state = g.source("state", "mean", f32(2))
    dead = g.exp(g.mul(x, g.const(3.0)), name="dead")
    g.outputs["output:0"] = g.mul(x, w, name="y")
    g.moving_average(state, g.reduce_mean(x, axes=(0,), name="batch_mean"), momentum=0.9)
    dce(g)
    assert dead not in g and not g.sources("const")
    assert {"x", "w", "unused_w", "mean", "y", "batch_mean"} <= {n.id for n in g.nodes()}
    assert "moving_average" in ops(g)


# ---------------------------------------------------------------- memory plan


def _chain_with_update():
    """a = exp(x) read by a moving average early on; b, c later: a's slot is free after its reader."""
    g = ir.Graph("plan")
    x = g.source("input", "x", f32("B", 8))
    state = g.source("state", "m", f32(8))
    a = g.exp(x, name="a")
    g.moving_average(state, g.reduce_mean(a, axes=(0,), name="stat"), momentum=0.9, name="update")
    b = g.neg(x, name="b")
    g.outputs["output:0"] = g.abs(b, name="c")
    return g


def test_plan_reuses_a_dead_buffer_and_never_overlaps_live_ones():
    g = _chain_with_update()
    plan = plan_memory(g, [])
    slots = plan.slots
    assert all(slots[n].region == "arena" and slots[n].batch for n in ("a", "b", "c"))
    assert slots["stat"].region == "arena" and not slots["stat"].batch
    assert slots["update"].region == "none" and slots["m"].region == "state"
    assert slots["b"].offset == slots["a"].offset  # a died before b was written
    assert slots["c"].offset != slots["b"].offset  # c is written while b is read
    assert plan.arena_per_sample == 16 and plan.arena_per_sample == plan.bound_per_sample


def test_plan_follows_the_schedule_it_is_given():
    """Run in two halves, the update reads its operands after everything else: they stay live."""
    g = _chain_with_update()
    schedule = updates_last(g)
    assert schedule[-1] == "update" and schedule[:-1] == [n.id for n in g.nodes() if n.id != "update"]
    plan = plan_memory(g, [], schedule)
    assert plan.intervals["stat"][1] == len(schedule) - 1
    assert plan_memory(g, []).intervals["stat"][1] == schedule.index("stat") + 1
    with pytest.raises(ValueError, match="every node of the graph once"):
        plan_memory(g, [], schedule[:-1])


def test_plan_lays_parameters_and_their_gradients_out_in_keras_order():
    g, grads = _two_params()
    grads = {w: g.neg(gr, name=f"d{w}") for w, gr in grads.items()}
    add_optimizer(g, grads, "sgd", {})
    plan = plan_memory(g, ["w1", "w0"])
    assert (plan.slots["w1"].offset, plan.slots["w0"].offset) == (0, 3)
    assert (plan.slots["dw1"].region, plan.slots["dw1"].offset, plan.slots["dw0"].offset) == ("grads", 0, 3)
    assert plan.buckets == {"params": 6, "grads": 6, "state": 0}


def test_a_view_aliases_its_root_and_keeps_it_alive():
    g = ir.Graph("view")
    x = g.source("input", "x", f32("B", 2, 3))
    a = g.exp(x, name="a")
    v = g.reshape(a, shape=("B", 6), name="v")
    g.outputs["output:0"] = g.neg(g.neg(v, name="late_reader"), name="out")
    plan = plan_memory(g, [])
    assert plan.slots["v"].region == "view" and plan.slots["v"].view_of == "a"
    assert plan.intervals["a"][1] == plan.schedule.index("late_reader")


# ---------------------------------------------------------------- split (the caller gives the cores)


def _big_dense():
    g = ir.Graph("big")
    x = g.source("input", "x", f32("B", 256))
    w = g.source("param", "w", f32(256, 256))
    g.outputs["output:0"] = g.matmul(x, w, name="mm")
    return g


@pytest.mark.parametrize("parts, expected", [(1, 1), (2, 2), (64, split.MAX_PARTS)])
def test_split_uses_the_parts_it_is_given_up_to_its_limit(parts, expected):
    g = _big_dense()
    split.split_gemms(g, parts)
    assert split.step_parts(g) == expected
    assert g.node("mm").attrs.get("split") == ("k" if expected > 1 else None)


def test_the_passes_import_no_target():
    """No pass imports numba, the code generators or the runtime; importing them loads no numba."""
    for path in (ROOT / "kgraph" / "passes").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [("." * node.level) + (node.module or "")]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                assert not name.startswith(("numba", "kgraph.codegen", "kgraph.runtime", "..codegen", "..runtime")), (
                    f"{path.name} imports {name}"
                )
    code = "import sys, kgraph.passes; sys.exit('numba' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


# ---------------------------------------------------------------- kernels of the example models

# kernels per step of each example model (predict, test, train with adam), with the fusion passes
# on and off: a change in any fusion rule shows here. (The same counts as before the fusion roles
# were declared on the ops, when the passes matched op names; a training step one fewer since its
# loss's gradient reads its seed in its loop, read_scalar_broadcasts.)
EXAMPLE_KERNELS = {
    "digits_mlp.json": ([3, 6, 17], [6, 9, 26]),
    "guide_functional.json": ([4, 7, 19], [9, 12, 33]),
    "iris.json": ([3, 7, 19], [8, 13, 37]),
}


def _example_kernels(name, fuse):
    config = json.loads((ROOT / "examples" / name).read_text())
    fm = build_model(config, seed=0)
    counts = []
    for kind in ("predict", "test", "train"):
        c = run_pipeline(
            kind,
            fm.lower(training=kind == "train"),
            [w.node for w in fm.weights],
            losses=[{"name": "sparse_categorical_crossentropy"}] * len(fm.output_names),
            optimizer=("adam", {}),
            fuse=fuse,
        )
        counts.append(kernels(c.graph))
    return counts


@pytest.mark.parametrize("name", sorted(EXAMPLE_KERNELS))
def test_example_models_kernel_counts(name):
    assert (_example_kernels(name, True), _example_kernels(name, False)) == EXAMPLE_KERNELS[name]


@pytest.mark.parametrize("channels, expected", [(1, "batch"), (32, "rows")])
def test_a_convolutions_kernel_gradient_splits_by_samples_when_its_rows_are_few(channels, expected):
    """dW = cols^T @ g of a GEMM split "m": by the weight's rows, unless a part would get fewer than
    MIN_PART_ROWS of them (3x3 over 1 channel: 9); then by samples, a partial dW a part."""
    g = ir.Graph("conv_grad")
    cols = g.source("input", "cols", f32("B", 10, 10, 9 * channels))
    dy = g.source("input", "dy", f32("B", 10, 10, 16))
    g.outputs["output:0"] = g.matmul(cols, dy, transpose_a=True, name="dw")
    split.split_gemms(g, 2)
    node = g.node("dw")
    assert node.attrs["split"] == expected
    assert node.attrs.get("workspace_fixed") == (2 * 9 * channels * 16 if expected == "batch" else None)


def _cnn_train(activation):
    """The tutorials' CNN (Conv2D(32, 3) -> MaxPooling2D -> Dense) with the convolution's
    activation, its training step compiled for 2 parts."""
    from benchmarks.models import cnn

    config = cnn("cnn")
    config["config"]["layers"][1]["config"]["activation"] = activation
    fm = build_model(config, seed=0)
    return run_pipeline(
        "train",
        fm.lower(training=True),
        [w.node for w in fm.weights],
        losses=[{"name": "sparse_categorical_crossentropy"}],
        optimizer=("adam", {}),
        parts=2,
    )


def test_a_convolution_of_few_channels_runs_in_sample_blocks():
    """im2col -> GEMM + bias + ReLU -> max pooling as one blocked kernel, run at the pooling's place;
    pooling's gradient (with the ReLU's and the bias's) with the kernel gradient, at its own."""
    c = _cnn_train("relu")
    g = c.graph
    (forward,) = [n for n in g.nodes() if n.attrs.get("conv_block") and "conv" in n.attrs["conv_block"]]
    (backward,) = [n for n in g.nodes() if n.attrs.get("conv_block") and "kernel_grad" in n.attrs["conv_block"]]
    block = forward.attrs["conv_block"]
    assert forward.op == "pool2d" and block["pool"] == forward.id
    assert [g.node(block[k]).attrs["runs_at"] for k in ("im2col", "conv")] == [forward.id, forward.id]
    # 26x26 pixels of 9 patch values, 32 outputs; 13x13x32 pooled: 132 KB a sample
    assert block["block"] == split.BLOCK_BYTES // (4 * 26 * 26 * (9 + 32) + 4 * 13 * 13 * 32)
    assert backward.op == "pool2d_grad" and backward.attrs["relu"] and backward.attrs["bias_grad"]
    assert g.node(backward.attrs["conv_block"]["kernel_grad"]).attrs["runs_at"] == backward.id
    blocked = [str(d) for d in c.decisions if d.kind == "convolution block"]
    assert len(blocked) == 2 and all(d.startswith("blocked") for d in blocked)


@pytest.mark.parametrize("activation", ["tanh", "leaky_relu"])
def test_a_convolution_whose_activation_the_blocked_kernel_lacks_runs_apart(activation):
    """The blocked kernel computes a linear or ReLU convolution; others run apart, said why."""
    c = _cnn_train(activation)
    assert not any(n.attrs.get("conv_block") and "conv" in n.attrs["conv_block"] for n in c.graph.nodes())
    (refused,) = [d for d in c.decisions if d.kind == "convolution block" and not d.fused]
    assert f"activation {activation}: the blocked kernel's are linear, relu" in str(refused)
    assert str(refused).startswith("apart")
