"""One rule per supported Keras layer class: config checks, output shape, weights, and its IR.
Shapes here are Keras's: tuples whose first entry (the batch) is None."""

from __future__ import annotations

import math

from ir import BATCH, TensorType
from ir.ops.nn import normalize

from .activations import emit_activation, parse_activation
from .constraints import parse_constraint
from .errors import ConfigError
from .initializers import parse_initializer
from .regularizers import parse_regularizer
from .rule import Rule, WeightDecl, check_count, ir_shape, is_count, non_batch_axes, rsqrt, shape_str, where_of


class Dense(Rule):
    def check(self, layer, keras):
        cfg, where = layer.config, where_of(layer)
        if not is_count(cfg.get("units")):
            raise ConfigError(f"{where}: units must be a positive integer, got {cfg.get('units')!r}")
        parse_activation(cfg.get("activation"), where)
        if cfg.get("quantization_config") is not None:
            raise ConfigError(f"{where}: quantization_config is not supported")

    def output_shape(self, layer, shapes):
        return (*shapes[0][:-1], layer.config["units"])  # over the last axis, as Keras

    def weights(self, layer, shapes):
        cfg, where = layer.config, where_of(layer)
        kernel = (shapes[0][-1], cfg["units"])
        out = [
            WeightDecl(
                "kernel",
                kernel,
                parse_initializer(cfg.get("kernel_initializer", "glorot_uniform"), where),
                parse_regularizer(cfg.get("kernel_regularizer"), where),
                constraint=parse_constraint(cfg.get("kernel_constraint"), where, kernel),
            )
        ]
        if cfg.get("use_bias", True):
            out.append(
                WeightDecl(
                    "bias",
                    (cfg["units"],),
                    parse_initializer(cfg.get("bias_initializer", "zeros"), where),
                    parse_regularizer(cfg.get("bias_regularizer"), where),
                    constraint=parse_constraint(cfg.get("bias_constraint"), where, (cfg["units"],)),
                )
            )
        return out

    def emit(self, ctx, layer, xs, shapes):
        g, name = ctx.g, layer.name
        y = g.matmul(xs[0], ctx.params["kernel"], name=f"{name}_matmul")
        if "bias" in ctx.params:
            y = g.add(y, ctx.params["bias"], name=f"{name}_bias")
        return emit_activation(g, y, parse_activation(layer.config.get("activation"), ""), ctx.keras, name)


class Activation(Rule):
    def check(self, layer, keras):
        parse_activation(layer.config.get("activation"), where_of(layer))

    def emit(self, ctx, layer, xs, shapes):
        return emit_activation(
            ctx.g, xs[0], parse_activation(layer.config.get("activation"), ""), ctx.keras, layer.name
        )


class Dropout(Rule):
    def check(self, layer, keras):
        rate = layer.config.get("rate", 0.0)
        if not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ConfigError(f"{where_of(layer)}: rate must be in [0, 1), got {rate!r}")

    def _mask_shape(self, layer, shape):
        noise = layer.config.get("noise_shape")
        if noise is None:
            return ir_shape(shape)
        if len(noise) != len(shape) or any(n not in (None, 1, d) for n, d in zip(noise[1:], shape[1:])):
            raise ConfigError(f"{where_of(layer)}: noise_shape {noise} does not fit input {shape_str(shape)}")
        return (BATCH if noise[0] is None else noise[0], *(d if n is None else n for n, d in zip(noise[1:], shape[1:])))

    def output_shape(self, layer, shapes):
        self._mask_shape(layer, shapes[0])
        return shapes[0]

    def emit(self, ctx, layer, xs, shapes):
        rate = float(layer.config.get("rate", 0.0))
        if not ctx.training or rate == 0:
            return xs[0]
        g = ctx.g
        mask = g.source(
            "rng",
            f"{layer.name}_mask",
            TensorType(self._mask_shape(layer, shapes[0]), g.type(xs[0]).dtype),
            rate=rate,
            layer=layer.name,
        )
        return g.mul(xs[0], mask, name=layer.name)


class Flatten(Rule):
    def output_shape(self, layer, shapes):
        return (shapes[0][0], math.prod(shapes[0][1:]))

    def emit(self, ctx, layer, xs, shapes):
        out, rank, x = self.output_shape(layer, shapes), len(shapes[0]), xs[0]
        if layer.config.get("data_format") == "channels_first" and rank > 2:  # Keras goes channels_last first
            x = ctx.g.transpose(x, perm=(0, *range(2, rank), 1))
        return x if out == shapes[0] else ctx.g.reshape(x, shape=ir_shape(out), name=layer.name)


