"""The cache of generated code (cache_dir()): step files, the loop kernels that steps share
(kernels/), and Numba's compiled code for each beside it (__pycache__/, unless NUMBA_CACHE_DIR
puts it elsewhere). Every model and every change of one adds files, so entries that no compile
has used for UNUSED_DAYS go when a new one is written, and `kgraph cache` prunes or clears it.

A file's last use is its access time: write_source sets it each time a compile finds the file.
Its modification time must stay as it is, since Numba's cache index checks it."""

from __future__ import annotations

import importlib.metadata
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .claims import remove_stale
from .files import atomic_write

UNUSED_DAYS = 30
_pruned_this_process = False


def cache_dir() -> Path:
    """$KGRAPH_CACHE_DIR, else ~/.cache/kgraph."""
    root = os.environ.get("KGRAPH_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "kgraph")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Entry:
    source: Path  # the generated .py
    compiled: list  # Numba's index and code files for its functions

    @property
    def files(self) -> list:
        return [self.source, *self.compiled]

    @property
    def bytes(self) -> int:
        return _size(self.files)

    @property
    def last_used(self) -> float:
        st = _stat(self.source)
        return max(st.st_atime, st.st_mtime) if st else 0.0

    @property
    def is_kernel(self) -> bool:
        return self.source.parent.name == "kernels"


def _stat(path: Path):
    try:
        return path.stat()
    except FileNotFoundError:  # another process pruned it meanwhile
        return None


def _size(paths) -> int:
    return sum(st.st_size for st in map(_stat, paths) if st)


def _scan(root) -> tuple:
    """(entries, orphans): the steps in root and shared kernels in root/kernels, each with Numba's
    files for it, and Numba's files whose source is gone (e.g. a one-off model's step deleted)."""
    found, orphaned = [], []
    for directory in (root, root / "kernels"):
        compiled = {}  # Numba names its files <module>.<function>-<line>.<python>.nbi/.nbc
        if (directory / "__pycache__").is_dir():
            for f in sorted((directory / "__pycache__").glob("*")):
                compiled.setdefault(f.name.split(".")[0], []).append(f)
        for source in sorted(directory.glob("*.py")):
            found.append(Entry(source, compiled.pop(source.stem, [])))
        orphaned += [f for files in compiled.values() for f in files]
    return found, orphaned


def entries(root: Path | None = None) -> list:
    """The cache's steps and shared kernels, each with Numba's files for it."""
    return _scan(Path(root or cache_dir()))[0]


def _remove(chosen: list, orphaned: list) -> tuple:
    """Delete the entries' files and the orphans; (entries, bytes) removed."""
    size = sum(e.bytes for e in chosen) + _size(orphaned)
    for f in [f for e in chosen for f in e.files] + orphaned:
        f.unlink(missing_ok=True)
    return len(chosen), size


def prune(days: float = UNUSED_DAYS, root: Path | None = None) -> tuple:
    """Remove the entries no compile has used for `days` days, Numba's files whose source is gone,
    and leftovers of interrupted writes as old as the entries; (entries, bytes) removed."""
    root = Path(root or cache_dir())
    before = time.time() - days * 86400
    remove_stale(root / "claims")  # those killed programs left
    for directory in (root, root / "kernels"):
        for tmp in directory.glob("*.tmp*"):
            st = _stat(tmp)
            if st and st.st_mtime < before:
                tmp.unlink(missing_ok=True)
    found, orphaned = _scan(root)
    return _remove([e for e in found if e.last_used < before], orphaned)


# the thread settings programs chose for their steps (runtime/threads.py); cleared with the steps
THREAD_CHOICES = "thread_choices.json"


def clear(root: Path | None = None) -> tuple:
    """Remove every entry and orphan (the next compile of each model writes and compiles its step
    again) and the thread choices made for them; files of other names in the directory stay."""
    root = Path(root or cache_dir())
    (root / THREAD_CHOICES).unlink(missing_ok=True)
    remove_stale(root / "claims")  # those killed programs left (a running program's stay)
    return _remove(*_scan(root))


# Whether kgraph's kernel library (kgraph/kernels) is compiled in Numba's cache here: the stamp of
# its sources (sizes and times, as Numba's cache checks them), Numba's cache folder, Python and
# Numba's version (a new Numba recompiles everything), as written when a step last found its kernels
# compiled. Read before Numba is imported (child.py): the version from its installed metadata.
KERNELS_STAMP = "kernels_compiled"


def _kernels_stamp() -> str:
    sources = Path(__file__).resolve().parents[1] / "kernels"
    files = [f"{p.name} {st.st_size} {st.st_mtime_ns}" for p in sorted(sources.glob("*.py")) if (st := _stat(p))]
    return "\n".join([os.environ.get("NUMBA_CACHE_DIR", ""), sys.version, f"numba {_numba_version()}", *files])


def _numba_version() -> str:
    try:
        return importlib.metadata.version("numba")
    except importlib.metadata.PackageNotFoundError:  # (run from a source tree)
        return "?"


def _written_stamp() -> str | None:
    try:
        return (cache_dir() / KERNELS_STAMP).read_text()
    except (OSError, ValueError):  # none, unreadable, or not text
        return None


def kernels_compiled() -> bool:
    """Whether a step found this kgraph's kernels compiled in the cache that Numba uses now."""
    return _written_stamp() == _kernels_stamp()


_stamp_lock = threading.Lock()


def mark_kernels_compiled() -> None:
    """A step's kernels are compiled (it is, or its Python function ran once). Only a hint: a
    cache that cannot be written is left as it is."""
    stamp = _kernels_stamp()
    with _stamp_lock:  # threads share the temporary file's name
        if _written_stamp() != stamp:
            try:
                with atomic_write(cache_dir() / KERNELS_STAMP) as tmp:
                    Path(tmp).write_text(stamp)
            except OSError:
                pass


def prune_once_per_process() -> None:
    """What write_source calls when it writes a new file: the old entries go, once a process."""
    global _pruned_this_process
    if not _pruned_this_process:
        _pruned_this_process = True
        prune()


def mark_used(path: Path) -> None:
    """Set the file's access time to now, leaving its modification time for Numba."""
    st = _stat(path)
    if st:
        os.utime(path, (time.time(), st.st_mtime))


def summary(root: Path | None = None) -> str:
    root = Path(root or cache_dir())
    found, orphaned = _scan(root)
    kernels = sum(e.is_kernel for e in found)
    size = sum(e.bytes for e in found)
    oldest = min((e.last_used for e in found), default=None)
    line = f"{root}: {len(found) - kernels} steps and {kernels} shared kernels, {size / 1e6:.1f} MB"
    if oldest is not None:
        line += f"; the least recently used was last used {(time.time() - oldest) / 86400:.1f} days ago"
    if orphaned:
        line += f"; {len(orphaned)} compiled files of removed sources"
    return line
