"""The three config dialects Keras writes (2.1.x, tf.keras 2.2-2.15+, Keras 3), read into one
shape: a ModelDesc whose layers list their calls as tensor references (layer, node, tensor).
Sequential models become the same graph form, chained."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import ConfigError
from .keras1 import upgrade as upgrade_keras1
from .tf_ops import keras3_op_entry

MODEL_CLASSES = ("Sequential", "Functional", "Model")


@dataclass
class LayerDesc:
    name: str
    class_name: str
    config: dict
    calls: list = field(default_factory=list)  # per inbound node: the input refs, in order
    model: "ModelDesc | None" = None  # set when the layer is itself a model
    node_offset: int = 0  # config node index of calls[0]: 1 where tf.keras counts a nested model's own first node
    # per inbound node: each ref's keyword (None: positional; "value", "key", "attention_mask":
    # tensors an attention layer takes by keyword) and the call's other keyword arguments
    call_names: list = field(default_factory=list)
    call_options: list = field(default_factory=list)
    call_args: list = field(default_factory=list)  # per Keras 3 inbound node: its raw `args` (ops.py reads them)


@dataclass
class ModelDesc:
    name: str
    class_name: str  # "Sequential" or "Functional"
    layers: list  # LayerDesc, in config order (which is Keras's layer order)
    inputs: list  # refs of the model inputs, Keras order
    outputs: list  # refs of the model outputs, Keras order
    # a model built with a dict of outputs ({"cls": ..., "reg": ...}): its keys, in the config's
    # order (predict's dict's); sorted, they are the outputs' order (Keras flattens a dict so)
    output_keys: list | None = None


def keras_major(config: dict) -> int:
    """2 or 3: which Keras wrote the config (only some activation formulas depend on it)."""
    version = str(config.get("keras_version", ""))
    if version[:1].isdigit():
        return 3 if int(version.split(".")[0]) >= 3 else 2
    # a walk over each distinct value once, not json.dumps: a YAML alias bomb shares its values
    seen, stack, markers = set(), [config], ("__keras_tensor__", "batch_shape", "DTypePolicy")
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, dict):
            if any(k in markers for k in obj):
                return 3
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif isinstance(obj, str) and obj in markers:
            return 3
    return 2


def input_batch_shape(config: dict):
    """The (None, ...) shape an InputLayer or a Sequential's first layer declares, or None."""
    for key in ("batch_shape", "batch_input_shape"):
        if config.get(key) is not None:
            return tuple(config[key])
    for key in ("shape", "input_shape"):
        if config.get(key) is not None:
            return (None, *config[key])
    return None


def _ref(item, where: str) -> tuple:
    if (
        isinstance(item, (list, tuple))
        and len(item) >= 3
        and isinstance(item[0], str)
        and isinstance(item[1], int)
        and isinstance(item[2], int)
    ):
        return (item[0], item[1], item[2])
    raise ConfigError(f"{where}: expected a tensor reference [layer, node, tensor], got {item!r}")


def _refs(value, where: str) -> list:
    """input_layers / output_layers: one flat [name, 0, 0], a list of them, or a dict of them."""
    if isinstance(value, dict):
        return [_ref(value[k], where) for k in sorted(value)]
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
        return [_ref(value, where)]
    if isinstance(value, (list, tuple)):
        return [_ref(v, where) for v in value]
    raise ConfigError(f"{where}: expected tensor references, got {value!r}")


def _keras3_tensors(obj, out: list, where: str) -> list:
    """Every __keras_tensor__ in a Keras 3 call's args, in order."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            out.append(_ref(obj.get("config", {}).get("keras_history"), where))
        else:
            for v in obj.values():
                _keras3_tensors(v, out, where)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _keras3_tensors(v, out, where)
    return out


# the tensors a layer may take by keyword, after its positional ones, in this order
# (MultiHeadAttention's call(query, value, key=None, attention_mask=None))
TENSOR_KEYWORDS = ("value", "key", "attention_mask")


def _is_keras2_ref(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 3 and isinstance(value[0], str)


def _keyword_tensors(kwargs: dict, where: str, keras3: bool) -> tuple:
    """(refs, names, options) of a call's keyword arguments: tensors by TENSOR_KEYWORDS (others
    refused), everything else an option (use_causal_mask, training, ...)."""
    refs, options = [], {}
    for key, value in kwargs.items():
        found = _keras3_tensors(value, [], where) if keras3 else ([_ref(value, where)] if _is_keras2_ref(value) else [])
        if not found:
            options[key] = value
        elif key in TENSOR_KEYWORDS and len(found) == 1:
            refs.append((TENSOR_KEYWORDS.index(key), key, found[0]))
        else:
            raise ConfigError(f"{where}: tensors passed as the keyword argument {key!r} are not supported")
    refs.sort()
    return [r for _, _, r in refs], [n for _, n, _ in refs], options


def _call_refs(node, where: str) -> tuple:
    """(refs, names, options) of one inbound node: its input tensors in order (positional first,
    then TENSOR_KEYWORDS ones), each one's keyword or None, and its other keyword arguments."""
    if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
        kwargs = node.get("kwargs") if isinstance(node.get("kwargs"), dict) else {}
        # a mask kwarg is dropped: kgraph derives masks from the layers that make them (recurrent.py)
        refs, names, options = _keyword_tensors(
            {k: v for k, v in kwargs.items() if k not in ("initial_state", "mask")}, where, True
        )
        # a recurrent layer's initial states follow its input, as Keras 2 lists them
        positional = _keras3_tensors(node.get("args", []), [], where) + _keras3_tensors(
            kwargs.get("initial_state", []), [], where
        )
        return positional + refs, [None] * len(positional) + names, options
    if isinstance(node, (list, tuple)):  # Keras 2: [[name, node, tensor, kwargs], ...]
        positional = [_ref(entry, where) for entry in node]
        kwargs = node[0][3] if node and len(node[0]) > 3 and isinstance(node[0][3], dict) else {}
        refs, names, options = _keyword_tensors({k: v for k, v in kwargs.items() if k != "mask"}, where, False)
        return positional + refs, [None] * len(positional) + names, options
    raise ConfigError(f"{where}: unreadable inbound node {node!r}")


