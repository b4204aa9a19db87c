"""Append the training loss to a forward graph, in IR, with Keras 3's formulas: per-sample
losses, weighted by per-sample weights and summed over the batch then divided by its size
("sum_over_batch_size"), loss weights per output, and the regularization penalties.

Every output with a loss gets two sources: its targets (a 'label' node "y<k>") and its per-sample
weights (a 'sample_weight' node "sw<k>"), which the runtime fills with ones when fit is given
none. One compiled step thus serves weighted and unweighted batches; with ones the product is
exact, so unweighted losses are bit for bit those of an unweighted graph.

An output that carries a mask (a [B,T] 0/1 node: the time steps Embedding(mask_zero) or Masking
keep) has its steps' losses weighted as Keras's `apply_mask` does: a kept step by count/valid, a
masked one by 0, so the mean over all B*T steps is sum(loss * sample_weight) / valid over the kept
steps (0 when none is kept). The mask is also the step's output "mask:k", for the metrics."""

from __future__ import annotations

import math

from ir import Role, TensorType, has_role

EPSILON = 1e-7  # keras.config.epsilon()

# name -> (builder, label dtype or None for the prediction's, sparse labels)
# builder: (graph, y_pred, y_true, spec) -> per-sample loss node of shape y_pred.shape[:-1]
LOSSES = {}


def _loss(name, label_dtype=None, sparse=False):
    def wrap(fn):
        LOSSES[name] = (fn, label_dtype, sparse)
        return fn

    return wrap


class _Consts:
    """Scalar constants in the prediction's dtype: c(0.5)."""

    def __init__(self, g, like):
        self.g, self.dtype = g, g.type(like).dtype

    def __call__(self, value):
        return self.g.const(value, self.dtype)


def _last_mean(g, x, name):
    return g.reduce_mean(x, axes=(-1,), name=name)


def _logits_of(g, pred, role):
    """Keras (TF backend) computes a cross-entropy from the logits when the prediction is
    the output of a softmax/sigmoid (an op declaring `role`): the fusion 'softmax+cross_entropy'."""
    node = g.node(pred)
    return node.inputs[0] if has_role(node.op, role) else None


def _clip(g, p, lo=EPSILON, hi=1.0 - EPSILON):
    return g.clip(p, lo=lo, hi=hi)


# ---------------------------------------------------------------- cross-entropies


@_loss("sparse_categorical_crossentropy", label_dtype="int32", sparse=True)
def sparse_categorical_crossentropy(g, pred, labels, spec):
    z = pred if spec.get("from_logits") else _logits_of(g, pred, Role.SOFTMAX)
    if z is None:  # probabilities that are not a softmax output: log of the clipped values
        z = g.log(_clip(g, pred))
    return g.sparse_softmax_cross_entropy(z, labels, name="sparse_ce")


def _smooth(g, t, smoothing, toward):
    """t * (1 - smoothing) + smoothing * toward (Keras's label_smoothing)."""
    if not smoothing:
        return t
    c = _Consts(g, t)
    return g.add(g.mul(t, c(1.0 - smoothing)), c(smoothing * toward))


@_loss("categorical_crossentropy")
def categorical_crossentropy(g, pred, target, spec):
    target = _smooth(g, target, spec.get("label_smoothing", 0.0), 1.0 / g.type(pred).shape[-1])
    z = pred if spec.get("from_logits") else _logits_of(g, pred, Role.SOFTMAX)
    if z is not None:
        return g.softmax_cross_entropy(z, target, name="ce")
    p = g.div(pred, g.reduce_sum(pred, axes=(-1,), keepdims=True))
    return g.neg(g.reduce_sum(g.mul(target, g.log(_clip(g, p))), axes=(-1,)), name="ce")


@_loss("binary_crossentropy")
def binary_crossentropy(g, pred, target, spec):
    c = _Consts(g, pred)
    target = _smooth(g, target, spec.get("label_smoothing", 0.0), 0.5)
    z = pred if spec.get("from_logits") else _logits_of(g, pred, Role.SIGMOID)
    if z is not None:  # softplus(z) - z*t: TensorFlow's max(z, 0) - z*t + log1p(exp(-|z|)), whose
        # gradient sigmoid(z) - t autodiff gets from softplus's VJP; through relu and abs it came
        # out -t at z = 0 exactly (a dead ReLU layer before a zero bias), their subgradients 0 there
        per_elem = g.sub(g.softplus(z), g.mul(z, target))
    else:
        p = _clip(g, pred)
        per_elem = g.neg(g.add(g.mul(target, g.log(p)), g.mul(g.sub(c(1.0), target), g.log(g.sub(c(1.0), p)))))
    return _last_mean(g, per_elem, "bce")


