"""Very large configs load in time linear in their size, in whatever order they list their layers:
the work is counted, not timed. The faster forms of graph ids and memory planning give exactly
what the simple ones gave."""

import collections
import itertools
import random
import re

import networkx

import pytest

from ir import Graph, TensorType
import kgraph.codegen.base as codegen_base
from kgraph.codegen.base import drop_unused_views
from kgraph.frontend import build_model, walk
from kgraph.passes.memory import _align, _best_fit, _overlap


def sequential(n):
    layers = [{"class_name": "InputLayer", "config": {"name": "in", "batch_shape": [None, 4]}}]
    layers += [{"class_name": "Dense", "config": {"name": f"d{i}", "units": 4}} for i in range(n)]
    return {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}


def chain(n, order="reversed", seed=0):
    """A functional chain in -> d0 -> ... -> d{n-1}, its layers listed in `order`."""
    layers = [
        {
            "class_name": "InputLayer",
            "name": "in",
            "config": {"name": "in", "batch_shape": [None, 4]},
            "inbound_nodes": [],
        }
    ]
    for i in range(n):
        layers.append(
            {
                "class_name": "Dense",
                "name": f"d{i}",
                "config": {"name": f"d{i}", "units": 4},
                "inbound_nodes": [[[f"d{i - 1}" if i else "in", 0, 0, {}]]],
            }
        )
    if order == "reversed":
        layers.reverse()
    elif order == "shuffled":
        random.Random(seed).shuffle(layers)
    return {
        "class_name": "Functional",
        "config": {
            "name": "f",
            "layers": layers,
            "input_layers": [["in", 0, 0]],
            "output_layers": [[f"d{n - 1}", 0, 0]],
        },
    }


def _checks(config):
    walk.READY_CHECKS[0] = 0
    model = build_model(config)
    return walk.READY_CHECKS[0], model


@pytest.mark.parametrize(
    "make",
    [sequential, lambda n: chain(n, "in order"), chain, lambda n: chain(n, "shuffled")],
    ids=["sequential", "chain", "reversed", "shuffled"],
)
def test_walk_work_grows_linearly(make):
    small, _ = _checks(make(250))
    large, model = _checks(make(1000))
    assert 3.5 * small <= large <= 4.5 * small  # 4x the layers, 4x the work (quadratic would be 16x)
    assert len(model.weights) == 2000


def test_5000_layers_in_reverse_order_build():
    _, model = _checks(chain(5000))
    assert model.count_params() == 5000 * 20
    assert len(model.layers) == 5001 and model.output_names == ["d4999"]


def test_fresh_ids_are_what_a_scan_from_one_gives():
    def scanned(ids, hint):
        if hint not in ids:
            return hint
        return next(f"{hint}_{i}" for i in itertools.count(1) if f"{hint}_{i}" not in ids)

    rng, g = random.Random(0), Graph()
    for _ in range(3000):
        if rng.random() < 0.3 and len(g):
            nid = rng.choice(sorted(g._ids))
            g.remove(nid)
        else:
            hint = rng.choice(["x", "x_1", "x_2", "y", "x_1_1"])
            expected = scanned(g._ids, hint)
            assert g.source("input", hint, TensorType((2,), "float32")) == expected


def _best_fit_reference(sizes, intervals, align):
    """The planner's best fit as first written, a Python scan of every placed buffer."""
    placed, offsets, top = [], {}, 0
    for nid in sorted(sizes, key=lambda n: (-sizes[n], intervals[n][0], n)):
        need = _align(sizes[nid], align)
        busy = sorted((o, s) for o, s, other in placed if _overlap(intervals[nid], intervals[other]))
        best, best_gap, cursor = None, None, 0
        for o, s in busy:
            gap = o - cursor
            if gap >= need and (best_gap is None or gap < best_gap):
                best, best_gap = cursor, gap
            cursor = max(cursor, o + s)
        best = cursor if best is None else best
        offsets[nid] = best
        placed.append((best, need, nid))
        top = max(top, best + need)
    return offsets, top


