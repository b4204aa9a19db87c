"""build_model: a Keras config -> FrontendModel (initial weights, Keras's weight order, shapes),
which lowers to a forward ir.Graph."""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from ir import Graph, TensorType

from .. import limits
from .attention import ATTENTION_RULES
from .dot import DOT_RULES
from .einsum import EINSUM_RULES
from .errors import ConfigError
from .extra_layers import EXTRA
from .initializers import initial_value
from .layers import CORE
from .normalize import MODEL_CLASSES, describe, input_batch_shape, keras_major
from .preprocessing import PREPROCESSING
from .ops import OP_RULES
from .ops_reduce import REDUCE_OPS
from .ops_shape import SHAPE_OPS
from .recurrent import RECURRENT_RULES, carry_mask
from .regularizers import parse_regularizer
from .rule import Ctx, call_training, ir_shape, is_count, shape_str, where_of
from .spatial import SPATIAL
from .walk import guarded, run_graph

# Keras class name -> its Rule
OPS = {**OP_RULES, **REDUCE_OPS, **SHAPE_OPS, **{k: v for k, v in EINSUM_RULES.items() if k.startswith("op:")}}
RULES = {
    **CORE,
    **SPATIAL,
    **EXTRA,
    **PREPROCESSING,
    **DOT_RULES,
    **RECURRENT_RULES,
    **ATTENTION_RULES,
    **EINSUM_RULES,
    **OPS,
}
SUPPORTED = sorted([k for k in RULES if not k.startswith("op:")] + ["InputLayer", *MODEL_CLASSES])
SUPPORTED_OPS = sorted(k[3:] for k in OPS)
DTYPES = ("float32", "float64")

# The sizes a model's unknown input dimensions are taken as to find its weights and the shapes
# summary() shows: two of them, so that a shape or weight that follows an unknown dimension differs
# between them; multiples of 32, so that an image net's strided layers and a U-Net's skips fit.
PROBE_SIZES = (64, 96)


@dataclass
class WeightSpec:
    layer: str  # Keras layer name
    name: str  # "kernel" / "bias"
    node: str  # id of its 'param' source in every lowered graph
    shape: tuple
    value: np.ndarray | None  # initial value, in the model's dtype (None once a Model holds it)
    trainable: bool = True
    regularizer: dict | None = None  # {"l1": float, "l2": float}
    path: tuple = ()  # names of the enclosing nested models, outermost first
    updatable: bool = True  # False for state the step updates itself (batch-norm statistics): never trainable
    constraint: dict | None = None  # applied after each optimizer update (frontend/constraints.py)


@dataclass
class InputSpec:
    name: str
    node: str
    shape: tuple  # (None, ...)
    dtype: str


@dataclass
class LayerInfo:
    """One row of summary(): a layer of the top-level model."""

    name: str
    class_name: str
    output_shapes: list = field(default_factory=list)  # per call: a shape, or a list of shapes
    params: int = 0
    trainable_params: int = 0
    inbound: list = field(default_factory=list)  # names of the layers it reads, in order
    connected_to: list = field(default_factory=list)  # "layer[node][tensor]" per input, as Keras prints
    path: tuple = ()  # names of the enclosing nested models, outermost first
    layers: list | None = None  # a nested model's own layers (LayerInfo), None for other layers


def _unsupported(desc, out: list) -> list:
    for layer in desc.layers:
        if layer.model is not None:
            _unsupported(layer.model, out)
        elif not isinstance(layer.class_name, str):
            raise ConfigError(f"layer {layer.name!r}: class_name must be a string, got {layer.class_name!r}")
        elif layer.class_name not in RULES and layer.class_name != "InputLayer":
            out.append((layer.class_name, layer.name))
    return out


