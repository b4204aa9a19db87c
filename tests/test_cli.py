"""The kgraph command: the README's main job, inspect, compile to a standalone trainer, bad input."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kgraph.cli import main

ROOT = Path(__file__).parent.parent
EXAMPLE = str(ROOT / "examples" / "digits_mlp.json")


def test_train_prints_progress_and_validation_accuracy(capsys, tmp_path):
    weights = tmp_path / "w.npz"
    assert main(["train", EXAMPLE, "--epochs", "3", "--seed", "0", "--save-weights", str(weights)]) == 0
    out = capsys.readouterr().out
    assert "Epoch 3/3" in out and "━" in out
    acc = float(out.strip().splitlines()[-1].split(":")[-1])
    assert acc > 0.8
    assert main(["evaluate", EXAMPLE, "--weights", str(weights), "--verbose", "0"]) == 0
    assert f"accuracy: {acc:.4f}" in capsys.readouterr().out


def test_inspect_shows_passes_fusion_and_plan(capsys, tmp_path):
    dot = tmp_path / "g.dot"
    assert main(["inspect", EXAMPLE, "--fusion", "--plan", "--dot", str(dot)]) == 0
    out = capsys.readouterr().out
    assert "Total params: 4,810" in out
    assert "fused   dense+bias+activation" in out and "matmul+bias_add+relu" in out
    assert "refused" in out and "memory plan at batch 32" in out and "lower bound" in out
    assert dot.read_text().startswith("digraph")
    assert main(["inspect", EXAMPLE, "--after", "autodiff"]) == 0
    assert "act_grad" in capsys.readouterr().out


def test_inspect_a_model_with_several_outputs(capsys):
    """The default metric (accuracy) goes to every output, as Keras 2 applied a list of metrics:
    a multi-output config inspects without --metrics."""
    config = str(ROOT / "tests" / "fixtures" / "configs" / "k3_multi_output.json")
    assert main(["inspect", config, "--fusion"]) == 0
    assert "fused   dense+bias+activation" in capsys.readouterr().out


def test_compiled_trainer_runs_without_frontend_or_passes(tmp_path, capsys):
    out = tmp_path / "trainer"
    assert main(["compile", EXAMPLE, "-o", str(out), "--seed", "0"]) == 0
    assert (out / "train.py").exists() and (out / "manifest.json").exists()
    # a fresh interpreter that refuses to import the frontend, the passes, the IR, networkx or Keras's callbacks
    guard = (
        "import sys, runpy\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith(('kgraph.frontend', 'kgraph.passes', 'kgraph.models', 'kgraph.callbacks',\n"
        "                            'ir', 'networkx')):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.argv = ['train.py', '--data', 'digits', '--epochs', '2', '--verbose', '0'] + sys.argv[1:]\n"
        f"runpy.run_path({str(out / 'train.py')!r}, run_name='__main__')\n"
    )
    weights = str(tmp_path / "w.npz")
    r = subprocess.run(
        [sys.executable, "-c", guard, "--save-weights", weights], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("final: ") and "val_accuracy: " in r.stdout
    # --weights starts from the saved ones: 0 epochs leave them as they are
    r = subprocess.run(
        [sys.executable, "-c", guard, "--weights", weights, "--epochs", "0", "--save-weights", weights + ".again.npz"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0 and r.stdout == "final: no epochs ran (--epochs 0)\n", r.stderr
    saved, again = np.load(weights), np.load(weights + ".again.npz")
    assert all(np.array_equal(saved[k], again[k]) for k in saved.files)
    # --seed: the same shuffling and dropout draws, so the same numbers
    seeded = [
        subprocess.run(
            [sys.executable, "-c", guard, "--seed", "3", "--epochs", "1"], capture_output=True, text=True, cwd=ROOT
        )
        for _ in range(2)
    ]
    assert seeded[0].returncode == 0 and seeded[0].stdout == seeded[1].stdout, seeded[0].stderr


def test_a_trainer_from_an_older_kgraph_says_to_export_it_again(tmp_path, capsys):
    """Its train.py called main(dir) alone, and its steps import kernels that have moved."""
    from kgraph.runtime.standalone import main as trainer_main

    assert trainer_main(str(tmp_path), ["--data", "digits"]) == 2
    assert "kgraph compile" in capsys.readouterr().err
    out = tmp_path / "trainer"
    assert main(["compile", EXAMPLE, "-o", str(out), "--seed", "0"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    for step in manifest[
        "steps"
    ].values():  # as an older kgraph wrote them (new names: no module imported yet has them)
        source = (out / step["module"]).read_text()
        step["module"] = "old_" + step["module"]
        (out / step["module"]).write_text(source.replace("from kgraph.kernels import", "from kgraph.codegen import"))
    (out / "manifest.json").write_text(json.dumps(manifest))
    from kgraph.optimizers import get

    assert trainer_main(str(out), ["--data", "digits", "--epochs", "1", "--verbose", "0"], get_optimizer=get) == 2
    err = capsys.readouterr().err
    assert "older kgraph" in err and len(err.strip().splitlines()) == 1


def test_a_trainer_whose_kernels_changed_since_says_to_export_it_again(tmp_path, capsys):
    """manifest.json records the kernels' fingerprint: a step's call of a kernel whose parameters
    changed since (an upgrade) fails with one line saying to export again, not a traceback; with
    the same kernels the error is a bug of its own and raises."""
    from kgraph.optimizers import get
    from kgraph.runtime.standalone import main as trainer_main

    out = tmp_path / "trainer"
    assert main(["compile", EXAMPLE, "-o", str(out), "--seed", "0"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    for step in manifest["steps"].values():  # every kernel call of the steps now has one argument too many
        source = (out / step["module"]).read_text().replace("K.matmul(", "K.matmul(0, ")
        step["module"] = "changed_" + step["module"]
        (out / step["module"]).write_text(source)
    (out / "manifest.json").write_text(json.dumps(manifest))
    argv = ["--data", "digits", "--epochs", "1", "--verbose", "0"]
    from numba.core.errors import NumbaError

    with pytest.raises((TypeError, NumbaError)):  # the same kernels: raised as it is
        trainer_main(str(out), argv, get_optimizer=get)
    manifest["kernels"] = "0123456789ab"  # an upgrade since
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert trainer_main(str(out), argv, get_optimizer=get) == 2
    err = capsys.readouterr().err
    assert "other kgraph kernels than the installed ones" in err.strip().splitlines()[-1] and "Traceback" not in err


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            '{"class_name": "Sequential", "config": {"name": "s", "layers": [{"class_name": "Conv3D", "config": '
            '{"name": "c"}}, {"class_name": "Lambda", "config": {"name": "lam", "function": "4wEAAAA="}}]}}',
            ["Conv3D", "'c'", "Lambda"],
        ),
        ("{not json", ["JSON"]),
        ("!!python/object/apply:os.system ['echo pwned']", ["python/object"]),
    ],
)
def test_bad_configs_exit_2_without_traceback(tmp_path, capsys, text, expected):
    path = tmp_path / ("m.yaml" if text.startswith("!!") else "m.json")
    path.write_text(text)
    assert main(["train", str(path), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    for word in expected:
        assert word in err


def test_missing_file_and_mismatched_data(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.json")]) == 2
    assert "nope.json" in capsys.readouterr().err
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((8, 63), np.float32), y=np.zeros(8, np.int32))
    assert main(["train", EXAMPLE, "--data", str(data), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "(8, 63)" in err and "(None, 64)" in err


def test_numbered_arrays_of_a_data_file_are_read_in_their_numbers_order(tmp_path, capsys):
    """x10 after x9, not after x1 (a string sort fed an 11-input model's inputs shifted); a gap in
    the numbers, and a file with no targets, are refused in one line, and predict needs no y."""
    from kgraph.runtime import data

    path = tmp_path / "d.npz"
    np.savez(path, y=np.zeros(2), **{f"x{i}": np.full((2, i + 1), i) for i in range(11)})
    xs, ys, _ = data.load(str(path))
    assert [x.shape[1] for x in xs] == list(range(1, 12)) and len(ys) == 1
    np.savez(path, x0=np.zeros((2, 1)), x2=np.zeros((2, 1)), y=np.zeros(2))
    with pytest.raises(data.DataFileError, match="arrays x0, x2: numbered arrays run from x0 without a gap"):
        data.load(str(path))
    np.savez(path, x00=np.zeros((2, 1)), x01=np.zeros((2, 2)), y=np.zeros(2))  # zero-padded numbers
    assert [x.shape[1] for x in data.load(str(path))[0]] == [1, 2]
    np.savez(path, x0=np.zeros((2, 1)), x00=np.zeros((2, 1)), y=np.zeros(2))
    with pytest.raises(data.DataFileError, match="x0, x00: .* or a number twice"):
        data.load(str(path))
    np.savez(path, x=np.zeros((8, 64), np.float32))
    assert main(["train", EXAMPLE, "--data", str(path), "--epochs", "1"]) == 2
    assert (
        "has no array named y (or y0, y1, ..., or y_<output name>), the targets; it holds ['x']"
        in capsys.readouterr().err
    )
    assert main(["predict", EXAMPLE, "--data", str(path), "--random-weights", "--verbose", "0"]) == 0


def test_console_script_help_is_complete():
    r = subprocess.run([sys.executable, "-m", "kgraph.cli", "--help"], capture_output=True, text=True)
    for cmd in ("inspect", "compile", "train", "evaluate", "predict", "bench", "cache"):
        assert cmd in r.stdout
    r = subprocess.run([sys.executable, "-m", "kgraph.cli", "train", "--help"], capture_output=True, text=True)
    for flag in (
        "--data",
        "--optimizer",
        "--loss",
        "--metrics",
        "--epochs",
        "--batch-size",
        "--validation-split",
        "--seed",
        "--save-weights",
    ):
        assert flag in r.stdout


def test_train_a_keras_archive_uses_its_saved_compile_arguments(tmp_path, capsys):
    files = ROOT / "tests" / "fixtures" / "files"
    io = np.load(files / "tf_model_io.npz")
    data = tmp_path / "d.npz"
    np.savez(data, x=io["x"], y=io["y"])
    assert (
        main(
            [
                "train",
                str(files / "tf_model.keras"),
                "--data",
                str(data),
                "--epochs",
                "2",
                "--batch-size",
                "4",
                "--save-weights",
                str(tmp_path / "w.weights.h5"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "accuracy" in out and (tmp_path / "w.weights.h5").exists()


def test_a_nan_loss_is_one_warning_line_with_its_step(tmp_path):
    """Issue 21: the warning printed as Python's two lines (a source path, then the code line)."""
    model = {
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {"class_name": "InputLayer", "config": {"name": "x", "batch_shape": [None, 4]}},
                {"class_name": "Dense", "config": {"name": "d", "units": 1}},
            ],
        },
    }
    (tmp_path / "m.json").write_text(json.dumps(model))
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32) * 1e3
    np.savez(tmp_path / "d.npz", x=x, y=np.ones((32, 1), np.float32))
    argv = ["train", "m.json", "--data", "d.npz", "--loss", "mse", "--optimizer", "sgd", "--learning-rate", "1e6"]
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "kgraph.cli",
            *argv,
            "--epochs",
            "3",
            "--batch-size",
            "4",
            "--seed",
            "0",
            "--verbose",
            "0",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = [line for line in r.stderr.splitlines() if "loss" in line]  # not Numba's notes at NUMBA_OPT=0
    assert r.returncode == 0 and len(lines) == 1, r.stderr
    assert re.fullmatch(r"kgraph: warning: the loss is (nan|inf) at training step \d+: .*TerminateOnNaN\(\)", lines[0])


