"""A corpus of generated bad inputs, thrown at every entry point (fit, evaluate, predict,
train_on_batch, test_on_batch, predict_on_batch, model(x), the CLI): each must end in kgraph's own
error with one clean line, raised by kgraph's code (never a traceback from NumPy or Numba), and
no step may run (the weights stay as they were)."""

import itertools
import traceback
from pathlib import Path

import numpy as np
import pytest

import kgraph
from kgraph.cli import main
from kgraph.runtime.checks import DataError

ROOT = Path(__file__).parent.parent
EXAMPLE = str(ROOT / "examples" / "digits_mlp.json")
N = 40
RNG = np.random.default_rng(7)
X = RNG.random((N, 64)).astype(np.float32)
Y = RNG.integers(0, 10, N)

BAD_X = {
    "None": None,
    "scalar": 3.0,
    "1-D": X[:, 0],
    "3-D": X.reshape(N, 8, 8),
    "63 features": X[:, :63],
    "strings": X.astype(str),
    "objects": np.array([object()] * N),
    "ragged lists": [[1.0] * 64, [1.0] * 3],
    "empty": X[:0],
    "NaN": np.where(X > 0.9, np.nan, X),
    "inf": np.where(X > 0.9, np.inf, X),
    "two arrays": [X, X],
    "wrong dict key": {"image": X},
    "complex": X.astype(np.complex64),
    "bytes": np.array([b"abc"] * N),
}
BAD_Y = {
    "None": None,
    "1-based": Y + 1,
    "negative": Y - 1,
    "2**30": np.where(Y == 3, 2**30, Y),
    "2**31": np.where(Y == 3, 2**31, Y).astype(np.int64),
    "fraction": Y + 0.25,
    "NaN": np.where(Y == 3, np.nan, Y),
    "one-hot": np.eye(10)[Y],
    "too short": Y[:-1],
    "too long": np.r_[Y, Y],
    "strings": Y.astype(str),
    "2-D columns": np.stack([Y, Y], 1),
    "inf": np.where(Y == 3, np.inf, Y),
    "-inf": np.where(Y == 3, -np.inf, Y),
    "empty": Y[:0],
    "wrong dict key": {"label": Y},
}
BAD_ARGS = [
    {"batch_size": 0},
    {"batch_size": -1},
    {"batch_size": 2.5},
    {"batch_size": "32"},
    {"batch_size": True},
    {"epochs": "3"},
    {"epochs": 1.5},
    {"epochs": None},
    {"validation_split": -0.1},
    {"validation_split": 1.0},
    {"validation_split": 2},
    {"validation_split": "0.1"},
    {"verbose": 3},
    {"verbose": "yes"},
    {"verbose": -1},
    {"steps_per_epoch": 0},
    {"steps_per_epoch": -2},
    {"validation_steps": 0},
    {"initial_epoch": -1},
    {"initial_epoch": 0.5},
    {"sample_weight": np.ones(N - 1)},
    {"sample_weight": np.full(N, np.nan)},
    {"sample_weight": np.ones((N, 3))},
    {"sample_weight": np.array(["a"] * N)},
    {"validation_data": (X,)},
    {"validation_data": (X, Y, Y, Y)},
    {"validation_data": (X[:, :5], Y)},
    {"validation_data": (X, Y + 1)},
    {"validation_data": 5},
    {"validation_data": (X, Y[:-3])},
]


@pytest.fixture(scope="module")
def model():
    m = kgraph.models.load_model(EXAMPLE, seed=0)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def _cases():
    calls = {
        "fit": lambda m, x, y, kw: m.fit(x, y, verbose=0, **kw),
        "evaluate": lambda m, x, y, kw: m.evaluate(x, y, verbose=0, **kw),
        "train_on_batch": lambda m, x, y, kw: m.train_on_batch(x, y, **kw),
        "test_on_batch": lambda m, x, y, kw: m.test_on_batch(x, y, **kw),
    }
    for (call, f), (name, x) in itertools.product(calls.items(), BAD_X.items()):
        yield f"{call}/x:{name}", lambda m, f=f, x=x: f(m, x, Y, {})
    for (call, f), (name, y) in itertools.product(calls.items(), BAD_Y.items()):
        yield f"{call}/y:{name}", lambda m, f=f, y=y: f(m, X, y, {})
    for name, x in BAD_X.items():
        yield f"predict/x:{name}", lambda m, x=x: m.predict(x, verbose=0)
        yield f"predict_on_batch/x:{name}", lambda m, x=x: m.predict_on_batch(x)
        yield f"call/x:{name}", lambda m, x=x: m(x)
    for kw in BAD_ARGS:
        yield f"fit/{kw}", lambda m, kw=kw: m.fit(X, Y, **{"verbose": 0, **kw})
    for kw in ({"batch_size": 0}, {"batch_size": -3}, {"verbose": 7}, {"steps": 0}):
        yield f"evaluate/{kw}", lambda m, kw=kw: m.evaluate(X, Y, **{"verbose": 0, **kw})
        yield f"predict/{kw}", lambda m, kw=kw: m.predict(X, **{"verbose": 0, **kw})
    for name, batch in (("not a tuple", X), ("1-tuple", (X,)), ("bad labels", (X, Y + 1)), ("bad x", (X[:, :3], Y))):
        yield f"fit/generator:{name}", lambda m, b=batch: m.fit(iter([b, b]), verbose=0)


CASES = list(_cases())


def test_the_corpus_is_large():
    assert len(CASES) >= 200


