"""Dead-code elimination: keep what the graph's outputs and the in-place updates need."""
from __future__ import annotations

import networkx as nx

from ir import Pattern, get_op


def dce(graph):
    roots = set(graph.outputs.values())
    roots |= {n.id for n in graph.nodes() if get_op(n.op).pattern is Pattern.UPDATE}
    roots |= {n.id for n in graph.nodes() if n.op in ("param", "state", "input", "label", "sample_weight")}
    live = set(roots)
    for r in roots:
        live |= nx.ancestors(graph.nx, r)
    for node in reversed(graph.nodes()):
        if node.id not in live:
            graph.remove(node.id)
    return graph