@_loss("kl_divergence")
def kl_divergence(g, pred, target, spec):
    t, p = _clip(g, target, hi=1.0), _clip(g, pred, hi=1.0)
    return g.reduce_sum(g.mul(t, g.log(g.div(t, p))), axes=(-1,), name="kld")


@_loss("poisson")
def poisson(g, pred, target, spec):
    c = _Consts(g, pred)
    return _last_mean(g, g.sub(pred, g.mul(target, g.log(g.add(pred, c(EPSILON))))), "poisson")


# ---------------------------------------------------------------- regression


@_loss("mean_squared_error")
def mean_squared_error(g, pred, target, spec):
    return _last_mean(g, g.square(g.sub(target, pred)), "mse")


@_loss("mean_absolute_error")
def mean_absolute_error(g, pred, target, spec):
    return _last_mean(g, g.abs(g.sub(target, pred)), "mae")


@_loss("mean_absolute_percentage_error")
def mean_absolute_percentage_error(g, pred, target, spec):
    c = _Consts(g, pred)
    diff = g.abs(g.div(g.sub(target, pred), g.maximum(g.abs(target), c(EPSILON))))
    return g.mul(c(100.0), g.reduce_mean(diff, axes=(-1,)), name="mape")


@_loss("mean_squared_logarithmic_error")
def mean_squared_logarithmic_error(g, pred, target, spec):
    c = _Consts(g, pred)
    first = g.log(g.add(g.maximum(pred, c(EPSILON)), c(1.0)))
    second = g.log(g.add(g.maximum(target, c(EPSILON)), c(1.0)))
    return _last_mean(g, g.square(g.sub(first, second)), "msle")


@_loss("huber")
def huber(g, pred, target, spec):
    c = _Consts(g, pred)
    delta = float(spec.get("delta", 1.0))
    error = g.sub(pred, target)
    abs_error = g.abs(error)
    quadratic = g.mul(c(0.5), g.square(error))
    linear = g.sub(g.mul(c(delta), abs_error), c(0.5 * delta * delta))
    return _last_mean(g, g.where(g.less_equal(abs_error, c(delta)), quadratic, linear), "huber")


@_loss("log_cosh")
def log_cosh(g, pred, target, spec):
    c = _Consts(g, pred)
    x = g.sub(pred, target)  # x + softplus(-2x) - log(2)
    return _last_mean(g, g.sub(g.add(x, g.softplus(g.mul(x, c(-2.0)))), c(math.log(2.0))), "log_cosh")


def _l2_normalize(g, x):
    """x * min(rsqrt(sum(x**2)), 1/epsilon) over the last axis (keras.ops.normalize)."""
    c = _Consts(g, x)
    inv_norm = g.div(c(1.0), g.sqrt(g.reduce_sum(g.square(x), axes=(-1,), keepdims=True)))
    return g.mul(x, g.minimum(inv_norm, c(1.0 / EPSILON)))


@_loss("cosine_similarity")
def cosine_similarity(g, pred, target, spec):
    return g.neg(
        g.reduce_sum(g.mul(_l2_normalize(g, target), _l2_normalize(g, pred)), axes=(-1,)), name="cosine_similarity"
    )


# ---------------------------------------------------------------- hinges


def _hinge_labels(g, t):
    """Keras turns labels into -1/1 (2t - 1) when every label of the batch is 0 or 1."""
    c = _Consts(g, t)
    binary = g.add(g.equal(t, c(0.0)), g.equal(t, c(1.0)))
    all_binary = g.equal(g.reduce_sum(binary, axes=None), g.count(t))
    return g.where(all_binary, g.sub(g.mul(t, c(2.0)), c(1.0)), t)


def _hinge_margin(g, pred, target):
    c = _Consts(g, pred)
    return g.maximum(g.sub(c(1.0), g.mul(_hinge_labels(g, target), pred)), c(0.0))


@_loss("hinge")
def hinge(g, pred, target, spec):
    return _last_mean(g, _hinge_margin(g, pred, target), "hinge")


