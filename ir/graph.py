"""The IR graph: Nodes held in a networkx.DiGraph, one output per node.

Sources (inputs, parameters, optimizer state, runtime scalars, constants) are
nodes too; their op is one of SOURCE_OPS. Edges run from operand to user.
Ops with several results write the extra ones into `side_output` nodes.
"""

from __future__ import annotations

import copy
import dataclasses
import heapq
import itertools
import re
from dataclasses import dataclass, field

import networkx as nx

from .types import TensorType, scalar

# op names of source nodes, and what each holds
_NOT_WORD = re.compile(r"\W")  # a character an id may not hold (Python's \w is str.isalnum() or "_")
SOURCE_OPS = {
    "input": "a batch of a model input",
    "label": "a batch of training targets",
    "sample_weight": "a batch of per-sample loss weights (ones when none are given)",
    "param": "a trainable parameter",
    "state": "persistent non-trainable state (optimizer slots, step counter)",
    "scalar": "a runtime scalar (learning rate, ...)",
    "rng": "random values the runtime draws before each step (dropout keep masks, or normal draws)",
    "const": "a constant",
}


# attrs that record what passes decided, not what the op computes
BOOKKEEPING_ATTRS = (
    "fused",
    "note",
    "bias_grad",
    "computed_by",
    "split",
    "parts",
    "workspace",
    "workspace_fixed",
    "siblings",  # a recurrent backward node: the sibling gradients it writes too
    "saved",  # a recurrent forward node: what it keeps for the backward node "saved_for"
    "saved_for",
    "runs_at",  # a node of a convolution block: the block's kernel runs at that node's place
    "conv_block",  # the node of a convolution block whose place runs its kernel: the members, samples a block
)


def _copy_attrs(attrs: dict) -> dict:
    """A node's attrs for a clone: plain numbers and strings shared, anything else copied."""
    return {k: v if isinstance(v, (int, float, str, type(None))) else copy.deepcopy(v) for k, v in attrs.items()}


@dataclass
class Node:
    id: str
    op: str
    inputs: tuple
    type: TensorType
    attrs: dict = field(default_factory=dict)
    order: int = 0  # insertion index: makes topological order deterministic

    def semantic_attrs(self) -> dict:
        """The attrs the op's rules read (no pass bookkeeping)."""
        return {k: v for k, v in self.attrs.items() if k not in BOOKKEEPING_ATTRS}

    @property
    def is_source(self) -> bool:
        return self.op in SOURCE_OPS


def _direct_layout_works() -> bool:
    """Whether networkx's DiGraph keeps the layout Graph writes into directly (networkx 3.x, tested
    against 3.6.1): dicts `_node` (id -> attr dict), `_succ` (id -> {successor: edge data}, also
    `_adj`) and `_pred` (id -> {predecessor: the same edge data}), with plain-dict factories. Else
    Graph goes through the public API, the same graph only slower."""
    g = nx.DiGraph()
    g.add_edge("a", "b")
    return (
        type(g._node) is dict
        and g._adj is g._succ
        and g._succ == {"a": {"b": {}}, "b": {}}
        and g._pred == {"a": {}, "b": {"a": {}}}
        and g._succ["a"]["b"] is g._pred["b"]["a"]
        and g._node == {"a": {}, "b": {}}
        and (g.node_dict_factory, g.node_attr_dict_factory, g.adjlist_inner_dict_factory) == (dict, dict, dict)
        and g.edge_attr_dict_factory is dict
    )


_DIRECT = _direct_layout_works()


def _clear_nx_cache(g) -> None:
    """What networkx's own add_node/add_edge do after a change: drop converted graphs it cached."""
    cache = g.__dict__.get("__networkx_cache__")
    if cache:
        cache.clear()


