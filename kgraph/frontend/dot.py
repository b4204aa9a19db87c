"""Keras 2/3's Dot layer (Keras 1's Merge modes dot and cos become one: kgraph/frontend/keras1.py).

Dot contracts each sample's tensors over one axis each: for inputs of shape (None, n) the output
is (None, 1), the sum of x*y over the axis; for inputs of shape (None, m, k) it is a matrix product
per sample (batch_matmul), the output holding x's other axis then y's, as Keras's batch_dot. With
normalize=True each input is first divided by its L2 norm along its contracted axis (cosine
proximity), as keras.ops.normalize does. Other ranks, and inputs of different ranks, are refused."""

from __future__ import annotations

from .errors import ConfigError
from .rule import Rule, shape_str, where_of

L2_EPSILON = 1e-12  # keras.ops.normalize's floor under the squared norm


def _axes(value, where) -> tuple:
    axes = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (list, tuple)) else None
    if axes is None or len(axes) != 2 or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        raise ConfigError(f"{where}: axes must be an integer or a pair of integers, got {value!r}")
    return axes


def _contracted(layer, shapes, axes) -> tuple:
    """The axis of each input that the product contracts, counted from 0 (the batch)."""
    where = where_of(layer)
    if len(shapes) != 2:
        raise ConfigError(f"{where}: takes 2 inputs, got {len(shapes)}")
    a, b = shapes
    if len(a) != len(b) or len(a) not in (2, 3):
        raise ConfigError(
            f"{where}: inputs {shape_str(a)} and {shape_str(b)}: kgraph supports two inputs of shape "
            "(None, n) or two of shape (None, m, n)"
        )
    axes = tuple(ax % len(a) if -len(a) <= ax < len(a) else None for ax in axes)
    if None in axes or 0 in axes:
        raise ConfigError(f"{where}: axes {list(axes)} would contract the batch axis or are out of range")
    if a[axes[0]] != b[axes[1]]:
        raise ConfigError(
            f"{where}: cannot take the dot product of {shape_str(a)} and {shape_str(b)} over axes {list(axes)}"
        )
    return axes


def _dot_shape(layer, shapes, axes) -> tuple:
    ax, bx = _contracted(layer, shapes, axes)
    a, b = shapes
    if len(a) == 2:
        return (None, 1)
    return (None, a[3 - ax], b[3 - bx])  # the other axis of each


def _l2_normalize(g, x, axis, name):
    dtype = g.type(x).dtype
    squares = g.reduce_sum(g.square(x), axes=(axis,), keepdims=True)
    norm = g.sqrt(g.maximum(squares, g.const(L2_EPSILON, dtype)))
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
        ax, bx = _contracted(layer, shapes, _axes(layer.config.get("axes", -1), where_of(layer)))
        if layer.config.get("normalize"):
            x = _l2_normalize(g, x, ax, f"{layer.name}_x_normalized")
            y = _l2_normalize(g, y, bx, f"{layer.name}_y_normalized")
        if len(shapes[0]) == 2:
            return g.reduce_sum(g.mul(x, y), axes=(1,), keepdims=True, name=layer.name)
        # (None, m, k) x (None, k, n): x's rows are its other axis, y's columns its other axis
        return g.batch_matmul(x, y, transpose_a=ax == 1, transpose_b=bx == 2, name=layer.name)


DOT_RULES = {"Dot": Dot()}
