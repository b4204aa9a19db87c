"""The Keras Model API end to end: fit on the bundled digits, evaluate, predict, weights, history."""

import json
from pathlib import Path

import numpy as np
import pytest

import kgraph
import kgraph.models
from kgraph import callbacks, optimizers
from kgraph.datasets import digits

EXAMPLE = Path(__file__).parent.parent / "examples" / "digits_mlp.json"


@pytest.fixture(scope="module")
def data():
    return digits.load_data()


def test_fit_on_digits_reaches_accuracy(data, capsys):
    (x, y), (xv, yv) = data
    model = kgraph.models.load_model(EXAMPLE, seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=10, batch_size=32, validation_data=(xv, yv), verbose=2)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["loss"]) == 10
    assert history.history["loss"][-1] < history.history["loss"][0] / 3
    assert history.history["val_accuracy"][-1] >= 0.93
    out = capsys.readouterr().out
    assert "Epoch 10/10" in out and "val_accuracy" in out

    loss, acc = model.evaluate(xv, yv, verbose=0)
    assert acc == pytest.approx(history.history["val_accuracy"][-1], abs=1e-6)
    assert loss == pytest.approx(history.history["val_loss"][-1], rel=1e-5)
    probs = model.predict(xv, verbose=0)
    assert probs.shape == (len(xv), 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert np.mean(np.argmax(probs, 1) == yv) == pytest.approx(acc)


def test_weights_round_trip_and_keras_order(tmp_path):
    model = kgraph.models.load_model(EXAMPLE, seed=0)
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(64, 64), (64,), (64, 10), (10,)]
    assert model.count_params() == sum(int(np.prod(s)) for s in shapes)
    ws = [np.full(s, i, np.float32) for i, s in enumerate(shapes)]
    model.set_weights(ws)
    model.save_weights(tmp_path / "w.npz")
    other = kgraph.models.load_model(EXAMPLE, seed=1)
    other.load_weights(tmp_path / "w.npz")
    for a, b in zip(other.get_weights(), ws):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"\(64, 64\)"):
        model.set_weights([np.zeros((3, 3))] + ws[1:])


def test_seeded_models_are_reproducible(data):
    (x, y), _ = data
    runs = []
    for _ in range(2):
        model = kgraph.models.load_model(EXAMPLE, seed=3)
        model.compile(
            optimizer=optimizers.SGD(learning_rate=0.05, momentum=0.9), loss="sparse_categorical_crossentropy"
        )
        runs.append(model.fit(x[:256], y[:256], epochs=2, batch_size=64, verbose=0).history["loss"])
    assert runs[0] == runs[1]


def test_a_model_holds_one_copy_of_its_seeded_initial_weights():
    from kgraph.frontend import build_model

    config = json.loads(EXAMPLE.read_text())
    model = kgraph.models.model_from_config(config, seed=3)
    drawn = [w.value for w in build_model(config, seed=3).weights]
    assert all(w.value is None for w in model.frontend.weights)  # the executable's copy is the only one
    for a, b in zip(model.get_weights(), drawn):
        assert a.dtype == np.float32
        np.testing.assert_array_equal(a, b)


def test_auto_device_asks_numba_only_where_a_gpu_can_be(monkeypatch):
    import numba
    from numba import cuda

    from kgraph.models import _cuda_available

    monkeypatch.setattr(cuda, "is_available", lambda: True)  # numba would say yes...
    monkeypatch.setattr("sys.platform", "linux")
    monkeypatch.setattr(numba.config, "ENABLE_CUDASIM", 0)
    monkeypatch.setattr("os.path.exists", lambda path: False)  # ...but there is no NVIDIA driver
    assert _cuda_available() is False
    monkeypatch.setattr("os.path.exists", lambda path: path == "/dev/nvidiactl")
    assert _cuda_available() is True
    monkeypatch.setattr("os.path.exists", lambda path: False)
    monkeypatch.setattr(numba.config, "ENABLE_CUDASIM", 1)  # the simulator counts, as in numba.cuda
    assert _cuda_available() is True