def _refuse_unsupported(desc) -> None:
    bad = _unsupported(desc, [])
    if not bad:
        return
    ops = [(cls[3:], name) for cls, name in bad if cls.startswith("op:")]
    bad = [(cls, name) for cls, name in bad if not cls.startswith("op:")]
    lam = (
        " (a Lambda layer holds Python bytecode; kgraph never decodes or runs it)"
        if any(cls == "Lambda" for cls, _ in bad)
        else ""
    )
    parts = []
    if bad:
        listed = ", ".join(f"{cls} {name!r}" for cls, name in bad)
        parts.append(f"unsupported layers: {listed}{lam}; supported: {', '.join(SUPPORTED)}")
    if ops:
        listed = ", ".join(f"{cls} {name!r}" for cls, name in ops)
        parts.append(f"unsupported keras.ops operations: {listed}; supported: {', '.join(SUPPORTED_OPS)}")
    raise ConfigError(". ".join(parts))


def _check_layers(desc, keras: int) -> None:
    for layer in desc.layers:
        if layer.model is not None:
            _check_layers(layer.model, keras)
        elif layer.class_name != "InputLayer":
            rule = RULES[layer.class_name]
            named = sorted({n for names in layer.call_names for n in names if n})
            if named and not getattr(rule, "keywords", False):
                raise ConfigError(
                    f"{layer.class_name} layer {layer.name!r}: tensors passed as keyword arguments ({', '.join(named)}) "
                    "are not supported"
                )
            if layer.class_name.startswith("op:"):  # an op's keyword arguments change what it computes
                read = getattr(rule, "keyword_options", ())  # the ones its rule reads
                given = sorted(
                    {k for options in layer.call_options for k, v in options.items() if v is not None and k not in read}
                )
                if given:
                    raise ConfigError(f"{where_of(layer)}: keyword arguments {given} are not supported")
            guarded(layer, (), rule.check, layer, keras)


def _declared_shape(layer) -> tuple | None:
    """The InputLayer's (None, ...) shape; a None past the batch axis is a dimension the data gives."""
    shape = guarded(layer, (), input_batch_shape, layer.config)
    if shape is not None and not all(d is None or is_count(d) for d in shape[1:]):
        raise ConfigError(
            f"InputLayer {layer.name!r}: shape {shape_str(shape)} is not made of positive integers (or None)"
        )
    return shape if shape is None else (None, *shape[1:])


def has_unknown_dims(shapes) -> bool:
    """Whether any of these (None, ...) shapes leaves a dimension past the batch axis unknown."""
    return any(d is None for shape in shapes for d in shape[1:])


def fits(shape, declared) -> bool:
    """Whether a concrete (None, ...) shape is one that `declared` (maybe with unknown dims) allows."""
    return len(shape) == len(declared) and all(d is None or d == g for g, d in zip(shape[1:], declared[1:]))


def _given_shape(shape, declared, name) -> tuple:
    """A build() input shape, batch axis first as in Keras's build((None, 64)), as (None, ...)."""
    try:
        shape = tuple(None if d is None else int(d) for d in shape)
    except (TypeError, ValueError):
        raise ConfigError(f"input {name!r}: input shape {shape!r} is not a tuple of integers") from None
    if len(shape) < 2:
        raise ConfigError(
            f"input {name!r}: input shape {shape_str(shape)} has no batch axis; give it as "
            f"(None, {', '.join(map(str, shape)) or '...'})"
        )
    if declared is not None:
        if not fits(shape, declared) and shape[1:] != declared[1:]:
            raise ConfigError(f"input {name!r} is declared {shape_str(declared)}, got input shape {shape_str(shape)}")
        return declared
    if any(d is not None and d < 1 for d in shape[1:]):  # None: a dimension the data gives, as in Keras
        raise ConfigError(
            f"input {name!r}: input shape {shape_str(shape)} needs positive sizes (or None) for every axis "
            "but the batch"
        )
    return (None, *shape[1:])


