"""Scalar expression templates of the elementwise ops for the CPU backend.
Each takes the operand expressions, the op's attrs and `lit` (which names a constant of the
step's dtype) and returns a Python expression that Numba compiles inside a loop."""
from __future__ import annotations

import math

from ir.ops.elementwise import SELU_ALPHA, SELU_SCALE, SQRT_2_OVER_PI


def _cmp(sym):
    return lambda a, at, lit: f"({lit(1)} if {a[0]} {sym} {a[1]} else {lit(0)})"


ELEMWISE = {
    "add": lambda a, at, lit: f"{a[0]} + {a[1]}",
    "sub": lambda a, at, lit: f"{a[0]} - {a[1]}",
    "mul": lambda a, at, lit: f"{a[0]} * {a[1]}",
    "div": lambda a, at, lit: f"{a[0]} / {a[1]}",
    "maximum": lambda a, at, lit: f"max({a[0]}, {a[1]})",
    "minimum": lambda a, at, lit: f"min({a[0]}, {a[1]})",
    "greater": _cmp(">"), "greater_equal": _cmp(">="), "less": _cmp("<"), "less_equal": _cmp("<="),
    "equal": _cmp("=="),
    "where": lambda a, at, lit: f"({a[1]} if {a[0]} != {lit(0)} else {a[2]})",
    "neg": lambda a, at, lit: f"-{a[0]}",
    "exp": lambda a, at, lit: f"math.exp({a[0]})",
    "log": lambda a, at, lit: f"math.log({a[0]})",
    "log1p": lambda a, at, lit: f"math.log1p({a[0]})",
    "sqrt": lambda a, at, lit: f"math.sqrt({a[0]})",
    "square": lambda a, at, lit: f"{a[0]} * {a[0]}",
    "abs": lambda a, at, lit: f"abs({a[0]})",
    "sign": lambda a, at, lit: f"({lit(1)} if {a[0]} > {lit(0)} else ({lit(-1)} if {a[0]} < {lit(0)} else {lit(0)}))",
    "clip": lambda a, at, lit: f"min(max({a[0]}, {lit(at['lo'])}), {lit(at['hi'])})",
    "in_range": lambda a, at, lit:
        f"({lit(1)} if ({a[0]} >= {lit(at['lo'])} and {a[0]} <= {lit(at['hi'])}) else {lit(0)})",
    "copy": lambda a, at, lit: a[0],
}


def _sigmoid(x, lit):
    return f"({lit(1)} / ({lit(1)} + math.exp(-{x})))"


def _gelu(x, at, lit):
    if at.get("approximate"):
        u = f"{lit(SQRT_2_OVER_PI)} * ({x} + {lit(0.044715)} * {x} * {x} * {x})"
        return f"{lit(0.5)} * {x} * ({lit(1)} + math.tanh({u}))"
    return f"{lit(0.5)} * {x} * ({lit(1)} + math.erf({x} * {lit(1 / math.sqrt(2))}))"


def _gelu_grad(g, x, at, lit):
    if at.get("approximate"):
        t = f"math.tanh({lit(SQRT_2_OVER_PI)} * ({x} + {lit(0.044715)} * {x} * {x} * {x}))"
        d = (f"{lit(0.5)} * ({lit(1)} + {t}) + {lit(0.5)} * {x} * ({lit(1)} - {t} * {t}) * "
             f"{lit(SQRT_2_OVER_PI)} * ({lit(1)} + {lit(3 * 0.044715)} * {x} * {x})")
    else:
        d = (f"{lit(0.5)} * ({lit(1)} + math.erf({x} * {lit(1 / math.sqrt(2))})) + "
             f"{x} * math.exp({lit(-0.5)} * {x} * {x}) * {lit(1 / math.sqrt(2 * math.pi))}")
    return f"{g} * ({d})"


# activation forward: (x, attrs, lit) -> expression
ACT_FORWARD = {
    "relu": lambda x, at, lit: f"max({x}, {lit(0)})",
    "relu6": lambda x, at, lit: f"min(max({x}, {lit(0)}), {lit(6)})",
    "leaky_relu": lambda x, at, lit: f"({x} if {x} > {lit(0)} else {x} * {lit(at.get('alpha', 0.2))})",
    "elu": lambda x, at, lit: f"({x} if {x} > {lit(0)} else {lit(at.get('alpha', 1.0))} * math.expm1({x}))",
    "selu": lambda x, at, lit:
        f"{lit(SELU_SCALE)} * ({x} if {x} > {lit(0)} else {lit(SELU_ALPHA)} * math.expm1({x}))",
    "sigmoid": lambda x, at, lit: _sigmoid(x, lit),
    "hard_sigmoid": lambda x, at, lit: f"min(max({x} / {lit(6)} + {lit(0.5)}, {lit(0)}), {lit(1)})",
    "tanh": lambda x, at, lit: f"math.tanh({x})",
    "exponential": lambda x, at, lit: f"math.exp({x})",
    "softplus": lambda x, at, lit: f"max({x}, {lit(0)}) + math.log1p(math.exp(-abs({x})))",
    "softsign": lambda x, at, lit: f"{x} / ({lit(1)} + abs({x}))",
    "silu": lambda x, at, lit: f"{x} * {_sigmoid(x, lit)}",
    "gelu": _gelu,
}

# activation gradient: (g, v, attrs, lit) -> g * activation'(.), v being the output or the input
# as ir.ops.ACTIVATIONS says for each
ACT_GRAD = {
    "linear": lambda g, v, at, lit: g,
    "relu": lambda g, v, at, lit: f"({g} if {v} > {lit(0)} else {lit(0)})",
    "relu6": lambda g, v, at, lit: f"({g} if ({v} > {lit(0)} and {v} < {lit(6)}) else {lit(0)})",
    "leaky_relu": lambda g, v, at, lit: f"({g} if {v} > {lit(0)} else {g} * {lit(at.get('alpha', 0.2))})",
    "elu": lambda g, v, at, lit: f"({g} if {v} > {lit(0)} else {g} * ({v} + {lit(at.get('alpha', 1.0))}))",
    "selu": lambda g, v, at, lit:
        f"({g} * {lit(SELU_SCALE)} if {v} > {lit(0)} else {g} * ({v} + {lit(SELU_SCALE * SELU_ALPHA)}))",
    "sigmoid": lambda g, v, at, lit: f"{g} * {v} * ({lit(1)} - {v})",
    "hard_sigmoid": lambda g, v, at, lit: f"({g} / {lit(6)} if ({v} > {lit(0)} and {v} < {lit(1)}) else {lit(0)})",
    "tanh": lambda g, v, at, lit: f"{g} * ({lit(1)} - {v} * {v})",
    "exponential": lambda g, v, at, lit: f"{g} * {v}",
    "softplus": lambda g, v, at, lit: f"{g} * -math.expm1(-{v})",
    "softsign": lambda g, v, at, lit: f"{g} * ({lit(1)} - abs({v})) * ({lit(1)} - abs({v}))",
    "silu": lambda g, v, at, lit:
        f"{g} * {_sigmoid(v, lit)} * ({lit(1)} + {v} * ({lit(1)} - {_sigmoid(v, lit)}))",
    "gelu": _gelu_grad,
}
