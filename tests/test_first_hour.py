"""A Keras user's first hour: the public API from `import kgraph`, the Model API, models built
from their first data, and every mistake in what fit/evaluate/predict are given refused before
any step with one line that names it."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import kgraph
from kgraph.runtime.checks import DataError

ROOT = Path(__file__).parent.parent
EXAMPLE = str(ROOT / "examples" / "digits_mlp.json")
GUIDE = ROOT / "tests" / "fixtures" / "unbuilt" / "keras216_guide"  # the tf.keras guide's model, saved unbuilt


@pytest.fixture(scope="module")
def digits():
    from kgraph.datasets import digits

    return digits.load_data()


@pytest.fixture(scope="module")
def model():
    m = kgraph.models.load_model(EXAMPLE, seed=0)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return m


def test_import_kgraph_gives_the_public_modules():
    code = (
        "import kgraph, sys; assert 'kgraph.models' not in sys.modules; "
        "print([type(getattr(kgraph, n)).__name__ for n in "
        "('models', 'optimizers', 'losses', 'metrics', 'callbacks', 'distribute', 'datasets')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(["module"] * 7)
    with pytest.raises(AttributeError, match="public modules are"):
        kgraph.nonexistent  # noqa: B018


# ---------------------------------------------------------------------- the cases, by message


@pytest.mark.parametrize(
    "labels, message",
    [
        (lambda y: y + 1, r"go up to 10 but the model has 10 classes \(0-9\): are they 1-based"),
        (lambda y: y - 1, r"include -1 but the model has 10 classes"),
        (lambda y: np.where(y == 3, 2**30, y), r"go up to 1073741824 but the model has 10 classes"),
        (lambda y: y + 0.5, r"not a whole number"),
        (lambda y: np.where(y == 3, np.nan, y), r"non-finite label"),
        (lambda y: np.eye(10)[y], r"one-hot labels with sparse_categorical_crossentropy: use categorical_crossentropy"),
        (lambda y: y[:-1], r"x has 1437, y has 1436"),
    ],
)
def test_bad_labels_are_refused_before_any_step(model, digits, labels, message):
    (x, y), _ = digits
    before = model.get_weights()
    for call in (
        lambda: model.fit(x, labels(y), epochs=1, verbose=0),
        lambda: model.train_on_batch(x, labels(y)),
        lambda: model.evaluate(x, labels(y), verbose=0),
    ):
        with pytest.raises(DataError, match=message):
            call()
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_categorical_loss_with_integer_labels_names_the_sparse_loss(digits):
    (x, y), _ = digits
    m = kgraph.models.load_model(EXAMPLE, seed=0)
    m.compile(optimizer="sgd", loss="categorical_crossentropy")
    with pytest.raises(DataError, match="integer labels with categorical_crossentropy: use sparse_categorical"):
        m.fit(x, y, verbose=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"batch_size": -4}, "batch_size must be a positive integer, got -4"),
        ({"validation_split": 1.5}, r"validation_split must be in \[0, 1\), got 1.5"),
        ({"validation_split": -0.1}, r"validation_split must be in \[0, 1\)"),
        ({"verbose": 5}, "verbose must be 'auto', 0, 1 or 2"),
        ({"steps_per_epoch": 0}, "steps_per_epoch must be a positive integer"),
        ({"epochs": "3"}, "epochs must be an integer"),
    ],
)
def test_arguments_keras_refuses_are_refused(model, digits, kwargs, message):
    (x, y), _ = digits
    with pytest.raises(DataError, match=message):
        model.fit(x, y, **{"verbose": 0, **kwargs})


def test_what_keras_accepts_behaves_as_keras(model, digits):
    (x, y), _ = digits
    assert model.fit(x, y, epochs=0, verbose=0).history == {}  # Keras trains nothing
    history = model.fit(x.tolist()[:64], y.tolist()[:64], epochs=1, verbose=0)  # lists are arrays
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    "x, message",
    [
        (None, "x is None"),
        (np.zeros((0, 64)), r"has no samples \(shape \(0, 64\)\)"),
        (np.zeros((10, 8, 8)), r"reshape with x.reshape\(-1, 64\)"),
        (np.full((10, 64), np.inf), "non-finite values.*KGRAPH_ALLOW_NONFINITE=1"),
        (np.array([["a"] * 64] * 3), "must hold numbers, got an array of dtype <U1"),
        ([[1.0] * 64, [1.0] * 3], "not a rectangular array"),
        ({"image": np.zeros((3, 64))}, r"inputs \['pixels'\] are missing"),
    ],
)
def test_bad_inputs_are_refused_in_predict(model, x, message):
    with pytest.raises(DataError, match=message):
        model.predict(x, verbose=0)


def test_nonfinite_data_trains_when_asked(model, digits, monkeypatch):
    (x, y), _ = digits
    monkeypatch.setenv("KGRAPH_ALLOW_NONFINITE", "1")
    bad = x[:32].copy()
    bad[0, 0] = np.nan
    model.predict(bad, verbose=0)  # no error: Keras's behaviour, asked for


def test_token_ids_outside_the_embedding_are_refused_and_never_read():
    m = kgraph.models.model_from_config(_embedding_config(), seed=0)
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    ids = np.array([[1, 2, 3, 4]] * 8, np.float32)
    y = np.zeros(8, np.int32)
    m.fit(ids, y, verbose=0)
    for bad, shown in ((20, "got 20"), (-1, "got -1"), (10**9, "got 1000000000"), (np.nan, "non-finite id")):
        x = ids.copy()
        x[3, 2] = bad
        with pytest.raises(DataError, match=f"Embedding 'tokens_embed'.*{shown}|{shown}"):
            m.fit(x, y, verbose=0)
        with pytest.raises(DataError, match="Embedding"):
            m.predict(x, verbose=0)
    # below the checks, the kernels read zeros for an id outside the table (never out of bounds)
    from kgraph.kernels import cpu as cpu_kernels

    table = np.arange(6, dtype=np.float32).reshape(3, 2)
    out = np.full((4, 2), 7, np.float32)
    cpu_kernels.gather_rows(table, np.array([0, 3, -1, 2**31], np.float64), out)
    assert out.tolist() == [[0, 1], [0, 0], [0, 0], [0, 0]]
    grad = np.zeros((3, 2), np.float32)
    cpu_kernels.scatter_add_rows(np.ones((4, 2), np.float32), np.array([0, 3, -1, np.nan]), grad)
    assert grad.tolist() == [[1, 1], [0, 0], [0, 0]]
    # a float id is truncated toward 0, as Keras casts it: -0.3 reads (and adds to) row 0
    out = np.full((4, 2), 7, np.float32)
    cpu_kernels.gather_rows(table, np.array([-0.3, 2.9, -1.0, 3.0], np.float32), out)
    assert out.tolist() == [[0, 1], [4, 5], [0, 0], [0, 0]]
    grad = np.zeros((3, 2), np.float32)
    cpu_kernels.scatter_add_rows(np.ones((4, 2), np.float32), np.array([-0.3, 2.9, -1.0, 3.0], np.float32), grad)
    assert grad.tolist() == [[1, 1], [0, 0], [1, 1]]


def _embedding_config():
    return {
        "class_name": "Sequential",
        "config": {
            "name": "tokens",
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, 4], "name": "ids"}},
                {"class_name": "Embedding", "config": {"name": "tokens_embed", "input_dim": 20, "output_dim": 3}},
                {"class_name": "Flatten", "config": {"name": "flat"}},
                {"class_name": "Dense", "config": {"name": "out", "units": 2, "activation": "softmax"}},
            ],
        },
    }


# ---------------------------------------------------------------------- the Model API


def test_model_api_as_keras(model, digits):
    _, (xv, _) = digits
    assert [l.name for l in model.layers] == ["hidden", "dropout", "digit"]
    assert [l.class_name for l in model.layers] == ["Dense", "Dropout", "Dense"]
    assert model.get_layer("digit").output_shape == (None, 10)
    assert model.get_layer(index=-1).name == "digit"
    with pytest.raises(ValueError, match="no such layer: nope"):
        model.get_layer("nope")
    assert model.input_shape == (None, 64) and model.output_shape == (None, 10)
    assert [t.name for t in model.inputs] == ["pixels"] and model.outputs[0].shape == (None, 10)
    assert [w.path for w in model.weights] == ["hidden/kernel", "hidden/bias", "digit/kernel", "digit/bias"]
    assert len(model.trainable_weights) == 4 and model.non_trainable_weights == []
    np.testing.assert_array_equal(model(xv[:7]), model.predict(xv[:7], verbose=0))
    assert model.count_params() == sum(int(np.prod(w.shape)) for w in model.weights)


def test_a_layers_weights_read_and_write_through_the_model(model, digits):
    _, (xv, _) = digits
    layer = model.get_layer("digit")
    kernel, bias = layer.get_weights()
    layer.set_weights([np.zeros_like(kernel), np.arange(10, dtype=np.float32)])
    np.testing.assert_array_equal(model.get_weights()[3], np.arange(10))
    assert np.argmax(model.predict(xv[:5], verbose=0), axis=1).tolist() == [9] * 5  # bias alone decides
    with pytest.raises(ValueError, match="expects 2 weights, got 1"):
        layer.set_weights([kernel])
    model.weights[3].assign(bias)
    layer.set_weights([kernel, bias])
    np.testing.assert_array_equal(model.get_weights()[2], kernel)


def test_predict_takes_generators_of_batches(model, digits):
    _, (xv, _) = digits
    xv = xv[:20]
    expected = model.predict(xv, verbose=0)
    np.testing.assert_allclose(model.predict((xv[i : i + 8] for i in range(0, 20, 8)), verbose=0), expected, rtol=1e-6)
    np.testing.assert_allclose(
        model.predict(iter([(xv[:10], None), (xv[10:20], None)]), verbose=0), expected, rtol=1e-6
    )
    assert model.predict((xv[i : i + 8] for i in range(0, 20, 8)), steps=1, verbose=0).shape == (8, 10)


def test_save_weights_refuses_an_unknown_extension(model, tmp_path):
    with pytest.raises(ValueError, match=r"weight files end in \.weights\.h5"):
        model.save_weights(tmp_path / "w.txt")
    assert not (tmp_path / "w.txt").exists()


# ---------------------------------------------------------------------- models built from their data


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_the_keras_guides_unbuilt_model_builds_from_its_data(suffix, capsys):
    m = kgraph.models.load_model(GUIDE.with_suffix(suffix), seed=0)
    assert not m.built and m.get_weights() == [] and m.weights == []
    m.summary()
    assert "not built yet" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not built yet"):
        m.count_params()
    m.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).random((64, 32)).astype(np.float32)
    y = np.eye(10)[np.arange(64) % 10]
    history = m.fit(x, y, epochs=3, batch_size=16, verbose=0)
    assert m.built and m.input_shape == (None, 32)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert m.count_params() == 32 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    with pytest.raises(DataError, match=r"does not match the model's input shape \(None, 32\)"):
        m.predict(np.zeros((2, 31)), verbose=0)


def test_build_with_an_input_shape_and_predict_builds_too():
    m = kgraph.models.load_model(GUIDE.with_suffix(".json"), seed=0)
    m.build((None, 5))
    assert m.count_params() == 5 * 64 + 64 + 64 * 64 + 64 + 650
    fresh = kgraph.models.load_model(GUIDE.with_suffix(".json"), seed=0)
    assert fresh.predict(np.zeros((3, 7)), verbose=0).shape == (3, 10)


def test_the_cli_builds_an_unbuilt_config_from_the_data(tmp_path, capsys):
    from kgraph.cli import main

    guide, weights = str(GUIDE.with_suffix(".json")), str(tmp_path / "g.npz")
    assert main(["train", guide, "--epochs", "1", "--seed", "0", "--verbose", "0", "--save-weights", weights]) == 0
    assert main(["evaluate", guide, "--weights", weights, "--verbose", "0"]) == 0
    assert main(["inspect", guide, "--kind", "predict"]) == 2
    assert "--input-shape" in capsys.readouterr().err
    assert main(["inspect", guide, "--kind", "predict", "--input-shape", "64"]) == 0
    assert "Total params: 8,970" in capsys.readouterr().out


# ---------------------------------------------------------------------- the command line


def test_cli_refuses_before_any_work(tmp_path, capsys):
    from kgraph.cli import main

    cases = [
        (["evaluate", EXAMPLE], "needs trained weights: --weights FILE"),
        (["predict", EXAMPLE], "--random-weights"),
        (["predict", EXAMPLE, "--random-weights", "-o", str(tmp_path / "p.txt")], "must end in .npy"),
        (["train", EXAMPLE, "--save-weights", str(tmp_path / "no" / "w.npz")], "does not exist"),
        (["train", EXAMPLE, "--save-weights", str(tmp_path / "w.txt")], "must end in .npz"),
        (["train", EXAMPLE, "--strategy", "mirrored", "--replicas", "0"], "--replicas must be at least 1"),
        (["train", EXAMPLE, "--batch-size", "0"], "--batch-size must be at least 1"),
        (["train", EXAMPLE, "--validation-split", "1"], r"--validation-split must be in \[0, 1\)"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and __import__("re").search(message, err), (argv, err)


def test_predict_writes_exactly_its_path(tmp_path, capsys):
    from kgraph.cli import main

    out = tmp_path / "preds.npy"
    assert main(["predict", EXAMPLE, "--random-weights", "--seed", "0", "-o", str(out)]) == 0
    assert "validation rows" in capsys.readouterr().out
    assert np.load(out).shape == (360, 10) and sorted(p.name for p in tmp_path.iterdir()) == ["preds.npy"]


def test_help_shows_the_defaults_the_readme_quotes():
    from kgraph.cli import _parser

    text = _parser()._subparsers._group_actions[0].choices["train"].format_help()
    for default in ("(default: 5)", "(default: 32)", "(default: 0.0)", "(default: digits)"):
        assert default in " ".join(text.split()), default
    readme = (ROOT / "README.md").read_text()
    assert "[--epochs 5] [--batch-size 32]" in readme and "[--validation-split 0.0] [--seed N]" in readme


def test_mpi_without_mpi4py_is_one_line(monkeypatch, capsys):
    from kgraph.cli import main

    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if the extra were not installed
    assert main(["train", EXAMPLE, "--strategy", "mpi"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'kgraph[mpi]'" in err


def test_json_round_trip_keeps_the_config():
    m = kgraph.models.load_model(EXAMPLE)
    assert json.loads(m.to_json()) == json.loads(Path(EXAMPLE).read_text())


def test_summary_and_fit_say_what_a_step_costs(capsys):
    from kgraph.runtime.model import CompiledModel

    m = kgraph.models.load_model(EXAMPLE)
    m.summary()
    assert "Per sample: 9.47 KFLOP forward (a training step about 3x)" in capsys.readouterr().out  # 2*(64*64+64*10)
    # a VGG-like block on 224x224 images: tiny weights, hundreds of GFLOP a step
    conv = {
        "class_name": "Sequential",
        "config": {
            "name": "vgg_block",
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, 224, 224, 3], "name": "image"}},
                {
                    "class_name": "Conv2D",
                    "config": {"name": "c1", "filters": 64, "kernel_size": [3, 3], "padding": "same"},
                },
                {
                    "class_name": "Conv2D",
                    "config": {"name": "c2", "filters": 64, "kernel_size": [3, 3], "padding": "same"},
                },
                {"class_name": "GlobalAveragePooling2D", "config": {"name": "gap"}},
                {"class_name": "Dense", "config": {"name": "out", "units": 10}},
            ],
        },
    }
    big = kgraph.models.model_from_config(conv)
    big._announce_step_cost(CompiledModel.fit, None, None, batch_size=64)
    flop = 3 * 64 * 2 * 224 * 224 * 64 * (27 + 576 + 0) + 3 * 64 * 2 * 640
    assert f"about {flop / 1e12:.2g} TFLOP" in capsys.readouterr().out
    big._announce_step_cost(CompiledModel.fit, None, None, batch_size=64, verbose=0)
    assert capsys.readouterr().out == ""


def test_a_nonfinite_loss_is_reported_and_terminate_on_nan_keeps_finite_weights(digits):
    (x, y), _ = digits
    m = kgraph.models.load_model(EXAMPLE, seed=0)
    m.compile(optimizer=kgraph.optimizers.SGD(learning_rate=1e20), loss="sparse_categorical_crossentropy")
    with pytest.warns(RuntimeWarning, match=r"the loss is (nan|inf) at training step \d+"):
        m.fit(x[:256], y[:256], epochs=3, batch_size=32, verbose=0)
    m = kgraph.models.load_model(EXAMPLE, seed=0)
    m.compile(optimizer=kgraph.optimizers.SGD(learning_rate=1e20), loss="sparse_categorical_crossentropy")
    with pytest.warns(RuntimeWarning):
        m.fit(x[:256], y[:256], epochs=3, batch_size=32, verbose=0, callbacks=[kgraph.callbacks.TerminateOnNaN()])
    assert all(np.isfinite(w).all() for w in m.get_weights())


def test_freezing_a_layer_keeps_its_weights(digits):
    (x, y), _ = digits
    m = kgraph.models.load_model(EXAMPLE, seed=0)
    m.get_layer("hidden").trainable = False
    assert m.layers[0].trainable is False and len(m.trainable_weights) == 2
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    before = m.get_weights()
    m.fit(x[:128], y[:128], epochs=1, verbose=0)
    after = m.get_weights()
    assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert not np.array_equal(before[2], after[2])
    assert json.loads(m.to_json())["config"]["layers"][1]["config"]["trainable"] is False  # saved, as Keras
    with pytest.warns(UserWarning, match="call compile\\(\\) again"):
        m.trainable = True
    assert len(m.trainable_weights) == 4


def _frozen_base_with_batch_norm(frozen: bool) -> dict:
    """tests/fixtures/configs/k3_nested.json (Keras 3: a Dense, a nested Sequential "sub" of two
    Dense, a Dense) with a BatchNormalization between sub's Dense layers, saved as Keras 3 saves a
    base model set trainable=False (its own flag and every layer's inside it) when `frozen`."""
    config = json.loads((ROOT / "tests" / "fixtures" / "configs" / "k3_nested.json").read_text())
    sub = config["config"]["layers"][2]
    assert sub["config"]["name"] == "sub"
    bn = {"module": "keras.layers", "class_name": "BatchNormalization", "config": {"name": "bn", "momentum": 0.9}}
    sub["config"]["layers"].insert(2, bn)
    for layer in [sub, *sub["config"]["layers"][1:]]:  # (an InputLayer's config has no flag)
        layer["config"]["trainable"] = not frozen
    return config


def test_unfreezing_a_nested_model_trains_it_as_if_never_frozen():
    """The fine-tuning recipe: a base model saved frozen, then base.trainable = True and compile()
    again. Keras sets every layer inside (its BatchNormalization trains on the batch's statistics
    again and moves its moving ones): the steps are those of the model never frozen."""
    x = np.random.default_rng(0).normal(size=(32, 10)).astype(np.float32) * 3 + 1
    y = np.random.default_rng(1).normal(size=(32, 3)).astype(np.float32)
    fresh = kgraph.models.model_from_config(_frozen_base_with_batch_norm(False), seed=0)
    thawed = kgraph.models.model_from_config(_frozen_base_with_batch_norm(True), seed=0)
    thawed.set_weights(fresh.get_weights())
    base = thawed.get_layer("sub")
    assert [l.name for l in base.layers] == ["sub_dense_1", "bn", "sub_dense_2"]  # (a Sequential's: no InputLayer)
    assert base.get_layer("bn").trainable is False and base.get_layer(index=-1).name == "sub_dense_2"
    assert len(thawed.trainable_weights) == 4  # pre and post: the frozen base's weights train not
    base.trainable = True
    assert all(l.trainable for l in base.layers) and len(thawed.trainable_weights) == len(fresh.trainable_weights)
    for m in (fresh, thawed):
        m.compile(optimizer="sgd", loss="mse")
    moving_mean = fresh.get_layer("sub").get_layer("bn").get_weights()[2]
    losses = [m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history["loss"] for m in (fresh, thawed)]
    assert losses[0] == losses[1]
    for a, b in zip(fresh.get_weights(), thawed.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(thawed.get_layer("sub").get_layer("bn").get_weights()[2], moving_mean)
    saved = json.loads(thawed.to_json())["config"]["layers"][2]["config"]["layers"]
    assert all(layer["config"].get("trainable", True) for layer in saved)  # saved thawed, as Keras
    with pytest.warns(UserWarning, match=r"^the model: trainable changed after compile\(\)") as warned:
        thawed.trainable = False  # an InputLayer's config gets no flag either way (tf-keras refuses one)
    assert len(warned) == 1  # one for the model, not one per layer
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor again until the next compile(), as the guide's loops set many
        for layer in thawed.get_layer("sub").layers:
            layer.trainable = True
    saved = json.loads(thawed.to_json())["config"]["layers"]
    assert [l["class_name"] for l in saved if "trainable" not in l["config"]] == ["InputLayer"]
    assert ["trainable" in l["config"] for l in saved[2]["config"]["layers"]] == [False, True, True, True]
    assert thawed.layers[0].trainable is False and thawed.trainable is False


def test_a_nested_models_layers_freeze_one_by_one_and_summarize(capsys):
    """model.get_layer("sub").layers / get_layer / summary(), as Keras users reach into a base
    model; a layer inside a frozen base may be set trainable, and trains, as in Keras 3 (checked
    with Keras 3.15: 6 trainable weights)."""
    m = kgraph.models.model_from_config(_frozen_base_with_batch_norm(False), seed=0)
    base = m.get_layer("sub")
    bn = base.get_layer("bn")
    assert bn.count_params() == 32 and bn.output_shape == (None, 8) and len(bn.get_weights()) == 4
    with pytest.raises(AttributeError, match="Dense layer 'pre' is not a model"):
        m.get_layer("pre").layers  # noqa: B018
    base.get_layer("sub_dense_1").trainable = False
    assert len(m.trainable_weights) == 8 and base.trainable is True
    base.trainable = False
    bn.trainable = True
    # Keras 3 lists the weights of every trainable layer, a frozen base's included: pre, post and
    # the batch norm's gamma and beta (tf-keras 2 would list 4: it gathers none from a frozen model)
    assert len(m.trainable_weights) == 6 and base.trainable is False
    base.summary()
    out = capsys.readouterr().out
    assert 'Model: "sub"' in out and "bn (BatchNormalization)" in out and " Total params: 160" in out
    assert "sub_dense_2 (Dense)" in out and " Trainable params: 16" in out


def test_a_layer_frozen_after_the_model_built_from_its_data_saves_frozen():
    """build() (and fix_input_shapes()) declare the input shapes in a copy of the config, the
    caller's left as it was: the layers' flags set afterwards are saved too (a reviewer found them
    lost). The tf.keras guide's unbuilt Sequential, as Keras 2.1.6 saved it (a list of layers)."""
    config = json.loads(GUIDE.with_suffix(".json").read_text())
    original = json.dumps(config)
    m = kgraph.models.model_from_config(config, seed=0)
    m.build((None, 32))
    assert json.dumps(config) == original
    saved = json.loads(m.to_json())["config"]
    assert saved[0]["config"]["batch_input_shape"] == [None, 32]
    m.layers[1].trainable = False
    saved = json.loads(m.to_json())["config"]
    assert [layer["config"]["trainable"] for layer in saved] == [True, False, True]


def test_a_model_built_from_its_data_saves_and_loads_built(tmp_path):
    m = kgraph.models.load_model(GUIDE.with_suffix(".yaml"), seed=0)
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((40, 20)).astype(np.float32)
    m.fit(x, np.arange(40) % 10, epochs=1, verbose=0)
    for name in ("m.keras", "m.h5"):
        m.save(tmp_path / name)
        again = kgraph.models.load_model(tmp_path / name)
        np.testing.assert_array_equal(again.predict(x, verbose=0), m.predict(x, verbose=0))
    assert kgraph.models.model_from_json(m.to_json()).input_shape == (None, 20)


def test_more_mistakes_named(model, digits):
    (x, y), _ = digits
    with pytest.raises(DataError, match="leaves 0 to train on and 10 to validate"):
        model.fit(x[:10], y[:10], validation_split=0.95, verbose=0)
    with pytest.raises(DataError, match=r"the model has 1 input \(pixels\), got a list of 2 arrays"):
        model.fit([x, x], y, verbose=0)
    with pytest.raises(DataError, match="^validation_data: input 'pixels'"):
        model.fit(x, y, validation_data=(x[:, :3], y), verbose=0)
    guide = kgraph.models.load_model(GUIDE.with_suffix(".json"))
    with pytest.raises(ValueError, match=r"has no batch axis; give it as \(None, 20\)"):
        guide.build((20,))
    with pytest.raises(DataError, match=r"x.reshape\(-1, 1\)"):
        guide.predict(x[:, 0], verbose=0)
    assert model.metrics_names == ["loss", "accuracy"]


def test_channels_first_images_get_a_transpose_not_a_reshape():
    """Images with their channels first have the values a reshape would accept, scrambled: the
    error suggests the transpose that puts the axes in the model's order."""
    from kgraph.runtime.model import _reshape_hint

    config = (Path(__file__).parent / "fixtures" / "configs" / "k3_conv2d.json").read_text()
    m = kgraph.models.model_from_json(config, seed=0)  # input (None, 9, 9, 3)
    with pytest.raises(DataError, match=r"x\.transpose\(0, 2, 3, 1\).*a reshape would scramble"):
        m.predict(np.zeros((4, 3, 9, 9), np.float32), verbose=0)
    assert "transpose(0, 3, 1, 2)" in _reshape_hint((4, 9, 9, 3), (None, 3, 9, 9))  # and back
    assert "transpose(0, 2, 1)" in _reshape_hint((4, 5, 3), (None, 3, 5))
    assert "x.reshape(-1, 64)" in _reshape_hint((4, 8, 8), (None, 64))  # not a permutation: reshape
    assert "transpose" not in _reshape_hint((4, 5, 3), (None, None, 5))  # a free dimension
