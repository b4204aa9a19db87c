"""Rules of the recurrent layers: SimpleRNN, LSTM, GRU and Bidirectional, in Keras 2 (tf.keras) and
Keras 3 configs, and the masks of Embedding(mask_zero=True) and Masking that they read.

A layer is one matmul for the input projection of every step (x·W + b over [B*T, D]), then the IR's
rnn_sequence time loop. Weights are Keras's: kernel [D, G*units], recurrent_kernel [units, G*units],
bias [G*units] (a reset_after GRU: [2, 3*units], input bias then recurrent bias); gates in Keras's
order (LSTM i f c o, GRU z r h). A mask is a [B,T] 0/1 node, kept per tensor in ctx.masks."""

from __future__ import annotations

import copy

from ir import BATCH, TensorType
from ir.ops.recurrent import ACTIVATION_NAMES

from .activations import parse_activation
from .errors import ConfigError
from .initializers import _MAKERS, initial_value, parse_initializer
from .extra_layers import EXTRA
from .layers import CORE
from .rule import Rule, WeightDecl, is_count, shape_str, where_of
from .constraints import parse_constraint
from .regularizers import parse_regularizer

GATES = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}
CELL = {"SimpleRNN": "simple", "LSTM": "lstm", "GRU": "gru"}
DEFAULT_RECURRENT_ACTIVATION = {"SimpleRNN": None, "LSTM": "sigmoid", "GRU": "sigmoid"}


def _unit_forget_bias(rng, shape, c, dt):
    """LSTM's bias with unit_forget_bias: the bias initializer for gates i, c, o and ones for f."""
    units = c["units"]
    value = initial_value(c["init"], shape, rng, str(dt)).copy()
    value[units : 2 * units] = 1
    return value


_MAKERS["_UnitForgetBias"] = _unit_forget_bias  # built here only, never parsed from a config


def _activation(layer, key, default, keras):
    """The IR's name of an activation: Keras 2's hard_sigmoid is clip(0.2x + 0.5), Keras 3's x/6 + 0.5."""
    name = parse_activation(layer.config.get(key, default), where_of(layer))
    if name == "hard_sigmoid" and keras < 3:
        return "hard_sigmoid_k2"
    if name not in ACTIVATION_NAMES:
        supported = ", ".join(n for n in ACTIVATION_NAMES if n != "hard_sigmoid_k2")
        raise ConfigError(
            f"{where_of(layer)}: {key} {name!r} is not supported in a recurrent layer; supported: {supported}"
        )
    return name


