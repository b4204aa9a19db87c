"""Seeded fuzzing of what kgraph reads: mutated configs (JSON trees and YAML text) and mutated
.keras archives. Every case either loads or fails with kgraph's own error in one clean line,
within a time bound and, all together, a memory bound. Nothing here compiles or trains: the
config is built and the weights are read, which is where a hostile file does its damage."""

import copy
import io
import json
import random
import time
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import pytest
import yaml

import kgraph.models as models
from kgraph.frontend import ConfigError, build_model, parse_config_text
from kgraph.saving import FileFormatError, _saved_compile_arguments

FIXTURES = Path(__file__).parent / "fixtures"
CONFIGS = sorted((FIXTURES / "configs").glob("*.json")) + sorted((FIXTURES / "corpus").glob("*.json"))
ARCHIVE = FIXTURES / "files" / "tf_model.keras"

# values that broke something once: wrong types, zeros, huge and negative sizes, newlines
POOL = [
    0,
    -1,
    1,
    2,
    True,
    False,
    None,
    1.5,
    -0.5,
    "x",
    "a\nb",
    "",
    [],
    {},
    [None],
    [0],
    [1, "a"],
    10**12,
    -(10**9),
    float("nan"),
    float("inf"),
    [None, None],
    [None, 0],
    [None, True],
    [None, 1.5],
    [None, "3"],
    {"class_name": "Dense"},
    {"class_name": "x\ny", "config": {}},
    {"class_name": ["Dense"]},
    "same",
    "channels_first",
    [[1, 2]],
    "relu",
    [0, 0],
    [2**31, 2**31],
    {"seed": [1]},
]
YAML_BITS = [
    "!!binary aGk=",
    "!!set {a, b}",
    "2001-12-14",
    "&x",
    "*x",
    "!!python/object/apply:os.system ['true']",
    "!!python/tuple [1, 2]",
    "- ",
    ": ",
    "[",
    "]",
    "{",
    "}",
    "\n",
    "\t",
    "? ",
    "!!float",
    "'",
    '"',
    "|",
]


def _paths(obj, prefix=()):
    out = []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        out += _paths(v, prefix + (k,))
    return out


def mutate(config, rng):
    """One to three random edits: a value replaced by one of POOL, by a copy of its container,
    or a key deleted."""
    config = copy.deepcopy(config)
    paths = _paths(config)
    for _ in range(rng.choice([1, 1, 2, 3])):
        *head, last = rng.choice(paths)
        parent = config
        try:
            for k in head:
                parent = parent[k]
            r = rng.random()
            if r < 0.15 and isinstance(parent, dict):
                del parent[last]
            elif r < 0.2:
                parent[last] = copy.deepcopy(parent)
            else:
                parent[last] = copy.deepcopy(rng.choice(POOL))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier edit removed the path
    return config


def _expect_clean(fn, what):
    start = time.perf_counter()
    try:
        fn()
    except (ConfigError, FileFormatError) as e:
        message = str(e)
        assert "\n" not in message and "\r" not in message, f"{what}: two lines: {message!r}"
        assert len(message.split()) >= 3, f"{what}: a message with nothing to say: {message!r}"
    except Exception as e:  # noqa: BLE001 - the point: nothing else may come out
        raise AssertionError(f"{what}: {type(e).__name__} instead of a one-line error: {e}") from e
    assert time.perf_counter() - start < 2.0, f"{what} took {time.perf_counter() - start:.1f} s"


@pytest.fixture
def memory_bound():
    tracemalloc.start()
    yield
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 256 << 20, f"peak {peak / 1e6:.0f} MB"


def test_mutated_configs(memory_bound):
    rng = random.Random(21)
    bases = [json.loads(p.read_text()) for p in CONFIGS]
    for case in range(300):
        config = mutate(rng.choice(bases), rng)
        _expect_clean(lambda config=config: build_model(config), f"config case {case}")


def test_mutated_yaml(memory_bound):
    rng = random.Random(22)
    # the smaller fixtures: PyYAML is slow, the more so under tracemalloc
    texts = [yaml.safe_dump(json.loads(p.read_text())) for p in CONFIGS if p.stat().st_size < 6000]
    for case in range(120):
        text = rng.choice(texts)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text))
            if rng.random() < 0.3:
                text = text[:at] + text[at + rng.randint(1, 40) :]
            else:
                text = text[:at] + rng.choice(YAML_BITS) + " " + text[at:]
        _expect_clean(lambda text=text: build_model(parse_config_text(text, "yaml")), f"yaml case {case}")


def _archive(members):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def test_mutated_archives(tmp_path, memory_bound):
    rng = random.Random(23)
    raw = ARCHIVE.read_bytes()
    with zipfile.ZipFile(ARCHIVE) as z:
        members = {n: z.read(n) for n in z.namelist()}
    config = json.loads(members["config.json"])
    path = tmp_path / "m.keras"
    for case in range(60):
        kind = case % 4
        if kind == 0:  # bytes of the archive changed or cut
            data = bytearray(raw)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = bytes(data[: rng.randrange(len(data))] if rng.random() < 0.3 else data)
        elif kind == 1:  # a mutated config.json (its compile_config included)
            data = _archive({**members, "config.json": json.dumps(mutate(config, rng))})
        elif kind == 2:  # a member missing, or one that is not what its name says
            m = dict(members)
            victim = rng.choice(sorted(m))
            if rng.random() < 0.5:
                del m[victim]
            else:
                m[victim] = rng.choice([b"", b"\x00" * 100, b"[1, 2]", b"\x89HDF\r\n\x1a\n"])
            data = _archive(m)
        else:  # bytes of model.weights.h5 changed: HDF5 must fail cleanly too
            h5 = bytearray(members["model.weights.h5"])
            for _ in range(rng.randint(1, 4)):
                h5[rng.randrange(len(h5))] = rng.randrange(256)
            data = _archive({**members, "model.weights.h5": bytes(h5)})
        path.write_bytes(data)
        _expect_clean(lambda: models.load_model(path, compile=False), f"archive case {case}")


def test_mutated_compile_configs():
    # a saved compile_config kgraph cannot use loads the model uncompiled, with one warning line
    rng = random.Random(24)
    with zipfile.ZipFile(ARCHIVE) as z:
        section = json.loads(z.read("config.json"))["compile_config"]
    assert _saved_compile_arguments(section, "tf_model.keras")["optimizer"]  # the real one resolves
    for case in range(150):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _expect_clean(
                lambda: _saved_compile_arguments(mutate({"c": section}, rng).get("c"), "m.keras"),
                f"compile_config case {case}",
            )
        assert all("\n" not in str(w.message) for w in caught)
