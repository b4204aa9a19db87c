import csv
import math
import os

import numpy as np
import pytest

from kgraph.callbacks import (
    Callback,
    CallbackList,
    CSVLogger,
    EarlyStopping,
    History,
    LambdaCallback,
    LearningRateScheduler,
    ModelCheckpoint,
    ProgbarLogger,
    ReduceLROnPlateau,
    RemoteMonitor,
    TerminateOnNaN,
)


class FakeOptimizer:
    def __init__(self, learning_rate):
        self.learning_rate = learning_rate


class FakeModel:
    """The surface callbacks use; 'weights' are tagged with the epoch."""

    def __init__(self, learning_rate=0.01):
        self.stop_training = False
        self.optimizer = FakeOptimizer(learning_rate)
        self.weights = [np.zeros(2), np.zeros(())]
        self.saved = []

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = [np.array(w) for w in weights]

    def save_weights(self, path):
        self.saved.append(("weights", path))
        open(path, "w").close()

    def save(self, path):
        self.saved.append(("model", path))
        open(path, "w").close()


def fit(model, callbacks, epoch_logs, steps=2, verbose=0, batch_logs=None):
    """Drives the hooks the way a Keras 3 `fit` loop does.

    `epoch_logs[i]` are epoch i's final logs; after epoch i the weights hold
    the value i, so a restore can be traced back to its epoch.
    """
    cbs = CallbackList(
        callbacks,
        add_history=True,
        add_progbar=verbose != 0,
        model=model,
        verbose=verbose,
        epochs=len(epoch_logs),
        steps=steps,
    )
    cbs.on_train_begin()
    for epoch, logs in enumerate(epoch_logs):
        cbs.on_epoch_begin(epoch)
        for batch in range(steps):
            cbs.on_train_batch_begin(batch)
            cbs.on_train_batch_end(batch, batch_logs or {"loss": logs.get("loss", 0.0)})
        model.set_weights([np.full(2, epoch), np.array(epoch)])
        cbs.on_epoch_end(epoch, dict(logs))
        if model.stop_training:
            break
    cbs.on_train_end()
    return model.history


def losses(*values, key="val_loss"):
    return [{"loss": 1.0, key: v} for v in values]


# --- CallbackList / History -------------------------------------------------


def test_history_records_epochs_and_values():
    model = FakeModel()
    history = fit(model, [], [{"loss": 0.9, "acc": 0.1}, {"loss": 0.7, "acc": 0.3}])
    assert isinstance(history, History)
    assert history.epoch == [0, 1]
    assert history.history == {"acc": [0.1, 0.3], "loss": [0.9, 0.7]}
    assert history.params == {"verbose": 0, "epochs": 2, "steps": 2}


def test_callback_list_sorts_flattens_and_floats_logs():
    seen = []
    recorder = LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(logs))
    cbs = CallbackList([recorder], model=FakeModel())
    cbs.on_epoch_end(0, {"z": np.float32(0.5), "out": {"b": 1, "a": 2}, "arr": [1, 2]})
    (logs,) = seen
    assert list(logs) == ["arr", "a", "b", "z"]
    assert type(logs["z"]) is float and logs["a"] == 2.0
    assert logs["arr"] == [1, 2]


def test_callback_list_adds_defaults_once_and_forwards_params():
    own_history = History()
    cbs = CallbackList(
        [own_history], add_history=True, add_progbar=True, model=FakeModel(), verbose=1, epochs=3, steps=5
    )
    assert [type(cb) for cb in cbs.callbacks] == [History, ProgbarLogger]
    assert cbs.callbacks[1].target == 5 and cbs.callbacks[1].epochs == 3
    assert all(cb.params == {"verbose": 1, "epochs": 3, "steps": 5} for cb in cbs.callbacks)


def test_train_batch_hooks_fall_back_to_batch_aliases():
    calls = []

    class Legacy(Callback):
        def on_batch_end(self, batch, logs=None):
            calls.append((batch, logs["loss"]))

    fit(FakeModel(), [Legacy()], [{"loss": 0.5}], steps=2)
    assert calls == [(0, 0.5), (1, 0.5)]


# --- EarlyStopping -----------------------------------------------------------