def test_train_on_batch_and_callbacks(data):
    (x, y), (xv, yv) = data
    model = kgraph.models.model_from_json(EXAMPLE.read_text(), seed=0)
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, acc = model.train_on_batch(x[:32], y[:32])
    assert np.isfinite(loss) and 0 <= acc <= 1
    seen = []
    cb = callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append((epoch, sorted(logs))))
    stopper = callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)  # stops after 2 epochs
    model.fit(x, y, epochs=5, validation_split=0.25, verbose=0, callbacks=[cb, stopper])
    assert [e for e, _ in seen] == [0, 1]
    assert seen[0][1] == ["accuracy", "loss", "val_accuracy", "val_loss"]


def test_partial_last_batch_and_batch_size_change(data):
    (x, y), _ = data
    model = kgraph.models.load_model(EXAMPLE, seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x[:100], y[:100], batch_size=32, epochs=1, verbose=0)  # 3 full batches and one of 4
    a = model.predict(x[:50], batch_size=7, verbose=0)
    b = model.predict(x[:50], batch_size=50, verbose=0)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_yaml_and_json_give_the_same_model():
    import yaml

    config = json.loads(EXAMPLE.read_text())
    a = kgraph.models.model_from_json(json.dumps(config), seed=5)
    b = kgraph.models.model_from_yaml(yaml.safe_dump(config), seed=5)
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_bad_calls_get_clear_errors(data):
    (x, y), _ = data
    model = kgraph.models.load_model(EXAMPLE, seed=0)
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match="unknown optimizer 'adamw2'"):
        model.compile(optimizer="adamw2", loss="mse")
    with pytest.raises(ValueError, match="unknown loss 'hinge2'"):
        model.compile(optimizer="sgd", loss="hinge2")
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match=r"\(10, 63\).*\(None, 64\)"):
        model.fit(x[:10, :63], y[:10], verbose=0)


def _dict_outputs_config():
    """keras.Model(x, {"zeta": Dense(3, name="dense_a")(x), "alpha": Dense(1, name="dense_b")(x)})
    as Keras 3 saves it: the outputs' keys are not their layers' names."""
    return {
        "class_name": "Functional",
        "config": {
            "name": "m",
            "layers": [
                {"class_name": "InputLayer", "config": {"name": "x", "batch_shape": [None, 4]}, "inbound_nodes": []},
                {
                    "class_name": "Dense",
                    "config": {"name": "dense_a", "units": 3},
                    "inbound_nodes": [[["x", 0, 0, {}]]],
                },
                {
                    "class_name": "Dense",
                    "config": {"name": "dense_b", "units": 1},
                    "inbound_nodes": [[["x", 0, 0, {}]]],
                },
            ],
            "input_layers": [["x", 0, 0]],
            "output_layers": {"zeta": ["dense_a", 0, 0], "alpha": ["dense_b", 0, 0]},
        },
    }


