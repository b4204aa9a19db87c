"""Elementwise ops (NumPy broadcasting) and activations, each with its VJP beside it."""

from __future__ import annotations

import math

import numpy as np

from ..types import TensorType, broadcast_shapes
from .registry import OpDef, Pattern, Role, register

# ---------------------------------------------------------------- shape rules


def same_type(types, attrs):
    return types[0]


def broadcast_type(types, attrs):
    dtypes = {t.dtype for t in types}
    if len(dtypes) != 1:
        raise TypeError(f"operands have different dtypes: {sorted(dtypes)}")
    shape = types[0].shape
    for t in types[1:]:
        shape = broadcast_shapes(shape, t.shape)
    return TensorType(shape, types[0].dtype)


def unbroadcast(b, g, target: str):
    """Sum `g` down to the shape of node `target` (the VJP of a broadcast)."""
    gshape, tshape = b.type(g).shape, b.type(target).shape
    if gshape == tshape:
        return g
    lead = len(gshape) - len(tshape)
    axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(tshape) if d == 1 and gshape[lead + i] != 1)
    s = b.reduce_sum(g, axes=axes, keepdims=False)
    if b.type(s).shape != tshape:
        s = b.reshape(s, shape=tshape)
    return s


def _elem(name, forward, vjp=None, infer=same_type, doc="", roles=()):
    """An elementwise op: it may join a fused chain, and take the other `roles`."""
    return register(OpDef(name, Pattern.ELEMWISE, infer, forward, vjp, doc, frozenset({Role.CHAIN, *roles})))


# ---------------------------------------------------------------- arithmetic

_elem(
    "add",
    lambda a, c: a + c,
    lambda b, g, out, x, y: (unbroadcast(b, g, x), unbroadcast(b, g, y)),
    broadcast_type,
    roles=[Role.BIAS_ADD],
)
_elem(
    "sub",
    lambda a, c: a - c,
    lambda b, g, out, x, y: (unbroadcast(b, g, x), unbroadcast(b, b.neg(g), y)),
    broadcast_type,
)
_elem(
    "mul",
    lambda a, c: a * c,
    lambda b, g, out, x, y: (unbroadcast(b, b.mul(g, y), x), unbroadcast(b, b.mul(g, x), y)),
    broadcast_type,
)
_elem(
    "div",
    lambda a, c: a / c,
    lambda b, g, out, x, y: (unbroadcast(b, b.div(g, y), x), unbroadcast(b, b.neg(b.div(b.mul(g, out), y)), y)),
    broadcast_type,
)
_elem(
    "maximum",
    np.maximum,
    lambda b, g, out, x, y: (
        unbroadcast(b, b.mul(g, b.greater_equal(x, y)), x),
        unbroadcast(b, b.mul(g, b.less(x, y)), y),
    ),
    broadcast_type,
)
_elem(
    "minimum",
    np.minimum,
    lambda b, g, out, x, y: (
        unbroadcast(b, b.mul(g, b.less_equal(x, y)), x),
        unbroadcast(b, b.mul(g, b.greater(x, y)), y),
    ),
    broadcast_type,
)
# comparisons give 0.0/1.0 in the operands' dtype; no gradient flows through them (as through
# TensorFlow's boolean result), so `x * cast(x > 0)` trains through its x alone
for _name, _fn in [
    ("greater", np.greater),
    ("greater_equal", np.greater_equal),
    ("less", np.less),
    ("less_equal", np.less_equal),
    ("equal", np.equal),
]:
    _elem(
        _name,
        lambda a, c, _fn=_fn: _fn(a, c).astype(np.result_type(a, c)),
        lambda b, g, out, x, y: (None, None),
        broadcast_type,
    )


def _where_vjp(b, g, out, c, x, y):
    zero = b.const(0.0, b.type(g).dtype)
    return None, unbroadcast(b, b.where(c, g, zero), x), unbroadcast(b, b.where(c, zero, g), y)


_elem(
    "where",
    lambda c, a, d: np.where(c != 0, a, d),
    _where_vjp,
    broadcast_type,
    doc="a where cond != 0, else b (cond is a 0.0/1.0 mask, e.g. from a comparison)",
)

