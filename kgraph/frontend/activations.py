"""Keras activations -> IR ops. Parsed when the model is built, so an unknown name fails early."""

from __future__ import annotations

from ir.ops.elementwise import ACTIVATIONS

from .errors import ConfigError

# Keras name -> (IR op, default attrs); None means the identity. An IR activation of the Keras
# name itself (ir/ops/elementwise.py ACTIVATIONS) needs no entry.
_OPS = {
    "linear": (None, {}),
    "relu": ("relu", {}),
    "relu6": ("relu6", {}),
    "selu": ("selu", {}),
    "sigmoid": ("sigmoid", {}),
    "hard_sigmoid": ("hard_sigmoid", {}),
    "tanh": ("tanh", {}),
    "exponential": ("exponential", {}),
    "softplus": ("softplus", {}),
    "softsign": ("softsign", {}),
    "swish": ("silu", {}),
    "silu": ("silu", {}),
    "hard_swish": ("hard_silu", {}),
    "elu": ("elu", {"alpha": 1.0}),
    "leaky_relu": ("leaky_relu", {"alpha": 0.2}),  # tf.nn.leaky_relu and Keras 3 both default to 0.2
    "gelu": ("gelu", {"approximate": False}),
    "softmax": ("softmax", {"axis": -1}),
}
_OPS = {**{name: (name, {}) for name in ACTIVATIONS if name != "linear"}, **_OPS}


def parse_activation(value, where: str) -> str:
    """The activation's name from a string or a Keras 3 serialized function {"config": "relu", ...}."""
    if value is None:
        return "linear"
    if isinstance(value, dict) and isinstance(value.get("config"), str):
        value = value["config"]
    if not isinstance(value, str):
        raise ConfigError(f"{where}: unsupported activation {value!r}")
    name = value.lower()
    if name not in _OPS:
        raise ConfigError(f"{where}: unsupported activation {value!r}; supported: {', '.join(sorted(_OPS))}")
    return name


def emit_activation(g, x: str, name: str, keras: int, layer: str) -> str:
    """Apply activation `name` to node x; tf.keras's hard_sigmoid is clip(0.2x+0.5), Keras 3's relu6(x+3)/6."""
    if name == "hard_sigmoid" and keras < 3:
        dtype = g.type(x).dtype
        y = g.add(g.mul(x, g.const(0.2, dtype)), g.const(0.5, dtype), name=f"{layer}_hard_sigmoid_in")
        return g.clip(y, lo=0.0, hi=1.0, name=f"{layer}_hard_sigmoid")
    op, attrs = _OPS[name]
    if op is None:
        return x
    return g.add_node(op, (x,), dict(attrs), name=f"{layer}_{op}")
