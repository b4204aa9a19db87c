"""Reductions, matrix products, shape ops, softmax and the cross-entropy primitives."""

from __future__ import annotations

import math

import numpy as np

from ..types import BATCH, TensorType
from .elementwise import same_type
from .registry import OpDef, Pattern, Role, register


def _norm_axes(axes, rank):
    if axes is None:
        return tuple(range(rank))
    if isinstance(axes, int):
        axes = (axes,)
    return tuple(sorted(a % rank for a in axes))


# ---------------------------------------------------------------- reductions


def _reduce_type(types, attrs):
    t = types[0]
    axes = _norm_axes(attrs.get("axes"), t.rank)
    keep = attrs.get("keepdims", False)
    shape = (
        [1 if i in axes else d for i, d in enumerate(t.shape)]
        if keep
        else [d for i, d in enumerate(t.shape) if i not in axes]
    )
    return TensorType(tuple(shape), t.dtype)


def _reduce_vjp(mean):
    def vjp(b, g, out, x, axes=None, keepdims=False):
        gx = b.broadcast_like(g, x, axes=axes, keepdims=keepdims)
        return (b.div(gx, b.count(x, axes=axes)) if mean else gx,)

    return vjp


register(
    OpDef(
        "reduce_sum",
        Pattern.REDUCE,
        _reduce_type,
        lambda x, axes=None, keepdims=False: np.sum(x, axis=_norm_axes(axes, x.ndim), keepdims=keepdims),
        _reduce_vjp(False),
        roles=frozenset({Role.COLUMN_SUM}),
    )
)
register(
    OpDef(
        "reduce_mean",
        Pattern.REDUCE,
        _reduce_type,
        lambda x, axes=None, keepdims=False: np.mean(x, axis=_norm_axes(axes, x.ndim), keepdims=keepdims).astype(
            x.dtype
        ),
        _reduce_vjp(True),
        roles=frozenset({Role.COLUMN_MEAN}),
    )
)


def _reduce_max_vjp(b, g, out, x, axes=None, keepdims=False):
    """TensorFlow's rule: ties share the gradient equally."""
    hit = b.equal(x, b.broadcast_like(out, x, axes=axes, keepdims=keepdims))
    ties = b.broadcast_like(b.reduce_sum(hit, axes=axes, keepdims=keepdims), x, axes=axes, keepdims=keepdims)
    return (b.div(b.mul(b.broadcast_like(g, x, axes=axes, keepdims=keepdims), hit), ties),)


register(
    OpDef(
        "reduce_max",
        Pattern.REDUCE,
        _reduce_type,
        lambda x, axes=None, keepdims=False: np.max(x, axis=_norm_axes(axes, x.ndim), keepdims=keepdims),
        _reduce_max_vjp,
    )
)


def _broadcast_like(g, x, axes=None, keepdims=False):
    axes = _norm_axes(axes, x.ndim)
    if not keepdims:
        g = np.expand_dims(g, axes)
    return np.broadcast_to(g, x.shape).copy()


# not a chain member (Role.CHAIN): its operand is reduced, not broadcastable to its output; but a
# one-element operand (a full reduction's: a loss's gradient) is, and a loop may read it as it is
register(
    OpDef(
        "broadcast_like",
        Pattern.ELEMWISE,
        lambda types, attrs: TensorType(types[1].shape, types[0].dtype),
        _broadcast_like,
        None,
        doc="g (reduced over `axes` of x) broadcast back to the shape of x: the VJP of a reduction",
        roles=frozenset({Role.BROADCAST}),
    )
)
register(
    OpDef(
        "count",
        Pattern.OPAQUE,
        lambda types, attrs: TensorType((), types[0].dtype),
        lambda x, axes=None: np.array(np.prod([x.shape[a] for a in _norm_axes(axes, x.ndim)]), x.dtype),
        None,
        doc="the number of elements a reduction over `axes` of x sums (depends on the batch size)",
    )
)

# ---------------------------------------------------------------- matrix product


def _matmul_type(types, attrs):
    """Operands of rank > 2 are matrices whose rows are all but the last axis: a Dense on
    [B,T,K] is [B*T,K] @ [K,N]. A transposed operand's rows are contracted, so they must match."""
    a, b = types
    ta, tb = attrs.get("transpose_a"), attrs.get("transpose_b")
    if a.rank < 2 or b.rank < 2 or (tb and b.rank != 2):
        raise ValueError(f"matmul: cannot multiply {a} and {b} (transpose_a={ta}, transpose_b={tb})")
    rows = (a.shape[-1],) if ta else a.shape[:-1]
    ka = a.shape[:-1] if ta else (a.shape[-1],)
    kb = (b.shape[1],) if tb else b.shape[:-1]
    n = b.shape[0] if tb else b.shape[-1]
    if ka != kb:
        raise ValueError(f"matmul: inner dimensions differ: {a} and {b}")
    if a.dtype != b.dtype:
        raise TypeError(f"matmul: dtypes differ: {a} and {b}")
    return TensorType((*rows, n), a.dtype)


