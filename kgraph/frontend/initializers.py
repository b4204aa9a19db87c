"""Keras initializers in NumPy: Keras's formulas, seeded NumPy streams (TF's bits are not reproduced)."""

from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError

# stddev of a standard normal truncated to [-2, 2]: Keras divides by it so the variance is `scale`
TRUNCATED_STDDEV = 0.87962566103423978

_ALIASES = {
    "glorot_uniform": "GlorotUniform",
    "glorot_normal": "GlorotNormal",
    "he_uniform": "HeUniform",
    "he_normal": "HeNormal",
    "lecun_uniform": "LecunUniform",
    "lecun_normal": "LecunNormal",
    "variance_scaling": "VarianceScaling",
    "zeros": "Zeros",
    "zero": "Zeros",
    "ones": "Ones",
    "one": "Ones",
    "constant": "Constant",
    "random_normal": "RandomNormal",
    "normal": "RandomNormal",
    "random_uniform": "RandomUniform",
    "uniform": "RandomUniform",
    "truncated_normal": "TruncatedNormal",
    "orthogonal": "Orthogonal",
    "OrthogonalInitializer": "Orthogonal",
    "identity": "Identity",
    "IdentityInitializer": "Identity",
}
# the named VarianceScaling presets: (scale, mode, distribution)
_PRESETS = {
    "GlorotUniform": (1.0, "fan_avg", "uniform"),
    "GlorotNormal": (1.0, "fan_avg", "truncated_normal"),
    "HeUniform": (2.0, "fan_in", "uniform"),
    "HeNormal": (2.0, "fan_in", "truncated_normal"),
    "LecunUniform": (1.0, "fan_in", "uniform"),
    "LecunNormal": (1.0, "fan_in", "truncated_normal"),
}


def _fans(shape) -> tuple:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _uniform(rng, shape, low, high, dtype):
    x = rng.random(shape, dtype=dtype)
    x *= high - low
    x += low
    return x


def _normal(rng, shape, mean, stddev, dtype):
    x = rng.standard_normal(shape, dtype=dtype)
    x *= stddev
    x += mean
    return x


def _truncated(rng, shape, mean, stddev, dtype):
    """Normal(mean, stddev) redrawn outside two standard deviations, as Keras's truncated normal."""
    x = rng.standard_normal(shape, dtype=dtype)
    bad = np.abs(x) > 2
    while bad.any():
        x[bad] = rng.standard_normal(int(bad.sum()), dtype=dtype)
        bad = np.abs(x) > 2
    x *= stddev
    x += mean
    return x


def _variance_scaling(rng, shape, scale, mode, distribution, dtype):
    fan_in, fan_out = _fans(shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    scale = scale / max(1.0, fan)
    if distribution in ("truncated_normal", "normal"):  # Keras 2's "normal" meant truncated
        return _truncated(rng, shape, 0.0, math.sqrt(scale) / TRUNCATED_STDDEV, dtype)
    if distribution == "untruncated_normal":
        return _normal(rng, shape, 0.0, math.sqrt(scale), dtype)
    limit = math.sqrt(3.0 * scale)
    return _uniform(rng, shape, -limit, limit, dtype)


def _orthogonal(rng, shape, gain):
    rows, cols = math.prod(shape[:-1]), shape[-1]
    q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return gain * q.reshape(shape)


def _identity(rng, shape, gain):
    if len(shape) != 2:
        raise ConfigError(f"the Identity initializer needs a 2-D weight, got shape {tuple(shape)}")
    return gain * np.eye(*shape)


def parse_initializer(value, where: str) -> tuple:
    """(class name, config) from a string alias or a serialized {"class_name", "config"}."""
    if isinstance(value, str):
        cls, cfg = value, {}
    elif isinstance(value, dict) and isinstance(value.get("class_name"), str):
        cls, cfg = value["class_name"], value.get("config") or {}
    else:
        raise ConfigError(f"{where}: unreadable initializer {value!r}")
    cls = _ALIASES.get(cls, cls)
    if cls not in _PRESETS and cls not in _MAKERS:
        raise ConfigError(
            f"{where}: unsupported initializer {cls!r}; supported: {', '.join(sorted([*_PRESETS, *_MAKERS]))}"
        )
    if cfg.get("input_axes") is not None or cfg.get("output_axes") is not None:
        raise ConfigError(f"{where}: initializer {cls} with input_axes/output_axes is not supported")
    return cls, cfg


_MAKERS = {
    "VarianceScaling": lambda rng, shape, c, dt: _variance_scaling(
        rng, shape, float(c.get("scale", 1.0)), c.get("mode", "fan_in"), c.get("distribution", "truncated_normal"), dt
    ),
    "Zeros": lambda rng, shape, c, dt: np.zeros(shape, dt),
    "Ones": lambda rng, shape, c, dt: np.ones(shape, dt),
    "Constant": lambda rng, shape, c, dt: np.full(shape, float(c.get("value", 0.0)), dt),
    "RandomNormal": lambda rng, shape, c, dt: _normal(rng, shape, c.get("mean", 0.0), c.get("stddev", 0.05), dt),
    "RandomUniform": lambda rng, shape, c, dt: _uniform(rng, shape, c.get("minval", -0.05), c.get("maxval", 0.05), dt),
    "TruncatedNormal": lambda rng, shape, c, dt: _truncated(rng, shape, c.get("mean", 0.0), c.get("stddev", 0.05), dt),
    "Orthogonal": lambda rng, shape, c, dt: _orthogonal(rng, shape, float(c.get("gain", 1.0))),  # QR in float64
    "Identity": lambda rng, shape, c, dt: _identity(rng, shape, float(c.get("gain", 1.0))),
}


def initial_value(init: tuple, shape: tuple, rng: np.random.Generator, dtype: str) -> np.ndarray:
    """Draw a weight. An initializer with its own seed gets its own stream, so its value is fixed.
    float32 weights are drawn as float32: a float64 draw and a cast took 0.3 s of a 25M-weight
    model's first step."""
    cls, cfg = init
    if cfg.get("seed") is not None:
        rng = np.random.default_rng(int(cfg["seed"]))
    draw = np.dtype(dtype) if np.dtype(dtype) in (np.float32, np.float64) else np.dtype(np.float64)
    if cls in _PRESETS:
        value = _variance_scaling(rng, shape, *_PRESETS[cls], draw)
    else:
        value = _MAKERS[cls](rng, shape, cfg, draw)
    return np.asarray(value, dtype=dtype).reshape(shape)