def test_early_stopping_stops_after_patience_and_restores_best(capsys):
    model = FakeModel()
    stopper = EarlyStopping(patience=2, restore_best_weights=True, verbose=1)
    history = fit(model, [stopper], losses(1.0, 0.5, 0.6, 0.7, 0.1, 0.1))
    assert history.epoch == [0, 1, 2, 3]
    assert stopper.stopped_epoch == 3 and stopper.best_epoch == 1
    assert stopper.best == 0.5
    np.testing.assert_array_equal(model.weights[0], [1, 1])
    out = capsys.readouterr().out
    assert "Epoch 4: early stopping\n" in out
    assert "Restoring model weights from the end of the best epoch: 2.\n" in out


def test_early_stopping_min_delta_ignores_tiny_gains():
    stopper = EarlyStopping(patience=1, min_delta=0.1)
    history = fit(FakeModel(), [stopper], losses(1.0, 0.95, 0.92, 0.5))
    assert history.epoch == [0, 1]


def test_early_stopping_auto_mode_maximizes_accuracy():
    stopper = EarlyStopping(monitor="val_accuracy", patience=1)
    history = fit(FakeModel(), [stopper], losses(0.5, 0.6, 0.7, 0.65, 0.9, key="val_accuracy"))
    assert history.epoch == [0, 1, 2, 3]
    assert stopper.best == 0.7


def test_early_stopping_auto_mode_rejects_unknown_metric():
    with pytest.raises(ValueError, match="mode='max'"):
        fit(FakeModel(), [EarlyStopping(monitor="custom")], losses(1.0, key="custom"))
    stopper = EarlyStopping(monitor="custom", mode="min", patience=0)
    assert fit(FakeModel(), [stopper], losses(1.0, 2.0, 0.0, key="custom")).epoch == [0, 1]


def test_early_stopping_baseline_not_reached_counts_from_first_epoch():
    model = FakeModel()
    stopper = EarlyStopping(patience=2, baseline=0.1, restore_best_weights=True)
    history = fit(model, [stopper], losses(0.5, 0.6, 0.7, 0.8))
    # Epoch 0 improved on "nothing" but missed the baseline, so its epoch
    # still counts towards patience: one epoch sooner than without baseline.
    assert history.epoch == [0, 1]
    np.testing.assert_array_equal(model.weights[0], [0, 0])
    assert fit(FakeModel(), [EarlyStopping(patience=2)], losses(0.5, 0.6, 0.7, 0.8)).epoch == [0, 1, 2]


def test_early_stopping_start_from_epoch_skips_warmup():
    stopper = EarlyStopping(patience=0, start_from_epoch=2)
    history = fit(FakeModel(), [stopper], losses(0.1, 0.9, 0.8, 0.9, 0.1))
    assert history.epoch == [0, 1, 2, 3]


def test_early_stopping_warns_when_monitor_missing():
    with pytest.warns(UserWarning, match="val_loss"):
        history = fit(FakeModel(), [EarlyStopping()], [{"loss": 1.0}] * 2)
    assert history.epoch == [0, 1]


# --- ModelCheckpoint -----------------------------------------------------------


def test_checkpoint_best_only_writes_improved_epochs_with_formatted_names(tmp_path, capsys):
    model = FakeModel()
    pattern = str(tmp_path / "ckpt" / "w-{epoch:02d}-{val_loss:.2f}.weights.h5")
    checkpoint = ModelCheckpoint(pattern, save_best_only=True, save_weights_only=True, verbose=1)
    fit(model, [checkpoint], losses(0.9, 0.8, 0.85, 0.5))
    assert sorted(os.listdir(tmp_path / "ckpt")) == [
        "w-01-0.90.weights.h5",
        "w-02-0.80.weights.h5",
        "w-04-0.50.weights.h5",
    ]
    assert {kind for kind, _ in model.saved} == {"weights"}
    out = capsys.readouterr().out
    assert "\nEpoch 2: val_loss improved from 0.90000 to 0.80000, saving model to" in out
    assert "\nEpoch 3: val_loss did not improve from 0.80000\n" in out


def test_checkpoint_saves_full_model_every_epoch(tmp_path):
    model = FakeModel()
    fit(model, [ModelCheckpoint(str(tmp_path / "m-{epoch}.keras"))], losses(0.5, 0.9))
    assert model.saved == [("model", str(tmp_path / "m-1.keras")), ("model", str(tmp_path / "m-2.keras"))]


