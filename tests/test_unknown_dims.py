"""Inputs that leave dimensions to the data (issue 22): a [None, None] token model and a fully
convolutional [None, None, None, 3] net against TensorFlow's fixtures (tools/make_shape_fixtures.py),
a step compiled once per input shape (counted), weights and optimizer slots shared across shapes,
the bounded cache, summary()'s None, saving, and the CLI's --input-shape."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import kgraph.models as models_mod
from kgraph import optimizers
from kgraph.cli import main
from kgraph.frontend import ConfigError, build_model
from kgraph.models import load_model, model_from_config
from kgraph.runtime.checks import DataError

FIXTURES = Path(__file__).parent / "fixtures" / "shapes"
CASES = ("tokens", "fcn", "lstm")


def _fixture(case):
    data = np.load(FIXTURES / f"{case}.npz")
    model = load_model(FIXTURES / f"{case}.json")
    model.set_weights([data[f"w_{i}"] for i in range(len(model.weights))])
    return model, data


@pytest.fixture
def compiles(monkeypatch):
    """The names of the steps compiled to code (kgraph.models.generate_cpu's calls), in order."""
    seen = []
    build = models_mod.Model._build

    def counting(self, kind, *args, **kwargs):
        manifest = build(self, kind, *args, **kwargs)
        seen.append(args[3] if len(args) > 3 else kwargs.get("name") or kind)
        return manifest

    monkeypatch.setattr(models_mod.Model, "_build", counting)
    return seen


@pytest.mark.parametrize("case", CASES)
def test_predictions_on_two_shapes_match_tensorflow(case):
    model, data = _fixture(case)
    for s in "ab":
        np.testing.assert_allclose(model.predict(data[f"x{s}"], verbose=0), data[f"pred_{s}"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model.predict_on_batch(data[f"x{s}"]), data[f"pred_{s}"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_training_across_shapes_continues_the_same_weights_and_slots(case, compiles):
    """Steps on shape a, then b, then a again give TensorFlow's losses and weights: the second shape's
    step reads the first's weights and optimizer slots (momentum, Adam's moments), and back. Each
    shape compiles its step once."""
    model, data = _fixture(case)
    model.compile(optimizer=optimizers.get(json.loads(str(data["optimizer"]))), loss="sparse_categorical_crossentropy")
    losses = [model.train_on_batch(data[f"x{s}"], data[f"y{s}"]) for s in "aba"]
    np.testing.assert_allclose(losses, data["loss"], rtol=1e-5)
    for i, w in enumerate(model.get_weights()):
        np.testing.assert_allclose(w, data[f"w_after_{i}"], rtol=1e-4, atol=1e-6)
    assert sorted(compiles) == sorted({f"train@{'x'.join(map(str, data[f'x{s}'].shape[1:]))}" for s in "ab"})
    assert model.optimizer.iterations == 3


@pytest.mark.parametrize("case", CASES)
def test_summary_shows_unknown_dimensions_as_keras_does(case):
    model, data = _fixture(case)
    keras_rows = json.loads(str(data["summary"]))
    shapes = {info.name: list(info.output_shapes[-1]) for info in model.frontend.layers}
    for name, shape in keras_rows:
        assert shapes[name] == shape, name
    lines = []
    model.summary(print_fn=lines.append)
    assert any("(None, None" in line for line in lines)
    assert model.input_shape == tuple(keras_rows[0][1])
    assert model.output_shape == tuple(keras_rows[-1][1])


def _token_config(*layers, shape=(None, None)):
    return {
        "class_name": "Sequential",
        "config": {
            "name": "seq",
            "layers": [
                {"class_name": "InputLayer", "config": {"name": "in", "batch_shape": list(shape), "dtype": "int32"}},
                {"class_name": "Embedding", "config": {"name": "embedding", "input_dim": 12, "output_dim": 4}},
                *layers,
            ],
        },
        "keras_version": "3.15.1",
    }


DENSE = {"class_name": "Dense", "config": {"name": "dense", "units": 3, "activation": "softmax"}}
POOL = {"class_name": "GlobalAveragePooling1D", "config": {"name": "pool"}}


def test_a_layer_whose_weights_follow_an_unknown_dimension_is_refused_by_name():
    config = _token_config({"class_name": "Flatten", "config": {"name": "flatten"}}, DENSE)
    with pytest.raises(ConfigError, match=r"^Dense layer 'dense': its weights' shape depends on .*\(None, None\)"):
        build_model(config)
    build_model(_token_config(POOL, DENSE))  # pooled away first: fine


def _batches(lengths, rng, rows=6):
    """(x, y) batches of token ids padded to each batch's length, as a generator would give them."""
    out = []
    for n in lengths:
        x = rng.integers(0, 12, (rows, n)).astype(np.int32)
        out.append((x, (x[:, 0] % 3).astype(np.int32)))
    return out


def test_fit_on_batches_of_several_lengths_compiles_each_length_once(compiles):
    """A generator of batches of per-batch length: each length's step compiles once in a fit of two
    epochs, and fit computes what train_on_batch, batch after batch, computes on a twin model."""
    batches = _batches([5, 8, 5, 5, 8], np.random.default_rng(0))
    models = [model_from_config(_token_config(POOL, DENSE), seed=3) for _ in range(2)]
    for m in models:
        m.compile(optimizer=optimizers.SGD(0.5, momentum=0.9), loss="sparse_categorical_crossentropy")

    def generator():
        for _ in range(2):
            yield from batches

    history = models[0].fit(generator(), steps_per_epoch=len(batches), epochs=2, verbose=0)
    assert sorted(compiles) == ["train@5", "train@8"]
    losses = [models[1].train_on_batch(x, y) for _ in range(2) for x, y in batches]
    for a, b in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(history.history["loss"][-1], np.mean(losses[len(batches) :]), rtol=1e-5)
    assert losses[-1] < losses[0]
    models[0].evaluate(iter(batches), verbose=0)  # evaluate compiles its own steps, once a length
    assert sorted(c for c in compiles if not c.startswith("train")) == ["test@5", "test@8"]


def test_the_steps_of_the_least_recently_used_shapes_go_past_the_bound(compiles):
    model = model_from_config(_token_config(POOL, DENSE), seed=0)
    model.MAX_SHAPES = 2
    x = np.random.default_rng(1).integers(0, 12, (2, 9)).astype(np.int32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in (3, 4, 3, 5, 3, 4):  # 4 is the least recently used when 5 comes, 5 when 4 comes back
            model.predict(x[:, :n], verbose=0)
    assert compiles == ["predict@3", "predict@4", "predict@5", "predict@4"]
    assert sorted(k for k in model.executable.steps) == ["predict@3", "predict@4"]
    told = [str(w.message) for w in caught if "input shapes" in str(w.message)]
    assert len(told) == 1 and "compiled steps for 2 input shapes" in told[0] and "KGRAPH_MAX_SHAPES" in told[0]


def test_data_that_does_not_fit_the_declared_dimensions_is_one_line():
    model, data = _fixture("fcn")
    with pytest.raises(DataError, match=r"does not match the model's input shape \(None, None, None, 3\)"):
        model.predict(np.zeros((2, 9, 9, 4), np.float32), verbose=0)
    with pytest.raises(DataError, match=r"^inputs of shape \(None, 2, 2, 3\): .*conv_2"):
        model.predict(np.zeros((2, 2, 2, 3), np.float32), verbose=0)
    assert np.isfinite(model.predict(data["xa"], verbose=0)).all()  # the model still runs


def test_a_saved_model_with_unknown_dimensions_round_trips(tmp_path):
    model, data = _fixture("tokens")
    model.compile(optimizer=optimizers.SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy")
    model.train_on_batch(data["xa"], data["ya"])
    path = tmp_path / "tokens.keras"
    model.save(path)
    loaded = load_model(path)
    assert loaded.input_shape == (None, None)
    for x in (data["xa"], data["xb"]):
        np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    # the momentum came back too: the next step is the same in both
    steps = [m.train_on_batch(data["xb"], data["yb"]) for m in (model, loaded)]
    assert steps[0] == pytest.approx(steps[1], rel=1e-6)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_inspect_and_compile_take_input_shape_for_unknown_dimensions(tmp_path, capsys):
    config = str(FIXTURES / "tokens.json")
    assert main(["inspect", config]) == 2
    err = capsys.readouterr().err.strip()
    assert "--input-shape" in err and "(None, None)" in err and len(err.splitlines()) == 1
    assert main(["inspect", config, "--input-shape", "9", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "(None, 9, 6)" in out and "memory plan" in out
    assert main(["compile", str(FIXTURES / "fcn.json"), "-o", str(tmp_path / "out")]) == 2
    assert "--input-shape" in capsys.readouterr().err
    target = tmp_path / "trainer"
    assert main(["compile", str(FIXTURES / "fcn.json"), "-o", str(target), "--input-shape", "8,8,3"]) == 0
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["info"]["input_shapes"] == [[None, 8, 8, 3]]
    saved = json.loads((target / "model.json").read_text())
    assert [8, 8, 3] == next(l for l in saved["config"]["layers"] if l["class_name"] == "InputLayer")["config"][
        "batch_shape"
    ][1:]


def test_fixing_the_dimensions_keeps_the_weights_and_the_optimizer_state():
    """fix_input_shapes (the CLI's --input-shape) turns the model into one of that shape: the next
    step is the one the unfixed twin takes, and other shapes are refused."""
    (model, data), (twin, _) = _fixture("tokens"), _fixture("tokens")
    for m in (model, twin):
        m.compile(optimizer=optimizers.SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy")
        m.train_on_batch(data["xa"], data["ya"])
    model.fix_input_shapes((None, data["xb"].shape[1]))
    assert model.input_shape == (None, data["xb"].shape[1]) and not model.frontend.unknown_dims
    assert model.train_on_batch(data["xb"], data["yb"]) == pytest.approx(twin.train_on_batch(data["xb"], data["yb"]))
    assert model.train_on_batch(data["xb"], data["yb"]) == pytest.approx(twin.train_on_batch(data["xb"], data["yb"]))
    with pytest.raises(DataError, match="does not match the model's input shape"):
        model.predict(data["xa"], verbose=0)


def test_unknown_dimensions_run_on_one_cpu_process_so_far():
    model, _ = _fixture("fcn")
    with pytest.raises(NotImplementedError, match=r"unknown dimensions \(\(None, None, None, 3\)\).*device='cpu'"):
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", device="cuda")
    assert model.device == "cpu"


def test_fit_groups_the_steps_of_each_shape_as_it_groups_a_plain_train_step(monkeypatch):
    """fit runs several steps a call once a step's thread settings are timed (StepsPerCall): the
    steps per input shape ("train@5") are timed and grouped as a plain "train" step is. Counted,
    not timed: calls while a setting is timed run 1 step, the others MOST."""
    from kgraph.runtime.executable import Executable
    from kgraph.runtime.model import StepsPerCall

    monkeypatch.setattr(StepsPerCall, "PROBE_TARGET", 0.0)
    monkeypatch.setattr(StepsPerCall, "TARGET", 1e9)
    calls, run = [], Executable.run

    def counting(self, kind, *args, **kwargs):
        calls.append((kind, kwargs.get("steps", 1)))
        return run(self, kind, *args, **kwargs)

    monkeypatch.setattr(Executable, "run", counting)
    model = model_from_config(_token_config(POOL, DENSE), seed=0)
    model.compile(optimizer=optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    batches = 3 * StepsPerCall.MOST
    x, y = _batches([5], np.random.default_rng(2), rows=4 * batches)[0]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert {kind for kind, _ in calls} == {"train@5"}
    assert sum(steps for _, steps in calls) == batches
    assert max(steps for _, steps in calls) == StepsPerCall.MOST  # not one step a call, timing forever
    calls.clear()
    model.evaluate(x, y, batch_size=4, verbose=0)
    assert {kind for kind, _ in calls} == {"test@5"} and sum(s for _, s in calls) == batches
    assert max(steps for _, steps in calls) == StepsPerCall.MOST


def test_the_cost_of_a_step_is_told_at_the_data_shape_or_the_probe_shape(capsys):
    """fit's notice of a large step (_announce_step_cost) for a model of unknown length: counted at
    the arrays' length, or at the probe length (64) for batches it has not seen yet."""
    from kgraph.frontend.model import PROBE_SIZES
    from kgraph.runtime.model import CompiledModel

    lstm = {"class_name": "LSTM", "config": {"name": "lstm", "units": 16}}
    model = model_from_config(_token_config(lstm, DENSE), seed=0)
    model.LARGE_STEP_FLOP = 0  # every step is large here

    def flop(steps):  # a training step: 3x the forward GEMMs (input projection, recurrence, Dense) at batch 8
        return 3 * 8 * (2 * steps * 4 * 64 + 2 * steps * 16 * 64 + 2 * 16 * 3)

    for x, steps, where in [
        (np.zeros((8, 30), np.int32), 30, "of input shape (None, 30)"),
        (iter([]), PROBE_SIZES[0], "with the unknown dimensions at 64"),
    ]:
        model._announce_step_cost(CompiledModel.fit, x, None, batch_size=8)
        out = capsys.readouterr().out
        assert f"at batch 8 {where}" in out and f"about {flop(steps) / 1e12:.2g} TFLOP" in out


def _masked_token_config():
    config = _token_config(POOL, DENSE)
    config["config"]["layers"][1]["config"]["mask_zero"] = True  # GlobalAveragePooling1D then skips the padding
    return config


def test_a_masked_model_pads_batches_of_new_lengths_to_buckets(compiles):
    """Past EXACT_LENGTHS shapes, a batch of a new length is padded with 0 ids to the next power of two
    (at least 8): lengths 7, 9, 11 and 13 compile two steps, not four, and train exactly as a twin
    that compiles every length (the mask makes the padding change nothing)."""
    rng = np.random.default_rng(2)
    batches = [(x + (x == 0), y) for x, y in _batches([3, 4, 5, 6, 7, 9, 11, 13, 3, 9], rng)]  # ids from 1
    models = [model_from_config(_masked_token_config(), seed=4) for _ in range(2)]
    models[1].EXACT_LENGTHS = 100
    for m in models:
        m.compile(optimizer=optimizers.SGD(0.5, momentum=0.9), loss="sparse_categorical_crossentropy")
    losses = [[m.train_on_batch(x, y) for x, y in batches] for m in models]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    for a, b in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert models[0].pads_neutrally()
    assert compiles == [f"train@{n}" for n in (3, 4, 5, 6, 8, 16, 3, 4, 5, 6, 7, 9, 11, 13)]
    assert np.allclose(models[0].predict(batches[7][0], verbose=0), models[1].predict(batches[7][0], verbose=0))


def test_a_model_that_the_padding_would_change_compiles_each_length(compiles):
    """Without a mask the average over the steps reads the padding: no bucket, a step per length."""
    model = model_from_config(_token_config(POOL, DENSE), seed=0)
    x = np.random.default_rng(1).integers(1, 12, (2, 9)).astype(np.int32)
    for n in (3, 4, 5, 6, 7, 9):
        model.predict(x[:, :n], verbose=0)
    assert compiles == [f"predict@{n}" for n in (3, 4, 5, 6, 7, 9)] and not model.pads_neutrally()


@pytest.mark.filterwarnings("ignore:model 'seq' has compiled steps for 2 input shapes")
def test_two_replicas_train_unknown_dimensions_as_one_does(compiles):
    """Under MirroredStrategy each input shape's step serves both replicas (they share the steps):
    batches of two lengths, and one evicted and compiled again, give one replica's losses and
    weights, and the replicas stay identical."""
    import kgraph.distribute

    rng = np.random.default_rng(5)
    batches = [(x + (x == 0), y) for x, y in _batches([4, 6, 4, 7, 6], rng)]
    results = []
    for strategy in (kgraph.distribute.Strategy(), kgraph.distribute.MirroredStrategy(["cpu:0", "cpu:1"])):
        with strategy.scope():
            model = model_from_config(_masked_token_config(), seed=6)
            model.compile(optimizer=optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
        model.MAX_SHAPES = 2  # 6 goes when 7 comes, and compiles again when it comes back
        results.append(([model.train_on_batch(x, y) for x, y in batches], model.get_weights()))
    assert model.replicas is not None and model.replicas.num_replicas == 2
    model.replicas.check_identical()
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
    for a, b in zip(results[1][1], results[0][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert compiles == [f"train@{n}" for n in (4, 6, 7, 6)] * 2