class Graph:
    _back_edge_count = None  # a graph made before the count: every sort checks

    def __init__(self, name: str = "graph"):
        self.name = name
        self.nx = nx.DiGraph()
        self.outputs: dict[str, str] = {}  # role name -> node id ("loss", "output:dense_2", ...)
        self._counter = itertools.count()
        self._ids: set[str] = set()
        self._next: dict[str, int] = {}  # hint -> the suffix _fresh_id tries next (all below are taken...
        self._freed: dict[str, list] = {}  # ...but these, freed by remove(): a heap per hint)
        self._order = None  # nodes() until the graph changes
        self._back_edge_count = 0  # edges from a later node to an earlier one (set_inputs makes them)

    # -- construction ---------------------------------------------------------
    def _fresh_id(self, hint: str) -> str:
        """`hint`, else `hint_i` for the smallest free i >= 1. A counter per hint and the freed
        suffixes keep this constant time: a scan from 1 was quadratic in a deep model."""
        hint = _NOT_WORD.sub("_", hint) or "t"  # \W: what str.isalnum() and "_" are not, in C
        if hint not in self._ids:
            return hint
        freed = self._freed.get(hint, [])
        while freed and f"{hint}_{freed[0]}" in self._ids:
            heapq.heappop(freed)  # taken again since it was freed
        if freed:
            return f"{hint}_{heapq.heappop(freed)}"
        i = self._next.get(hint, 1)
        while f"{hint}_{i}" in self._ids:
            i += 1
        self._next[hint] = i + 1
        return f"{hint}_{i}"

    def add_node(self, op: str, inputs=(), attrs=None, type: TensorType | None = None, name: str | None = None) -> str:
        """Add a node; its type comes from the op registry's shape rule unless given."""
        from .ops import get_op

        inputs = tuple(inputs)
        attrs = dict(attrs or {})
        for i in inputs:
            if i not in self._ids:
                raise KeyError(f"{op}: operand %{i} is not in graph {self.name!r}")
        if type is None:
            type = get_op(op).infer([self.node(i).type for i in inputs], attrs)
        nid = self._fresh_id(name or op)
        self._ids.add(nid)
        self._order = None
        node = Node(nid, op, inputs, type, attrs, next(self._counter))
        if _DIRECT:  # networkx's add_node/add_edge, less their checks and per-call cache clearing
            g = self.nx
            g._node[nid] = {"node": node}
            succ, pred = g._succ, {}
            succ[nid], g._pred[nid] = {}, pred
            for i in inputs:
                if i not in pred:
                    pred[i] = succ[i][nid] = {}
            _clear_nx_cache(g)
        else:
            self.nx.add_node(nid, node=node)
            for i in inputs:
                self.nx.add_edge(i, nid)
        return nid

    def source(self, op: str, name: str, type: TensorType, **attrs) -> str:
        if op not in SOURCE_OPS:
            raise ValueError(f"{op!r} is not a source op ({', '.join(SOURCE_OPS)})")
        return self.add_node(op, (), attrs, type, name)

    def const(self, value: float, dtype: str = "float32") -> str:
        return self.add_node("const", (), {"value": float(value)}, scalar(dtype), "c")

    def __getattr__(self, op: str):
        """`g.mul(a, b)` adds a `mul` node: VJP rules read like JAX's."""
        if op.startswith("_"):
            raise AttributeError(op)
        from .ops import REGISTRY

        if op not in REGISTRY:
            raise AttributeError(f"Graph has no attribute or op {op!r}")
        return lambda *inputs, name=None, **attrs: self.add_node(op, inputs, attrs, name=name)

    # -- queries ----------------------------------------------------------------
    def node(self, nid: str) -> Node:
        try:
            return self.nx._node[nid]["node"]  # networkx's node dict: its NodeView cost as much as the lookup
        except KeyError:
            raise KeyError(f"no node %{nid} in graph {self.name!r}") from None

    def __contains__(self, nid: str) -> bool:
        return nid in self._ids

    def __len__(self) -> int:
        return self.nx.number_of_nodes()

    def nodes(self) -> list[Node]:
        """All nodes in a deterministic topological order."""
        if self._order is None:  # passes ask often between changes: sort once per change
            self._order = self._sorted()
        return list(self._order)

    def _sorted(self) -> list[Node]:
        """networkx's lexicographical_topological_sort keyed by insertion order (Kahn's algorithm,
        the ready node inserted first goes first), on the adjacency dicts directly: the same
        order, ten times faster (its per-node views made a 5,000-layer model's sorts minutes).
        Where no edge runs back (the count set_inputs and remove keep), that order is the nodes'
        insertion order, which is networkx's node dict's: no sort at all."""
        succ = self.nx._succ  # networkx's own adjacency: node -> {successor: edge data}
        nodes = {nid: data["node"] for nid, data in self.nx._node.items()}
        if self._back_edge_count is None:  # an unpickled old graph: count once
            self._back_edge_count = sum(node.order > nodes[u].order for nid, node in nodes.items() for u in succ[nid])
        if not self._back_edge_count:
            return list(nodes.values())  # ascending order: add_node inserts in counter order, nothing reorders
        # Kahn's algorithm, the ready node of least order first, as a scan of the nodes in order:
        # the first ready node at or after the scan is the least ready one ahead of it, and a heap
        # holds only the nodes that became ready after the scan passed them (few: the back edges').
        ordered = list(nodes.values())
        waiting = {nid: len(preds) for nid, preds in self.nx._pred.items() if preds}
        late, out, at, n = [], [], 0, len(ordered)
        while True:
            while at < n and waiting.get(ordered[at].id):
                at += 1  # not ready: passed, it goes on the heap once ready
            if late and (at == n or late[0][0] < ordered[at].order):
                node = nodes[heapq.heappop(late)[1]]
            elif at < n:
                node, at = ordered[at], at + 1
            else:
                break
            out.append(node)
            for user in succ[node.id]:
                waiting[user] -= 1
                if not waiting[user] and (at == n or nodes[user].order < ordered[at].order):
                    heapq.heappush(late, (nodes[user].order, user))
        if len(out) != len(nodes):
            raise nx.NetworkXUnfeasible("graph contains a cycle")
        return out

    def sources(self, op: str | None = None) -> list[Node]:
        return [n for n in self.nodes() if n.is_source and (op is None or n.op == op)]

    def users(self, nid: str) -> list[Node]:
        return sorted((self.node(u) for u in self.nx.successors(nid)), key=lambda n: n.order)

    def type(self, nid: str) -> TensorType:
        return self.node(nid).type

    # -- rewriting --------------------------------------------------------------
    def _count_back_edges(self, operands, nid: str) -> int:
        """How many of the distinct edges operand -> nid run from a later node to an earlier."""
        order = self.node(nid).order
        return sum(self.node(i).order > order for i in set(operands))

    def set_inputs(self, nid: str, inputs) -> None:
        node = self.node(nid)
        self._order = None
        count = self._back_edge_count
        if count is not None:
            count -= self._count_back_edges(node.inputs, nid)
        for i in set(node.inputs):
            self.nx.remove_edge(i, nid)
        node.inputs = tuple(inputs)
        for i in node.inputs:
            self.nx.add_edge(i, nid)
        if count is not None:
            self._back_edge_count = count + self._count_back_edges(node.inputs, nid)

    def replace_uses(self, old: str, new: str) -> None:
        """Make every user of `old` (and every graph output) read `new` instead."""
        for user in self.users(old):
            if user.id != new:
                self.set_inputs(user.id, [new if i == old else i for i in user.inputs])
        for k, v in self.outputs.items():
            if v == old:
                self.outputs[k] = new

    def remove(self, nid: str) -> None:
        if list(self.nx.successors(nid)):
            raise ValueError(f"cannot remove %{nid}: it still has users")
        if self._back_edge_count is not None:
            self._back_edge_count -= self._count_back_edges(self.nx._pred[nid], nid)
        self.nx.remove_node(nid)
        self._ids.discard(nid)
        self._order = None
        m = re.fullmatch(r"(.+)_([1-9][0-9]*)", nid)
        if m and int(m.group(2)) < self._next.get(m.group(1), 1):
            heapq.heappush(self._freed.setdefault(m.group(1), []), int(m.group(2)))

    def clone(self) -> "Graph":
        """A copy whose nodes (and their attrs) can change without touching this graph. Node by
        node: a deepcopy of the networkx graph cost seconds for a 5,000-layer model."""
        g = copy.copy(self)
        g.nx = nx.DiGraph()
        nodes = (
            (nid, dataclasses.replace(d["node"], attrs=_copy_attrs(d["node"].attrs)))
            for nid, d in self.nx._node.items()
        )
        if _DIRECT:  # the same dicts add_nodes_from and add_edges_from make, in the same order
            new_node, new_succ, new_pred = g.nx._node, g.nx._succ, g.nx._pred
            for nid, node in nodes:
                new_node[nid] = {"node": node}
                new_succ[nid], new_pred[nid] = {}, {}
            for u, users in self.nx._succ.items():
                out = new_succ[u]
                for v in users:
                    out[v] = new_pred[v][u] = {}
            _clear_nx_cache(g.nx)
        else:
            g.nx.add_nodes_from((nid, {"node": node}) for nid, node in nodes)
            g.nx.add_edges_from(self.nx.edges)
        g.outputs = dict(self.outputs)
        g._counter = copy.deepcopy(self._counter)
        g._ids, g._next = set(self._ids), dict(self._next)
        g._freed = {hint: list(heap) for hint, heap in self._freed.items()}
        g._order = None
        return g

    def __str__(self) -> str:
        from .printer import format_graph

        return format_graph(self)