_elem("neg", lambda a: -a, lambda b, g, out, x: (b.neg(g),))
_elem("exp", np.exp, lambda b, g, out, x: (b.mul(g, out),))
_elem("log", np.log, lambda b, g, out, x: (b.div(g, x),))
_elem("log1p", np.log1p, lambda b, g, out, x: (b.div(g, b.add(x, b.const(1.0, b.type(x).dtype))),))
_elem("expm1", np.expm1, lambda b, g, out, x: (b.mul(g, b.add(out, b.const(1.0, b.type(x).dtype))),))
_elem("sqrt", np.sqrt, lambda b, g, out, x: (b.div(g, b.mul(out, b.const(2.0, b.type(x).dtype))),))
_elem("square", np.square, lambda b, g, out, x: (b.mul(g, b.mul(x, b.const(2.0, b.type(x).dtype))),))
_elem("abs", np.abs, lambda b, g, out, x: (b.mul(g, b.sign(x)),))
_elem("sign", lambda a: np.sign(a), lambda b, g, out, x: (None,))
_elem(
    "clip",
    lambda a, lo, hi: np.clip(a, a.dtype.type(lo), a.dtype.type(hi)),
    lambda b, g, out, x, lo, hi: (b.mul(g, b.in_range(x, lo=lo, hi=hi)),),
)
_elem(
    "in_range",
    lambda a, lo, hi: ((a >= lo) & (a <= hi)).astype(a.dtype),
    None,
    doc="1.0 where lo <= x <= hi, else 0.0 (the gradient mask of clip)",
)

# ---------------------------------------------------------------- activations
# name -> (forward, derivative, whether the derivative reads the output y instead of the input x).
# Each is registered as an op that a GEMM's epilogue may compute (sigmoid also as the probabilities
# a binary cross-entropy reads the logits of): an entry here is all a new activation needs to fuse.
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def _sigmoid(x):
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x)))).astype(x.dtype)


def _erf(x):
    from scipy.special import erf

    return erf(x).astype(x.dtype)


def _gelu(x, approximate=False):
    if approximate:
        return (0.5 * x * (1 + np.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x**3)))).astype(x.dtype)
    return (0.5 * x * (1 + _erf(x / np.sqrt(x.dtype.type(2))))).astype(x.dtype)


def _gelu_grad(x, approximate=False):
    if approximate:
        u = SQRT_2_OVER_PI * (x + 0.044715 * x**3)
        t = np.tanh(u)
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * SQRT_2_OVER_PI * (1 + 3 * 0.044715 * x * x)
    cdf = 0.5 * (1 + _erf(x / np.sqrt(x.dtype.type(2))))
    return cdf + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi)


def _softplus(x):
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype)


def _mish_grad(x, **a):
    t = np.tanh(_softplus(x))
    return t + x * _sigmoid(x) * (1 - t * t)


