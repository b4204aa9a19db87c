"""Evaluates a ModelDesc's call graph in dependency order with any value type: shapes when the
model is built, IR node ids when it is lowered."""
from __future__ import annotations

from .errors import ConfigError


def run_graph(desc, inputs: list, apply, path: tuple = ()) -> list:
    """`inputs`: one value per model input. `apply(layer, args, path)` returns the list of a call's
    output values (InputLayers are applied to their fed value). Returns the model's output values."""
    if len(inputs) != len(desc.inputs):
        raise ConfigError(f"model {desc.name!r} takes {len(desc.inputs)} inputs, got {len(inputs)}")
    by_name = {layer.name: layer for layer in desc.layers}
    env = {}
    for ref, value in zip(desc.inputs, inputs):
        layer = by_name.get(ref[0])
        if layer is None or layer.class_name != "InputLayer":
            raise ConfigError(f"model {desc.name!r}: input {ref[0]!r} is not an InputLayer of the model")
        env[ref] = apply(layer, [value], path)[0]
    pending = [(layer, k, refs) for layer in desc.layers for k, refs in enumerate(layer.calls)]
    while pending:
        ready = next((p for p in pending if all(r in env for r in p[2])), None)
        if ready is None:
            layer, _, refs = pending[0]
            missing = next(r for r in refs if r not in env)
            raise ConfigError(f"model {desc.name!r}: layer {layer.name!r} reads {list(missing)}, "
                              "which no layer of the model produces")
        pending.remove(ready)
        layer, k, refs = ready
        for i, value in enumerate(apply(layer, [env[r] for r in refs], path)):
            env[(layer.name, k + layer.node_offset, i)] = value
    for ref in desc.outputs:
        if ref not in env:
            raise ConfigError(f"model {desc.name!r}: output {list(ref)} is not produced by any layer")
    return [env[ref] for ref in desc.outputs]