class Reshape(Rule):
    def output_shape(self, layer, shapes):
        (shape,) = shapes
        target = list(layer.config.get("target_shape") or [])
        if not all(is_count(d) or (d == -1 and not isinstance(d, bool)) for d in target):
            raise ConfigError(
                f"{where_of(layer)}: target_shape must be positive integers (one may be -1), got {target}"
            )
        size, known = math.prod(shape[1:]), math.prod(d for d in target if d != -1)
        if target.count(-1) == 1 and known and size % known == 0:
            target[target.index(-1)] = size // known
        if target.count(-1) or math.prod(target) != size:
            raise ConfigError(
                f"{where_of(layer)}: cannot reshape {shape_str(shape)} to target_shape "
                f"{tuple(layer.config.get('target_shape') or ())}"
            )
        return (shape[0], *target)

    def emit(self, ctx, layer, xs, shapes):
        return ctx.g.reshape(xs[0], shape=ir_shape(self.output_shape(layer, shapes)), name=layer.name)


class Merge(Rule):
    """Add, Subtract, Multiply, Average, Maximum, Minimum: elementwise with Keras's broadcasting of 1s."""

    inputs = None

    def __init__(self, op: str, count: int | None = None):
        self.op, self.count = op, count

    def output_shape(self, layer, shapes):
        if (self.count and len(shapes) != self.count) or not shapes:
            raise ConfigError(f"{where_of(layer)}: takes {self.count or 'at least 1'} inputs, got {len(shapes)}")
        out = list(shapes[0])
        for shape in shapes[1:]:
            if len(shape) != len(out):
                raise ConfigError(
                    f"{where_of(layer)}: input shapes {shape_str(out)} and {shape_str(shape)} do not match"
                )
            for i, (a, b) in enumerate(zip(out, shape)):
                if a is None or a == 1:
                    out[i] = b
                elif not (b is None or b == 1 or a == b):
                    raise ConfigError(
                        f"{where_of(layer)}: input shapes {shape_str(shapes[0])} and {shape_str(shape)} do not match"
                    )
        return tuple(out)

    def emit(self, ctx, layer, xs, shapes):
        g, op = ctx.g, "add" if self.op == "average" else self.op
        masks = [ctx.masks.get(x) for x in xs]
        if (
            ctx.keras >= 3
            and op in ("mul", "maximum", "minimum")
            and any(m is not None for m in masks)
            and g.type(xs[0]).rank == 3
        ):
            return self._masked_keras3(g, layer, xs, masks)
        y = xs[0]
        for x in xs[1:]:
            y = g.add_node(op, (y, x), name=layer.name)
        if self.op == "average":
            y = g.mul(y, g.const(1.0 / len(xs), g.type(y).dtype), name=layer.name)
        return y

    def _masked_keras3(self, g, layer, xs, masks):
        """Keras 3's Multiply, Maximum and Minimum of masked sequences: a masked step of an input
        counts as 1 in a product (zeroed where no input keeps it, when all are masked); in a
        maximum or minimum it takes the other operand's value, so that it never wins. Keras 2
        merges the values as they are (and Add, Subtract, Average in both)."""
        dtype = g.type(xs[0]).dtype
        steps = [None if m is None else g.reshape(m, shape=(BATCH, g.type(m).shape[1], 1)) for m in masks]
        if self.op == "mul":
            everywhere = all(m is not None for m in steps)
            y = kept = None
            for x, m in zip(xs, steps):
                if m is not None:
                    x = g.where(m, x, g.const(1.0, dtype))
                    kept = m if kept is None else g.maximum(kept, m)
                y = x if y is None else g.mul(y, x)
            return g.where(kept, y, g.const(0.0, dtype), name=layer.name) if everywhere else y
        y, kept = xs[0], steps[0]
        for x, m in zip(xs[1:], steps[1:]):
            if m is not None:
                x = g.where(m, x, y)
            if kept is not None:
                y = g.where(kept, y, x)
            kept = g.maximum(kept, m) if kept is not None and m is not None else None
            y = g.add_node(self.op, (y, x), name=layer.name)
        return y


def _tf_keras_fused(cfg, rank, axes) -> bool:
    """Whether tf-keras runs this BatchNormalization fused (its _fused_can_be_used, with fused
    left to it or True): a 4-D or 5-D input normalized over its channels, first or last."""
    return (
        cfg.get("fused") is not False
        and rank in (4, 5)
        and axes in ((1,), (rank - 1,))
        and cfg.get("virtual_batch_size") is None
        and cfg.get("adjustment") is None
    )


