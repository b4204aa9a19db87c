"""Hostile files: each attack of issue 21 reproduced, and refused with one line before it costs
time, memory or a byte read from outside the file."""

import io
import json
import shutil
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

import kgraph.models as models
from kgraph.frontend import ConfigError, build_model, parse_config_text
from kgraph.saving import FileFormatError

FILES = Path(__file__).parent / "fixtures" / "files"
CONFIGS = Path(__file__).parent / "fixtures" / "configs"


def _alias_bomb(levels=9) -> str:
    """The billion-laughs YAML: each level lists the one before nine times (9**9 strings)."""
    lines = ['  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for c in "bcdefghijklmnop"[: levels - 1]:
        lines.append(f"  {c}: &{c} [{', '.join([f'*{prev}'] * 9)}]")
        prev = c
    mlp = json.loads((CONFIGS / "k3_seq_mlp.json").read_text())
    return "class_name: Sequential\nconfig: " + json.dumps(mlp["config"]) + "\nunread:\n" + "\n".join(lines) + "\n"


def _bounded(fn, seconds=2.0, megabytes=64):
    """Run fn, which must raise; return the error, checking the time and memory it took. Timed
    apart from the memory's run: tracemalloc slows Python's allocations some thirtyfold (a deep
    YAML's 0.03 s parse took 1 s under it, and over 2 s on a loaded machine)."""
    start = time.perf_counter()
    with pytest.raises((ConfigError, FileFormatError)) as info:
        fn()
    assert time.perf_counter() - start < seconds
    tracemalloc.start()
    try:
        with pytest.raises((ConfigError, FileFormatError)):
            fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < megabytes << 20, f"peak {peak / 1e6:.0f} MB"
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# ---------------------------------------------------------------------- YAML and JSON (item 2)


def test_yaml_alias_bomb_in_an_unread_key_fails_fast():
    bomb = _alias_bomb()
    assert len(bomb.split("unread:")[1]) < 800  # the was 744 bytes
    message = _bounded(lambda: parse_config_text(bomb, "yaml"))
    assert "alias" in message and "KGRAPH_MAX_CONFIG_NODES" in message


def test_yaml_aliases_that_expand_little_still_load():
    # PyYAML writes an anchor for any list or dict that appears twice: such configs must load
    text = (
        "class_name: Sequential\nconfig:\n  name: s\n  layers:\n"
        "  - class_name: InputLayer\n    config: {name: x, batch_shape: &shape [null, 4]}\n"
        "  - class_name: Dense\n    config: {name: d, units: 3, shape_again: *shape}\n"
    )
    assert [w.shape for w in build_model(parse_config_text(text, "yaml")).weights] == [(4, 3), (3,)]


@pytest.mark.parametrize(
    "text, words",
    [
        ("a: &a [*a]", "contains itself"),
        ("a: !!binary aGVsbG8=", "bytes"),
        ("a: 2001-12-14", "date"),
        ("a: 2001-12-14t21:59:43.10-05:00", "datetime"),
        ("a: !!set {x, y}", "set"),
        ("1: 2", "not a string"),
        ("a: " + "[" * 5000 + "]" * 5000, "nested more than 200"),
        ("a:\n" + "".join(" " * i + "b:\n" for i in range(1, 400)), "nested more than 200"),
        ("[" * 100000, "nested"),
    ],
    ids=["recursive", "binary", "date", "timestamp", "set", "int key", "deep flow", "deep block", "deep json"],
)
def test_yaml_and_json_that_are_not_plain_data_are_one_line_errors(text, words):
    message = _bounded(lambda: parse_config_text(text))
    assert words in message


def test_config_depth_and_size_limits_are_configurable(monkeypatch):
    deep = "{\"class_name\": \"Sequential\", \"config\": " + "[" * 50 + "]" * 50 + "}"
    monkeypatch.setenv("KGRAPH_MAX_CONFIG_DEPTH", "20")
    assert "nested more than 20" in _bounded(lambda: parse_config_text(deep))
    monkeypatch.setenv("KGRAPH_MAX_CONFIG_BYTES", "100")
    text = (CONFIGS / "k3_seq_mlp.json").read_text()
    assert "KGRAPH_MAX_CONFIG_BYTES" in _bounded(lambda: parse_config_text(text))


def test_alias_bomb_on_the_command_line_is_one_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb())
    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "kgraph.cli", "inspect", str(path)], capture_output=True, text=True, timeout=60
    )
    assert time.perf_counter() - start < 30
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith("kgraph: error: ") and run.stderr.count("\n") == 1, run.stderr