class Recurrent(Rule):
    """SimpleRNN, LSTM, GRU. Extra inputs after the sequence are initial states (Keras 2 lists
    them as inputs of the call)."""

    inputs = None

    def __init__(self, cls: str):
        self.cls = cls

    def _states(self):
        return 2 if self.cls == "LSTM" else 1

    def _reset_after(self, layer):
        # Keras 2.0-2.2 wrote no reset_after (and always an 'implementation') and computed the old
        # way; tf.keras 2 and Keras 3 write it, and True is Keras 3's default
        return self.cls == "GRU" and bool(layer.config.get("reset_after", "implementation" not in layer.config))

    def check(self, layer, keras):
        cfg, where = layer.config, where_of(layer)
        if cfg.get("units") is None and "output_dim" in cfg:
            raise ConfigError(
                f"{where}: Keras 1 recurrent layers are not supported (their weights are separate arrays per gate)"
            )
        if not is_count(cfg.get("units")):
            raise ConfigError(f"{where}: units must be a positive integer, got {cfg.get('units')!r}")
        for key, why in (
            ("stateful", "state kept across batches"),
            ("unroll", "the loop is not unrolled"),
            ("time_major", "inputs must be batch-major"),
        ):
            if cfg.get(key):
                raise ConfigError(f"{where}: {key}=True is not supported ({why})")
        for key in ("dropout", "recurrent_dropout"):
            rate = cfg.get(key, 0.0)
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
                raise ConfigError(f"{where}: {key} must be in [0, 1), got {rate!r}")
        if isinstance(cfg.get("cell"), dict):
            raise ConfigError(f"{where}: a custom cell is not supported")
        _activation(layer, "activation", "tanh", keras)
        if self.cls != "SimpleRNN":
            _activation(layer, "recurrent_activation", "sigmoid", keras)
        for key, default in (
            ("kernel_initializer", "glorot_uniform"),
            ("recurrent_initializer", "orthogonal"),
            ("bias_initializer", "zeros"),
        ):
            parse_initializer(cfg.get(key, default), where)
        for key in ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer"):
            parse_regularizer(cfg.get(key), where)

    def _input(self, layer, shapes):
        if len(shapes[0]) != 3:
            raise ConfigError(f"{where_of(layer)}: takes a (batch, steps, features) input, got {shape_str(shapes[0])}")
        units = layer.config["units"]
        if len(shapes) not in (1, 1 + self._states()) or any(tuple(s) != (None, units) for s in shapes[1:]):
            raise ConfigError(
                f"{where_of(layer)}: takes a sequence and optionally {self._states()} initial "
                f"state(s) of shape (None, {units}), got {', '.join(map(shape_str, shapes))}"
            )
        return shapes[0]

    def output_shapes(self, layer, shapes):
        b, t, _ = self._input(layer, shapes)
        units, cfg = layer.config["units"], layer.config
        out = (b, t, units) if cfg.get("return_sequences") else (b, units)
        return [out] + ([(b, units)] * self._states() if cfg.get("return_state") else [])

    def output_shape(self, layer, shapes):
        return self.output_shapes(layer, shapes)[0]

    def weights(self, layer, shapes, prefix=""):
        cfg, where = layer.config, where_of(layer)
        units, g = cfg["units"], GATES[self.cls] * cfg["units"]
        d = self._input(layer, shapes)[2]
        out = [
            WeightDecl(
                f"{prefix}kernel",
                (d, g),
                parse_initializer(cfg.get("kernel_initializer", "glorot_uniform"), where),
                parse_regularizer(cfg.get("kernel_regularizer"), where),
                constraint=parse_constraint(cfg.get("kernel_constraint"), where, (d, g)),
            ),
            WeightDecl(
                f"{prefix}recurrent_kernel",
                (units, g),
                parse_initializer(cfg.get("recurrent_initializer", "orthogonal"), where),
                parse_regularizer(cfg.get("recurrent_regularizer"), where),
                constraint=parse_constraint(cfg.get("recurrent_constraint"), where, (units, g)),
            ),
        ]
        if cfg.get("use_bias", True):
            init = parse_initializer(cfg.get("bias_initializer", "zeros"), where)
            shape = (g,)
            if self.cls == "LSTM" and cfg.get("unit_forget_bias", True):
                init = ("_UnitForgetBias", {"init": init, "units": units})
            if self.cls == "GRU" and self._reset_after(layer):
                shape = (2, g)
            out.append(
                WeightDecl(
                    f"{prefix}bias",
                    shape,
                    init,
                    parse_regularizer(cfg.get("bias_regularizer"), where),
                    constraint=parse_constraint(cfg.get("bias_constraint"), where, shape),
                )
            )
        return out

    def run(self, ctx, layer, xs, shapes, prefix="", zero_output=None):
        """The IR of the layer: [output, states...] as Keras returns them; the sequence output in
        processing order (reversed when go_backwards, as Keras leaves it)."""
        g, cfg, name, p = ctx.g, layer.config, layer.name, ctx.params
        _, t, d = self._input(layer, shapes)
        units, backwards = cfg["units"], bool(cfg.get("go_backwards"))
        x, dtype = xs[0], g.type(xs[0]).dtype
        rate, keep = float(cfg.get("dropout") or 0), None
        if ctx.training and rate:  # one keep mask per sequence and feature, shared by every step and gate
            x = g.mul(x, g.source("rng", f"{name}_dropout", TensorType((BATCH, 1, d), dtype), rate=rate, layer=name))
        rate = float(cfg.get("recurrent_dropout") or 0)
        if ctx.training and rate:  # on the state the recurrent kernel multiplies, likewise
            keep = g.source(
                "rng", f"{name}_recurrent_dropout", TensorType((BATCH, units), dtype), rate=rate, layer=name
            )
        xp = g.matmul(x, p[f"{prefix}kernel"], name=f"{name}_projection")
        bias, rbias = p.get(f"{prefix}bias"), None
        if bias is not None and len(g.type(bias).shape) == 2:  # reset_after GRU: input and recurrent bias
            gates = g.type(bias).shape[1]
            rbias = g.reshape(g.slice(bias, axis=0, start=1, stop=2), shape=(gates,), name=f"{name}_recurrent_bias")
            bias = g.reshape(g.slice(bias, axis=0, start=0, stop=1), shape=(gates,), name=f"{name}_input_bias")
        if bias is not None:
            xp = g.add(xp, bias, name=f"{name}_projection_bias")
        # Keras 3 runs a layer given its initial states through every step, masked or not (its
        # functional call passes it no mask then), though it passes the mask on; tf-keras masks
        mask = ctx.masks.get(xs[0]) if ctx.keras < 3 or len(xs) == 1 else None
        operands = (
            [xp, p[f"{prefix}recurrent_kernel"]] + [v for v in (rbias, mask, keep) if v is not None] + list(xs[1:])
        )
        attrs = {
            "cell": CELL[self.cls],
            "activation": _activation(layer, "activation", "tanh", ctx.keras),
            "go_backwards": backwards,
            "recurrent_bias": rbias is not None,
            "masked": mask is not None,
            "recurrent_dropout": keep is not None,
            "initial": len(xs) > 1,
        }
        if self.cls != "SimpleRNN":
            attrs["recurrent_activation"] = _activation(layer, "recurrent_activation", "sigmoid", ctx.keras)
        if self.cls == "GRU":
            attrs["reset_after"] = self._reset_after(layer)
        states = g.rnn_sequence(*operands, **attrs, name=f"{name}_states")
        seq = states if self.cls != "LSTM" else g.slice(states, axis=2, start=0, stop=units, name=f"{name}_h")
        last = g.reshape(
            g.slice(states, axis=1, start=t - 1, stop=t), shape=(BATCH, g.type(states).shape[2]), name=f"{name}_last"
        )
        finals = (
            [last]
            if self.cls != "LSTM"
            else [
                g.slice(last, axis=1, start=0, stop=units, name=f"{name}_last_h"),
                g.slice(last, axis=1, start=units, stop=2 * units, name=f"{name}_last_c"),
            ]
        )
        if zero_output is None:
            zero_output = bool(cfg.get("zero_output_for_mask"))
        if cfg.get("return_sequences"):
            y = seq
            if mask is not None and zero_output:  # Keras's zero_output_for_mask: masked steps output 0
                m = g.reshape(mask, shape=(BATCH, t, 1))
                y = g.mul(y, g.reverse_time(m) if backwards else m, name=f"{name}_zeroed")
        else:
            y = finals[0]
            if mask is not None and zero_output:
                k = 0 if backwards else t - 1
                y = g.mul(y, g.slice(mask, axis=1, start=k, stop=k + 1), name=f"{name}_zeroed")
        return [y] + (finals if cfg.get("return_state") else [])

    def emit(self, ctx, layer, xs, shapes):
        ys = self.run(ctx, layer, xs, shapes)
        if layer.config.get("return_sequences") and ctx.masks.get(xs[0]) is not None:
            ctx.masks[ys[0]] = ctx.masks[xs[0]]
        return ys


