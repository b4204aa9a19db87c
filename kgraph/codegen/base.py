"""What the CPU and CUDA code generators share: module constants, buffer views from the memory
plan, scalar expressions of elementwise ops (lowering.py's calls of kgraph.kernels.maths), and the
shape arithmetic of reductions, rows and buckets. A target subclasses StepCodegen with its
`_operand` and `_emit_*`."""

from __future__ import annotations

import collections
import math
import re

from ir import BATCH

from .lowering import element_call


class Module:
    """Collects module-level constants and generated kernels. Shared kernels (the CPU's) are each
    a self-contained source text that the step loads with kgraph.runtime.loader.shared_kernel."""

    def __init__(self, dtype, shared=False):
        self.dtype = dtype
        self.shared = shared
        self.consts: dict[str, str] = {}
        self.arrays: dict[str, str] = {}
        self.by_body: dict[str, str] = {}
        self.kernels: list[str] = []
        self.tables: dict[str, str] = {}
        self.values: dict[str, str] = {}  # constant float arrays of the step's dtype
        self.names: set[str] = set()
        self._by_lines: dict[tuple, str] = {}  # (name, lines) -> what kernel() gave them

    def _unique(self, name: str) -> str:
        """name, or name_2, name_3, ... when another kernel already has it."""
        candidate, k = name, 1
        while candidate in self.names:
            k += 1
            candidate = f"{name}_{k}"
        self.names.add(candidate)
        return candidate

    def lit(self, value: float) -> str:
        """A module-level constant of the step's dtype (a bare Python float would pull
        the loop into float64)."""
        key = repr(float(value))
        if key not in self.consts:
            self.consts[key] = f"C{len(self.consts)}"
        return self.consts[key]

    def kernel(self, name: str, lines: list) -> str:
        """Add a generated kernel, or reuse an identical one (Numba compiles each function once:
        the same epilogue or loss loop on every layer costs a single compilation). The same
        lines again give the same kernel at once (the constants they name never change value)."""
        key = (name, tuple(lines))
        if key not in self._by_lines:
            self._by_lines[key] = self._kernel(name, lines)
        return self._by_lines[key]

    def _kernel(self, name: str, lines: list) -> str:
        if self.shared:
            return self._shared_kernel(name, lines)
        key = "\n".join(lines).replace(f"def {name}(", "def _(", 1)
        if key not in self.by_body:
            unique = self._unique(name)
            self.by_body[key] = unique
            self.kernels.append("\n".join(lines).replace(f"def {name}(", f"def {unique}(", 1))
        return self.by_body[key]

    def _shared_kernel(self, name: str, lines: list) -> str:
        """The kernel as text with its own constants (numbered in order of use, so the same loop
        in another model is the same text) and the function named `kernel`."""
        text = "\n".join(lines).replace(f"def {name}(", "def kernel(", 1)  # (a driver's `{name}_rows` stays)
        values = {v: k for k, v in self.consts.items()}
        used = list(dict.fromkeys(re.findall(r"\bC\d+\b", text)))
        local = {c: f"C{i}" for i, c in enumerate(used)}
        text = re.sub(r"\bC\d+\b", lambda m: local[m.group(0)], text)
        consts = "".join(f"{local[c]} = np.{self.dtype}({values[c]})\n" for c in used)
        text = (consts + "\n\n" if consts else "") + text + "\n"
        assert "'''" not in text and "\\" not in text
        if text not in self.by_body:
            unique = self._unique(name)
            self.by_body[text] = unique
            self.kernels.append(f"{unique} = shared_kernel('''\n{text}''')")
        return self.by_body[text]

    def array(self, value: float) -> str:
        """A module-level 1-element array (Numba freezes global arrays as constants)."""
        name = "A" + self.lit(value)
        self.arrays[name] = self.lit(value)
        return name

    def table(self, values) -> str:
        """A module-level constant int64 array (nested lists), e.g. the row parts of the weights."""
        key = repr(values)
        if key not in self.tables:
            self.tables[key] = f"T{len(self.tables)}"
        return self.tables[key]

    def floats(self, values) -> str:
        """A module-level constant 1-D array of the step's dtype (a 'constant' node's values)."""
        key = repr([float(v) for v in values])
        if key not in self.values:
            self.values[key] = f"V{len(self.values)}"
        return self.values[key]

    def source(self) -> str:
        t = "np." + self.dtype
        consts = "".join(f"{name} = {t}({value})\n" for value, name in self.consts.items())
        consts += "".join(f"{name} = np.full(1, {c})\n" for name, c in self.arrays.items())
        consts += "".join(f"{name} = np.array({value}, np.int64)\n" for value, name in self.tables.items())
        consts += "".join(f"{name} = np.array({value}, {t})\n" for value, name in self.values.items())
        arrays = [*self.arrays, *self.tables.values(), *self.values.values()]
        if arrays:
            # read-only, as Numba types a compiled step's global arrays: the step's Python function
            # (typecheck.py, background.py) then calls each kernel with the compiled step's types,
            # and Numba compiles one form of the kernel, not a read-only and a writable one
            consts += f"for _array in ({', '.join(arrays)},):\n    _array.flags.writeable = False\n"
        return consts + "\n\n" + "\n\n".join(self.kernels)


