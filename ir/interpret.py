"""Runs a graph with the registry's NumPy references: the oracle every compiled step is tested against."""

from __future__ import annotations

import numpy as np

from .ops import Pattern, get_op


def interpret(graph, feeds: dict) -> dict:
    """Evaluate every node; `feeds` maps source node ids to arrays. Update ops write their
    first operand in place, as the compiled step does. Returns id -> value for all nodes."""
    env = {}
    for node in graph.nodes():
        if node.op == "const":
            env[node.id] = np.array(node.attrs["value"], dtype=node.type.dtype)
        elif node.is_source:
            if node.id not in feeds:
                raise KeyError(f"no value fed for {node.op} %{node.id}")
            env[node.id] = feeds[node.id]
        else:
            op = get_op(node.op)
            args = [env[i] for i in node.inputs]
            out = op.forward(*args, **node.semantic_attrs())
            if op.pattern is not Pattern.UPDATE:
                out = np.asarray(out, dtype=node.type.dtype)
            env[node.id] = out
    return env
