"""Recurrent layers' scratch memory and sibling gradients, for the memory plan.

An `rnn_sequence` node runs its time loop with a few state-sized arrays and the pre-activations
of its gates (its "workspace"). When a backward pass follows, the gates of every step are kept
from the forward node until the backward's node (the "saved" slot), so the backward reads them
instead of recomputing each step's recurrent GEMM. The `rnn_sequence_grad` nodes of one forward
(one per operand: d xp, d U, d recurrent bias, d h0, d c0) are computed together, by the first
of them in the graph's order ("siblings"; the others are `computed_by` it), in one sweep back
through time. kgraph/kernels/cpu.py's rnn_forward and rnn_backward slice their workspace in the
order the sizes below add up."""

from __future__ import annotations

from ir.ops.recurrent import CELLS

from .fusion import Decision


def gate_width(attrs, units: int) -> int:
    """Pre-activations kept per step and sample: the gates' (a GRU with reset_after also keeps its
    recurrent candidate product, which its reset gate multiplies)."""
    if attrs["cell"] == "gru" and attrs.get("reset_after", True):
        return 4 * units
    return CELLS[attrs["cell"]] * units


def forward_workspace(attrs, units: int, saved: bool) -> int:
    """Per sample: h, c, he, r * he and the recurrent product of a step, and one step's gates
    when they are not saved for a backward pass."""
    width = gate_width(attrs, units)
    return 4 * units + CELLS[attrs["cell"]] * units + (0 if saved else width)


def backward_workspace(attrs, units: int, steps: int, with_dxp: bool) -> int:
    """Per sample: he per step, r * he per step (GRU reset_after=False), the recurrent gradient
    per step (GRU reset_after=True), one step's gradient and four state-sized arrays; then d xp
    itself when no sibling returns it (the recurrent kernel's gradient reads it)."""
    g = CELLS[attrs["cell"]] * units
    gru, after = attrs["cell"] == "gru", attrs.get("reset_after", True)
    size = steps * units + (steps * units if gru and not after else 0) + (steps * g if gru and after else 0)
    return size + g + 4 * units + (0 if with_dxp else steps * g)


def plan_recurrent(graph) -> list[Decision]:
    """Sets the bookkeeping attrs above; returns what it decided."""
    out, groups = [], {}
    for node in graph.nodes():
        if node.op == "rnn_sequence_grad":
            key = (node.inputs, tuple(sorted((k, v) for k, v in node.semantic_attrs().items() if k != "wrt")))
            groups.setdefault(key, []).append(node)
    saved_for = {}
    for nodes in groups.values():
        first = nodes[0]
        first.attrs["siblings"] = {n.attrs["wrt"]: n.id for n in nodes}
        for n in nodes[1:]:
            n.attrs["computed_by"] = first.id
            n.attrs["note"] = f"written by %{first.id}"
        fwd = graph.node(first.inputs[1])
        units, steps = graph.type(fwd.inputs[1]).shape[0], graph.type(fwd.id).shape[1]
        with_dxp = 0 in first.attrs["siblings"]
        first.attrs["workspace"] = backward_workspace(first.attrs, units, steps, with_dxp)
        if fwd.op == "rnn_sequence" and fwd.id not in saved_for:
            saved_for[fwd.id] = first.id
            fwd.attrs["saved"] = steps * gate_width(fwd.attrs, units)
            fwd.attrs["saved_for"] = first.id
        out.append(Decision("rnn-backward", first.id, True, f"one sweep writes {', '.join('%' + n.id for n in nodes)}"))
    for node in graph.nodes():
        if node.op == "rnn_sequence":
            units = graph.type(node.inputs[1]).shape[0]
            node.attrs["workspace"] = forward_workspace(node.attrs, units, "saved" in node.attrs)
    return out
