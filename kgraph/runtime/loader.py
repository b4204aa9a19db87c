"""Imports generated step modules from files, so Numba's on-disk cache and tracebacks work."""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading
from pathlib import Path

_IMPORT_LOCK = threading.Lock()  # replicas in threads may import the same step at once


def cache_dir() -> Path:
    """$KGRAPH_CACHE_DIR, else ~/.cache/kgraph."""
    root = os.environ.get("KGRAPH_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "kgraph")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_source(source: str, stem: str, directory: Path | None = None) -> Path:
    """Write generated source under a name keyed by its hash (same graph, same file: no recompile)."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    path = Path(directory or cache_dir()) / f"{stem}_{digest}.py"
    if not path.exists() or path.read_text() != source:
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(source)
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    return path


def import_file(path) -> object:
    with _IMPORT_LOCK:
        return _import(Path(path))


def _import(path: Path) -> object:
    name = f"kgraph_generated.{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before exec: Numba's cache locator looks the module up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
