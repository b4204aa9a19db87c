"""fit's data: sample and class weights (Keras 3: weighted per-sample losses summed, then divided by
the batch size), Python iterables and generators of batches with steps_per_epoch and
validation_steps, initial_epoch, and the errors for unknown losses."""

import json
from pathlib import Path

import numpy as np
import pytest

import kgraph.losses
import kgraph.models
from kgraph import callbacks, optimizers

CONFIG = json.loads((Path(__file__).parent / "fixtures" / "tf" / "mlp_adam.json").read_text())["model_config"]


def _model(loss="sparse_categorical_crossentropy", metrics=("accuracy",)):
    model = kgraph.models.model_from_config(CONFIG, seed=0)
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss=loss, metrics=list(metrics))
    return model


@pytest.fixture(scope="module")
def data():
    rs = np.random.RandomState(0)
    return rs.normal(size=(20, 12)).astype(np.float32), rs.randint(0, 5, size=20).astype(np.int32)


def test_sample_weights_scale_per_sample_losses_over_the_batch_size(data):
    x, y = data
    model = _model()
    per_sample = kgraph.losses.sparse_categorical_crossentropy(y, model.predict(x, verbose=0))
    loss = model.test_on_batch(x, y)[0]
    np.testing.assert_allclose(loss, per_sample.mean(), rtol=1e-5)
    sw = np.where(np.arange(20) < 5, 2.0, 0.0)
    # sum(w * l) / batch size: not divided by the sum of the weights
    np.testing.assert_allclose(model.test_on_batch(x, y, sample_weight=sw)[0], (sw * per_sample).sum() / 20, rtol=1e-5)
    # metrics are not weighted (Keras's compile metrics; weighted_metrics are another argument)
    assert model.test_on_batch(x, y, sample_weight=sw)[1] == model.test_on_batch(x, y)[1]


def test_class_weight_is_sample_weight_by_label(data):
    x, y = data
    class_weight = {0: 0.5, 2: 3.0}
    a, b = _model(), _model()
    ha = a.fit(x, y, class_weight=class_weight, batch_size=8, epochs=2, shuffle=False, verbose=0)
    sw = np.array([class_weight.get(int(c), 1.0) for c in y])
    hb = b.fit(x, y, sample_weight=sw, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert ha.history == hb.history
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)
    onehot = np.eye(5)[y]  # one-hot targets: the argmax is the class
    c = _model(loss="categorical_crossentropy")
    hc = c.fit(x, onehot, class_weight=class_weight, batch_size=8, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(hc.history["loss"], ha.history["loss"], rtol=1e-5)
    with pytest.raises(ValueError, match="both class_weight and sample_weight"):
        a.fit(x, y, class_weight=class_weight, sample_weight=sw, verbose=0)


def test_validation_split_rows_are_weighted_by_sample_weight_never_by_class_weight(data):
    """Keras splits (x, y, sample_weight) and weighs only the training rows by class: val_loss is
    what evaluate gives on the last rows (with their sample weights, when given)."""
    x, y = data
    model = _model()
    h = model.fit(x, y, class_weight={0: 0.5, 2: 3.0}, validation_split=0.25, epochs=1, shuffle=False, verbose=0)
    assert h.history["val_loss"][0] == pytest.approx(model.evaluate(x[15:], y[15:], verbose=0)[0], rel=1e-6)
    sw = np.linspace(0.5, 1.5, 20)
    h = model.fit(x, y, sample_weight=sw, validation_split=0.25, epochs=1, shuffle=False, verbose=0)
    weighted = model.evaluate(x[15:], y[15:], sample_weight=sw[15:], verbose=0)[0]
    assert h.history["val_loss"][0] == pytest.approx(weighted, rel=1e-6)


def test_a_generator_of_batches_trains_as_the_same_arrays(data):
    x, y = data
    sw = np.linspace(0.5, 1.5, 20)

    def batches():
        for i in range(0, 20, 8):  # 8, 8 and a final partial batch of 4
            yield x[i : i + 8], y[i : i + 8], sw[i : i + 8]

    a, b = _model(), _model()
    ha = a.fit(x, y, sample_weight=sw, batch_size=8, epochs=1, shuffle=False, verbose=0)
    hb = b.fit(batches(), epochs=1, verbose=0)
    assert ha.history == hb.history
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)

    class Batches:  # an iterable (not an iterator) starts a new pass every epoch
        def __iter__(self):
            return iter([(x[:10], y[:10]), (x[10:], y[10:])])

    assert len(_model().fit(Batches(), epochs=3, verbose=0).history["loss"]) == 3