class _ShapePass:
    """The build-time walk: output shapes, weight declarations per layer, summary rows."""

    def __init__(self):
        self.decls = {}  # layer path -> [WeightDecl]
        self.classes = {}  # layer path -> its Keras class name, for messages
        self.shapes = {}  # top-level layer name -> [output shapes per call]
        self.inner_shapes = {}  # the same for the layers of nested models, by path + (name,)

    def apply(self, layer, args, path, options):
        if layer.class_name == "InputLayer":
            declared = _declared_shape(layer)
            if declared is not None and not fits(tuple(args[0]), declared):
                raise ConfigError(f"InputLayer {layer.name!r} expects {shape_str(declared)}, got {shape_str(args[0])}")
            outs = [args[0]]
        elif layer.model is not None:
            outs = run_graph(layer.model, args, self.apply, path + (layer.name,))
        else:
            rule = RULES[layer.class_name]
            if rule.inputs is not None and len(args) != rule.inputs:
                raise ConfigError(f"{layer.class_name} layer {layer.name!r} takes {rule.inputs} input, got {len(args)}")
            outs = rule.output_shapes(layer, args)
            decls = rule.weights(layer, args)
            key = path + (layer.name,)
            self.classes[key] = layer.class_name
            old = self.decls.setdefault(key, decls)
            if [d.shape for d in old] != [d.shape for d in decls]:
                raise ConfigError(
                    f"shared layer {layer.name!r} is called on inputs of different shapes "
                    f"({shape_str(args[0])} needs other weights than its first call)"
                )
        shapes = (
            self.inner_shapes.setdefault(path + (layer.name,), []) if path else self.shapes.setdefault(layer.name, [])
        )
        shapes.append(outs[0] if len(outs) == 1 else outs)
        return outs