def test_vectorised_best_fit_places_as_the_scan_did():
    rng = random.Random(1)
    for _ in range(200):
        sizes = {f"b{i}": rng.choice([1, 3, 8, 64, 100, rng.randint(1, 500)]) for i in range(rng.randint(0, 60))}
        intervals = {}
        for k in sizes:
            a = rng.randint(0, 50)
            intervals[k] = [a, a + rng.randint(0, 30)]
        align = rng.choice([1, 16])
        assert _best_fit(sizes, intervals, align) == _best_fit_reference(sizes, intervals, align)


def _step_lines(n):
    """A step's prologue of 2n views (half read by the body, and a chain of 5 views that
    only read each other) and its body: what drop_unused_views sees from a large model."""
    views = [f"v_a{i} = arena[{4 * i}:{4 * i + 4}]" for i in range(n)]
    views += [f"v_b{i} = arena[{4 * i}:{4 * i + 2}]" for i in range(n)]  # read by nothing
    views += ["v_c0 = arena[0:8]"] + [f"v_c{i} = v_c{i - 1}[:4]" for i in range(1, 5)]  # dropped in turn
    body = [f"kernel(v_a{i}, v_a{i + 1}, v_a_{i})" for i in range(0, n - 1, 2)]  # v_a_{i}: not a view of v_a
    return views, body


def test_unused_views_are_dropped_transitively():
    views, body = _step_lines(40)
    prologue, kept = drop_unused_views(views + ["#"] + body, keep_from=len(views) + 1)
    assert prologue == [f"v_a{i} = arena[{4 * i}:{4 * i + 4}]" for i in range(40)] and kept == body
    assert drop_unused_views(["v_x = a[0]", "v_y = v_x[1]", "f(v_y)", "v_z = v_zz"]) == [
        "v_x = a[0]",
        "v_y = v_x[1]",
        "f(v_y)",
    ]
    assert drop_unused_views(["v_x = a[0]", "v_x = a[1]"]) == ["v_x = a[0]", "v_x = a[1]"]  # read as each other's


class _CountingRe:
    """The `re` module, counting the characters its functions are given to scan."""

    def __init__(self):
        self.scanned = 0

    def __getattr__(self, name):
        def counted(pattern, string, *args, **kwargs):
            self.scanned += len(string)
            return getattr(re, name)(pattern, string, *args, **kwargs)

        return counted


def test_dropping_unused_views_scans_the_step_a_bounded_number_of_times(monkeypatch):
    """It scanned the whole step once per view per round (a 5,000-layer inspect took minutes)."""
    scanned = []
    for n in (100, 400):
        counting = _CountingRe()
        monkeypatch.setattr(codegen_base, "re", counting)
        views, body = _step_lines(n)
        text = views + ["#"] + body
        drop_unused_views(text, keep_from=len(views) + 1)
        scanned.append(counting.scanned / sum(len(line) + 1 for line in text))
    assert scanned[1] <= 1.1 * scanned[0] and scanned[1] <= 5  # the text a few times, however long


def _blocks(n):
    """A Sequential of n blocks Dense, BatchNormalization, sigmoid, Dropout, tanh: its training
    step fuses elementwise chains in every block (the pass rescanned the step after each merge)."""
    kinds = [
        ("Dense", {"units": 4}),
        ("BatchNormalization", {}),
        ("Activation", {"activation": "sigmoid"}),
        ("Dropout", {"rate": 0.2}),
        ("Activation", {"activation": "tanh"}),
    ]
    layers = [{"class_name": "InputLayer", "config": {"name": "in", "batch_shape": [None, 4]}}]
    for i in range(n):
        layers += [{"class_name": c, "config": {**cfg, "name": f"b{i}_{j}"}} for j, (c, cfg) in enumerate(kinds)]
    return {"class_name": "Sequential", "config": {"name": "blocks", "layers": layers}}