@_loss("squared_hinge")
def squared_hinge(g, pred, target, spec):
    return _last_mean(g, g.square(_hinge_margin(g, pred, target)), "squared_hinge")


@_loss("categorical_hinge")
def categorical_hinge(g, pred, target, spec):
    c = _Consts(g, pred)
    pos = g.reduce_sum(g.mul(target, pred), axes=(-1,))
    neg = g.reduce_max(g.mul(g.sub(c(1.0), target), pred), axes=(-1,))
    return g.maximum(g.add(g.sub(neg, pos), c(1.0)), c(0.0), name="categorical_hinge")


# ---------------------------------------------------------------- the pass


def label_type(loss_name: str, pred_type: TensorType) -> TensorType:
    _, dtype, sparse = LOSSES[loss_name]
    return TensorType(pred_type.shape[:-1] if sparse else pred_type.shape, dtype or pred_type.dtype)


def _mask_weights(g, mask, like):
    """mask * count / valid, 0 where valid is 0 (Keras's divide_no_nan): a mask holds 0s and 1s, so
    valid is 0 or at least 1, and max(valid, 1) only guards the empty mask. The mask may depend on
    the weights (a Masking after a Dense) but has no gradient: `where`'s condition passes none, and
    count reads `like` (the sample weights, of the mask's shape), not the mask."""
    c = _Consts(g, mask)
    kept = g.where(mask, c(1.0), c(0.0))
    valid = g.maximum(g.reduce_sum(kept, axes=None), c(1.0))
    return g.mul(kept, g.div(g.count(like, axes=None), valid), name="mask_weights")


def add_loss(graph, losses: list[dict], regularizers: list[tuple] = (), masks=None):
    """losses: one spec per model output (graph.outputs "output:k"), or None for an output without a
    loss: {"name", "weight", and the loss's options: "from_logits", "label_smoothing", "delta"}.
    regularizers: (param id, l1, l2). Adds the sources "y<k>" (label) and "sw<k>" (sample_weight);
    graph.outputs["loss"] is the total, and "loss:k" each output's weighted mean loss before its
    loss weight. masks: {k: mask node shaped like output k's per-sample loss}; "mask:k" outputs it."""
    total = []
    for k, spec in enumerate(losses):
        if spec is None:
            continue
        pred = graph.outputs[f"output:{k}"]
        fn, _, _ = LOSSES[spec["name"]]
        label = graph.source("label", f"y{k}", label_type(spec["name"], graph.type(pred)))
        per_sample = fn(graph, pred, label, spec)
        weights = graph.source("sample_weight", f"sw{k}", graph.type(per_sample))
        mask = (masks or {}).get(k)
        if mask is not None:
            weights = graph.mul(weights, _mask_weights(graph, mask, weights))
            graph.outputs[f"mask:{k}"] = mask
        mean = graph.reduce_mean(graph.mul(per_sample, weights), axes=None, name=f"loss{k}")
        graph.outputs[f"loss:{k}"] = mean
        w = spec.get("weight", 1.0)
        total.append(mean if w == 1.0 else graph.mul(mean, graph.const(w, graph.type(mean).dtype)))
    for param, l1, l2 in regularizers:
        dtype = graph.type(param).dtype
        if l1:
            total.append(graph.mul(graph.const(l1, dtype), graph.reduce_sum(graph.abs(param), axes=None), name="l1"))
        if l2:
            total.append(graph.mul(graph.const(l2, dtype), graph.reduce_sum(graph.square(param), axes=None), name="l2"))
    # activity regularization, computed in the forward graph (kgraph/frontend/model.py)
    total += [node for key, node in graph.outputs.items() if key.startswith("penalty:")]
    loss = total[0]
    for t in total[1:]:
        loss = graph.add(loss, t)
    graph.outputs["loss"] = loss
    return graph


def drop_outputs(graph, read):
    """Keep only the model outputs "output:k" whose index k is in `read` (a training or test step's:
    those its metrics read). Keras's train_on_batch, fit and evaluate return the loss and metrics,
    never the predictions, so what no metric reads is left to dead-code elimination as far as the
    loss does not need it: a softmax classifier's probabilities, whose loss reads the logits."""
    for key in [k for k in graph.outputs if k.startswith("output:")]:
        if int(key.split(":")[1]) not in read:
            del graph.outputs[key]
    return graph
