"""Rules of the preprocessing layers saved inside models: Rescaling, Normalization (given or
adapted statistics), Resizing (bilinear, nearest), CenterCrop, Discretization and
CategoryEncoding. They run in the step like any layer; fixed per-channel values, interpolation
matrices, bin boundaries and token numbers are 'constant' nodes."""

from __future__ import annotations

import numpy as np

from .errors import ConfigError
from .extra_layers import _c, _refuse
from .rule import Rule, WeightDecl, shape_str, where_of

EPSILON = 1e-7  # keras.backend.epsilon(): Normalization's floor on the standard deviation


def _array(g, x, values, name):
    """A fixed tensor of x's dtype: a scalar 'const', or a 'constant' node."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0:
        return _c(g, x, float(values))
    return g.constant(values=tuple(values.ravel().tolist()), shape=values.shape, dtype=g.type(x).dtype, name=name)


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
        raise ConfigError(f"{where_of(layer)}: {key} must be a number or a list of numbers, got {value!r}")
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
                raise ConfigError(
                    f"{where_of(layer)}: {key} of shape {v.shape} does not broadcast against input {shape_str(shape)}"
                ) from None
        return shape

    def emit(self, ctx, layer, xs, shapes):
        g, x = ctx.g, xs[0]
        scale, offset = _values(layer, "scale", 1.0), _values(layer, "offset", 0.0)
        y = g.mul(x, _array(g, x, scale, f"{layer.name}_scale"), name=f"{layer.name}_scaled")
        if offset.ndim == 0 and offset == 0:
            return y
        return g.add(y, _array(g, x, offset, f"{layer.name}_offset"), name=layer.name)


class PreprocessingNormalization(Rule):
    """(x - mean) / max(sqrt(variance), 1e-7), or its inverse; mean and variance from the config, or
    adapted ones kept as non-trainable weights mean, variance and count (Keras's get_weights order)."""

    def _keep(self, layer, shape):
        axis = layer.config.get("axis", -1)
        axes = [] if axis is None else [axis] if isinstance(axis, int) else list(axis)
        rank = len(shape)
        if any(not isinstance(a, int) or not -rank <= a < rank or a % rank == 0 for a in axes):
            raise ConfigError(
                f"{where_of(layer)}: axis {axis!r} is not a list of non-batch axes of input {shape_str(shape)}"
            )
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
            raise ConfigError(f"{where_of(layer)}: mean and variance must be given together")
        keep, target = self._keep(layer, shape), (1, *self._broadcast(layer, shape))
        out = []
        for key in ("mean", "variance"):
            v = _values(layer, key, None)
            if v.ndim:
                if v.ndim > len(keep):
                    raise ConfigError(f"{where_of(layer)}: {key} of shape {v.shape} does not fit the axes {keep}")
                expanded = [1] * len(shape)
                for i in range(1, v.ndim + 1):
                    expanded[keep[-i]] = v.shape[-i]
                v = v.reshape(expanded)
            try:
                out.append(np.broadcast_to(v, target)[0])
            except ValueError:
                raise ConfigError(
                    f"{where_of(layer)}: {key} of shape {v.shape} does not broadcast against "
                    f"input {shape_str(shape)} over axis {cfg.get('axis', -1)!r}"
                ) from None
        return out

    def output_shape(self, layer, shapes):
        self._given(layer, shapes[0])
        return shapes[0]

    def weights(self, layer, shapes):
        if self._given(layer, shapes[0]) is not None:
            return []
        keep = self._keep(layer, shapes[0])
        stat = tuple(shapes[0][d] for d in keep)
        return [
            WeightDecl("mean", stat, ("Zeros", {}), None, False),
            WeightDecl("variance", stat, ("Ones", {}), None, False),
            WeightDecl("count", (), ("Zeros", {}), None, False),
        ]  # Keras keeps it; nothing reads it

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
        raise ConfigError(f"{where_of(layer)}: takes rank-4 image batches, got {shape_str(shape)}")
    return (2, 3) if layer.config.get("data_format") == "channels_first" else (1, 2)


def _target(layer):
    for key in ("height", "width"):
        v = layer.config.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ConfigError(f"{where_of(layer)}: {key} must be a positive integer, got {v!r}")
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


class Resizing(Rule):
    """Bilinear or nearest resizing as one fixed linear map per spatial axis (no weights: its
    gradient is the transposed map, for layers before it that train)."""

    def check(self, layer, keras):
        _target(layer)
        method = layer.config.get("interpolation", "bilinear")
        if method not in ("bilinear", "nearest"):
            raise ConfigError(
                f"{where_of(layer)}: interpolation {method!r} is not supported; supported: bilinear, nearest"
            )
        for key in ("crop_to_aspect_ratio", "pad_to_aspect_ratio", "antialias"):
            _refuse(layer, key, False, "kgraph resizes the whole image, without antialiasing")

    def output_shape(self, layer, shapes):
        shape = list(shapes[0])
        for axis, n in zip(_spatial_axes(layer, shapes[0]), _target(layer)):
            shape[axis] = n
        return tuple(shape)

    def emit(self, ctx, layer, xs, shapes):
        """Each resized axis moves last and goes through its matrix [n_in, n_out]; one transpose
        at the end puts the axes back in order."""
        g, x, shape = ctx.g, xs[0], shapes[0]
        method, rank = layer.config.get("interpolation", "bilinear"), len(shape)
        order = list(range(rank))  # the input axis at each position of x
        for axis, n in zip(_spatial_axes(layer, shape), _target(layer)):
            if n == shape[axis]:
                continue
            pos = order.index(axis)
            if pos != rank - 1:
                perm = [p for p in range(rank) if p != pos] + [pos]
                x, order = g.transpose(x, perm=tuple(perm)), [order[p] for p in perm]
            m = interpolation_matrix(shape[axis], n, method, g.type(x).dtype)
            weights = g.constant(
                values=tuple(m.ravel().tolist()),
                shape=m.shape,
                dtype=g.type(x).dtype,
                name=f"{layer.name}_axis{axis}_weights",
            )
            x = g.matmul(x, weights, name=f"{layer.name}_axis{axis}")
        if order != list(range(rank)):
            x = g.transpose(x, perm=tuple(order.index(a) for a in range(rank)), name=layer.name)
        return x


class CenterCrop(Rule):
    """The centered height x width window (Keras resizes an image smaller than it: refused here)."""

    def _pads(self, layer, shape):
        pads = [(0, 0)] * len(shape)
        for axis, n in zip(_spatial_axes(layer, shape), _target(layer)):
            if n > shape[axis]:
                raise ConfigError(
                    f"{where_of(layer)}: a {layer.config['height']}x{layer.config['width']} crop "
                    f"of input {shape_str(shape)} needs Keras's resize of smaller images, "
                    "which is not supported"
                )
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


def _encode(g, ids, shape, mode, depth, name):
    """Keras's encode_categorical_inputs of integer ids (floats here) of Keras shape `shape`:
    one_hot (a last axis of 1 replaced by the depth, another kept), multi_hot (1 where an id
    occurs along the last axis) or count (how often). A float id counts as Keras's cast to int
    truncates it; one outside [0, depth) counts nowhere, as TensorFlow's one_hot drops it (Keras's
    multi_hot and count raise for a negative id, in TensorFlow's bincount; kgraph drops it too)."""
    if mode == "int":
        return ids
    if len(shape) == 1:  # one id a sample (one_hot): a last axis of 1
        ids, shape = g.reshape(ids, shape=(*g.type(ids).shape, 1)), (*shape, 1)
    # id k where Keras's cast to int (truncation) gives k: k <= id < k + 1, and -1 < id < 1 for 0
    column = g.reshape(ids, shape=(*g.type(ids).shape, 1))
    below = np.nextafter(np.arange(depth, dtype=np.float32), np.float32(-np.inf))
    below[0] = -1.0
    above = g.greater(column, _array(g, ids, below, f"{name}_from"))
    hits = g.mul(above, g.less(column, _array(g, ids, np.arange(1, depth + 1), f"{name}_to")))  # (..., k, depth)
    if mode == "one_hot" and shape[-1] != 1:
        return hits
    if mode == "one_hot":
        return g.reshape(hits, shape=(*g.type(ids).shape[:-1], depth), name=name)
    reduce = g.reduce_max if mode == "multi_hot" else g.reduce_sum
    return reduce(hits, axes=(len(shape) - 1,), name=name)


def _encoded_shape(layer, shape, mode, depth) -> tuple:
    """CategoryEncoding's compute_output_shape."""
    if mode == "int":
        return shape
    if len(shape) == 1 and mode != "one_hot":  # Keras counts the whole batch as one sample
        raise ConfigError(
            f"{where_of(layer)}: {mode} of one id a sample (input {shape_str(shape)}) encodes the whole batch "
            "as one sample in Keras; give the input a last axis of 1"
        )
    if mode == "one_hot" and (shape[-1] != 1 or len(shape) == 1):
        return (*shape, depth)
    return (*shape[:-1], depth)


class CategoryEncoding(Rule):
    """Integer ids as one_hot, multi_hot or count vectors of num_tokens entries (count_weights are
    refused; a sparse output is the same numbers, dense)."""

    MODES = ("one_hot", "multi_hot", "count")

    def _spec(self, layer) -> tuple:
        mode, depth = layer.config.get("output_mode", "multi_hot"), layer.config.get("num_tokens")
        if mode not in self.MODES:
            raise ConfigError(f"{where_of(layer)}: output_mode {mode!r} is not one of {', '.join(self.MODES)}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ConfigError(f"{where_of(layer)}: num_tokens must be a positive integer, got {depth!r}")
        return mode, depth

    def output_shape(self, layer, shapes):
        return _encoded_shape(layer, shapes[0], *self._spec(layer))

    def emit(self, ctx, layer, xs, shapes):
        return _encode(ctx.g, xs[0], shapes[0], *self._spec(layer), layer.name)


class Discretization(Rule):
    """The bucket of each value among bin_boundaries (the count of boundaries at or below it), as
    an id (output_mode "int") or encoded as CategoryEncoding encodes ids, over len(boundaries) + 1
    buckets. Boundaries must be in the config: given, or saved by adapt()."""

    MODES = ("int", "one_hot", "multi_hot", "count")

    def _spec(self, layer) -> tuple:
        mode = layer.config.get("output_mode", "int")
        if mode not in self.MODES:
            raise ConfigError(f"{where_of(layer)}: output_mode {mode!r} is not one of {', '.join(self.MODES)}")
        if layer.config.get("bin_boundaries") is None:
            raise ConfigError(f"{where_of(layer)}: no bin_boundaries in the config (the layer was never adapted)")
        boundaries = _values(layer, "bin_boundaries", None).ravel()
        if np.any(np.diff(boundaries) < 0):
            raise ConfigError(f"{where_of(layer)}: bin_boundaries must not decrease")
        return mode, boundaries

    def output_shape(self, layer, shapes):
        mode, boundaries = self._spec(layer)
        return _encoded_shape(layer, shapes[0], mode, len(boundaries) + 1)

    def emit(self, ctx, layer, xs, shapes):
        g, x = ctx.g, xs[0]
        mode, boundaries = self._spec(layer)
        column = g.reshape(x, shape=(*g.type(x).shape, 1))
        at_or_below = g.greater_equal(column, _array(g, x, boundaries, f"{layer.name}_boundaries"))
        ids = g.reduce_sum(at_or_below, axes=(len(shapes[0]),), name=None if mode != "int" else layer.name)
        return _encode(g, ids, shapes[0], mode, len(boundaries) + 1, layer.name)


PREPROCESSING = {
    "CategoryEncoding": CategoryEncoding(),
    "Discretization": Discretization(),
    "Rescaling": Rescaling(),
    "Normalization": PreprocessingNormalization(),
    "Resizing": Resizing(),
    "CenterCrop": CenterCrop(),
}
