"""The op registry checked against itself and against independent formulas (NumPy only, no Numba).

* every op with a VJP: autodiff's IR gradient, run through the interpreter, against central
  finite differences of the op's NumPy forward, in float64;
* every non-source op: the forward's output shape and dtype against the shape rule;
* a few NumPy references against hand-written formulas (softmax, cross-entropy, act_grad,
  the Keras 3 optimizer updates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest

import ir
from ir.ops.elementwise import ACTIVATIONS
from ir.ops.optim import UPDATES
from kgraph.passes.autodiff import autodiff

B = 3  # the concrete batch size the symbolic "B" takes in these tests


def _rng(seed):
    return np.random.default_rng(seed)


def away(shape, seed, lo=0.2, hi=1.5):
    """Random values with |x| in [lo, hi] and random signs: clear of kinks at 0."""
    r = _rng(seed)
    return r.choice([-1.0, 1.0], size=shape) * r.uniform(lo, hi, size=shape)


def pos(shape, seed, lo=0.5, hi=2.0):
    return _rng(seed).uniform(lo, hi, size=shape)


def normal(shape, seed):
    return _rng(seed).standard_normal(shape)


def labels(n, k, seed):
    return _rng(seed).integers(0, k, size=n).astype(np.int32)


def soft_targets(shape, seed):
    t = _rng(seed).uniform(0.1, 1.0, size=shape)
    return t / t.sum(axis=-1, keepdims=True)


# A case's operands are (kind, array) pairs:
#   "input": data with a batch dim (its first axis is the symbolic B), differentiated
#   "param": a fixed shape, differentiated
#   "label": data with a batch dim, not differentiated (int labels, soft targets)
@dataclass
class Case:
    op: str
    operands: list
    attrs: dict = field(default_factory=dict)
    name: str = ""

    @property
    def id(self):
        return self.name or self.op


def I(a):  # noqa: E743
    return ("input", np.asarray(a, dtype=np.float64))


def P(a):
    return ("param", np.asarray(a, dtype=np.float64))


def L(a):
    return ("label", np.asarray(a))


def _kink_free_unary(op):
    return Case(op, [I(away((B, 4), hash(op) % 1000))])


RNN_MASK = np.array([[1, 1, 1, 1], [0, 1, 0, 1], [1, 1, 0, 0]], dtype=np.float64)[:B]
RNN_KEEP = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])[:B]  # recurrent dropout at rate 0.5

GRAD_CASES = [
    # -- arithmetic, with broadcasting and scalar operands
    Case("add", [I(normal((B, 3), 1)), I(normal((B, 3), 2))], name="add_same"),
    Case("add", [I(normal((B, 3), 1)), P(normal((3,), 2))], name="add_B3_3"),
    Case("add", [P(normal((3,), 2)), I(normal((B, 3), 1))], name="add_3_B3"),
    Case("add", [I(normal((B, 3), 1)), P(normal((), 2))], name="add_B3_scalar"),
    Case("add", [I(normal((B, 1), 1)), P(normal((1, 3), 2))], name="add_B1_13"),
    Case("sub", [I(normal((B, 3), 1)), I(normal((B, 3), 2))], name="sub_same"),
    Case("sub", [I(normal((B, 3), 3)), P(normal((3,), 4))], name="sub_B3_3"),
    Case("sub", [P(normal((), 4)), I(normal((B, 3), 3))], name="sub_scalar_B3"),
    Case("mul", [I(normal((B, 3), 5)), I(normal((B, 3), 6))], name="mul_same"),
    Case("mul", [I(normal((B, 3), 5)), P(normal((3,), 6))], name="mul_B3_3"),
    Case("mul", [P(normal((), 6)), I(normal((B, 3), 5))], name="mul_scalar_B3"),
    Case("mul", [I(normal((B, 1), 5)), P(normal((1, 3), 6))], name="mul_B1_13"),
    Case("div", [I(normal((B, 3), 7)), I(away((B, 3), 8, 0.5, 2.0))], name="div_same"),
    Case("div", [I(normal((B, 3), 7)), P(away((3,), 8, 0.5, 2.0))], name="div_B3_3"),
    Case("div", [P(normal((3,), 7)), I(away((B, 3), 8, 0.5, 2.0))], name="div_3_B3"),
    Case("div", [I(normal((B, 3), 7)), P(np.array(1.7))], name="div_B3_scalar"),
    # maximum/minimum: operands at least 0.1 apart (no ties)
    Case("maximum", [I(normal((B, 3), 9)), I(normal((B, 3), 9) + away((B, 3), 10, 0.1, 1.0))], name="maximum_same"),
    Case(
        "maximum",
        [I(np.array([[-1.0, 0.5, 2.0], [0.3, -0.6, 1.1], [0.9, 0.05, -2.0]])), P(np.array([0.2, -0.1, 0.7]))],
        name="maximum_B3_3",
    ),
    Case("minimum", [I(normal((B, 3), 11)), I(normal((B, 3), 11) + away((B, 3), 12, 0.1, 1.0))], name="minimum_same"),
    Case(
        "minimum",
        [I(np.array([[-1.0, 0.5, 2.0], [0.3, -0.6, 1.1], [0.9, 0.05, -2.0]])), P(np.array(0.4))],
        name="minimum_B3_scalar",
    ),
    # -- unary math
    Case("neg", [I(normal((B, 4), 13))]),
    Case("exp", [I(normal((B, 4), 14))]),
    Case("log", [I(pos((B, 4), 15))]),
    Case("log1p", [I(pos((B, 4), 16, -0.5, 2.0))]),
    Case("expm1", [I(normal((B, 4), 23))]),
    Case("sqrt", [I(pos((B, 4), 17))]),
    Case("square", [I(normal((B, 4), 18))]),
    Case("abs", [I(away((B, 4), 19))]),
    Case("sign", [I(away((B, 4), 20))]),  # zero gradient: autodiff finds no path
    # comparisons: no gradient either (their operands do not tie, so none is there to lose)
    *[
        Case(op, [I(normal((B, 3), 40)), P(normal((3,), 41))])
        for op in ("greater", "greater_equal", "less", "less_equal", "equal")
    ],
    Case(
        "clip",
        [I(np.array([[-2.0, -0.7, 0.1, 0.45], [0.8, 1.3, -0.2, 3.0], [0.0, -1.2, 0.3, 0.9]]))],
        {"lo": -0.5, "hi": 1.0},
    ),
    # -- activations (values clear of every kink: 0, 6 for relu6, +-3 for hard_sigmoid)
    *[
        _kink_free_unary(op)
        for op in ("relu", "selu", "sigmoid", "tanh", "exponential", "softplus", "softsign", "silu", "mish")
    ],
    *[_kink_free_unary(op) for op in ("celu", "log_sigmoid", "squareplus", "tanh_shrink")],
    Case("celu", [I(away((B, 4), 21))], {"alpha": 2.5}, "celu_alpha"),  # keras.ops's options
    Case("squareplus", [I(normal((B, 4), 22))], {"smoothing": 0.7}, "squareplus_b"),
    # Keras 3's piecewise ones, on values clear of their kinks (+-0.5, +-1, +-3)
    *[
        Case(op, [I(np.array([[-3.4, -1.7, -0.8, -0.3], [0.2, 0.7, 1.3, 2.6], [3.5, -0.1, 0.45, -1.2]]))])
        for op in ("hard_silu", "hard_tanh", "sparse_plus", "sparse_sigmoid", "hard_shrink", "soft_shrink")
    ],
    *[
        Case(
            op,
            [I(np.array([[-3.4, -1.7, -0.8, -0.3], [0.2, 0.7, 1.3, 2.6], [3.5, -0.1, 0.45, -1.2]]))],
            {"threshold": 1.0},
            f"{op}_threshold",
        )
        for op in ("hard_shrink", "soft_shrink")
    ],
    Case("relu6", [I(np.array([[-1.0, 0.5, 5.5, 7.0], [2.0, -0.3, 6.5, 0.2], [3.3, 4.1, -2.2, 1.0]]))]),
    Case("hard_sigmoid", [I(np.array([[-4.0, -2.5, 0.3, 2.9], [3.5, -1.0, 1.7, -0.2], [0.0, 5.0, -3.4, 2.0]]))]),
    Case("leaky_relu", [I(away((B, 4), 21))], name="leaky_relu_default"),
    Case("leaky_relu", [I(away((B, 4), 21))], {"alpha": 0.05}, name="leaky_relu_alpha"),
    Case("elu", [I(away((B, 4), 22))], name="elu_default"),
    Case("elu", [I(away((B, 4), 22))], {"alpha": 0.5}, name="elu_alpha"),
    Case("gelu", [I(normal((B, 4), 23))], name="gelu_default"),
    Case("gelu", [I(normal((B, 4), 23))], {"approximate": False}, name="gelu_exact"),
    Case("gelu", [I(normal((B, 4), 23))], {"approximate": True}, name="gelu_tanh"),
    # -- reductions over several axes, with and without keepdims
    *[
        Case(op, [I(normal((B, 2, 4), 24))], {"axes": axes, "keepdims": keep}, name=f"{op}_axes{axes}_keep{keep}")
        for op in ("reduce_sum", "reduce_mean", "reduce_max")
        for axes in (None, 0, 1, -1, (1, 2), (0, 2))
        for keep in (False, True)
    ],
    Case("where", [L((normal((B, 4), 64) > 0).astype(np.float64)), I(normal((B, 4), 65)), P(normal((4,), 66))]),
    # -- matrix products: every transpose combination, with fixed shapes and with a batch dim
    *[
        Case(
            "matmul",
            [P(normal((4, 3) if ta else (3, 4), 25)), P(normal((5, 4) if tb else (4, 5), 26))],
            {"transpose_a": ta, "transpose_b": tb},
            name=f"matmul_ta{ta}_tb{tb}",
        )
        for ta in (False, True)
        for tb in (False, True)
    ],
    Case("matmul", [I(normal((B, 4), 27)), P(normal((4, 5), 28))], name="matmul_dense"),
    Case("matmul", [I(normal((B, 4), 27)), P(normal((5, 4), 28))], {"transpose_b": True}, name="matmul_dense_tb"),
    Case("matmul", [I(normal((B, 4), 27)), I(normal((B, 5), 28))], {"transpose_a": True}, name="matmul_xT_g"),
    # -- shapes
    Case("reshape", [I(normal((B, 2, 3), 29))], {"shape": ("B", 6)}, name="reshape_flatten"),
    Case("reshape", [I(normal((B, 6), 29))], {"shape": ("B", 3, 2)}, name="reshape_unflatten"),
    Case("reshape", [P(normal((2, 6), 29))], {"shape": (3, 4)}, name="reshape_fixed"),
    Case(
        "concat",
        [I(normal((B, 2), 30)), I(normal((B, 3), 31)), I(normal((B, 1), 32))],
        {"axis": 1},
        name="concat_axis1",
    ),
    Case("concat", [I(normal((B, 2, 2), 30)), I(normal((B, 2, 3), 31))], {"axis": -1}, name="concat_axis_neg"),
    # -- softmax and the cross-entropy primitives
    Case("softmax", [I(normal((B, 5), 33))], name="softmax"),
    Case("softmax", [I(normal((B, 4, 2), 33))], {"axis": 1}, name="softmax_axis1"),
    Case("softmax_cross_entropy", [I(normal((B, 5), 34)), L(soft_targets((B, 5), 35))]),
    Case("sparse_softmax_cross_entropy", [I(normal((B, 5), 36)), L(labels(B, 5, 37))]),
    Case("pick", [I(pos((B, 5), 38, 0.05, 1.0)), L(labels(B, 5, 39))]),
    # -- matmul over the last axis of a rank-3 operand (Dense on sequences) and its transposes
    Case("matmul", [I(normal((B, 2, 4), 27)), P(normal((4, 5), 28))], name="matmul_rank3"),
    Case(
        "matmul", [I(normal((B, 2, 4), 27)), I(normal((B, 2, 5), 28))], {"transpose_a": True}, name="matmul_rank3_xT_g"
    ),
    # -- a matrix product per leading index (attention): every transpose combination
    *[
        Case(
            "batch_matmul",
            [
                I(normal((B, 2, 4, 3) if ta else (B, 2, 3, 4), 120)),
                I(normal((B, 2, 5, 4) if tb else (B, 2, 4, 5), 121)),
            ],
            {"transpose_a": ta, "transpose_b": tb},
            name=f"batch_matmul_ta{ta}_tb{tb}",
        )
        for ta in (False, True)
        for tb in (False, True)
    ],
    # -- patches: padding, strides, dilation, non-square kernels
    *[
        Case(
            "im2col",
            [I(normal((B, 5, 6, 2), 90))],
            {"kernel": k, "strides": s, "dilation": d, "pads": p},
            name=f"im2col_k{k}_s{s}_d{d}_p{p}",
        )
        for k, s, d, p in [
            ((3, 3), (1, 1), (1, 1), (0, 0, 0, 0)),
            ((3, 2), (2, 2), (1, 1), (1, 1, 0, 1)),
            ((2, 2), (1, 2), (2, 1), (1, 0, 2, 1)),
            ((1, 1), (2, 1), (1, 1), (0, 0, 0, 0)),
        ]
    ],
    *[
        Case(
            "col2im",
            [I(normal((B, oh, ow, 2 * k[0] * k[1]), 91))],
            {"kernel": k, "strides": s, "dilation": (1, 1), "pads": p, "size": size},
            name=f"col2im_s{s}_p{p}_size{size}",
        )
        for k, s, p, size, (oh, ow) in [
            ((3, 3), (2, 2), (1, 1, 1, 1), (5, 5), (3, 3)),
            ((2, 3), (1, 2), (0, 0, 0, 0), (4, 7), (3, 3)),
            # a transposed convolution's output_padding: 'valid' (1, 2), 'same' (1, 1)
            ((3, 2), (2, 3), (0, 0, 0, 0), (8, 10), (3, 3)),
            ((3, 3), (2, 2), (0, 1, 0, 1), (6, 6), (3, 3)),
        ]
    ],
    *[
        Case(
            "pool2d",
            [I(normal((B, 5, 6, 2), 92))],
            {"mode": m, "pool": k, "strides": s, "pads": p},
            name=f"pool2d_{m}_k{k}_s{s}_p{p}",
        )
        for m in ("max", "avg")
        for k, s, p in [((2, 2), (2, 2), (0, 0, 0, 0)), ((3, 3), (2, 2), (1, 1, 1, 1)), ((3, 2), (1, 1), (1, 1, 0, 1))]
    ],
    Case("transpose", [I(normal((B, 2, 3, 4), 94))], {"perm": (0, 3, 1, 2)}),
    Case("transpose", [P(normal((2, 3, 4), 94))], {"perm": (1, 2, 0)}, name="transpose_fixed"),
    Case("pad", [I(normal((B, 3, 4), 95))], {"pads": ((0, 0), (1, 2), (0, 1))}),
    Case("crop", [I(normal((B, 5, 4), 96))], {"pads": ((0, 0), (1, 2), (0, 1))}),
    Case("repeat", [I(normal((B, 2, 3), 97))], {"axis": 1, "n": 3}),
    Case("repeat", [I(normal((B, 2, 3), 97))], {"axis": 2, "n": 2}, name="repeat_last"),
    Case("gather", [P(normal((5, 3), 98)), L(np.array([[0, 4], [2, 2], [1, 0]], dtype=np.float32))]),
    # -- batch norm from given statistics: channels last, channels first, without gamma or beta
    Case(
        "batch_norm",
        [
            I(normal((B, 2, 3), 100)),
            P(normal((3,), 101)),
            P(pos((3,), 102)),
            P(normal((3,), 103)),
            P(normal((3,), 104)),
        ],
        {"axis": 2, "epsilon": 1e-3},
        name="batch_norm_last",
    ),
    Case(
        "batch_norm",
        [I(normal((B, 3, 2), 100)), P(normal((3,), 101)), P(pos((3,), 102)), P(normal((3,), 103))],
        {"axis": 1, "epsilon": 0.1, "center": False},
        name="batch_norm_axis1_no_beta",
    ),
    Case(
        "batch_norm",
        [I(normal((B, 3), 100)), P(normal((3,), 101)), P(pos((3,), 102)), P(normal((3,), 104))],
        {"axis": 1, "epsilon": 1e-3, "scale": False},
        name="batch_norm_no_gamma",
    ),
    Case("slice", [I(normal((B, 2, 5), 48))], {"axis": 2, "start": 1, "stop": 4}, name="slice_grad"),
    # -- recurrent time loops (T=4, H=2): masks with leading, middle and trailing gaps, go_backwards
    *[
        Case(
            "rnn_sequence",
            [
                I(0.5 * normal((B, 4, gates * 2), 110)),
                P(0.5 * normal((2, gates * 2), 111)),
                *([P(0.5 * normal((gates * 2,), 112))] if attrs.get("recurrent_bias") else []),
                *([L(RNN_MASK)] if attrs.get("masked") else []),
                *([L(RNN_KEEP)] if attrs.get("recurrent_dropout") else []),
                *([I(normal((B, 2), 113))] if attrs.get("initial") else []),
                *([I(normal((B, 2), 114))] if attrs.get("initial") and gates == 4 else []),
            ],
            attrs,
            name=f"rnn_{k}",
        )
        for k, (gates, attrs) in enumerate(
            [
                (1, {"cell": "simple"}),
                (
                    1,
                    {"cell": "simple", "masked": True, "initial": True, "go_backwards": True, "activation": "softsign"},
                ),
                (4, {"cell": "lstm"}),
                (
                    4,
                    {
                        "cell": "lstm",
                        "masked": True,
                        "initial": True,
                        "go_backwards": True,
                        "recurrent_activation": "hard_sigmoid_k2",
                    },
                ),
                (4, {"cell": "lstm", "masked": True, "recurrent_activation": "hard_sigmoid"}),
                (3, {"cell": "gru", "recurrent_bias": True}),
                (3, {"cell": "gru", "recurrent_bias": True, "masked": True, "initial": True, "go_backwards": True}),
                (3, {"cell": "gru", "reset_after": False, "masked": True, "initial": True}),
                (
                    3,
                    {
                        "cell": "gru",
                        "reset_after": False,
                        "go_backwards": True,
                        "recurrent_activation": "hard_sigmoid_k2",
                    },
                ),
                (1, {"cell": "simple", "recurrent_dropout": True}),
                (4, {"cell": "lstm", "masked": True, "recurrent_dropout": True, "initial": True}),
                (3, {"cell": "gru", "recurrent_bias": True, "recurrent_dropout": True, "masked": True}),
                (3, {"cell": "gru", "reset_after": False, "recurrent_dropout": True, "initial": True}),
            ]
        )
    ],
    Case("reverse_time", [I(normal((B, 4, 3), 115))]),
]

# ops without a VJP that a graph may still hold: forward-vs-shape-rule cases only
SHARED_VALUES = [P(np.array(0.1)), P(np.array(2.0)), P(np.array(0.5))]  # lr, step, gscale
FORWARD_CASES = [
    Case("in_range", [I(normal((B, 3), 42))], {"lo": -0.5, "hi": 0.5}),
    *[
        Case("act_grad", [I(normal((B, 3), 43)), I(away((B, 3), 44))], {"activation": a}, name=f"act_grad_{a}")
        for a in ACTIVATIONS
    ],
    Case("broadcast_like", [I(normal((B,), 45)), I(normal((B, 4), 46))], {"axes": (1,)}),
    Case("broadcast_like", [P(normal((), 45)), I(normal((B, 4), 46))], {}, name="broadcast_like_all"),
    Case("count", [I(normal((B, 4), 47))], {"axes": (0,)}),
    Case("count", [I(normal((B, 4), 47))], {}, name="count_all"),
    Case("slice", [I(normal((B, 5), 48))], {"axis": 1, "start": 1, "stop": 4}),
    Case(
        "rnn_sequence_grad",
        [I(normal((B, 4, 4), 116)), I(normal((B, 4, 4), 117)), I(normal((B, 4, 8), 118)), P(normal((2, 8), 119))],
        {"cell": "lstm", "wrt": 1},
    ),
    Case("softmax_grad", [I(normal((B, 4), 49)), I(soft_targets((B, 4), 50))]),
    Case("softmax_cross_entropy_grad", [I(normal((B, 4), 49)), L(soft_targets((B, 4), 50)), I(normal((B,), 52))]),
    Case("sparse_softmax_cross_entropy_grad", [I(normal((B, 4), 49)), L(labels(B, 4, 53)), I(normal((B,), 52))]),
    Case("unpick", [I(normal((B,), 52)), L(labels(B, 4, 53)), I(normal((B, 4), 49))]),
    Case("fused_dense", [I(normal((B, 4), 54)), P(normal((4, 3), 55)), P(normal((3,), 56))], {"activation": "gelu"}),
    Case(
        "fused_elementwise",
        [I(normal((B, 3), 57)), P(normal((3,), 58))],
        {"expr": ("op", "relu", (), ("op", "add", (), ("in", 0), ("in", 1)))},
    ),
    Case("copy", [I(normal((B, 3), 59))]),
    Case("constant", [], {"values": (1.5, -2.0, 0.25, 3.0, 0.0, -0.5), "shape": (2, 3)}),
    *[
        Case(
            op,
            [
                P(normal((3, 2), 60)),
                P(normal((3, 2), 61)),
                *[P(np.full((3, 2), 0.5)) for _ in UPDATES[op].slots({**UPDATES[op].defaults, **hyper})],
                *SHARED_VALUES,
            ],
            hyper,
            name=f"{op}_{k}",
        )
        for op, hypers in [
            ("sgd_update", [{}, {"momentum": 0.9, "nesterov": True}]),
            ("adam_update", [{}, {"amsgrad": True, "weight_decay": 0.1}]),
            ("rmsprop_update", [{}, {"centered": True, "momentum": 0.5}]),
            ("adagrad_update", [{}]),
            ("adadelta_update", [{}]),
            ("adamax_update", [{}]),
            ("nadam_update", [{}]),
            ("lion_update", [{}]),
            ("ftrl_update", [{}, {"l1_regularization_strength": 0.01, "l2_shrinkage_regularization_strength": 0.1}]),
        ]
        for k, hyper in enumerate(hypers)
    ],
    Case(
        "pool2d_grad",
        [I(normal((B, 2, 2, 2), 64)), I(normal((B, 4, 4, 2), 65)), I(normal((B, 2, 2, 2), 66))],
        {"mode": "avg", "pool": (2, 2), "strides": (2, 2), "pads": (0, 0, 0, 0)},
    ),
    Case("scatter_add", [I(normal((B, 2, 3), 67)), L(np.array([[0, 4], [2, 2], [1, 0]], dtype=np.int32))], {"rows": 5}),
    Case("moving_average", [P(normal((4,), 68)), P(normal((4,), 69))], {"momentum": 0.9}),
    *[
        Case("constrain", [P(normal((3, 4, 2), 90 + k)), P(normal((3, 4, 2), 94))], attrs, name=f"constrain_{k}")
        for k, attrs in enumerate(
            [
                {"kind": "non_neg"},
                {"kind": "max_norm", "axes": (0, 1), "max_value": 1.0},
                {"kind": "unit_norm", "axes": (1,)},
                {"kind": "min_max_norm", "axes": (2,), "min_value": 0.5, "max_value": 1.0, "rate": 0.7},
            ]
        )
    ],
    Case(
        "fused_update",
        [P(normal((3, 2), 60)), P(normal((3, 2), 61)), P(normal((4,), 62)), P(normal((4,), 63)), *SHARED_VALUES],
        {"update": "sgd_update", "per_param": 2, "shared": 3},
    ),
]


# ---------------------------------------------------------------- helpers


def _type_of(kind, arr):
    dtype = str(arr.dtype)
    shape = arr.shape
    if kind in ("input", "label"):
        assert shape and shape[0] == B, "batch operands need a leading axis of size B"
        shape = ("B",) + shape[1:]
    return ir.TensorType(shape, dtype)


def _build(case, dtype="float64"):
    """A graph holding the case's sources and op; returns (graph, source ids, arrays, op node id)."""
    g = ir.Graph(case.id)
    ids, arrays = [], []
    for k, (kind, arr) in enumerate(case.operands):
        if arr.dtype.kind == "f":
            arr = arr.astype(dtype)
        src = "label" if kind == "label" else kind
        ids.append(g.source(src, f"x{k}", _type_of(kind, arr)))
        arrays.append(arr)
    out = g.add_node(case.op, ids, case.attrs, name="out")
    return g, ids, arrays, out