class FrontendModel:
    def __init__(self, config, desc, keras, dtype, inputs, weights, layers):
        self.config = config
        self.desc = desc
        self.keras = keras
        self.dtype = dtype
        self.name = desc.name
        self.class_name = desc.class_name
        self.inputs = inputs
        self.output_names = [ref[0] for ref in desc.outputs]
        self.output_keys = desc.output_keys
        self.weights = weights
        self.layers = layers
        # {"layer", "output", "l1", "l2"}: graph.outputs[output] is (l1*sum|y| + l2*sum y^2) / batch
        # size for the layer's output y, as Keras computes a layer's activity_regularizer (or an
        # ActivityRegularization layer's); the loss pass adds every "penalty:k" output to the loss
        self.activity_regularizers = []
        self._lowered = {}  # (training, size, frozen layers) -> lowered()'s (graph, masks)
        self._training_free = set()  # the keys of _lowered whose lowering no layer read `training` in

    def count_params(self) -> int:
        return sum(int(np.prod(w.shape)) for w in self.weights)

    @property
    def unknown_dims(self) -> bool:
        """Whether an input leaves a dimension past the batch axis to the data ([None, None] tokens)."""
        return has_unknown_dims([i.shape for i in self.inputs])

    def _lowered_inputs(self, size=PROBE_SIZES[0]) -> list:
        """The inputs lower() builds on: where dimensions are unknown, they are taken as a probe size
        (the graph then shows the model's ops, weights and token inputs; what runs is a
        specialize()d model's graph)."""
        if not self.unknown_dims:
            return self.inputs
        shapes = _with_size([i.shape for i in self.inputs], size)
        return [dataclasses.replace(i, shape=shape) for i, shape in zip(self.inputs, shapes)]

    def specialize(self, shapes: list) -> FrontendModel:
        """This model at concrete input shapes ((None, ...) per input) for its unknown dimensions, as
        TensorFlow traces a function per input signature: the same weights (the same WeightSpecs),
        the given shapes for lower() and summary()."""
        shapes = [tuple(shape) for shape in shapes]
        for i, shape in zip(self.inputs, shapes):
            if has_unknown_dims([shape]) or not fits(shape, i.shape):
                raise ConfigError(
                    f"input {i.name!r} is declared {shape_str(i.shape)}, got input shape {shape_str(shape)}"
                )
        shape_pass = _shape_pass(self.desc, shapes)
        have = {(*w.path, w.layer, w.name): tuple(w.shape) for w in self.weights}
        for key, decls in shape_pass.decls.items():
            for d in decls:
                if have.get((*key, d.name)) != tuple(d.shape):
                    raise ConfigError(
                        f"{shape_pass.classes[key]} layer {key[-1]!r}: at input shape "
                        f"{', '.join(map(shape_str, shapes))} its weight {d.name!r} would have shape "
                        f"{shape_str(d.shape)}, not the model's {shape_str(have.get((*key, d.name), ()))}"
                    )
        model = copy.copy(self)
        model._lowered, model._training_free = {}, set()  # its graphs are at its own shapes
        model.inputs = [dataclasses.replace(i, shape=shape) for i, shape in zip(self.inputs, shapes)]
        model.layers = _layer_infos(self.desc, shape_pass, self.weights)
        return model

    def _add_sources(self, g: Graph, size: int = PROBE_SIZES[0]) -> list:
        """Inputs, then parameters, first and always in this order: their ids are stable."""
        ids = [g.source("input", i.name, TensorType(ir_shape(i.shape), self.dtype)) for i in self._lowered_inputs(size)]
        ids += [
            g.source("param", "_".join((*w.path, w.layer, w.name)), TensorType(w.shape, self.dtype))
            for w in self.weights
        ]
        return ids

    def output_shapes(self) -> list:
        """(None, ...) per model output, None where a dimension follows the inputs' unknown ones."""
        shapes = []
        for size in PROBE_SIZES if self.unknown_dims else PROBE_SIZES[:1]:
            g, _ = self.lowered(training=False, size=size)
            shapes.append([(None, *g.type(g.outputs[f"output:{k}"]).shape[1:]) for k in range(len(self.output_names))])
        return [_unknown_where_differ(a, b) for a, b in zip(shapes[0], shapes[-1])]

    def lower(self, training: bool, size: int = PROBE_SIZES[0]) -> Graph:
        """A new forward graph, the caller's to change; when training, Dropout multiplies by an
        'rng' mask source. `size`: what the inputs' unknown dimensions, if any, are taken as."""
        return self.lower_with_masks(training, size)[0]

    @property
    def masked_outputs(self) -> list:
        """The outputs that carry a Keras mask (their losses and metrics are weighted by it)."""
        return list(self.lowered(training=False)[1])

    def lowered(self, training: bool, size: int = PROBE_SIZES[0]) -> tuple:
        """(the forward graph, {output index: its [B,T] 0/1 Keras mask node}) as lower() builds them,
        built once while no layer is frozen or thawed and shared by every reader: loading, summary(),
        compile()'s output shapes, token inputs and steps each read it (lowering a 5,000-layer model
        six times cost seconds). Never change the graph: run_pipeline works on a clone."""
        frozen = _frozen(self.desc)
        key = (training, size, frozen)
        if key not in self._lowered:
            self._lowered = {k: v for k, v in self._lowered.items() if k[2] == frozen}
            other = (not training, size, frozen)
            if other in self._lowered and other in self._training_free:
                self._lowered[key] = self._lowered[other]  # no layer read `training`: the same graph
            else:
                reads = []
                self._lowered[key] = self.lower_with_masks(training, size, training_reads=reads)
                self._training_free = {k for k in self._training_free if k in self._lowered}
                if not reads:
                    self._training_free.add(key)
        return self._lowered[key]

    def lower_with_masks(self, training: bool, size: int = PROBE_SIZES[0], training_reads=None) -> tuple:
        """(a new forward graph, {output index: its [B,T] 0/1 Keras mask node in that graph});
        training_reads: a list each layer's read of Ctx.training appends to."""
        g = Graph(self.name)
        activity = []
        self._add_sources(g, size)
        params, masks = {}, {}
        for w in self.weights:
            params.setdefault((*w.path, w.layer), {})[w.name] = w.node

        def applying(mode):
            """apply() for the calls made in `mode` (training or not): a nested model's calls
            inherit its call's."""

            def apply(layer, args, path, options):
                here = call_training(mode, options, self.keras, where_of(layer))
                if layer.class_name == "InputLayer":
                    return args
                if layer.model is not None:
                    return run_graph(layer.model, args, applying(here), path + (layer.name,))
                return emit(layer, args, path, here)

            return apply

        def emit(layer, args, path, mode):
            rule, shapes = RULES[layer.class_name], [s for _, s in args]
            ctx = Ctx(g, mode, self.keras, params.get((*path, layer.name), {}), masks, training_reads)
            ys = rule.emit(ctx, layer, [x for x, _ in args], shapes)
            ys = ys if isinstance(ys, list) else [ys]
            carry_mask(ctx, layer, [x for x, _ in args], ys)
            y = ys[0]
            reg = (
                rule.activity(layer)
                if hasattr(rule, "activity")
                else parse_regularizer(layer.config.get("activity_regularizer"), f"layer {layer.name!r}")
            )
            if reg and (reg["l1"] or reg["l2"]):
                activity.append({"layer": layer.name, "output": f"penalty:{len(activity)}", **reg, "_node": y})
            return list(zip(ys, rule.output_shapes(layer, shapes)))

        outs = run_graph(self.desc, [(i.node, i.shape) for i in self._lowered_inputs(size)], applying(training))
        g.outputs = {f"output:{k}": node for k, (node, _) in enumerate(outs)}
        for a in activity:
            g.outputs[a["output"]] = _activity_penalty(g, a.pop("_node"), a["l1"], a["l2"], a["layer"])
        self.activity_regularizers = activity  # the same at every lowering: the layers' settings
        # outputs that carry a Keras mask (Embedding(mask_zero) or Masking, through recurrent layers
        # returning sequences): Keras weights their losses and metrics by it (passes/loss.py). Node
        # ids of this graph, so returned with it rather than kept on the model.
        return g, {k: masks[node] for k, (node, _) in enumerate(outs) if node in masks}

    def summary(self, print_fn=print, line_length=None) -> None:
        from .summary import format_summary

        print_fn(format_summary(self, line_length))


