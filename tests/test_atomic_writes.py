"""Every file kgraph writes is replaced whole: writers killed at random points (seeded) leave
the previous file intact, and the temporary files they leave are removed by the next write."""

import csv
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from kgraph import cli
from kgraph.runtime import files

ROOT = Path(__file__).resolve().parents[1]


def _payload(i: int) -> bytes:
    body = bytes([i % 251]) * (2 << 20)
    return f"v{i}:".encode() + body + hashlib.sha256(body).hexdigest().encode()


def _check_payload(data: bytes) -> int:
    head, rest = data.split(b":", 1)
    body, digest = rest[:-64], rest[-64:]
    assert hashlib.sha256(body).hexdigest().encode() == digest, "a torn file"
    return int(head[1:])


# each writer loops forever, writing version 1, 2, ... of its file(s); the parent kills it
WRITERS = {
    "atomic_write": """
from kgraph.runtime.files import write_bytes
from tests.test_atomic_writes import _payload
print("ready", flush=True)
i = 1
while True:
    write_bytes(path, _payload(i)); i += 1
""",
    "predict -o": """
import numpy as np
from kgraph.runtime.files import atomic_write
print("ready", flush=True)
i = 1
while True:  # as cmd_predict writes it
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.save(f, np.full(1 << 21, i, np.float32))
    i += 1
""",
    "compile -o": """
from pathlib import Path
from kgraph.runtime.files import atomic_folder
from tests.test_atomic_writes import _payload
print("ready", flush=True)
i = 1
while True:
    with atomic_folder(path) as tmp:
        for name in ("a.bin", "b.bin"):
            (Path(tmp) / name).write_bytes(_payload(i))
    i += 1
""",
    "CSVLogger": """
from kgraph.callbacks import CSVLogger
log = CSVLogger(path)
log.on_train_begin()
print("ready", flush=True)
epoch = 0
while True:
    log.on_epoch_end(epoch, {"loss": float(epoch), "note": "x" * 100000}); epoch += 1
""",
}


def _old(kind, path):
    """Write the 'previous good file' a kill must never damage."""
    if kind == "atomic_write":
        path.write_bytes(_payload(0))
    elif kind == "predict -o":
        np.save(path, np.zeros(1 << 21, np.float32))
    elif kind == "compile -o":
        path.mkdir()
        for name in ("a.bin", "b.bin"):
            (path / name).write_bytes(_payload(0))
    else:
        path.write_text("old,log\r\n1,2\r\n")


def _check(kind, path):
    """The file is the old one or a complete newer one."""
    if kind == "atomic_write":
        _check_payload(path.read_bytes())
    elif kind == "predict -o":
        a = np.load(path)
        assert a.shape == (1 << 21,) and (a == a[0]).all()
    elif kind == "compile -o":
        for name in ("a.bin", "b.bin"):
            _check_payload((path / name).read_bytes())
    else:
        text = path.read_text()
        if text == "old,log\r\n1,2\r\n":
            return
        rows = list(csv.reader(text.splitlines()))
        assert rows[0] == ["epoch", "loss", "note", "val_loss", "val_note"]
        assert [int(r[0]) for r in rows[1:]] == list(range(len(rows) - 1)) and len(rows) > 1
        assert all(len(r) == 5 and r[2] == "x" * 100000 for r in rows[1:])


@pytest.mark.parametrize("kind", list(WRITERS))
def test_a_killed_writer_leaves_the_previous_file_whole(tmp_path, kind):
    name = {"predict -o": "preds.npy", "compile -o": "trainer", "CSVLogger": "log.csv"}.get(kind, "data.bin")
    path = tmp_path / name
    _old(kind, path)
    rng = random.Random(21)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    left_temps, trial = 0, 0
    while trial < 6 or (left_temps == 0 and trial < 25):  # until a kill has landed mid-write
        trial += 1
        proc = subprocess.Popen(
            [sys.executable, "-c", f"path = {str(path)!r}\n" + WRITERS[kind]],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        _check(kind, path)
        left_temps += len(list(tmp_path.glob(".*.tmp*")))
    # a kill mid-write leaves its temporary file; the next write to the folder removes them all
    assert left_temps > 0
    files.write_bytes(tmp_path / "other", b"x")
    assert list(tmp_path.glob(".*.tmp*")) == []
    _check(kind, path)


def test_a_live_writer_s_temporary_file_is_left_alone(tmp_path):
    live = tmp_path / f".data.bin.tmp{os.getppid()}"
    dead = tmp_path / ".data.bin.tmp999999999"
    live.write_bytes(b"in progress")
    dead.write_bytes(b"left by a dead process")
    files.write_bytes(tmp_path / "data.bin", b"new")
    assert live.exists() and not dead.exists()
    assert (tmp_path / "data.bin").read_bytes() == b"new"


def test_the_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    calls = []
    real_replace = os.replace
    monkeypatch.setattr(files.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b)))
    monkeypatch.setattr(files, "fsync_dir", lambda folder: calls.append(("fsync_dir", Path(folder))))
    files.write_bytes(tmp_path / "f", b"x")
    assert calls == ["replace", ("fsync_dir", tmp_path)]


def test_cli_writes_go_through_the_atomic_writers(tmp_path, monkeypatch):
    dot = tmp_path / "g.dot"
    dot.write_text("old")
    args = ["inspect", str(ROOT / "examples" / "digits_mlp.json"), "--kind", "predict", "--dot", str(dot)]

    def fail(a, b):
        raise OSError("no space left on device")

    with monkeypatch.context() as m:  # the rename fails: the old file is as it was, no temp file left
        m.setattr(files.os, "replace", fail)
        assert cli.main(args) == 2
    assert dot.read_text() == "old" and not list(tmp_path.glob(".*"))
    assert cli.main(args) == 0
    assert dot.read_text().startswith("digraph") and not list(tmp_path.glob(".*"))


def test_an_exported_trainer_s_files_are_replaced_whole(tmp_path, monkeypatch):
    """Model.export wrote its files with Path.write_text, truncating the previous trainer's first."""
    from kgraph import models

    model = models.model_from_json((ROOT / "examples" / "digits_mlp.json").read_text(), seed=0)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.export(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert {"manifest.json", "model.json", "train.py", "weights.npz"} <= set(before)
    written = []
    real_replace = os.replace
    monkeypatch.setattr(files.os, "replace", lambda a, b: (written.append(Path(b).name), real_replace(a, b)))
    model.export(tmp_path)
    assert sorted(written) == sorted(before)  # every file, each through a rename
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
