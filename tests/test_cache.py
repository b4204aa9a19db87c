"""The cache of generated code: a file found again is marked used without touching what Numba
checks, entries unused for 30 days go, and `kgraph cache` shows, prunes and clears it."""

import os
import time
from pathlib import Path

import numpy as np
import pytest

import kgraph.models
from kgraph.cli import main
from kgraph.runtime import cache
from kgraph.runtime.loader import write_source

DAY = 86400
EXAMPLE = Path(__file__).parent.parent / "examples" / "digits_mlp.json"


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("KGRAPH_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache, "_pruned_this_process", True)  # each test prunes when it says so
    return tmp_path


def _entry(source, stem="step", directory=None, age_days=0.0):
    """A generated file with Numba's index and code files beside it, last used age_days ago."""
    path = write_source(source, stem, directory)
    for name in (f"{path.stem}.f-3.py311.nbi", f"{path.stem}.f-3.py311.1.nbc"):
        (path.parent / "__pycache__").mkdir(exist_ok=True)
        (path.parent / "__pycache__" / name).write_bytes(b"x" * 100)
    then = time.time() - age_days * DAY
    os.utime(path, (then, then))
    return path


def test_finding_a_file_marks_it_used_and_keeps_its_modification_time(root):
    path = _entry("a = 1\n", age_days=40)
    mtime = path.stat().st_mtime
    assert write_source("a = 1\n", "step") == path
    assert path.stat().st_mtime == mtime  # Numba's index checks it
    assert time.time() - path.stat().st_atime < 60


def test_prune_removes_what_went_unused_and_the_orphans_only(root):
    old, new = _entry("a = 1\n", age_days=40), _entry("b = 2\n", age_days=1)
    kernel = _entry("k = 3\n", "kernel", root / "kernels", age_days=40)
    orphan = root / "__pycache__" / "gone_0123456789abcdef.f-3.py311.nbi"
    orphan.write_bytes(b"x")
    stale_tmp = root / "step_0123456789abcdef.tmp42"
    stale_tmp.write_text("half")
    os.utime(stale_tmp, (time.time() - 40 * DAY,) * 2)
    foreign = root / "notes.txt"
    foreign.write_text("mine")

    removed, size = cache.prune(30)
    assert removed == 2 and size == 2 * (len("a = 1\n") + 200) + 1
    remaining = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert remaining == sorted(
        ["notes.txt", new.name, f"__pycache__/{new.stem}.f-3.py311.nbi", f"__pycache__/{new.stem}.f-3.py311.1.nbc"]
    )
    assert not old.exists() and not kernel.exists() and not orphan.exists() and not stale_tmp.exists()


def test_writing_a_new_file_prunes_once_a_process(root, monkeypatch):
    old = _entry("a = 1\n", age_days=40)
    monkeypatch.setattr(cache, "_pruned_this_process", False)
    write_source("b = 2\n", "step")
    assert not old.exists()
    again = _entry("c = 3\n", age_days=40)
    write_source("d = 4\n", "step")
    assert again.exists()


def test_cli_shows_prunes_and_clears(root, capsys):
    _entry("a = 1\n", age_days=10)
    _entry("k = 3\n", "kernel", root / "kernels", age_days=2)
    (root / "notes.txt").write_text("mine")
    (root / "thread_choices.json").write_text("{}")  # the thread tuner's (runtime/threads.py): cleared too
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert f"{root}: 1 steps and 1 shared kernels" in out and "10.0 days ago" in out
    assert main(["cache", "--prune", "5"]) == 0
    assert "removed 1 steps and kernels" in capsys.readouterr().out
    assert main(["cache", "--clear"]) == 0
    out = capsys.readouterr().out
    assert "removed 1 steps and kernels" in out and "0 steps and 0 shared kernels" in out
    assert [p.name for p in root.rglob("*") if p.is_file()] == ["notes.txt"]
    assert main(["cache", "--prune", "-1"]) == 2
    assert "--prune takes a number of days" in capsys.readouterr().err


def test_a_model_compiles_and_trains_again_after_a_clear(root):
    x, y = np.zeros((4, 64), np.float32), np.zeros(4, np.int32)
    for _ in range(2):
        model = kgraph.models.model_from_json(EXAMPLE.read_text(), seed=0)
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        assert np.isfinite(model.train_on_batch(x, y))
        assert cache.clear()[0] >= 2  # its train and test steps, and the kernels they share
        assert cache.entries() == []
