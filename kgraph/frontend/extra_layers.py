"""Rules of the activation layers (LeakyReLU, ReLU, PReLU, ELU, Softmax, ThresholdedReLU) and the
noise and regularization layers (SpatialDropout1D/2D, GaussianNoise, GaussianDropout, AlphaDropout,
ActivityRegularization, Masking), all built from existing IR ops. Noise layers are the identity at
inference, as in Keras; in training they read 'rng' sources the runtime fills before each step
(dropout keep masks, or standard normal draws)."""

from __future__ import annotations

import math

import numpy as np

from ir import BATCH

from .errors import ConfigError
from .initializers import parse_initializer
from .layers import Dropout
from .constraints import parse_constraint
from .regularizers import parse_regularizer
from .rule import Rule, WeightDecl, ir_shape, non_batch_axes, rsqrt, shape_str, where_of

SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946


def _number(layer, key, default, low=None, below=None):
    """A numeric config entry, checked against [low, below)."""
    value = layer.config.get(key, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (low is not None and value < low)
        or (below is not None and value >= below)
    ):
        bounds = f" in [{low}, {below})" if below is not None else (f" >= {low}" if low is not None else "")
        raise ConfigError(f"{where_of(layer)}: {key} must be a number{bounds}, got {value!r}")
    return float(value)


def _refuse(layer, key, value, why):
    if layer.config.get(key, value) != value:
        raise ConfigError(f"{where_of(layer)}: {key}={layer.config[key]!r} is not supported ({why})")


def _c(g, x, value):
    """A scalar constant of x's dtype."""
    return g.const(value, g.type(x).dtype)


# ---------------------------------------------------------------- activation layers


class LeakyReLU(Rule):
    """Keras 3 names the slope negative_slope, Keras 2 alpha; both default to 0.3."""

    def _slope(self, layer):
        key = "negative_slope" if "negative_slope" in layer.config else "alpha"
        return _number(layer, key, 0.3, low=0)  # the gradient reads the output's sign

    def check(self, layer, keras):
        self._slope(layer)

    def emit(self, ctx, layer, xs, shapes):
        return ctx.g.leaky_relu(xs[0], alpha=self._slope(layer), name=layer.name)


class ReLU(Rule):
    """keras.activations.relu(x, negative_slope, max_value, threshold), written as Keras writes it."""

    def check(self, layer, keras):
        _number(layer, "negative_slope", 0.0, low=0)
        _number(layer, "threshold", 0.0, low=0)
        if layer.config.get("max_value") is not None:
            _number(layer, "max_value", None, low=0)

    def emit(self, ctx, layer, xs, shapes):
        g, x, cfg = ctx.g, xs[0], layer.config
        slope, threshold = float(cfg.get("negative_slope") or 0), float(cfg.get("threshold") or 0)
        max_value = cfg.get("max_value")
        if slope and max_value is None and not threshold:
            return g.leaky_relu(x, alpha=slope, name=layer.name)
        clip = max_value is not None
        if threshold:  # x where x > threshold, else 0
            y = g.where(g.greater(x, _c(g, x, threshold)), x, _c(g, x, 0.0), name=f"{layer.name}_threshold")
        elif max_value == 6:
            y, clip = g.relu6(x, name=f"{layer.name}_relu6"), False
        else:
            y = g.relu(x, name=f"{layer.name}_relu")
        if clip:
            y = g.clip(y, lo=0.0, hi=float(max_value), name=f"{layer.name}_clip")
        if slope:
            below = g.sub(_c(g, x, threshold), x) if threshold else g.neg(x)
            y = g.sub(y, g.mul(g.relu(below), _c(g, x, slope)), name=layer.name)
        return y


class PReLU(Rule):
    """relu(x) + alpha * min(x, 0), alpha a weight over the input's shape with shared_axes set to 1."""

    def _shape(self, layer, shape):
        shared = layer.config.get("shared_axes")
        shared = [] if shared is None else [shared] if isinstance(shared, int) else list(shared)
        out = list(shape[1:])
        for axis in shared:
            if not isinstance(axis, int) or not 1 <= axis < len(shape):
                raise ConfigError(
                    f"{where_of(layer)}: shared_axes {shared} must be axes 1..{len(shape) - 1} "
                    f"of input {shape_str(shape)}"
                )
            out[axis - 1] = 1
        return tuple(out)

    def check(self, layer, keras):
        parse_initializer(layer.config.get("alpha_initializer", "zeros"), where_of(layer))
        parse_regularizer(layer.config.get("alpha_regularizer"), where_of(layer))

    def weights(self, layer, shapes):
        cfg, where = layer.config, where_of(layer)
        shape = self._shape(layer, shapes[0])
        return [
            WeightDecl(
                "alpha",
                shape,
                parse_initializer(cfg.get("alpha_initializer", "zeros"), where),
                parse_regularizer(cfg.get("alpha_regularizer"), where),
                constraint=parse_constraint(cfg.get("alpha_constraint"), where, shape),
            )
        ]

    def emit(self, ctx, layer, xs, shapes):
        g, x = ctx.g, xs[0]
        negative = g.mul(ctx.params["alpha"], g.minimum(x, _c(g, x, 0.0)), name=f"{layer.name}_negative")
        return g.add(g.relu(x, name=f"{layer.name}_positive"), negative, name=layer.name)