def test_steps_per_epoch_draws_from_one_generator_across_epochs(data):
    x, y = data
    drawn = []

    def forever():
        i = 0
        while True:
            drawn.append(i)
            yield x[i % 20 : i % 20 + 4], y[i % 20 : i % 20 + 4]
            i += 4

    seen = []
    cb = callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: seen.append(epoch))
    hist = _model().fit(forever(), steps_per_epoch=2, epochs=4, initial_epoch=1, verbose=0, callbacks=[cb])
    assert seen == [1, 2, 3] and len(hist.history["loss"]) == 3
    assert drawn == [0, 4, 8, 12, 16, 20]


def test_a_generator_that_runs_out_stops_training_with_keras_warning(data):
    x, y = data
    short = ((x[i : i + 5], y[i : i + 5]) for i in range(0, 15, 5))  # 3 batches for 2 x 2 wanted
    with pytest.warns(UserWarning, match="ran out of data"):
        hist = _model().fit(short, steps_per_epoch=2, epochs=5, verbose=0)
    assert len(hist.history["loss"]) == 2


def test_a_generator_read_again_gives_its_first_two_batches_as_keras_3_does(data):
    """Keras 3 keeps a generator's first two batches (it looks at them for the data's structure)
    and starts every pass with them: a finite generator's later epochs, and the validation passes
    after the first, read those two batches only (checked against 3.15, which logged a real
    val_loss where kgraph logged 0); kgraph says so once."""
    x, y = data

    def batches():
        for i in range(0, 15, 5):
            yield x[i : i + 5], y[i : i + 5]

    model = _model()
    model.optimizer.learning_rate = 0.0  # the same weights every epoch: each val_loss is an evaluate
    with pytest.warns(UserWarning, match="read once: each pass over it after the first starts again from its first 2"):
        hist = model.fit(x, y, validation_data=batches(), epochs=3, verbose=0)
    every, first_two = (model.evaluate(x[:n], y[:n], verbose=0)[0] for n in (15, 10))
    assert hist.history["val_loss"] == pytest.approx([every, first_two, first_two], rel=1e-6)
    with pytest.warns(UserWarning, match="read once"):
        hist = model.fit(batches(), epochs=3, verbose=0)
    assert hist.history["loss"] == pytest.approx([every, first_two, first_two], rel=1e-6)
    # a model built from the generator's first batch (a Sequential without an input shape) alike
    unbuilt = kgraph.models.model_from_config(
        {
            "class_name": "Sequential",
            "config": {"name": "s", "layers": [{"class_name": "Dense", "config": {"units": 5}}]},
        }
    )
    unbuilt.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    with pytest.warns(UserWarning, match="read once"):
        assert len(unbuilt.fit(batches(), epochs=3, verbose=0).history["loss"]) == 3  # it stopped after one


def test_validation_and_evaluate_from_generators(data):
    x, y = data
    model = _model()

    def val():
        while True:
            yield x[:10], y[:10]

    with pytest.warns(UserWarning, match="read once"):  # each validation pass starts again, as in Keras 3
        hist = model.fit(x, y, validation_data=val(), validation_steps=2, epochs=2, verbose=0)
    assert set(hist.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    np.testing.assert_allclose(hist.history["val_loss"][-1], model.evaluate(x[:10], y[:10], verbose=0)[0], rtol=1e-5)
    np.testing.assert_allclose(
        model.evaluate(val(), steps=3, verbose=0), model.evaluate(x[:10], y[:10], verbose=0), rtol=1e-5
    )
    with pytest.raises(ValueError, match="validation_split"):
        model.fit(val(), steps_per_epoch=1, validation_split=0.2, verbose=0)


def test_steps_per_epoch_over_arrays_continues_the_pass(data):
    x, y = data  # 20 rows in batches of 8: 3 batches a pass, 2 wanted per epoch
    steps = []
    cb = callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: steps.append(0),
        on_train_batch_end=lambda batch, logs: steps.__setitem__(-1, steps[-1] + 1),
    )
    with pytest.warns(UserWarning, match="ran out of data"):  # as Keras: the pass ends within epoch 2
        hist = _model().fit(x, y, batch_size=8, steps_per_epoch=2, epochs=3, shuffle=False, verbose=0, callbacks=[cb])
    assert steps == [2, 1, 2] and len(hist.history["loss"]) == 3