@pytest.mark.parametrize("name, case", CASES, ids=[name for name, _ in CASES])
def test_bad_input_is_one_clean_kgraph_error(model, name, case):
    before = model.get_weights()
    with pytest.raises((ValueError, TypeError, RuntimeError)) as info:
        case(model)
    _assert_clean(info.value, info.tb)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights())), "a step ran"


def _assert_clean(error, tb):
    message = str(error)
    assert message and "\n" not in message and len(message) < 400, message
    frames = traceback.extract_tb(tb)
    raised_in = frames[-1].filename
    assert "/kgraph/" in raised_in.replace("\\", "/"), f"raised in {raised_in}: {message}"


@pytest.fixture(scope="module")
def npz_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    files = {
        "labels out of range": {"x": X, "y": Y + 10},
        "lengths differ": {"x": X, "y": Y[:-5]},
        "features": {"x": X[:, :10], "y": Y},
        "strings": {"x": X.astype(str), "y": Y},
        "no y": {"x": X},
        "NaN": {"x": np.where(X > 0.5, np.nan, X), "y": Y},
        "empty": {"x": X[:0], "y": Y[:0]},
        "bad val": {"x": X, "y": Y, "x_val": X[:, :3], "y_val": Y},
    }
    paths = {}
    for name, arrays in files.items():
        paths[name] = folder / f"{name.replace(' ', '_')}.npz"
        np.savez(paths[name], **arrays)
    (folder / "garbage.npz").write_bytes(b"not a zip at all")
    paths["garbage"] = folder / "garbage.npz"
    np.save(folder / "x.npy", X)
    paths["npy"] = folder / "x.npy"
    np.savetxt(folder / "data.csv", np.column_stack([X, Y]), delimiter=",")
    paths["csv"] = folder / "data.csv"
    (folder / "cut.npz").write_bytes(paths["features"].read_bytes()[:200])
    paths["truncated"] = folder / "cut.npz"
    return paths


CLI_CASES = [
    ["train", EXAMPLE, "--batch-size", "0"],
    ["train", EXAMPLE, "--batch-size", "-5"],
    ["train", EXAMPLE, "--epochs", "-1"],
    ["train", EXAMPLE, "--validation-split", "1.5"],
    ["train", EXAMPLE, "--validation-split", "-1"],
    ["train", EXAMPLE, "--strategy", "mirrored", "--replicas", "0"],
    ["train", EXAMPLE, "--data", "missing.npz"],
    ["train", EXAMPLE, "--optimizer", "adamm"],
    ["train", EXAMPLE, "--loss", "nope"],
    ["train", EXAMPLE, "--metrics", "nope"],
    ["train", EXAMPLE, "--save-weights", "/nonexistent/w.npz"],
    ["train", EXAMPLE, "--save-weights", "w.csv"],
    ["train", EXAMPLE, "--learning-rate", "nan"],
    ["train", "missing.json"],
    ["train", "model.txt"],
    ["evaluate", EXAMPLE],
    ["evaluate", EXAMPLE, "--weights", "missing.npz"],
    ["predict", EXAMPLE],
    ["predict", EXAMPLE, "--random-weights", "-o", "p.csv"],
    ["predict", EXAMPLE, "--random-weights", "--batch-size", "0"],
    ["inspect", EXAMPLE, "--after", "nope"],
    ["inspect", EXAMPLE, "--batch-size", "0", "--plan"],
    ["compile", EXAMPLE, "-o", "/nonexistent/deeper/dir", "--batch-size", "0"],
    ["cache", "--prune", "-1"],
]
NPZ_CASES = [
    "labels out of range",
    "lengths differ",
    "features",
    "strings",
    "no y",
    "NaN",
    "empty",
    "bad val",
    "garbage",
    "npy",
    "csv",
    "truncated",
]


@pytest.mark.parametrize("argv", CLI_CASES, ids=[" ".join(a[:1] + a[2:]) for a in CLI_CASES])
def test_cli_bad_input_is_one_line_and_exit_2(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("kgraph: error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("name", NPZ_CASES)
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_cli_bad_data_files(name, command, npz_files, capsys):
    extra = ["--random-weights"] if command == "evaluate" else ["--epochs", "1"]
    assert main([command, EXAMPLE, "--data", str(npz_files[name]), "--verbose", "0", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kgraph: error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("name", ["npy", "csv", "garbage"])
def test_cli_data_that_is_not_an_npz_says_what_to_give(name, npz_files, capsys):
    """A tester's .npy read "'numpy.ndarray' object does not support the context manager
    protocol", and a CSV NumPy's hint to allow pickles."""
    assert main(["train", EXAMPLE, "--data", str(npz_files[name]), "--verbose", "0"]) == 2
    err = capsys.readouterr().err
    assert "give an .npz file holding x and y (numpy.savez(path, x=..., y=...))" in err
    assert "pickle" not in err and "context manager" not in err


def test_one_array_for_a_two_input_model_says_how_to_give_both():
    """A tester read "got a ndarray of 1 items" for the 8 samples of one array."""
    text = (Path(__file__).parent / "fixtures" / "configs" / "k3_two_input_concat.json").read_text()
    model = kgraph.models.model_from_json(text)
    x = np.zeros((8, 12), np.float32)
    with pytest.raises(DataError, match=r"2 inputs \(input_a, input_b\), got one array: give a list of 2"):
        model.predict(x, verbose=0)
    with pytest.raises(DataError, match=r"got a list of 1 array: give a list of 2 arrays in that order"):
        model.predict([x], verbose=0)