class ELU(Rule):
    def check(self, layer, keras):
        _number(layer, "alpha", 1.0, low=0)  # the gradient reads the output's sign

    def emit(self, ctx, layer, xs, shapes):
        return ctx.g.elu(xs[0], alpha=_number(layer, "alpha", 1.0), name=layer.name)


class ThresholdedReLU(Rule):
    """Keras 2's x * (x > theta)."""

    def check(self, layer, keras):
        _number(layer, "theta", 1.0, low=0)

    def emit(self, ctx, layer, xs, shapes):
        g, x = ctx.g, xs[0]
        return g.where(g.greater(x, _c(g, x, _number(layer, "theta", 1.0))), x, _c(g, x, 0.0), name=layer.name)


class Softmax(Rule):
    """Over one axis or several (Keras 3's tuple axis): those axes move last and merge into one."""

    def _axes(self, layer, shape):
        return list(non_batch_axes(layer, shape))

    def output_shape(self, layer, shapes):
        self._axes(layer, shapes[0])
        return shapes[0]

    def emit(self, ctx, layer, xs, shapes):
        g, x, shape = ctx.g, xs[0], shapes[0]
        axes, rank = self._axes(layer, shape), len(shape)
        if axes == [rank - 1]:
            return g.softmax(x, axis=-1, name=layer.name)
        perm = [a for a in range(rank) if a not in axes] + axes
        moved = tuple(shape[a] for a in perm)
        t = g.transpose(x, perm=tuple(perm), name=f"{layer.name}_moved")
        merged = ir_shape((*moved[: rank - len(axes)], math.prod(moved[rank - len(axes) :])))
        y = g.softmax(g.reshape(t, shape=merged), axis=-1, name=f"{layer.name}_softmax")
        y = g.reshape(y, shape=ir_shape(moved))
        return g.transpose(y, perm=tuple(int(i) for i in np.argsort(perm)), name=layer.name)


# ---------------------------------------------------------------- noise and regularization


class SpatialDropout(Dropout):
    """Dropout with one mask entry per sample and channel (Keras's noise_shape (B, 1[, 1], C))."""

    def __init__(self, rank: int):
        self.rank = rank

    def _mask_shape(self, layer, shape):
        if len(shape) != self.rank + 2:
            raise ConfigError(f"{where_of(layer)}: takes rank-{self.rank + 2} inputs, got {shape_str(shape)}")
        if layer.config.get("data_format") == "channels_first":
            return (BATCH, shape[1], *(1,) * self.rank)
        return (BATCH, *(1,) * self.rank, shape[-1])


def _normal(ctx, layer, x, shape):
    """Standard normal draws of x's shape, new every training step."""
    return ctx.g.source(
        "rng",
        f"{layer.name}_noise",
        ctx.g.type(x).with_shape(ir_shape(shape)),
        rate=0.0,
        dist="normal",
        layer=layer.name,
    )


class GaussianNoise(Rule):
    def check(self, layer, keras):
        _number(layer, "stddev", None, low=0)

    def emit(self, ctx, layer, xs, shapes):
        g, x, stddev = ctx.g, xs[0], _number(layer, "stddev", None)
        if not ctx.training or stddev == 0:
            return x
        return g.add(x, g.mul(_normal(ctx, layer, x, shapes[0]), _c(g, x, stddev)), name=layer.name)


class GaussianDropout(Rule):
    """x * N(1, rate / (1 - rate))."""

    def check(self, layer, keras):
        _number(layer, "rate", None, low=0, below=1)

    def emit(self, ctx, layer, xs, shapes):
        g, x, rate = ctx.g, xs[0], _number(layer, "rate", None)
        if not ctx.training or rate == 0:
            return x
        noise = g.add(
            g.mul(_normal(ctx, layer, x, shapes[0]), _c(g, x, math.sqrt(rate / (1.0 - rate)))),
            _c(g, x, 1.0),
            name=f"{layer.name}_factor",
        )
        return g.mul(x, noise, name=layer.name)


