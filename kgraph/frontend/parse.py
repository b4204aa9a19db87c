"""Config text -> dict. JSON, or YAML through a safe loader: a YAML tag that would build a
Python object is refused, never constructed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from .. import limits
from .errors import ConfigError


class _KerasYamlLoader(yaml.SafeLoader):
    """SafeLoader plus `!!python/tuple`, which Keras 2's to_yaml() writes for every shape, and a
    bound on nesting (the composer recurses per level: deep input would end in a RecursionError)."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth, self.max_depth = 0, limits.limit("KGRAPH_MAX_CONFIG_DEPTH")

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > self.max_depth:
                raise ConfigError(
                    f"the YAML is nested more than {self.max_depth} levels deep"
                    f"{_where(self.peek_event().start_mark)} (raise KGRAPH_MAX_CONFIG_DEPTH to allow it)"
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


_KerasYamlLoader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node))


def _where(mark) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _flow_depth(text: str) -> int:
    """The deepest nesting of YAML flow brackets (PyYAML's scanner is quadratic in it), counted
    before parsing; brackets inside quoted strings count too, which can only overstate it."""
    depth = deepest = 0
    for c in re.findall(r"[\[\]{}]", text):
        depth = depth + 1 if c in "[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    return deepest


def _load_yaml(text: str, source: str):
    if _flow_depth(text) > limits.limit("KGRAPH_MAX_CONFIG_DEPTH"):
        raise ConfigError(
            f"{source}: the YAML is nested more than {limits.limit('KGRAPH_MAX_CONFIG_DEPTH')} "
            "levels deep (raise KGRAPH_MAX_CONFIG_DEPTH to allow it)"
        )
    try:
        return yaml.load(text, Loader=_KerasYamlLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise ConfigError(f"{source}: the YAML is nested too deeply to read") from None
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    except yaml.constructor.ConstructorError as e:
        raise ConfigError(
            f"{source}: refused YAML{_where(e.problem_mark)}: {e.problem} (only plain data is read)"
        ) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(f"{source}: malformed YAML{_where(mark)}: {getattr(e, 'problem', None) or e}") from None
    except (ValueError, TypeError, OverflowError) as e:  # a tagged scalar that is not what its tag says
        raise ConfigError(f"{source}: unreadable YAML value ({e})") from None


def _load_json(text: str, source: str):
    try:
        return json.loads(text)
    except RecursionError:
        raise ConfigError(f"{source}: the JSON is nested too deeply to read") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{source}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None


def parse_config_text(text: str, fmt: str | None = None, source: str = "config") -> dict:
    """Parse a model config; fmt is "json", "yaml" or None to guess from the first character.
    Its size, nesting and (YAML aliases expanded) number of values are bounded: see kgraph.limits."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not isinstance(text, str):
        raise ConfigError(f"{source}: a config is text, got {type(text).__name__}")
    limits.check_config_size(len(text), source)
    if fmt is None:
        fmt = "json" if text.lstrip()[:1] in ("{", "[") else "yaml"
    if fmt == "json":
        data = _load_json(text, source)
    elif fmt in ("yaml", "yml"):
        data = _load_yaml(text, source)
    else:
        raise ConfigError(f"{source}: unknown config format {fmt!r}; use 'json' or 'yaml'")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a model config is a mapping, got {type(data).__name__}")
    limits.check_config_tree(data, source)
    return data


_FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml"}


def read_config_file(path) -> dict:
    """Read a .json, .yaml or .yml model config."""
    path = Path(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(
            f"{path}: unknown config file type {path.suffix!r}; expected a config (.json, .yaml, .yml) "
            "or a Keras model file (.keras, .h5)"
        )
    try:
        limits.check_config_size(path.stat().st_size, str(path))  # before reading it
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    return parse_config_text(text, fmt, source=str(path))