def _layer(entry, name: str | None, where: str) -> LayerDesc:
    if not isinstance(entry, dict) or "class_name" not in entry or not isinstance(entry.get("config"), (dict, list)):
        raise ConfigError(f"{where}: a layer entry needs 'class_name' and 'config', got {str(entry)[:80]}")
    cls, cfg = entry["class_name"], entry["config"]
    if isinstance(cls, str) and str(entry.get("module") or "").startswith(("keras.src.ops", "keras.ops")):
        cls = f"op:{cls}"  # an operation (x * 2.0, keras.ops.mean), never the layer of the same name (ops.py)
    name = name or entry.get("name") or (cfg.get("name") if isinstance(cfg, dict) else None)
    if not name:
        raise ConfigError(f"{where}: {cls} layer has no name")
    model = _model(cls, cfg, name, f"{where} > {name}") if cls in MODEL_CLASSES else None
    return LayerDesc(name, cls, cfg if isinstance(cfg, dict) else {}, [], model)


def snake_case(name: str) -> str:
    """keras.src.utils.naming.to_snake_case (AUC -> auc, KLDivergence -> kl_divergence): how Keras
    names layers, weight-file groups and metrics after their classes."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _entry_name(entry):
    if not isinstance(entry, dict):
        return None
    cfg = entry.get("config")
    return entry.get("name") or (cfg.get("name") if isinstance(cfg, dict) else None)


def _auto_names(entries) -> list:
    """Each entry's name; a layer written without one gets the name Keras would have given it:
    its class in snake_case, with _1, _2, ... where that is taken ("dense", "dense_1")."""
    taken = {_entry_name(e) for e in entries} - {None}
    names = []
    for entry in entries:
        given = _entry_name(entry)
        if not given and isinstance(entry, dict) and isinstance(entry.get("class_name"), str):
            base, i = snake_case(entry["class_name"]), 0
            given = base
            while given in taken:
                i += 1
                given = f"{base}_{i}"
            taken.add(given)
        names.append(given)
    return names


def _sequential(cfg, name: str, where: str) -> ModelDesc:
    entries = cfg if isinstance(cfg, list) else cfg.get("layers")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: Sequential model {name!r} has no layers")
    layers = [_layer(e, n, where) for e, n in zip(entries, _auto_names(entries))]
    if layers[0].class_name != "InputLayer":
        # Keras 2 puts the input shape on the first layer; Keras 3 in build_input_shape
        shape = input_batch_shape(layers[0].config)
        if shape is None and isinstance(cfg, dict) and cfg.get("build_input_shape") is not None:
            shape = tuple(cfg["build_input_shape"])
        layers.insert(0, LayerDesc(f"{layers[0].name}_input", "InputLayer", {"batch_shape": shape}))
    for prev, layer in zip(layers, layers[1:]):
        layer.calls = [[(prev.name, 0, 0)]]
    return ModelDesc(name, "Sequential", layers, [(layers[0].name, 0, 0)], [(layers[-1].name, 0, 0)])


def _functional(cfg: dict, name: str, where: str) -> ModelDesc:
    for key in ("layers", "input_layers", "output_layers"):
        if key not in cfg:
            raise ConfigError(f"{where}: functional model {name!r} has no {key!r}")
    layers = []
    for entry in cfg["layers"]:
        if isinstance(entry, dict) and entry.get("class_name") in ("TFOpLambda", "SlicingOpLambda"):
            entry = keras3_op_entry(entry, where)  # tf-keras's TensorFlow call, as the Keras 3 op it is
        layer = _layer(entry, entry.get("name") if isinstance(entry, dict) else None, where)
        calls = [_call_refs(n, f"{where} > {layer.name}") for n in entry.get("inbound_nodes", [])]
        layer.calls = [refs for refs, _, _ in calls]
        layer.call_names = [names for _, names, _ in calls]
        layer.call_options = [options for _, _, options in calls]
        layer.call_args = [n.get("args") if isinstance(n, dict) else None for n in entry.get("inbound_nodes", [])]
        layers.append(layer)
    desc = ModelDesc(
        name,
        "Functional",
        layers,
        _refs(cfg["input_layers"], f"{where} input_layers"),
        _refs(cfg["output_layers"], f"{where} output_layers"),
        list(cfg["output_layers"]) if isinstance(cfg["output_layers"], dict) else None,
    )
    _drop_mask_ops(desc)
    return desc


# the ops Keras 3 writes into a functional config to compute the masks it passes as `mask`
# keyword arguments; kgraph computes masks itself, so these go once nothing else reads them
KERAS3_MASK_OPS = {
    "NotEqual",
    "Any",
    "All",
    "LogicalOr",
    "LogicalAnd",
    "LogicalNot",
    "ExpandDims",
    "ZerosLike",
    "OnesLike",
    "BroadcastTo",
    "Squeeze",
    "Cast",
    "ConvertToTensor",  # Attention's compute_mask
}


def _op_class(layer) -> str:
    """An op's Keras class ("op:NotEqual" -> "NotEqual"; a config without modules names it bare)."""
    cls = layer.class_name
    return cls[3:] if isinstance(cls, str) and cls.startswith("op:") else cls