def test_unknown_loss_is_one_line_listing_the_known_ones():
    model = kgraph.models.model_from_config(CONFIG, seed=0)
    with pytest.raises(ValueError) as e:
        model.compile(optimizer="sgd", loss="huberr")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("unknown loss 'huberr'; known:")
    assert "huber" in msg and "categorical_hinge" in msg and "kld" in msg
    with pytest.raises(ValueError, match="unknown metric 'f2'"):
        model.compile(optimizer="sgd", loss="mse", metrics=["f2"])


def test_loss_objects_functions_and_configs_compile_alike(data):
    x, y = data
    onehot = np.eye(5, dtype=np.float32)[y]
    values = []
    for loss in (
        "huber",
        kgraph.losses.huber,
        kgraph.losses.Huber(),
        kgraph.losses.Huber(delta=1.0),
        {"class_name": "Huber", "config": {"name": "huber_loss", "reduction": "sum_over_batch_size"}},
        {"module": "builtins", "class_name": "function", "config": "huber", "registered_name": "function"},
    ):
        values.append(_model(loss=loss, metrics=()).test_on_batch(x, onehot))
    assert len(set(values)) == 1
    assert _model(loss=kgraph.losses.Huber(delta=0.1), metrics=()).test_on_batch(x, onehot) != values[0]
    with pytest.raises(TypeError, match="unexpected arguments"):
        kgraph.losses.Huber(delt=2.0)


def test_validation_freq_batch_size_and_test_hooks_in_fit(data):
    """As Keras 3's fit: validation after every validation_freq-th epoch (or the 1-based epochs a
    list names), in batches of validation_batch_size, as an evaluate whose test hooks fit's
    callbacks receive."""
    x, y = data
    events = []
    hooks = callbacks.LambdaCallback(
        on_test_begin=lambda logs: events.append("begin"),
        on_test_batch_end=lambda batch, logs: events.append(batch),
        on_test_end=lambda logs: events.append(("end", sorted(logs))),
        on_epoch_end=lambda epoch, logs: events.append(f"epoch {epoch}"),
    )
    model = _model()
    hist = model.fit(x, y, epochs=4, verbose=0, validation_data=(x[:15], y[:15]), validation_freq=2)
    assert len(hist.history["loss"]) == 4 and len(hist.history["val_loss"]) == 2
    hist = model.fit(x, y, epochs=3, verbose=0, validation_data=(x[:15], y[:15]), validation_freq=[1, 3])
    assert len(hist.history["val_loss"]) == 2
    model.fit(x, y, epochs=1, verbose=0, validation_data=(x[:15], y[:15]), validation_batch_size=7, callbacks=[hooks])
    assert events == ["begin", 0, 1, 2, ("end", ["accuracy", "loss"]), "epoch 0"]
    with pytest.raises(ValueError, match="Expected `validation_freq` to be a list or int"):
        model.fit(x, y, validation_data=(x, y), validation_freq="2", verbose=0)


def test_backup_and_restore_resumes_an_interrupted_fit_as_the_straight_run(data, tmp_path):
    """Keras 3's BackupAndRestore: a fit interrupted in epoch 4 resumes at epoch 4 in the next fit
    (6 of 10 epochs run) and, with the optimizer's state and the shuffling stream restored, ends
    with the straight run's weights; the backup is gone once training ends (checked against
    Keras 3.15, which logs the same epochs)."""
    x, y = data
    backup = tmp_path / "backup"

    class Interrupt(callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 4:
                raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        _model().fit(
            x, y, epochs=10, batch_size=8, callbacks=[callbacks.BackupAndRestore(backup), Interrupt()], verbose=0
        )
    assert json.loads((backup / "training_metadata.json").read_text())["epoch"] == 4
    resumed = _model()
    hist = resumed.fit(x, y, epochs=10, batch_size=8, callbacks=[callbacks.BackupAndRestore(backup)], verbose=0)
    straight = _model()
    whole = straight.fit(x, y, epochs=10, batch_size=8, verbose=0)
    assert hist.epoch == [4, 5, 6, 7, 8, 9] and hist.history["loss"] == whole.history["loss"][4:]
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not backup.exists()
    with pytest.raises(ValueError, match="save_freq"):
        callbacks.BackupAndRestore(backup, save_freq="batch")