def test_checkpoint_initial_value_threshold_and_max_mode(tmp_path):
    model = FakeModel()
    checkpoint = ModelCheckpoint(
        str(tmp_path / "{epoch}.keras"), monitor="val_acc", mode="max", save_best_only=True, initial_value_threshold=0.6
    )
    fit(model, [checkpoint], losses(0.5, 0.7, 0.65, 0.8, key="val_acc"))
    assert [os.path.basename(p) for _, p in model.saved] == ["2.keras", "4.keras"]


def test_checkpoint_integer_save_freq_counts_batches_across_epochs(tmp_path):
    model = FakeModel()
    checkpoint = ModelCheckpoint(str(tmp_path / "e{epoch}-b{batch}.keras"), save_freq=3)
    fit(model, [checkpoint], losses(1.0, 1.0), steps=2)
    # Batches 1,2 | 1,2: the third and later every third batch overall.
    assert [os.path.basename(p) for _, p in model.saved] == ["e2-b1.keras"]


def test_checkpoint_missing_format_key_raises(tmp_path):
    checkpoint = ModelCheckpoint(str(tmp_path / "{val_auc}.keras"))
    with pytest.raises(KeyError, match="Failed to format"):
        fit(FakeModel(), [checkpoint], losses(1.0))


def test_checkpoint_rejects_bad_save_freq():
    with pytest.raises(ValueError):
        ModelCheckpoint("x.keras", save_freq="batch")


# --- Learning rate callbacks --------------------------------------------------


def test_learning_rate_scheduler_sets_and_logs_rate(capsys):
    model = FakeModel(learning_rate=0.1)
    scheduler = LearningRateScheduler(lambda epoch, lr: lr if epoch < 1 else lr * 0.5, verbose=1)
    history = fit(model, [scheduler], losses(1.0, 1.0, 1.0))
    assert history.history["learning_rate"] == [0.1, 0.05, 0.025]
    assert model.optimizer.learning_rate == 0.025
    assert "\nEpoch 2: LearningRateScheduler setting learning rate to 0.05.\n" in capsys.readouterr().out


def test_learning_rate_scheduler_accepts_one_argument_schedule():
    model = FakeModel()
    fit(model, [LearningRateScheduler(lambda epoch: 1.0 / (epoch + 1))], losses(1.0, 1.0))
    assert model.optimizer.learning_rate == 0.5


def test_learning_rate_scheduler_rejects_non_float():
    with pytest.raises(ValueError, match="should be a float"):
        fit(FakeModel(), [LearningRateScheduler(lambda epoch, lr: 1)], losses(1.0))


def test_reduce_lr_on_plateau_lowers_rate_with_cooldown_and_floor(capsys):
    model = FakeModel(learning_rate=1.0)
    reducer = ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=0.2, verbose=1)
    history = fit(model, [reducer], losses(*[1.0] * 9))
    # Logged before any reduction. Epochs 1-2 wait, reduce at 2; the cooldown
    # epoch 3 ends and counts as a wait, so reduce again at 4, then at 6
    # (clamped to min_lr); at 8 the rate is already at the floor.
    assert history.history["learning_rate"] == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2]
    assert model.optimizer.learning_rate == 0.2
    assert "\nEpoch 3: ReduceLROnPlateau reducing learning rate to 0.5.\n" in capsys.readouterr().out


def test_reduce_lr_on_plateau_keeps_rate_while_improving():
    model = FakeModel(learning_rate=1.0)
    fit(model, [ReduceLROnPlateau(patience=1)], losses(1.0, 0.9, 0.8, 0.7))
    assert model.optimizer.learning_rate == 1.0


def test_reduce_lr_on_plateau_rejects_factor_of_one():
    with pytest.raises(ValueError):
        ReduceLROnPlateau(factor=1.0)


# --- CSVLogger -----------------------------------------------------------------


def read_rows(path, delimiter=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=delimiter))


def test_csv_logger_writes_header_and_rows(tmp_path):
    path = tmp_path / "log.csv"
    fit(FakeModel(), [CSVLogger(path)], [{"loss": 0.5, "val_loss": 0.25}, {"loss": 0.4, "val_loss": 0.2}])
    assert read_rows(path) == [["epoch", "loss", "val_loss"], ["0", "0.5", "0.25"], ["1", "0.4", "0.2"]]