RECURRENT = {cls: Recurrent(cls) for cls in GATES}


class _Inner:
    """A Bidirectional's wrapped layer: a LayerDesc-like view of its config."""

    def __init__(self, entry, outer):
        if not isinstance(entry, dict) or entry.get("class_name") not in RECURRENT:
            cls = entry.get("class_name") if isinstance(entry, dict) else entry
            raise ConfigError(f"{where_of(outer)}: wraps {cls!r}; supported: {', '.join(RECURRENT)}")
        self.class_name = entry["class_name"]
        self.config = entry.get("config") or {}
        self.name = self.config.get("name", self.class_name.lower())


class Bidirectional(Rule):
    """The layer forward and a copy going backwards (or the saved backward_layer); the backward
    sequence is put back in input order, then merged (concat, sum, mul, ave, or None: both)."""

    inputs = 1
    MODES = ("concat", "sum", "mul", "ave", None)

    def _layers(self, layer):
        fwd = _Inner(layer.config.get("layer"), layer)
        if layer.config.get("backward_layer") is not None:
            bwd = _Inner(layer.config["backward_layer"], layer)
        else:  # Keras builds it from the forward layer's config with go_backwards flipped
            bwd = _Inner(copy.deepcopy(layer.config["layer"]), layer)
            bwd.config["go_backwards"] = not fwd.config.get("go_backwards", False)
            bwd.name = "backward_" + fwd.name
        if bool(fwd.config.get("go_backwards")) == bool(bwd.config.get("go_backwards")):
            raise ConfigError(f"{where_of(layer)}: its forward and backward layers must differ in go_backwards")
        for key in ("return_sequences", "return_state"):
            if bool(fwd.config.get(key)) != bool(bwd.config.get(key)):
                raise ConfigError(f"{where_of(layer)}: its forward and backward layers differ in {key}")
        if fwd.name == bwd.name:
            bwd.name = "backward_" + bwd.name
        return fwd, bwd

    def check(self, layer, keras):
        if layer.config.get("merge_mode", "concat") not in self.MODES:
            raise ConfigError(
                f"{where_of(layer)}: merge_mode {layer.config.get('merge_mode')!r} is not one of "
                "concat, sum, mul, ave, None"
            )
        for inner in self._layers(layer):
            RECURRENT[inner.class_name].check(inner, keras)

    def output_shapes(self, layer, shapes):
        fwd, bwd = self._layers(layer)
        f, r = (RECURRENT[i.class_name].output_shapes(i, shapes) for i in (fwd, bwd))
        mode = layer.config.get("merge_mode", "concat")
        if mode is None:
            return [f[0], r[0]] + f[1:] + r[1:]
        y = (*f[0][:-1], f[0][-1] + r[0][-1]) if mode == "concat" else f[0]
        return [y] + f[1:] + r[1:]

    def output_shape(self, layer, shapes):
        return self.output_shapes(layer, shapes)[0]

    def weights(self, layer, shapes):
        return [
            w
            for inner in self._layers(layer)
            for w in RECURRENT[inner.class_name].weights(inner, shapes, prefix=f"{inner.name}/")
        ]

    def emit(self, ctx, layer, xs, shapes):
        g, mode = ctx.g, layer.config.get("merge_mode", "concat")
        fwd, bwd = self._layers(layer)
        outs = []
        for inner in (fwd, bwd):
            ys = RECURRENT[inner.class_name].run(
                ctx, inner, xs, shapes, prefix=f"{inner.name}/", zero_output=bool(inner.config.get("return_sequences"))
            )
            if inner.config.get("return_sequences") and inner.config.get("go_backwards"):
                ys[0] = g.reverse_time(ys[0], name=f"{inner.name}_in_order")
            outs.append(ys)
        (f, *fs), (r, *rs) = outs
        if mode is None:
            ys = [f, r]
        elif mode == "concat":
            ys = [g.concat(f, r, axis=-1, name=layer.name)]
        elif mode == "ave":
            ys = [g.mul(g.add(f, r), g.const(0.5, g.type(f).dtype), name=layer.name)]
        else:
            ys = [g.add_node({"sum": "add", "mul": "mul"}[mode], (f, r), name=layer.name)]
        if fwd.config.get("return_sequences") and ctx.masks.get(xs[0]) is not None:
            for y in ys:
                ctx.masks[y] = ctx.masks[xs[0]]
        return ys + fs + rs


