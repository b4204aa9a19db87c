"""Keras weight constraints (MaxNorm, NonNeg, UnitNorm, MinMaxNorm), in any Keras's spelling ->
{"kind", "axes", "min_value", "max_value", "rate"}: the attrs of the IR's `constrain` op, which
the training step runs on the weight after each optimizer update, as Keras's optimizer does."""

from __future__ import annotations

from .errors import ConfigError
from .normalize import snake_case

SUPPORTED = "MaxNorm, NonNeg, UnitNorm, MinMaxNorm"
# Keras 2's lower-case aliases; Keras 3 and 2 also take the snake_case of each class
_ALIASES = {"maxnorm": "max_norm", "nonneg": "non_neg", "unitnorm": "unit_norm"}
_DEFAULTS = {
    "max_norm": {"max_value": 2.0, "axis": 0},
    "non_neg": {},
    "unit_norm": {"axis": 0},
    "min_max_norm": {"min_value": 0.0, "max_value": 1.0, "rate": 1.0, "axis": 0},
}


def parse_constraint(value, where: str, shape: tuple) -> dict | None:
    """The constraint of a weight of `shape` (None: none). Keras 1 wrote {"name": "MaxNorm", "m": 2};
    Keras 2 and 3 {"class_name": ..., "config": {...}} or a string."""
    if value is None:
        return None
    if isinstance(value, str):
        cls, config = value, {}
    elif isinstance(value, dict):
        cls = value.get("class_name", value.get("name"))
        config = value.get("config", value if "name" in value else {})
        if not isinstance(config, dict):
            raise ConfigError(f"{where}: constraint {cls!r} has a config that is not a mapping")
    else:
        raise ConfigError(f"{where}: cannot read constraint {value!r}; supported: {SUPPORTED}")
    kind = snake_case(str(cls)) if isinstance(cls, str) else None
    kind = _ALIASES.get(str(cls).lower(), kind)
    if kind not in _DEFAULTS:
        raise ConfigError(f"{where}: unsupported constraint {cls!r}; supported: {SUPPORTED}")
    args = {**_DEFAULTS[kind], **{k: v for k, v in config.items() if k in _DEFAULTS[kind]}}
    if "m" in config and kind == "max_norm":  # Keras 1's name for max_value
        args["max_value"] = config["m"]
    out = {"kind": kind, "axes": _axes(args.pop("axis", None), shape, where, kind)}
    for key, v in args.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{where}: constraint {cls!r}: {key} must be a number, got {v!r}")
        out[key] = float(v)
    return out


def _axes(axis, shape, where, kind) -> tuple:
    """The weight's axes a norm is taken over, as a contiguous ascending run (the kernels view the
    weight as (before, over, after)); () for NonNeg."""
    if kind == "non_neg":
        return ()
    rank = len(shape)
    if axis is None:  # Keras takes the norm over the whole weight
        return tuple(range(rank))
    axes = [axis] if isinstance(axis, int) and not isinstance(axis, bool) else axis
    if (
        not isinstance(axes, (list, tuple))
        or not axes
        or any(isinstance(a, bool) or not isinstance(a, int) or not -rank <= a < rank for a in axes)
    ):
        raise ConfigError(f"{where}: constraint axis {axis!r} is not an axis of the weight's shape {tuple(shape)}")
    axes = sorted({a % rank for a in axes})
    if axes != list(range(axes[0], axes[-1] + 1)):
        raise ConfigError(f"{where}: constraint axis {axis!r} is not supported: kgraph takes norms over adjacent axes")
    return tuple(axes)
