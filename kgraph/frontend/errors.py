"""The frontend's one error type: every problem with a config is reported as one clear line."""


class ConfigError(ValueError):
    """A model config that kgraph cannot read or does not support."""
