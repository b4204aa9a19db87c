"""Keras 3's operations in a functional config: `x * 2.0 + 1.0`, `keras.ops.mean(x, axis=1)`,
`x[:, -1]`. Keras writes each as an entry of module keras.src.ops.* whose inbound node's `args`
mix tensors and constants; normalize.py names their classes "op:<Class>" (so that `Multiply`
the op is never read as the Multiply layer) and keeps the args (LayerDesc.call_args). Each rule
here emits the op as IR ops with their VJPs; an op not listed is refused with the supported ones."""

from __future__ import annotations

import dataclasses

import numpy as np

from .activations import emit_activation
from .errors import ConfigError
from .extra_layers import Softmax
from .layers import Concatenate, Permute, Reshape
from .rule import Rule, ir_shape, rsqrt, shape_str, where_of


def _is_tensor(arg) -> bool:
    return isinstance(arg, dict) and arg.get("class_name") == "__keras_tensor__"


def _number(arg) -> bool:
    return isinstance(arg, (int, float)) and not isinstance(arg, bool)


def _is_constant(arg) -> bool:
    """A fixed tensor Keras 3 wrote into the config (`x + Embedding(12, 16)(ops.arange(12))`: what
    no input depends on is computed when the model is built and saved as its value), or a NumPy
    array passed to an op (saved as "__numpy__")."""
    return isinstance(arg, dict) and arg.get("class_name") in ("__tensor__", "__numpy__")


def _constant_value(layer, arg) -> np.ndarray:
    config = arg.get("config") if isinstance(arg.get("config"), dict) else {}
    refused = f"{where_of(layer)}: its constant tensor operand is not a non-empty array of finite numbers"
    try:
        value = np.asarray(config.get("value"), np.float64)
    except (TypeError, ValueError):
        raise ConfigError(refused) from None
    if value.size == 0 or not np.isfinite(value).all():
        raise ConfigError(refused)
    return value


def _args(layer) -> list:
    """The op's positional args as Keras wrote them (tensors as their __keras_tensor__ entries)."""
    args = layer.call_args[0] if getattr(layer, "call_args", None) else []
    return args if isinstance(args, list) else []


def _axis(layer, axis, rank) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int) or not -rank <= axis < rank or axis % rank == 0:
        raise ConfigError(f"{where_of(layer)}: axis {axis!r} is not a non-batch axis of a rank-{rank} tensor")
    return axis % rank


def _as(rule, layer, **config):
    """`layer` as the layer rule `rule` reads it: the op's config in the layer's terms."""
    return rule, dataclasses.replace(layer, config={**layer.config, **config})


