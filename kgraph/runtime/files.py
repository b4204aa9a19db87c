"""Weight files of the runtime: `.npz` in Keras's get_weights() order, always written atomically
(a temporary file next to the target, fsynced, then renamed), so a crash never leaves half a file.
kgraph.saving builds Keras's HDF5 formats on the same pieces."""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np


class FileFormatError(ValueError):
    """A model or weights file kgraph cannot read: names the file and the first problem, on one line."""

    def __str__(self):
        return super().__str__().replace("\r", "\\r").replace("\n", "\\n")


_TEMP = re.compile(r"\.(.+)\.tmp(\d+)")  # .NAME.tmpPID: a write in progress, or of a process that died


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temps(folder) -> list:
    """Remove the temporary files (and folders) that writers killed before their rename left
    in `folder`: those whose process no longer runs. Returns their paths."""
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = _TEMP.fullmatch(name)
        if m is None or _alive(int(m.group(2))):
            continue
        path = Path(folder) / name
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass  # another process cleaned it first, or it is not ours to remove
    return removed


def fsync_dir(folder) -> None:
    """Make a rename in `folder` durable: without it a power cut can undo the rename."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not possible on every platform or file system
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


@contextmanager
def atomic_write(path):
    """Yields a temporary path next to `path`; on success it is fsynced and renamed over `path`,
    and the folder is fsynced. The old file stays whole until the rename; a kill before it
    leaves a temporary file that the next write to the folder removes."""
    path = Path(path)
    if not path.parent.is_dir():  # else the error would name the temporary file
        raise FileNotFoundError(f"{path}: the folder {path.parent} does not exist")
    remove_stale_temps(path.parent)
    tmp = _temp_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_write(path) as tmp:
        Path(tmp).write_bytes(data)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_folder(path):
    """Yields a temporary folder; on success each of its files is fsynced and renamed into
    `path` (created if needed), so every file there is either the old one or the new one, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    tmp = _temp_path(path)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        path.mkdir(exist_ok=True)
        for src in sorted(tmp.iterdir()):
            if src.is_dir():
                raise ValueError(f"{src}: atomic_folder moves files, not folders")
            with open(src, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(src, path / src.name)
        fsync_dir(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_npz_weights(path, weights) -> None:
    """Write the arrays to an .npz at `path` (any open temporary file or path np.savez takes)."""
    with open(path, "wb") as f:
        np.savez(f, **{f"w{i:04d}": w for i, w in enumerate(weights)})


def read_npz_weights(path) -> list:
    from .. import limits  # here: kgraph.limits imports this module

    try:
        with zipfile.ZipFile(path) as z:  # an .npz is a zip: its members' sizes before inflating them
            limits.check_bytes(f"{path}: the weights", sum(i.file_size for i in z.infolist()))
        with np.load(path, allow_pickle=False) as data:
            return [data[k] for k in sorted(data.files)]
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise FileFormatError(f"{path}: not a readable weights file ({e})") from None
