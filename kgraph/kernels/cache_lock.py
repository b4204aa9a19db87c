"""Let two processes save compiled kernels to Numba's on-disk cache at once.

Numba saves a new signature of a function by reading the function's cache index, taking the first
data file name the index does not use, and writing the index back. Two processes that save two
signatures of one function at once (kgraph's compile child and its program: the program's first
step compiles a kernel from Python while the child compiles the step, which calls the same kernel
with other argument types) can both take the same file, and the index then maps one signature to
the other's code, which later programs load as it is. `install()` holds an exclusive lock on a
file of the cache folder (POSIX `flock`) around each save, so saves in one folder take turns.
Reading needs no lock: Numba replaces its index and data files whole."""

from __future__ import annotations

import os

_installed = False
LOCK_NAME = ".kgraph-save.lock"


def install() -> None:
    """Wrap Numba's IndexDataCacheFile.save; does nothing where flock is missing (not POSIX) or
    where this Numba's internals differ from those this was written against (0.61 to 0.68)."""
    global _installed
    if _installed:
        return
    _installed = True
    try:
        import fcntl

        from numba.core.caching import IndexDataCacheFile
    except ImportError:
        return
    save = getattr(IndexDataCacheFile, "save", None)
    if save is None:
        return

    def locked_save(self, key, data):
        folder = getattr(self, "_cache_path", None)
        if folder is None:
            return save(self, key, data)
        with open(os.path.join(folder, LOCK_NAME), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return save(self, key, data)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    IndexDataCacheFile.save = locked_save
