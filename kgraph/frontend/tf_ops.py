"""tf-keras 2's TFOpLambda and SlicingOpLambda layers (a TensorFlow function called on Keras
tensors: `x * 2.0`, `tf.reduce_mean(x, axis=1)`, `x[:, -1]`) rewritten as the Keras 3 op entries
they mean, which frontend/ops.py runs. A Keras 2 node lists the first tensor (or a constant,
"_CONSTANT_VALUE") positionally and the rest of the call as keyword arguments, tensors among them
as [layer, node, tensor]."""

from __future__ import annotations

from .errors import ConfigError

BINARY = {
    "math.multiply": "Multiply",
    "__operators__.mul": "Multiply",
    "math.add": "Add",
    "__operators__.add": "Add",
    "math.subtract": "Subtract",
    "__operators__.sub": "Subtract",
    "math.truediv": "TrueDivide",
    "math.divide": "TrueDivide",
    "__operators__.truediv": "TrueDivide",
    "math.maximum": "Maximum",
    "math.minimum": "Minimum",
    "math.pow": "Power",
    "__operators__.pow": "Power",
    "math.greater": "Greater",
    "math.greater_equal": "GreaterEqual",
    "math.less": "Less",
    "math.less_equal": "LessEqual",
    "math.equal": "Equal",
    "math.not_equal": "NotEqual",
    "math.logical_and": "LogicalAnd",
    "math.logical_or": "LogicalOr",
    "math.logical_xor": "LogicalXor",
}
UNARY = {
    "math.abs": "Absolute",
    "math.square": "Square",
    "math.sqrt": "Sqrt",
    "math.exp": "Exp",
    "math.log": "Log",
    "math.negative": "Negative",
    "__operators__.neg": "Negative",
    "nn.relu": "Relu",
    "nn.relu6": "Relu6",
    "math.sigmoid": "Sigmoid",
    "nn.sigmoid": "Sigmoid",
    "math.tanh": "Tanh",
    "nn.tanh": "Tanh",
    "nn.silu": "Silu",
    "nn.swish": "Silu",
    "math.softplus": "Softplus",
    "nn.softplus": "Softplus",
    "nn.elu": "Elu",
    "nn.selu": "Selu",
    "math.logical_not": "LogicalNot",
    "math.rsqrt": "Rsqrt",
    "math.reciprocal": "Reciprocal",
    "math.sign": "Sign",
    "math.log1p": "Log1p",
    "math.expm1": "Expm1",
    "math.log_sigmoid": "LogSigmoid",
    "nn.softsign": "Softsign",
    "math.softsign": "Softsign",
}
# function -> (op class, {op config key: (keyword, default)})
WITH_OPTIONS = {
    "nn.gelu": ("Gelu", {"approximate": ("approximate", False)}),  # tf.nn.gelu's default
    "nn.softmax": ("Softmax", {"axis": ("axis", -1)}),
    "math.softmax": ("Softmax", {"axis": ("axis", -1)}),
    "math.reduce_mean": ("Mean", {"axis": ("axis", None), "keepdims": ("keepdims", False)}),
    "math.reduce_sum": ("Sum", {"axis": ("axis", None), "keepdims": ("keepdims", False)}),
    "math.reduce_max": ("Max", {"axis": ("axis", None), "keepdims": ("keepdims", False)}),
    "math.reduce_min": ("Min", {"axis": ("axis", None), "keepdims": ("keepdims", False)}),
    "concat": ("Concatenate", {"axis": ("axis", None)}),
    "stack": ("Stack", {"axis": ("axis", 0)}),
    "reshape": ("Reshape", {"newshape": ("shape", None)}),
    "transpose": ("Transpose", {"axes": ("perm", None)}),
    "compat.v1.transpose": ("Transpose", {"axes": ("perm", None)}),
    "expand_dims": ("ExpandDims", {"axis": ("axis", None)}),
    "squeeze": ("Squeeze", {"axis": ("axis", None)}),
    "compat.v1.squeeze": ("Squeeze", {"axis": ("axis", None)}),
    "clip_by_value": ("Clip", {"x_min": ("clip_value_min", None), "x_max": ("clip_value_max", None)}),
    "linalg.matmul": ("Matmul", {"transpose_a": ("transpose_a", False), "transpose_b": ("transpose_b", False)}),
    "nn.log_softmax": ("LogSoftmax", {"axis": ("axis", -1)}),
    "math.log_softmax": ("LogSoftmax", {"axis": ("axis", -1)}),
    "cast": ("Cast", {"dtype": ("dtype", None)}),
    "nn.leaky_relu": ("LeakyRelu", {"negative_slope": ("alpha", 0.2)}),
    "math.reduce_variance": ("Var", {"axis": ("axis", None), "keepdims": ("keepdims", False)}),
    "math.reduce_std": ("Std", {"axis": ("axis", None), "keepdims": ("keepdims", False)}),
    "math.reduce_logsumexp": ("Logsumexp", {"axis": ("axis", None), "keepdims": ("keepdims", False)}),
    "tile": ("Tile", {"repeats": ("multiples", None)}),
    "reverse": ("Flip", {"axis": ("axis", None)}),
}
# tf.norm and tf.pad, as tf-keras records them (compat.v1's) or by their v2 names
NORM = ("Norm", {"ord": ("ord", "euclidean"), "axis": ("axis", None), "keepdims": ("keepdims", False)})
PAD = (
    "Pad",
    {"pad_width": ("paddings", None), "mode": ("mode", "CONSTANT"), "constant_values": ("constant_values", 0)},
)
WITH_OPTIONS.update({name: NORM for name in ("norm", "compat.v1.norm", "linalg.norm")})
WITH_OPTIONS.update({name: PAD for name in ("pad", "compat.v1.pad")})
SUPPORTED = sorted({*BINARY, *UNARY, *WITH_OPTIONS, "__operators__.getitem", "where"})