def _matmul(a, b, transpose_a=False, transpose_b=False):
    a2, b2 = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    out = np.dot(a2.T if transpose_a else a2, b2.T if transpose_b else b2)
    return out if transpose_a else out.reshape(*a.shape[:-1], out.shape[-1])


def _matmul_vjp(b, g, out, x, w, transpose_a=False, transpose_b=False):
    # out = op(x) @ op(w); d op(x) = g @ op(w)^T ; d op(w) = op(x)^T @ g
    gx = (
        b.matmul(w, g, transpose_a=transpose_b, transpose_b=True)
        if transpose_a
        else b.matmul(g, w, transpose_b=not transpose_b)
    )
    gw = (
        b.matmul(g, x, transpose_a=True, transpose_b=transpose_a)
        if transpose_b
        else b.matmul(x, g, transpose_a=not transpose_a)
    )
    return gx, gw


register(OpDef("matmul", Pattern.GEMM, _matmul_type, _matmul, _matmul_vjp, roles=frozenset({Role.GEMM})))


def _batch_matmul_type(types, attrs):
    """A matrix product per leading index: [..., M, K] @ [..., K, N] -> [..., M, N] (attention's
    scores and weighted sums, a Dot over sequences). The leading axes (batch, heads) must agree."""
    a, b = types
    ta, tb = attrs.get("transpose_a"), attrs.get("transpose_b")
    if a.rank < 3 or b.rank != a.rank or a.shape[:-2] != b.shape[:-2]:
        raise ValueError(f"batch_matmul: cannot multiply {a} and {b}: leading axes differ")
    m, ka = (a.shape[-1], a.shape[-2]) if ta else (a.shape[-2], a.shape[-1])
    kb, n = (b.shape[-1], b.shape[-2]) if tb else (b.shape[-2], b.shape[-1])
    if ka != kb:
        raise ValueError(f"batch_matmul: inner dimensions differ: {a} and {b}")
    if a.dtype != b.dtype:
        raise TypeError(f"batch_matmul: dtypes differ: {a} and {b}")
    return TensorType((*a.shape[:-2], m, n), a.dtype)


def _batch_matmul(a, b, transpose_a=False, transpose_b=False):
    return np.matmul(np.swapaxes(a, -1, -2) if transpose_a else a, np.swapaxes(b, -1, -2) if transpose_b else b)


def _batch_matmul_vjp(b, g, out, x, y, transpose_a=False, transpose_b=False):
    # out = op(x) @ op(y), per leading index: matmul's rule
    gx = (
        b.batch_matmul(y, g, transpose_a=transpose_b, transpose_b=True)
        if transpose_a
        else b.batch_matmul(g, y, transpose_b=not transpose_b)
    )
    gy = (
        b.batch_matmul(g, x, transpose_a=True, transpose_b=transpose_a)
        if transpose_b
        else b.batch_matmul(x, g, transpose_a=not transpose_a)
    )
    return gx, gy


register(OpDef("batch_matmul", Pattern.OPAQUE, _batch_matmul_type, _batch_matmul, _batch_matmul_vjp))

# ---------------------------------------------------------------- shapes


def _reshape_type(types, attrs):
    t = types[0]
    shape = tuple(attrs["shape"])
    a0, c0 = t.per_batch_size()
    probe = TensorType(shape, t.dtype)
    if probe.has_batch != t.has_batch or probe.per_batch_size() != (a0, c0):
        raise ValueError(f"cannot reshape {t} to {probe}: element counts differ")
    return probe


def _reshape(x, shape):
    return x.reshape(tuple(-1 if d == BATCH else d for d in shape))


register(
    OpDef(
        "reshape",
        Pattern.VIEW,
        _reshape_type,
        _reshape,
        lambda b, g, out, x, shape: (b.reshape(g, shape=b.type(x).shape),),
    )
)


def _concat_type(types, attrs):
    axis = attrs["axis"] % types[0].rank
    base = list(types[0].shape)
    for t in types[1:]:
        if t.rank != len(base) or any(d != e for i, (d, e) in enumerate(zip(t.shape, base)) if i != axis):
            raise ValueError(f"concat along axis {axis}: shapes {types[0]} and {t} do not match")
        if t.dtype != types[0].dtype:
            raise TypeError(f"concat: dtypes differ: {types[0]} and {t}")
    if BATCH in [t.shape[axis] for t in types]:
        raise ValueError("cannot concatenate along the batch axis")
    base[axis] = sum(t.shape[axis] for t in types)
    return TensorType(tuple(base), types[0].dtype)


def _concat_vjp(b, g, out, *xs, axis):
    grads, start = [], 0
    axis = axis % b.type(g).rank
    for x in xs:
        n = b.type(x).shape[axis]
        grads.append(b.slice(g, axis=axis, start=start, stop=start + n))
        start += n
    return tuple(grads)


register(OpDef("concat", Pattern.OPAQUE, _concat_type, lambda *xs, axis: np.concatenate(xs, axis=axis), _concat_vjp))


def _slice_type(types, attrs):
    t = types[0]
    axis = attrs["axis"] % t.rank
    shape = list(t.shape)
    shape[axis] = attrs["stop"] - attrs["start"]
    return TensorType(tuple(shape), t.dtype)


