"""The frontend: reads Keras model configs (Keras 2.1, tf.keras 2.x, Keras 3) and lowers them to
the IR. It is the only part of kgraph that knows Keras."""

from .errors import ConfigError
from .model import (
    FrontendModel,
    InputSpec,
    LayerInfo,
    NotBuiltError,
    WeightSpec,
    build_model,
    config_inputs,
    declare_input_shapes,
)
from .parse import parse_config_text, read_config_file

__all__ = [
    "ConfigError",
    "parse_config_text",
    "read_config_file",
    "build_model",
    "FrontendModel",
    "WeightSpec",
    "InputSpec",
    "LayerInfo",
    "NotBuiltError",
    "config_inputs",
    "declare_input_shapes",
]