class AlphaDropout(Dropout):
    """Dropped entries go to SELU's negative saturation, then an affine map keeps mean and variance."""

    def emit(self, ctx, layer, xs, shapes):
        g, x, rate = ctx.g, xs[0], float(layer.config.get("rate", 0.0))
        if not ctx.training or rate == 0:
            return x
        mask = g.source(
            "rng",
            f"{layer.name}_mask",
            g.type(x).with_shape(self._mask_shape(layer, shapes[0])),
            rate=rate,
            layer=layer.name,
        )
        kept = g.greater(mask, _c(g, x, 0.0), name=f"{layer.name}_kept")  # 0 or 1
        alpha_p = -SELU_ALPHA * SELU_SCALE
        a = ((1 - rate) * (1 + rate * alpha_p**2)) ** -0.5
        b = -a * alpha_p * rate
        y = g.add(g.mul(x, kept), g.mul(g.sub(_c(g, x, 1.0), kept), _c(g, x, alpha_p)))
        return g.add(g.mul(y, _c(g, x, a)), _c(g, x, b), name=layer.name)


class ActivityRegularization(Rule):
    """The identity; the loss adds (l1 * sum|y| + l2 * sum y^2) / batch, as an activity_regularizer."""

    def check(self, layer, keras):
        _number(layer, "l1", 0.0, low=0)
        _number(layer, "l2", 0.0, low=0)

    def activity(self, layer) -> dict:
        return {"l1": _number(layer, "l1", 0.0), "l2": _number(layer, "l2", 0.0)}


class Masking(Rule):
    """Keras's output: x where any entry of its last axis differs from mask_value, else 0. On a
    sequence, the mask goes on to the recurrent layers (frontend/recurrent.py)."""

    def check(self, layer, keras):
        _number(layer, "mask_value", 0.0)

    def emit(self, ctx, layer, xs, shapes):
        g, x = ctx.g, xs[0]
        differs = g.sub(_c(g, x, 1.0), g.equal(x, _c(g, x, _number(layer, "mask_value", 0.0))))
        keep = g.reduce_max(differs, axes=(len(shapes[0]) - 1,), keepdims=True, name=f"{layer.name}_mask")
        y = g.where(keep, x, _c(g, x, 0.0), name=layer.name)  # where: no gradient into the mask
        if len(shapes[0]) == 3:
            ctx.masks[y] = g.reshape(keep, shape=(BATCH, shapes[0][1]), name=f"{layer.name}_steps")
        return y


class LayerScale(Rule):
    """keras.applications ConvNeXt's LayerScale: x times a weight over the last axis (projection_dim
    entries), which starts at init_values."""

    def output_shape(self, layer, shapes):
        dim = layer.config.get("projection_dim")
        if shapes[0][-1] != dim:
            raise ConfigError(
                f"{where_of(layer)}: projection_dim {dim!r} is not the last axis of {shape_str(shapes[0])}"
            )
        return shapes[0]

    def weights(self, layer, shapes):
        value = layer.config.get("init_values")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where_of(layer)}: init_values must be a number, got {value!r}")
        # Keras adds the weight unnamed: "variable"
        return [WeightDecl("variable", (shapes[0][-1],), ("Constant", {"value": float(value)}), None)]

    def emit(self, ctx, layer, xs, shapes):
        return ctx.g.mul(xs[0], ctx.params["variable"], name=layer.name)


class RMSNormalization(Rule):
    """Keras 3's RMSNormalization: x * rsqrt(mean(x^2) + epsilon) over `axis` (epsilon 1e-6 unless
    given, the layer's default), times a scale weight (ones at first) over those axes."""

    def output_shape(self, layer, shapes):
        non_batch_axes(layer, shapes[0])
        return shapes[0]

    def weights(self, layer, shapes):
        shape = tuple(shapes[0][a] for a in non_batch_axes(layer, shapes[0]))
        return [WeightDecl("scale", shape, ("Ones", {}), None)]

    def emit(self, ctx, layer, xs, shapes):
        g, x, axes = ctx.g, xs[0], non_batch_axes(layer, shapes[0])
        rank, epsilon = len(shapes[0]), layer.config.get("epsilon")
        mean_square = g.reduce_mean(g.square(x), axes=axes, keepdims=True)
        inverse = rsqrt(g, mean_square, 1e-6 if epsilon is None else epsilon)
        scale = ctx.params["scale"]
        if axes != (rank - 1,):
            scale = g.reshape(scale, shape=tuple(shapes[0][i] if i in axes else 1 for i in range(rank)))
        return g.mul(g.mul(x, inverse), scale, name=layer.name)


EXTRA = {
    "LeakyReLU": LeakyReLU(),
    "ReLU": ReLU(),
    "PReLU": PReLU(),
    "ELU": ELU(),
    "Softmax": Softmax(),
    "ThresholdedReLU": ThresholdedReLU(),
    "SpatialDropout1D": SpatialDropout(1),
    "SpatialDropout2D": SpatialDropout(2),
    "GaussianNoise": GaussianNoise(),
    "GaussianDropout": GaussianDropout(),
    "AlphaDropout": AlphaDropout(),
    "ActivityRegularization": ActivityRegularization(),
    "Masking": Masking(),
    "LayerScale": LayerScale(),
    "RMSNormalization": RMSNormalization(),
}