def _forward(case, arrays):
    arrays = [a.copy() for a in arrays]  # update ops write their first operand in place
    return np.asarray(ir.get_op(case.op).forward(*arrays, **case.attrs))


def _central_diff(f, arrays, k, eps=1e-6):
    x = arrays[k]
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        plus = [a.copy() for a in arrays]
        minus = [a.copy() for a in arrays]
        plus[k][idx] += eps
        minus[k][idx] -= eps
        grad[idx] = (f(plus) - f(minus)) / (2 * eps)
    return grad


# ---------------------------------------------------------------- coverage


def test_every_differentiable_op_has_a_gradient_case():
    differentiable = {n for n, op in ir.REGISTRY.items() if op.vjp is not None}
    missing = differentiable - {c.op for c in GRAD_CASES}
    assert not missing, f"ops with a VJP but no gradient test case: {sorted(missing)}"


def test_every_op_has_a_forward_case():
    ops = {n for n, op in ir.REGISTRY.items() if op.pattern is not ir.Pattern.SOURCE}
    missing = ops - {c.op for c in GRAD_CASES + FORWARD_CASES}
    assert not missing, f"ops without a test case: {sorted(missing)}"


def test_case_ids_unique():
    ids = [c.id for c in GRAD_CASES + FORWARD_CASES]
    assert len(ids) == len(set(ids))


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.id)
def test_vjp_matches_finite_differences(case):
    g, ids, arrays, out = _build(case)
    r_arr = normal(g.type(out).concrete(B), 99)
    r = g.source("input", "r", g.type(out))
    loss = g.reduce_sum(g.mul(out, r), name="loss")
    wrt = [i for i, (kind, _) in zip(ids, case.operands) if kind != "label"]
    feeds = {**dict(zip(ids, arrays)), r: r_arr}

    def numpy_loss(arrs):
        return float(np.sum(_forward(case, arrs) * r_arr))

    # ops whose VJP gives None for an operand (sign): autodiff reports that the operand does not
    # affect the loss, and the true gradient must then be zero
    no_grad = []
    try:
        grads = autodiff(g, loss, wrt)
    except ValueError as e:
        if "does not affect the loss" not in str(e):
            raise
        grads = {}
        for w in wrt:
            try:
                grads.update(autodiff(g, loss, [w]))
            except ValueError:
                no_grad.append(w)
    ir.verify(g)  # the backward graph's types agree with every shape rule
    env = ir.interpret(g, feeds)
    np.testing.assert_allclose(env[out], _forward(case, arrays), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(env[loss], numpy_loss(arrays), rtol=1e-12, atol=1e-12)
    for w in wrt:
        k = ids.index(w)
        expected = _central_diff(numpy_loss, arrays, k)
        if w in no_grad:
            np.testing.assert_allclose(expected, 0.0, atol=1e-7, err_msg=f"%{w} has no gradient rule")
            continue
        got = env[grads[w]]
        assert got.shape == arrays[k].shape, f"gradient of %{w}: shape {got.shape} != {arrays[k].shape}"
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7, err_msg=f"gradient of operand {k}")