# ---------------------------------------------------------------------- sizes of weights (item 9)


def _dense_on(features, units):
    return {
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {"class_name": "InputLayer", "config": {"name": "x", "batch_shape": [None, features]}},
                {"class_name": "Dense", "config": {"name": "d", "units": units}},
            ],
        },
    }


@pytest.mark.parametrize("features, units, size", [(10**6, 10**6, "3725.3 GiB"), (10**9, 10, "37.3 GiB")])
def test_huge_weights_are_refused_before_allocation(features, units, size):
    message = _bounded(lambda: build_model(_dense_on(features, units)), seconds=1, megabytes=8)
    assert size in message and "KGRAPH_MAX_BYTES" in message


def _values(shape, cls, cfg):
    """An input of `shape` and one layer: no weights at all."""
    layers = [{"class_name": "InputLayer", "config": {"name": "x", "batch_shape": shape}}]
    return {
        "class_name": "Sequential",
        "config": {"name": "s", "layers": layers + [{"class_name": cls, "config": cfg}]},
    }


@pytest.mark.parametrize(
    "config, words",
    [
        (
            _values([None, 10**30, 3], "Flatten", {"name": "f"}),
            "input 'x': one sample of shape (None, 1000000000000000000000000000000, 3)",
        ),
        (
            _values([None, 4], "RepeatVector", {"name": "r", "n": 10**9}),
            "layer 'r': one sample of shape (None, 1000000000, 4): 14.9 GiB",
        ),
    ],
    ids=["input 10**30 features", "RepeatVector 10**9"],
)
def test_huge_values_without_weights_are_refused_before_compiling(config, words):
    """Few weights, huge values: an OverflowError traceback, or a predict that filled a 16 GB
    arena for minutes."""
    message = _bounded(lambda: build_model(config), seconds=1, megabytes=8)
    assert words in message and "KGRAPH_MAX_BYTES" in message


def test_a_step_s_buffers_are_bounded_at_the_batch_size(monkeypatch):
    """What a batch of samples takes is checked when a step first runs at that batch size."""
    from kgraph.runtime.checks import DataError

    model = models.model_from_config(_dense_on(100, 100), seed=0)
    model.compile(optimizer="sgd", loss="mse")
    monkeypatch.setenv("KGRAPH_MAX_BYTES", str(200_000))  # the weights take 40400 bytes
    x = np.ones((1000, 100), np.float32)
    with pytest.raises(DataError, match=r"the predict step's values at batch size 1000: .* lower the batch size"):
        model.predict(x, batch_size=1000, verbose=0)
    assert model.predict(x[:10], batch_size=10, verbose=0).shape == (10, 100)


def test_weight_limit_is_configurable(monkeypatch):
    assert build_model(_dense_on(100, 100)).count_params() == 10100
    monkeypatch.setenv("KGRAPH_MAX_BYTES", "10000")
    assert "40400 bytes" in _bounded(lambda: build_model(_dense_on(100, 100)))


# ---------------------------------------------------------------------- archives and HDF5 (items 3, 4)


