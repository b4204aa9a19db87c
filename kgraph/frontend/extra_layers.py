"""Rules of the activation layers (LeakyReLU, ReLU, PReLU, ELU, Softmax, ThresholdedReLU), the
noise and regularization layers (SpatialDropout1D/2D, GaussianNoise, GaussianDropout, AlphaDropout,
ActivityRegularization, Masking) and the preprocessing layers saved inside models (Rescaling,
Normalization, Resizing, CenterCrop). All are built from existing IR ops; fixed per-channel values
and interpolation matrices are 'constant' nodes. Noise layers are the identity at inference, as
in Keras; in training they read 'rng' sources the runtime fills before each step."""
from __future__ import annotations

import math

import numpy as np

from ir import BATCH

from .errors import ConfigError
from .initializers import parse_initializer
from .layers import Dropout, Rule, WeightDecl, _where, ir_shape, shape_str
from .regularizers import parse_regularizer

SELU_ALPHA, SELU_SCALE = 1.6732632423543772848170429916717, 1.0507009873554804934193349852946
EPSILON = 1e-7  # keras.backend.epsilon(): Normalization's floor on the standard deviation


def _number(layer, key, default, low=None, below=None):
    """A numeric config entry, checked against [low, below)."""
    value = layer.config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (low is not None and value < low) or (below is not None and value >= below):
        bounds = f" in [{low}, {below})" if below is not None else (f" >= {low}" if low is not None else "")
        raise ConfigError(f"{_where(layer)}: {key} must be a number{bounds}, got {value!r}")
    return float(value)


def _refuse(layer, key, value, why):
    if layer.config.get(key, value) != value:
        raise ConfigError(f"{_where(layer)}: {key}={layer.config[key]!r} is not supported ({why})")


def _c(g, x, value):
    """A scalar constant of x's dtype."""
    return g.const(value, g.type(x).dtype)


def _array(g, x, values, name):
    """A fixed tensor of x's dtype: a scalar 'const', or a 'constant' node."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0:
        return _c(g, x, float(values))
    return g.constant(values=tuple(values.ravel().tolist()), shape=values.shape, dtype=g.type(x).dtype, name=name)


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
                raise ConfigError(f"{_where(layer)}: shared_axes {shared} must be axes 1..{len(shape) - 1} "
                                  f"of input {shape_str(shape)}")
            out[axis - 1] = 1
        return tuple(out)

    def check(self, layer, keras):
        _refuse(layer, "alpha_constraint", None, "kgraph has no weight constraints")
        parse_initializer(layer.config.get("alpha_initializer", "zeros"), _where(layer))
        parse_regularizer(layer.config.get("alpha_regularizer"), _where(layer))

    def weights(self, layer, shapes):
        cfg, where = layer.config, _where(layer)
        return [WeightDecl("alpha", self._shape(layer, shapes[0]),
                           parse_initializer(cfg.get("alpha_initializer", "zeros"), where),
                           parse_regularizer(cfg.get("alpha_regularizer"), where))]

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
        axis = layer.config.get("axis", -1)
        axes = [axis] if isinstance(axis, int) else list(axis) if isinstance(axis, (list, tuple)) else None
        rank = len(shape)
        if not axes or any(not isinstance(a, int) or not -rank <= a < rank or a % rank == 0 for a in axes):
            raise ConfigError(f"{_where(layer)}: axis {axis!r} is not a non-batch axis of input {shape_str(shape)}")
        return sorted({a % rank for a in axes})

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
        merged = ir_shape((*moved[:rank - len(axes)], math.prod(moved[rank - len(axes):])))
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
            raise ConfigError(f"{_where(layer)}: takes rank-{self.rank + 2} inputs, got {shape_str(shape)}")
        if layer.config.get("data_format") == "channels_first":
            return (BATCH, shape[1], *(1,) * self.rank)
        return (BATCH, *(1,) * self.rank, shape[-1])


def _normal(ctx, layer, x, shape):
    """Standard normal draws of x's shape, new every training step."""
    return ctx.g.source("rng", f"{layer.name}_noise", ctx.g.type(x).with_shape(ir_shape(shape)),
                        rate=0.0, dist="normal", layer=layer.name)


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
        noise = g.add(g.mul(_normal(ctx, layer, x, shapes[0]), _c(g, x, math.sqrt(rate / (1.0 - rate)))),
                      _c(g, x, 1.0), name=f"{layer.name}_factor")
        return g.mul(x, noise, name=layer.name)


