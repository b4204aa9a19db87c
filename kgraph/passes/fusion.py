"""Fusion passes. Each rewrites the graph and returns a list of Decisions: what fused, and
for every candidate it refused, why (printed by `kgraph inspect --fusion`). Which op may play
which part in a rule is the op's declared Role (ir/ops/registry.py), never its name."""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx

from ir import Role, get_op, has_role
from ir.ops.optim import SHARED


@dataclass
class Decision:
    kind: str  # "dense+bias+activation", "elementwise", ...
    node: str  # the node the decision is about
    fused: bool
    reason: str = ""
    verbs: tuple = ("fused", "refused")  # how `inspect --fusion` says yes and no

    def __str__(self):
        return f"{self.verbs[0] if self.fused else self.verbs[1]:<7} {self.kind:<24} %{self.node}" + (
            f": {self.reason}" if self.reason else ""
        )


def _single_user(graph, nid):
    users = graph.users(nid)
    if nid in graph.outputs.values():
        return None
    return users[0] if len(users) == 1 else None


def is_weight(graph, nid) -> bool:
    """Whether node nid is a layer's weight: a parameter, or computed from parameters and constants
    alone (a convolution kernel reshaped to a matrix, a kernel with a batch norm folded in)."""
    sources = [graph.node(a) for a in nx.ancestors(graph.nx, nid) | {nid}]
    return all(n.op in ("param", "const") for n in sources if n.is_source)


def fuse_dense(graph, training: bool) -> list[Decision]:
    """matmul(x, w) + b [-> activation]  =>  fused_dense(x, w, b) {activation}."""
    out = []
    for mm in graph.nodes():
        if (
            mm.id not in graph
            or not has_role(mm.op, Role.GEMM)
            or mm.attrs.get("transpose_a")
            or mm.attrs.get("transpose_b")
        ):
            continue
        if not is_weight(graph, mm.inputs[1]):
            continue  # a backward GEMM, not a layer
        add = _single_user(graph, mm.id)
        if (
            add is None
            or not has_role(add.op, Role.BIAS_ADD)
            or add.inputs[0] != mm.id
            or graph.type(add.inputs[1]).shape != (mm.type.shape[-1],)
        ):
            out.append(Decision("dense+bias+activation", mm.id, False, "the GEMM's output is not only a bias add"))
            continue
        act = _single_user(graph, add.id)
        if act is not None and not has_role(act.op, Role.ACTIVATION):
            act = None
        if act is None:
            reader = next((u for u in graph.users(add.id) if has_role(u.op, Role.ACTIVATION)), None)
            if reader is not None:
                out.append(
                    Decision(
                        "dense+bias+activation",
                        reader.id,
                        False,
                        f"{reader.op}'s gradient reads its input, so the bias add must stay apart",
                    )
                )
        act_name, act_attrs = (act.op, dict(act.attrs)) if act else ("linear", {})
        last = act or add
        fused_ops = [mm.op, "bias_add"] + ([act_name] if act else [])
        fd = graph.add_node(
            "fused_dense",
            [mm.inputs[0], mm.inputs[1], add.inputs[1]],
            {"activation": act_name, **act_attrs, "fused": fused_ops},
            name=last.id + "_fused",
        )
        graph.replace_uses(last.id, fd)
        for n in ([act] if act else []) + [add, mm]:
            if not graph.users(n.id):
                graph.remove(n.id)
        out.append(Decision("dense+bias+activation", fd, True, "+".join(fused_ops)))
    return out


def fuse_pool_relu_grad(graph) -> list[Decision]:
    """A ReLU's gradient taken right after max or average pooling's (a CNN's relu -> pool, in
    reverse): pooling's gradient kernel applies it as it writes (`relu`), one pass over the
    activations instead of two. A column sum of the ReLU's gradient (a bias's or batch norm's)
    then reads pooling's gradient, which also writes it (fuse_bias_grad; CUDA sums apart)."""
    out = []
    for node in graph.nodes():
        if node.op != "act_grad" or node.semantic_attrs() != {"activation": "relu"}:
            continue
        g, v = node.inputs
        pool = graph.node(g)
        if pool.op != "pool2d_grad" or pool.attrs.get("relu") or pool.inputs[1] != v:
            continue
        if _single_user(graph, pool.id) is not node:
            out.append(Decision("pool-grad+relu-grad", node.id, False, f"%{pool.id} has other readers"))
            continue
        pool.attrs["relu"] = True
        graph.replace_uses(node.id, pool.id)
        graph.remove(node.id)
        out.append(Decision("pool-grad+relu-grad", pool.id, True, f"applies the ReLU's gradient (%{node.id})"))
    return out