@pytest.mark.parametrize(
    "shape, axis, scale, center",
    [
        ((B, 2, 3), 2, True, True),
        ((B, 3, 2), 1, True, False),
        ((B, 4), 1, False, True),
        ((B, 2, 2, 3), 3, False, False),
    ],
)
def test_batch_norm_on_its_batchs_statistics_has_the_total_gradient(shape, axis, scale, center):
    """Training's batch norm: mean and variance are x's own, and x's gradient runs through them
    (the op's batch_statistics rule), against finite differences of Keras's formula."""
    g = ir.Graph()
    t = ir.TensorType(shape, "float64")
    x = g.source("param", "x", ir.TensorType(tuple(B if d == B else d for d in shape), "float64"))
    others = tuple(i for i in range(len(shape)) if i != axis)
    c = shape[axis]
    gamma = g.source("param", "gamma", ir.TensorType((c,), "float64")) if scale else None
    beta = g.source("param", "beta", ir.TensorType((c,), "float64")) if center else None
    bshape = tuple(d if i == axis else 1 for i, d in enumerate(shape))
    mean = g.reduce_mean(x, axes=others)
    centered = g.sub(x, mean if axis == len(shape) - 1 else g.reshape(mean, shape=bshape))
    var = g.reduce_mean(g.square(centered), axes=others)
    stats = [v for v in (gamma, beta) if v is not None]
    y = g.batch_norm(x, mean, var, *stats, axis=axis, epsilon=1e-3, scale=scale, center=center, batch_statistics=True)
    r = g.source("input", "r", t)
    loss = g.reduce_sum(g.mul(y, r))
    wrt = [x] + [v for v in (gamma, beta) if v is not None]
    grads = autodiff(g, loss, wrt)
    ir.verify(g)
    arrays = [normal(shape, 120) * 2 + 1] + [normal((c,), 121 + k) for k in range(len(stats))]
    rv = normal(shape, 125)

    def numpy_loss(arrs):
        xv, rest = arrs[0], list(arrs[1:])
        m = xv.mean(axis=others, keepdims=True)
        v = ((xv - m) ** 2).mean(axis=others, keepdims=True)
        out = (xv - m) / np.sqrt(v + 1e-3)
        if scale:
            out = out * rest.pop(0).reshape(bshape)
        if center:
            out = out + rest.pop(0).reshape(bshape)
        return float(np.sum(out * rv))

    env = ir.interpret(g, {**dict(zip(wrt, arrays)), r: rv})
    np.testing.assert_allclose(env[loss], numpy_loss(arrays), rtol=1e-12)
    for k, w in enumerate(wrt):
        np.testing.assert_allclose(env[grads[w]], _central_diff(numpy_loss, arrays, k), rtol=1e-5, atol=1e-7)


