"""Downloads of the standard datasets, from the URLs Keras and TensorFlow's guides use, checked
against their published checksums and cached under $KGRAPH_DATA_DIR (default ~/.kgraph/datasets).

A file Keras already downloaded (~/.keras/datasets, or $KERAS_HOME/datasets) is copied from there
when its checksum is right. $KGRAPH_DATASETS_URL replaces every origin folder (a mirror, or the test suite's local server):
the file is then fetched from that URL followed by its name."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path

KERAS_FOLDER = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
TF_DATA_FOLDER = "https://storage.googleapis.com/download.tensorflow.org/data/"

# Checksums as keras/src/datasets/*.py gives them (64 hex digits: SHA-256; 32: MD5). Neither
# TensorFlow nor its guide publishes one for the Iris CSV files: their layout is checked instead.
CHECKSUMS = {
    "mnist.npz": "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "imdb.npz": "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f",
    "imdb_word_index.json": "bfafd718b763782e994055a2d397834f",
    "iris_training.csv": None,
    "iris_test.csv": None,
}


class DatasetDownloadError(OSError):
    """A dataset file could not be fetched or failed its checksum."""


def data_dir() -> Path:
    return Path(os.environ.get("KGRAPH_DATA_DIR") or Path.home() / ".kgraph" / "datasets")


def checksum(path, algorithm="sha256") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _matches(path, expected) -> bool:
    return expected is None or checksum(path, "md5" if len(expected) == 32 else "sha256") == expected


def _keras_copy(fname, subdir, expected):
    """Keras's own downloaded copy of fname, where it has one with the right checksum (a file of
    no published checksum is not taken: nothing says it is the right one)."""
    if expected is None:
        return None
    home = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "datasets"
    for path in (home / subdir / fname, home / fname):
        if path.is_file() and _matches(path, expected):
            return path
    return None


def get_files(names, origin_folder: str, subdir: str = "") -> list:
    """get_file of each name; offline, one error naming every file that is missing."""
    paths, missing = [], []
    for name in names:
        try:
            paths.append(get_file(name, origin_folder, subdir))
        except DatasetDownloadError as e:
            if "could not download" not in str(e):
                raise
            missing.append(e.url)
    if missing:
        where = data_dir() / subdir
        raise DatasetDownloadError(
            f"could not download {', '.join(missing)}. Offline, fetch {'those files' if len(missing) > 1 else 'it'} "
            f"another way and save {'them' if len(missing) > 1 else 'it'} in {where} (or set KGRAPH_DATA_DIR to a "
            f"folder holding {Path(subdir) / '...' if subdir else 'them'})"
        )
    return paths


def get_file(fname: str, origin_folder: str, subdir: str = "", cache_name: str | None = None) -> Path:
    """The path of dataset file `fname`: the cached copy when its checksum is right, else Keras's
    copy or downloaded from origin_folder (or $KGRAPH_DATASETS_URL) + fname, checked, and moved
    into the cache in one step (a killed download leaves no partial file behind)."""
    expected = CHECKSUMS[fname]
    folder = os.environ.get("KGRAPH_DATASETS_URL") or origin_folder
    url = folder.rstrip("/") + "/" + fname
    target = data_dir() / subdir / (cache_name or fname)
    if target.exists():
        if _matches(target, expected):
            return target
        warnings.warn(f"{target} does not have the expected checksum: downloading it again from {url}", stacklevel=3)
    target.parent.mkdir(parents=True, exist_ok=True)
    keras_copy = _keras_copy(fname, subdir, expected)
    if keras_copy is not None:
        shutil.copyfile(keras_copy, target)
        return target
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    shutil.copyfileobj(response, out)
            except (urllib.error.URLError, OSError, ValueError) as e:
                reason = getattr(e, "reason", None) or e
                error = DatasetDownloadError(
                    f"could not download {url} ({reason}). Offline, fetch that file another way and save it "
                    f"as {target} (or set KGRAPH_DATA_DIR to a folder holding {Path(subdir) / (cache_name or fname)})"
                )
                error.url = url
                raise error from None
        if not _matches(tmp, expected):
            raise DatasetDownloadError(
                f"the file downloaded from {url} does not have the expected checksum {expected} (got "
                f"{checksum(tmp, 'md5' if len(expected) == 32 else 'sha256')}): it is incomplete or not the "
                "file kgraph expects, and was not kept"
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