class _Elementwise(Rule):
    """An elementwise op of `arity` operands, each a tensor, a number or a constant tensor (at
    least one a tensor): tensors of one rank broadcast along their axes of size 1, a constant
    along the tensors' last axes (NumPy's way; it may not reach the batch axis)."""

    inputs = None
    arity = 2

    def _operands(self, layer):
        args = _args(layer)
        kinds = [_is_tensor(a) or _number(a) or _is_constant(a) for a in args]
        if len(args) != self.arity or not all(kinds) or not any(map(_is_tensor, args)):
            described = ["tensor" if _is_tensor(a) else "number" if _number(a) else type(a).__name__ for a in args]
            if len(args) == self.arity:
                described = [d if ok else f"{d} {str(a)[:40]}" for d, a, ok in zip(described, args, kinds)]
            raise ConfigError(
                f"{where_of(layer)}: takes {self.arity} operands, each a tensor, a number or a constant tensor, "
                f"with at least one tensor; got {len(args)}: {', '.join(described)}"
            )
        return args

    def output_shape(self, layer, shapes):
        args = self._operands(layer)
        if len({len(s) for s in shapes}) > 1:
            raise ConfigError(f"{where_of(layer)}: tensors of different ranks {', '.join(map(shape_str, shapes))}")
        out = []
        for dims in zip(*(s[1:] for s in shapes)):
            sizes = {d for d in dims if d != 1}
            if len(sizes) > 1:
                raise ConfigError(f"{where_of(layer)}: shapes {', '.join(map(shape_str, shapes))} do not broadcast")
            out.append(sizes.pop() if sizes else 1)
        x = (None, *out)
        for constant in (a for a in args if _is_constant(a)):
            fixed = _constant_value(layer, constant).shape
            reach = len(fixed) == len(x) and fixed[0] != 1 or len(fixed) > len(x)
            if reach or any(c != d and 1 not in (c, d) for c, d in zip(reversed(fixed), reversed(x[1:]))):
                raise ConfigError(f"{where_of(layer)}: shapes {shape_str(x)} and {tuple(fixed)} do not broadcast")
            tail = [c if d == 1 else d for c, d in zip(reversed(fixed), reversed(x[1:]))]
            x = (None, *x[1 : len(x) - len(tail)], *reversed(tail))
        return x

    def _emit_operands(self, ctx, layer, xs, shapes) -> list:
        """The operands' IR nodes: the tensors, a number as a scalar, a constant tensor as a
        'constant' (without a leading 1, which is the batch's)."""
        g, tensors = ctx.g, iter(xs)
        dtype = g.type(xs[0]).dtype

        def operand(v):
            if _is_tensor(v):
                return next(tensors)
            if _number(v):
                return g.const(float(v), dtype)
            value = _constant_value(layer, v)
            value = value.reshape(value.shape[1:]) if value.ndim == len(shapes[0]) else value
            return g.constant(
                values=tuple(value.ravel().tolist()), shape=value.shape, dtype=dtype, name=f"{layer.name}_constant"
            )

        return [operand(v) for v in self._operands(layer)]


class Binary(_Elementwise):
    """add, subtract, multiply, divide, maximum, minimum."""

    def __init__(self, op: str):
        self.op = op

    def emit(self, ctx, layer, xs, shapes):
        return ctx.g.add_node(self.op, tuple(self._emit_operands(ctx, layer, xs, shapes)), name=layer.name)


class Unary(Rule):
    """abs, square, sqrt, exp, expm1, log, log1p, negative, sign: one IR op."""

    def __init__(self, op: str):
        self.op = op

    def emit(self, ctx, layer, xs, shapes):
        return ctx.g.add_node(self.op, (xs[0],), name=layer.name)


class Activation(Rule):
    """An activation of ir/ops/elementwise.py: relu, sigmoid, hard_sigmoid (Keras 3's), ..., with
    the options its IR op takes (elu's and celu's `alpha`, leaky_relu's `negative_slope`, gelu's
    `approximate`, True by default in keras.ops, squareplus's `b`, the shrinks' `threshold`);
    another option is refused, never dropped."""

    OPTIONS = {
        "gelu": {"approximate": True},
        "elu": {"alpha": 1.0},
        "leaky_relu": {"negative_slope": 0.2},
        "celu": {"alpha": 1.0},
        "squareplus": {"b": 4.0},
        "hard_shrink": {"threshold": 0.5},
        "soft_shrink": {"threshold": 0.5},
    }
    RENAMED = {"negative_slope": "alpha", "b": "smoothing"}  # keras.ops's name -> the IR op's attr

    def __init__(self, name: str):
        self.name = name

    def check(self, layer, keras):
        known = self.OPTIONS.get(self.name, {})
        extra = sorted(k for k, v in layer.config.items() if k not in ("name", "tf_function", *known) and v is not None)
        if extra:
            raise ConfigError(f"{where_of(layer)}: options {extra} are not supported")

    def emit(self, ctx, layer, xs, shapes):
        known = self.OPTIONS.get(self.name)
        if known:
            attrs = {self.RENAMED.get(k, k): type(v)(layer.config.get(k, v)) for k, v in known.items()}
            return ctx.g.add_node(self.name, (xs[0],), attrs, name=layer.name)
        return emit_activation(ctx.g, xs[0], self.name, 3, layer.name)