class UnitNormalization(Rule):
    """x divided by its L2 norm over `axis` (an int or a list), floored at Keras's 1e-12
    (keras.ops.normalize: x * min(rsqrt(sum of squares), 1e12))."""

    def _axes(self, layer, shape) -> tuple:
        return non_batch_axes(layer, shape)

    def output_shape(self, layer, shapes):
        self._axes(layer, shapes[0])
        return shapes[0]

    def emit(self, ctx, layer, xs, shapes):
        g, x = ctx.g, xs[0]
        squares = g.reduce_sum(g.square(x), axes=self._axes(layer, shapes[0]), keepdims=True)
        # Keras 3 floors the norm at 1e-12 (here its square: a zero vector's gradient stays finite);
        # tf-keras's tf.linalg.l2_normalize floors the squares themselves at 1e-12
        floor = 1e-24 if ctx.keras >= 3 else 1e-12
        norm = g.sqrt(g.maximum(squares, g.const(floor, g.type(x).dtype)))
        return g.div(x, norm, name=layer.name)


class Concatenate(Rule):
    inputs = None

    def _axis(self, layer, shapes):
        axis = layer.config.get("axis", -1)
        rank = len(shapes[0])
        if not -rank <= axis < rank or axis % rank == 0:
            raise ConfigError(f"{where_of(layer)}: cannot concatenate along axis {axis} of {shape_str(shapes[0])}")
        return axis % rank

    def output_shape(self, layer, shapes):
        if not shapes:
            raise ConfigError(f"{where_of(layer)}: takes at least 1 input")
        axis = self._axis(layer, shapes)
        for shape in shapes[1:]:
            if len(shape) != len(shapes[0]) or any(
                a != b for i, (a, b) in enumerate(zip(shape, shapes[0])) if i != axis
            ):
                raise ConfigError(
                    f"{where_of(layer)}: input shapes {shape_str(shapes[0])} and {shape_str(shape)} "
                    f"do not match outside axis {axis}"
                )
        return (*shapes[0][:axis], sum(s[axis] for s in shapes), *shapes[0][axis + 1 :])

    def emit(self, ctx, layer, xs, shapes):
        if len(xs) == 1:
            return xs[0]
        return ctx.g.concat(*xs, axis=self._axis(layer, shapes), name=layer.name)


class Permute(Rule):
    def _perm(self, layer, shape):
        dims = tuple(layer.config.get("dims") or ())
        if sorted(dims) != list(range(1, len(shape))):
            raise ConfigError(f"{where_of(layer)}: dims {dims} is not a permutation of 1..{len(shape) - 1}")
        return (0, *dims)

    def output_shape(self, layer, shapes):
        return tuple(shapes[0][i] for i in self._perm(layer, shapes[0]))

    def emit(self, ctx, layer, xs, shapes):
        return ctx.g.transpose(xs[0], perm=self._perm(layer, shapes[0]), name=layer.name)


class RepeatVector(Rule):
    def check(self, layer, keras):
        check_count(layer, "n", None)

    def output_shape(self, layer, shapes):
        if len(shapes[0]) != 2:
            raise ConfigError(f"{where_of(layer)}: takes rank-2 inputs, got {shape_str(shapes[0])}")
        return (shapes[0][0], layer.config["n"], shapes[0][1])

    def emit(self, ctx, layer, xs, shapes):
        x = ctx.g.reshape(xs[0], shape=(BATCH, 1, shapes[0][1]))
        return ctx.g.repeat(x, axis=1, n=layer.config["n"], name=layer.name)


class Embedding(Rule):
    def check(self, layer, keras):
        cfg = layer.config
        for key in ("input_dim", "output_dim"):
            if not is_count(cfg.get(key)):
                raise ConfigError(f"{where_of(layer)}: {key} must be a positive integer, got {cfg.get(key)!r}")
        if cfg.get("lora_rank"):
            raise ConfigError(f"{where_of(layer)}: lora_rank is not supported")

    def output_shape(self, layer, shapes):
        return (*shapes[0], layer.config["output_dim"])

    def weights(self, layer, shapes):
        cfg, where = layer.config, where_of(layer)
        shape = (cfg["input_dim"], cfg["output_dim"])
        return [
            WeightDecl(
                "embeddings",
                shape,
                parse_initializer(cfg.get("embeddings_initializer", "uniform"), where),
                parse_regularizer(cfg.get("embeddings_regularizer"), where),
                constraint=parse_constraint(cfg.get("embeddings_constraint"), where, shape),
            )
        ]

    def emit(self, ctx, layer, xs, shapes):
        g = ctx.g
        y = g.gather(ctx.params["embeddings"], xs[0], name=layer.name)
        if layer.config.get("mask_zero") and len(shapes[0]) == 2:  # id 0 is padding: later RNNs skip it
            x = xs[0]
            ctx.masks[y] = g.sub(
                g.const(1.0, g.type(x).dtype), g.equal(x, g.const(0.0, g.type(x).dtype)), name=f"{layer.name}_mask"
            )
        return y