class AlphaDropout(Dropout):
    """Dropped entries go to SELU's negative saturation, then an affine map keeps mean and variance."""

    def emit(self, ctx, layer, xs, shapes):
        g, x, rate = ctx.g, xs[0], float(layer.config.get("rate", 0.0))
        if not ctx.training or rate == 0:
            return x
        mask = g.source("rng", f"{layer.name}_mask", g.type(x).with_shape(self._mask_shape(layer, shapes[0])),
                        rate=rate, layer=layer.name)
        kept = g.greater(mask, _c(g, x, 0.0), name=f"{layer.name}_kept")  # 0 or 1
        alpha_p = -SELU_ALPHA * SELU_SCALE
        a = ((1 - rate) * (1 + rate * alpha_p ** 2)) ** -0.5
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
    """Keras's output: x where any entry of its last axis differs from mask_value, else 0. kgraph
    has no masks: later layers (RNNs, attention, losses) do not receive one."""

    def check(self, layer, keras):
        _number(layer, "mask_value", 0.0)

    def emit(self, ctx, layer, xs, shapes):
        g, x = ctx.g, xs[0]
        differs = g.sub(_c(g, x, 1.0), g.equal(x, _c(g, x, _number(layer, "mask_value", 0.0))))
        keep = g.reduce_max(differs, axes=(len(shapes[0]) - 1,), keepdims=True, name=f"{layer.name}_mask")
        return g.where(keep, x, _c(g, x, 0.0), name=layer.name)  # where: no gradient into the mask


# ---------------------------------------------------------------- preprocessing


def _values(layer, key, default):
    """A number, a list, or Keras 3's serialized NumPy array ({"class_name": "__numpy__", ...})."""
    value = layer.config.get(key, default)
    if isinstance(value, dict) and value.get("class_name") == "__numpy__":
        value = (value.get("config") or {}).get("value")
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        array = None
    if value is None or array is None or not np.all(np.isfinite(array)):
        raise ConfigError(f"{_where(layer)}: {key} must be a number or a list of numbers, got {value!r}")
    return array


class Rescaling(Rule):
    """x * scale + offset; list values broadcast against the input as NumPy does (channels last)."""

    def output_shape(self, layer, shapes):
        shape = shapes[0]
        for key, default in (("scale", 1.0), ("offset", 0.0)):
            v = _values(layer, key, default)
            try:
                if np.broadcast_shapes(v.shape, shape[1:]) != tuple(shape[1:]) or v.ndim >= len(shape):
                    raise ValueError
            except ValueError:
                raise ConfigError(f"{_where(layer)}: {key} of shape {v.shape} does not broadcast against "
                                  f"input {shape_str(shape)}") from None
        return shape

    def emit(self, ctx, layer, xs, shapes):
        g, x = ctx.g, xs[0]
        scale, offset = _values(layer, "scale", 1.0), _values(layer, "offset", 0.0)
        y = g.mul(x, _array(g, x, scale, f"{layer.name}_scale"), name=f"{layer.name}_scaled")
        if offset.ndim == 0 and offset == 0:
            return y
        return g.add(y, _array(g, x, offset, f"{layer.name}_offset"), name=layer.name)


