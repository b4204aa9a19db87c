"""Graphviz DOT export of an IR graph (render with `dot -Tpng`)."""

from __future__ import annotations

from .ops import Pattern, get_op

_COLORS = {
    Pattern.SOURCE: "lightgrey",
    Pattern.ELEMWISE: "palegreen",
    Pattern.REDUCE: "khaki",
    Pattern.GEMM: "lightskyblue",
    Pattern.VIEW: "white",
    Pattern.OPAQUE: "lightpink",
    Pattern.UPDATE: "orange",
}


def _q(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(graph) -> str:
    lines = [
        f"digraph {_q(graph.name)} {{",
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica"];',
    ]
    for n in graph.nodes():
        label = f"{n.id}\\n{n.op} {n.type}"
        if n.attrs.get("fused"):
            label += "\\nfused: " + "+".join(n.attrs["fused"])
        color = _COLORS.get(get_op(n.op).pattern, "white")
        lines.append(f"  {_q(n.id)} [label={_q(label).replace(chr(92) * 2 + 'n', chr(92) + 'n')}, fillcolor={color}];")
        for i in n.inputs:
            lines.append(f"  {_q(i)} -> {_q(n.id)};")
    for k, v in graph.outputs.items():
        lines.append(f"  {_q('out:' + k)} [shape=plaintext, label={_q(k)}];")
        lines.append(f"  {_q(v)} -> {_q('out:' + k)} [style=dashed];")
    lines.append("}")
    return "\n".join(lines) + "\n"