def _slice(x, axis, start, stop):
    idx = [slice(None)] * x.ndim
    idx[axis] = slice(start, stop)
    return x[tuple(idx)].copy()


def _slice_vjp(b, g, out, x, axis, start, stop):
    shape = b.type(x).shape
    axis = axis % len(shape)
    return (b.pad(g, pads=tuple((start, shape[axis] - stop) if i == axis else (0, 0) for i in range(len(shape)))),)


register(OpDef("slice", Pattern.OPAQUE, _slice_type, _slice, _slice_vjp))


def _constant_type(types, attrs):
    shape, values = tuple(attrs["shape"]), attrs["values"]
    if BATCH in shape or len(values) != math.prod(shape):
        raise ValueError(f"constant: {len(values)} values do not fill a fixed shape {shape}")
    return TensorType(shape, attrs.get("dtype", "float32"))


# A fixed tensor written by the step itself (no inputs): per-channel scales and means of the
# preprocessing layers, a resize's interpolation matrix. Scalars stay 'const' sources.
register(
    OpDef(
        "constant",
        Pattern.OPAQUE,
        _constant_type,
        lambda values, shape, dtype="float32": np.array(values, dtype).reshape(shape),
        None,
        doc="a fixed tensor of the given shape (values in C order)",
    )
)

# ---------------------------------------------------------------- softmax and cross-entropy


def _softmax(x, axis=-1):
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return (e / np.sum(e, axis=axis, keepdims=True)).astype(x.dtype)


def _softmax_grad(g, y, axis=-1):
    return (y * (g - np.sum(g * y, axis=axis, keepdims=True))).astype(g.dtype)


register(
    OpDef(
        "softmax",
        Pattern.OPAQUE,
        same_type,
        _softmax,
        lambda b, g, out, x, axis=-1: (b.softmax_grad(g, out, axis=axis),),
        roles=frozenset({Role.SOFTMAX}),
    )
)
register(
    OpDef(
        "softmax_grad",
        Pattern.OPAQUE,
        same_type,
        _softmax_grad,
        None,
        doc="y * (g - sum(g*y)): the VJP of softmax, from its output y",
    )
)


def _rows_type(types, attrs):
    return TensorType(types[0].shape[:-1], types[0].dtype)


def _log_softmax(z):
    m = np.max(z, axis=-1, keepdims=True)
    return z - m - np.log(np.sum(np.exp(z - m), axis=-1, keepdims=True))


def _check_labels(types, attrs):
    z, labels = types
    if labels.shape != z.shape[:-1]:
        raise ValueError(f"labels of shape {labels} do not match logits {z}")
    return _rows_type(types, attrs)


register(
    OpDef(
        "softmax_cross_entropy",
        Pattern.OPAQUE,
        _rows_type,
        lambda z, t: (-np.sum(t * _log_softmax(z), axis=-1)).astype(z.dtype),
        lambda b, g, out, z, t: (b.softmax_cross_entropy_grad(z, t, g), None),
        doc="-sum(t * log_softmax(z)) per row: softmax and cross-entropy fused",
    )
)
register(
    OpDef(
        "softmax_cross_entropy_grad",
        Pattern.OPAQUE,
        same_type,
        lambda z, t, g: ((_softmax(z) - t) * g[..., None]).astype(z.dtype),
        None,
        doc="(softmax(z) - t) * g: the fused backward of softmax_cross_entropy",
    )
)


def _pick(p, labels):
    return np.take_along_axis(p, labels.astype(np.int64)[..., None], axis=-1)[..., 0]


def _onehot_like(labels, z):
    return (np.arange(z.shape[-1]) == labels.astype(np.int64)[..., None]).astype(z.dtype)


register(
    OpDef(
        "sparse_softmax_cross_entropy",
        Pattern.OPAQUE,
        _check_labels,
        lambda z, labels: (-_pick(_log_softmax(z), labels)).astype(z.dtype),
        lambda b, g, out, z, labels: (b.sparse_softmax_cross_entropy_grad(z, labels, g), None),
        doc="-log_softmax(z)[label] per row: softmax and sparse cross-entropy fused",
    )
)
register(
    OpDef(
        "sparse_softmax_cross_entropy_grad",
        Pattern.OPAQUE,
        same_type,
        lambda z, labels, g: ((_softmax(z) - _onehot_like(labels, z)) * g[..., None]).astype(z.dtype),
        None,
    )
)
register(
    OpDef(
        "pick",
        Pattern.OPAQUE,
        _check_labels,
        lambda p, labels: _pick(p, labels),
        lambda b, g, out, p, labels: (b.unpick(g, labels, p), None),
        doc="p[..., label] per row",
    )
)
register(
    OpDef(
        "unpick",
        Pattern.OPAQUE,
        lambda types, attrs: types[2],
        lambda g, labels, p: (_onehot_like(labels, p) * g[..., None]).astype(p.dtype),
        None,
        doc="g scattered into zeros shaped like p at each row's label: the VJP of pick",
    )
)
