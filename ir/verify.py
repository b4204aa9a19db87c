"""The verifier: every operand defined, no cycles, every type what the op's shape rule says."""

from __future__ import annotations

import networkx as nx

from .ops import get_op


class VerifyError(Exception):
    pass


def verify(graph) -> None:
    # every edge running from an earlier node to a later one (Graph counts those that do not) is
    # a graph without a cycle; else networkx looks for one
    if getattr(graph, "_back_edge_count", None) != 0 and not nx.is_directed_acyclic_graph(graph.nx):
        raise VerifyError(f"graph {graph.name!r} has a cycle: {nx.find_cycle(graph.nx)}")
    for node in graph.nodes():
        op = get_op(node.op)
        for i in node.inputs:
            if i not in graph:
                raise VerifyError(f"%{node.id} = {node.op}: operand %{i} is not defined")
        if node.is_source:
            continue
        try:
            expected = op.infer([graph.type(i) for i in node.inputs], node.semantic_attrs())
        except Exception as e:  # noqa: BLE001 - report any shape-rule failure as a verify error
            raise VerifyError(f"%{node.id} = {node.op}: {e}") from e
        if expected != node.type:
            raise VerifyError(f"%{node.id} = {node.op}: type is {node.type}, the shape rule gives {expected}")
    for k, v in graph.outputs.items():
        if v not in graph:
            raise VerifyError(f"output {k!r} names %{v}, which is not in the graph")
