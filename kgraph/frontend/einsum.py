"""keras.ops.einsum and the EinsumDense layer, written in the IR's transpose, reshape, reduce_sum,
matmul (a tensor times a fixed matrix: a weight or a constant) and batch_matmul (two tensors
whose batch axes agree). An axis in one operand only and not in the output is summed first;
then each operand's axes are put in the order (shared, kept, contracted) so that one GEMM does
the contraction, as opt_einsum and numpy.einsum do for a pair. The batch axis is the first letter
of the first operand and of the output; a letter repeated in one operand (a trace) is refused."""

from __future__ import annotations

import math
import re
import string

from ir import BATCH

from .activations import emit_activation, parse_activation
from .constraints import parse_constraint
from .errors import ConfigError
from .initializers import parse_initializer
from .ops import _args, _constant_value, _is_constant, _is_tensor
from .regularizers import parse_regularizer
from .rule import Rule, WeightDecl, shape_str, where_of


def _is_tensor_or_constant(arg) -> bool:
    return _is_tensor(arg) or _is_constant(arg)


def parse_equation(layer, equation, ranks) -> tuple[list[str], str]:
    """(each operand's letters, the output's letters) of an explicit equation ("ab,bc->ac"), an
    ellipsis ("...") spelled out as letters the equation does not use, one per elided axis."""
    if not isinstance(equation, str) or equation.count("->") != 1:
        raise ConfigError(f"{where_of(layer)}: the equation must be explicit (inputs->output), got {equation!r}")
    inputs, output = equation.replace(" ", "").split("->")
    specs = inputs.split(",")
    if len(specs) != len(ranks) or not all(re.fullmatch(r"[a-zA-Z]*(\.\.\.)?[a-zA-Z]*", s) for s in [*specs, output]):
        raise ConfigError(f"{where_of(layer)}: equation {equation!r} does not fit {len(ranks)} operands")
    free = [c for c in string.ascii_uppercase + string.ascii_lowercase if c not in equation]
    elided = {len(s.replace("...", "")) - r for s, r in zip(specs, ranks) if "..." in s}
    if len(elided) > 1:
        raise ConfigError(f"{where_of(layer)}: the operands of {equation!r} elide different numbers of axes")
    dots = "".join(free[: -elided.pop()]) if elided else ""
    specs = [s.replace("...", dots) for s in specs]
    output = output.replace("...", dots)
    for s, r in zip(specs, ranks):
        if len(s) != r or len(set(s)) != len(s):
            raise ConfigError(f"{where_of(layer)}: {equation!r} names {len(s)} axes of a rank-{r} operand once each")
    if len(set(output)) != len(output) or any(c not in "".join(specs) for c in output):
        raise ConfigError(f"{where_of(layer)}: the output {output!r} of {equation!r} is not made of input letters")
    return specs, output


def _transposed(g, x, letters, order):
    perm = [letters.index(c) for c in order]
    return x if perm == sorted(perm) else g.transpose(x, perm=tuple(perm))


def _sizes(g, operands) -> dict:
    sizes = {}
    for x, letters in operands:
        for c, d in zip(letters, g.type(x).shape):
            if sizes.setdefault(c, d) != d:
                raise ValueError(f"axis {c!r} has sizes {sizes[c]} and {d}")
    return sizes


def _summed_alone(g, x, letters, elsewhere):
    """x summed over the axes whose letters appear nowhere else: (node, its letters)."""
    alone = tuple(i for i, c in enumerate(letters) if c not in elsewhere)
    if not alone:
        return x, letters
    return g.reduce_sum(x, axes=alone), "".join(c for i, c in enumerate(letters) if i not in alone)