@pytest.mark.parametrize(
    "example,default,other",
    [("lstm_text_classifier.json", "digits", "reviews"), ("digits_mlp.json", "reviews", "digits")],
)
def test_a_bundled_dataset_the_model_cannot_take_names_the_one_to_give(capsys, example, default, other):
    # the README's LSTM example trained without --data meets the default digits first
    args = ["train", str(ROOT / "examples" / example), "--epochs", "1"]
    assert main(args + (["--data", default] if default != "digits" else [])) == 2
    err = capsys.readouterr().err
    assert f"--data {default}" in err and f"give --data {other}" in err and "does not match" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_predict_writes_one_array_per_output_to_an_npz(tmp_path, capsys):
    """-o .npz: one array per output, by its key in a dict of outputs; an .npy of outputs of
    different shapes is refused in one line (np.stack would fail, a pickled dict is unreadable)."""
    from test_models import _dict_outputs_config

    model = tmp_path / "m.json"
    model.write_text(json.dumps(_dict_outputs_config()))
    np.savez(tmp_path / "d.npz", x=np.random.RandomState(0).rand(5, 4).astype(np.float32))
    argv = ["predict", str(model), "--data", str(tmp_path / "d.npz"), "--random-weights", "--verbose", "0"]
    assert main([*argv, "-o", str(tmp_path / "p.npz")]) == 0
    with np.load(tmp_path / "p.npz") as p:
        assert {k: p[k].shape for k in p.files} == {"zeta": (5, 3), "alpha": (5, 1)}
    capsys.readouterr()
    assert main([*argv, "-o", str(tmp_path / "p.npy")]) == 2
    assert "different shapes (zeta (5, 3), alpha (5, 1)): give an .npz" in capsys.readouterr().err


