"""Small files with the layout of the real dataset downloads, served from a local HTTP server on
127.0.0.1 (the suite never reaches the internet): tests/test_datasets.py and tests/test_examples.py."""

import contextlib
import functools
import gzip
import http.server
import io
import json
import threading

import numpy as np

from kgraph.datasets import _files


def _images(rs, n, classes=10):
    """Images whose mean brightness follows the label, so a model can learn something."""
    y = rs.randint(0, classes, n).astype(np.uint8)
    x = rs.randint(0, 40, (n, 28, 28)).astype(np.uint8)
    x[:, 4 + y // 2 * 4, :] += 200  # a bright row per class pair, a bright column per parity
    x[:, :, 4 + (y % 2) * 14] += 200
    return x, y


def _idx(array, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.tobytes())


def _npz(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _iris_csv(rs, n):
    y = rs.randint(0, 3, n)
    x = np.round(rs.normal(size=(n, 4)) * 0.3 + np.array([5.0, 3.0, 1.5, 0.2]) + y[:, None] * [0.8, -0.3, 2.0, 0.9], 1)
    lines = [f"{n},4,setosa,versicolor,virginica"] + [",".join(f"{v:g}" for v in row) + f",{c}" for row, c in zip(x, y)]
    return ("\n".join(lines) + "\n").encode()


def make_files(n_train=600, n_test=100, seed=0) -> dict:
    """{file name: bytes} for every file kgraph.datasets downloads."""
    rs = np.random.RandomState(seed)
    (xm, ym), (xmt, ymt) = _images(rs, n_train), _images(rs, n_test)
    (xf, yf), (xft, yft) = _images(rs, n_train), _images(rs, n_test)
    reviews = np.empty(8, dtype=object)
    for k in range(8):
        reviews[k] = list(rs.randint(1, 30, 3 + k))
    return {
        "mnist.npz": _npz(x_train=xm, y_train=ym, x_test=xmt, y_test=ymt),
        "train-labels-idx1-ubyte.gz": _idx(yf, 2049),
        "train-images-idx3-ubyte.gz": _idx(xf, 2051),
        "t10k-labels-idx1-ubyte.gz": _idx(yft, 2049),
        "t10k-images-idx3-ubyte.gz": _idx(xft, 2051),
        "iris_training.csv": _iris_csv(rs, 120),
        "iris_test.csv": _iris_csv(rs, 30),
        "imdb.npz": _npz(
            x_train=reviews[:6], y_train=np.array([0, 1, 0, 1, 1, 0]), x_test=reviews[6:], y_test=np.array([1, 0])
        ),
        "imdb_word_index.json": json.dumps({"the": 1, "movie": 2}).encode(),
    }


def checksums(files) -> dict:
    """The checksum table for the fake files, in the real table's algorithm per file."""
    import hashlib

    out = {}
    for name, data in files.items():
        real = _files.CHECKSUMS[name]
        algorithm = "md5" if real is not None and len(real) == 32 else "sha256"
        out[name] = hashlib.new(algorithm, data).hexdigest()
    return out


@contextlib.contextmanager
def serve(directory):
    """An HTTP server for `directory` on 127.0.0.1 in a thread; yields its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def fake_downloads(tmp_path, monkeypatch, **sizes):
    """Fake files served locally, KGRAPH_DATASETS_URL pointing at them, an empty KGRAPH_DATA_DIR
    and KERAS_HOME, and the checksum table patched; yields (files, base URL, cache folder)."""
    files = make_files(**sizes)
    served = tmp_path / "served"
    served.mkdir()
    for name, data in files.items():
        (served / name).write_bytes(data)
    cache = tmp_path / "cache"
    monkeypatch.setattr(_files, "CHECKSUMS", checksums(files))
    monkeypatch.setenv("KGRAPH_DATA_DIR", str(cache))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # none of the user's Keras downloads
    with serve(served) as url:
        monkeypatch.setenv("KGRAPH_DATASETS_URL", url)
        yield files, url, cache
