"""Evaluates a ModelDesc's call graph in dependency order with any value type: shapes when the
model is built, IR node ids when it is lowered."""

from __future__ import annotations

import heapq

from .errors import ConfigError

# how many times a call's input was checked for readiness, over all walks: a test counts it to
# show that a walk's work grows linearly with the number of layers, whatever their order
READY_CHECKS = [0]

# what a layer's rule may raise on a config it did not expect; reported as one line naming the layer
_RULE_ERRORS = (KeyError, IndexError, TypeError, AttributeError, ArithmeticError, ValueError, MemoryError)


def guarded(layer, path, fn, *args):
    """fn(*args) for `layer`, an unexpected error in it turned into one line naming the layer."""
    try:
        return fn(*args)
    except ConfigError:
        raise
    except _RULE_ERRORS as e:
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise ConfigError(
            f"{layer.class_name} layer {'/'.join((*path, layer.name))!r}: its config is not understood ({detail[:200]})"
        ) from e


def run_graph(desc, inputs: list, apply, path: tuple = ()) -> list:
    """`inputs`: one value per model input. `apply(layer, args, path, options)` returns the list of a
    call's output values (InputLayers are applied to their fed value); options: the call's keyword
    arguments that are not tensors (training=False, ...). Returns the model's output values.

    Calls run in config order among those whose inputs are ready (the order the IR's node ids
    follow); a heap of ready calls and a count of missing inputs per call keep this linear
    (n log n) in the number of calls, in whatever order the config lists its layers."""
    if len(inputs) != len(desc.inputs):
        raise ConfigError(f"model {desc.name!r} takes {len(desc.inputs)} inputs, got {len(inputs)}")
    by_name = {layer.name: layer for layer in desc.layers}
    env = {}
    for ref, value in zip(desc.inputs, inputs):
        layer = by_name.get(ref[0])
        if layer is None or layer.class_name != "InputLayer":
            raise ConfigError(f"model {desc.name!r}: input {ref[0]!r} is not an InputLayer of the model")
        env[ref] = guarded(layer, path, apply, layer, [value], path, {})[0]
    pending = [(layer, k, refs) for layer in desc.layers for k, refs in enumerate(layer.calls)]
    missing = []  # per pending call: how many of its inputs are not produced yet
    waiting = {}  # ref -> indices of the pending calls that read it
    ready = []  # heap of the indices of calls whose inputs are all produced
    for i, (_, _, refs) in enumerate(pending):
        absent = {r for r in refs if r not in env}
        READY_CHECKS[0] += len(refs)
        missing.append(len(absent))
        for r in absent:
            waiting.setdefault(r, []).append(i)
        if not absent:
            ready.append(i)
    heapq.heapify(ready)
    done = 0
    while ready:
        layer, k, refs = pending[heapq.heappop(ready)]
        done += 1
        options = layer.call_options[k] if k < len(layer.call_options) else {}
        for t, value in enumerate(guarded(layer, path, apply, layer, [env[r] for r in refs], path, options)):
            ref = (layer.name, k + layer.node_offset, t)
            env[ref] = value
            for i in waiting.pop(ref, ()):
                READY_CHECKS[0] += 1
                missing[i] -= 1
                if missing[i] == 0:
                    heapq.heappush(ready, i)
    if done < len(pending):
        first = next(i for i, m in enumerate(missing) if m)
        layer, _, refs = pending[first]
        absent = next(r for r in refs if r not in env)
        raise ConfigError(
            f"model {desc.name!r}: layer {layer.name!r} reads {list(absent)}, which no layer of the model produces"
        )
    for ref in desc.outputs:
        if ref not in env:
            raise ConfigError(f"model {desc.name!r}: output {list(ref)} is not produced by any layer")
    return [env[ref] for ref in desc.outputs]