class Normalization(Rule):
    """(x - mean) / max(sqrt(variance), 1e-7), or its inverse; mean and variance from the config, or
    adapted ones kept as non-trainable weights mean, variance and count (Keras's get_weights order)."""

    def _keep(self, layer, shape):
        axis = layer.config.get("axis", -1)
        axes = [] if axis is None else [axis] if isinstance(axis, int) else list(axis)
        rank = len(shape)
        if any(not isinstance(a, int) or not -rank <= a < rank or a % rank == 0 for a in axes):
            raise ConfigError(f"{_where(layer)}: axis {axis!r} is not a list of non-batch axes of "
                              f"input {shape_str(shape)}")
        return sorted({a % rank for a in axes})

    def _broadcast(self, layer, shape):
        """The non-batch shape mean and variance broadcast to: 1 on every reduced axis."""
        keep = self._keep(layer, shape)
        return tuple(shape[d] if d in keep else 1 for d in range(1, len(shape)))

    def _given(self, layer, shape):
        """(mean, variance) from the config, broadcast as Keras does (mapped onto the kept axes from
        the right), or None when the layer holds adapted weights."""
        cfg = layer.config
        if cfg.get("mean") is None and cfg.get("variance") is None:
            return None
        if cfg.get("mean") is None or cfg.get("variance") is None:
            raise ConfigError(f"{_where(layer)}: mean and variance must be given together")
        keep, target = self._keep(layer, shape), (1, *self._broadcast(layer, shape))
        out = []
        for key in ("mean", "variance"):
            v = _values(layer, key, None)
            if v.ndim:
                if v.ndim > len(keep):
                    raise ConfigError(f"{_where(layer)}: {key} of shape {v.shape} does not fit the axes {keep}")
                expanded = [1] * len(shape)
                for i in range(1, v.ndim + 1):
                    expanded[keep[-i]] = v.shape[-i]
                v = v.reshape(expanded)
            try:
                out.append(np.broadcast_to(v, target)[0])
            except ValueError:
                raise ConfigError(f"{_where(layer)}: {key} of shape {v.shape} does not broadcast against "
                                  f"input {shape_str(shape)} over axis {cfg.get('axis', -1)!r}") from None
        return out

    def output_shape(self, layer, shapes):
        self._given(layer, shapes[0])
        return shapes[0]

    def weights(self, layer, shapes):
        if self._given(layer, shapes[0]) is not None:
            return []
        keep = self._keep(layer, shapes[0])
        stat = tuple(shapes[0][d] for d in keep)
        return [WeightDecl("mean", stat, ("Zeros", {}), None, False),
                WeightDecl("variance", stat, ("Ones", {}), None, False),
                WeightDecl("count", (), ("Zeros", {}), None, False)]  # Keras keeps it; nothing reads it

    def emit(self, ctx, layer, xs, shapes):
        g, x, shape = ctx.g, xs[0], shapes[0]
        given = self._given(layer, shape)
        if given is not None:
            mean = given[0].astype(g.type(x).dtype)
            std = np.maximum(np.sqrt(given[1].astype(g.type(x).dtype)), EPSILON)
            mean, std = _array(g, x, mean, f"{layer.name}_mean"), _array(g, x, std, f"{layer.name}_std")
        else:
            broadcast = self._broadcast(layer, shape)
            mean, var = ctx.params["mean"], ctx.params["variance"]
            if g.type(mean).shape != broadcast:
                mean, var = g.reshape(mean, shape=broadcast), g.reshape(var, shape=broadcast)
            std = g.maximum(g.sqrt(var), _c(g, x, EPSILON), name=f"{layer.name}_std")
        if layer.config.get("invert"):
            return g.add(mean, g.mul(x, std), name=layer.name)
        return g.div(g.sub(x, mean), std, name=layer.name)


def _spatial_axes(layer, shape):
    if len(shape) != 4:
        raise ConfigError(f"{_where(layer)}: takes rank-4 image batches, got {shape_str(shape)}")
    return (2, 3) if layer.config.get("data_format") == "channels_first" else (1, 2)


def _target(layer):
    for key in ("height", "width"):
        v = layer.config.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(f"{_where(layer)}: {key} must be a positive integer, got {v!r}")
    return layer.config["height"], layer.config["width"]


def interpolation_matrix(n_in: int, n_out: int, method: str, dtype="float32") -> np.ndarray:
    """[n_in, n_out]: column i holds the weights of output i, as tf.image.resize computes them
    (half-pixel centers, no antialiasing; the scale and coordinates in float32, as TensorFlow)."""
    f = np.float32
    scale = f(n_in) / f(n_out)
    m = np.zeros((n_in, n_out), np.float64)
    for i in range(n_out):
        if method == "nearest":
            m[min(max(int(np.floor((f(i) + f(0.5)) * scale)), 0), n_in - 1), i] = 1.0
            continue
        src = (f(i) + f(0.5)) * scale - f(0.5)
        lo = np.floor(src)
        lerp = float(src - lo)
        m[max(int(lo), 0), i] += 1.0 - lerp
        m[min(int(np.ceil(src)), n_in - 1), i] += lerp
    return m.astype(dtype)


