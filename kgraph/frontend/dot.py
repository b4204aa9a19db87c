"""Keras 2/3's Dot layer and Keras 1's Merge layer (its modes are today's merge layers and Dot).

Dot contracts each sample's vectors: for inputs of shape (None, n) the output is (None, 1), the
sum of x*y over the axis (cosine proximity with normalize=True, each vector divided by its L2 norm
first, as keras.ops.normalize does). Dot over inputs of rank 3 or more (a batched matrix product)
is refused: the IR has no batched GEMM yet."""
from __future__ import annotations

from .errors import ConfigError
from .layers import Concatenate, Merge, Rule, _where, shape_str

L2_EPSILON = 1e-12   # keras.ops.normalize's floor under the squared norm
KERAS1_EPSILON = 1e-7   # Keras 1's K.epsilon() under the cosine's denominator


def _axes(value, where) -> tuple:
    axes = (value, value) if isinstance(value, int) else tuple(value) if isinstance(value, (list, tuple)) else None
    if axes is None or len(axes) != 2 or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        raise ConfigError(f"{where}: axes must be an integer or a pair of integers, got {value!r}")
    return axes


def _dot_shape(layer, shapes, axes) -> tuple:
    where = _where(layer)
    if len(shapes) != 2:
        raise ConfigError(f"{where}: takes 2 inputs, got {len(shapes)}")
    a, b = shapes
    if len(a) != 2 or len(b) != 2:
        raise ConfigError(f"{where}: inputs {shape_str(a)} and {shape_str(b)}: only inputs of shape (None, n) are "
                          "supported (a Dot over rank-3 inputs is a batched matrix product, not supported yet)")
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
        _axes(layer.config.get("axes", -1), _where(layer))
        if not isinstance(layer.config.get("normalize", False), bool):
            raise ConfigError(f"{_where(layer)}: normalize must be true or false")

    def output_shape(self, layer, shapes):
        return _dot_shape(layer, shapes, _axes(layer.config.get("axes", -1), _where(layer)))

    def emit(self, ctx, layer, xs, shapes):
        g, (x, y) = ctx.g, xs
        if layer.config.get("normalize"):
            x, y = _l2_normalize(g, x, f"{layer.name}_x_normalized"), _l2_normalize(g, y, f"{layer.name}_y_normalized")
        return _sum_last(g, g.mul(x, y), name=layer.name)


# Keras 1's Merge modes that are a merge layer of today
_ELEMENTWISE = {"sum": Merge("add"), "mul": Merge("mul"), "ave": Merge("average"), "max": Merge("maximum")}


class LegacyMerge(Rule):
    """Keras 1's Merge(mode=...): sum, mul, ave, max, concat (concat_axis), dot (dot_axes) and cos,
    with Keras 1's formulas. A mode given as a Python function is refused (its bytecode is never run)."""
    inputs = None

    def _mode(self, layer):
        cfg, where = layer.config, _where(layer)
        mode = cfg.get("mode", "sum")
        if cfg.get("mode_type", "raw") != "raw" or not isinstance(mode, str):
            raise ConfigError(f"{where}: a mode given as a Python function is not supported (kgraph never runs "
                              "a saved function's bytecode); use a merge layer (Add, Concatenate, Dot, ...) instead")
        if mode not in (*_ELEMENTWISE, "concat", "dot", "cos"):
            raise ConfigError(f"{where}: unknown mode {mode!r}; Keras 1's modes are sum, mul, ave, max, concat, "
                              "dot and cos")
        return mode

    def check(self, layer, keras):
        mode = self._mode(layer)
        if mode in ("dot", "cos"):
            _axes(layer.config.get("dot_axes", -1), _where(layer))

    def _concat(self, layer):
        return _Renamed(layer, {"axis": layer.config.get("concat_axis", -1)})

    def output_shape(self, layer, shapes):
        mode = self._mode(layer)
        if mode in _ELEMENTWISE:
            return _ELEMENTWISE[mode].output_shape(layer, shapes)
        if mode == "concat":
            return Concatenate().output_shape(self._concat(layer), shapes)
        return _dot_shape(layer, shapes, _axes(layer.config.get("dot_axes", -1), _where(layer)))

    def emit(self, ctx, layer, xs, shapes):
        mode, g = self._mode(layer), ctx.g
        if mode in _ELEMENTWISE:
            return _ELEMENTWISE[mode].emit(ctx, layer, xs, shapes)
        if mode == "concat":
            return Concatenate().emit(ctx, self._concat(layer), xs, shapes)
        x, y = xs
        if mode == "dot":
            return _sum_last(g, g.mul(x, y), name=layer.name)
        # cos: x.y / max(sqrt((x.x) (y.y)), epsilon), as Keras 1 computed it
        dtype = g.type(x).dtype
        norms = g.sqrt(g.mul(_sum_last(g, g.square(x)), _sum_last(g, g.square(y))))
        return g.div(_sum_last(g, g.mul(x, y)), g.maximum(norms, g.const(KERAS1_EPSILON, dtype)), name=layer.name)


class _Renamed:
    """A layer seen with some config keys renamed (Keras 1's concat_axis is Concatenate's axis)."""

    def __init__(self, layer, config):
        self.name, self.class_name = layer.name, layer.class_name
        self.config = {**layer.config, **config}


DOT_RULES = {"Dot": Dot(), "Merge": LegacyMerge()}