class Normalization(Rule):
    """BatchNormalization, LayerNormalization and GroupNormalization: scale (gamma) and center (beta)
    weights over the normalized axis, then the statistics each computes its own way."""

    def __init__(self, kind: str):
        self.kind = kind

    def check(self, layer, keras):
        cfg, where = layer.config, where_of(layer)
        for key in ("renorm", "rms_scaling"):
            if cfg.get(key) and not (key == "rms_scaling" and self.kind == "layer"):
                raise ConfigError(f"{where}: {key} is not supported")
        if self.kind == "group":
            check_count(layer, "groups", 32)

    def _axes(self, layer, shape) -> tuple:
        axis, axes = layer.config.get("axis", -1), non_batch_axes(layer, shape)
        if (self.kind != "layer" and len(axes) != 1) or (self.kind == "group" and axes[0] != len(shape) - 1):
            raise ConfigError(f"{where_of(layer)}: axis {axis} is not supported for input {shape_str(shape)}")
        return axes

    def output_shape(self, layer, shapes):
        self._axes(layer, shapes[0])
        groups = layer.config.get("groups", 32)
        if self.kind == "group" and shapes[0][-1] % groups:
            raise ConfigError(f"{where_of(layer)}: groups={groups} does not divide {shapes[0][-1]} channels")
        return shapes[0]

    def weights(self, layer, shapes):
        cfg, where = layer.config, where_of(layer)
        shape = tuple(shapes[0][a] for a in self._axes(layer, shapes[0]))

        def decl(name, default, trainable=True, key=None):
            key = key or name
            return WeightDecl(
                name,
                shape,
                parse_initializer(cfg.get(f"{key}_initializer", default), where),
                parse_regularizer(cfg.get(f"{key}_regularizer"), where),
                trainable,
                parse_constraint(cfg.get(f"{key}_constraint"), where, shape),
            )

        rms = self.kind == "layer" and cfg.get("rms_scaling")  # Keras 3's deprecated option: gamma, no beta
        out = ([decl("gamma", "ones")] if cfg.get("scale", True) or rms else []) + (
            [decl("beta", "zeros")] if cfg.get("center", True) and not rms else []
        )
        if self.kind == "batch":
            out += [decl("moving_mean", "zeros", False), decl("moving_variance", "ones", False)]
        return out

    def emit(self, ctx, layer, xs, shapes):
        g, p, cfg, x = ctx.g, ctx.params, layer.config, xs[0]
        rank, axes = len(shapes[0]), self._axes(layer, shapes[0])
        eps = cfg.get("epsilon", 1e-3)
        bshape = tuple(shapes[0][i] if i in axes else 1 for i in range(rank))

        def b(v):  # broadcast a per-channel tensor against x
            return v if v is None or axes == (rank - 1,) else g.reshape(v, shape=bshape)

        gamma, beta = p.get("gamma"), p.get("beta")
        if self.kind == "batch":
            others = tuple(i for i in range(rank) if i not in axes)
            if not (ctx.training and cfg.get("trainable", True)):  # a frozen one runs as in inference
                stats = [p["moving_mean"], p["moving_variance"]] + [v for v in (gamma, beta) if v is not None]
                return g.batch_norm(
                    x,
                    *stats,
                    axis=axes[0],
                    epsilon=float(eps),
                    scale=gamma is not None,
                    center=beta is not None,
                    name=layer.name,
                )
            mask = ctx.masks.get(x) if rank == 3 else None
            if mask is not None:
                mean, var = _masked_moments(g, x, mask, shapes[0], others, b, layer.name)
            else:
                mean = g.reduce_mean(x, axes=others, name=f"{layer.name}_mean")
                var = g.reduce_mean(g.square(g.sub(x, b(mean))), axes=others, name=f"{layer.name}_variance")
            tracked = var
            if ctx.keras < 3 and _tf_keras_fused(cfg, rank, axes):
                # tf-keras's fused batch norm (4-D and 5-D inputs, channels first or last) moves
                # its moving variance toward the batch's unbiased variance: n / (n - 1) times
                n = g.count(x, axes=others, name=f"{layer.name}_count")
                bessel = g.div(n, g.sub(n, g.const(1.0, g.type(var).dtype)), name=f"{layer.name}_bessel")
                tracked = g.mul(var, bessel, name=f"{layer.name}_unbiased_variance")
            for stat, batch in (("moving_mean", mean), ("moving_variance", tracked)):
                g.moving_average(
                    p[stat], batch, momentum=float(cfg.get("momentum", 0.99)), name=f"{layer.name}_update_{stat}"
                )
            if len(axes) == 1 and mask is None:  # one op, its gradient through the batch's statistics in three passes
                return g.batch_norm(
                    x,
                    mean,
                    var,
                    *[v for v in (gamma, beta) if v is not None],
                    axis=axes[0],
                    epsilon=float(eps),
                    scale=gamma is not None,
                    center=beta is not None,
                    batch_statistics=True,
                    name=layer.name,
                )
            return normalize(g, x, b(mean), b(var), b(gamma), b(beta), eps, layer.name)
        if self.kind == "layer":
            mean = g.reduce_mean(x, axes=axes, keepdims=True)
            var = g.reduce_mean(g.square(g.sub(x, mean)), axes=axes, keepdims=True)
            if cfg.get("rms_scaling"):  # Keras 3's: x (not centred) * rsqrt(variance + epsilon) * gamma
                return g.mul(g.mul(x, rsqrt(g, var, eps)), b(gamma), name=layer.name)
            return normalize(g, x, mean, var, b(gamma), b(beta), eps, layer.name)
        groups, channels = cfg.get("groups", 32), shapes[0][-1]
        grouped = (BATCH, math.prod(shapes[0][1:-1]), groups, channels // groups)
        xg = g.reshape(x, shape=grouped)

        def mean_of(v):  # over the group's channels, then the positions (equal counts: the mean of all)
            return g.reduce_mean(g.reduce_mean(v, axes=(3,), keepdims=True), axes=(1,), keepdims=True)

        mean = mean_of(xg)
        var = mean_of(g.square(g.sub(xg, mean)))
        per_group = (1, 1, groups, channels // groups)
        y = normalize(
            g,
            xg,
            mean,
            var,
            *(v if v is None else g.reshape(v, shape=per_group) for v in (gamma, beta)),
            eps,
            f"{layer.name}_grouped",
        )
        return g.reshape(y, shape=ir_shape(shapes[0]), name=layer.name)


def _masked_moments(g, x, mask, shape, others, b, name):
    """The mean and variance over the kept steps only, as Keras 3's and tf-keras's
    BatchNormalization compute them in training when a mask reaches it: a padded step weighs
    nothing, and the count is the kept elements' (Keras adds its epsilon(), 1e-7). The mask is
    [B,T]; x is [B,T,C], reduced over `others`."""
    dtype = g.type(x).dtype
    m = g.reshape(mask, shape=(BATCH, shape[1], 1), name=f"{name}_mask")
    per_step = math.prod(shape[i] for i in others if i == 2)  # the mask counts a step once, x has C values
    count = g.add(g.mul(g.reduce_sum(m, axes=others), g.const(float(per_step), dtype)), g.const(1e-7, dtype))
    mean = g.div(g.reduce_sum(g.mul(x, m), axes=others), count, name=f"{name}_mean")
    spread = g.square(g.mul(g.sub(x, b(mean)), m))
    return mean, g.div(g.reduce_sum(spread, axes=others), count, name=f"{name}_variance")


CORE = {  # model.py joins these with the other rule modules' into RULES
    "Dense": Dense(),
    "Activation": Activation(),
    "Dropout": Dropout(),
    "Flatten": Flatten(),
    "Reshape": Reshape(),
    "Add": Merge("add"),
    "Subtract": Merge("sub", 2),
    "Multiply": Merge("mul"),
    "Average": Merge("average"),
    "Maximum": Merge("maximum"),
    "Minimum": Merge("minimum"),
    "Concatenate": Concatenate(),
    "UnitNormalization": UnitNormalization(),
    "Identity": Rule(),  # the identity, masks passed on
    "Permute": Permute(),
    "RepeatVector": RepeatVector(),
    "Embedding": Embedding(),
    "BatchNormalization": Normalization("batch"),
    "LayerNormalization": Normalization("layer"),
    "GroupNormalization": Normalization("group"),
}
