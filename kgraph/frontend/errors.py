"""The frontend's one error type: every problem with a config is reported as one clear line."""


class ConfigError(ValueError):
    """A model config that kgraph cannot read or does not support. Its text is one line whatever
    the config holds: a newline in a name from the file is shown escaped."""

    def __str__(self):
        return super().__str__().replace("\r", "\\r").replace("\n", "\\n")