def fuse_bias_grad(graph) -> list[Decision]:
    """act_grad(g, y) whose result is column-summed for the bias gradient: one pass computes both.
    The reduce_sum stays in the graph (the interpreter needs it) marked as written by act_grad.
    So too pooling's gradient (a convolution's bias gradient, where the pooling after it took
    the ReLU's gradient): the CPU's kernel sums what it writes; CUDA sums apart."""
    out = []
    for node in graph.nodes():
        if not has_role(node.op, Role.COLUMN_SUM) or node.type.rank != 1:
            continue
        src = graph.node(node.inputs[0])
        if tuple(node.attrs.get("axes") or ()) != tuple(range(src.type.rank - 1)):
            continue
        if src.op == "pool2d_grad" and not src.attrs.get("bias_grad"):
            out.append(_writes_sum(src, node, "pool-grad+bias-grad"))
            continue
        if not has_role(src.op, Role.ACTIVATION_GRAD):
            if has_role(src.op, Role.CHAIN):  # fuse_column_sums' case, once the chain is fused
                continue
            out.append(
                Decision(
                    "activation-grad+bias-grad",
                    node.id,
                    False,
                    f"the column sum reads a {src.op}, not an activation gradient",
                )
            )
            continue
        if src.attrs.get("bias_grad"):
            continue
        out.append(_writes_sum(src, node, "activation-grad+bias-grad"))
        src.attrs["fused"] = ["act_grad", "bias_grad"]
    return out


def fuse_column_sums(graph) -> list[Decision]:
    """An elementwise loop (a fused chain, or one op) whose result is summed or averaged over its
    leading axes, by its only reader or not: the loop also writes the sum, one pass instead of two (batch norm's
    variance, sum((x - mean)^2); its gradient's sum(g * x_hat)). Like the bias gradient, the
    reduction stays in the graph, written by the loop (a target that cannot write it there
    computes it apart: CUDA, where it is not an activation gradient's sum)."""
    out = []
    for node in graph.nodes():
        sums = has_role(node.op, Role.COLUMN_SUM) or has_role(node.op, Role.COLUMN_MEAN)
        if not sums or node.type.rank != 1 or node.attrs.get("computed_by"):
            continue
        src = graph.node(node.inputs[0])
        if not _fusable_elementwise(src):  # a chain member (fused or alone) not writing a sum yet
            continue
        if tuple(node.attrs.get("axes") or ()) != tuple(range(src.type.rank - 1)) or src.type.rank < 2:
            continue
        out.append(_writes_sum(src, node, "elementwise+column-sum"))
    return out


def _writes_sum(src, node, rule) -> Decision:
    """Mark column sum `node` as written by `src`, the kernel that computes what it sums (the
    reduction stays in the graph for the interpreter, and for a target that sums apart)."""
    src.attrs["bias_grad"] = node.id
    node.attrs["computed_by"] = src.id
    node.attrs["note"] = f"written by %{src.id}"
    return Decision(rule, src.id, True, f"also writes %{node.id}")


def _fusable_elementwise(node):
    return has_role(node.op, Role.CHAIN) and not node.attrs.get("bias_grad")


MAX_CHAIN = 24  # ops in one fused loop: longer ones compile slowly and read badly


def _size(node) -> int:
    """The ops a chain member computes."""
    return len(node.attrs["fused"]) if node.op == "fused_elementwise" else 1


def _recomputed(graph, p) -> bool:
    """Whether elementwise p, read by several users, is better recomputed inside each: every
    user is an elementwise loop of p's shape, and p reads at most one operand as large as itself.
    Stored, p costs a write and a read per user; recomputed, each user reads that one operand
    instead (batch norm's normalised input x_hat = (x - mean) * inv_std, read by two gradient
    terms)."""
    if p.id in graph.outputs.values():
        return False
    users = graph.users(p.id)
    if len(users) < 2 or any(not _fusable_elementwise(u) or u.type.shape != p.type.shape for u in users):
        return False
    return sum(graph.type(i).shape == p.type.shape for i in set(p.inputs)) <= 1


def fuse_elementwise(graph) -> list[Decision]:
    """Merge a chain of elementwise ops into one fused_elementwise loop. A producer joins its
    consumer when both have the same shape and the consumer is its only user, or when it is
    cheaper to recompute in each of its users (`_recomputed`)."""
    out = []
    # One walk from the last node up. A merge creates the fused node with the newest insertion
    # index, so in the new topological order it comes after every node that does not read it:
    # a rescan from the end (as this pass first did after each merge, quadratic in a deep model)
    # would find nothing before it, then try it, then go on where this walk is. No merge changes
    # whether another node may merge, so the walk makes the same merges in the same order. (A
    # recomputed producer that one of its readers cannot take in, past MAX_CHAIN, stays stored
    # for that reader: more work, the same numbers.)
    for node in reversed(graph.nodes()):
        while node.id in graph and graph.node(node.id) is node and _fusable_elementwise(node):  # not merged yet
            producers = [graph.node(i) for i in node.inputs]
            mergeable, size = [], _size(node)
            for p in producers:
                if (
                    _fusable_elementwise(p)
                    and p.type.shape == node.type.shape
                    and (_single_user(graph, p.id) is node or _recomputed(graph, p))
                    and len(set(node.inputs)) == len(node.inputs)
                    and size + _size(p) <= MAX_CHAIN  # the merged loop's ops, all producers counted
                ):
                    mergeable.append(p)
                    size += _size(p)
            if not mergeable:
                break
            for p in producers:
                if _fusable_elementwise(p) and p not in mergeable and p.type.shape != node.type.shape:
                    out.append(Decision("elementwise", p.id, False, f"shape {p.type} differs from %{node.id}'s"))
            node = graph.node(_merge(graph, node, mergeable))
    for node in graph.nodes():
        if node.op == "fused_elementwise":
            out.append(Decision("elementwise", node.id, True, "+".join(node.attrs["fused"])))
    return out