CELLS = {"SimpleRNNCell": "SimpleRNN", "LSTMCell": "LSTM", "GRUCell": "GRU"}


def rnn_cells(layer) -> list:
    """An RNN layer's cells as layer views: one, or a StackedRNNCells' in order. The first reads
    the input (backwards if go_backwards), the others the sequence before them, in its order."""
    cell = layer.config.get("cell")
    cls = cell.get("class_name") if isinstance(cell, dict) else None
    entries = (cell.get("config") or {}).get("cells") if cls == "StackedRNNCells" else [cell]
    if (
        not isinstance(entries, list)
        or not entries
        or any(not isinstance(e, dict) or e.get("class_name") not in CELLS for e in entries)
    ):
        raise ConfigError(
            f"{where_of(layer)}: its cell {cls or cell!r} is not supported; supported: "
            f"{', '.join(CELLS)} and StackedRNNCells of them"
        )
    out, cfg = [], layer.config
    for k, entry in enumerate(entries):
        last = k == len(entries) - 1
        inner = {
            **(entry.get("config") or {}),
            "return_sequences": bool(cfg.get("return_sequences")) if last else True,
            "return_state": bool(cfg.get("return_state")),
            "go_backwards": bool(cfg.get("go_backwards")) and k == 0,
            "zero_output_for_mask": bool(cfg.get("zero_output_for_mask")) and last,
        }
        for key in ("stateful", "unroll", "time_major"):
            inner[key] = cfg.get(key)
        out.append(_Inner({"class_name": CELLS[entry["class_name"]], "config": inner}, layer))
    return out


