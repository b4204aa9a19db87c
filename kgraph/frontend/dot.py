"""Keras 2/3's Dot layer (Keras 1's Merge modes dot and cos become one: kgraph/frontend/keras1.py).

Dot contracts each sample's vectors: for inputs of shape (None, n) the output is (None, 1), the
sum of x*y over the axis (cosine proximity with normalize=True, each vector divided by its L2 norm
first, as keras.ops.normalize does). Dot over inputs of rank 3 or more (a batched matrix product)
is refused: the IR has no batched GEMM yet."""

from __future__ import annotations

from .errors import ConfigError
from .rule import Rule, shape_str, where_of

L2_EPSILON = 1e-12  # keras.ops.normalize's floor under the squared norm


def _axes(value, where) -> tuple:
    axes = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (list, tuple)) else None
    if axes is None or len(axes) != 2 or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        raise ConfigError(f"{where}: axes must be an integer or a pair of integers, got {value!r}")
    return axes


def _dot_shape(layer, shapes, axes) -> tuple:
    where = where_of(layer)
    if len(shapes) != 2:
        raise ConfigError(f"{where}: takes 2 inputs, got {len(shapes)}")
    a, b = shapes
    if len(a) != 2 or len(b) != 2:
        raise ConfigError(
            f"{where}: inputs {shape_str(a)} and {shape_str(b)}: only inputs of shape (None, n) are "
            "supported (a Dot over rank-3 inputs is a batched matrix product, not supported yet)"
        )
    if any(ax % 2 != 1 for ax in axes):
        raise ConfigError(f"{where}: axes {list(axes)} would contract the batch axis")
    if a[1] != b[1]:
        raise ConfigError(f"{where}: cannot take the dot product of {shape_str(a)} and {shape_str(b)}")
    return (None, 1)


def _sum_last(g, x, name=None):
    return g.reduce_sum(x, axes=(1,), keepdims=True, name=name)


def _l2_normalize(g, x, name):
    dtype = g.type(x).dtype
    norm = g.sqrt(g.maximum(_sum_last(g, g.square(x)), g.const(L2_EPSILON, dtype)))
    return g.div(x, norm, name=name)


class Dot(Rule):
    inputs = 2

    def check(self, layer, keras):
        _axes(layer.config.get("axes", -1), where_of(layer))
        if not isinstance(layer.config.get("normalize", False), bool):
            raise ConfigError(f"{where_of(layer)}: normalize must be true or false")

    def output_shape(self, layer, shapes):
        return _dot_shape(layer, shapes, _axes(layer.config.get("axes", -1), where_of(layer)))

    def emit(self, ctx, layer, xs, shapes):
        g, (x, y) = ctx.g, xs
        if layer.config.get("normalize"):
            x, y = _l2_normalize(g, x, f"{layer.name}_x_normalized"), _l2_normalize(g, y, f"{layer.name}_y_normalized")
        return _sum_last(g, g.mul(x, y), name=layer.name)


DOT_RULES = {"Dot": Dot()}