def read_scalar_broadcasts(graph) -> list[Decision]:
    """A loop that broadcasts its operands reads a one-element operand as it is, not its copy
    repeated to the loop's shape: a loss's gradient starts as its seed (a scalar) broadcast to the
    batch, then divided and weighted in one loop, which now reads the seed itself. The broadcast
    left with no reader goes (dce), and with it a kernel of the step (and its compile on an
    empty cache). A reader whose shape would change with it (its other operands one element too)
    keeps the broadcast."""
    out = []
    for node in graph.nodes():
        if not has_role(node.op, Role.BROADCAST) or node.id in graph.outputs.values():
            continue
        value = node.inputs[0]
        if any(d != 1 for d in graph.type(value).shape):  # one element, at any rank
            continue
        for user in graph.users(node.id):
            if not _fusable_elementwise(user) or value in user.inputs:  # a loop's operands stay distinct
                continue
            inputs = [value if i == node.id else i for i in user.inputs]
            same = get_op(user.op).infer([graph.type(i) for i in inputs], user.semantic_attrs()) == user.type
            if same:
                graph.set_inputs(user.id, inputs)
            reason = f"%{user.id} reads %{value}" if same else f"%{user.id} would be {graph.type(value)}-shaped"
            out.append(Decision("scalar broadcast", node.id, same, reason, ("read", "kept")))
    return out


def _as_expr(node):
    if node.op == "fused_elementwise":
        return node.attrs["expr"], list(node.inputs), list(node.attrs["fused"])
    attrs = tuple(sorted(node.semantic_attrs().items()))
    return ("op", node.op, attrs, *[("in", k) for k in range(len(node.inputs))]), list(node.inputs), [node.op]


def _rebase(expr, mapping):
    if expr[0] == "in":
        return ("in", mapping[expr[1]])
    return expr[:3] + tuple(_rebase(e, mapping) for e in expr[3:])


def _merge(graph, consumer, producers):
    expr, inputs, fused = _as_expr(consumer)
    new_inputs: list[str] = []

    def slot(i):
        if i not in new_inputs:
            new_inputs.append(i)
        return new_inputs.index(i)

    def substitute(e):
        if e[0] == "in":
            src = inputs[e[1]]
            prod = next((p for p in producers if p.id == src), None)
            if prod is None:
                return ("in", slot(src))
            pexpr, pinputs, pfused = _as_expr(prod)
            fused[:0] = pfused
            return _rebase(pexpr, {k: slot(i) for k, i in enumerate(pinputs)})
        return e[:3] + tuple(substitute(x) for x in e[3:])

    new_expr = substitute(expr)
    fe = graph.add_node(
        "fused_elementwise", new_inputs, {"expr": new_expr, "fused": fused}, type=consumer.type, name=consumer.id
    )
    graph.replace_uses(consumer.id, fe)
    graph.remove(consumer.id)
    for p in producers:
        if not graph.users(p.id):  # a recomputed producer stays until its last user took it in
            graph.remove(p.id)
    return fe


def fuse_updates(graph) -> list[Decision]:
    """All parameters' updates of one optimizer become one fused_update: a single loop over the
    contiguous parameter, gradient and slot buckets (the memory plan lays them out in order)."""
    updates = [n for n in graph.nodes() if has_role(n.op, Role.OPTIMIZER_UPDATE)]
    if len(updates) < 2:
        return []
    op, hyper = updates[0].op, {k: v for k, v in updates[0].attrs.items()}
    n_shared = len(SHARED)
    if any(u.op != op or u.attrs != hyper or u.inputs[-n_shared:] != updates[0].inputs[-n_shared:] for u in updates):
        return [Decision("multi-tensor update", updates[0].id, False, "parameters use different update rules")]
    per_param = len(updates[0].inputs) - n_shared
    operands = [i for u in updates for i in u.inputs[:per_param]] + list(updates[0].inputs[-n_shared:])
    fu = graph.add_node(
        "fused_update",
        operands,
        {
            "update": op,
            "per_param": per_param,
            "shared": n_shared,
            "hyper": tuple(sorted(hyper.items())),
            "fused": [op] * len(updates),
        },
        type=updates[0].type,
        name="update_all",
    )
    for u in updates:
        graph.remove(u.id)
    return [Decision("multi-tensor update", fu, True, f"{len(updates)} parameters in one loop")]