def _along(g, x, axis, rank, matrix, name):
    """x with axis `axis` mapped through matrix [n_in, n_out] (moved last for the product, then back)."""
    perm = tuple(a for a in range(rank) if a != axis) + (axis,)
    t = x if axis == rank - 1 else g.transpose(x, perm=perm)
    y = g.matmul(t, g.constant(values=tuple(matrix.ravel().tolist()), shape=matrix.shape,
                               dtype=g.type(x).dtype, name=f"{name}_weights"), name=name)
    return y if axis == rank - 1 else g.transpose(y, perm=tuple(int(i) for i in np.argsort(perm)), name=name)


class Resizing(Rule):
    """Bilinear or nearest resizing as one fixed linear map per spatial axis (no weights: its
    gradient is the transposed map, for layers before it that train)."""

    def check(self, layer, keras):
        _target(layer)
        method = layer.config.get("interpolation", "bilinear")
        if method not in ("bilinear", "nearest"):
            raise ConfigError(f"{_where(layer)}: interpolation {method!r} is not supported; supported: "
                              "bilinear, nearest")
        for key in ("crop_to_aspect_ratio", "pad_to_aspect_ratio", "antialias"):
            _refuse(layer, key, False, "kgraph resizes the whole image, without antialiasing")

    def output_shape(self, layer, shapes):
        shape = list(shapes[0])
        for axis, n in zip(_spatial_axes(layer, shapes[0]), _target(layer)):
            shape[axis] = n
        return tuple(shape)

    def emit(self, ctx, layer, xs, shapes):
        x, shape = xs[0], shapes[0]
        method = layer.config.get("interpolation", "bilinear")
        for axis, n in zip(_spatial_axes(layer, shape), _target(layer)):
            if n != shape[axis]:
                m = interpolation_matrix(shape[axis], n, method, ctx.g.type(x).dtype)
                x = _along(ctx.g, x, axis, len(shape), m, f"{layer.name}_axis{axis}")
        return x


class CenterCrop(Rule):
    """The centered height x width window (Keras resizes an image smaller than it: refused here)."""

    def _pads(self, layer, shape):
        pads = [(0, 0)] * len(shape)
        for axis, n in zip(_spatial_axes(layer, shape), _target(layer)):
            if n > shape[axis]:
                raise ConfigError(f"{_where(layer)}: a {layer.config['height']}x{layer.config['width']} crop "
                                  f"of input {shape_str(shape)} needs Keras's resize of smaller images, "
                                  "which is not supported")
            lo = (shape[axis] - n) // 2
            pads[axis] = (lo, shape[axis] - n - lo)
        return tuple(pads)

    def output_shape(self, layer, shapes):
        pads = self._pads(layer, shapes[0])
        return tuple(d if d is None else d - lo - hi for d, (lo, hi) in zip(shapes[0], pads))

    def emit(self, ctx, layer, xs, shapes):
        pads = self._pads(layer, shapes[0])
        if not any(lo or hi for lo, hi in pads):
            return xs[0]
        return ctx.g.crop(xs[0], pads=pads, name=layer.name)


EXTRA = {
    "LeakyReLU": LeakyReLU(), "ReLU": ReLU(), "PReLU": PReLU(), "ELU": ELU(), "Softmax": Softmax(),
    "ThresholdedReLU": ThresholdedReLU(),
    "SpatialDropout1D": SpatialDropout(1), "SpatialDropout2D": SpatialDropout(2),
    "GaussianNoise": GaussianNoise(), "GaussianDropout": GaussianDropout(), "AlphaDropout": AlphaDropout(),
    "ActivityRegularization": ActivityRegularization(), "Masking": Masking(),
    "Rescaling": Rescaling(), "Normalization": Normalization(), "Resizing": Resizing(), "CenterCrop": CenterCrop(),
}