def test_a_model_with_a_dict_of_outputs_predicts_and_logs_by_its_keys():
    """As Keras 3 (checked against 3.15): predict and model(x) return a dict by the outputs' keys;
    compile's loss and loss_weights, and the targets, may be keyed by them; the logs name them
    ("alpha_loss"). Keys given by the output layers' names work as before."""
    m = kgraph.models.model_from_config(_dict_outputs_config(), seed=0)
    x = np.random.RandomState(0).rand(8, 4).astype(np.float32)
    preds = m.predict(x, verbose=0)
    assert isinstance(preds, dict) and {k: v.shape for k, v in preds.items()} == {"zeta": (8, 3), "alpha": (8, 1)}
    assert list(preds) == ["zeta", "alpha"]  # the config's order, as Keras returns them
    np.testing.assert_array_equal(m(x)["zeta"], preds["zeta"])
    seen = []
    hook = kgraph.callbacks.LambdaCallback(on_predict_batch_end=lambda batch, logs: seen.append(dict(logs)))
    m.predict(x, batch_size=4, verbose=0, callbacks=[hook])
    # each batch's outputs by key: Keras 3.15 flattens {"outputs": {...}} into the logs
    assert [sorted(o) for o in seen] == [["alpha", "zeta"]] * 2
    np.testing.assert_array_equal(seen[1]["alpha"], preds["alpha"][4:])
    np.testing.assert_array_equal(m.predict_on_batch(x)["alpha"], preds["alpha"])
    ys = {"zeta": np.zeros((8, 3), np.float32), "alpha": np.ones((8, 1), np.float32)}
    assert m.loss is None
    m.compile(optimizer="sgd", loss={"zeta": "mse", "alpha": "mae"}, loss_weights={"zeta": 1.0, "alpha": 2.0})
    assert m.loss == {"zeta": "mse", "alpha": "mae"}  # as given (Keras's model.loss)
    logs = m.evaluate(x, ys, verbose=0, return_dict=True)
    mse, mae = ((preds["zeta"] - 0) ** 2).mean(), np.abs(preds["alpha"] - 1).mean()
    assert logs == pytest.approx({"loss": mse + 2 * mae, "zeta_loss": mse, "alpha_loss": mae}, rel=1e-5)
    by_name = {"dense_a": ys["zeta"], "dense_b": ys["alpha"]}
    assert m.evaluate(x, by_name, verbose=0, return_dict=True) == pytest.approx(logs, rel=1e-6)
    assert set(m.fit(x, ys, epochs=1, verbose=0).history) == {"loss", "zeta_loss", "alpha_loss"}


def test_the_keys_of_a_dict_of_outputs_win_over_layer_names():
    """{"a": Dense(name="b"), "b": Dense(name="a")}: Keras 3 takes targets and losses by key."""
    config = _dict_outputs_config()
    config["config"]["layers"][1]["config"]["name"] = "alpha"  # the "zeta" output's layer
    config["config"]["layers"][2]["config"]["name"] = "zeta"
    config["config"]["output_layers"] = {"zeta": ["alpha", 0, 0], "alpha": ["zeta", 0, 0]}
    m = kgraph.models.model_from_config(config, seed=0)
    x = np.random.RandomState(0).rand(8, 4).astype(np.float32)
    preds = m.predict(x, verbose=0)
    assert preds["zeta"].shape == (8, 3) and preds["alpha"].shape == (8, 1)
    m.compile(optimizer="sgd", loss={"zeta": "mse", "alpha": "mae"})
    logs = m.evaluate(x, {"zeta": np.zeros((8, 3)), "alpha": np.ones((8, 1))}, verbose=0, return_dict=True)
    assert logs["zeta_loss"] == pytest.approx((preds["zeta"] ** 2).mean(), rel=1e-5)
    assert logs["alpha_loss"] == pytest.approx(np.abs(preds["alpha"] - 1).mean(), rel=1e-5)


def test_an_output_without_a_loss_leaves_its_weights_as_they_are():
    """compile(loss={"zeta": ...}) on two outputs: Keras trains the rest and warns that the other
    output's weights have no gradient (checked against 3.15), and skips them in the update, weight
    decay included (their slots are built all the same); partial loss_weights are refused."""
    m = kgraph.models.model_from_config(_dict_outputs_config(), seed=0)
    x = np.random.RandomState(0).rand(8, 4).astype(np.float32)
    before = m.get_weights()
    with pytest.warns(UserWarning, match=r"Gradients do not exist for weights \['dense_b_kernel', 'dense_b_bias'\]"):
        m.compile(optimizer=kgraph.optimizers.AdamW(weight_decay=0.1), loss={"zeta": "mse"})
    history = m.fit(x, {"zeta": np.ones((8, 3))}, epochs=2, verbose=0).history
    assert set(history) == {"loss"}
    after = m.get_weights()
    assert not np.array_equal(after[0], before[0])  # dense_a trained
    np.testing.assert_array_equal(after[2], before[2])  # dense_b untouched
    np.testing.assert_array_equal(after[3], before[3])
    assert len(kgraph.saving.optimizer_variables(m)) == 2 + 2 * len(before)  # iteration, lr, m and v of all
    with pytest.raises(ValueError, match=r"loss_weights has no weight for outputs \['alpha'\]"):
        m.compile(optimizer="sgd", loss={"zeta": "mse", "alpha": "mae"}, loss_weights={"zeta": 2.0})