class RNN(Rule):
    """keras.layers.RNN over SimpleRNNCell, LSTMCell, GRUCell or StackedRNNCells of them: the same
    loops as the layers, one per cell; states are every cell's, in order."""

    inputs = None

    def check(self, layer, keras):
        for inner in rnn_cells(layer):
            RECURRENT[inner.class_name].check(inner, keras)

    def _split(self, layer, xs):
        """The inputs of each cell's loop: the sequence, then its share of the initial states."""
        cells, k, out = rnn_cells(layer), 1, []
        for inner in cells:
            n = RECURRENT[inner.class_name]._states()
            out.append((inner, list(xs[k : k + n]) if len(xs) > 1 else []))
            k += n
        if len(xs) > 1 and k != len(xs):
            raise ConfigError(f"{where_of(layer)}: takes a sequence and {k - 1} initial states, got {len(xs)} inputs")
        return out

    def output_shapes(self, layer, shapes):
        seq, states = shapes[0], []
        for inner, init in self._split(layer, shapes):
            outs = RECURRENT[inner.class_name].output_shapes(inner, [seq, *init])
            seq, states = outs[0], states + outs[1:]
        return [seq] + states

    def output_shape(self, layer, shapes):
        return self.output_shapes(layer, shapes)[0]

    def weights(self, layer, shapes):
        out, seq = [], shapes[0]
        for inner, init in self._split(layer, shapes):
            rule = RECURRENT[inner.class_name]
            out += rule.weights(inner, [seq, *init], prefix=f"{inner.name}/")
            seq = rule.output_shapes(inner, [seq, *init])[0]
        return out

    def emit(self, ctx, layer, xs, shapes):
        g, mask = ctx.g, ctx.masks.get(xs[0])
        given = mask
        seq, seq_shape, states = xs[0], shapes[0], []
        for k, (inner, init) in enumerate(self._split(layer, xs)):
            rule = RECURRENT[inner.class_name]
            init_shapes = [(None, inner.config["units"])] * len(init)
            ys = rule.run(ctx, inner, [seq, *init], [seq_shape, *init_shapes], prefix=f"{inner.name}/")
            if mask is not None and k == 0 and inner.config.get("go_backwards"):
                mask = g.reverse_time(mask)  # the later cells read the sequence in processing order
            seq, seq_shape, states = ys[0], rule.output_shapes(inner, [seq_shape, *init_shapes])[0], states + ys[1:]
            if mask is not None:
                ctx.masks[seq] = mask
        ctx.masks.pop(seq, None)
        if given is not None and layer.config.get("return_sequences"):
            ctx.masks[seq] = given  # Keras passes the input's mask on, even to a reversed sequence
        return [seq] + states


