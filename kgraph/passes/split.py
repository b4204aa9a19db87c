"""Splitting a layer's GEMMs across the CPU cores by its weight's rows.

At small batches one BLAS call is too small to share well: OpenBLAS's own threads cut each GEMM
its own way, so the weight rows one core wrote in the optimizer update are read by the other
core in the next forward GEMM, and the gradient rows one core wrote are updated by the other.
Instead every GEMM that touches a weight W (K x N) is cut by W's rows, the same way for all:
core t owns rows part(K, t) of W, of its gradient and of its optimizer slots.

- forward   out = x @ W      split "k":    core t computes x[:, part] @ W[part], the parts are summed
                                           (the partial sums need a workspace: parts-1 outputs);
- backward  dW = x^T @ g     split "rows": core t computes dW[part] = x[:, part]^T @ g;
- backward  dx = g @ W^T     split "cols": core t computes dx[:, part] = g @ W[part]^T;
- per-sample rows: out = x @ W and dx = g @ W^T split "m": core t computes the rows of its samples;
  their weight's gradient dW = x^T @ g split "batch": core t sums its samples' rows into a partial
  dW, and the partials are added in order;
- the fused optimizer update runs each weight's row parts on their cores.

A GEMM with several rows per sample (a convolution's pixels, a sequence's steps) has rows to
spare and a small weight: it is cut by samples instead, each part the rows of its samples ("m"),
and its weight's gradient by the weight's rows ("rows"), or when that leaves a part fewer than
MIN_PART_ROWS rows, by samples too ("batch"). The image kernels (im2col, col2im,
pooling and its gradient) and the large elementwise loops and column sums run their samples in
parts too (`split_samples`): a convolution's step then runs on Numba's threads from end to end.

The generated code calls one-thread BLAS on each part; at run time a step whose GEMMs are large
enough for BLAS's threads runs the parts on one thread, in turn (kgraph.runtime.executable). Every
thread setting computes the same floats, so a seeded run does not depend on which one the thread
tuner timed fastest: a GEMM split over K runs its compiled parts whatever runs them and adds them
in order; one split by rows or samples computes each element's whole sum in one BLAS call either
way (the same floats where BLAS sums an element alike whatever the matrix's size, as OpenBLAS
does here: tests/test_codegen.py).

The pass knows no target: the caller says how many cores there are (`parts`, kgraph/models.py)."""

from __future__ import annotations

from ir import BATCH, Pattern, Role, get_op, has_role

from .fusion import Decision
from .memory import gradient_nodes

# bookkeeping attributes: "split" (k | rows | cols | m | batch), "parts", "workspace" (elements per sample),
# "workspace_fixed" (elements)
SPLIT_VERBS = ("split", "whole")
MAX_PARTS = 8  # more parts make each GEMM too thin; large steps use BLAS's own threads anyway
# a smaller weight's GEMMs cost less than waking the other cores (784x128 is 100k elements)
MIN_WEIGHT = 32768
# a convolution's kernel gradient with fewer weight rows a part splits by samples: BLAS multiplies
# thin row blocks slowly (9 x 32 from 50,176 rows: 0.58 ms by rows, 0.40 by samples on 2 cores;
# 288 x 64 and 576 x 128: the same or 10% slower by samples, which adds the parts' partials)
MIN_PART_ROWS = 32


def usable_parts(cores: int) -> int:
    """The parts to split in on `cores` cores: at most MAX_PARTS."""
    return max(1, min(cores, MAX_PARTS))


def step_parts(graph) -> int:
    """The parts a step's split kernels run in (1: nothing is split)."""
    return max((n.attrs.get("parts", 1) for n in graph.nodes()), default=1)


def split_gemms(graph, parts: int) -> list[Decision]:
    """Mark the GEMMs that touch a weight to run in `parts` row parts (at most MAX_PARTS);
    returns the decisions."""
    parts = usable_parts(parts)
    if parts < 2:
        return []
    params = {n.id for n in graph.sources("param")}
    grads = gradient_nodes(graph)
    decisions = []
    for node in graph.nodes():
        if get_op(node.op).pattern is not Pattern.GEMM:
            continue
        kind, reason = _split_kind(graph, node, params, grads, parts)
        if kind is None:
            if reason:
                decisions.append(Decision("split gemm", node.id, False, reason, SPLIT_VERBS))
            continue
        node.attrs["split"], node.attrs["parts"] = kind, parts
        if kind == "m":
            decisions.append(Decision("split gemm", node.id, True, f"by samples (m), {parts} parts", SPLIT_VERBS))
            continue
        if kind == "batch":  # a partial gradient per compiled part
            node.attrs["workspace_fixed"] = parts * node.type.numel(1)
            decisions.append(Decision("split gemm", node.id, True, f"by samples (batch), {parts} parts", SPLIT_VERBS))
            continue
        if kind == "k":
            per_sample, fixed = node.type.per_batch_size()
            node.attrs["workspace"] = (parts - 1) * per_sample
        decisions.append(
            Decision("split gemm", node.id, True, f"by the weight's rows ({kind}), {parts} parts", SPLIT_VERBS)
        )
    return decisions