def test_a_weight_read_only_through_a_discretization_keeps_its_value_with_keras_warning():
    """Dense -> Discretization -> CategoryEncoding -> Dense: the loss reads the first Dense only
    through bucket comparisons, which have no gradient. Keras warns and trains the rest; compile()
    raised "parameter %dense_kernel does not affect the loss"."""
    layers = [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 3], "name": "x"}},
        {"class_name": "Dense", "config": {"name": "project", "units": 1}},
        {"class_name": "Discretization", "config": {"name": "bucket", "bin_boundaries": [-0.5, 0.0, 0.5]}},
        {"class_name": "CategoryEncoding", "config": {"name": "encode", "num_tokens": 4, "output_mode": "one_hot"}},
        {"class_name": "Dense", "config": {"name": "head", "units": 2}},
    ]
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": layers}, "keras_version": "3.15.1"}
    m = kgraph.models.model_from_config(config, seed=0)
    before = m.get_weights()
    with pytest.warns(UserWarning, match=r"Gradients do not exist for weights \['project_kernel', 'project_bias'\]"):
        m.compile(optimizer="sgd", loss="mse")
    x = np.random.RandomState(0).normal(size=(8, 3)).astype(np.float32)
    m.fit(x, np.ones((8, 2), np.float32), epochs=2, verbose=0)
    after = m.get_weights()
    np.testing.assert_array_equal(after[0], before[0])
    assert not np.array_equal(after[2], before[2])  # the head trained
    frozen_input = [{"class_name": "InputLayer", "config": {"batch_shape": [None, 3], "name": "x"}}, *layers[1:4]]
    only = {"class_name": "Sequential", "config": {"name": "s", "layers": frozen_input}, "keras_version": "3.15.1"}
    with pytest.raises(ValueError, match="No gradients provided for any weight: the loss reads"):
        kgraph.models.model_from_config(only, seed=0).compile(optimizer="sgd", loss="mse")


def test_a_tf_keras_models_use_ema_starts_from_the_weights_as_tf_keras_does():
    """tf-keras's average starts as the weights when training starts and decays from the first
    step (Keras 3 skips the decay on the first step): two steps of SGD, then fit ends on it."""
    config = json.loads((Path(__file__).parent / "fixtures" / "configs" / "k2_seq_mlp.json").read_text())
    config["config"]["layers"] = [layer for layer in config["config"]["layers"] if layer["class_name"] != "Dropout"]
    models = [kgraph.models.model_from_config(config, seed=0) for _ in range(2)]
    for model, use_ema in zip(models, (False, True)):
        model.compile(optimizer=kgraph.optimizers.SGD(0.1, use_ema=use_ema, ema_momentum=0.5), loss="mse")
    plain, averaged = models
    x = np.random.RandomState(0).rand(4, *plain.input_shape[1:]).astype(np.float32)
    y = np.zeros((4, *plain.output_shape[1:]), np.float32)
    trajectory = [plain.get_weights()]
    for _ in range(2):
        plain.train_on_batch(x, y)
        trajectory.append(plain.get_weights())
    averaged.train_on_batch(x, y)
    averaged.fit(x, y, batch_size=4, epochs=1, verbose=0)
    for got, w0, w1, w2 in zip(averaged.get_weights(), *trajectory):
        np.testing.assert_allclose(got, 0.25 * w0 + 0.25 * w1 + 0.5 * w2, rtol=1e-6, atol=1e-7)


