"""Batch normalization with moving statistics (inference, or a frozen layer): folded into the
dense or convolution GEMM before it where that is exact, and lowered to elementwise ops
(TensorFlow's formula) everywhere else.

Folding rewrites y = BN(x @ W + b) as x @ (W * inv) + ((b - mean) * inv + beta), with
inv = gamma / sqrt(variance + epsilon). The folded kernel and bias are IR ops over the parameters,
computed inside every step, so the fold stays right whenever the weights change (training,
set_weights); they cost a pass over the kernel, not over the batch."""

from __future__ import annotations

from ir import Pattern, Role, get_op, has_role
from ir.ops.nn import batch_norm_operands, normalize, per_channel, scale_and_shift

from .fusion import Decision, is_weight

KIND = "batch-norm fold"


def _operands(bn):
    return batch_norm_operands(bn.inputs, bn.attrs.get("scale", True), bn.attrs.get("center", True))


def _only_reader(graph, nid, reader) -> bool:
    """Whether `reader` is the one user of node nid, which is no graph output either."""
    users = graph.users(nid)
    return nid not in graph.outputs.values() and len(users) == 1 and users[0].id == reader.id


def _fold_target(graph, bn):
    """(matmul, bias add or None) that bn folds into, or why it cannot fold (a str).
    Views that keep the channels last (a Conv1D's reshape [B,1,W,C] -> [B,W,C]) are looked through."""
    axis, channels = bn.attrs["axis"], bn.type.shape[bn.attrs["axis"]]
    if axis != bn.type.rank - 1:
        return f"it normalizes axis {axis}, not the channels of a GEMM (the last axis)"
    reader, node = bn, graph.node(bn.inputs[0])
    while get_op(node.op).pattern is Pattern.VIEW and graph.type(node.inputs[0]).shape[-1] == channels:
        if not _only_reader(graph, node.id, reader):
            return f"%{node.id} has other readers"
        reader, node = node, graph.node(node.inputs[0])
    if has_role(node.op, Role.ACTIVATION):
        return f"the layer's {node.op} activation comes before the normalization"
    add = None
    if (
        has_role(node.op, Role.BIAS_ADD)
        and has_role(graph.node(node.inputs[0]).op, Role.GEMM)
        and is_weight(graph, node.inputs[1])
        and graph.type(node.inputs[1]).shape == (channels,)
    ):
        add, node = node, graph.node(node.inputs[0])
    if not has_role(node.op, Role.GEMM):
        source = add or node
        return f"its input %{source.id} ({source.op}) is not the output of a dense or convolution GEMM"
    if node.attrs.get("transpose_a") or node.attrs.get("transpose_b") or not is_weight(graph, node.inputs[1]):
        return f"%{node.id} is not a layer's GEMM against its kernel"
    for n, r in ((add, reader), (node, add or reader)):
        if n is not None and not _only_reader(graph, n.id, r):
            return f"%{n.id} has other readers, which need it unnormalized"
    return node, add


def _fold(graph, bn, mm, add):
    _, mean, var, gamma, beta = _operands(bn)
    inv, shift = scale_and_shift(graph, mean, var, gamma, beta, bn.attrs["epsilon"])
    kernel = graph.mul(mm.inputs[1], inv, name=f"{bn.id}_folded_kernel")
    graph.set_inputs(mm.id, [mm.inputs[0], kernel])
    if add is None:
        biased = graph.add(mm.id, shift, name=f"{bn.id}_folded_bias_add")
        graph.replace_uses(mm.id, biased)
    else:
        bias = graph.add(graph.mul(add.inputs[1], inv), shift, name=f"{bn.id}_folded_bias")
        graph.set_inputs(add.id, [mm.id, bias])
    graph.replace_uses(bn.id, bn.inputs[0])
    graph.remove(bn.id)


def fold_batch_norm(graph) -> list[Decision]:
    """Fold each batch_norm into the dense or convolution GEMM it directly follows. Only exact
    folds: the GEMM's output (and its bias add) must feed nothing else, and no activation may
    sit between them (Conv2D(activation="relu") then BatchNormalization does not fold)."""
    out = []
    for bn in graph.nodes():
        if bn.op != "batch_norm":
            continue
        if bn.attrs.get("batch_statistics"):
            out.append(Decision(KIND, bn.id, False, "it normalizes by its batch's own statistics (training)"))
            continue
        target = _fold_target(graph, bn)
        if isinstance(target, str):
            out.append(Decision(KIND, bn.id, False, target))
            continue
        mm, add = target
        _fold(graph, bn, mm, add)
        out.append(Decision(KIND, mm.id, True, f"%{bn.id} folded into the kernel and bias"))
    return out


def lower_batch_norm(graph, keep_batch_statistics=False):
    """Every remaining batch_norm as elementwise ops: x * inv + (beta - mean * inv).
    keep_batch_statistics: leave training's (batch_statistics) for after autodiff, whose rule for
    the whole op makes a shorter backward than the rules of its elementwise ops."""
    for bn in graph.nodes():
        if bn.op != "batch_norm" or (keep_batch_statistics and bn.attrs.get("batch_statistics")):
            continue
        x, *stats = _operands(bn)
        stats = [per_channel(graph, v, x, bn.attrs["axis"]) for v in stats]
        y = normalize(graph, x, *stats, bn.attrs["epsilon"], name=bn.id)
        graph.replace_uses(bn.id, y)
        graph.remove(bn.id)
    return graph
