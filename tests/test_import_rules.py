"""The import rules of ARCHITECTURE.md ("What may import what"), checked by reading each module's
imports with `ast` (nothing is imported). Each rule is also run on a tiny fake tree, so each can fail."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parent.parent

# (the modules under this name, the names they may not import, at any depth and lazily too);
# a module may always import its own layer (kgraph.kernels.cpu imports kgraph.kernels.maths).
RULES = [
    ("ir", ("kgraph",)),
    ("kgraph.passes", ("numba", "kgraph.codegen", "kgraph.runtime", "kgraph.kernels")),  # a pass knows no target
    (
        "kgraph.runtime",
        (
            "kgraph.frontend",
            "kgraph.passes",
            "kgraph.codegen",
            "kgraph.models",
            "kgraph.callbacks",
            "kgraph.optimizers",
            "kgraph.cli",
        ),
    ),  # a compiled trainer runs without the compiler
    ("kgraph.kernels", ("kgraph",)),
]

# Known exceptions, (importer, imported) -> the issue that removes it. Keep this list tiny (it is empty
# since issue 20 took numba out of passes/split.py).
ALLOWED: dict = {}


def modules(root: Path) -> dict:
    """Every module of the `kgraph` and `ir` packages under root: dotted name -> file."""
    found = {}
    for top in ("kgraph", "ir"):
        for path in sorted((root / top).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, top_level: bool) -> set:
    """What `name` imports, as absolute dotted names (`from a import b` gives a.b, a module or
    not). top_level: only the imports run when the module loads (not those inside functions,
    which load lazily)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if top_level and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(child, ast.Import):
                out.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                out.update(f"{base}.{alias.name}" for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return out


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _module(name: str, known: dict) -> str | None:
    """The module of ours that a dotted name lives in (a.b.func -> a.b), or None."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _allowed(importer: str, imported: str) -> bool:
    return any(_under(importer, who) and _under(imported, what) for who, what in ALLOWED)


def violations(root: Path) -> list:
    """One line per broken rule: a layer importing what it may not (at any depth, lazily too),
    or an import cycle among the modules (imports that run at load time only)."""
    known = modules(root)
    problems = []
    graph = nx.DiGraph()
    for name, path in known.items():
        graph.add_node(name)
        for imported in sorted(_imports(name, path, top_level=False)):
            for layer, banned in RULES:
                for b in banned:
                    if (
                        _under(name, layer)
                        and _under(imported, b)
                        and not _under(imported, layer)
                        and not _allowed(name, imported)
                    ):
                        problems.append(f"{name} imports {imported} ({layer} may not import {b})")
        for imported in _imports(name, path, top_level=True):
            module = _module(imported, known)
            if module and module != name:
                graph.add_edge(name, module)
    for component in nx.strongly_connected_components(graph):
        if len(component) > 1:
            cycle = [a for a, _ in nx.find_cycle(graph.subgraph(component))]
            problems.append("import cycle: " + " -> ".join(cycle + cycle[:1]))
    return problems


def test_kgraph_follows_its_import_rules():
    assert violations(ROOT) == []


def stale_exceptions(root: Path) -> list:
    """The entries of ALLOWED whose import no module makes any more."""
    known = modules(root)
    used = {
        (who, what)
        for who, what in ALLOWED
        for name, path in known.items()
        if _under(name, who)
        for imported in _imports(name, path, top_level=False)
        if _under(imported, what)
    }
    return [entry for entry in ALLOWED if entry not in used]


def test_no_exception_outlives_its_import():
    """When the import an exception allows is gone, the entry goes too, so the list stays tiny."""
    stale = stale_exceptions(ROOT)
    assert not stale, f"remove these from ALLOWED in {__file__}: no module needs them now: {stale}"


def test_a_stale_exception_is_found(tmp_path, monkeypatch):
    monkeypatch.setitem(ALLOWED, ("kgraph.passes.split", "numba"), "an exception, as issue 20 had")
    root = _tree(tmp_path, {"kgraph/passes/split.py": "import numba\n"})
    assert stale_exceptions(root) == []
    (root / "kgraph/passes/split.py").write_text("import math\n")
    assert stale_exceptions(root) == [("kgraph.passes.split", "numba")]


def _tree(tmp_path: Path, files: dict) -> Path:
    for rel, text in {"kgraph/__init__.py": "", "ir/__init__.py": "", **files}.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(tmp_path).parents:  # every folder a package
            if str(parent) != "." and not (tmp_path / parent / "__init__.py").exists():
                (tmp_path / parent / "__init__.py").write_text("")
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    "rel, source, expected",
    [
        ("ir/graph.py", "import kgraph.frontend\n", "ir.graph imports kgraph.frontend"),
        ("ir/ops/nn.py", "def f():\n    from kgraph import models\n", "ir.ops.nn imports kgraph.models"),
        ("kgraph/passes/fuse.py", "from numba import njit\n", "kgraph.passes.fuse imports numba.njit"),
        (
            "kgraph/passes/fuse.py",
            "from ..runtime.executable import X\n",
            "kgraph.passes.fuse imports kgraph.runtime.executable.X",
        ),
        ("kgraph/passes/fuse.py", "from .. import codegen\n", "kgraph.passes.fuse imports kgraph.codegen"),
        ("kgraph/passes/fuse.py", "import kgraph.kernels.cpu\n", "kgraph.passes.fuse imports kgraph.kernels.cpu"),
        (
            "kgraph/runtime/model.py",
            "def f():\n    from ..optimizers import get\n",
            "kgraph.runtime.model imports kgraph.optimizers.get",
        ),
        (
            "kgraph/runtime/model.py",
            "from kgraph.callbacks import Callback\n",
            "kgraph.runtime.model imports kgraph.callbacks.Callback",
        ),
        (
            "kgraph/runtime/model.py",
            "from ..frontend import build_model\n",
            "kgraph.runtime.model imports kgraph.frontend.build_model",
        ),
        (
            "kgraph/runtime/model.py",
            "from ..codegen.cpu import generate\n",
            "kgraph.runtime.model imports kgraph.codegen.cpu.generate",
        ),
        ("kgraph/runtime/x.py", "import kgraph.passes\n", "kgraph.runtime.x imports kgraph.passes"),
        ("kgraph/runtime/x.py", "from kgraph import models\n", "kgraph.runtime.x imports kgraph.models"),
        ("kgraph/passes/split.py", "from ..runtime import x\n", "kgraph.passes.split imports kgraph.runtime.x"),
        (
            "kgraph/runtime/exe.py",
            "from ..codegen import cpu_kernels\n",
            "kgraph.runtime.exe imports kgraph.codegen.cpu_kernels",
        ),
        ("kgraph/kernels/cpu.py", "from kgraph import cli\n", "kgraph.kernels.cpu imports kgraph.cli"),
        (
            "kgraph/kernels/cpu.py",
            "from ..runtime.files import write\n",
            "kgraph.kernels.cpu imports kgraph.runtime.files.write",
        ),
    ],
)
def test_each_layer_rule_can_fail(tmp_path, rel, source, expected):
    root = _tree(
        tmp_path, {rel: source, "kgraph/models.py": "", "kgraph/cli.py": "", "kgraph/optimizers/__init__.py": ""}
    )
    problems = violations(root)
    assert len(problems) == 1 and problems[0].startswith(expected + " ("), problems


def test_allowed_imports_pass(tmp_path, monkeypatch):
    monkeypatch.setitem(ALLOWED, ("kgraph.passes.split", "numba"), "an exception, as issue 20 had")
    root = _tree(
        tmp_path,
        {
            "kgraph/passes/split.py": "import numba\n",
            "kgraph/runtime/exe.py": "import numba\nfrom ..kernels import cpu\nfrom kgraph import data\n",
            "kgraph/kernels/cpu.py": "from numba import njit\nfrom . import maths\nfrom kgraph.kernels.maths import relu\n",
            "kgraph/kernels/maths.py": "",
            "kgraph/data.py": "",
            "kgraph/codegen/cpu.py": "from ..runtime.exe import STEP_ARGS\nfrom ..kernels import cpu\n",
            "kgraph/passes/fuse.py": "import ir\nimport numpy\n",
            "kgraph/models.py": "from .runtime import exe\nfrom .passes import fuse\nfrom . import callbacks\n",
            "kgraph/callbacks.py": "from .runtime.exe import X\n",
        },
    )
    assert violations(root) == []


def test_a_cycle_fails_but_a_lazy_import_does_not(tmp_path):
    root = _tree(
        tmp_path,
        {
            "kgraph/frontend/layers.py": "from .spatial import Conv\n",
            "kgraph/frontend/spatial.py": "from kgraph.frontend import layers\n",
            "kgraph/a.py": "import kgraph.b\n",
            "kgraph/b.py": "def f():\n    import kgraph.a\n",
        },
    )
    problems = violations(root)
    assert len(problems) == 1 and problems[0].startswith("import cycle: kgraph.frontend."), problems
    cycle = problems[0][len("import cycle: ") :].split(" -> ")
    assert cycle[0] == cycle[-1] and set(cycle) == {"kgraph.frontend.layers", "kgraph.frontend.spatial"}
