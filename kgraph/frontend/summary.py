"""model.summary() as Keras 3 prints it (rich's box table, captured as plain text)."""

from __future__ import annotations

import numpy as np

from ir import BATCH


def _shape_text(shape) -> str:
    if isinstance(shape, list):  # a layer with several outputs
        return "[" + ", ".join(_shape_text(s) for s in shape) + "]"
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _memory(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if nbytes / 1024 < 1:
            return f"{nbytes:.2f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.2f} PB"


def _per_sample(shape) -> int:
    return int(np.prod([1 if d == BATCH else d for d in shape]))


def step_cost(model) -> dict:
    """What one sample costs in the forward pass: GEMM FLOPs (Dense, convolutions as im2col + GEMM)
    and the bytes of every value it computes (what training may keep for the backward pass). A
    training step does about 3x the forward FLOPs (the input and weight gradients are GEMMs too)."""
    graph, _ = model.lowered(training=False)
    flops, values = 0, 0
    for node in graph.nodes():
        if node.is_source:
            continue
        values += _per_sample(node.type.shape) * np.dtype(node.type.dtype).itemsize
        if node.op in ("matmul", "fused_dense"):
            a = graph.type(node.inputs[0]).shape
            inner = a[-2] if node.attrs.get("transpose_a") else a[-1]
            flops += 2 * _per_sample(node.type.shape) * int(inner)
        elif node.op == "rnn_sequence":  # the recurrent GEMM of every step: [H] x [H, G] per sample
            steps, gates = graph.type(node.inputs[0]).shape[1:]
            flops += 2 * steps * graph.type(node.inputs[1]).shape[0] * gates
    return {"forward_flops": flops, "value_bytes": values}


def _flops(n: float) -> str:
    for unit in ("", "K", "M", "G", "T", "P"):
        if n < 1000:
            return f"{n:.3g} {unit}FLOP"
        n /= 1000
    return f"{n:.3g} EFLOP"


def _sequential_like(desc) -> bool:
    """Keras's test: a chain with one input tensor per call, no shared layers, no branches."""
    if desc.class_name == "Sequential":
        return True
    refs = [r for layer in desc.layers for call in layer.calls for r in call]
    return (
        len(desc.inputs) == 1
        and len(refs) == len(set(refs))
        and all(len(layer.calls) <= 1 and all(len(c) <= 1 for c in layer.calls) for layer in desc.layers)
    )


def _ratio_reduce(total: int, widths: list) -> list:
    """rich's ratio_reduce with equal ratios: take `total` columns off, spread evenly."""
    out, remaining, n = [], total, len(widths)
    for w in widths:
        cut = min(w, round(remaining / n))
        out.append(w - cut)
        remaining -= cut
        n -= 1
    return out


def _column_widths(line_length: int, positions: list) -> list:
    """Keras asks each column for int(pos * line_length) - previous; rich then shrinks the columns
    (padding included) evenly until the table with its borders is line_length wide."""
    widths, current = [], 0
    for pos in positions:
        widths.append(int(pos * line_length) - current)
        current += widths[-1]
    cells = [w + 2 for w in widths]
    excess = sum(cells) - (line_length - len(cells) - 1)
    return [c - 2 for c in (_ratio_reduce(excess, cells) if excess > 0 else cells)]


def _wrap(text: str, width: int) -> list:
    """Greedy word wrap; a word longer than the column is cut with an ellipsis, as rich does."""
    lines = []
    for word in text.split(" "):
        if len(word) > width:
            word = word[: width - 1] + "…"
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def _row(cells: list, widths: list, right: list) -> list:
    wrapped = [_wrap(c, w) for c, w in zip(cells, widths)]
    height = max(len(w) for w in wrapped)
    lines = []
    for i in range(height):
        parts = []
        for lines_of, w, r in zip(wrapped, widths, right):
            text = lines_of[i] if i < len(lines_of) else ""
            parts.append(" " + (text.rjust(w) if r else text.ljust(w)) + " ")
        lines.append("│" + "│".join(parts) + "│")
    return lines


def _rule(widths: list, left: str, mid: str, right: str, fill: str) -> str:
    return left + mid.join(fill * (w + 2) for w in widths) + right


def format_summary(model, line_length=None) -> str:
    seq = _sequential_like(model.desc)
    if seq:
        header, positions, length = ["Layer (type)", "Output Shape", "Param #"], [0.45, 0.80, 1.0], 88
    else:
        header = ["Layer (type)", "Output Shape", "Param #", "Connected to"]
        positions, length = [0.3, 0.56, 0.74, 1.0], 108
    widths = _column_widths(line_length or length, positions)
    right = [h == "Param #" for h in header]
    lines = [f'Model: "{model.name}"', _rule(widths, "┏", "┳", "┓", "━")]
    lines.append(
        "┃" + "┃".join(" " + (h.rjust(w) if r else h.ljust(w)) + " " for h, w, r in zip(header, widths, right)) + "┃"
    )
    lines.append(_rule(widths, "┡", "╇", "┩", "━"))
    for i, info in enumerate(model.layers):
        if i:
            lines.append(_rule(widths, "├", "┼", "┤", "─"))
        shape = _shape_text(info.output_shapes[-1]) if info.output_shapes else "?"
        cells = [
            f"{info.name} ({info.class_name.removeprefix('op:')})",
            shape,
            f"{info.params:,}",
        ]  # an op as Keras shows it
        if not seq:
            cells.append(", ".join(info.connected_to) or "-")
        lines += _row(cells, widths, right)
    lines.append(_rule(widths, "└", "┴", "┘", "─"))
    size = np.dtype(model.dtype).itemsize
    total = model.count_params()
    trainable = sum(int(np.prod(w.shape)) for w in model.weights if w.trainable)
    for label, n in (("Total", total), ("Trainable", trainable), ("Non-trainable", total - trainable)):
        lines.append(f" {label} params: {n:,} ({_memory(n * size)})")
    return "\n".join(lines)


def cost_line(model) -> str:
    """The line kgraph adds under Keras's table: what a sample costs, so a large model's step time
    is no surprise."""
    cost = step_cost(model)
    where = ""
    if model.unknown_dims:  # the cost grows with the unknown dimensions: say at what size it was taken
        inputs = model._lowered_inputs()
        where = f" at input shape {', '.join(_shape_text(i.shape) for i in inputs)}"
    return (
        f" Per sample{where}: {_flops(cost['forward_flops'])} forward (a training step about 3x), "
        f"{_memory(cost['value_bytes'])} of activations"
    )
