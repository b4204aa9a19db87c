"""fit runs several training steps per call of the compiled step (kgraph/runtime/model.py's
StepsPerCall): the same numbers as one step a call, with callbacks that need every batch served."""

from pathlib import Path

import numpy as np
import pytest

from kgraph import callbacks, models, optimizers
from kgraph.datasets import digits

EXAMPLE = Path(__file__).parent.parent / "examples" / "digits_mlp.json"


def _fit(steps_per_execution=None, optimizer="adam", callback_list=None, epochs=2):
    (x, y), (xv, yv) = digits.load_data()
    model = models.load_model(EXAMPLE, seed=1)  # dropout: masks drawn step by step all the same
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    history = model.fit(
        x[:1000], y[:1000], batch_size=32, epochs=epochs, validation_data=(xv, yv), verbose=0, callbacks=callback_list
    )  # 1000 = 31 batches of 32 and one of 8, shuffled
    return history.history, model.get_weights()


def _same(a, b):
    assert a[0] == b[0]
    for wa, wb in zip(a[1], b[1]):
        np.testing.assert_array_equal(wa, wb)


def test_several_steps_a_call_compute_what_one_a_call_does(calls):
    one = _fit(steps_per_execution=1)
    assert set(calls) == {1}
    calls.clear()
    _same(_fit(), one)
    assert max(calls) > 1 and sum(calls) == 2 * 32  # every batch once, the last (partial) one alone
    calls.clear()
    _same(_fit(steps_per_execution=5), one)
    assert calls[:7] == [5, 5, 5, 5, 5, 5, 1] and sum(calls) == 2 * 32


@pytest.mark.parametrize("source", ["dataset", "generator"])
def test_an_iterable_runs_several_steps_a_call_with_the_numbers_of_one(calls, source):
    """A Dataset's (or a generator's) batches of one shape are joined into runs, as arrays' are:
    the same history and weights as one step a call; the partial last batch runs alone."""
    from kgraph.data import Dataset

    (x, y), _ = digits.load_data()
    x, y = x[:1000], y[:1000]

    def fit(steps_per_execution):
        model = models.load_model(EXAMPLE, seed=1)
        model.compile(
            optimizer="adam",
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            steps_per_execution=steps_per_execution,
        )
        data = (
            Dataset.from_tensor_slices((x, y)).batch(32)
            if source == "dataset"
            else [(x[i : i + 32], y[i : i + 32]) for i in range(0, 1000, 32)]
        )
        history = model.fit(data, epochs=2, verbose=0)
        return history.history, model.get_weights()

    one = fit(1)
    assert set(calls) == {1} and len(calls) == 2 * 32
    calls.clear()
    _same(fit(None), one)
    assert max(calls) > 1 and sum(calls) == 2 * 32
    calls.clear()
    _same(fit(5), one)
    assert calls[:7] == [5, 5, 5, 5, 5, 5, 1] and sum(calls) == 2 * 32


@pytest.mark.parametrize("source", ["dataset", "generator"])
def test_steps_per_epoch_over_an_iterable_runs_several_steps_a_call(calls, source):
    """The Keras guide's `.batch(32).repeat()` with steps_per_epoch (and validation_steps): runs of
    batches within each epoch, the same history and weights as one step a call."""
    from kgraph.data import Dataset

    (x, y), (xv, yv) = digits.load_data()
    x, y = x[:640], y[:640]

    def fit(steps_per_execution):
        model = models.load_model(EXAMPLE, seed=1)
        model.compile(
            optimizer="adam",
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            steps_per_execution=steps_per_execution,
        )
        if source == "dataset":
            data = Dataset.from_tensor_slices((x, y)).shuffle(640, seed=0).batch(32).repeat()
        else:
            data = ((x[i : i + 32], y[i : i + 32]) for _ in range(3) for i in range(0, 640, 32))
        val = Dataset.from_tensor_slices((xv, yv)).batch(32).repeat()
        history = model.fit(data, steps_per_epoch=25, epochs=2, validation_data=val, validation_steps=3, verbose=0)
        return history.history, model.get_weights()

    one = fit(1)
    assert len(calls) == 2 * 25
    calls.clear()
    _same(fit(None), one)
    assert max(calls) > 1 and sum(calls) == 2 * 25
    calls.clear()
    _same(fit(10), one)
    assert calls == [10, 10, 5] * 2


def test_a_run_of_adjacent_batches_is_a_view_and_others_a_copy():
    from kgraph.runtime.model import _join

    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    joined = _join([x[0:2], x[2:5], x[5:6]])  # a Dataset's batches of consecutive rows
    assert np.shares_memory(joined, x) and np.array_equal(joined, x[:6])
    gap = _join([x[0:2], x[3:5]])
    assert not np.shares_memory(gap, x) and np.array_equal(gap, np.concatenate([x[0:2], x[3:5]]))


def test_a_learning_rate_schedule_steps_inside_a_call():
    def schedule():
        return optimizers.get(
            {
                "class_name": "SGD",
                "config": {
                    "learning_rate": {
                        "class_name": "ExponentialDecay",
                        "config": {"initial_learning_rate": 0.5, "decay_steps": 3, "decay_rate": 0.5},
                    }
                },
            }
        )

    _same(_fit(steps_per_execution=8, optimizer=schedule()), _fit(steps_per_execution=1, optimizer=schedule()))


def test_callbacks_with_batch_hooks_see_every_batch_unless_asked(calls):
    ends = []
    hook = callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: ends.append(batch))
    _fit(callback_list=[hook], epochs=1)
    assert set(calls) == {1} and ends == list(range(32))
    ends.clear()
    calls.clear()
    _fit(steps_per_execution=10, callback_list=[hook], epochs=1)  # as Keras: the hooks run once a call
    assert calls == [10, 10, 10, 1, 1] and ends == [9, 19, 29, 30, 31]


def test_steps_per_execution_must_be_a_positive_integer():
    model = models.load_model(EXAMPLE)
    with pytest.raises(ValueError, match="steps_per_execution"):
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", steps_per_execution=0)


def test_calls_are_short_while_the_thread_settings_are_timed():
    from kgraph.runtime.model import StepsPerCall

    probing = [True]
    per_call = StepsPerCall(probing=lambda step: probing[0])
    assert per_call() == 1  # nothing timed yet
    per_call.record(0.001, 4)  # 250 us a step
    assert per_call() == round(StepsPerCall.PROBE_TARGET / 250e-6)
    probing[0] = False
    assert per_call() == round(StepsPerCall.TARGET / 250e-6)
    per_call.record(1e-6, 1)
    assert per_call() == StepsPerCall.MOST
    assert StepsPerCall(fixed=5, probing=lambda step: True)() == 5  # compile(steps_per_execution=5) is kept


def test_the_first_call_of_a_step_starts_a_look():
    from kgraph.runtime.threads import ThreadPlan

    plan = ThreadPlan()
    assert plan.probing("train", 32)  # no tuner yet: the first calls time the options