def test_a_data_file_may_name_its_arrays_by_input_and_output(tmp_path, capsys):
    """x_<input name> and y_<output key or name> (x_val_..., y_val_...) train as the numbered
    arrays do, with a loss per output (--loss key=loss,...); an array naming no input or output,
    a --loss list that names no outputs or one output twice are refused in one line. A file with
    x and y may hold other x_ and y_ arrays (x_test), as it always could."""
    from test_models import _dict_outputs_config

    model = tmp_path / "m.json"
    model.write_text(json.dumps(_dict_outputs_config()))
    rng = np.random.RandomState(0)
    x, zeta, alpha = rng.rand(40, 4).astype(np.float32), rng.randint(0, 3, 40), rng.rand(40, 1).astype(np.float32)
    val = {"x_val_x": x[:8], "y_val_zeta": zeta[:8], "y_val_alpha": alpha[:8]}
    np.savez(tmp_path / "named.npz", x_x=x, y_zeta=zeta, y_alpha=alpha, **val)
    # numbered targets run in the outputs' order: the sorted keys (alpha, zeta)
    np.savez(tmp_path / "numbered.npz", x=x, y0=alpha, y1=zeta, x_val=x[:8], y_val0=alpha[:8], y_val1=zeta[:8])
    flags = ["--loss", "zeta=sparse_categorical_crossentropy,alpha=mse", "--metrics", "zeta=accuracy"]
    finals = []
    for name in ("named", "numbered"):
        argv = ["train", str(model), "--data", str(tmp_path / f"{name}.npz"), "--epochs", "2", "--seed", "0"]
        assert main([*argv, "--verbose", "0", *flags]) == 0
        finals.append([line for line in capsys.readouterr().out.splitlines() if line.startswith("final:")])
    assert finals[0] == finals[1] and "val_zeta_accuracy" in finals[0][0] and "alpha_loss" in finals[0][0]

    np.savez(tmp_path / "extra.npz", x=x, y0=alpha, y1=zeta, x_test=x[:4], y_test=zeta[:4])
    assert main(["train", str(model), "--data", str(tmp_path / "extra.npz"), "--epochs", "1", *flags[:2]]) == 0
    np.savez(tmp_path / "typo.npz", x_x=x, x_y=x, y_zeta=zeta, y_alpha=alpha)
    np.savez(tmp_path / "typo_y.npz", x_x=x, y_zeta=zeta, y_alpah=alpha)
    for data, loss, expected in (
        ("typo", flags[1], "has arrays x_y for inputs the model does not have; its inputs are ['x']"),
        ("typo_y", flags[1], "has arrays y_alpah for outputs the model does not have; its outputs are ['alpha', "),
        ("named", "zeta=mse,mae", "name every entry's output (output=name), or none"),
        ("named", "mse,mae", "give one loss, or one per output as name=loss,name=loss"),
        ("named", "zeta=mse,zeta=mae,alpha=mse", "outputs ['zeta'] are given more than one loss"),
    ):
        argv = ["train", str(model), "--data", str(tmp_path / f"{data}.npz"), "--epochs", "1", "--loss", loss]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1, err