def test_operand_used_twice_sums_cotangents():
    g = ir.Graph()
    x = g.source("input", "x", ir.TensorType(("B", 3), "float64"))
    r = g.source("input", "r", ir.TensorType(("B", 3), "float64"))
    loss = g.reduce_sum(g.mul(g.mul(x, x), r))
    grads = autodiff(g, loss, [x])
    ir.verify(g)
    xv, rv = normal((B, 3), 1), normal((B, 3), 2)
    env = ir.interpret(g, {x: xv, r: rv})
    np.testing.assert_allclose(env[grads[x]], 2 * xv * rv, rtol=1e-12)


# ---------------------------------------------------------------- forward vs shape rule


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", GRAD_CASES + FORWARD_CASES, ids=lambda c: c.id)
def test_forward_agrees_with_shape_rule(case, dtype):
    g, ids, arrays, out = _build(case, dtype)
    t = g.type(out)
    y = _forward(case, arrays)
    assert y.shape == t.concrete(B), f"{case.op}: forward gives {y.shape}, the shape rule {t}"
    assert str(y.dtype) == t.dtype, f"{case.op}: forward gives {y.dtype}, the shape rule {t}"
    env = ir.interpret(g, dict(zip(ids, [a.copy() for a in arrays])))
    np.testing.assert_allclose(env[out], y, rtol=1e-6)