def _keras_with(tmp_path, edit, name="m.keras"):
    """tf_model.keras with its model.weights.h5 changed by edit(h5 file, tmp_path)."""
    with zipfile.ZipFile(FILES / "tf_model.keras") as z:
        members = {n: z.read(n) for n in z.namelist()}
    buf = io.BytesIO(members["model.weights.h5"])
    with h5py.File(buf, "r+") as f:
        edit(f, tmp_path)
    members["model.weights.h5"] = buf.getvalue()
    out = tmp_path / name
    with zipfile.ZipFile(out, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    return out


def _h5_with(tmp_path, edit, source="tf_model.h5", name="m.h5"):
    out = tmp_path / name
    shutil.copy(FILES / source, out)
    with h5py.File(out, "r+") as f:
        edit(f, tmp_path)
    return out


SECRET = np.arange(36, dtype="<f4") + 1000  # what a hostile dataset would pull in


def _secret_file(tmp_path):
    path = tmp_path / "secret.bin"
    path.write_bytes(SECRET.tobytes())
    return path


def _external_storage(f, tmp_path, at):
    del f[at]
    f.create_dataset(at, shape=(6, 6), dtype="<f4", external=[(str(_secret_file(tmp_path)), 0, SECRET.nbytes)])
    assert (f[at][()].ravel() == SECRET).all()  # the attack works on an unchecked read


def _virtual(f, tmp_path, at):
    src = tmp_path / "other.h5"
    with h5py.File(src, "w") as g:
        g["x"] = SECRET.reshape(6, 6)
    layout = h5py.VirtualLayout(shape=(6, 6), dtype="<f4")
    layout[:] = h5py.VirtualSource(str(src), "x", shape=(6, 6))
    del f[at]
    f.create_virtual_dataset(at, layout)


def _external_link(f, tmp_path, at):
    src = tmp_path / "other.h5"
    with h5py.File(src, "w") as g:
        g["x"] = SECRET.reshape(6, 6)
    del f[at]
    f[at] = h5py.ExternalLink(str(src), "/x")


def _huge(f, tmp_path, at):
    del f[at]
    f.create_dataset(at, shape=(10**6, 10**6), dtype="<f4", chunks=(1, 1024))  # a few KB on disk


ATTACKS = {
    "external storage": (_external_storage, "external file"),
    "virtual": (_virtual, "virtual"),
    "external link": (_external_link, "external link"),
    "huge shape": (_huge, "3725.3 GiB"),
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_hostile_keras_archive_is_refused(tmp_path, attack):
    edit, words = ATTACKS[attack]
    path = _keras_with(tmp_path, lambda f, t: edit(f, t, "layers/dense/vars/0"))
    message = _bounded(lambda: models.load_model(path, compile=False), seconds=10)
    assert words in message and str(path) in message


@pytest.mark.parametrize("attack", ATTACKS)
def test_hostile_legacy_h5_is_refused(tmp_path, attack):
    edit, words = ATTACKS[attack]
    path = _h5_with(tmp_path, lambda f, t: edit(f, t, "model_weights/hidden/hidden/kernel"))
    assert words in _bounded(lambda: models.load_model(path, compile=False), seconds=10)


@pytest.mark.parametrize("attack", ATTACKS)
def test_hostile_weights_file_is_refused(tmp_path, attack):
    edit, words = ATTACKS[attack]
    path = _h5_with(tmp_path, lambda f, t: edit(f, t, "layers/dense/vars/0"), "tf_model.weights.h5", "w.weights.h5")
    model = models.load_model(FILES / "tf_model.keras", compile=False)
    before = model.get_weights()
    assert words in _bounded(lambda: model.load_weights(path), seconds=10)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_a_hostile_optimizer_group_is_refused_even_uncompiled(tmp_path):
    path = _keras_with(tmp_path, lambda f, t: _external_storage(f, t, "optimizer/vars/2"))
    assert "external file" in _bounded(lambda: models.load_model(path, compile=False), seconds=10)


def test_the_weights_together_are_bounded(tmp_path, monkeypatch):
    # every dataset under the limit, all of them together over it
    monkeypatch.setenv("KGRAPH_MAX_BYTES", "400")
    path = _h5_with(tmp_path, lambda f, t: None, "tf_model.weights.h5", "w.weights.h5")
    config = json.loads(zipfile.ZipFile(FILES / "tf_model.keras").read("config.json"))
    model = models.model_from_config(config)
    assert "the datasets together" in _bounded(lambda: model.load_weights(path))


def _zip_bomb(tmp_path, inflated):
    out = tmp_path / "bomb.keras"
    with zipfile.ZipFile(FILES / "tf_model.keras") as z:
        config = z.read("config.json")
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", config)
        z.writestr("model.weights.h5", bytes(inflated))
    return out


def test_zip_bomb_member_is_refused_by_its_declared_size(tmp_path, monkeypatch):
    path = _zip_bomb(tmp_path, 64 << 20)
    assert path.stat().st_size < 200_000
    monkeypatch.setenv("KGRAPH_MAX_BYTES", str(16 << 20))
    message = _bounded(lambda: models.load_model(path, compile=False), megabytes=8)
    assert "model.weights.h5: 64.0 MiB" in message


def test_zip_bomb_member_under_the_limit_is_refused_by_what_the_model_could_fill(tmp_path):
    """At the default limit (8 GiB, a model's) a 6 GiB member was inflated whole into memory: the
    weights member is bounded by the model it belongs to, built from config.json first."""
    path = _zip_bomb(tmp_path, 64 << 20)
    message = _bounded(lambda: models.load_model(path, compile=False), megabytes=8)
    assert "model.weights.h5: 64.0 MiB" in message and "this model's weights and optimizer state" in message
    assert models.load_model(FILES / "tf_model.keras").count_params() == 95  # its own file still loads


def test_config_member_names_its_own_limit(tmp_path, monkeypatch):
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", "{}" + " " * 5000)
        z.writestr("model.weights.h5", b"")
    monkeypatch.setenv("KGRAPH_MAX_CONFIG_BYTES", "1000")
    assert "raise KGRAPH_MAX_CONFIG_BYTES" in _bounded(lambda: models.load_model(path))


def test_zip_bomb_member_that_understates_its_size_is_refused(tmp_path, monkeypatch):
    path = _zip_bomb(tmp_path, 64 << 20)
    data = bytearray(path.read_bytes())
    # rewrite the declared size, in the local header and the central directory, as 1000 bytes
    size = (64 << 20).to_bytes(4, "little")
    assert data.count(size) == 2
    data = data.replace(size, (1000).to_bytes(4, "little"))
    path.write_bytes(bytes(data))
    _bounded(lambda: models.load_model(path, compile=False), megabytes=8)


def test_config_json_that_is_not_an_object(tmp_path):
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", "[1, 2]")
        z.writestr("model.weights.h5", b"")
    assert "a model config is a mapping, got list" in _bounded(lambda: models.load_model(path))


# ---------------------------------------------------------------------- one-line config errors (item 8)


def _seq(*layers, shape=(None, 8, 8, 3)):
    return {
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {"class_name": "InputLayer", "config": {"name": "x", "batch_shape": list(shape)}},
                *({"class_name": cls, "config": {"name": f"l{i}", **cfg}} for i, (cls, cfg) in enumerate(layers)),
            ],
        },
    }