def _refuse_no_outputs(desc) -> None:
    """A model (or nested model) without outputs: nothing to predict, and its loss was an IndexError."""
    if not desc.outputs:
        raise ConfigError(f"model {desc.name!r} has no outputs (its output_layers are empty)")
    for layer in desc.layers:
        if layer.model is not None:
            _refuse_no_outputs(layer.model)


def _check_values(desc, in_shapes, shapes, itemsize) -> None:
    """Refuse an input or a layer's output of one sample over KGRAPH_MAX_BYTES, before a step is
    compiled or a buffer allocated: a config of few weights can declare huge values (an input of
    10**30 features, RepeatVector(n=10**9))."""
    cap = limits.limit("KGRAPH_MAX_BYTES")
    named = [(f"input {ref[0]!r}", shape) for ref, shape in zip(desc.inputs, in_shapes)]
    for name, outs in shapes.items():
        for out in outs:
            named += [(f"layer {name!r}", o) for o in (out if out and isinstance(out[0], (tuple, list)) else [out])]
    for what, shape in named:
        n = math.prod(d for d in shape[1:] if isinstance(d, int)) * itemsize
        if n > cap:
            raise ConfigError(limits.too_big(f"{what}: one sample of shape {shape_str(shape)}", n, "KGRAPH_MAX_BYTES"))


def _frozen(desc, path=()) -> tuple:
    """The layers set trainable=False (nested models' too): a frozen BatchNormalization lowers as
    in inference, and Model.layers[i].trainable changes the config after loading."""
    out = []
    for layer in desc.layers:
        if not layer.config.get("trainable", True):
            out.append((*path, layer.name))
        if layer.model is not None:
            out += _frozen(layer.model, (*path, layer.name))
    return tuple(out)


def _activity_penalty(g, y, l1, l2, layer):
    """(l1 * sum|y| + l2 * sum y^2) / batch size: Keras's activity regularization of output y."""
    dtype, terms = g.type(y).dtype, []
    if l1:
        terms.append(g.mul(g.const(l1, dtype), g.reduce_sum(g.abs(y), axes=None)))
    if l2:
        terms.append(g.mul(g.const(l2, dtype), g.reduce_sum(g.square(y), axes=None)))
    total = terms[0] if len(terms) == 1 else g.add(*terms)
    batch = g.count(g.sources("input")[0].id, axes=(0,))  # of an input: y's would get a gradient
    return g.div(total, batch, name=f"{layer}_activity_penalty")


