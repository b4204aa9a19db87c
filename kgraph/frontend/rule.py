"""What every layer rule shares: the Rule base class, the context its IR is emitted in, weight
declarations and the small checks and names of error messages. The rule modules (layers.py,
spatial.py, extra_layers.py, preprocessing.py, dot.py, recurrent.py) import it; it imports none of them.
Shapes here are Keras's: tuples whose first entry (the batch) is None."""

from __future__ import annotations

from dataclasses import dataclass, field

from ir import BATCH, Graph

from .errors import ConfigError


def shape_str(shape) -> str:
    """A shape as Keras prints it: (None, 3)."""
    return "(" + ", ".join(str(d) for d in shape) + ")"


def ir_shape(shape) -> tuple:
    return (BATCH, *shape[1:])


def rsqrt(g, x, epsilon=None, name=None) -> str:
    """1 / sqrt(x + epsilon) in IR ops (the normalizations' inverse scale)."""
    dtype = g.type(x).dtype
    if epsilon is not None:
        x = g.add(x, g.const(float(epsilon), dtype))
    return g.div(g.const(1.0, dtype), g.sqrt(x), name=name)


@dataclass
class Ctx:
    """What a layer's IR needs besides its inputs."""

    g: Graph
    _training: bool  # read as `training`
    keras: int  # 2 or 3: the Keras that wrote the config
    params: dict  # weight name -> param node id, for the layer being emitted
    masks: dict = field(default_factory=dict)  # node id -> its [B,T] 0/1 mask node (Keras's masks)
    training_reads: list | None = None  # where a read of `training` is recorded (FrontendModel.lowered)

    @property
    def training(self) -> bool:
        """Whether the graph is for a training step. Reading it is recorded: a model none of whose
        layers read it lowers to the same graph for training and inference, lowered once."""
        if self.training_reads is not None:
            self.training_reads.append(True)
        return self._training


def call_training(mode: bool, options: dict, keras: int, where: str) -> bool:
    """Whether a call runs as in training, in a graph lowered for `mode`. tf-keras saves a call's
    `training=False` (`base(x, training=False)`, the transfer-learning idiom) or `training=True`
    (Monte Carlo dropout) and honours it over the outer call's; Keras 3 saves it too but its
    functional models pass their own `training` to every layer, which overrides it."""
    value = options.get("training")
    if keras >= 3 or value is None:
        return mode
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: training must be true, false or null, got {value!r}")
    return value


@dataclass
class WeightDecl:
    name: str
    shape: tuple
    initializer: tuple  # (class name, config) from parse_initializer
    regularizer: dict | None
    trainable: bool = True  # False: state the train step updates in place (batch-norm statistics)
    constraint: dict | None = None  # constraints.parse_constraint's: applied after each update


class Rule:
    """The default: one input, shape unchanged, no weights."""

    inputs = 1  # None: any number (merges)

    def check(self, layer, keras: int) -> None:
        pass

    def output_shape(self, layer, shapes: list) -> tuple:
        return shapes[0]

    def output_shapes(self, layer, shapes: list) -> list:
        """One shape per output; emit returns a list of node ids when a layer has several."""
        return [self.output_shape(layer, shapes)]

    def weights(self, layer, shapes: list) -> list:
        return []

    def emit(self, ctx: Ctx, layer, xs: list, shapes: list) -> str:
        return xs[0]


def non_batch_axes(layer, shape) -> tuple:
    """A layer's `axis` (an int, or a list or tuple of them, Keras's default -1) as the sorted
    axes of input `shape` it names; an axis out of range, the batch axis, or anything else is
    refused, as Keras refuses it (an out-of-range axis must not wrap around to another)."""
    axis = layer.config.get("axis", -1)
    axes = [axis] if not isinstance(axis, (list, tuple)) else list(axis)
    rank = len(shape)
    if not axes or any(
        isinstance(a, bool) or not isinstance(a, int) or not -rank <= a < rank or a % rank == 0 for a in axes
    ):
        raise ConfigError(f"{where_of(layer)}: axis {axis!r} is not made of non-batch axes of input {shape_str(shape)}")
    return tuple(sorted({a % rank for a in axes}))


def where_of(layer) -> str:
    """How an error message names a layer: Dense layer 'dense_1' (an op: keras.ops.Multiply 'multiply')."""
    if isinstance(layer.class_name, str) and layer.class_name.startswith("op:"):
        function = layer.config.get("tf_function")  # a tf-keras TFOpLambda (frontend/tf_ops.py)
        return f"tf.{function} {layer.name!r}" if function else f"keras.ops.{layer.class_name[3:]} {layer.name!r}"
    return f"{layer.class_name} layer {layer.name!r}"


def is_count(value, low: int = 1) -> bool:
    """An int (not a bool, which Python counts as one) of at least `low`."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_count(layer, key, default, low: int = 1) -> None:
    value = layer.config.get(key, default)
    if not is_count(value, low):
        raise ConfigError(
            f"{where_of(layer)}: {key} must be a {'positive' if low == 1 else 'non-negative'} integer, got {value!r}"
        )