# a view's name as a whole word, as \bv_\w+ finds it: "v" first lets the regex engine jump from
# one "v" to the next (six times faster on a large step than trying \b at every character)
_VIEW_NAME = r"v(?<!\wv)_\w+"


def drop_unused_views(lines: list, keep_from=None):
    """The lines without the view definitions (`v_x = ...`) no other line reads. keep_from: the
    lines are a prologue and a body joined at that index (with a separator line before it):
    returns the two parts. Linear in the text: the view names are counted once, and a dropped
    line's names counted down, which may leave the views it read unused in turn."""
    lines = list(lines)
    uses = collections.Counter(re.findall(_VIEW_NAME, "\n".join(lines)))
    defined = {}
    for i, line in enumerate(lines):
        if m := re.match(r"(v_\w+) = ", line):
            defined.setdefault(m.group(1), []).append(i)
    dropped = set()
    todo = [name for name, at in defined.items() if uses[name] == 1]
    while todo:
        name = todo.pop()
        (i,) = defined[name]  # read once: in its only definition
        dropped.add(i)
        if lines[i].count("v_") == 1:  # it reads no view (most do not): its own name is all findall would find
            uses[name] -= 1
            continue
        for used in re.findall(_VIEW_NAME, lines[i]):
            uses[used] -= 1
            if used != name and uses[used] == 1 and used in defined and not any(j in dropped for j in defined[used]):
                todo.append(used)
    kept = [line for i, line in enumerate(lines) if i not in dropped]
    if keep_from is None:
        return kept
    keep_from -= len([i for i in dropped if i < keep_from])
    return kept[: keep_from - 1], kept[keep_from:]


def home_slot(plan, nid):
    """The memory-plan slot holding node nid's values (a view's is its base's)."""
    slot = plan.slots[nid]
    return plan.slots[slot.view_of] if slot.region == "view" else slot


def stash_outputs(compiled) -> list:
    """[(name, node id)] of the step's outputs that live in a buffer, in the order of the step's
    stash arguments and of its manifest's "outputs"."""
    return [
        (k, v)
        for k, v in compiled.graph.outputs.items()
        if home_slot(compiled.plan, v).region in ("arena", "params", "grads", "state")
    ]


def var(nid: str) -> str:
    return "v_" + nid


def shape_expr(shape) -> str:
    dims = [("B" if d == BATCH else str(d)) for d in shape] or ["1"]  # a scalar is a 1-element array
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def prod(dims) -> str:
    parts = [("B" if d == BATCH else str(d)) for d in dims]
    return " * ".join(parts) if parts else "1"


