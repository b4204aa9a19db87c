"""Append the training loss to a forward graph, in IR, with Keras 3's formulas:
per-sample losses, the mean over the batch ("sum_over_batch_size"), loss weights
per output, and the regularization penalties."""
from __future__ import annotations

from ir import TensorType

EPSILON = 1e-7  # keras.config.epsilon()

# Each builder: (graph, y_pred, y_true, from_logits) -> per-sample loss node, shape [B].
LOSSES = {}


def _loss(name, label_dtype="float32", sparse=False):
    def wrap(fn):
        LOSSES[name] = (fn, label_dtype, sparse)
        return fn
    return wrap


def _logits_of(g, pred, act):
    """Keras (TF backend) computes a cross-entropy from the logits when the prediction is
    the output of a softmax/sigmoid: the fusion 'softmax+cross_entropy'."""
    node = g.node(pred)
    return node.inputs[0] if node.op == act else None


def _clip(g, p):
    return g.clip(p, lo=EPSILON, hi=1.0 - EPSILON)


@_loss("sparse_categorical_crossentropy", label_dtype="int32", sparse=True)
def sparse_categorical_crossentropy(g, pred, labels, from_logits):
    z = pred if from_logits else _logits_of(g, pred, "softmax")
    if z is None:  # probabilities that are not a softmax output: log of the clipped values
        z = g.log(_clip(g, pred))
    return g.sparse_softmax_cross_entropy(z, labels, name="sparse_ce")


@_loss("categorical_crossentropy")
def categorical_crossentropy(g, pred, target, from_logits):
    z = pred if from_logits else _logits_of(g, pred, "softmax")
    if z is not None:
        return g.softmax_cross_entropy(z, target, name="ce")
    p = g.div(pred, g.reduce_sum(pred, axes=(-1,), keepdims=True))
    return g.neg(g.reduce_sum(g.mul(target, g.log(_clip(g, p))), axes=(-1,)), name="ce")


@_loss("binary_crossentropy")
def binary_crossentropy(g, pred, target, from_logits):
    z = pred if from_logits else _logits_of(g, pred, "sigmoid")
    if z is not None:  # max(z, 0) - z*t + log1p(exp(-|z|))
        per_elem = g.add(g.sub(g.relu(z), g.mul(z, target)), g.log1p(g.exp(g.neg(g.abs(z)))))
    else:
        p = _clip(g, pred)
        one = g.const(1.0, g.type(pred).dtype)
        per_elem = g.neg(g.add(g.mul(target, g.log(p)), g.mul(g.sub(one, target), g.log(g.sub(one, p)))))
    return g.reduce_mean(per_elem, axes=(-1,), name="bce")


@_loss("mean_squared_error")
def mean_squared_error(g, pred, target, from_logits):
    return g.reduce_mean(g.square(g.sub(pred, target)), axes=(-1,), name="mse")


@_loss("mean_absolute_error")
def mean_absolute_error(g, pred, target, from_logits):
    return g.reduce_mean(g.abs(g.sub(pred, target)), axes=(-1,), name="mae")


def label_type(loss_name: str, pred_type: TensorType) -> TensorType:
    _, dtype, sparse = LOSSES[loss_name]
    return TensorType(pred_type.shape[:-1] if sparse else pred_type.shape, dtype if sparse else pred_type.dtype)


def add_loss(graph, losses: list[dict], regularizers: list[tuple] = ()):
    """losses: one {"name", "from_logits", "weight"} per model output (graph.outputs "output:k").
    regularizers: (param id, l1, l2). Adds 'label' sources "y0", "y1", ...; graph.outputs["loss"]
    is the total, and "loss:k" each output's mean loss."""
    total = []
    for k, spec in enumerate(losses):
        if spec is None:
            continue
        pred = graph.outputs[f"output:{k}"]
        fn, _, _ = LOSSES[spec["name"]]
        label = graph.source("label", f"y{k}", label_type(spec["name"], graph.type(pred)))
        per_sample = fn(graph, pred, label, spec.get("from_logits", False))
        mean = graph.reduce_mean(per_sample, axes=None, name=f"loss{k}")
        graph.outputs[f"loss:{k}"] = mean
        w = spec.get("weight", 1.0)
        total.append(mean if w == 1.0 else graph.mul(mean, graph.const(w, graph.type(mean).dtype)))
    for param, l1, l2 in regularizers:
        dtype = graph.type(param).dtype
        if l1:
            total.append(graph.mul(graph.const(l1, dtype), graph.reduce_sum(graph.abs(param), axes=None), name="l1"))
        if l2:
            total.append(graph.mul(graph.const(l2, dtype), graph.reduce_sum(graph.square(param), axes=None), name="l2"))
    loss = total[0]
    for t in total[1:]:
        loss = graph.add(loss, t)
    graph.outputs["loss"] = loss
    return graph
