"""Append the optimizer: Keras's gradient clipping as IR ops, then one in-place update node per
parameter, with its slots as 'state' sources (the slots of one kind are created for all
parameters in order, so each kind is contiguous), and the weights' constraints after them."""

from __future__ import annotations

from ir import Pattern, get_op, scalar
from ir.ops.fused import update_groups
from ir.ops.optim import UPDATES

# optimizer kind -> the update op that runs it (Keras's AdamW is "adam" with a weight_decay)
OPTIMIZERS = {
    "sgd": "sgd_update",
    "adam": "adam_update",
    "rmsprop": "rmsprop_update",
    "adagrad": "adagrad_update",
    "adadelta": "adadelta_update",
    "adamax": "adamax_update",
    "nadam": "nadam_update",
    "lion": "lion_update",
    "ftrl": "ftrl_update",
}
CLIPPING = ("clipnorm", "clipvalue", "global_clipnorm")


def add_optimizer(graph, grads: dict[str, str], kind: str, hyper: dict, params=None):
    """grads: {param id: gradient id} in parameter order. hyper: the optimizer's hyper-parameters,
    with weight_decay and the clipping options when set. params: every trainable parameter, in
    order (by default grads' keys); one without a gradient gets its slots, as Keras builds them
    for every trainable variable, and no update, as Keras's apply skips a variable whose gradient
    is None. Adds the scalar sources 'lr' and 'step' (the 1-based iteration) and one update node
    per parameter with a gradient. With Keras's use_ema (attrs ema_momentum and
    ema_overwrite_frequency) every parameter also gets an "average" slot, and with its
    gradient_accumulation_steps a "gradient_accumulator" slot, after the optimizer's own."""
    op = OPTIMIZERS[kind]
    attrs = dict(hyper)
    clipping = {k: attrs.pop(k) for k in CLIPPING if attrs.get(k)}
    attrs = {**UPDATES[op].defaults, **attrs}
    lr = graph.source("scalar", "lr", scalar("float32"))
    step = graph.source("scalar", "step", scalar("float64"))
    if not grads:  # nothing trainable: the step keeps its scalar inputs and updates nothing
        return graph
    grads, gscale = _clip(graph, grads, **clipping)
    slot_init = UPDATES[op].slots(attrs)
    if "ema_momentum" in attrs:  # Keras's use_ema: each weight's moving average
        slot_init["average"] = 0.0
    if attrs.get("gradient_accumulation_steps"):  # the sum of the gradients since the last update
        slot_init["gradient_accumulator"] = 0.0
    slots = {p: [] for p in (params or grads)}
    for name, init in slot_init.items():
        for p in slots:
            slots[p].append(graph.source("state", f"{p}_{name}", graph.type(p), slot=name, param=p, init=init))
    for p, gr in grads.items():
        graph.add_node(op, [p, gr, *slots[p], lr, step, gscale], dict(attrs), name=f"update_{p}")
    if "ema_momentum" in attrs:  # Keras averages every trainable weight: one not updated is its own average
        average = list(slot_init).index("average")  # (the gradient sums may follow it)
        for p in [p for p in slots if p not in grads]:  # in the parameters' order: the step's source is stable
            graph.add_node("moving_average", [slots[p][average], p], {"momentum": 0.0}, name=f"average_{p}")
    return graph


def add_constraints(graph, constraints: dict) -> None:
    """One in-place `constrain` node per constrained parameter ({param id: constraint attrs}),
    after the update that writes it (Keras's optimizer constrains a variable once it is updated):
    its second operand is that update node, read for the order only. Called after the updates
    are fused, so that it names the fused node."""
    if not constraints:
        return
    writer = {
        group[0]: n.id for n in graph.nodes() if get_op(n.op).pattern is Pattern.UPDATE for group in update_groups(n)
    }
    for p, attrs in constraints.items():
        graph.add_node("constrain", [p, writer[p]], dict(attrs), name=f"constrain_{p}")


def _clip(graph, grads, clipnorm=None, clipvalue=None, global_clipnorm=None):
    """Keras's clipping (at most one option is set). Per-gradient clipping rewrites each gradient;
    global clipping gives the one scale the update ops apply to every gradient as they read it, so
    the gradients stay in their bucket. Returns (grads, gscale node)."""
    dtype = graph.type(next(iter(grads.values()))).dtype
    if clipnorm:
        grads = {p: graph.mul(g, _scale(graph, _norm(graph, [g]), clipnorm, dtype)) for p, g in grads.items()}
    elif clipvalue:
        grads = {p: graph.clip(g, lo=-float(clipvalue), hi=float(clipvalue)) for p, g in grads.items()}
    if not global_clipnorm:
        return grads, graph.const(1.0, dtype)
    norm = _norm(graph, grads.values())
    # Keras adds (norm - norm): an infinite or NaN norm makes the scale NaN, not 0
    return grads, graph.add(_scale(graph, norm, global_clipnorm, dtype), graph.sub(norm, norm), name="gscale")


def _norm(graph, grads):
    """The L2 norm over all elements of the gradients."""
    total = None
    for g in grads:
        s = graph.reduce_sum(graph.square(g))
        total = s if total is None else graph.add(total, s)
    return graph.sqrt(total)


def _scale(graph, norm, clip, dtype):
    """clip / max(norm, clip): 1 while the norm is within the limit."""
    c = graph.const(float(clip), dtype)
    return graph.div(c, graph.maximum(norm, c))
