"""Memory planning: liveness intervals over the schedule, best-fit offsets in one arena,
and the persistent buckets (parameters, gradients, optimizer state, random masks).

The schedule is the order the target's step runs the nodes in, given by the caller: the graph's
order, or `updates_last` for a step run in two halves.

Sizes are linear in the batch size B, so the arena has two parts: buffers with a batch
dimension are planned in elements per sample (offset a means a*B), the others after them
(offset c means A*B + c). One plan then serves every batch size."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ir import Pattern, get_op
from ir.ops.fused import update_groups

ALIGN = 16  # elements: 64-byte alignment for float32 buffers of fixed size


def _align(n: int, align: int = ALIGN) -> int:
    return (n + align - 1) // align * align


@dataclass
class Slot:
    region: str  # arena | params | grads | state | rng | input | label | scalar | const | view | none
    offset: int = 0  # per sample (batch buffers) or absolute (others), in elements
    batch: bool = False  # whether offset and size scale with B
    size: int = 0  # elements per sample (batch) or in all
    view_of: str | None = None


@dataclass
class MemoryPlan:
    schedule: list[str]
    slots: dict[str, Slot]
    arena_per_sample: int = 0  # A: arena elements per sample
    arena_fixed: int = 0  # C: arena elements independent of B
    bound_per_sample: int = 0  # the no-fragmentation lower bound (max live), batch part
    bound_fixed: int = 0
    buckets: dict[str, int] = field(default_factory=dict)  # params/grads/state: total elements
    rng_per_sample: int = 0
    rng_fixed: int = 0
    intervals: dict[str, tuple] = field(default_factory=dict)

    def arena_size(self, batch: int) -> int:
        return self.arena_per_sample * batch + self.arena_fixed

    def report(self, batch: int, itemsize: int = 4) -> str:
        peak = self.arena_size(batch) * itemsize
        bound = (self.bound_per_sample * batch + self.bound_fixed) * itemsize
        lines = [
            f"memory plan at batch {batch}:",
            f"  arena        {peak / 1024:10.1f} KiB  ({self.arena_per_sample}*B + {self.arena_fixed} elements)",
            f"  lower bound  {bound / 1024:10.1f} KiB  (max live bytes at any step; arena/bound = "
            f"{peak / bound if bound else 1:.3f})",
        ]
        for name, n in self.buckets.items():
            lines.append(f"  {name:<12} {n * itemsize / 1024:10.1f} KiB")
        lines.append(
            f"  {'rng masks':<12} {(self.rng_per_sample * batch + self.rng_fixed) * itemsize / 1024:10.1f} KiB"
        )
        lines.append(
            f"  buffers (offset in elements, A = {self.arena_per_sample}: the per-sample part's size; "
            "[first, last] use in the schedule):"
        )
        keys = [k for nid in self.schedule for k in (nid, workspace_id(nid), saved_id(nid)) if k in self.slots]
        width = max([28] + [len(k) for k in keys if self.slots[k].region == "arena"])
        for key in keys:
            s = self.slots[key]
            if s.region == "arena":
                off = f"{s.offset}*B" if s.batch else f"A*B+{s.offset}"
                size = f"{s.size}*B" if s.batch else str(s.size)
                lines.append(f"    %{key:<{width}} {off:>12}  size {size:>10}  live {list(self.intervals[key])}")
        return "\n".join(lines)


def workspace_id(nid: str) -> str:
    """The plan's slot name of node nid's workspace."""
    return nid + ":workspace"


def saved_id(nid: str) -> str:
    """The plan's slot name of what node nid keeps for a later node (a recurrent layer's gates)."""
    return nid + ":saved"


def gradient_nodes(graph) -> dict[str, str]:
    """{gradient node: parameter} read by the update ops."""
    return {
        group[1]: group[0]
        for node in graph.nodes()
        if get_op(node.op).pattern is Pattern.UPDATE
        for group in update_groups(node)
    }


def materialize_gradients(graph):
    """A gradient must own its slot in the bucket: copy views, sources and shared gradients."""
    seen = set()
    for node in graph.nodes():
        if get_op(node.op).pattern is not Pattern.UPDATE:
            continue
        inputs, pos = list(node.inputs), 0
        for group in update_groups(node):
            j = pos + 1
            g = graph.node(inputs[j])
            if g.is_source or get_op(g.op).pattern is Pattern.VIEW or g.id in seen or g.id in graph.outputs.values():
                inputs[j] = graph.copy(g.id, name=g.id + "_grad")
            seen.add(inputs[j])
            pos += len(group)
        graph.set_inputs(node.id, inputs)
    return graph


def materialize_outputs(graph):
    """An output that is a step's input, or a view of one (a model that returns its input
    reshaped), gets a copy of its own: the step hands back the outputs that live in its buffers."""
    for key, nid in list(graph.outputs.items()):
        root = graph.node(nid)
        while not root.is_source and get_op(root.op).pattern is Pattern.VIEW:
            root = graph.node(root.inputs[0])
        if root.is_source and root.op not in ("param", "state"):
            graph.outputs[key] = graph.copy(nid, name=nid + "_out")
    return graph


def updates_last(graph) -> list[str]:
    """The graph's order with the in-place updates moved after every other node: the schedule of a
    training step run in two halves, gradients then updates (so data-parallel replicas can
    average the gradients in between). What an update reads then stays live to the end."""
    nodes = graph.nodes()
    update = {n.id for n in nodes if get_op(n.op).pattern is Pattern.UPDATE}
    return [n.id for n in nodes if n.id not in update] + [n.id for n in nodes if n.id in update]


def plan_memory(graph, param_order: list[str], schedule: list[str] | None = None) -> MemoryPlan:
    """schedule: every node id, in the order the step runs them (default: the graph's order)."""
    schedule = [n.id for n in graph.nodes()] if schedule is None else list(schedule)
    if sorted(schedule) != sorted(n.id for n in graph.nodes()):
        raise ValueError("the schedule must list every node of the graph once")
    index = {nid: i for i, nid in enumerate(schedule)}
    slots: dict[str, Slot] = {}
    grads = gradient_nodes(graph)

    # persistent buckets: parameters in Keras order, gradients at the same offsets, state in creation order
    offsets, total = {}, 0
    for p in param_order:
        offsets[p] = total
        total += graph.type(p).numel(1)
    buckets = {"params": total, "grads": total}
    state_total, rng = 0, [0, 0]
    for node in graph.nodes():
        a, c = node.type.per_batch_size()
        if node.op == "param":
            slots[node.id] = Slot("params", offsets[node.id], False, c)
        elif node.op == "state":
            slots[node.id] = Slot("state", state_total, False, c)
            state_total += c
        elif node.op == "rng":
            slots[node.id] = Slot("rng", rng[0] if a else rng[1], bool(a), a or c)
            rng[0 if a else 1] += _align(a or c)
        elif node.is_source:
            slots[node.id] = Slot(node.op)
        elif get_op(node.op).pattern is Pattern.UPDATE:
            slots[node.id] = Slot("none")
        elif get_op(node.op).pattern is Pattern.VIEW:
            root = node.inputs[0]
            if root in slots and slots[root].region == "view":
                root = slots[root].view_of
            slots[node.id] = Slot("view", view_of=root)
        elif node.id in grads:
            slots[node.id] = Slot("grads", offsets[grads[node.id]], False, c)
    buckets["state"] = state_total

    # liveness of arena buffers; a view keeps its root alive. A node computed by another's kernel
    # (computed_by), or run by another node's kernel (runs_at: passes/split.py's convolution
    # blocks), writes and reads where that kernel runs.
    end = len(schedule)

    def runs(nid):
        attrs = graph.node(nid).attrs
        return index[attrs.get("runs_at") or nid]

    intervals = {}
    for nid in schedule:
        if nid in slots:
            continue
        node = graph.node(nid)
        start = runs(node.attrs["computed_by"]) if "computed_by" in node.attrs else runs(nid)
        intervals[nid] = [start, start]

    def keep(nid, until):
        root = slots[nid].view_of if nid in slots and slots[nid].view_of else nid
        if root in intervals:
            intervals[root][1] = max(intervals[root][1], until)

    for nid in schedule:
        for i in graph.node(nid).inputs:
            keep(i, runs(nid))
    for out in graph.outputs.values():
        keep(out, end)

    per_sample, fixed = {}, {}
    for nid in intervals:
        a, c = graph.type(nid).per_batch_size()
        (per_sample if a else fixed)[nid] = a or max(c, 1)
    # a GEMM split by rows or by samples' rows (passes/split.py: k, batch) sums partial products in a
    # workspace live only at that node,
    # and max pooling's gradient and a column sum (split or not) keep a row per part in a fixed-size
    # one (a column sum may be a gradient, in the gradient bucket: its scratch is the arena's all the same)
    for nid in schedule:
        attrs = graph.node(nid).attrs
        if attrs.get("workspace") or attrs.get("workspace_fixed"):
            ws = workspace_id(nid)
            intervals[ws] = [runs(nid), runs(nid)]
            if attrs.get("workspace"):
                per_sample[ws] = attrs["workspace"]
            else:
                fixed[ws] = attrs["workspace_fixed"]
    # a recurrent layer's gates, kept from its forward node until its backward node reads them
    for nid in schedule:
        attrs = graph.node(nid).attrs
        if attrs.get("saved") and nid in intervals:
            intervals[saved_id(nid)] = [index[nid], index[attrs["saved_for"]]]
            per_sample[saved_id(nid)] = attrs["saved"]
    # per-sample offsets need no padding: they are multiplied by B; their total is, so that the
    # fixed part starts 64-byte aligned whatever B (a column sum's float64 scratch needs 8 bytes)
    off_a, top_a = _best_fit(per_sample, intervals, align=1)
    top_a = _align(top_a)
    off_c, top_c = _best_fit(fixed, intervals, align=ALIGN)
    for nid, off in off_a.items():
        slots[nid] = Slot("arena", off, True, per_sample[nid])
    for nid, off in off_c.items():
        slots[nid] = Slot("arena", off, False, fixed[nid])
    return MemoryPlan(
        schedule,
        slots,
        top_a,
        top_c,
        _max_live(per_sample, intervals, end),
        _max_live(fixed, intervals, end),
        buckets,
        rng[0],
        rng[1],
        {k: tuple(v) for k, v in intervals.items()},
    )


def _overlap(u, v):
    return u[0] <= v[1] and v[0] <= u[1]


def _best_fit(sizes: dict, intervals: dict, align: int):
    """Largest buffers first; each goes into the smallest gap between the buffers live at the
    same time where it fits, else on top. The placed buffers are NumPy arrays, so the scan of
    them for each new one runs in C: in a deep model most buffers overlap most others, and the
    same scan in Python made planning the slowest part of compiling a 1,000-layer model."""
    order = sorted(sizes, key=lambda n: (-sizes[n], intervals[n][0], n))
    n = len(order)
    start, end = np.empty(n, np.int64), np.empty(n, np.int64)
    off, size = np.empty(n, np.int64), np.empty(n, np.int64)
    offsets, top = {}, 0
    for k, nid in enumerate(order):
        need = _align(sizes[nid], align)
        lo, hi = intervals[nid]
        live = (start[:k] <= hi) & (lo <= end[:k])  # the placed buffers it overlaps
        o, s = off[:k][live], size[:k][live]
        best = 0
        if len(o):
            rank = np.lexsort((s, o))  # by offset, then size
            o, s = o[rank], s[rank]
            covered = np.maximum.accumulate(o + s)  # top of the buffers so far
            cursor = np.concatenate(([0], np.maximum(covered[:-1], 0)))
            gap = o - cursor
            fits = np.flatnonzero(gap >= need)
            best = int(cursor[fits[np.argmin(gap[fits])]]) if len(fits) else max(int(covered[-1]), 0)
        start[k], end[k], off[k], size[k] = lo, hi, best, need
        offsets[nid] = best
        top = max(top, best + need)
    return offsets, top


def _max_live(sizes: dict, intervals: dict, end: int) -> int:
    events = [0] * (end + 2)
    for nid, n in sizes.items():
        s, e = intervals[nid]
        events[s] += n
        events[e + 1] -= n
    live = peak = 0
    for d in events:
        live += d
        peak = max(peak, live)
    return peak