def test_a_run_saved_with_save_model_resumes_as_the_straight_run(tmp_path, capsys):
    """--save-model keeps the weights, the optimizer's state and the random streams: `kgraph train
    FILE --initial-epoch 2 --epochs 1` ends where a seeded 3-epoch run ends, numbering its epoch 3."""
    run = str(tmp_path / "run.keras")
    assert main(["train", EXAMPLE, "--epochs", "3", "--seed", "1", "--verbose", "0"]) == 0
    straight = capsys.readouterr().out.splitlines()[-2]
    assert main(["train", EXAMPLE, "--epochs", "2", "--seed", "1", "--verbose", "0", "--save-model", run]) == 0
    assert f"to {run}" in capsys.readouterr().out
    assert main(["train", run, "--initial-epoch", "2", "--epochs", "1", "--verbose", "1"]) == 0
    out = capsys.readouterr().out
    assert "Epoch 3/3" in out and straight.startswith("final:") and out.splitlines()[-2] == straight
    assert main(["train", EXAMPLE, "--learning-rate", "-1"]) == 2
    assert "--learning-rate must be a positive number, got -1.0" in capsys.readouterr().err


def test_a_loss_for_some_outputs_reads_numbered_targets_one_per_output(tmp_path, capsys):
    """y0, y1 are the targets of outputs 0 and 1 (the sorted keys alpha, zeta); with a loss for
    zeta alone, y0 is unread, as Keras reads a list of targets, where they were stacked into one
    array. Without --metrics, accuracy goes to the crossentropy's output only."""
    from test_models import _dict_outputs_config

    model = tmp_path / "m.json"
    model.write_text(json.dumps(_dict_outputs_config()))
    rng = np.random.RandomState(0)
    x, zeta, alpha = rng.rand(40, 4).astype(np.float32), rng.randint(0, 3, 40), rng.rand(40, 1).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y0=alpha, y1=zeta)
    argv = ["train", str(model), "--data", str(tmp_path / "d.npz"), "--epochs", "1", "--verbose", "0"]
    with pytest.warns(UserWarning, match="Gradients do not exist for weights"):  # alpha's own weights
        assert main([*argv, "--loss", "zeta=sparse_categorical_crossentropy"]) == 0
    assert "final: loss: " in capsys.readouterr().out
    assert main([*argv, "--loss", "zeta=sparse_categorical_crossentropy,alpha=mse"]) == 0
    final = capsys.readouterr().out.splitlines()[-1]
    assert "zeta_accuracy" in final and "alpha_accuracy" not in final


def test_a_trainer_exported_over_another_leaves_none_of_its_steps(tmp_path, capsys):
    """kgraph compile -o DIR over an earlier export of another model: the earlier model's step
    files (those its manifest listed) go, a file of the user's stays."""
    out = tmp_path / "trainer"
    assert main(["compile", EXAMPLE, "-o", str(out)]) == 0
    first = {p.name for p in out.glob("*.py")} - {"train.py"}
    (out / "notes.txt").write_text("mine")
    lstm = str(Path(EXAMPLE).parent / "lstm_text_classifier.json")
    assert main(["compile", lstm, "-o", str(out), "--input-shape", "80"]) == 0
    steps = {p.name for p in out.glob("*.py")} - {"train.py"}
    assert first and steps and not first & steps, (first, steps)
    assert (out / "notes.txt").read_text() == "mine"
