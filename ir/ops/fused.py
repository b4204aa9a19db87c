"""Ops that only fusion passes create. Each keeps a NumPy reference, so a fused graph runs in
the interpreter and is checked against the unfused one."""

from __future__ import annotations

import numpy as np

from .elementwise import ACTIVATIONS, broadcast_type, same_type
from .optim import SHARED
from .registry import REGISTRY, OpDef, Pattern, Role, register


def _fused_dense_type(types, attrs):
    x, w, b = types
    if x.rank < 2 or w.rank != 2 or x.shape[-1] != w.shape[0] or b.shape != (w.shape[1],):
        raise ValueError(f"fused_dense: shapes {x}, {w}, {b} do not fit")
    return x.with_shape((*x.shape[:-1], w.shape[1]))


def _fused_dense(x, w, b, activation="linear", **act_attrs):
    return ACTIVATIONS[activation][0](np.dot(x, w) + b, **act_attrs).astype(x.dtype)  # over x's last axis


register(
    OpDef(
        "fused_dense",
        Pattern.GEMM,
        _fused_dense_type,
        _fused_dense,
        None,
        doc="activation(x @ w + b): GEMM with the bias and activation as its epilogue",
    )
)


def eval_expr(expr, args):
    """Evaluate a fused elementwise expression tree: ("in", k) | ("op", name, attrs, *operands)."""
    if expr[0] == "in":
        return args[expr[1]]
    _, name, attrs, *operands = expr
    return REGISTRY[name].forward(*[eval_expr(e, args) for e in operands], **dict(attrs))


register(
    OpDef(
        "fused_elementwise",
        Pattern.ELEMWISE,
        broadcast_type,
        lambda *args, expr, out_dtype=None: np.asarray(eval_expr(expr, args)),
        None,
        doc="a chain of elementwise ops computed in one loop; attr expr is the tree",
        roles=frozenset({Role.CHAIN}),  # a longer chain grows from it
    )
)

register(
    OpDef(
        "copy",
        Pattern.ELEMWISE,
        same_type,
        lambda x: np.array(x, copy=True),
        None,
        doc="materialises a view (a gradient must own its slot in the gradient bucket)",
        roles=frozenset({Role.CHAIN}),
    )
)


def _fused_update(*args, update, per_param, shared, hyper=()):
    """Operands: per_param operands for each parameter (w, g, slots...), then `shared` scalars."""
    n = (len(args) - shared) // per_param
    for k in range(n):
        REGISTRY[update].forward(*args[k * per_param : (k + 1) * per_param], *args[n * per_param :], **dict(hyper))
    return args[0]


def update_groups(node) -> list[tuple]:
    """The (w, g, *slots) operand groups of an optimizer update node, one per parameter
    (none for other in-place updates: moving statistics, weight constraints)."""
    if node.op in ("moving_average", "constrain"):
        return []
    if node.op != "fused_update":
        return [tuple(node.inputs[: len(node.inputs) - len(SHARED)])]
    k, n_shared = node.attrs["per_param"], node.attrs["shared"]
    ops = node.inputs[: len(node.inputs) - n_shared]
    return [tuple(ops[j : j + k]) for j in range(0, len(ops), k)]


register(
    OpDef(
        "fused_update",
        Pattern.UPDATE,
        lambda types, attrs: types[0],
        _fused_update,
        None,
        doc="one optimizer update over every parameter: a single loop over the contiguous buckets",
    )
)
