"""kgraph/kernels/cache_lock.py: saves to Numba's on-disk cache take turns (the compile child and
its program save signatures of the same kernels at once)."""

import fcntl
import os
import threading

from numba import njit

import kgraph.kernels  # noqa: F401 - installs the lock
from kgraph.kernels.cache_lock import LOCK_NAME


@njit(cache=True)
def _twice(x):
    return 2 * x


def test_a_save_waits_while_another_process_saves_in_the_same_folder():
    _twice._cache.flush()  # a signature to save, whatever ran before
    folder = _twice._cache._cache_file._cache_path
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, LOCK_NAME), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as another process saving would
        results = []
        compiling = threading.Thread(target=lambda: results.append(_twice(1.5)))
        compiling.start()
        compiling.join(3.0)
        assert compiling.is_alive() and not results  # compiled, and waiting to save
        fcntl.flock(lock, fcntl.LOCK_UN)
    compiling.join(30.0)
    assert results == [3.0]
    assert _twice._cache._cache_file._load_index()  # saved once the lock was free