def _drop_mask_ops(desc: ModelDesc) -> None:
    """Drops the unread mask ops, and unread Concatenates of masks (Keras 3's Concatenate mask)."""
    ops = {layer.name for layer in desc.layers if _op_class(layer) in KERAS3_MASK_OPS}
    ops |= {
        layer.name
        for layer in desc.layers
        if _op_class(layer) == "Concatenate" and layer.calls and all(r[0] in ops for call in layer.calls for r in call)
    }
    while True:
        read = {r[0] for layer in desc.layers for call in layer.calls for r in call} | {r[0] for r in desc.outputs}
        unread = [layer for layer in desc.layers if layer.name in ops and layer.name not in read]
        if not unread:
            return
        desc.layers = [layer for layer in desc.layers if layer not in unread]


def _model(cls: str, cfg, name: str, where: str) -> ModelDesc:
    desc = _sequential(cfg, name, where) if cls == "Sequential" else _functional(cfg, name, where)
    seen = set()
    for layer in desc.layers:
        if layer.name in seen:
            raise ConfigError(f"{where}: two layers are named {layer.name!r}")
        seen.add(layer.name)
    return desc


def _number_nodes(desc: ModelDesc, keras: int) -> None:
    """A nested model built on its own Input owns a first node that the outer config skips.
    tf.keras numbers the outer calls from 1 then (Functional, and Sequential with an input shape);
    Keras 3 numbers inbound_nodes from 0 but output_layers from 1 (Functional only). A Sequential's
    chain is kgraph's own: it reads each layer's call as numbered here."""
    by_name = {layer.name: layer for layer in desc.layers}
    for layer in desc.layers:
        if layer.model is None:
            continue
        inner = layer.model
        if keras < 3:
            own_input = inner.layers[0].class_name == "InputLayer" and input_batch_shape(inner.layers[0].config)
            layer.node_offset = int(inner.class_name == "Functional" or bool(own_input))
        _number_nodes(inner, keras)
    if desc.class_name == "Sequential":  # its chain reads each layer's own call, wherever it is numbered
        for prev, layer in zip(desc.layers, desc.layers[1:]):
            layer.calls = [[(prev.name, prev.node_offset, 0)]]
        desc.outputs = [(desc.layers[-1].name, desc.layers[-1].node_offset, 0)]
    elif keras >= 3:
        desc.outputs = [
            (n, i - 1, t)
            if n in by_name and by_name[n].model is not None and by_name[n].model.class_name == "Functional"
            else (n, i, t)
            for n, i, t in desc.outputs
        ]


def describe(config: dict) -> ModelDesc:
    """Read a top-level model config (any dialect) into a ModelDesc."""
    if not isinstance(config, dict):
        raise ConfigError(f"a model config is a mapping, got {type(config).__name__}")
    config = upgrade_keras1(config)  # Keras 1 names -> Keras 2's, as Keras 2 read them
    cls = config.get("class_name")
    if cls not in MODEL_CLASSES:
        raise ConfigError(f"top-level class {cls!r} is not a model; expected one of {', '.join(MODEL_CLASSES)}")
    cfg = config.get("config")
    if not isinstance(cfg, (dict, list)):
        raise ConfigError(f"{cls} config has no 'config' section")
    name = (cfg.get("name") if isinstance(cfg, dict) else None) or cls.lower()
    desc = _model(cls, cfg, name, f"model {name!r}")
    _number_nodes(desc, keras_major(config))
    return desc