# ---------------------------------------------------------------- references vs independent formulas


def _fwd(op, *args, **attrs):
    return ir.get_op(op).forward(*args, **attrs)


def test_softmax_rows_sum_to_one():
    z = normal((4, 6), 3) * 30  # large logits: the max-subtraction must keep it finite
    p = _fwd("softmax", z)
    assert np.all(p > 0) and np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-12)
    q = _fwd("softmax", normal((2, 5, 3), 4), axis=1)
    np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-12)
    z = normal((3, 4), 5)
    np.testing.assert_allclose(_fwd("softmax", z), np.exp(z) / np.exp(z).sum(-1, keepdims=True), rtol=1e-12)


def test_sparse_cross_entropy_is_minus_log_softmax_at_label():
    z, y = normal((5, 4), 6), labels(5, 4, 7)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    np.testing.assert_allclose(_fwd("sparse_softmax_cross_entropy", z, y), -np.log(p[np.arange(5), y]), rtol=1e-12)
    onehot = np.eye(4)[y]
    np.testing.assert_allclose(_fwd("softmax_cross_entropy", z, onehot), -np.log(p[np.arange(5), y]), rtol=1e-12)
    np.testing.assert_allclose(_fwd("pick", p, y), p[np.arange(5), y])


_ACT_ATTRS = [(a, {}) for a in ACTIVATIONS] + [
    ("leaky_relu", {"alpha": 0.05}),
    ("elu", {"alpha": 0.5}),
    ("gelu", {"approximate": True}),
    ("gelu", {"approximate": False}),
]