def _weight_specs(desc, decls, rng, dtype, path=()) -> list:
    """Keras's get_weights() order: layers in config order, nested models in place, shared layers
    once; each trainable as its layer allows (trainable_from_configs sets the flags from the configs)."""
    out = []
    for layer in desc.layers:
        if layer.model is not None:
            out += _weight_specs(layer.model, decls, rng, dtype, path + (layer.name,))
            continue
        for d in decls.get(path + (layer.name,), []):
            value = guarded(layer, path, initial_value, d.initializer, d.shape, rng, dtype)
            out.append(
                WeightSpec(
                    layer.name,
                    d.name,
                    "",
                    d.shape,
                    value,
                    d.trainable,
                    d.regularizer,
                    path,
                    d.trainable,
                    d.constraint,
                )
            )
    return out


def _layer_infos(desc, shape_pass, weights, path=()) -> list:
    """summary()'s rows of `desc`'s layers, and in a nested model's row its own layers' rows."""
    infos, owned = [], {}
    for w in weights:  # grouped once: a scan of every weight per layer was quadratic
        full = (*w.path, w.layer)
        if full[: len(path)] == path and len(full) > len(path):
            owned.setdefault(full[len(path)], []).append(w)
    for layer in desc.layers:
        if desc.class_name == "Sequential" and layer.class_name == "InputLayer":
            continue  # Keras's Sequential.layers leaves out its InputLayer
        mine = owned.get(layer.name, [])
        refs = [r for call in layer.calls for r in call]
        shapes = shape_pass.inner_shapes.get(path + (layer.name,)) if path else shape_pass.shapes.get(layer.name)
        inner = None if layer.model is None else _layer_infos(layer.model, shape_pass, mine, path + (layer.name,))
        infos.append(
            LayerInfo(
                layer.name,
                layer.class_name,
                shapes or [],
                sum(math.prod(w.shape) for w in mine),
                sum(math.prod(w.shape) for w in mine if w.trainable),
                list(dict.fromkeys(r[0] for r in refs)),
                [f"{r[0]}[{r[1]}][{r[2]}]" for r in refs],
                path,
                inner,
            )
        )
    return infos


def trainable_from_configs(desc, weights, keras: int) -> None:
    """Each weight's trainable flag from the layers' configs, as Keras's trainable_weights lists
    them: Keras 3's, the weights whose own layer is trainable (its setters set every layer inside a
    model, so a layer thawed inside a frozen base trains); Keras 1-2's, those whose layer and every
    model enclosing it are trainable (tf-keras gathers a model's weights only while it is)."""
    flags = {}

    def walk(desc, path, trainable):
        for layer in desc.layers:
            layer_trainable = (trainable or keras >= 3) and layer.config.get("trainable", True)
            if layer.model is not None:
                walk(layer.model, path + (layer.name,), layer_trainable)
            else:
                flags[path + (layer.name,)] = layer_trainable

    walk(desc, (), True)
    for w in weights:
        w.trainable = bool(flags.get((*w.path, w.layer), True) and w.updatable)


def _shape_pass(desc, in_shapes) -> _ShapePass:
    shape_pass = _ShapePass()
    run_graph(desc, in_shapes, shape_pass.apply)
    return shape_pass


def _with_size(shapes, size) -> list:
    return [(None, *(size if d is None else d for d in shape[1:])) for shape in shapes]


