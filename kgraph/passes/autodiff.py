"""Reverse-mode autodiff over the registry's VJP rules: the backward graph is built in IR,
so fusion and memory planning see it like the forward one."""

from __future__ import annotations

from ir import get_op


def autodiff(graph, loss: str, wrt: list[str], skip_unreached: bool = False) -> dict[str, str]:
    """Append the gradient of scalar node `loss` with respect to each node in `wrt`.
    Returns {node id: gradient node id}. Operands that no parameter depends on get no gradient. A
    wrt node no gradient reaches (the loss does not read it, or reads it only through ops with no
    gradient, such as comparisons) is an error, or with skip_unreached left out of the result."""
    needs = set(wrt)
    for node in graph.nodes():  # forward sweep: which nodes depend on a wrt node
        if any(i in needs for i in node.inputs):
            needs.add(node.id)
    if loss not in needs:
        raise ValueError(f"the loss %{loss} does not depend on any trainable parameter")

    cotangents: dict[str, list[str]] = {loss: [graph.const(1.0, graph.type(loss).dtype)]}
    forward = [n for n in graph.nodes() if n.id in needs]
    for node in reversed(forward):
        parts = cotangents.pop(node.id, None)
        if not parts or node.is_source:
            if parts:
                cotangents[node.id] = parts
            continue
        g = _sum(graph, parts)
        op = get_op(node.op)
        if op.vjp is None:
            raise NotImplementedError(f"op {node.op} (%{node.id}) has no gradient rule")
        grads = op.vjp(graph, g, node.id, *node.inputs, **node.semantic_attrs())
        for operand, grad in zip(node.inputs, grads):
            if grad is not None and operand in needs:
                cotangents.setdefault(operand, []).append(grad)
    if skip_unreached:
        return {w: _sum(graph, cotangents[w]) for w in wrt if w in cotangents}
    return {w: _sum(graph, cotangents[w]) if w in cotangents else _zeros_error(w) for w in wrt}


def _sum(graph, parts):
    total = parts[0]
    for p in parts[1:]:  # a node used several times (shared layers, residuals) sums its cotangents
        total = graph.add(total, p)
    return total


def _zeros_error(w):
    raise ValueError(f"parameter %{w} does not affect the loss")
