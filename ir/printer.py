"""One line per node, SSA style: `%h: f32[B,128] = matmul(%x, %w) {transpose_b=True}  # note`."""

from __future__ import annotations

from .graph import BOOKKEEPING_ATTRS


def _fmt_attr(v):
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)) and len(v) > 8:  # a constant's values: a line, not a page
        return "(" + ",".join(_fmt_attr(x) for x in v[:4]) + f",... {len(v)} values)"
    if isinstance(v, (list, tuple)):
        return "(" + ",".join(_fmt_attr(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    return str(v)


_HIDDEN = frozenset(BOOKKEEPING_ATTRS) | {"expr"}


def format_node(node) -> str:
    text = (
        f"%{node.id}: {node.type} = {node.op}(%{', %'.join(node.inputs)})"
        if node.inputs
        else (f"%{node.id}: {node.type} = {node.op}()")
    )
    all_attrs = node.attrs
    if not all_attrs:
        return text
    attrs = sorted((k, v) for k, v in all_attrs.items() if k not in _HIDDEN)
    if attrs:
        text += " {" + ", ".join(f"{k}={_fmt_attr(v)}" for k, v in attrs) + "}"
    notes = []
    if all_attrs.get("fused"):
        notes.append("fused: " + "+".join(all_attrs["fused"]))
    if all_attrs.get("bias_grad"):
        notes.append(f"also writes %{all_attrs['bias_grad']}")
    if all_attrs.get("note"):
        notes.append(all_attrs["note"])
    if notes:
        text += "  # " + "; ".join(notes)
    return text


def format_graph(graph) -> str:
    nodes = graph.nodes()
    params = [n for n in nodes if n.is_source and n.op != "const"]
    head = ", ".join(f"%{n.id}: {n.type}" for n in params)
    lines = [f"graph {graph.name}({head}) {{"]
    for n in nodes:
        if n.is_source and n.op != "const":
            continue
        lines.append("  " + format_node(n))
    outs = ", ".join(f"{k}=%{v}" for k, v in graph.outputs.items())
    lines.append(f"  return {outs}")
    lines.append("}")
    return "\n".join(lines)
