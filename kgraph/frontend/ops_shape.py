"""keras.ops that move, copy or cut entries without arithmetic, beyond ops.py's reshape,
transpose, stack and indexing: swapaxes, moveaxis, flip, tile, repeat, pad, split and take (of
fixed indices). Each is written in the IR's transpose, reverse_time, repeat, pad, slice, reshape
and concat, whose VJPs give the gradients. The batch axis stays first and whole."""

from __future__ import annotations

import numpy as np

from .errors import ConfigError
from .ops import _args, _axis, _is_tensor, flip_axis
from .rule import Rule, ir_shape, is_count, shape_str, where_of


def _axes(layer, value, rank) -> list:
    """An int or a list of non-batch axes, as non-negative ints."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return [_axis(layer, a, rank) for a in values]


class Swapaxes(Rule):
    """swapaxes(x, axis1, axis2) and moveaxis(x, source, destination) of non-batch axes: a transpose."""

    def __init__(self, move: bool):
        self.move = move

    def _perm(self, layer, shape) -> list:
        rank = len(shape)
        if not self.move:
            a, b = (_axis(layer, layer.config.get(k), rank) for k in ("axis1", "axis2"))
            perm = list(range(rank))
            perm[a], perm[b] = b, a
            return perm
        source = _axes(layer, layer.config.get("source"), rank)
        destination = _axes(layer, layer.config.get("destination"), rank)
        if len(source) != len(destination) or len(set(source)) != len(source) or len(set(destination)) != len(source):
            raise ConfigError(f"{where_of(layer)}: source and destination must be as many distinct axes")
        perm = [a for a in range(rank) if a not in source]
        for dest, src in sorted(zip(destination, source)):
            perm.insert(dest, src)
        return perm

    def output_shape(self, layer, shapes):
        return tuple(shapes[0][a] for a in self._perm(layer, shapes[0]))

    def emit(self, ctx, layer, xs, shapes):
        perm = self._perm(layer, shapes[0])
        return ctx.g.transpose(xs[0], perm=tuple(perm), name=layer.name) if perm != sorted(perm) else xs[0]


class Flip(Rule):
    """flip(x, axis): entries in reverse order along each axis, by the IR's reverse of axis 1."""

    def _flipped(self, layer, shape) -> list:
        axis = layer.config.get("axis")
        if axis is None:
            raise ConfigError(f"{where_of(layer)}: flipping every axis, the batch's too, is not supported")
        return sorted(set(_axes(layer, axis, len(shape))))

    def output_shape(self, layer, shapes):
        self._flipped(layer, shapes[0])
        return shapes[0]

    def emit(self, ctx, layer, xs, shapes):
        g, y = ctx.g, xs[0]
        for a in self._flipped(layer, shapes[0]):
            y = flip_axis(g, y, a)
        return g.reshape(y, shape=ir_shape(shapes[0]), name=layer.name)


class Tile(Rule):
    """tile(x, repeats): the whole tensor `r` times along each axis (NumPy's; repeats shorter than
    the rank count from the last axis); the batch axis once."""

    def _repeats(self, layer, shape) -> list:
        repeats = layer.config.get("repeats")
        repeats = [repeats] if is_count(repeats) else repeats
        if not isinstance(repeats, (list, tuple)) or not all(is_count(r) for r in repeats):
            raise ConfigError(f"{where_of(layer)}: repeats must be positive integers, got {repeats!r}")
        if len(repeats) > len(shape) or (len(repeats) == len(shape) and repeats[0] != 1):
            raise ConfigError(
                f"{where_of(layer)}: repeats {list(repeats)} would tile the batch axis of {shape_str(shape)}"
            )
        return [1] * (len(shape) - len(repeats)) + list(repeats)

    def output_shape(self, layer, shapes):
        return tuple(d if r == 1 else d * r for d, r in zip(shapes[0], self._repeats(layer, shapes[0])))

    def emit(self, ctx, layer, xs, shapes):
        g, y, shape = ctx.g, xs[0], list(shapes[0])
        for a, r in enumerate(self._repeats(layer, shapes[0])):
            if r > 1:  # a new axis of size 1 before a, repeated r times: r copies of the whole axis
                y = g.repeat(g.reshape(y, shape=ir_shape((*shape[:a], 1, *shape[a:]))), axis=a, n=r)
                shape[a] *= r
                y = g.reshape(y, shape=ir_shape(shape))
        return g.reshape(y, shape=ir_shape(shape), name=layer.name)


class Repeat(Rule):
    """repeat(x, repeats, axis): each entry along a non-batch axis `repeats` times in a row."""

    def _spec(self, layer, shape):
        repeats, axis = layer.config.get("repeats"), layer.config.get("axis")
        if axis is None:
            raise ConfigError(f"{where_of(layer)}: repeating the flattened tensor, its batch too, is not supported")
        if isinstance(repeats, (list, tuple)) and len(set(repeats)) == 1:
            repeats = repeats[0]
        if not is_count(repeats):
            raise ConfigError(f"{where_of(layer)}: repeats must be one positive integer, got {repeats!r}")
        return _axis(layer, axis, len(shape)), repeats

    def output_shape(self, layer, shapes):
        axis, n = self._spec(layer, shapes[0])
        return tuple(d * n if i == axis else d for i, d in enumerate(shapes[0]))

    def emit(self, ctx, layer, xs, shapes):
        axis, n = self._spec(layer, shapes[0])
        return ctx.g.repeat(xs[0], axis=axis, n=n, name=layer.name) if n > 1 else xs[0]