def _tensor(ref) -> dict:
    return {"class_name": "__keras_tensor__", "config": {"keras_history": list(ref[:3])}}


def _is_ref(value) -> bool:
    return isinstance(value, (list, tuple)) and len(value) >= 3 and isinstance(value[0], str)


def _operand(value):
    """A keyword argument's value as a Keras 3 arg: a tensor reference, a constant tensor (a
    tf.constant's values, which tf-keras writes as nested lists) or the number as it is."""
    if _is_ref(value):
        return _tensor(value)
    return {"class_name": "__tensor__", "config": {"value": value}} if isinstance(value, list) else value


def _op_args(function, node, head, kwargs) -> list:
    """The Keras 3 op's args of one call: `head` the node's first tensor (or constant), the rest
    from the call's keyword arguments (or, for concat and stack, the node's other entries)."""
    if function in BINARY:
        return [head, _operand(kwargs.get("y"))]
    if function == "linalg.matmul":
        return [head, _operand(kwargs.get("b"))]
    if function == "where":  # tf.where(condition, x, y)
        return [head, _operand(kwargs.get("x")), _operand(kwargs.get("y"))]
    if function in ("concat", "stack"):  # each listed tensor is an entry of the node
        return [[_tensor(e) for e in node]]
    if function == "__operators__.getitem":
        spec = kwargs.get("slice_spec")
        spec = spec if isinstance(spec, list) else [spec]
        # slices as Keras 3 writes them; an Ellipsis ({"class_name": "__ellipsis__"}) as it is
        return [head, [_slice_entry(s) for s in spec]]
    return [head]


def _slice_entry(item):
    if isinstance(item, dict) and "class_name" not in item:
        return {"class_name": "__slice__", "config": item}
    return item


def keras3_op_entry(entry: dict, where: str) -> dict:
    """The Keras 3 op entry (module keras.src.ops.tf) equivalent to a TFOpLambda/SlicingOpLambda
    entry; an unsupported TensorFlow function is refused by name."""
    cfg = entry.get("config") if isinstance(entry.get("config"), dict) else {}
    function = cfg.get("function")
    name = entry.get("name") or cfg.get("name")
    nodes = entry.get("inbound_nodes") or []
    if not isinstance(function, str) or function not in SUPPORTED:
        raise ConfigError(
            f"{where}: {entry.get('class_name')} layer {name!r} calls tf.{function}, which is not supported "
            f"(kgraph/frontend/tf_ops.py lists the {len(SUPPORTED)} TensorFlow functions it reads: arithmetic, "
            "reductions, comparisons, where, cast, concat, reshape, transpose, slicing, matmul, activations)"
        )
    calls = []
    for node in nodes:
        if isinstance(node, list) and node and isinstance(node[0], str):
            node = [node]  # tf-keras writes a call on one tensor as that tensor's entry alone
        if (
            not isinstance(node, list)
            or not node
            or not all(isinstance(e, (list, tuple)) and len(e) >= 3 for e in node)
        ):
            raise ConfigError(f"{where}: {name!r}: unreadable inbound node {str(node)[:80]}")
        first = node[0]
        kwargs = dict(first[3]) if len(first) > 3 and isinstance(first[3], dict) else {}
        head = _operand(first[2]) if first[0] == "_CONSTANT_VALUE" else _tensor(first)
        calls.append((node, head, kwargs))
    config = {"name": name, "tf_function": function}  # tf_function: how errors name it
    if function in WITH_OPTIONS:
        cls, options = WITH_OPTIONS[function]
        kwargs = calls[0][2] if calls else {}
        config.update({key: kwargs.get(keyword, default) for key, (keyword, default) in options.items()})
    else:
        cls = BINARY.get(function) or UNARY.get(function) or ("Where" if function == "where" else "GetItem")
    inbound = [{"args": _op_args(function, node, head, kwargs), "kwargs": {}} for node, head, kwargs in calls]
    return {"module": "keras.src.ops.tf", "class_name": cls, "name": name, "config": config, "inbound_nodes": inbound}
