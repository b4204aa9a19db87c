"""Dead-code elimination: keep what the graph's outputs and the in-place updates need."""

from __future__ import annotations

from ir import Pattern, get_op


def dce(graph):
    roots = set(graph.outputs.values())
    roots |= {n.id for n in graph.nodes() if get_op(n.op).pattern is Pattern.UPDATE}
    roots |= {n.id for n in graph.nodes() if n.op in ("param", "state", "input", "label", "sample_weight")}
    live, stack = set(roots), list(roots)
    while stack:  # one walk up from all roots: ancestors() per root was quadratic in a long chain
        for p in graph.nx.predecessors(stack.pop()):
            if p not in live:
                live.add(p)
                stack.append(p)
    for node in reversed(graph.nodes()):
        if node.id not in live:
            graph.remove(node.id)
    return graph