def test_use_ema_fit_ends_on_the_moving_averages_and_an_unread_output_keeps_its_weights():
    """Keras's use_ema without an overwrite frequency: the weights train as without it, the
    averages follow them (the first step's is the weights), and fit ends by giving the weights
    their averages; a weight no loss reads stays as it is, its average too."""
    x = np.random.RandomState(0).rand(8, 4).astype(np.float32)
    y = {"zeta": np.ones((8, 3))}
    models = []
    for use_ema in (False, True):
        m = kgraph.models.model_from_config(_dict_outputs_config(), seed=0)
        with pytest.warns(UserWarning, match="Gradients do not exist"):
            m.compile(optimizer=kgraph.optimizers.AdamW(0.05, use_ema=use_ema, ema_momentum=0.5), loss={"zeta": "mse"})
        models.append(m)
    plain, averaged = models
    before = plain.get_weights()
    n = len(before)
    trajectory = []
    for _ in range(3):
        plain.train_on_batch(x, y)
        trajectory.append(plain.get_weights())
    averaged.train_on_batch(x, y)
    variables = kgraph.saving.optimizer_variables(averaged)
    assert len(variables) == 2 + 3 * n  # iteration, lr, then Keras's order: the averages first, m, v
    for got, want in zip(variables[2 : 2 + n], trajectory[0]):
        np.testing.assert_array_equal(got, want)  # the first step's average is the weights
    averaged.fit(x, y, epochs=2, verbose=0)  # one step an epoch
    want = [0.25 * a + 0.25 * b + 0.5 * c for a, b, c in zip(*trajectory)]
    for got, w in zip(averaged.get_weights(), want):
        np.testing.assert_allclose(got, w, rtol=1e-6, atol=1e-7)
    assert not np.allclose(averaged.get_weights()[0], trajectory[-1][0], rtol=1e-4)  # not the last weights
    for k in (2, 3):  # dense_b: no gradient, no change
        np.testing.assert_array_equal(averaged.get_weights()[k], before[k])


def test_use_ema_with_accumulation_keeps_an_unread_outputs_weights():
    """The average of a weight no loss reads is its own slot, not the gradient sums after it: fit
    ended by giving such a weight its never-written average, zero."""
    m = kgraph.models.model_from_config(_dict_outputs_config(), seed=0)
    with pytest.warns(UserWarning, match="Gradients do not exist"):
        m.compile(
            optimizer=kgraph.optimizers.SGD(0.1, use_ema=True, gradient_accumulation_steps=2), loss={"zeta": "mse"}
        )
    before = m.get_weights()
    x = np.random.RandomState(0).rand(8, 4).astype(np.float32)
    m.fit(x, {"zeta": np.ones((8, 3))}, batch_size=4, epochs=1, verbose=0)
    for k in (2, 3):  # dense_b
        np.testing.assert_array_equal(m.get_weights()[k], before[k])


def test_a_tf_keras_2_dict_of_outputs_logs_by_layer_name():
    """tf-keras 2.21 predicts a dict by key too, but names the per-output losses by the output
    layers ("dense_b_loss"), as every Keras 2 log; compile's dicts may use keys or names."""
    config = dict(_dict_outputs_config(), keras_version="2.15.0", backend="tensorflow")
    m = kgraph.models.model_from_config(config, seed=0)
    x = np.random.RandomState(0).rand(8, 4).astype(np.float32)
    assert list(m.predict(x, verbose=0)) == ["zeta", "alpha"]
    m.compile(optimizer="sgd", loss={"zeta": "mse", "alpha": "mae"})
    by_key = m.evaluate(x, {"zeta": np.zeros((8, 3)), "alpha": np.ones((8, 1))}, verbose=0, return_dict=True)
    assert set(by_key) == {"loss", "dense_a_loss", "dense_b_loss"}
    m.compile(optimizer="sgd", loss={"dense_a": "mse", "dense_b": "mae"})
    by_name = m.evaluate(x, {"dense_a": np.zeros((8, 3)), "dense_b": np.ones((8, 1))}, verbose=0, return_dict=True)
    assert by_name == pytest.approx(by_key, rel=1e-6)