ACTIVATIONS = {
    "linear": (lambda x, **a: x, lambda y, **a: np.ones_like(y), True),
    "relu": (lambda x, **a: np.maximum(x, 0), lambda y, **a: (y > 0).astype(y.dtype), True),
    "relu6": (lambda x, **a: np.clip(x, 0, 6), lambda y, **a: ((y > 0) & (y < 6)).astype(y.dtype), True),
    "leaky_relu": (
        lambda x, alpha=0.2: np.where(x > 0, x, x * x.dtype.type(alpha)),
        lambda y, alpha=0.2: np.where(y > 0, 1, alpha).astype(y.dtype),
        True,
    ),
    "elu": (
        lambda x, alpha=1.0: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))).astype(x.dtype),
        lambda y, alpha=1.0: np.where(y > 0, 1, y + alpha).astype(y.dtype),
        True,
    ),
    "selu": (
        lambda x, **a: (SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0)))).astype(x.dtype),
        lambda y, **a: np.where(y > 0, SELU_SCALE, y + SELU_SCALE * SELU_ALPHA).astype(y.dtype),
        True,
    ),
    "sigmoid": (lambda x, **a: _sigmoid(x), lambda y, **a: y * (1 - y), True),
    "hard_sigmoid": (
        lambda x, **a: np.clip(x / 6 + 0.5, 0, 1).astype(x.dtype),
        lambda y, **a: (((y > 0) & (y < 1)) / 6).astype(y.dtype),
        True,
    ),
    "tanh": (lambda x, **a: np.tanh(x), lambda y, **a: 1 - y * y, True),
    "exponential": (lambda x, **a: np.exp(x), lambda y, **a: y, True),
    "softplus": (lambda x, **a: _softplus(x), lambda y, **a: -np.expm1(-y), True),
    "softsign": (lambda x, **a: x / (1 + np.abs(x)), lambda y, **a: (1 - np.abs(y)) ** 2, True),
    "silu": (lambda x, **a: x * _sigmoid(x), lambda x, **a: _sigmoid(x) * (1 + x * (1 - _sigmoid(x))), False),
    "gelu": (_gelu, _gelu_grad, False),
    "mish": (lambda x, **a: x * np.tanh(_softplus(x)), _mish_grad, False),
    # Keras 3's newer activations (a string names them at their default parameters; keras.ops
    # gives celu's alpha, squareplus's b and the shrinks' threshold)
    "hard_silu": (
        lambda x, **a: x * np.clip(x / 6 + 0.5, 0, 1).astype(x.dtype),
        lambda x, **a: (np.clip(x / 6 + 0.5, 0, 1) + x * ((x > -3) & (x < 3)) / 6).astype(x.dtype),
        False,
    ),
    "celu": (
        lambda x, alpha=1.0: (np.maximum(x, 0) + alpha * np.expm1(np.minimum(x, 0) / alpha)).astype(x.dtype),
        lambda x, alpha=1.0: np.where(x > 0, 1, np.exp(np.minimum(x, 0) / alpha)).astype(x.dtype),
        False,
    ),
    "hard_tanh": (lambda x, **a: np.clip(x, -1, 1), lambda x, **a: ((x > -1) & (x < 1)).astype(x.dtype), False),
    "log_sigmoid": (lambda x, **a: -_softplus(-x), lambda x, **a: _sigmoid(-x), False),
    "squareplus": (
        lambda x, smoothing=4.0: ((x + np.sqrt(x * x + smoothing)) / 2).astype(x.dtype),  # Keras's `b`
        lambda x, smoothing=4.0: ((1 + x / np.sqrt(x * x + smoothing)) / 2).astype(x.dtype),
        False,
    ),
    "sparse_plus": (
        lambda x, **a: np.where(x <= -1, 0, np.where(x < 1, (x + 1) ** 2 / 4, x)).astype(x.dtype),
        lambda x, **a: np.where(x <= -1, 0, np.where(x < 1, (x + 1) / 2, 1)).astype(x.dtype),
        False,
    ),
    "sparse_sigmoid": (
        lambda x, **a: np.clip((x + 1) / 2, 0, 1).astype(x.dtype),
        lambda x, **a: (((x > -1) & (x < 1)) / 2).astype(x.dtype),
        False,
    ),
    "hard_shrink": (
        lambda x, threshold=0.5: np.where(np.abs(x) > threshold, x, 0).astype(x.dtype),
        lambda x, threshold=0.5: (np.abs(x) > threshold).astype(x.dtype),
        False,
    ),
    "soft_shrink": (
        lambda x, threshold=0.5: np.where(
            x > threshold, x - threshold, np.where(x < -threshold, x + threshold, 0)
        ).astype(x.dtype),
        lambda x, threshold=0.5: (np.abs(x) > threshold).astype(x.dtype),
        False,
    ),
    "tanh_shrink": (lambda x, **a: x - np.tanh(x), lambda x, **a: np.tanh(x) ** 2, False),
}
ACTIVATION_ALIASES = {"swish": "silu", "hard_swish": "hard_silu", "None": "linear", None: "linear"}
# Keras 3's newer activations: layers take them, recurrent cells do not (a cell's activations are
# codes of kernels/maths.py RNN_ACTIVATIONS, each a branch compiled into every recurrent kernel)
NOT_IN_CELLS = (
    "hard_silu",
    "celu",
    "hard_tanh",
    "log_sigmoid",
    "squareplus",
    "sparse_plus",
    "sparse_sigmoid",
    "hard_shrink",
    "soft_shrink",
    "tanh_shrink",
)


def activation_name(name) -> str:
    name = ACTIVATION_ALIASES.get(name, name)
    if name not in ACTIVATIONS:
        raise KeyError(name)
    return name


def _act_vjp(name):
    from_output = ACTIVATIONS[name][2]

    def vjp(b, g, out, x, **attrs):
        return (b.act_grad(g, out if from_output else x, activation=name, **attrs),)

    return vjp


LOGITS_ROLES = {"sigmoid": [Role.SIGMOID]}
for _name, (_fwd, _deriv, _from_out) in ACTIVATIONS.items():
    if _name != "linear":
        _elem(
            _name,
            lambda x, _f=_fwd, **a: _f(x, **a).astype(x.dtype),
            _act_vjp(_name),
            doc=f"the {_name} activation",
            roles=[Role.ACTIVATION, *LOGITS_ROLES.get(_name, ())],
        )


def _act_grad_forward(g, v, activation, **attrs):
    return (g * ACTIVATIONS[activation][1](v, **attrs)).astype(g.dtype)


_elem(
    "act_grad",
    _act_grad_forward,
    None,
    infer=same_type,
    roles=[Role.ACTIVATION_GRAD],
    doc="g * activation'(v); v is the activation's output where its derivative reads the output "
    "(relu, sigmoid, tanh, ...), else its input (gelu, silu)",
)