def contract(layer, g, operands, output, name):
    """The einsum of one or two operands [(node, letters)], the first batched; the second is
    batched (it starts with the batch letter) or fixed (it has no batch letter)."""
    try:
        sizes = _sizes(g, operands)
    except ValueError as e:
        raise ConfigError(f"{where_of(layer)}: {e}") from None
    (a, la), rest = operands[0], operands[1:]
    if not output or output[0] != la[0]:
        raise ConfigError(f"{where_of(layer)}: the output must start with the batch axis {la[0]!r}")
    if not rest:  # a transpose, after the sum of the letters the output drops
        a, la = _summed_alone(g, a, la, output)
        y = _transposed(g, a, la, output)
        return g.reshape(y, shape=g.type(y).shape, name=name)
    (b, lb), batched = rest[0], rest[0][1][:1] == la[:1]
    a, la = _summed_alone(g, a, la, lb + output)
    b, lb = _summed_alone(g, b, lb, la + output)
    if not batched and la[0] in lb:
        raise ConfigError(f"{where_of(layer)}: the batch axis {la[0]!r} must lead the second operand or be absent")
    shared = [c for c in output if c in la and c in lb]
    contracted = [c for c in la if c in lb and c not in output]
    kept_a, kept_b = [c for c in la if c not in lb], [c for c in lb if c not in la]
    if not batched and shared:
        raise ConfigError(f"{where_of(layer)}: a fixed operand sharing an output axis {shared} is not supported")
    k = math.prod(sizes[c] for c in contracted)
    a = _transposed(g, a, la, shared + kept_a + contracted)
    b = _transposed(g, b, lb, shared + contracted + kept_b)
    fixed = [sizes[c] for c in shared[1:]]  # the batch axis stays where it is, first
    if batched:
        m, n = math.prod(sizes[c] for c in kept_a), math.prod(sizes[c] for c in kept_b)
        a = g.reshape(a, shape=(BATCH, *fixed, m, k))
        b = g.reshape(b, shape=(BATCH, *fixed, k, n))
        y = g.batch_matmul(a, b)
        order = shared + kept_a + kept_b
        y = g.reshape(y, shape=(BATCH, *fixed, *(sizes[c] for c in kept_a + kept_b)))
    else:  # the batch letter is the first kept one of a
        m, n = math.prod(sizes[c] for c in kept_a[1:]), math.prod(sizes[c] for c in kept_b)
        y = g.matmul(g.reshape(a, shape=(BATCH, m, k)), g.reshape(b, shape=(k, n)))
        order = kept_a + kept_b
        y = g.reshape(y, shape=(BATCH, *(sizes[c] for c in kept_a[1:] + kept_b)))
    y = _transposed(g, y, order, output)
    return g.reshape(y, shape=g.type(y).shape, name=name)


class Einsum(Rule):
    """einsum(subscripts, a[, b]): tensors, or a tensor and a constant tensor."""

    inputs = None

    def _operands(self, layer):
        args = _args(layer)
        if not 1 <= len(args) <= 2 or not _is_tensor(args[0]) or not all(map(_is_tensor_or_constant, args)):
            raise ConfigError(
                f"{where_of(layer)}: takes one or two operands, the first a tensor, the second a tensor or a constant"
            )
        return args

    def _dims(self, layer, shapes) -> list:
        """Each operand's shape: a tensor's, or a constant's own."""
        args = self._operands(layer)
        return [shapes[0], *(shapes[1] if _is_tensor(a) else _constant_value(layer, a).shape for a in args[1:])]

    def _specs(self, layer, shapes):
        return parse_equation(layer, layer.config.get("subscripts"), [len(d) for d in self._dims(layer, shapes)])

    def output_shape(self, layer, shapes):
        specs, output = self._specs(layer, shapes)
        sizes = {}
        for spec, dims in zip(specs, self._dims(layer, shapes)):
            for c, d in zip(spec, dims):
                if sizes.setdefault(c, d) != d:
                    raise ConfigError(f"{where_of(layer)}: axis {c!r} has sizes {sizes[c]} and {d}")
        if output[:1] != specs[0][:1]:
            raise ConfigError(f"{where_of(layer)}: the output must start with the batch axis {specs[0][0]!r}")
        return tuple(sizes[c] for c in output)

    def emit(self, ctx, layer, xs, shapes):
        g, args = ctx.g, self._operands(layer)
        specs, output = self._specs(layer, shapes)
        nodes = list(xs)
        if len(args) == 2 and _is_constant(args[1]):
            value = _constant_value(layer, args[1])
            nodes.append(
                g.constant(
                    values=tuple(value.ravel().tolist()),
                    shape=value.shape,
                    dtype=g.type(xs[0]).dtype,
                    name=f"{layer.name}_constant",
                )
            )
        return contract(layer, g, list(zip(nodes, specs)), output, layer.name)