def _inspect_calls(tmp_path, config, capsys):
    """Python calls per (file, function) while `kgraph inspect` loads, compiles and prints the config."""
    import cProfile
    import json
    import pstats

    from kgraph.cli import main

    path = tmp_path / "model.json"
    path.write_text(json.dumps(config))
    profile = cProfile.Profile()
    profile.enable()
    try:
        assert main(["inspect", str(path), "--loss", "mse"]) == 0
    finally:
        profile.disable()
    capsys.readouterr()
    calls = {}
    for (file, _, name), stats in pstats.Stats(profile).stats.items():
        key = (file.replace("\\", "/").rsplit("/", 2)[-1], name)
        calls[key] = calls.get(key, 0) + stats[1]
    return calls


@pytest.mark.parametrize(
    "make,n",
    [(sequential, 60), (chain, 60), (lambda n: chain(n, "shuffled"), 60), (_blocks, 12)],
    ids=["sequential", "reversed", "shuffled", "fused-blocks"],
)
def test_inspect_work_grows_linearly(tmp_path, capsys, make, n):
    """Counted, not timed: twice the layers, at most about twice the calls of every function, and
    the same number of topological sorts, graph clones and printed graphs (inspect prints the
    train step after each pass) whatever the size."""
    _inspect_calls(tmp_path, make(3), capsys)  # imports and first-time caches out of the count
    small, large = _inspect_calls(tmp_path, make(n), capsys), _inspect_calls(tmp_path, make(2 * n), capsys)
    grew = {f: (small.get(f, 0), c) for f, c in large.items() if c > 2.2 * small.get(f, 0) + 30}
    assert not grew, grew  # a function called per node per node (quadratic) shows up here
    assert sum(large.values()) <= 2.1 * sum(small.values())
    for fixed in [("graph.py", "_sorted"), ("graph.py", "clone"), ("printer.py", "format_graph")]:
        assert 0 < small[fixed] == large[fixed], fixed


def test_compile_prints_no_graph_unless_asked(monkeypatch):
    """The passes' snapshots (the graph printed after each) are for `kgraph inspect` only."""
    import kgraph.models as models
    from ir import printer

    printed, format_graph = [], printer.format_graph
    monkeypatch.setattr(printer, "format_graph", lambda g: printed.append(g.name) or format_graph(g))
    model = models.model_from_config(sequential(3), seed=0)
    model.compile(optimizer="adam", loss="mse")
    assert not printed and not model.compiled["train"].snapshots
    model.snapshot_kinds = ("train",)
    model.compile(optimizer="adam", loss="mse")
    assert list(model.compiled["train"].snapshots) == [
        "frontend",
        "fold",
        "loss",
        "autodiff",
        "optimizer",
        "fuse",
        "dce",
        "plan",
    ]
    assert len(printed) == 8 and not model.compiled["test"].snapshots


def test_nodes_are_networkx_lexicographic_topological_order():
    """Graph.nodes sorts by itself; it must give networkx's order (insertion order first among the
    ready nodes), in graphs inserted in order and in graphs rewired to read later nodes."""
    import networkx as nx

    rng = random.Random(0)
    rewired = 0
    for _ in range(200):
        g = Graph()
        ids = [g.source("input", "x", TensorType((2,), "float32"))]
        for _ in range(rng.randint(1, 30)):
            ins = rng.sample(ids, min(len(ids), rng.randint(1, 2)))
            ids.append(g.add(*ins) if len(ins) == 2 else g.relu(ins[0]))
        for _ in range(rng.randint(0, 6)):
            early, late = sorted(rng.sample(range(1, len(ids)), 2)) if len(ids) > 2 else (1, 1)
            node = g.node(ids[early])
            if node.op == "relu" and early != late and not nx.has_path(g.nx, ids[early], ids[late]):
                g.set_inputs(node.id, [ids[late]])  # an earlier node now reads a later one
                rewired += 1
        want = list(nx.lexicographical_topological_sort(g.nx, key=lambda n: g.node(n).order))
        assert [n.id for n in g.nodes()] == want
    assert rewired > 50