class TimeDistributed(Rule):
    """The wrapped layer on every step. Only layers that already act on the last axis alone (so on
    [B,T,...] as on [B,...]) are supported; the others would need the batch and time axes merged."""

    PER_STEP = (
        "Dense",
        "Activation",
        "Dropout",
        "LeakyReLU",
        "ReLU",
        "ELU",
        "ThresholdedReLU",
        "GaussianNoise",
        "GaussianDropout",
    )

    def _inner(self, layer):
        entry = layer.config.get("layer")
        cls = entry.get("class_name") if isinstance(entry, dict) else entry
        if cls not in self.PER_STEP or (cls == "Dropout" and (entry.get("config") or {}).get("noise_shape")):
            raise ConfigError(
                f"{where_of(layer)}: wraps {cls!r}; supported: {', '.join(self.PER_STEP)} (Dropout without noise_shape)"
            )
        inner = _Inner.__new__(_Inner)
        inner.class_name, inner.config = cls, entry.get("config") or {}
        inner.name = inner.config.get("name", cls.lower())
        return inner, {**CORE, **EXTRA}[cls]

    def check(self, layer, keras):
        inner, rule = self._inner(layer)
        rule.check(inner, keras)

    def _step_shape(self, layer, shape):
        if len(shape) < 3:
            raise ConfigError(f"{where_of(layer)}: takes a (batch, steps, ...) input, got {shape_str(shape)}")
        return (shape[0], *shape[2:])

    def output_shape(self, layer, shapes):
        inner, rule = self._inner(layer)
        out = rule.output_shape(inner, [self._step_shape(layer, shapes[0])])
        return (shapes[0][0], shapes[0][1], *out[1:])

    def weights(self, layer, shapes):
        inner, rule = self._inner(layer)
        return rule.weights(inner, [self._step_shape(layer, shapes[0])])

    def emit(self, ctx, layer, xs, shapes):
        inner, rule = self._inner(layer)
        return rule.emit(ctx, inner, xs, shapes)


RECURRENT_RULES = {**RECURRENT, "Bidirectional": Bidirectional(), "RNN": RNN(), "TimeDistributed": TimeDistributed()}

# layers that pass a mask on unchanged, as Keras 3's supports_masking layers do; merges pass on the
# AND of their inputs' masks; any other layer drops it, as Keras 3's do (GlobalMaxPooling1D takes
# the max over every step, the padded ones too; Dot multiplies them all; tf-keras 2.4 and later
# drop it likewise), but for a concatenation along the steps, refused
MASK_PASSING = {
    "Dense",
    "Activation",
    "Dropout",
    "SpatialDropout1D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "LeakyReLU",
    "ReLU",
    "ELU",
    "PReLU",
    "Softmax",
    "ThresholdedReLU",
    "LayerNormalization",
    "BatchNormalization",
    "GroupNormalization",
    "Normalization",
    "Rescaling",
    "TimeDistributed",
    "UnitNormalization",
    "Identity",
}
MERGES = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"}
# layers whose rule reads its inputs' masks and sets its outputs' (attention.py; spatial.py's
# GlobalAveragePooling1D averages over the kept steps and drops the mask)
MASK_OWNERS = {"Embedding", "Masking", "Attention", "AdditiveAttention", "MultiHeadAttention", "GlobalAveragePooling1D"}


def carry_mask(ctx, layer, xs, ys) -> None:
    """After a layer's IR: pass its inputs' mask on where Keras would; refuse a concatenation of
    masked sequences along another axis than the features (Keras concatenates their masks)."""
    masks = ctx.masks
    present = [masks[x] for x in xs if x in masks]
    if (
        not present
        or layer.class_name in MASK_OWNERS
        or (layer.class_name in RECURRENT_RULES and layer.class_name != "TimeDistributed")
    ):
        return
    where = f"{where_of(layer)}: "
    if (
        layer.class_name == "Concatenate"
        and ctx.g.type(ys[0]).rank == 3
        and layer.config.get("axis", -1) not in (-1, 2)
    ):
        raise ConfigError(
            f"{where}concatenates masked sequences (Embedding(mask_zero=True) or Masking) along axis "
            f"{layer.config.get('axis')}, which concatenates their masks in Keras; kgraph passes masks on "
            "through concatenations of features (the last axis) only"
        )
    if layer.class_name in MERGES and ctx.g.type(ys[0]).rank == 3:
        # a step is kept where all the inputs' masks keep it (tf-keras, which ignores an input
        # without one), where any does (Keras 3, where an input without a mask keeps every step)
        g, mask = ctx.g, present[0]
        if ctx.keras >= 3 and len(present) < len(xs):
            return  # every step kept: no mask
        for m in present[1:]:
            mask = g.maximum(mask, m) if ctx.keras >= 3 else g.mul(mask, m)
        masks[ys[0]] = mask
    elif layer.class_name in MASK_PASSING and xs[0] in masks:
        for y in ys:
            masks.setdefault(y, masks[xs[0]])