@pytest.mark.parametrize(
    "config, words",
    [
        (_seq(("Flatten", {}), shape=(None, "8", 8, 3)), "is not made of positive integers"),
        (_seq(("Flatten", {}), shape=(None, 8.5, 8, 3)), "is not made of positive integers"),
        (_seq(("Flatten", {}), shape=(None, True, 8, 3)), "is not made of positive integers"),
        (_seq(("Flatten", {}), ("Dense", {"units": True})), "units must be a positive integer, got True"),
        (_seq(("Conv2D", {"filters": 2, "kernel_size": 3, "strides": 0})), "strides must be 2 positive integers"),
        (_seq(("Conv2D", {"filters": 2, "kernel_size": 3, "groups": 0})), "groups must be a positive integer"),
        (_seq(("MaxPooling2D", {"pool_size": 0})), "pool_size must be 2 positive integers"),
        (_seq(("MaxPooling2D", {"pool_size": [2, 0]})), "pool_size must be 2 positive integers"),
        (_seq(("MaxPooling2D", {"pool_size": 2, "strides": 0})), "strides must be 2 positive integers"),
        (
            _seq(("Conv2D", {"filters": 2, "kernel_size": 3, "padding": "same", "dilation_rate": [2**63, 1]})),
            "dilation_rate (9223372036854775808, 1) is too large",
        ),
        (
            {
                "class_name": "Functional",
                "config": {
                    "name": "f",
                    "layers": [{"class_name": "InputLayer", "name": "x", "config": {"batch_shape": [None, 4]}}],
                    "input_layers": [["x", 0, 0]],
                    "output_layers": [],
                },
            },
            "model 'f' has no outputs",
        ),
        (_seq(("DepthwiseConv2D", {"kernel_size": 3, "depth_multiplier": 0})), "depth_multiplier must be a positive"),
        (_seq(("GroupNormalization", {"groups": 0})), "groups must be a positive integer"),
        (_seq(("Flatten", {}), ("RepeatVector", {"n": 0})), "n must be a positive integer"),
        (_seq(("Reshape", {"target_shape": ["a", 3]})), "target_shape must be positive integers"),
        (_seq(("Dense\nEvil", {})), r"Dense\nEvil"),
        (
            _seq(
                (
                    "Dense",
                    {
                        "units": 2,
                        "kernel_initializer": {"class_name": "VarianceScaling", "config": {"mode": "sideways"}},
                    },
                )
            ),
            "Dense layer 'l0'",
        ),
    ],
    ids=[
        "str dim",
        "float dim",
        "bool dim",
        "units true",
        "stride 0",
        "groups 0",
        "pool 0",
        "pool [2, 0]",
        "pool stride 0",
        "dilation 2**63",
        "no outputs",
        "depth_multiplier 0",
        "group norm 0",
        "repeat 0",
        "reshape str",
        "class name newline",
        "initializer",
    ],
)
def test_bad_configs_are_one_line_errors(config, words):
    assert words in _bounded(lambda: build_model(config))


