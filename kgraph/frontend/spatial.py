"""Rules of the image and sequence layers: convolutions, pooling, padding, cropping, upsampling.
Every one lowers to NHWC ops: a channels_first input is transposed in and out, a 1-D one is an
image of height 1. A convolution is im2col + matmul (grouped ones: a broadcast product summed
over the window), so its bias and activation fuse like a Dense's."""

from __future__ import annotations

import math

from ir import BATCH
from ir.ops.nn import conv_out

from .activations import emit_activation, parse_activation
from .errors import ConfigError
from .initializers import parse_initializer
from .constraints import parse_constraint
from .regularizers import parse_regularizer
from .rule import Rule, WeightDecl, check_count, is_count, shape_str, where_of


def _ints(value, n, where, what, low=1) -> tuple:
    """`n` integers of at least `low` (sizes and strides 1, paddings 0), given as one or as a list."""
    value = (value,) * n if isinstance(value, int) else tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if len(value) != n or not all(is_count(v, low) for v in value):
        kind = "non-negative" if low == 0 else "positive"
        raise ConfigError(f"{where}: {what} must be {n} {kind} integers, got {value!r}")
    if max(value, default=0) >= 2**31:  # a window, stride or dilation past any tensor: overflowed int64 later
        raise ConfigError(f"{where}: {what} {value!r} is too large (at most {2**31 - 1})")
    return value


def _pairs(value, n, where, what) -> tuple:
    """ZeroPadding/Cropping amounts: an int, one int per axis (symmetric), or (lo, hi) per axis."""
    if isinstance(value, int):
        value = [value] * n
    elif n == 1 and len(value) == 2 and all(isinstance(v, int) for v in value):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: {what} must be integers, got {value!r}")
    out = tuple((v, v) if is_count(v, 0) else _ints(v, 2, where, what, low=0) for v in value)
    if len(out) != n:
        raise ConfigError(f"{where}: {what} must give {n} axes, got {value!r}")
    return out


def _first(layer) -> bool:
    return layer.config.get("data_format") == "channels_first"


def _to_nhwc(g, x, rank, first):
    """[B,(H,)W,C] or channels_first -> [B,H,W,C]."""
    if first:
        x = g.transpose(x, perm=(0, *range(2, rank + 2), 1))
    if rank == 1:
        x = g.reshape(x, shape=(BATCH, 1, *g.type(x).shape[1:]))
    return x


def _from_nhwc(g, y, rank, first, name):
    if rank == 1:
        y = g.reshape(y, shape=(BATCH, *g.type(y).shape[2:]))
    if first:
        y = g.transpose(y, perm=(0, rank + 1, *range(1, rank + 1)), name=name)
    return y


def _spatial(shape, rank, first):
    return (list(shape[2:]), shape[1]) if first else (list(shape[1:-1]), shape[-1])


def _keras_shape(spatial, channels, first):
    return (None, channels, *spatial) if first else (None, *spatial, channels)