def test_csv_logger_adds_val_columns_and_appends_without_second_header(tmp_path):
    path = tmp_path / "log.tsv"
    fit(FakeModel(), [CSVLogger(path, separator="\t")], [{"loss": 0.5}])
    fit(FakeModel(), [CSVLogger(path, separator="\t", append=True)], [{"loss": 0.3}])
    assert read_rows(path, "\t") == [["epoch", "loss", "val_loss"], ["0", "0.5", "NA"], ["0", "0.3", "NA"]]


# --- TerminateOnNaN / LambdaCallback -------------------------------------------


def test_terminate_on_nan_stops_training(capsys):
    model = FakeModel()
    history = fit(model, [TerminateOnNaN()], [{"loss": math.nan}] * 3, steps=1)
    assert model.stop_training and history.epoch == [0]
    assert "Batch 0: Invalid loss, terminating training\n" in capsys.readouterr().out


def test_terminate_on_nan_can_raise():
    with pytest.raises(RuntimeError, match="NaN or Inf loss"):
        fit(FakeModel(), [TerminateOnNaN(raise_error=True)], [{"loss": math.inf}])


def test_lambda_callback_hooks_run():
    events = []
    cb = LambdaCallback(
        on_train_begin=lambda logs: events.append("begin"),
        on_epoch_end=lambda epoch, logs: events.append(("epoch", epoch, logs["loss"])),
        on_train_batch_end=lambda batch, logs: events.append(("batch", batch)),
        on_train_end=lambda logs: events.append("end"),
    )
    fit(FakeModel(), [cb], [{"loss": 0.5}], steps=2)
    assert events == ["begin", ("batch", 0), ("batch", 1), ("epoch", 0, 0.5), "end"]


def test_hooks_get_their_logs_by_position_as_keras_passes_them():
    """A hook's second parameter need not be named `logs` (`lambda e, l: ...`, `def on_epoch_end(self, epoch, l)`)."""
    events = []

    class Named(Callback):
        def on_train_begin(self, l=None):
            events.append("begin")

        def on_epoch_end(self, epoch, l=None):
            events.append(("epoch", epoch, l["loss"]))

    cb = LambdaCallback(
        on_train_batch_end=lambda b, l: events.append(("batch", b)), on_train_end=lambda l: events.append("end")
    )
    fit(FakeModel(), [Named(), cb], [{"loss": 0.5}], steps=1)
    assert events == ["begin", ("batch", 0), ("epoch", 0, 0.5), "end"]


def test_remote_monitor_posts_each_epochs_logs_and_warns_when_the_server_is_away():
    """Keras's payload: the form field `data` holding {"epoch", **logs} as JSON, or that JSON as
    the body (send_as_json); a server that cannot be reached is a warning, not an error."""
    import http.server
    import json
    import threading
    import urllib.parse

    posts = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            posts.append((self.path, self.headers["Content-Type"], self.headers.get("X-Run"), body))
            self.send_response(404 if len(posts) == 3 else 200)  # an error status is the server's answer
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = f"http://127.0.0.1:{server.server_port}"
    try:
        logs = [{"loss": np.float32(0.5), "accuracy": 0.25}, {"loss": np.float32(0.25), "accuracy": 0.5}]
        fit(FakeModel(), [RemoteMonitor(root=root, headers={"X-Run": "7"})], logs)
        fit(FakeModel(), [RemoteMonitor(root=root, path="/json", send_as_json=True)], logs[:1])
    finally:
        server.shutdown()
    assert [p[:3] for p in posts] == [("/publish/epoch/end/", "application/x-www-form-urlencoded", "7")] * 2 + [
        ("/json", "application/json", None)
    ]
    assert json.loads(urllib.parse.parse_qs(posts[1][3])["data"][0]) == {"epoch": 1, "loss": 0.25, "accuracy": 0.5}
    assert json.loads(posts[2][3]) == {"epoch": 0, "loss": 0.5, "accuracy": 0.25}
    with pytest.warns(UserWarning, match=f"Could not reach RemoteMonitor root server at {root}"):
        fit(FakeModel(), [RemoteMonitor(root=root, timeout=2)], logs[:1])


# --- ProgbarLogger ---------------------------------------------------------------


