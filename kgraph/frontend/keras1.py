"""Keras 1.x configs (Keras 1.2's `model.to_json()`), converted to Keras 2 names as Keras 2's own
legacy interfaces did when it loaded them (keras/legacy/interfaces.py): layer renames
(Convolution2D -> Conv2D), argument renames (output_dim -> units, init -> kernel_initializer,
border_mode -> padding, dim_ordering -> data_format, ...) and value changes (th -> channels_first).
A Keras 1 argument with no Keras 2 meaning that kgraph can run is refused, naming the argument and
what it became. Configs of Keras 2 and 3 pass through unchanged: every rename here keys on an
argument name that only Keras 1 wrote."""

from __future__ import annotations

import copy

from .errors import ConfigError

RENAMED_CLASSES = {
    "Convolution1D": "Conv1D",
    "Convolution2D": "Conv2D",
    "AtrousConvolution1D": "Conv1D",
    "AtrousConvolution2D": "Conv2D",
    "SeparableConvolution2D": "SeparableConv2D",
}
DATA_FORMATS = {"th": "channels_first", "tf": "channels_last", "default": "channels_last"}
INITIALIZERS = {"zero": "zeros", "one": "ones", "uniform": "random_uniform", "normal": "random_normal"}
MERGE_MODES = {
    "sum": "Add",
    "mul": "Multiply",
    "ave": "Average",
    "max": "Maximum",
    "concat": "Concatenate",
    "dot": "Dot",
    "cos": "Dot",
}  # cos: a Dot with normalize (Keras 1 floored the norms' product instead)

# Keras 1 argument -> Keras 2 argument, per layer family (Keras 2's legacy interfaces)
_WEIGHTED = {
    "init": "kernel_initializer",
    "W_regularizer": "kernel_regularizer",
    "b_regularizer": "bias_regularizer",
    "W_constraint": "kernel_constraint",
    "b_constraint": "bias_constraint",
    "bias": "use_bias",
}
RENAMES = {
    "Dense": {"output_dim": "units", **_WEIGHTED},
    "Conv1D": {
        "nb_filter": "filters",
        "filter_length": "kernel_size",
        "subsample_length": "strides",
        "border_mode": "padding",
        "atrous_rate": "dilation_rate",
        **_WEIGHTED,
    },
    "Conv2D": {
        "nb_filter": "filters",
        "subsample": "strides",
        "border_mode": "padding",
        "dim_ordering": "data_format",
        "atrous_rate": "dilation_rate",
        **_WEIGHTED,
    },
    "SeparableConv2D": {
        "nb_filter": "filters",
        "subsample": "strides",
        "border_mode": "padding",
        "dim_ordering": "data_format",
        "b_regularizer": "bias_regularizer",
        "b_constraint": "bias_constraint",
        "bias": "use_bias",
        "init": "depthwise_initializer",
    },
    "MaxPooling1D": {"pool_length": "pool_size", "stride": "strides", "border_mode": "padding"},
    "AveragePooling1D": {"pool_length": "pool_size", "stride": "strides", "border_mode": "padding"},
    "MaxPooling2D": {"border_mode": "padding", "dim_ordering": "data_format"},
    "AveragePooling2D": {"border_mode": "padding", "dim_ordering": "data_format"},
    "GlobalMaxPooling2D": {"dim_ordering": "data_format"},
    "GlobalAveragePooling2D": {"dim_ordering": "data_format"},
    "ZeroPadding2D": {"dim_ordering": "data_format"},
    "UpSampling2D": {"dim_ordering": "data_format"},
    "Cropping2D": {"dim_ordering": "data_format"},
    "UpSampling1D": {"length": "size"},
    "Dropout": {"p": "rate"},
    "Embedding": {
        "init": "embeddings_initializer",
        "W_regularizer": "embeddings_regularizer",
        "W_constraint": "embeddings_constraint",
    },
    "BatchNormalization": {"beta_init": "beta_initializer", "gamma_init": "gamma_initializer"},
}
# Keras 1 arguments with no Keras 2 counterpart: dropped when at their no-op value
_DROPPED = {"weights": None, "mode": 0, "dropout": 0, "dropout_W": 0, "dropout_U": 0}
_KERAS1_ONLY = {
    "output_dim",
    "init",
    "W_regularizer",
    "b_regularizer",
    "W_constraint",
    "b_constraint",
    "bias",
    "nb_filter",
    "nb_row",
    "nb_col",
    "filter_length",
    "subsample",
    "subsample_length",
    "border_mode",
    "dim_ordering",
    "pool_length",
    "stride",
    "p",
    "beta_init",
    "gamma_init",
    "input_dtype",
    "atrous_rate",
}