def _pad(size, k, stride, dilation, padding) -> tuple:
    """(lo, hi) zero padding of one axis, as TensorFlow pads 'same' (the extra row at the end)."""
    eff = dilation * (k - 1) + 1
    if padding == "same":
        total = max((-(-size // stride) - 1) * stride + eff - size, 0)
        return (total // 2, total - total // 2)
    return (eff - 1, 0) if padding == "causal" else (0, 0)


def _transpose_length(n, k, stride, dilation, padding, extra) -> int:
    """Output length of a transposed convolution over n inputs, as Keras computes it (its TensorFlow
    backend; conv_utils.deconv_output_length gives the same): `extra` is output_padding or None."""
    eff = dilation * (k - 1) + 1
    if extra is None:
        return n * stride if padding == "same" else (n - 1) * stride + max(eff, stride)
    return (n - 1) * stride + (eff % 2 if padding == "same" else eff) + extra


def _as_2d(v, rank):
    return (1, *v) if rank == 1 else tuple(v)


def _flat_pads(pads, rank) -> tuple:
    """[(lo, hi)] per spatial axis -> (top, bottom, left, right) of the NHWC image."""
    return sum(((0, 0),) * (2 - rank) + tuple(pads), ())


class Conv(Rule):
    """Conv1D/2D, DepthwiseConv1D/2D, SeparableConv1D/2D, Conv1DTranspose/2DTranspose."""

    def __init__(self, rank: int, kind: str = "conv"):
        self.rank, self.kind = rank, kind

    def _geometry(self, layer, shape):
        cfg, where, rank = layer.config, where_of(layer), self.rank
        if len(shape) != rank + 2:
            raise ConfigError(f"{where}: takes rank-{rank + 2} inputs, got {shape_str(shape)}")
        spatial, channels = _spatial(shape, rank, _first(layer))
        k = _ints(cfg.get("kernel_size"), rank, where, "kernel_size")
        s = _ints(cfg.get("strides", 1), rank, where, "strides")
        d = _ints(cfg.get("dilation_rate", 1), rank, where, "dilation_rate")
        padding = cfg.get("padding", "valid").lower()
        if self.kind == "transpose":
            extra = self._output_padding(layer) or (None,) * rank
            out = [_transpose_length(n, ki, si, di, padding, e) for n, ki, si, di, e in zip(spatial, k, s, d, extra)]
            pads = [_pad(o, ki, si, di, padding) for o, ki, si, di in zip(out, k, s, d)]
            for n, o, ki, si, di, (lo, hi) in zip(spatial, out, k, s, d, pads):
                if o > 0 and conv_out(o, ki, si, di, lo, hi) != n:
                    raise ConfigError(
                        f"{where}: output_padding {extra} makes an output of length {o}, which the "
                        f"matching convolution does not map back to the input's {n}"
                    )
        else:
            pads = [_pad(n, ki, si, di, padding) for n, ki, si, di in zip(spatial, k, s, d)]
            out = [
                (n + lo + hi - di * (ki - 1) - 1) // si + 1 for n, ki, si, di, (lo, hi) in zip(spatial, k, s, d, pads)
            ]
        return spatial, channels, k, s, d, pads, out

    def _filters(self, layer, channels):
        cfg = layer.config
        if self.kind == "depthwise":
            return channels * cfg.get("depth_multiplier", 1)
        return cfg["filters"]

    def check(self, layer, keras):
        cfg, where = layer.config, where_of(layer)
        paddings = ("valid", "same", "causal") if self.rank == 1 and self.kind == "conv" else ("valid", "same")
        if str(cfg.get("padding", "valid")).lower() not in paddings:
            raise ConfigError(
                f"{where}: padding {cfg.get('padding')!r} is not supported; supported: {', '.join(paddings)}"
            )
        if self.kind in ("depthwise", "separable"):
            check_count(layer, "depth_multiplier", 1)
        if cfg.get("groups") is not None:
            check_count(layer, "groups", 1)
        if self.kind != "depthwise" and not is_count(cfg.get("filters")):
            raise ConfigError(f"{where}: filters must be a positive integer, got {cfg.get('filters')!r}")
        parse_activation(cfg.get("activation"), where)
        extra = self._output_padding(layer)
        strides = _ints(cfg.get("strides", 1), self.rank, where, "strides")
        if extra is not None and any(e >= si for e, si in zip(extra, strides)):
            raise ConfigError(f"{where}: output_padding {extra} must be less than strides {strides} on every axis")

    def _output_padding(self, layer):
        """A transposed convolution's output_padding (one int per axis), or None."""
        value = layer.config.get("output_padding")
        if value is None:
            return None
        if self.kind != "transpose":
            raise ConfigError(f"{where_of(layer)}: output_padding is only a transposed convolution's option")
        return _ints(value, self.rank, where_of(layer), "output_padding", low=0)

    def output_shape(self, layer, shapes):
        spatial, channels, *_, out = self._geometry(layer, shapes[0])
        groups = layer.config.get("groups", 1) or 1
        if channels % groups or self._filters(layer, channels) % groups:
            raise ConfigError(
                f"{where_of(layer)}: groups={groups} does not divide the {channels} input channels "
                f"and {self._filters(layer, channels)} filters"
            )
        if min(out) <= 0:
            raise ConfigError(f"{where_of(layer)}: the kernel does not fit in input {shape_str(shapes[0])}")
        return _keras_shape(out, self._filters(layer, channels), _first(layer))

    def weights(self, layer, shapes):
        cfg, where = layer.config, where_of(layer)
        _, channels, k, *_ = self._geometry(layer, shapes[0])
        filters = self._filters(layer, channels)

        def decl(name, shape, key):
            return WeightDecl(
                name,
                shape,
                parse_initializer(cfg.get(f"{key}_initializer", "glorot_uniform"), where),
                parse_regularizer(cfg.get(f"{key}_regularizer"), where),
                constraint=parse_constraint(cfg.get(f"{key}_constraint"), where, shape),
            )

        if self.kind in ("depthwise", "separable"):
            out = [decl("depthwise_kernel", (*k, channels, cfg.get("depth_multiplier", 1)), "depthwise")]
            if self.kind == "separable":
                out.append(
                    decl(
                        "pointwise_kernel",
                        (*(1,) * self.rank, channels * cfg.get("depth_multiplier", 1), filters),
                        "pointwise",
                    )
                )
        elif self.kind == "transpose":
            out = [decl("kernel", (*k, filters, channels), "kernel")]
        else:
            out = [decl("kernel", (*k, channels // (cfg.get("groups", 1) or 1), filters), "kernel")]
        if cfg.get("use_bias", True):
            out.append(
                WeightDecl(
                    "bias",
                    (filters,),
                    parse_initializer(cfg.get("bias_initializer", "zeros"), where),
                    parse_regularizer(cfg.get("bias_regularizer"), where),
                    constraint=parse_constraint(cfg.get("bias_constraint"), where, (filters,)),
                )
            )
        return out

    def emit(self, ctx, layer, xs, shapes):
        g, name, p, cfg = ctx.g, layer.name, ctx.params, layer.config
        _, channels, k, s, d, pads, out = self._geometry(layer, shapes[0])
        x = _to_nhwc(g, xs[0], self.rank, _first(layer))
        patch = {
            "kernel": _as_2d(k, self.rank),
            "strides": _as_2d(s, self.rank),
            "dilation": _as_2d(d, self.rank),
            "pads": _flat_pads(pads, self.rank),
        }
        taps = math.prod(k)
        if self.kind == "transpose":
            filters = cfg["filters"]
            w = g.reshape(p["kernel"], shape=(taps * filters, channels))
            cols = g.matmul(x, w, transpose_b=True, name=f"{name}_matmul")
            y = g.col2im(cols, **patch, size=_as_2d(out, self.rank), name=f"{name}_col2im")
        else:
            is_1x1 = taps == 1 and set(s) == {1} and not any(sum(pads, ()))
            cols = x if is_1x1 else g.im2col(x, **patch, name=f"{name}_im2col")
            if self.kind in ("depthwise", "separable"):
                y = _grouped(g, cols, p["depthwise_kernel"], taps, channels, 1, cfg.get("depth_multiplier", 1), name)
                if self.kind == "separable":
                    pw = p["pointwise_kernel"]
                    y = g.matmul(y, g.reshape(pw, shape=g.type(pw).shape[-2:]), name=f"{name}_matmul")
            elif (cfg.get("groups", 1) or 1) > 1:
                groups, filters = cfg["groups"], cfg["filters"]
                y = _grouped(g, cols, p["kernel"], taps, groups, channels // groups, filters // groups, name)
            else:
                y = g.matmul(
                    cols, g.reshape(p["kernel"], shape=(taps * channels, cfg["filters"])), name=f"{name}_matmul"
                )
        if "bias" in p:
            y = g.add(y, p["bias"], name=f"{name}_bias")
        y = emit_activation(g, y, parse_activation(cfg.get("activation"), ""), ctx.keras, name)
        return _from_nhwc(g, y, self.rank, _first(layer), name)


def _grouped(g, cols, kernel, taps, groups, cg, fg, name):
    """A grouped convolution from patches [B,OH,OW,taps*groups*cg] and a kernel [..., cg, groups*fg]:
    the product broadcast over [B,OH,OW,taps,groups,cg,fg], summed over cg, then over the taps."""
    b, oh, ow, _ = g.type(cols).shape
    c7 = g.reshape(cols, shape=(b, oh, ow, taps, groups, cg, 1))
    w = g.transpose(g.reshape(kernel, shape=(taps, cg, groups, fg)), perm=(0, 2, 1, 3))
    prod = g.mul(c7, w, name=f"{name}_products")
    y = g.reduce_sum(g.reduce_sum(prod, axes=(5,)), axes=(3,), name=f"{name}_sum")
    return g.reshape(y, shape=(b, oh, ow, groups * fg))


class Pool(Rule):
    """MaxPooling1D/2D and AveragePooling1D/2D."""

    def __init__(self, rank: int, mode: str):
        self.rank, self.mode = rank, mode

    def check(self, layer, keras):
        if str(layer.config.get("padding", "valid")).lower() not in ("valid", "same"):
            raise ConfigError(f"{where_of(layer)}: padding {layer.config.get('padding')!r} is not supported")

    def _geometry(self, layer, shape):
        cfg, where = layer.config, where_of(layer)
        if len(shape) != self.rank + 2:
            raise ConfigError(f"{where}: takes rank-{self.rank + 2} inputs, got {shape_str(shape)}")
        spatial, channels = _spatial(shape, self.rank, _first(layer))
        k = _ints(cfg.get("pool_size", 2), self.rank, where, "pool_size")
        s = _ints(k if cfg.get("strides") is None else cfg["strides"], self.rank, where, "strides")  # 0 is refused
        pads = [_pad(n, ki, si, 1, cfg.get("padding", "valid").lower()) for n, ki, si in zip(spatial, k, s)]
        out = [(n + lo + hi - ki) // si + 1 for n, ki, si, (lo, hi) in zip(spatial, k, s, pads)]
        if min(out) <= 0:
            raise ConfigError(f"{where}: pool_size {k} does not fit in input {shape_str(shape)}")
        return channels, k, s, pads, out

    def output_shape(self, layer, shapes):
        channels, *_, out = self._geometry(layer, shapes[0])
        return _keras_shape(out, channels, _first(layer))

    def emit(self, ctx, layer, xs, shapes):
        _, k, s, pads, _ = self._geometry(layer, shapes[0])
        x = _to_nhwc(ctx.g, xs[0], self.rank, _first(layer))
        y = ctx.g.pool2d(
            x,
            mode=self.mode,
            pool=_as_2d(k, self.rank),
            strides=_as_2d(s, self.rank),
            pads=_flat_pads(pads, self.rank),
            name=layer.name,
        )
        return _from_nhwc(ctx.g, y, self.rank, _first(layer), layer.name)


class GlobalPool(Rule):
    def __init__(self, op: str):
        self.op = op

    def _axes(self, layer, shape):
        return tuple(range(2, len(shape))) if _first(layer) else tuple(range(1, len(shape) - 1))

    def output_shape(self, layer, shapes):
        (shape,) = shapes
        axes = self._axes(layer, shape)
        if layer.config.get("keepdims"):
            return tuple(1 if i in axes else d for i, d in enumerate(shape))
        return tuple(d for i, d in enumerate(shape) if i not in axes)

    def emit(self, ctx, layer, xs, shapes):
        mask = ctx.masks.get(xs[0])
        if mask is not None and self.op == "reduce_mean":  # GlobalAveragePooling1D: the mean of the kept steps
            if _first(layer):
                raise ConfigError(
                    f"{where_of(layer)}: a masked sequence is supported with data_format channels_last only"
                )
            g, keep = ctx.g, bool(layer.config.get("keepdims"))
            m = g.reshape(mask, shape=(BATCH, g.type(mask).shape[1], 1), name=f"{layer.name}_mask")
            total = g.reduce_sum(g.mul(xs[0], m), axes=(1,), keepdims=keep)
            return g.div(total, g.reduce_sum(m, axes=(1,), keepdims=keep), name=layer.name)
        return ctx.g.add_node(
            self.op,
            (xs[0],),
            {"axes": self._axes(layer, shapes[0]), "keepdims": bool(layer.config.get("keepdims"))},
            name=layer.name,
        )


class Pad(Rule):
    """ZeroPadding1D/2D (sign 1) and Cropping1D/2D (sign -1)."""

    def __init__(self, rank: int, op: str):
        self.rank, self.op = rank, op

    def _pads(self, layer, shape):
        key = "padding" if self.op == "pad" else "cropping"
        amounts = _pairs(layer.config.get(key, 1 if self.op == "pad" else 0), self.rank, where_of(layer), key)
        if len(shape) != self.rank + 2:
            raise ConfigError(f"{where_of(layer)}: takes rank-{self.rank + 2} inputs, got {shape_str(shape)}")
        return ((0, 0), (0, 0), *amounts) if _first(layer) else ((0, 0), *amounts, (0, 0))

    def output_shape(self, layer, shapes):
        sign = 1 if self.op == "pad" else -1
        out = tuple(
            d if d is None else d + sign * (lo + hi) for d, (lo, hi) in zip(shapes[0], self._pads(layer, shapes[0]))
        )
        if any(d is not None and d <= 0 for d in out):
            raise ConfigError(f"{where_of(layer)}: cropping leaves nothing of {shape_str(shapes[0])}")
        return out

    def emit(self, ctx, layer, xs, shapes):
        return ctx.g.add_node(self.op, (xs[0],), {"pads": self._pads(layer, shapes[0])}, name=layer.name)


class UpSampling(Rule):
    def __init__(self, rank: int):
        self.rank = rank

    def check(self, layer, keras):
        if layer.config.get("interpolation", "nearest") != "nearest":
            raise ConfigError(
                f"{where_of(layer)}: interpolation {layer.config['interpolation']!r} is not supported; "
                "supported: nearest"
            )

    def _repeats(self, layer, shape):
        size = _ints(layer.config.get("size", 2), self.rank, where_of(layer), "size")
        first = 2 if _first(layer) else 1
        return [(first + i, n) for i, n in enumerate(size)]

    def output_shape(self, layer, shapes):
        out = list(shapes[0])
        for axis, n in self._repeats(layer, shapes[0]):
            out[axis] *= n
        return tuple(out)

    def emit(self, ctx, layer, xs, shapes):
        y = xs[0]
        for axis, n in self._repeats(layer, shapes[0]):
            y = ctx.g.repeat(y, axis=axis, n=n, name=layer.name)
        return y


SPATIAL = {
    "Conv1D": Conv(1),
    "Conv2D": Conv(2),
    "DepthwiseConv1D": Conv(1, "depthwise"),
    "DepthwiseConv2D": Conv(2, "depthwise"),
    "SeparableConv1D": Conv(1, "separable"),
    "SeparableConv2D": Conv(2, "separable"),
    "Conv1DTranspose": Conv(1, "transpose"),
    "Conv2DTranspose": Conv(2, "transpose"),
    "MaxPooling1D": Pool(1, "max"),
    "MaxPooling2D": Pool(2, "max"),
    "AveragePooling1D": Pool(1, "avg"),
    "AveragePooling2D": Pool(2, "avg"),
    "GlobalMaxPooling1D": GlobalPool("reduce_max"),
    "GlobalMaxPooling2D": GlobalPool("reduce_max"),
    "GlobalAveragePooling1D": GlobalPool("reduce_mean"),
    "GlobalAveragePooling2D": GlobalPool("reduce_mean"),
    "ZeroPadding1D": Pad(1, "pad"),
    "ZeroPadding2D": Pad(2, "pad"),
    "Cropping1D": Pad(1, "crop"),
    "Cropping2D": Pad(2, "crop"),
    "UpSampling1D": UpSampling(1),
    "UpSampling2D": UpSampling(2),
}