def test_progbar_logger_verbose_1_prints_headers_and_final_lines(capsys):
    logs = [{"accuracy": 0.5, "loss": 1.0, "val_accuracy": 0.6, "val_loss": 0.9}] * 2
    fit(FakeModel(), [], logs, steps=3, verbose=1, batch_logs={"loss": 1.0, "accuracy": 0.5})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2"
    assert lines[1].startswith("3/3 " + "━" * 20 + " 0s ")
    assert lines[1].endswith("/step - accuracy: 0.5000 - loss: 1.0000 - val_accuracy: 0.6000 - val_loss: 0.9000")
    assert len(lines) == 4


def test_progbar_logger_verbose_2_prints_one_line_per_epoch(capsys):
    fit(FakeModel(), [], [{"loss": 0.25}], steps=4, verbose=2)
    out = capsys.readouterr().out
    assert out.startswith("4/4 - 0s - ") and out.endswith("/step - loss: 0.2500\n")
    assert "Epoch" not in out  # single-epoch runs have no header


def test_progbar_logger_shows_evaluate_but_not_validation_inside_fit(capsys):
    model = FakeModel()
    cbs = CallbackList(None, add_progbar=True, model=model, verbose=1, epochs=1, steps=2)
    cbs.on_test_begin()
    for batch in range(2):
        cbs.on_test_batch_end(batch, {"loss": 0.5})
    cbs.on_test_end({"loss": 0.5})
    out = capsys.readouterr().out
    assert out.startswith("2/2 " + "━" * 20 + " 0s ")
    assert out.endswith("/step - loss: 0.5000\n") and out.count("\n") == 1

    cbs.on_train_begin()
    cbs.on_test_begin()
    cbs.on_test_batch_end(0, {"loss": 0.5})
    cbs.on_test_end({"loss": 0.5})
    assert capsys.readouterr().out == ""


def test_progbar_logger_learns_unknown_step_count(capsys):
    cbs = CallbackList(None, add_progbar=True, model=FakeModel(), verbose=2, epochs=1, steps=None)
    cbs.on_predict_begin()
    for batch in range(5):
        cbs.on_predict_batch_end(batch, {"outputs": np.zeros(3)})
    cbs.on_predict_end()
    assert capsys.readouterr().out.startswith("5/5 - ")


def test_tensorboard_writes_event_files_tensorboard_reads(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from kgraph.callbacks import TensorBoard

    class Model:
        class optimizer:
            learning_rate = 0.01

    cb = TensorBoard(log_dir=tmp_path)
    cb.set_model(Model())
    cb.on_train_begin()
    for epoch in range(3):
        cb.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "accuracy": 0.5, "val_loss": 2.0 / (epoch + 1)})
    cb.on_train_end()
    train = EventAccumulator(str(tmp_path / "train"))
    train.Reload()
    assert [round(e.value, 6) for e in train.Scalars("epoch_loss")] == [1.0, 0.5, 0.333333]
    assert [e.step for e in train.Scalars("epoch_accuracy")] == [0, 1, 2]
    assert train.Scalars("epoch_learning_rate")[0].value == pytest.approx(0.01)
    val = EventAccumulator(str(tmp_path / "validation"))
    val.Reload()
    assert [e.value for e in val.Scalars("epoch_loss")] == [2.0, 1.0, pytest.approx(2 / 3)]


def test_mode_auto_reads_the_direction_of_a_metric_object_named_by_the_user():
    """Keras 3 looks up a monitor it cannot tell by name among the compiled metrics:
    SparseTopKCategoricalAccuracy(name="top2") rises, MeanSquaredError(name="err") falls; a
    name that is neither is refused."""

    def model():
        m = FakeModel()
        rows = [{"key": "top2", "class": "SparseTopKCategoricalAccuracy"}, {"key": "err", "class": "MeanSquaredError"}]
        m.info = {"metrics": [rows]}
        return m

    logs = [{"val_top2": v, "val_err": v} for v in (0.5, 0.4, 0.3, 0.2)]
    rising = EarlyStopping(monitor="val_top2", patience=1)
    fit(model(), [rising], logs)
    assert rising.stopped_epoch == 1 and rising.best == 0.5  # it fell: no improvement after epoch 0
    falling = EarlyStopping(monitor="val_err", patience=1)
    fit(model(), [falling], logs)
    assert falling.stopped_epoch == 0 and falling.best == 0.2
    with pytest.raises(ValueError, match="automatically determine"):
        fit(model(), [EarlyStopping(monitor="val_other")], [{"val_other": 1.0}])