def is_keras1(config: dict) -> bool:
    """Whether a top-level config was written by Keras 1: its version, or an argument only Keras 1 wrote."""
    version = str(config.get("keras_version", ""))
    if version[:2] == "1.":
        return True
    return _any_keras1(config.get("config"))


def _any_keras1(cfg) -> bool:
    entries = cfg if isinstance(cfg, list) else (cfg or {}).get("layers", []) if isinstance(cfg, dict) else []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        c = entry.get("config")
        if entry.get("class_name") in (*RENAMED_CLASSES, "Merge"):
            return True
        if isinstance(c, dict) and (entry.get("class_name") in ("Sequential", "Model") and _any_keras1(c)):
            return True
        if isinstance(c, dict) and entry.get("class_name") != "Embedding" and _KERAS1_ONLY & set(c):
            return True
        if isinstance(c, dict) and entry.get("class_name") == "Embedding" and {"init", "W_regularizer"} & set(c):
            return True
    return False


def upgrade(config: dict) -> dict:
    """A Keras 1 top-level model config in Keras 2 form (a copy), or the config itself when it is
    not a Keras 1 config."""
    if not isinstance(config, dict) or not is_keras1(config):
        return config
    config = copy.deepcopy(config)
    config["config"] = _model_config(config.get("class_name"), config.get("config"))
    return config


def _model_config(cls, cfg):
    """A model's layers converted; in a Sequential only the first layer's input_dim is its input."""
    first = cls == "Sequential"
    if isinstance(cfg, list):  # Keras 1's Sequential: a bare list of layers
        return [_layer(e, first and i == 0) for i, e in enumerate(cfg)]
    if isinstance(cfg, dict) and isinstance(cfg.get("layers"), list):
        return {**cfg, "layers": [_layer(e, first and i == 0) for i, e in enumerate(cfg["layers"])]}
    return cfg


def _regularizer(value):
    """Keras 1 wrote {"name": "L1L2Regularizer", "l1": .., "l2": ..} (and ActivityRegularizer)."""
    if isinstance(value, dict) and "class_name" not in value and "name" in value:
        return {"class_name": "L1L2", "config": {"l1": float(value.get("l1", 0.0)), "l2": float(value.get("l2", 0.0))}}
    return value


def _initializer(value):
    return INITIALIZERS.get(value, value) if isinstance(value, str) else value


def _layer(entry, first=False):
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), (dict, list)):
        return entry
    cls = entry.get("class_name")
    if cls in ("Sequential", "Model"):
        return {**entry, "config": _model_config(cls, entry["config"])}
    cfg = dict(entry["config"])
    where = f"Keras 1 {cls} layer {cfg.get('name', entry.get('name'))!r}"
    if cls == "Merge":
        cls, cfg = _merge(cfg, where)
    new_cls = RENAMED_CLASSES.get(cls, cls)
    out = {}
    renames = RENAMES.get(new_cls, {})
    if new_cls == "Embedding" and not {"init", "W_regularizer", "W_constraint"} & set(cfg):
        renames = {}  # a Keras 2 Embedding (its input_dim and output_dim mean the same)
    for key, value in cfg.items():
        if key in _DROPPED and key not in renames:
            if value not in (_DROPPED[key], None):
                raise ConfigError(
                    f"{where}: argument {key}={value!r} has no Keras 2 equivalent; "
                    f"kgraph supports only {key}={_DROPPED[key]!r}"
                )
            continue
        new = "dtype" if key == "input_dtype" else renames.get(key, key)
        if key in renames and new in cfg and key != new:
            raise ConfigError(f"{where}: gives both the Keras 1 argument {key!r} and the Keras 2 {new!r}")
        out[new] = value
    if renames:
        _values(new_cls, cfg, out, where, first)
    return {**entry, "class_name": new_cls, "config": out}