class Pad(Rule):
    """pad(x, pad_width) with zeros (mode "constant"); the batch axis unpadded. A pad_width of
    fewer pairs broadcasts as NumPy's does."""

    keyword_options = ("constant_values",)  # Keras 3 passes it to the call; tf.pad's is in the config

    def _pads(self, layer, shape) -> tuple:
        if str(layer.config.get("mode", "constant")).lower() != "constant":  # tf.pad's is "CONSTANT"
            raise ConfigError(f"{where_of(layer)}: mode {layer.config.get('mode')!r} is not supported (constant)")
        given = [layer.config.get("constant_values"), *(o.get("constant_values") for o in layer.call_options)]
        other = [v for v in given if v not in (0, None)]
        if other:
            raise ConfigError(f"{where_of(layer)}: constant_values={other[0]!r} is not supported (0)")
        width = layer.config.get("pad_width")
        try:
            pads = np.broadcast_to(np.asarray(width), (len(shape), 2))
        except (ValueError, TypeError):
            raise ConfigError(f"{where_of(layer)}: pad_width {width!r} does not fit {shape_str(shape)}") from None
        if pads.dtype.kind not in "iu" or (pads < 0).any():
            raise ConfigError(f"{where_of(layer)}: pad_width must be non-negative integers, got {width!r}")
        if pads[0].any():
            raise ConfigError(f"{where_of(layer)}: padding the batch axis is not supported")
        return tuple((int(lo), int(hi)) for lo, hi in pads)

    def output_shape(self, layer, shapes):
        pads = self._pads(layer, shapes[0])
        return tuple(d if d is None else d + lo + hi for d, (lo, hi) in zip(shapes[0], pads))

    def emit(self, ctx, layer, xs, shapes):
        return ctx.g.pad(xs[0], pads=self._pads(layer, shapes[0]), name=layer.name)


class Split(Rule):
    """split(x, indices_or_sections, axis): equal sections or cuts at the indices, one output each."""

    def _bounds(self, layer, shape) -> tuple:
        axis = _axis(layer, layer.config.get("axis", 0), len(shape))
        size, cut = shape[axis], layer.config.get("indices_or_sections")
        if size is None:
            raise ConfigError(f"{where_of(layer)}: splitting axis {axis} of unknown size is not supported")
        if is_count(cut):
            if size % cut:
                raise ConfigError(f"{where_of(layer)}: axis {axis} of {shape_str(shape)} does not split in {cut}")
            points = [size * k // cut for k in range(cut + 1)]
        elif isinstance(cut, (list, tuple)) and all(is_count(c, 0) for c in cut):
            points = [0, *(min(c, size) for c in cut), size]
            if points != sorted(points):
                raise ConfigError(f"{where_of(layer)}: indices {list(cut)} must increase")
        else:
            raise ConfigError(f"{where_of(layer)}: indices_or_sections must be a count or a list, got {cut!r}")
        return axis, list(zip(points, points[1:]))

    def output_shapes(self, layer, shapes):
        axis, bounds = self._bounds(layer, shapes[0])
        return [tuple(b - a if i == axis else d for i, d in enumerate(shapes[0])) for a, b in bounds]

    def emit(self, ctx, layer, xs, shapes):
        axis, bounds = self._bounds(layer, shapes[0])
        if any(a == b for a, b in bounds):
            raise ConfigError(f"{where_of(layer)}: an empty section of axis {axis}")
        return [
            ctx.g.slice(xs[0], axis=axis, start=a, stop=b, name=f"{layer.name}_{k}") for k, (a, b) in enumerate(bounds)
        ]


class Take(Rule):
    """take(x, indices, axis) of fixed integer indices along a non-batch axis: the entries, in the
    indices' order (a list of them makes the axis that long; one index drops it)."""

    def _spec(self, layer, shape):
        args = _args(layer)
        indices = args[1] if len(args) > 1 else None
        axis = layer.config.get("axis")
        if axis is None:
            raise ConfigError(f"{where_of(layer)}: taking from the flattened tensor, its batch too, is not supported")
        axis = _axis(layer, axis, len(shape))
        if _is_tensor(indices) or indices is None:
            raise ConfigError(f"{where_of(layer)}: only fixed integer indices are supported, not a tensor")
        if isinstance(indices, dict):  # Keras 3 writes a list of ints as a constant tensor
            indices = (indices.get("config") or {}).get("value")
        flat = np.asarray(indices)
        size = shape[axis]
        if flat.dtype.kind not in "iu" or flat.ndim > 1 or flat.size == 0 or size is None:
            raise ConfigError(f"{where_of(layer)}: indices must be integers (one or a list), got {str(indices)[:60]}")
        if ((flat < -size) | (flat >= size)).any():
            raise ConfigError(f"{where_of(layer)}: indices {flat.tolist()} out of axis {axis} of {shape_str(shape)}")
        return axis, [int(i) % size for i in np.atleast_1d(flat)], flat.ndim == 0

    def output_shape(self, layer, shapes):
        axis, picked, single = self._spec(layer, shapes[0])
        out = [len(picked) if i == axis else d for i, d in enumerate(shapes[0])]
        return tuple(d for i, d in enumerate(out) if not (single and i == axis))

    def emit(self, ctx, layer, xs, shapes):
        g = ctx.g
        axis, picked, single = self._spec(layer, shapes[0])
        parts = [g.slice(xs[0], axis=axis, start=i, stop=i + 1) for i in picked]
        y = parts[0] if len(parts) == 1 else g.concat(*parts, axis=axis)
        return g.reshape(y, shape=ir_shape(self.output_shape(layer, shapes)), name=layer.name)


SHAPE_OPS = {
    "op:Swapaxes": Swapaxes(move=False),
    "op:Moveaxis": Swapaxes(move=True),
    "op:Flip": Flip(),
    "op:Tile": Tile(),
    "op:Repeat": Repeat(),
    "op:Pad": Pad(),
    "op:Split": Split(),
    "op:Take": Take(),
}
