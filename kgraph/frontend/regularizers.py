"""Keras kernel/bias regularizers -> {"l1": float, "l2": float}, coefficients kept exactly as written."""

from __future__ import annotations

from .errors import ConfigError

_STRINGS = {"l1": {"l1": 0.01, "l2": 0.0}, "l2": {"l1": 0.0, "l2": 0.01}, "l1_l2": {"l1": 0.01, "l2": 0.01}}
_CLASSES = {"L1": ("l1",), "L2": ("l2",), "L1L2": ("l1", "l2")}


def parse_regularizer(value, where: str) -> dict | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value.lower() not in _STRINGS:
            raise ConfigError(f"{where}: unsupported regularizer {value!r}; supported: l1, l2, l1_l2")
        return dict(_STRINGS[value.lower()])
    cls = value.get("class_name") if isinstance(value, dict) else None
    if cls not in _CLASSES:
        raise ConfigError(f"{where}: unsupported regularizer {cls or value!r}; supported: L1, L2, L1L2")
    cfg = value.get("config") or {}
    out = {"l1": 0.0, "l2": 0.0}
    for key in _CLASSES[cls]:
        out[key] = float(cfg.get(key, 0.01 if cls != "L1L2" else 0.0))
    return out