def _split_kind(graph, node, params, grads, parts):
    """(kind, None) or (None, why not); (None, "") for a GEMM that touches no weight."""
    b = node.inputs[1]
    ta, tb = node.attrs.get("transpose_a", False), node.attrs.get("transpose_b", False)
    weight = node.type if ta else graph.type(b)
    if node.type.dtype != "float32":
        return None, "float32 only"
    if not ta and node.type.rank >= 3 and node.type.shape[0] == BATCH:
        return "m", None
    if ta and not tb and not node.type.has_batch and graph.type(node.inputs[0]).rank >= 3:
        # the weight gradient of a GEMM split "m": by the weight's rows where each part gets
        # enough of them, else by samples (a 3x3 convolution of one channel: 9 rows)
        return ("batch" if node.type.shape[0] < MIN_PART_ROWS * parts else "rows"), None
    if (b in params or node.id in grads) and weight.numel(1) < MIN_WEIGHT:
        return None, f"weight of {weight.numel(1)} elements: too small to share (< {MIN_WEIGHT})"
    if not ta and not tb and b in params:
        if node.type.per_batch_size()[0] == 0 or node.type.shape[0] != BATCH:
            return None, "no batch dimension to plan partial sums for"
        return "k", None
    if ta and not tb and node.id in grads:
        return "rows", None
    if tb and not ta and b in params:
        return "cols", None
    return None, ""


SAMPLE_SPLIT_OPS = ("im2col", "col2im", "pool2d", "pool2d_grad")
# A part's scratch row (a column sum's, pooling's gradient's) is followed by a cache line it
# leaves unused, so that no two threads write one line: written per element, a shared line made
# pooling's gradient 4x slower on two threads than on one.
ROW_PAD = 16  # float32s: 64 bytes


def part_rows(parts: int, width: int) -> int:
    """Elements of `parts` scratch rows of `width`, each followed by ROW_PAD."""
    return parts * (width + ROW_PAD)


# an elementwise loop or a column sum with fewer elements a sample costs less than waking the cores
MIN_SAMPLE_ELEMENTS = 4096


def split_samples(graph, parts: int) -> list[Decision]:
    """Mark the image kernels, and the elementwise loops and column sums over large samples, to
    run their samples in `parts` (at most MAX_PARTS). A column sum (alone, or written by the loop
    whose result it sums) adds each part's rows apart, then the parts in order: a scratch row per
    part, planned in the arena, so the step allocates nothing and the sums are the same whatever
    threads run the parts. Max pooling's gradient needs a scratch value per channel and part in
    any case, and a second row per part where it also writes a column sum."""
    parts = usable_parts(parts)
    decisions = []
    for node in graph.nodes():
        if node.op == "pool2d_grad":  # what each window has left to give; its sums if it writes them
            node.attrs["workspace_fixed"] = part_rows(
                parts, (2 if node.attrs.get("bias_grad") else 1) * node.type.shape[-1]
            )
        split = parts >= 2 and (node.op in SAMPLE_SPLIT_OPS or _large_loop(graph, node) or _column_sum(graph, node))
        if split:
            node.attrs["parts"] = parts
            decisions.append(Decision("split samples", node.id, True, f"{parts} parts of the batch", SPLIT_VERBS))
        if (node.attrs.get("bias_grad") and node.op != "pool2d_grad") or _column_sum(graph, node, smallest=1):
            # a column sum, or a loop that also sums its columns: each part's sums (one part when
            # not split) in a float64 row, two float32s a column. A part adds thousands of rows (a
            # batch norm's statistics over B x H x W pixels), and float32 totals lost enough there
            # for a deep network's ReLU6 to switch pixels TensorFlow's sums do not
            node.attrs["workspace_fixed"] = part_rows(parts if split else 1, 2 * node.type.shape[-1])
    return decisions


def _per_sample(t) -> int:
    """Elements a sample of t, or 0 when t's leading axis is not the batch."""
    return t.per_batch_size()[0] if t.rank >= 2 and t.shape[0] == BATCH else 0


def _large_loop(graph, node) -> bool:
    """An elementwise loop (codegen's generated loop: a chain member or an activation gradient)
    over large samples."""
    loop = has_role(node.op, Role.CHAIN) or has_role(node.op, Role.ACTIVATION_GRAD)
    return loop and _per_sample(node.type) >= MIN_SAMPLE_ELEMENTS


def _column_sum(graph, node, smallest=MIN_SAMPLE_ELEMENTS) -> bool:
    """A sum or mean over every axis but the last of samples of at least `smallest` elements,
    computed by itself."""
    if node.op not in ("reduce_sum", "reduce_mean") or node.attrs.get("computed_by") or node.type.rank != 1:
        return False
    t = graph.type(node.inputs[0])
    axes = node.attrs.get("axes")
    return axes is not None and sorted(axes) == list(range(t.rank - 1)) and _per_sample(t) >= smallest