def test_malformed_compile_config_loads_uncompiled_with_one_warning(tmp_path):
    with zipfile.ZipFile(FILES / "tf_model.keras") as z:
        members = {n: z.read(n) for n in z.namelist()}
    config = json.loads(members["config.json"])
    saved = config["compile_config"]
    for bad in [
        [1],
        {**saved, "optimizer": {"class_name": "Adam", "config": {"learning_rate": "x"}}},
        {**saved, "loss": 5},
        {**saved, "optimizer": {"class_name": ["Adam"]}},
    ]:
        path = tmp_path / "m.keras"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("config.json", json.dumps({**config, "compile_config": bad}))
            z.writestr("model.weights.h5", members["model.weights.h5"])
        with pytest.warns(UserWarning, match="loaded uncompiled") as caught:
            model = models.load_model(path)
        assert model.compile_args is None
        assert all("\n" not in str(w.message) for w in caught)


def test_npz_weights_bomb_is_refused_before_inflating(tmp_path, monkeypatch):
    path = tmp_path / "w.npz"
    np.savez_compressed(path, w0000=np.zeros(16 << 20, np.uint8))  # 16 MiB of zeros in a few KB
    assert path.stat().st_size < 100_000
    monkeypatch.setenv("KGRAPH_MAX_BYTES", str(1 << 20))
    from kgraph.runtime.files import read_npz_weights

    assert "the weights: 16.0 MiB" in _bounded(lambda: read_npz_weights(path), megabytes=4)
    monkeypatch.delenv("KGRAPH_MAX_BYTES")
    assert read_npz_weights(path)[0].shape == (16 << 20,)