def test_a_model_whose_output_is_its_input_reshaped_predicts_and_evaluates():
    """The output is a view of the step's input, in no buffer of the step: it gets a copy of its
    own (passes/memory.py materialize_outputs), where predict raised KeyError 'output:0'."""
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, 3, 4], "name": "in"}},
                {"class_name": "Reshape", "config": {"name": "r", "target_shape": [12]}},
            ],
        },
    }
    model = kgraph.models.model_from_json(json.dumps(config))
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(model.predict(x, verbose=0), x.reshape(2, 12))
    with pytest.warns(UserWarning, match="no trainable weights"):
        model.compile(loss="mse")
    assert model.evaluate(x, x.reshape(2, 12), verbose=0) == 0.0


def test_binary_crossentropy_of_a_zero_logit_has_the_sigmoids_gradient():
    """A sigmoid output whose logit is exactly 0 (zero weights here; a dead ReLU layer before a
    zero bias in a U-Net's head): the gradient is sigmoid(0) - y = 0.5 - y, as TensorFlow's
    sigmoid_cross_entropy_with_logits gives. Autodiff through relu and abs gave -y there."""
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, 3], "name": "in"}},
                {
                    "class_name": "Dense",
                    "config": {"name": "d", "units": 1, "activation": "sigmoid", "kernel_initializer": "zeros"},
                },
            ],
        },
    }
    model = kgraph.models.model_from_json(json.dumps(config))
    model.compile(optimizer=optimizers.SGD(learning_rate=1.0), loss="binary_crossentropy")
    x = np.ones((4, 3), np.float32)
    y = np.array([[1.0], [0.0], [1.0], [1.0]], np.float32)
    model.train_on_batch(x, y)
    np.testing.assert_allclose(model.get_weights()[1], [-(0.5 - y).mean()], rtol=1e-6)


@pytest.mark.parametrize("shape", [(4, 3, 3, 2), (8, 2)])
def test_tf_keras_fused_batch_norm_moves_toward_the_unbiased_variance(shape):
    """tf-keras runs a BatchNormalization of a 4-D input fused, and its moving variance moves
    toward the batch's variance times n / (n - 1) (checked against tf-keras 2.21: 1.4031016 and
    1.2699523 for this 4-D batch); a 2-D one, and Keras 3's, toward the biased variance."""
    batch_input_shape = [None, *shape[1:]]
    layers = [
        {"class_name": "InputLayer", "config": {"batch_input_shape": batch_input_shape, "name": "in"}},
        {"class_name": "BatchNormalization", "config": {"name": "bn", "momentum": 0.9, "axis": -1}},
    ]
    model = kgraph.models.model_from_json(
        json.dumps({"class_name": "Sequential", "config": {"name": "s", "layers": layers}})
    )
    model.compile(optimizer=optimizers.SGD(learning_rate=0.0), loss="mse")
    x = np.random.RandomState(0).randn(*shape).astype(np.float32) * 2
    model.train_on_batch(x, np.zeros_like(x))
    var, n = x.reshape(-1, shape[-1]).var(axis=0), x.size // shape[-1]
    expected = 0.9 + 0.1 * var * (n / (n - 1) if len(shape) == 4 else 1.0)
    np.testing.assert_allclose(model.get_weights()[3], expected, rtol=1e-6)
    if len(shape) == 4:  # tf-keras's own numbers for this batch
        np.testing.assert_allclose(model.get_weights()[3], [1.4031016, 1.2699523], rtol=1e-6)


CALL_TRAINING = json.loads((Path(__file__).parent / "fixtures" / "files" / "tf" / "call_training.json").read_text())