@pytest.mark.parametrize(
    "name,attrs", _ACT_ATTRS, ids=lambda v: str(v) if isinstance(v, str) else ",".join(f"{k}={w}" for k, w in v.items())
)
def test_act_grad_is_the_activation_derivative(name, attrs):
    fwd, _, from_output = ACTIVATIONS[name]
    x = np.concatenate([away((12,), 8, 0.05, 2.5), [-3.5, 3.5, 5.5, 6.5, -7.0, 8.0]])
    x = x[(np.abs(np.abs(x) - 3) > 1e-3) & (np.abs(x - 6) > 1e-3)]  # hard_sigmoid / relu6 kinks
    g = normal(x.shape, 9)
    eps = 1e-6
    fd = (fwd(x + eps, **attrs) - fwd(x - eps, **attrs)) / (2 * eps)
    v = fwd(x, **attrs) if from_output else x
    got = _fwd("act_grad", g, v, activation=name, **attrs)
    np.testing.assert_allclose(got, g * fd, rtol=1e-6, atol=1e-8)
    # the activation op itself is the same function as the table's
    if name != "linear":
        np.testing.assert_allclose(_fwd(name, x, **attrs), fwd(x, **attrs))


def test_constant_holds_its_values_in_c_order_and_checks_their_count():
    y = _fwd("constant", values=(1.0, 2.0, 3.0, 4.0, 5.0, 6.0), shape=(3, 2), dtype="float64")
    np.testing.assert_array_equal(y, [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    assert y.dtype == np.float64
    g = ir.Graph()
    with pytest.raises(ValueError, match="do not fill"):
        g.constant(values=(1.0, 2.0), shape=(3,))
    with pytest.raises(ValueError, match="fixed shape"):
        g.constant(values=(1.0, 2.0), shape=("B",))


def test_gelu_against_scipy_formulas():
    from scipy.special import erf

    x = np.linspace(-4, 4, 17)
    np.testing.assert_allclose(_fwd("gelu", x), 0.5 * x * (1 + erf(x / math.sqrt(2))), rtol=1e-12)
    approx = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(_fwd("gelu", x, approximate=True), approx, rtol=1e-12)


# Keras 3 optimizer formulas, written out independently (two steps from zero slots)


def _run_update(op, w, g_list, slots, lr, hyper, gscale=1.0):
    w = w.copy()
    slots = [s.copy() for s in slots]
    for t, g in enumerate(g_list, start=1):
        out = _fwd(op, w, g, *slots, np.array(lr), np.array(float(t)), np.array(gscale), **hyper)
        assert out is w  # updates write their first operand in place
    return w, slots


W0 = normal((3, 4), 70)
G = [normal((3, 4), 71), normal((3, 4), 72)]


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_update_matches_keras(momentum, nesterov):
    lr = 0.05
    hyper = {"momentum": momentum, "nesterov": nesterov}
    slots = [np.zeros_like(W0)] if momentum else []
    w, slots = _run_update("sgd_update", W0, G, slots, lr, hyper)
    ew, m = W0.copy(), np.zeros_like(W0)
    for g in G:
        if momentum:
            m = momentum * m - lr * g
            ew = ew + (momentum * m - lr * g if nesterov else m)
        else:
            ew = ew - lr * g
    np.testing.assert_allclose(w, ew, rtol=1e-12)
    if momentum:
        np.testing.assert_allclose(slots[0], m, rtol=1e-12)


@pytest.mark.parametrize("hyper", [{}, {"beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-3}])
def test_adam_update_matches_keras(hyper):
    lr = 0.01
    b1, b2, eps = hyper.get("beta_1", 0.9), hyper.get("beta_2", 0.999), hyper.get("epsilon", 1e-7)
    w, (m_got, v_got) = _run_update("adam_update", W0, G, [np.zeros_like(W0), np.zeros_like(W0)], lr, hyper)
    ew, m, v = W0.copy(), np.zeros_like(W0), np.zeros_like(W0)
    for t, g in enumerate(G, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        # Keras folds the bias corrections into the step size, so epsilon is scaled by sqrt(1 - b2^t)
        ew = ew - lr * m_hat / (np.sqrt(v_hat) + eps / math.sqrt(1 - b2**t))
    np.testing.assert_allclose(w, ew, rtol=1e-10)
    np.testing.assert_allclose(m_got, m, rtol=1e-12)
    np.testing.assert_allclose(v_got, v, rtol=1e-12)


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("momentum", [0.0, 0.8])
def test_rmsprop_update_matches_keras(centered, momentum):
    lr, rho, eps = 0.01, 0.85, 1e-7
    hyper = {"rho": rho, "momentum": momentum, "centered": centered, "epsilon": eps}
    n_slots = 1 + centered + (momentum > 0)
    w, slots = _run_update("rmsprop_update", W0, G, [np.zeros_like(W0) for _ in range(n_slots)], lr, hyper)
    ew, v, ag, mom = W0.copy(), np.zeros_like(W0), np.zeros_like(W0), np.zeros_like(W0)
    for g in G:
        v = rho * v + (1 - rho) * g**2
        if centered:
            ag = rho * ag + (1 - rho) * g
            denom = v - ag**2 + eps
        else:
            denom = v + eps
        inc = lr * g / np.sqrt(denom)
        if momentum > 0:
            mom = momentum * mom + inc
            ew = ew - mom
        else:
            ew = ew - inc
    np.testing.assert_allclose(w, ew, rtol=1e-10)
    expected_slots = [v] + ([ag] if centered else []) + ([mom] if momentum > 0 else [])
    for got, exp in zip(slots, expected_slots):
        np.testing.assert_allclose(got, exp, rtol=1e-10)


@pytest.mark.parametrize("hyper", [{}, {"beta_1": 0.8, "beta_2": 0.9}])
def test_lion_update_matches_keras(hyper):
    """Keras 3's Lion: w -= lr * sign(b1*m + (1-b1)*g), then m = b2*m + (1-b2)*g."""
    lr = 0.01
    b1, b2 = hyper.get("beta_1", 0.9), hyper.get("beta_2", 0.99)
    w, (m_got,) = _run_update("lion_update", W0, G, [np.zeros_like(W0)], lr, hyper)
    ew, m = W0.copy(), np.zeros_like(W0)
    for g in G:
        ew = ew - lr * np.sign(b1 * m + (1 - b1) * g)
        m = b2 * m + (1 - b2) * g
    np.testing.assert_allclose(w, ew, rtol=1e-12)
    np.testing.assert_allclose(m_got, m, rtol=1e-12)


@pytest.mark.parametrize(
    "hyper",
    [
        {},
        {
            "learning_rate_power": -0.7,
            "l1_regularization_strength": 0.3,
            "l2_regularization_strength": 0.02,
            "l2_shrinkage_regularization_strength": 0.03,
            "beta": 0.5,
        },
    ],
)
def test_ftrl_update_matches_keras(hyper):
    """Keras 3's Ftrl, its update_step written out (keras/src/optimizers/ftrl.py); l1 = 0.3 holds
    some weights at exactly 0."""
    lr, p = 0.1, -hyper.get("learning_rate_power", -0.5)
    l1, l2 = hyper.get("l1_regularization_strength", 0.0), hyper.get("l2_regularization_strength", 0.0)
    shrink, beta = hyper.get("l2_shrinkage_regularization_strength", 0.0), hyper.get("beta", 0.0)
    w, (acc_got, lin_got) = _run_update("ftrl_update", W0, G, [np.full_like(W0, 0.1), np.zeros_like(W0)], lr, hyper)
    ew, acc, lin = W0.copy(), np.full_like(W0, 0.1), np.zeros_like(W0)
    for g in G:
        l2_reg = l2 + beta / (2.0 * lr)
        new_acc = acc + g**2
        lin = lin + (g + 2 * shrink * ew) - (new_acc**p - acc**p) / lr * ew
        quadratic = new_acc**p / lr + 2 * l2_reg
        ew, acc = (np.clip(lin, -l1, l1) - lin) / quadratic, new_acc
    np.testing.assert_allclose(w, ew, rtol=1e-12)
    np.testing.assert_allclose(acc_got, acc, rtol=1e-12)
    np.testing.assert_allclose(lin_got, lin, rtol=1e-12)
    assert (w == 0).any() == (l1 > 0)


@pytest.mark.parametrize("kind", ["non_neg", "max_norm", "unit_norm", "min_max_norm"])
def test_constrain_matches_keras(kind):
    """Keras 3's constraints (keras/src/constraints/constraints.py) written out: norms over axis 0
    of a kernel, epsilon 1e-7; MaxNorm and MinMaxNorm leave columns within their limits as they are."""
    w = normal((5, 4), 95) * np.array([0.1, 0.5, 1.0, 3.0])  # columns of norm below, within and above
    norms = np.sqrt((w**2).sum(axis=0, keepdims=True))
    expected = {
        "non_neg": np.maximum(w, 0),
        "max_norm": w * (np.clip(norms, 0, 2.0) / (1e-7 + norms)),
        "unit_norm": w / (1e-7 + norms),
        "min_max_norm": w * ((0.5 * np.clip(norms, 0.5, 2.0) + 0.5 * norms) / (1e-7 + norms)),
    }[kind]
    limits = {"max_norm": {"max_value": 2.0}, "min_max_norm": {"min_value": 0.5, "max_value": 2.0, "rate": 0.5}}
    got = _fwd("constrain", w.copy(), None, kind=kind, axes=() if kind == "non_neg" else (0,), **limits.get(kind, {}))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    if kind == "max_norm":
        np.testing.assert_allclose(got[:, :2], w[:, :2], rtol=1e-6)  # within the limit: unchanged but for epsilon
        assert np.sqrt((got**2).sum(axis=0)).max() <= 2.0 + 1e-9


def test_fused_update_equals_separate_updates():
    w1, w2 = normal((3, 2), 80), normal((4,), 81)
    g1, g2 = normal((3, 2), 82), normal((4,), 83)
    a1, a2 = w1.copy(), w2.copy()
    _fwd(
        "fused_update",
        a1,
        g1,
        a2,
        g2,
        np.array(0.1),
        np.array(1.0),
        np.array(1.0),
        update="sgd_update",
        per_param=2,
        shared=3,
    )
    np.testing.assert_allclose(a1, w1 - 0.1 * g1)
    np.testing.assert_allclose(a2, w2 - 0.1 * g2)


def test_adam_amsgrad_divides_by_the_running_max():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    g_list = G + [np.zeros_like(W0)]  # a zero gradient: v falls, v_hat keeps the maximum
    w, (m_got, v_got, vh_got) = _run_update("adam_update", W0, g_list, [np.zeros_like(W0)] * 3, lr, {"amsgrad": True})
    ew, m, v, v_hat = W0.copy(), np.zeros_like(W0), np.zeros_like(W0), np.zeros_like(W0)
    for t, g in enumerate(g_list, start=1):
        m = m + (g - m) * (1 - b1)
        v = v + (g * g - v) * (1 - b2)
        v_hat = np.maximum(v_hat, v)
        ew = ew - m * (lr * math.sqrt(1 - b2**t) / (1 - b1**t)) / (np.sqrt(v_hat) + eps)
    np.testing.assert_allclose(w, ew, rtol=1e-10)
    np.testing.assert_allclose(vh_got, v_hat, rtol=1e-12)
    assert np.any(v_hat > v)


def test_adagrad_update_matches_keras():
    lr, eps = 0.05, 1e-7
    w, (acc_got,) = _run_update("adagrad_update", W0, G, [np.full_like(W0, 0.1)], lr, {})
    ew, acc = W0.copy(), np.full_like(W0, 0.1)
    for g in G:
        acc = acc + g**2
        ew = ew - lr * g / np.sqrt(acc + eps)
    np.testing.assert_allclose(w, ew, rtol=1e-12)
    np.testing.assert_allclose(acc_got, acc, rtol=1e-12)


def test_adadelta_update_matches_keras():
    lr, rho, eps = 1.0, 0.9, 1e-7
    w, slots = _run_update("adadelta_update", W0, G, [np.zeros_like(W0)] * 2, lr, {"rho": rho})
    ew, acc_g, acc_dx = W0.copy(), np.zeros_like(W0), np.zeros_like(W0)
    for g in G:
        acc_g = rho * acc_g + (1 - rho) * g**2
        delta = -np.sqrt(acc_dx + eps) / np.sqrt(acc_g + eps) * g
        acc_dx = rho * acc_dx + (1 - rho) * delta**2
        ew = ew + lr * delta
    np.testing.assert_allclose(w, ew, rtol=1e-12)
    np.testing.assert_allclose(slots[1], acc_dx, rtol=1e-10)


def test_adamax_update_matches_keras():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    w, (m_got, u_got) = _run_update("adamax_update", W0, G, [np.zeros_like(W0)] * 2, lr, {})
    ew, m, u = W0.copy(), np.zeros_like(W0), np.zeros_like(W0)
    for t, g in enumerate(G, start=1):
        m = b1 * m + (1 - b1) * g
        u = np.maximum(b2 * u, np.abs(g))
        ew = ew - lr / (1 - b1**t) * m / (u + eps)
    np.testing.assert_allclose(w, ew, rtol=1e-12)
    np.testing.assert_allclose(u_got, u, rtol=1e-12)


def test_nadam_update_matches_keras():
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-7
    g_list = G + [normal((3, 4), 73)]
    w, _ = _run_update("nadam_update", W0, g_list, [np.zeros_like(W0)] * 2, lr, {})
    ew, m, v, u_product = W0.copy(), np.zeros_like(W0), np.zeros_like(W0), 1.0
    for t, g in enumerate(g_list, start=1):
        u_t, u_next = b1 * (1 - 0.5 * 0.96**t), b1 * (1 - 0.5 * 0.96 ** (t + 1))
        u_product *= u_t  # Keras keeps the product in a variable, updated once per step
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = u_next * m / (1 - u_product * u_next) + (1 - u_t) * g / (1 - u_product)
        ew = ew - lr * m_hat / (np.sqrt(v / (1 - b2**t)) + eps)
    np.testing.assert_allclose(w, ew, rtol=1e-12)


def test_nadam_momentum_product_stops_where_its_factors_reach_one():
    from ir.ops.optim import nadam_momentum_product

    full = math.prod(0.9 * (1 - 0.5 * 0.96**s) for s in range(1, 1201))
    assert nadam_momentum_product(0.9, 1200) == pytest.approx(full, rel=1e-12)


@pytest.mark.parametrize("op", sorted(UPDATES))
def test_weight_decay_and_gradient_scale_come_before_every_update(op):
    """Keras: w -= w*weight_decay*lr, then the update with the (globally clipped) gradient."""
    lr, wd, gscale = 0.01, 0.2, 0.5
    hyper = {**UPDATES[op].defaults, "momentum": 0.9} if op == "sgd_update" else dict(UPDATES[op].defaults)
    init = UPDATES[op].slots(hyper)
    slots = [np.full_like(W0, v) for v in init.values()]
    got, _ = _run_update(op, W0, G[:1], slots, lr, {**hyper, "weight_decay": wd}, gscale=gscale)
    expected, _ = _run_update(op, W0 * (1 - wd * lr), [G[0] * gscale], slots, lr, hyper)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_im2col_then_matmul_is_a_convolution():
    x, w = normal((2, 5, 6, 3), 84), normal((3, 2, 3, 4), 85)
    (sh, sw), (dh, dw), (pt, pb, pl, pr) = (2, 1), (1, 2), (1, 1, 2, 1)
    cols = _fwd("im2col", x, kernel=(3, 2), strides=(sh, sw), dilation=(dh, dw), pads=(pt, pb, pl, pr))
    y = _fwd("matmul", cols, w.reshape(-1, 4))
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    direct = np.zeros(y.shape)
    for i, j in np.ndindex(y.shape[1:3]):
        for a, b in np.ndindex(3, 2):
            direct[:, i, j] += xp[:, i * sh + a * dh, j * sw + b * dw] @ w[a, b]
    np.testing.assert_allclose(y, direct, rtol=1e-12)


def test_col2im_refuses_an_image_size_its_windows_do_not_fit():
    g = ir.Graph()
    cols = g.source("input", "cols", ir.TensorType(("B", 3, 3, 9), "float32"))
    with pytest.raises(ValueError, match="a 9x6 image padded by .* does not have the 3x3 windows"):
        g.col2im(cols, kernel=(3, 3), strides=(2, 2), dilation=(1, 1), pads=(0, 0, 0, 0), size=(9, 6))


def test_pooling_never_counts_padding():
    attrs = {"pool": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}
    np.testing.assert_allclose(_fwd("pool2d", np.ones((1, 5, 5, 2)), mode="avg", **attrs), 1.0)
    assert np.all(_fwd("pool2d", -pos((1, 5, 5, 2), 86), mode="max", **attrs) < 0)