def _probe_shapes(desc, in_shapes) -> _ShapePass:
    """The shape pass of a model whose inputs leave dimensions unknown, as Keras builds it: weights
    must not depend on those dimensions (a layer's that do is refused), and output dimensions that
    follow them are None."""
    passes = []
    for size in PROBE_SIZES:
        try:
            passes.append(_shape_pass(desc, _with_size(in_shapes, size)))
        except ConfigError as e:
            raise ConfigError(
                f"{e} (with the inputs' unknown dimensions {', '.join(map(shape_str, in_shapes))} taken as {size}, "
                "to check the model; declare them in the InputLayer if it needs other sizes)"
            ) from None
    first, second = passes
    for key, decls in first.decls.items():
        if [d.shape for d in decls] != [d.shape for d in second.decls[key]]:
            raise ConfigError(
                f"{first.classes[key]} layer {key[-1]!r}: its weights' shape depends on the inputs' unknown "
                f"dimensions ({', '.join(map(shape_str, in_shapes))}), as a Dense after a Flatten of an unknown "
                "length does; declare those dimensions in the InputLayer, or pool them away first "
                "(GlobalAveragePooling, GlobalMaxPooling)"
            )
    first.shapes = {name: _unknown_where_differ(first.shapes[name], second.shapes[name]) for name in first.shapes}
    first.inner_shapes = {
        key: _unknown_where_differ(first.inner_shapes[key], second.inner_shapes[key]) for key in first.inner_shapes
    }
    return first


def _unknown_where_differ(a, b):
    """Output shapes (per call: a shape or a list of them) with None where the two probes differ."""
    if isinstance(a, list) and (not a or isinstance(a[0], (list, tuple))):
        return [_unknown_where_differ(x, y) for x, y in zip(a, b)]
    return tuple(x if x == y else None for x, y in zip(a, b))


class NotBuiltError(ConfigError):
    """A model whose config declares no input shape: Keras builds it from its first data."""


def declare_input_shapes(config: dict, shapes: list) -> dict:
    """A copy of `config` whose undeclared inputs (or inputs with unknown dimensions) declare
    `shapes` ((None, ...) per model input),
    where each Keras version writes one, so a model built from its data saves a config that loads
    built: an InputLayer's batch_shape (Keras 3) or batch_input_shape (Keras 1-2), a Keras 3
    Sequential's build_input_shape, or a Keras 1-2 Sequential's first layer's batch_input_shape.
    Copied only along the paths it changes: the other layers' config dicts stay the ones the
    model's layers read and write (layer.trainable), so the copy saves what they set."""
    config = dict(config)
    keras, cfg = keras_major(config), config.get("config")
    key = "batch_shape" if keras >= 3 else "batch_input_shape"
    if isinstance(cfg, list):
        cfg = entries = config["config"] = list(cfg)
    else:
        cfg = config["config"] = dict(cfg)
        entries = cfg["layers"] = list(cfg.get("layers", []))

    def own(i) -> dict:
        """entries[i]'s config, copied."""
        entries[i] = dict(entries[i])
        entries[i]["config"] = dict(entries[i].get("config") or {})
        return entries[i]["config"]

    if config.get("class_name") == "Sequential":
        declared = input_batch_shape(entries[0].get("config", {})) if entries else None
        if declared is None or has_unknown_dims([declared]):
            if isinstance(cfg, dict) and keras >= 3 and entries[0].get("class_name") != "InputLayer":
                cfg["build_input_shape"] = list(shapes[0])
            else:
                own(0)[key if entries[0].get("class_name") == "InputLayer" else "batch_input_shape"] = list(shapes[0])
        return config
    index = {
        (e.get("config") or {}).get("name", e.get("name")): i for i, e in enumerate(entries) if isinstance(e, dict)
    }
    for (name, declared), shape in zip(config_inputs(config), shapes):
        if (declared is None or has_unknown_dims([declared])) and name in index:
            own(index[name])[key] = list(shape)
    return config


def config_inputs(config: dict) -> list:
    """[(name, declared (None, ...) shape or None)] of the model's inputs, in Keras order."""
    desc = describe(config)
    by_name = {layer.name: layer for layer in desc.layers}
    return [(ref[0], _declared_shape(by_name[ref[0]]) if ref[0] in by_name else None) for ref in desc.inputs]


def build_model(
    config: dict, seed: int | None = None, dtype: str = "float32", input_shapes: list | None = None
) -> FrontendModel:
    """Validate a Keras model config and build its FrontendModel with fresh initial weights.
    input_shapes: one (None, ...) shape per model input, batch axis first, for inputs the config
    leaves undeclared, as Keras's build(input_shape); a declared shape must agree."""
    try:
        return _build_model(config, seed, dtype, input_shapes)
    except ConfigError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ArithmeticError, ValueError) as e:
        # the last resort: a config shaped in a way no check foresaw is still one line
        raise ConfigError(f"model config not understood ({type(e).__name__}: {str(e)[:200]})") from e