class Formula(Rule):
    """An op of one tensor written in IR ops by `build(g, x, name)`: rsqrt, reciprocal."""

    def __init__(self, build):
        self.build = build

    def emit(self, ctx, layer, xs, shapes):
        return self.build(ctx.g, xs[0], layer.name)


def _reciprocal(g, x, name):
    return g.div(g.const(1.0, g.type(x).dtype), x, name=name)


class Glu(Rule):
    """glu(x, axis): the first half of the axis times the sigmoid of the second, as Keras splits it."""

    def _axis(self, layer, shape) -> int:
        axis = _axis(layer, layer.config.get("axis", -1), len(shape))
        if shape[axis] is None or shape[axis] % 2:
            raise ConfigError(f"{where_of(layer)}: axis {axis} of {shape_str(shape)} must have an even size")
        return axis

    def output_shape(self, layer, shapes):
        axis = self._axis(layer, shapes[0])
        return tuple(d // 2 if i == axis else d for i, d in enumerate(shapes[0]))

    def emit(self, ctx, layer, xs, shapes):
        g, axis = ctx.g, self._axis(layer, shapes[0])
        half = shapes[0][axis] // 2
        first = g.slice(xs[0], axis=axis, start=0, stop=half, name=f"{layer.name}_first")
        gate = g.sigmoid(g.slice(xs[0], axis=axis, start=half, stop=2 * half, name=f"{layer.name}_second"))
        return g.mul(first, gate, name=layer.name)


class Power(Rule):
    """power(x, p): p = 0.5 the square root; an integer p of at most MULTIPLIES in size products
    of x (1 / them for a negative p), as pow gives them for any sign of x. Another p is refused:
    as exp(p * log(x)) its gradient at x = 0 (a ReLU's zeros) would be NaN where pow's is 0."""

    MULTIPLIES = 8

    def _exponent(self, layer):
        args = _args(layer)
        p = args[1] if len(args) == 2 else None
        if not _is_tensor(args[0] if args else None) or not _number(p):
            raise ConfigError(f"{where_of(layer)}: only a tensor to the power of a number is supported")
        if p != 0.5 and not (float(p).is_integer() and abs(p) <= self.MULTIPLIES):
            raise ConfigError(
                f"{where_of(layer)}: power {p!r} is not supported (0.5, or an integer from "
                f"-{self.MULTIPLIES} to {self.MULTIPLIES})"
            )
        return float(p)

    def output_shape(self, layer, shapes):
        self._exponent(layer)
        return shapes[0]

    def emit(self, ctx, layer, xs, shapes):
        g, x, p = ctx.g, xs[0], self._exponent(layer)
        dtype = g.type(x).dtype
        if p == 0.5:
            return g.sqrt(x, name=layer.name)
        n, name = int(abs(p)), None if p < 0 else layer.name
        if n == 0:
            return g.add(g.mul(x, g.const(0.0, dtype)), g.const(1.0, dtype), name=layer.name)
        y = x
        for k in range(2, n + 1):
            last = k == n
            y = g.square(x, name=name if last else None) if k == 2 else g.mul(y, x, name=name if last else None)
        return g.div(g.const(1.0, dtype), y, name=layer.name) if p < 0 else y


def _not_equal(g, a, b, name=None):
    """1.0 where a != b, else 0.0: the IR's comparisons have equal, not its negation."""
    return g.sub(g.const(1.0, g.type(a).dtype), g.equal(a, b), name=name)


class Compare(Binary):
    """greater, greater_equal, less, less_equal, equal, not_equal: 1.0 where true, else 0.0 (Keras
    gives booleans, which arithmetic, where and cast read as 1 and 0); no gradient."""

    def emit(self, ctx, layer, xs, shapes):
        if self.op != "not_equal":
            return super().emit(ctx, layer, xs, shapes)
        return _not_equal(ctx.g, *self._emit_operands(ctx, layer, xs, shapes), name=layer.name)


class Logical(_Elementwise):
    """logical_and, logical_or, logical_xor of two operands, logical_not of one: 1.0 where true,
    else 0.0, an operand true where it is not 0 (a comparison's 1.0, a cast's bool); no gradient."""

    def __init__(self, op: str):
        self.op, self.arity = op, 1 if op == "not" else 2

    def emit(self, ctx, layer, xs, shapes):
        g = ctx.g
        operands = self._emit_operands(ctx, layer, xs, shapes)
        zero = g.const(0.0, g.type(operands[0]).dtype)
        if self.op == "not":
            return g.equal(operands[0], zero, name=layer.name)
        a, b = (_not_equal(g, v, zero) for v in operands)
        if self.op == "and":
            return g.mul(a, b, name=layer.name)
        if self.op == "or":
            return g.maximum(a, b, name=layer.name)
        return g.abs(g.sub(a, b), name=layer.name)


class Where(_Elementwise):
    """where(condition, x1, x2): x1 where the condition is not 0, else x2."""

    arity = 3

    def emit(self, ctx, layer, xs, shapes):
        return ctx.g.where(*self._emit_operands(ctx, layer, xs, shapes), name=layer.name)


class Cast(Rule):
    """cast to a float dtype (the model computes in its own float dtype) or to bool (not 0);
    to an integer dtype is refused (kgraph's tensors are floats)."""

    def _dtype(self, layer):
        dtype = layer.config.get("dtype")
        if isinstance(dtype, dict):  # a DTypePolicy
            dtype = (dtype.get("config") or {}).get("name")
        if dtype not in ("float16", "bfloat16", "float32", "float64", "bool"):
            raise ConfigError(f"{where_of(layer)}: a cast to {dtype!r} is not supported (to a float dtype or bool)")
        return dtype

    def output_shape(self, layer, shapes):
        self._dtype(layer)
        return shapes[0]

    def emit(self, ctx, layer, xs, shapes):
        g, x = ctx.g, xs[0]
        if self._dtype(layer) != "bool":
            return x
        return _not_equal(g, x, g.const(0.0, g.type(x).dtype), name=layer.name)


class LogSoftmax(Rule):
    """log_softmax(x, axis): x - max - log(sum(exp(x - max))) along a non-batch axis."""

    def _axis(self, layer, shape) -> int:
        return _axis(layer, layer.config.get("axis", -1), len(shape))

    def output_shape(self, layer, shapes):
        self._axis(layer, shapes[0])
        return shapes[0]

    def emit(self, ctx, layer, xs, shapes):
        g, x = ctx.g, xs[0]
        axes = (self._axis(layer, shapes[0]),)
        shifted = g.sub(x, g.reduce_max(x, axes=axes, keepdims=True))
        total = g.reduce_sum(g.exp(shifted), axes=axes, keepdims=True)
        return g.sub(shifted, g.log(total), name=layer.name)


class Clip(Rule):
    def _limits(self, layer):
        lo, hi = layer.config.get("x_min"), layer.config.get("x_max")
        if not (_number(lo) and _number(hi)) or lo > hi:
            raise ConfigError(f"{where_of(layer)}: x_min and x_max must be numbers, x_min <= x_max")
        return float(lo), float(hi)

    def output_shape(self, layer, shapes):
        self._limits(layer)
        return shapes[0]

    def emit(self, ctx, layer, xs, shapes):
        lo, hi = self._limits(layer)
        return ctx.g.clip(xs[0], lo=lo, hi=hi, name=layer.name)


class Reduce(Rule):
    """mean, sum, max over non-batch axes (`axis` an int or a list), keepdims or not."""

    def __init__(self, op: str):
        self.op = op

    def _axes(self, layer, shape) -> tuple:
        axis = layer.config.get("axis")
        if layer.config.get("initial") is not None:
            raise ConfigError(f"{where_of(layer)}: initial={layer.config['initial']!r} is not supported")
        if axis is None:
            raise ConfigError(f"{where_of(layer)}: a reduction over every axis, the batch's too, is not supported")
        axes = [axis] if isinstance(axis, int) else list(axis) if isinstance(axis, (list, tuple)) else [axis]
        return tuple(sorted({_axis(layer, a, len(shape)) for a in axes}))

    def output_shape(self, layer, shapes):
        axes, keep = self._axes(layer, shapes[0]), bool(layer.config.get("keepdims"))
        return tuple(1 if i in axes else d for i, d in enumerate(shapes[0]) if keep or i not in axes)

    def emit(self, ctx, layer, xs, shapes):
        axes, keep = self._axes(layer, shapes[0]), bool(layer.config.get("keepdims"))
        return ctx.g.add_node(self.op, (xs[0],), {"axes": axes, "keepdims": keep}, name=layer.name)


class Delegate(Rule):
    """An op that is a layer with its config renamed: concatenate, reshape, transpose, softmax."""

    inputs = None

    def __init__(self, adapt):
        self.adapt = adapt  # layer -> (layer rule, layer as that rule reads it)

    def check(self, layer, keras):
        rule, shim = self.adapt(layer)
        rule.check(shim, keras)

    def output_shape(self, layer, shapes):
        rule, shim = self.adapt(layer)
        return rule.output_shape(shim, shapes)

    def emit(self, ctx, layer, xs, shapes):
        rule, shim = self.adapt(layer)
        return rule.emit(ctx, shim, xs, shapes)


def _reshape(layer):
    shape = layer.config.get("newshape", layer.config.get("new_shape"))
    if not isinstance(shape, (list, tuple)) or not shape or shape[0] not in (-1, None):
        raise ConfigError(f"{where_of(layer)}: newshape {shape!r} must keep the batch axis first (as -1 or None)")
    return _as(Reshape(), layer, target_shape=list(shape[1:]))


def _transpose(layer):
    axes = layer.config.get("axes")
    if not isinstance(axes, (list, tuple)) or not axes or axes[0] != 0:
        raise ConfigError(f"{where_of(layer)}: axes {axes!r} must keep the batch axis first")
    return _as(Permute(), layer, dims=list(axes[1:]))


class Reshaped(Rule):
    """expand_dims and squeeze: a reshape by an axis."""

    def __init__(self, expand: bool):
        self.expand = expand

    def output_shape(self, layer, shapes):
        shape, axis = list(shapes[0]), layer.config.get("axis")
        if self.expand:  # an axis of the output, a rank more than the input
            shape.insert(_axis(layer, axis, len(shape) + 1), 1)
            return tuple(shape)
        axes = [i for i, d in enumerate(shape) if d == 1] if axis is None else [_axis(layer, axis, len(shape))]
        if any(shape[a] != 1 for a in axes):
            raise ConfigError(f"{where_of(layer)}: cannot squeeze axis {axis} of {shape_str(shapes[0])}")
        return tuple(d for i, d in enumerate(shape) if i not in axes)

    def emit(self, ctx, layer, xs, shapes):
        return ctx.g.reshape(xs[0], shape=ir_shape(self.output_shape(layer, shapes)), name=layer.name)


class Stack(Rule):
    """stack(tensors, axis): each tensor gains the axis, then they are concatenated along it."""

    inputs = None

    def output_shape(self, layer, shapes):
        if any(s != shapes[0] for s in shapes):
            raise ConfigError(
                f"{where_of(layer)}: stacks tensors of different shapes {', '.join(map(shape_str, shapes))}"
            )
        out = list(shapes[0])  # the new axis is one of the output's, a rank more than the inputs
        out.insert(_axis(layer, layer.config.get("axis", 0), len(out) + 1), len(shapes))
        return tuple(out)

    def emit(self, ctx, layer, xs, shapes):
        g, out = ctx.g, self.output_shape(layer, shapes)
        axis = (layer.config.get("axis", 0)) % len(out)
        one = ir_shape(tuple(1 if i == axis else d for i, d in enumerate(out)))
        parts = [g.reshape(x, shape=one, name=f"{layer.name}_{k}") for k, x in enumerate(xs)]
        return parts[0] if len(parts) == 1 else g.concat(*parts, axis=axis, name=layer.name)


def _slice_text(cfg: dict) -> str:
    """A serialized slice as Python writes it: 1:5:2."""
    text = ":".join("" if cfg.get(k) is None else str(cfg.get(k)) for k in ("start", "stop", "step"))
    return text.removesuffix(":")


class GetItem(Rule):
    """x[...] with, per axis, an integer (the axis goes) or a slice of any step, an Ellipsis, and
    None (a new axis of size 1) after the batch axis; the batch axis whole."""

    def _index(self, layer, shape):
        """(cuts: (axis, start, stop, step, dropped) per indexed input axis, layout: the output's
        axes in order, each an input axis or None for a new one)."""
        args = _args(layer)
        index = args[1] if len(args) == 2 else None
        index = list(index) if isinstance(index, list) else [index]
        dots = [
            k for k, item in enumerate(index) if isinstance(item, dict) and item.get("class_name") == "__ellipsis__"
        ]
        if len(dots) > 1:
            raise ConfigError(f"{where_of(layer)}: an index with more than one Ellipsis")
        consumed = sum(item is not None for item in index) - len(dots)
        if dots:  # ... stands for as many whole slices as the other entries leave
            whole = {"class_name": "__slice__", "config": {"start": None, "stop": None, "step": None}}
            index[dots[0] : dots[0] + 1] = [whole] * (len(shape) - consumed)
        if consumed > len(shape):
            raise ConfigError(f"{where_of(layer)}: {consumed} indices into {shape_str(shape)}")
        cuts, layout, axis = [], [], 0
        for item in index:
            if item is None:
                if axis == 0:
                    raise ConfigError(f"{where_of(layer)}: a new axis before the batch axis is not supported")
                layout.append(None)
                continue
            cuts.append(self._cut(layer, shape, axis, item))
            layout.append(axis)
            axis += 1
        layout += range(axis, len(shape))
        return [c for c in cuts if c is not None], layout

    def _cut(self, layer, shape, axis, item):
        """(axis, start, stop, step, dropped) of one index entry; None for the batch axis's whole slice."""
        if axis == 0 and not isinstance(item, dict):
            raise ConfigError(f"{where_of(layer)}: indexing the batch axis ({item!r}) is not supported")
        if _number(item) and isinstance(item, int):
            size = shape[axis]
            if size is None or not -size <= item < size:
                raise ConfigError(f"{where_of(layer)}: index {item} is out of axis {axis} of {shape_str(shape)}")
            return (axis, item % size, item % size + 1, 1, True)
        cfg = item.get("config", {}) if isinstance(item, dict) and item.get("class_name") == "__slice__" else None
        if cfg is None:
            raise ConfigError(
                f"{where_of(layer)}: only integers, slices, ... and None are supported, got {str(item)[:80]}"
            )
        step = cfg.get("step")
        if step is not None and (isinstance(step, bool) or not isinstance(step, int) or step == 0):
            raise ConfigError(
                f"{where_of(layer)}: slice {_slice_text(cfg)} of axis {axis}: a step is a non-zero integer"
            )
        if axis == 0:
            if (cfg.get("start"), cfg.get("stop"), step or 1) != (None, None, 1):
                raise ConfigError(f"{where_of(layer)}: slicing the batch axis ({_slice_text(cfg)}) is not supported")
            return None
        size = shape[axis]
        if size is None:
            raise ConfigError(f"{where_of(layer)}: slicing axis {axis} of unknown size is not supported")
        if any(
            cfg.get(k) is not None and (isinstance(cfg.get(k), bool) or not isinstance(cfg.get(k), int))
            for k in ("start", "stop")
        ):
            raise ConfigError(f"{where_of(layer)}: slice bounds must be integers, got {str(cfg)[:80]}")
        start, stop, step = slice(cfg.get("start"), cfg.get("stop"), step).indices(size)
        if not range(start, stop, step):
            raise ConfigError(f"{where_of(layer)}: an empty slice {_slice_text(cfg)} of axis {axis}")
        return (axis, start, stop, step, False)

    def output_shape(self, layer, shapes):
        cuts, layout = self._index(layer, shapes[0])
        sizes = list(shapes[0])
        for axis, start, stop, step, _ in cuts:
            sizes[axis] = len(range(start, stop, step))
        dropped = {axis for axis, *_, drop in cuts if drop}
        return tuple(1 if a is None else sizes[a] for a in layout if a not in dropped)

    def emit(self, ctx, layer, xs, shapes):
        g, y = ctx.g, xs[0]
        for axis, start, stop, step, _ in self._index(layer, shapes[0])[0]:
            size = shapes[0][axis]
            if step < 0:  # the axis reversed, then a forward slice of it
                y = flip_axis(g, y, axis)
                start, stop, step = size - 1 - start, size - 1 - stop, -step
            if (start, stop) != (0, size):
                y = g.slice(y, axis=axis, start=start, stop=stop, name=f"{layer.name}_axis{axis}")
            if step > 1:
                y = _every(g, y, axis, step)
        out = self.output_shape(layer, shapes)
        same = tuple(out[1:]) == tuple(g.type(y).shape[1:])
        return y if same else g.reshape(y, shape=ir_shape(out), name=layer.name)


def flip_axis(g, y, axis):
    """y with a non-batch axis reversed: the IR reverses axis 1, so the axis is swapped there and
    back (a swap is its own inverse)."""
    if axis == 1:
        return g.reverse_time(y)
    perm = list(range(len(g.type(y).shape)))
    perm[1], perm[axis] = axis, 1
    return g.transpose(g.reverse_time(g.transpose(y, perm=tuple(perm))), perm=tuple(perm))


def _every(g, y, axis, step):
    """Every step-th entry of `axis` from its first: the axis padded with zeros to a multiple of
    step, split into (count, step), and the first of each step kept."""
    shape = g.type(y).shape
    count = -(-shape[axis] // step)
    if count * step > shape[axis]:
        y = g.pad(y, pads=tuple((0, count * step - d if a == axis else 0) for a, d in enumerate(shape)))
    y = g.reshape(y, shape=(*shape[:axis], count, step, *shape[axis + 1 :]))
    y = g.slice(y, axis=axis + 1, start=0, stop=1)
    return g.reshape(y, shape=(*shape[:axis], count, *shape[axis + 1 :]))


class Min(Reduce):
    """min over non-batch axes: -max(-x) (the IR's reductions have a max)."""

    def __init__(self):
        super().__init__("reduce_max")

    def emit(self, ctx, layer, xs, shapes):
        g = ctx.g
        largest = super().emit(
            ctx, dataclasses.replace(layer, name=f"{layer.name}_of_negative"), [g.neg(xs[0])], shapes
        )
        return g.neg(largest, name=layer.name)


class Matmul(Rule):
    """matmul of two tensors of the same rank, at least 3: a product per leading index (tf.matmul's
    transpose_a and transpose_b too)."""

    inputs = 2

    def _flags(self, layer):
        return bool(layer.config.get("transpose_a")), bool(layer.config.get("transpose_b"))

    def output_shape(self, layer, shapes):
        (a, b), (ta, tb) = shapes, self._flags(layer)
        m, ka = (a[-1], a[-2]) if ta else (a[-2], a[-1])
        kb, n = (b[-1], b[-2]) if tb else (b[-2], b[-1])
        if len(a) < 3 or len(b) != len(a) or a[1:-2] != b[1:-2] or ka != kb:
            raise ConfigError(
                f"{where_of(layer)}: multiplies tensors of the same rank (3 or more) with matching leading "
                f"and inner axes, got {shape_str(a)} and {shape_str(b)}"
            )
        return (*a[:-2], m, n)

    def emit(self, ctx, layer, xs, shapes):
        ta, tb = self._flags(layer)
        return ctx.g.batch_matmul(xs[0], xs[1], transpose_a=ta, transpose_b=tb, name=layer.name)


OP_RULES = {
    **{
        f"op:{k}": Binary(op)
        for k, op in [
            ("Add", "add"),
            ("Subtract", "sub"),
            ("Multiply", "mul"),
            ("Divide", "div"),
            ("TrueDivide", "div"),
            ("Maximum", "maximum"),
            ("Minimum", "minimum"),
        ]
    },
    **{
        f"op:{k}": Unary(op)
        for k, op in [
            ("Absolute", "abs"),
            ("Abs", "abs"),
            ("Square", "square"),
            ("Sqrt", "sqrt"),
            ("Exp", "exp"),
            ("Log", "log"),
            ("Negative", "neg"),
            ("Sign", "sign"),
            ("Log1p", "log1p"),
            ("Expm1", "expm1"),
        ]
    },
    "op:Rsqrt": Formula(lambda g, x, name: rsqrt(g, x, name=name)),
    "op:Reciprocal": Formula(_reciprocal),
    "op:Glu": Glu(),
    **{
        f"op:{k}": Activation(name)
        for k, name in [
            ("Relu", "relu"),
            ("Relu6", "relu6"),
            ("Sigmoid", "sigmoid"),
            ("Tanh", "tanh"),
            ("Silu", "silu"),
            ("Swish", "silu"),
            ("Softplus", "softplus"),
            ("Softsign", "softsign"),
            ("Elu", "elu"),
            ("Selu", "selu"),
            ("Gelu", "gelu"),
            ("HardSigmoid", "hard_sigmoid"),
            ("HardSilu", "hard_silu"),
            ("HardSwish", "hard_silu"),
            ("LeakyRelu", "leaky_relu"),
            ("LogSigmoid", "log_sigmoid"),
            ("Celu", "celu"),
            ("HardTanh", "hard_tanh"),
            ("Squareplus", "squareplus"),
            ("SparsePlus", "sparse_plus"),
            ("SparseSigmoid", "sparse_sigmoid"),
            ("HardShrink", "hard_shrink"),
            ("SoftShrink", "soft_shrink"),
            ("TanhShrink", "tanh_shrink"),
        ]
    },
    **{
        f"op:{k}": Compare(op)
        for k, op in [
            ("Greater", "greater"),
            ("GreaterEqual", "greater_equal"),
            ("Less", "less"),
            ("LessEqual", "less_equal"),
            ("Equal", "equal"),
            ("NotEqual", "not_equal"),
        ]
    },
    "op:Where": Where(),
    **{f"op:Logical{k.capitalize()}": Logical(k) for k in ("and", "or", "xor", "not")},
    "op:Cast": Cast(),
    "op:LogSoftmax": LogSoftmax(),
    "op:Power": Power(),
    "op:Clip": Clip(),
    "op:Mean": Reduce("reduce_mean"),
    "op:Sum": Reduce("reduce_sum"),
    "op:Max": Reduce("reduce_max"),
    "op:Min": Min(),
    "op:Concatenate": Delegate(lambda layer: (Concatenate(), layer)),
    "op:Reshape": Delegate(_reshape),
    "op:Transpose": Delegate(_transpose),
    "op:Softmax": Delegate(lambda layer: (Softmax(), layer)),
    "op:ExpandDims": Reshaped(expand=True),
    "op:Squeeze": Reshaped(expand=False),
    "op:Stack": Stack(),
    "op:GetItem": GetItem(),
    "op:Matmul": Matmul(),
}