def _values(cls, cfg, out, where, first):
    """The value changes and the arguments that merge into one, as Keras 2's preprocessors."""
    for key in (
        "kernel_regularizer",
        "bias_regularizer",
        "activity_regularizer",
        "embeddings_regularizer",
        "gamma_regularizer",
        "beta_regularizer",
        "depthwise_regularizer",
        "pointwise_regularizer",
    ):
        if key in out:
            out[key] = _regularizer(out[key])
    if cls == "SeparableConv2D" and "init" in cfg:  # Keras 2 gave Keras 1's init to both kernels
        out["pointwise_initializer"] = out["depthwise_initializer"]
    for key in (
        "kernel_initializer",
        "bias_initializer",
        "embeddings_initializer",
        "beta_initializer",
        "gamma_initializer",
        "depthwise_initializer",
    ):
        if key in out:
            out[key] = _initializer(out[key])
    if "data_format" in out:
        fmt = out["data_format"]
        if fmt not in DATA_FORMATS and fmt not in ("channels_first", "channels_last", None):
            raise ConfigError(f"{where}: dim_ordering {fmt!r} is not one of 'th', 'tf'")
        out["data_format"] = DATA_FORMATS.get(fmt, fmt)
    if "padding" in out and isinstance(out["padding"], str):
        if out["padding"] == "full":
            raise ConfigError(f"{where}: border_mode='full' (Keras 2 has no such padding) is not supported")
        out["padding"] = out["padding"].lower()
    if cls in ("Conv2D", "SeparableConv2D") and ("nb_row" in cfg or "nb_col" in cfg):
        out["kernel_size"] = [out.pop("nb_row"), out.pop("nb_col")]
    given = "batch_input_shape" in out or "input_shape" in out
    if first and not given and cls == "Conv1D" and out.get("input_dim") is not None:
        out["batch_input_shape"] = [None, out.get("input_length"), out["input_dim"]]
    if first and not given and cls == "Dense" and out.get("input_dim") is not None:
        out["batch_input_shape"] = [None, out["input_dim"]]
    for key in ("input_dim", "input_length"):
        if cls != "Embedding":
            out.pop(key, None)


def _merge(cfg, where):
    """Keras 1's Merge of tensors in a functional model -> Keras 2's Add, Concatenate, ...
    A Merge of models inside a Sequential (its `layers`) or with a Python `mode` is refused."""
    mode = cfg.get("mode")
    if cfg.get("layers"):
        raise ConfigError(
            f"{where}: a Merge of models inside a Sequential is not supported; rebuild it as a "
            f"functional model with Add/Concatenate/... (Keras 2 dropped Merge)"
        )
    if cfg.get("mode_type", "raw") != "raw" or not isinstance(mode, str):
        raise ConfigError(
            f"{where}: a Merge mode saved as a Python function is not supported (kgraph never runs "
            "a saved function's bytecode); rebuild it with Add, Concatenate, Dot, ..."
        )
    if mode not in MERGE_MODES:
        raise ConfigError(
            f"{where}: Merge mode {mode!r} is not supported; supported modes: "
            f"{', '.join(MERGE_MODES)} (they became Add, Multiply, Average, Maximum, Concatenate, Dot)"
        )
    out = {"name": cfg.get("name"), "trainable": cfg.get("trainable", True)}
    if mode == "concat":
        out["axis"] = cfg.get("concat_axis", -1)
    if mode in ("dot", "cos"):
        out["axes"] = cfg.get("dot_axes", -1)
        out["normalize"] = mode == "cos"
    return MERGE_MODES[mode], out