@pytest.mark.parametrize(
    "keras, case",
    # Keras 3 overrides a saved training flag with fit's and predict's (its nested_false and
    # direct_false then drop at random in training: not comparable)
    [("tfk2", "nested_false"), ("tfk2", "direct_false"), ("tfk2", "bn_true"), ("k3", "bn_true")],
)
def test_a_calls_saved_training_flag_acts_as_in_the_keras_that_saved_it(keras, case):
    """tf-keras honours `base(x, training=False)` (no dropout, batch norm on its moving statistics,
    which stay) and `BatchNormalization()(h, training=True)` (batch statistics, moved in predict
    too) over fit's and predict's mode; Keras 3 does not. TensorFlow's loss and weights after a
    train step, then after two predicts."""
    entry = CALL_TRAINING[keras][case]
    x, y = np.asarray(CALL_TRAINING["x"], np.float32), np.asarray(CALL_TRAINING["y"])
    model = kgraph.models.model_from_json(json.dumps(entry["config"]))
    model.set_weights([np.asarray(w, np.float32) for w in entry["weights"]])
    model.compile(optimizer=optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    np.testing.assert_allclose(model.train_on_batch(x, y), entry["loss"], rtol=1e-5)
    for got, want in zip(model.get_weights(), entry["trained"]):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(x, verbose=0), np.asarray(entry["pred"]), rtol=1e-5, atol=1e-6)
    model.predict(x, verbose=0)
    for got, want in zip(model.get_weights(), entry["predicted"]):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-6)


def _batch_norm_statistics(monkeypatch, steps, head, seed):
    """A batch norm (momentum 0: its moving statistics are the batch's) on 16 sequences of
    `steps` x 8 values near 1000, compiled as for a 2-core machine, after one train step:
    (its moving mean and variance, those of the values in float64)."""
    import numba

    monkeypatch.setattr(numba.config, "NUMBA_NUM_THREADS", 2)  # the parts a 2-core machine compiles
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "bn_sums",
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, steps, 8], "name": "x"}},
                {"class_name": "BatchNormalization", "config": {"name": "bn", "momentum": 0.0}},
                {"class_name": head, "config": {"name": "head"}},
                {"class_name": "Dense", "config": {"name": "d", "units": 1}},
            ],
        },
    }
    model = kgraph.models.model_from_json(json.dumps(config))
    model.compile("sgd", "mse")
    x = (1000 + np.random.default_rng(seed).random((16, steps, 8))).astype(np.float32)
    model.train_on_batch(x, np.zeros((16, 1), np.float32))
    _, _, mean, variance = model.get_layer("bn").get_weights()
    exact = x.astype(np.float64).reshape(-1, 8)
    return (mean, variance), (exact.mean(0), exact.var(0))


def test_batch_norm_statistics_over_many_pixels_keep_float32s_digits(monkeypatch):
    """A column sum over 32,768 rows (a batch norm's mean and variance) adds each part's rows in
    float64: in float32 the variance of values near 1000 lost 5 digits of 7 (3e-5 relative),
    enough for a deep network's ReLU6 to switch pixels that TensorFlow's sums do not."""
    (mean, variance), (exact_mean, exact_variance) = _batch_norm_statistics(
        monkeypatch, 2048, "GlobalAveragePooling1D", 0
    )
    np.testing.assert_allclose(mean, exact_mean, rtol=2e-7)
    np.testing.assert_allclose(variance, exact_variance, rtol=2e-7)


def test_column_sums_not_split_keep_float32s_digits(monkeypatch):
    """A batch norm's mean and variance over small samples (256 x 8 values: not split into parts)
    add their 4,096 rows in a float64 row (the variance in the loop that squares the deviations):
    in float32 the mean of values near 1000 lost enough for the variance to be 3e-5 off, and
    such sums switched a MobileNetV2's ReLU6 pixels after 52 batch norms."""
    (_, variance), (_, exact_variance) = _batch_norm_statistics(monkeypatch, 256, "Flatten", 1)
    np.testing.assert_allclose(variance, exact_variance, rtol=2e-7)