def constraint_args(node, shape) -> tuple:
    """(the weight's dims as (before, over, after) around the constraint's norm axes, its kind's
    code in the kernels, min_value, max_value, rate) of a `constrain` node on a weight of `shape`."""
    from ..kernels.maths import CONSTRAINTS

    a = node.attrs
    axes = a.get("axes") or (0,)
    dims = (math.prod(shape[: axes[0]]), math.prod(shape[axes[0] : axes[-1] + 1]), math.prod(shape[axes[-1] + 1 :]))
    kind = CONSTRAINTS.index(a["kind"])
    return dims, kind, float(a.get("min_value", 0.0)), float(a.get("max_value", 0.0)), float(a.get("rate", 1.0))


class StepCodegen:
    """One compiled graph and its memory plan; subclasses emit a target's code from them."""

    SHARED_KERNELS = False  # generated kernels in files of their own (Module.shared)

    def __init__(self, compiled, func_name):
        self.c = compiled
        self.g = compiled.graph
        self.plan = compiled.plan
        self.dtype = self._dtype()
        self.mod = Module(self.dtype, self.SHARED_KERNELS)
        self.func_name = func_name
        self.inputs = [n.id for n in self.g.sources("input")]
        # the step's batch arguments after the inputs: labels, then each output's sample weights
        self.labels = [n.id for n in self.g.sources("label")] + [n.id for n in self.g.sources("sample_weight")]

    def _dtype(self):
        floats = {n.type.dtype for n in self.g.nodes() if n.type.dtype.startswith("float") and n.op != "scalar"}
        return "float64" if floats == {"float64"} else "float32"

    # ------------------------------------------------------------------ buffers
    def _view(self, nid: str) -> str:
        """The expression of node nid's buffer, shaped as its type."""
        slot = self.plan.slots[nid]
        t = self.g.type(nid)
        a, c = t.per_batch_size()
        if slot.region in ("arena", "rng"):  # sized per sample: a batch's slots first, then the fixed ones
            per_sample = self.plan.arena_per_sample if slot.region == "arena" else self.plan.rng_per_sample
            if slot.batch:
                start, n = (f"{slot.offset} * B" if slot.offset else "0"), f"{a} * B"
            else:
                start, n = f"{per_sample} * B + {slot.offset}", str(max(c, 1))
            return self._region_view(slot.region, start, n, t.shape)
        if slot.region in ("params", "grads", "state"):
            return self._region_view(slot.region, str(slot.offset), str(max(c, 1)), t.shape)
        raise AssertionError(f"no buffer for %{nid} in region {slot.region}")

    def _region_view(self, region: str, start: str, size: str, shape) -> str:
        """`size` elements of a flat array from `start`, shaped."""
        return f"{region}[{start}:{start} + {size}].reshape({shape_expr(shape)})"

    def _define(self, node) -> list[str]:
        """The view of the node's buffer (and of the bias gradient it also writes)."""
        if node.attrs.get("computed_by") or self.plan.slots[node.id].region == "view":
            return []
        lines = [f"{var(node.id)} = {self._view(node.id)}"]
        if node.attrs.get("bias_grad"):
            lines.append(f"{var(node.attrs['bias_grad'])} = {self._view(node.attrs['bias_grad'])}")
        return lines

    def _broadcast_arg(self, nid, out_rank) -> str:
        """An operand reshaped to out's rank (leading 1s), as NumPy broadcasting aligns it."""
        t = self.g.type(nid)
        rank = max(out_rank, 1)
        if t.rank == rank:
            return self._operand(nid)
        shape = (1,) * (rank - t.rank) + tuple(t.shape) if t.rank else (1,) * rank
        return f"{self._operand(nid)}.reshape({shape_expr(shape)})"

    @staticmethod
    def _node_expr(node):
        """The expression tree an elementwise node computes (a fused chain's, or its own op's)."""
        if node.op == "fused_elementwise":
            return node.attrs["expr"]
        return (
            "op",
            node.op,
            tuple(sorted(node.semantic_attrs().items())),
            *[("in", k) for k in range(len(node.inputs))],
        )

    @staticmethod
    def _expr_name(expr) -> str:
        """A kernel name from the ops an expression tree computes (shared kernels serve every node
        computing the same, so they are named by what they compute, not by the first node)."""
        ops = []

        def walk(e):
            if e[0] == "op":
                attrs = dict(e[2])
                ops.append(attrs["activation"] + "_grad" if e[1] == "act_grad" else e[1])
                for operand in e[3:]:
                    walk(operand)

        walk(expr)
        return "_".join(reversed(ops))

    def _expr(self, expr, names, temps) -> str:
        """Render an expression tree into temporaries; returns the name holding its value."""
        if expr[0] == "in":
            return names[expr[1]]
        _, op, attrs, *operands = expr
        args = [self._expr(e, names, temps) for e in operands]
        value = self._scalar(op, args, dict(attrs))
        name = f"t{len(temps)}"
        temps.append(f"{name} = {value}")
        return name

    def _scalar(self, op, args, attrs) -> str:
        return element_call(op, args, attrs, self.mod.lit)

    @staticmethod
    def _axes(t, axes) -> list:
        return sorted(
            a % max(t.rank, 1)
            for a in (range(t.rank) if axes is None else ((axes,) if isinstance(axes, int) else axes))
        )

    def _split(self, t, axes):
        """(pre, mid, post) sizes for a reduction over a contiguous axis range, or None (the
        target generates a loop over non-contiguous axes, or refuses them)."""
        axes = self._axes(t, axes)
        if axes and axes != list(range(axes[0], axes[-1] + 1)):
            return None
        if not axes:
            return prod(t.shape), "1", "1"
        return prod(t.shape[: axes[0]]), prod(t.shape[axes[0] : axes[-1] + 1]), prod(t.shape[axes[-1] + 1 :])

    def _rows(self, nid) -> str:
        t = self.g.type(nid)
        return f"{self._operand(nid)}.reshape(({prod(t.shape[:-1])}, {t.shape[-1]}))"

    def _stack(self, nid) -> str:
        """A node as a stack of matrices: its leading axes flattened, its last two kept."""
        t = self.g.type(nid)
        return f"{self._operand(nid)}.reshape(({prod(t.shape[:-2])}, {t.shape[-2]}, {t.shape[-1]}))"

    def _flat(self, nid) -> str:
        return f"{self._operand(nid)}.reshape(({prod(self.g.type(nid).shape)},))"

    def _check_last_axis(self, node):
        if node.attrs.get("axis", -1) % node.type.rank != node.type.rank - 1:
            raise NotImplementedError(f"{node.op} over an axis other than the last (%{node.id})")

    def _axis_split(self, t, axis):
        axis %= t.rank
        return prod(t.shape[:axis]), prod(t.shape[axis + 1 :]), axis

    def _bucket_range(self, nids, region):
        """The [start, stop) range of nodes laid out back to back in one bucket, or None."""
        slots = [self.plan.slots[n] for n in nids]
        if any(s.region != region for s in slots):
            return None
        for s, t in zip(slots, slots[1:]):
            if s.offset + s.size != t.offset:
                return None
        return slots[0].offset, slots[-1].offset + slots[-1].size

    def _bucket_ranges(self, groups):
        """[(region, (start, stop))] per operand kind of an update's groups (w, g, *slots) when
        each kind is laid out back to back in its bucket, in group order; else None."""
        columns = list(zip(*groups))
        regions = ["params", "grads"] + ["state"] * (len(columns) - 2)
        ranges = [self._bucket_range(col, region) for col, region in zip(columns, regions)]
        return list(zip(regions, ranges)) if all(r is not None for r in ranges) else None

    @staticmethod
    def _update_rule(node):
        """(update op, hyper-parameters) of an update node, fused or not."""
        if node.op == "fused_update":
            return node.attrs["update"], node.attrs.get("hyper", ())
        return node.op, node.semantic_attrs().items()