class EinsumDense(Rule):
    """Keras's EinsumDense: einsum(equation, x, kernel) + bias over bias_axes, then the
    activation. The kernel's and bias's shapes follow Keras's _analyze_einsum_string."""

    def check(self, layer, keras):
        if layer.config.get("lora_rank"):
            raise ConfigError(f"{where_of(layer)}: lora_rank={layer.config['lora_rank']!r} is not supported")
        parse_activation(layer.config.get("activation"), where_of(layer))

    def _analysis(self, layer, shape):
        """(kernel shape, bias shape or None, output shape, input letters, kernel letters, output letters)."""
        equation = layer.config.get("equation")
        kernel_rank = (
            len(re.sub(r"\.\.\.", "", equation.split(",")[1].split("->")[0]))
            if isinstance(equation, str) and "," in equation
            else -1
        )
        (spec_x, spec_w), spec_out = parse_equation(layer, equation, [len(shape), kernel_rank])
        wanted = layer.config.get("output_shape")
        wanted = [wanted] if isinstance(wanted, int) else list(wanted or [])
        # output_shape names the output's written axes but the batch's; an ellipsis's come from the input
        written = [c for c in spec_out if c in equation and c != spec_x[0]]
        if len(wanted) != len(written):
            raise ConfigError(f"{where_of(layer)}: output_shape {wanted} does not fit the output of {equation!r}")
        out = {spec_x[0]: None, **dict(zip(written, wanted))}
        sizes = dict(zip(spec_x, shape))
        for c in spec_out[1:]:
            if c in sizes and out.get(c) is not None and out[c] != sizes[c]:
                raise ConfigError(
                    f"{where_of(layer)}: output_shape {wanted} disagrees with the input {shape_str(shape)} at {c!r}"
                )
            out[c] = sizes.get(c, out.get(c))
        if any(out[c] is None for c in spec_out[1:]):
            raise ConfigError(f"{where_of(layer)}: output_shape {wanted} leaves an axis of {spec_out!r} unknown")
        if any(c not in sizes and c not in out for c in spec_w):
            raise ConfigError(
                f"{where_of(layer)}: a kernel axis of {equation!r} is neither in the input nor the output"
            )
        kernel = tuple(out[c] if c in out else sizes[c] for c in spec_w)
        axes = layer.config.get("bias_axes")
        bias = None
        if axes:
            if any(c not in spec_out for c in axes):
                raise ConfigError(f"{where_of(layer)}: bias_axes {axes!r} are not all in the output {spec_out!r}")
            first = min(spec_out.index(c) for c in axes)
            bias = tuple(out[c] if c in axes else 1 for c in spec_out[first:])
        return kernel, bias, (None, *(out[c] for c in spec_out[1:])), spec_x, spec_w, spec_out

    def output_shape(self, layer, shapes):
        return self._analysis(layer, shapes[0])[2]

    def weights(self, layer, shapes):
        cfg, where = layer.config, where_of(layer)
        kernel, bias = self._analysis(layer, shapes[0])[:2]

        def decl(name, shape, default):
            return WeightDecl(
                name,
                shape,
                parse_initializer(cfg.get(f"{name}_initializer", default), where),
                parse_regularizer(cfg.get(f"{name}_regularizer"), where),
                constraint=parse_constraint(cfg.get(f"{name}_constraint"), where, shape),
            )

        return [decl("kernel", kernel, "glorot_uniform")] + ([decl("bias", bias, "zeros")] if bias else [])

    def emit(self, ctx, layer, xs, shapes):
        g, p = ctx.g, ctx.params
        _, bias, _, spec_x, spec_w, spec_out = self._analysis(layer, shapes[0])
        y = contract(layer, g, [(xs[0], spec_x), (p["kernel"], spec_w)], spec_out, f"{layer.name}_einsum")
        if bias:  # over the output's last axes, 1 where bias_axes leave one out
            y = g.add(y, p["bias"], name=f"{layer.name}_bias")
        return emit_activation(g, y, parse_activation(layer.config.get("activation"), ""), ctx.keras, layer.name)


EINSUM_RULES = {"op:Einsum": Einsum(), "EinsumDense": EinsumDense()}
