"""keras.ops reductions beyond ops.py's mean, sum, max and min, written in those IR reductions and
elementwise ops with the formulas of Keras's TensorFlow backend: var and std
(tf.math.reduce_variance), logsumexp, norm (vector norms, and the Frobenius norm over two axes),
normalize, average. Like ops.py's, they reduce non-batch axes only."""

from __future__ import annotations

import math

from .errors import ConfigError
from .ops import Reduce, _args, _axis, _is_tensor, _not_equal
from .rule import rsqrt, where_of


class _Reduction(Reduce):
    """A reduction over `axis` (keepdims or not) that emit_over writes in IR ops."""

    def __init__(self):
        super().__init__("reduce_sum")

    def emit(self, ctx, layer, xs, shapes):
        axes, keep = self._axes(layer, shapes[0]), bool(layer.config.get("keepdims"))
        return self.emit_over(ctx.g, xs[0], axes, keep, layer)


class Variance(_Reduction):
    """var: the mean squared deviation from the mean; std (root=True) its square root."""

    def __init__(self, root: bool):
        super().__init__()
        self.root = root

    def emit_over(self, g, x, axes, keep, layer):
        deviation = g.sub(x, g.reduce_mean(x, axes=axes, keepdims=True), name=f"{layer.name}_deviation")
        var = g.reduce_mean(g.square(deviation), axes=axes, keepdims=keep, name=None if self.root else layer.name)
        return g.sqrt(var, name=layer.name) if self.root else var


class LogSumExp(_Reduction):
    """logsumexp: max + log(sum(exp(x - max))), the max taken out so that exp cannot overflow."""

    def emit_over(self, g, x, axes, keep, layer):
        largest = g.reduce_max(x, axes=axes, keepdims=True, name=f"{layer.name}_max")
        total = g.log(g.reduce_sum(g.exp(g.sub(x, largest)), axes=axes, keepdims=keep))
        if not keep:
            largest = g.reshape(largest, shape=g.type(total).shape)
        return g.add(total, largest, name=layer.name)


def _norm(g, x, order, axes, keep, name):
    """The vector norm of `order` over axes: 2 (or None) sqrt(sum(x^2)), 1 sum(|x|), inf max(|x|),
    -inf min(|x|), 0 the count of non-zero entries."""
    if order in (None, 2, "fro", "euclidean"):  # "euclidean": tf.norm's default
        return g.sqrt(g.reduce_sum(g.square(x), axes=axes, keepdims=keep), name=name)
    if order == 1:
        return g.reduce_sum(g.abs(x), axes=axes, keepdims=keep, name=name)
    if order == math.inf:
        return g.reduce_max(g.abs(x), axes=axes, keepdims=keep, name=name)
    if order == -math.inf:
        return g.neg(g.reduce_max(g.neg(g.abs(x)), axes=axes, keepdims=keep), name=name)
    zero = g.const(0.0, g.type(x).dtype)
    return g.reduce_sum(_not_equal(g, x, zero), axes=axes, keepdims=keep, name=name)


class Norm(_Reduction):
    """norm(x, ord, axis): over one axis ord None, 2, 1, inf, -inf or 0; over two the Frobenius
    norm (ord None or "fro"). Another ord is refused by name."""

    VECTOR = (None, 2, 1, math.inf, -math.inf, 0)

    def _axes(self, layer, shape):
        axes = super()._axes(layer, shape)
        order = layer.config.get("ord")
        if order == "euclidean":  # tf.norm's: the 2-norm of a vector, Frobenius over two axes
            order = None
        if not (len(axes) == 1 and order in self.VECTOR or len(axes) == 2 and order in (None, "fro")):
            raise ConfigError(
                f"{where_of(layer)}: ord={order!r} over {len(axes)} axes is not supported (over one axis "
                "ord None, 2, 1, inf, -inf or 0; over two the Frobenius norm, ord None or 'fro')"
            )
        return axes

    def emit_over(self, g, x, axes, keep, layer):
        return _norm(g, x, layer.config.get("ord"), axes, keep, layer.name)


class Normalize(_Reduction):
    """normalize(x, axis, order, epsilon): order 2 is x * min(rsqrt(sum(x^2)), 1/epsilon), as
    Keras writes it; order 1 x / max(sum(|x|), epsilon). Keras's epsilon defaults to 1e-7."""

    def _axes(self, layer, shape):
        order = layer.config.get("order", 2)
        if order not in (1, 2) or isinstance(order, bool):
            raise ConfigError(f"{where_of(layer)}: order={order!r} is not supported (1 or 2)")
        return (_axis(layer, layer.config.get("axis", -1), len(shape)),)

    def output_shape(self, layer, shapes):
        self._axes(layer, shapes[0])
        return shapes[0]

    def emit(self, ctx, layer, xs, shapes):
        g, x, axes = ctx.g, xs[0], self._axes(layer, shapes[0])
        dtype = g.type(x).dtype
        epsilon = layer.config.get("epsilon")
        epsilon = 1e-7 if epsilon is None else float(epsilon)
        if layer.config.get("order", 2) == 2:
            inverse = rsqrt(g, g.reduce_sum(g.square(x), axes=axes, keepdims=True))
            return g.mul(x, g.minimum(inverse, g.const(1.0 / epsilon, dtype)), name=layer.name)
        norm = g.reduce_sum(g.abs(x), axes=axes, keepdims=True)
        return g.div(x, g.maximum(norm, g.const(epsilon, dtype)), name=layer.name)


class Average(Reduce):
    """average(x, axis) without weights: the mean (model.py refuses the weights keyword; a
    positional weights tensor is refused here)."""

    def __init__(self):
        super().__init__("reduce_mean")

    def check(self, layer, keras):
        args = _args(layer)
        if len(args) > 1 and args[1] is not None:
            kind = "a tensor" if _is_tensor(args[1]) else str(args[1])[:40]
            raise ConfigError(f"{where_of(layer)}: weights ({kind}) are not supported, only the plain mean")


REDUCE_OPS = {
    "op:Var": Variance(root=False),
    "op:Std": Variance(root=True),
    "op:Logsumexp": LogSumExp(),
    "op:Norm": Norm(),
    "op:Normalize": Normalize(),
    "op:Average": Average(),
}