def test_inspect_lowers_each_graph_once_and_compiles_only_the_step_it_prints(tmp_path, capsys):
    """Loading, summary(), compile()'s output shapes, token inputs and steps each lowered the model
    again (six lowerings), and inspect compiled the test step it never prints: seconds each at
    5,000 layers. Counted: one lowering per graph (training and inference), one pipeline."""
    calls = _inspect_calls(tmp_path, _blocks(4), capsys)
    assert calls[("model.py", "lower_with_masks")] == 2
    assert calls[("__init__.py", "run_pipeline")] == 1
    assert calls[("cpu.py", "generate")] == 2  # the train step's one module: kgraph/codegen/cpu.py's two


def test_a_lowered_graph_follows_frozen_layers():
    """The shared forward graph is lowered again when a layer is frozen (a frozen batch norm runs
    as in inference), and a specialized model has graphs of its own."""
    fm = build_model(_blocks(1))
    train, masks = fm.lowered(training=True)
    assert fm.lowered(training=True)[0] is train and masks == {}
    bn = next(layer for layer in fm.desc.layers if layer.class_name == "BatchNormalization")
    bn.config["trainable"] = False
    frozen = fm.lowered(training=True)[0]
    assert frozen is not train and len(frozen) < len(train)  # no batch statistics computed
    bn.config["trainable"] = True
    assert len(fm.lowered(training=True)[0]) == len(train)
    assert fm.lower(training=True) is not fm.lower(training=True)  # lower(): a new graph each call