def _build_model(config, seed, dtype, input_shapes) -> FrontendModel:
    if dtype not in DTYPES:
        raise ConfigError(f"unsupported dtype {dtype!r}; supported: {', '.join(DTYPES)}")
    desc = describe(config)
    keras = keras_major(config)
    _refuse_no_outputs(desc)
    _refuse_unsupported(desc)
    _check_layers(desc, keras)
    by_name = {layer.name: layer for layer in desc.layers}
    if input_shapes is not None and len(input_shapes) != len(desc.inputs):
        raise ConfigError(f"model {desc.name!r} has {len(desc.inputs)} inputs, got {len(input_shapes)} input shapes")
    in_shapes = []
    for k, ref in enumerate(desc.inputs):
        shape = _declared_shape(by_name[ref[0]]) if ref[0] in by_name else None
        given = None if input_shapes is None else _given_shape(input_shapes[k], shape, ref[0])
        if shape is None and given is None:
            raise NotBuiltError(
                f"model {desc.name!r}: input {ref[0]!r} has no declared shape; the model builds "
                "from its first data (fit, evaluate, predict) or build(input_shape)"
            )
        in_shapes.append(shape or given)
    shape_pass = _probe_shapes(desc, in_shapes) if has_unknown_dims(in_shapes) else _shape_pass(desc, in_shapes)
    limits.check_weights([d.shape for decls in shape_pass.decls.values() for d in decls], np.dtype(dtype).itemsize)
    _check_values(desc, in_shapes, shape_pass.shapes, np.dtype(dtype).itemsize)
    weights = _weight_specs(desc, shape_pass.decls, np.random.default_rng(seed), dtype)
    trainable_from_configs(desc, weights, keras)
    inputs = [InputSpec(ref[0], "", shape, dtype) for ref, shape in zip(desc.inputs, in_shapes)]
    model = FrontendModel(config, desc, keras, dtype, inputs, weights, _layer_infos(desc, shape_pass, weights))
    ids = model._add_sources(Graph(desc.name))
    for spec, node in zip(inputs + weights, ids):
        spec.node = node
    model.lowered(training=True)  # builds every IR node once, so IR-level problems surface here
    _warn_dtype_policies(desc, dtype)
    return model


def _policy_names(desc) -> dict:
    """{dtype policy name: layers using it} of the layers (nested models' too) whose policy is not
    float32 (an InputLayer's dtype is its input's, an op's `dtype` a cast's: neither a policy)."""
    out = {}
    for layer in desc.layers:
        if layer.model is not None:
            for name, layers in _policy_names(layer.model).items():
                out.setdefault(name, []).extend(layers)
            continue
        if layer.class_name == "InputLayer" or str(layer.class_name).startswith("op:"):
            continue
        policy = layer.config.get("dtype")
        if isinstance(policy, dict):
            policy = (policy.get("config") or {}).get("name")
        if policy in ("float16", "bfloat16", "float64") or (isinstance(policy, str) and policy.startswith("mixed_")):
            out.setdefault(policy, []).append(layer.name)
    return out


def _warn_dtype_policies(desc, dtype) -> None:
    """A Keras dtype policy other than float32 (mixed_float16 from GPU training, float64) is not
    followed: the model computes in `dtype`. Said once, at loading, so that results differing
    from Keras's by that rounding are expected."""
    policies = _policy_names(desc)
    if policies:
        named = ", ".join(f"{name!r} ({len(layers)} layers, e.g. {layers[0]!r})" for name, layers in policies.items())
        warnings.warn(
            f"model {desc.name!r}: layers use the dtype policies {named}; kgraph computes every layer in "
            f"{dtype} with {dtype} weights, so results differ from Keras's by that rounding",
            stacklevel=3,
        )
