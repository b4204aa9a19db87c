"""Weight files of the runtime: `.npz` in Keras's get_weights() order, always written atomically
(a temporary file next to the target, fsynced, then renamed), so a crash never leaves half a file.
kgraph.saving builds Keras's HDF5 formats on the same pieces."""
from __future__ import annotations

import os
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np


class FileFormatError(ValueError):
    """A model or weights file kgraph cannot read: names the file and the first problem."""


@contextmanager
def atomic_write(path):
    """Yields a temporary path next to `path`; on success it is fsynced and renamed over `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_npz_weights(path, weights) -> None:
    """Write the arrays to an .npz at `path` (any open temporary file or path np.savez takes)."""
    with open(path, "wb") as f:
        np.savez(f, **{f"w{i:04d}": w for i, w in enumerate(weights)})


def read_npz_weights(path) -> list:
    try:
        with np.load(path, allow_pickle=False) as data:
            return [data[k] for k in sorted(data.files)]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise FileFormatError(f"{path}: not a readable weights file ({e})") from None