def _random_graph(rng, n):
    """A graph of n ops over two inputs, then rewired (some earlier nodes read later ones) and pruned."""
    g = Graph()
    ids = [g.source("input", "x", TensorType((2,), "float32")), g.source("input", "x", TensorType((2,), "float32"))]
    for _ in range(n):
        a, b = rng.choice(ids), rng.choice(ids)
        ids.append(g.add(a, b) if rng.random() < 0.6 else g.relu(a))
    for _ in range(n // 4):
        early, late = sorted(rng.sample(range(2, len(ids)), 2))
        node = g.node(ids[early])
        if node.op == "relu" and not networkx.has_path(g.nx, ids[early], ids[late]):
            g.set_inputs(node.id, [ids[late]])
    for nid in reversed(ids[2:]):
        if not g.users(nid) and rng.random() < 0.2:
            g.remove(nid)
    return g


def test_graph_writes_networkx_internals_as_its_public_api_would():
    """Graph.add_node and clone write DiGraph's _node/_succ/_pred dicts directly (networkx's own
    add_node/add_edge cost a third of loading a 5,000-layer model). Tested against networkx 3.6.1:
    if a networkx changes the layout, _direct_layout_works() turns the direct path off, and this
    test says whether the graphs still equal what the public API builds."""
    import networkx as nx

    import ir.graph as graph_mod

    assert graph_mod._DIRECT, f"networkx {nx.__version__}: DiGraph's layout changed, Graph uses its public API"
    rng = random.Random(3)
    for _ in range(30):
        g = _random_graph(rng, rng.randint(1, 40))
        public = nx.DiGraph()
        for node in sorted((d["node"] for d in g.nx._node.values()), key=lambda n: n.order):
            public.add_node(node.id, node=node)
        for node in g.nodes():
            for i in node.inputs:
                public.add_edge(i, node.id)
        for h in (g, g.clone()):
            assert list(h.nx.nodes) == list(public.nodes)
            assert {n: d["node"].id for n, d in h.nx.nodes(data=True)} == {n: n for n in public.nodes}
            assert set(h.nx.edges) == set(public.edges) and h.nx._succ == public._succ and h.nx._pred == public._pred
            assert all(h.nx._succ[u][v] is h.nx._pred[v][u] for u, v in h.nx.edges)  # one edge-data dict
            assert h.nx._adj is h.nx._succ
            want = list(nx.lexicographical_topological_sort(h.nx, key=lambda n: h.node(n).order))
            assert [n.id for n in h.nodes()] == want
            count = sum(h.node(u).order > h.node(v).order for u, v in h.nx.edges)
            assert h._back_edge_count == count  # the count that lets nodes() skip the sort
        assert nx.is_isomorphic(g.nx, g.clone().nx)


def test_graph_falls_back_to_the_public_api(monkeypatch):
    """With the direct path off (a networkx of another layout), graphs come out the same."""
    import ir.graph as graph_mod

    built = {}
    for direct in (True, False):
        monkeypatch.setattr(graph_mod, "_DIRECT", direct)
        g = _random_graph(random.Random(5), 30)
        c = g.clone()
        built[direct] = [(n.id, n.op, n.inputs, n.order) for n in c.nodes()], dict(c.nx._pred), dict(c.nx._succ)
    assert built[True] == built[False]


def test_a_model_whose_layers_never_read_training_lowers_once(tmp_path, capsys):
    """Training and inference graphs are one graph when no layer reads Ctx.training (Dense,
    activations): inspect lowered a 5,000-layer model twice for the same graph. A layer that reads
    it (Dropout) keeps two lowerings, and the graphs differ."""
    calls = _inspect_calls(tmp_path, sequential(6), capsys)
    assert calls[("model.py", "lower_with_masks")] == 1
    fm = build_model(sequential(3))
    assert fm.lowered(training=False) is fm.lowered(training=True)
    dropout = sequential(3)
    dropout["config"]["layers"].append({"class_name": "Dropout", "config": {"name": "drop", "rate": 0.5}})
    fm = build_model(dropout)
    train, infer = fm.lowered(training=True)[0], fm.lowered(training=False)[0]
    assert train is not infer and len(train) > len(infer)  # the keep mask and its multiply


def _counted_inspect(tmp_path, config, capsys, monkeypatch):
    """`kgraph inspect` of the config, counting the graph work that a quadratic pass would multiply:
    node lookups, nodes added, sorts and the heap pushes inside them, clones, printed nodes, lowerings."""
    import heapq
    import json

    import ir.graph as graph_mod
    import ir.printer as printer_mod
    from kgraph.cli import main
    from kgraph.frontend.model import FrontendModel

    counts = collections.Counter()

    def counting(name, fn):
        def counted(*args, **kwargs):
            counts[name] += 1
            return fn(*args, **kwargs)

        return counted

    for name in ("node", "add_node", "_sorted", "clone"):
        monkeypatch.setattr(Graph, name, counting(name, getattr(Graph, name)))
    monkeypatch.setattr(printer_mod, "format_node", counting("format_node", printer_mod.format_node))
    monkeypatch.setattr(FrontendModel, "lower_with_masks", counting("lower", FrontendModel.lower_with_masks))

    class _Heap:
        heapify, heappop = staticmethod(heapq.heapify), staticmethod(heapq.heappop)
        heappush = staticmethod(counting("heappush", heapq.heappush))

    monkeypatch.setattr(graph_mod, "heapq", _Heap)
    path = tmp_path / "model.json"
    path.write_text(json.dumps(config))
    try:
        assert main(["inspect", str(path), "--loss", "mse"]) == 0
    finally:
        monkeypatch.undo()  # the next call counts from the originals again
    capsys.readouterr()
    return counts


def test_a_5000_layer_inspect_does_4x_the_work_of_1250_layers(tmp_path, capsys, monkeypatch):
    """Counted, not timed, at the size issue 21 names: a 5,000-layer Sequential's inspect (loading,
    the training pipeline with its eight printed graphs, codegen) does four times the graph work
    of 1,250 layers, and the same number of sorts, clones and lowerings (one: no layer reads
    `training`). The memory planner's best fit, quadratic in NumPy, is not counted here."""
    small = _counted_inspect(tmp_path, sequential(1250), capsys, monkeypatch)
    large = _counted_inspect(tmp_path, sequential(5000), capsys, monkeypatch)
    for name in ("node", "add_node", "format_node"):
        assert 3.8 * small[name] <= large[name] <= 4.2 * small[name], (name, small[name], large[name])
    assert large["heappush"] <= 4.2 * small["heappush"] + 100  # the sorts' and freed ids' heaps
    for name in ("_sorted", "clone"):
        assert small[name] == large[name], name
    assert small["lower"] == large["lower"] == 1