# ---------------------------------------------------------------- convolutions in sample blocks
# A convolution of few input channels computes little per byte it moves: its im2col patches, GEMM
# output, bias + activation and pooling each pass over arrays of MBs (a 28x28 image, 32 filters:
# 86 KB a sample). On the CPU one kernel runs them in turn on a few samples at a time
# (kernels/cpu.py conv_block), each reading what the one before wrote while the core's cache holds
# it; in the backward pass, pooling's gradient and the kernel gradient that reads it
# (pool2d_grad_kernel_grad). The nodes stay in the graph: the one whose place in the step runs
# the kernel holds `conv_block` (the members, samples a block), the others `runs_at` it; the
# memory plan keeps what they read and write live there.
BLOCK_BYTES = 512 * 1024  # a block's arrays: they stay in a core's L2 and L3 while the block runs
BLOCK_VERBS = ("blocked", "apart")
# the activations the blocked kernel computes (as the generated GEMM epilogue does): a convolution's
# usual ones; a loop for each other would cost the kernel's compile more than it gains
BLOCK_ACTIVATIONS = ("linear", "relu")


def block_samples(graph, node_ids) -> int:
    """Samples a block: its arrays' elements a sample fill about BLOCK_BYTES."""
    per_sample = sum(_per_sample(graph.type(n)) for n in node_ids)
    return max(1, BLOCK_BYTES // (4 * max(per_sample, 1)))


def block_convolutions(graph) -> list[Decision]:
    """Mark each convolution split by samples, im2col -> fused_dense [-> pool2d], and each pooling
    gradient read by a kernel gradient split by samples ("batch"), to run as one blocked kernel.
    Returns the decisions."""
    decisions = []
    order = {n.id: k for k, n in enumerate(graph.nodes())}  # marking nodes changes no order
    for node in graph.nodes():
        if node.op == "fused_dense" and node.attrs.get("split") == "m":
            decisions += _block_forward(graph, node, order)
        elif node.op == "pool2d_grad" and node.attrs.get("parts", 1) > 1:
            decisions += _block_backward(graph, node)
    return decisions


def _block_forward(graph, conv, order):
    """Run at the block's last node: everything it reads is computed before it; nothing outside
    the block may read a member before then."""
    cols = graph.node(conv.inputs[0])
    if cols.op != "im2col" or cols.attrs.get("parts", 1) < 2:
        return []
    activation = conv.attrs["activation"]
    if activation not in BLOCK_ACTIVATIONS or set(conv.semantic_attrs()) != {"activation"}:
        why = f"activation {activation}: the blocked kernel's are {', '.join(BLOCK_ACTIVATIONS)}"
        return [Decision("convolution block", conv.id, False, why, BLOCK_VERBS)]
    pool = next((u for u in graph.users(conv.id) if u.op == "pool2d" and u.attrs.get("parts", 1) > 1), None)
    members = [cols.id, conv.id] + ([pool.id] if pool else [])
    lead = graph.node(members[-1])
    early = [u.id for m in members[:-1] for u in graph.users(m) if u.id not in members and order[u.id] < order[lead.id]]
    if early:
        return [Decision("convolution block", conv.id, False, f"%{early[0]} reads it before %{lead.id}", BLOCK_VERBS)]
    for m in members[:-1]:
        graph.node(m).attrs["runs_at"] = lead.id
    n = block_samples(graph, members)
    lead.attrs["conv_block"] = {"im2col": cols.id, "conv": conv.id, "pool": pool.id if pool else None, "block": n}
    what = f"im2col+GEMM+bias+{activation}" + ("+pool" if pool else "")
    return [Decision("convolution block", lead.id, True, f"{what}, {n} samples a block", BLOCK_VERBS)]


def _block_backward(graph, pool_grad):
    """Run at pooling's gradient: the kernel gradient reads only it and the patches, computed
    before (the input's gradient, which reads it too, comes after)."""
    kernel_grad = next(
        (
            u
            for u in graph.users(pool_grad.id)
            if u.op == "matmul"
            and u.attrs.get("split") == "batch"
            and u.inputs[1] == pool_grad.id
            and graph.node(u.inputs[0]).op == "im2col"
        ),
        None,
    )
    if kernel_grad is None:
        return []
    if kernel_grad.attrs["parts"] != pool_grad.attrs["parts"]:  # the kernel writes a partial per part of pool_grad's
        why = f"%{kernel_grad.id} is split in {kernel_grad.attrs['parts']} parts, %{pool_grad.id} in {pool_grad.attrs['parts']}"
        return [Decision("convolution block", pool_grad.id, False, why, BLOCK_VERBS)]
    kernel_grad.attrs["runs_at"] = pool_grad.id
    n = block_samples(graph, [pool_grad.id, kernel_grad.inputs[0], *pool_grad.inputs[:2]])
    pool_grad.attrs["conv_block"] = {"kernel_grad": kernel_grad.id, "block": n}
    return [
        Decision("convolution block", pool_grad.id, True, f"pool-grad+kernel-grad, {n} samples a block", BLOCK_VERBS)
    ]
