"""kgraph.data.Dataset against tf.data's documented semantics, and fit / evaluate / predict fed
from a Dataset, a Sequence-like object and a list of batches (the same weights as arrays)."""

import json
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import kgraph.distribute
import kgraph.models
import kgraph.runtime.batches
from kgraph import callbacks, optimizers
from kgraph.data import INFINITE, UNKNOWN, Dataset, TensorSpec

CONFIG = json.loads((Path(__file__).parent / "fixtures" / "tf" / "mlp_adam.json").read_text())["model_config"]


def rows(ds):
    return [np.asarray(e).tolist() for e in ds]


# ------------------------------------------------------------------ the Dataset itself
def test_from_tensor_slices_slices_rows_of_arrays_tuples_and_dicts():
    x, y = np.arange(12).reshape(6, 2), np.arange(6) * 10
    assert rows(Dataset.from_tensor_slices(x)) == x.tolist()
    pairs = list(Dataset.from_tensor_slices((x, y)))
    assert [(a.tolist(), int(b)) for a, b in pairs] == [(a.tolist(), int(b)) for a, b in zip(x, y)]
    named = list(Dataset.from_tensor_slices(({"a": x, "b": y}, y)).batch(4))
    assert named[0][0]["a"].tolist() == x[:4].tolist() and named[0][0]["b"].tolist() == y[:4].tolist()
    assert named[1][1].tolist() == y[4:].tolist()
    assert rows(Dataset.from_tensor_slices([1, 2, 3])) == [1, 2, 3]  # a list is one tensor, as in tf
    with pytest.raises(ValueError, match="same number of rows"):
        Dataset.from_tensor_slices((x, y[:5]))


def test_batch_keeps_order_and_the_remainder_unless_dropped():
    ds = Dataset.range(10)
    assert rows(ds.batch(4)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert ds.batch(4).cardinality() == 3
    assert rows(ds.batch(4, drop_remainder=True)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert ds.batch(4, drop_remainder=True).cardinality() == 2
    with pytest.raises(ValueError, match="batch_size"):
        ds.batch(0)


def test_array_batches_are_views_or_one_gather():
    x = np.arange(40.0).reshape(20, 2)
    first = next(iter(Dataset.from_tensor_slices(x).batch(8)))
    assert np.shares_memory(first, x)  # consecutive rows: a slice of the source
    shuffled = next(iter(Dataset.from_tensor_slices(x).shuffle(20, seed=0).batch(8)))
    assert not np.shares_memory(shuffled, x) and shuffled.shape == (8, 2)
    assert set(shuffled[:, 0] // 2) <= set(range(20))


def test_shuffle_is_a_permutation_per_pass_reproducible_with_a_seed():
    ds = Dataset.range(50).shuffle(50, seed=7)
    first, second = rows(ds), rows(ds)
    assert sorted(first) == list(range(50)) and sorted(second) == list(range(50))
    assert first != list(range(50)) and first != second  # reshuffled each iteration
    again = Dataset.range(50).shuffle(50, seed=7)
    assert rows(again) == first and rows(again) == second  # the same seed: the same orders
    fixed = Dataset.range(50).shuffle(50, seed=7, reshuffle_each_iteration=False)
    assert rows(fixed) == rows(fixed)
    assert rows(Dataset.range(50).shuffle(50, seed=8)) != first
    # shuffle then repeat: each repetition is a new order
    twice = rows(Dataset.range(20).shuffle(20, seed=1).repeat(2))
    assert sorted(twice[:20]) == sorted(twice[20:]) == list(range(20)) and twice[:20] != twice[20:]


def test_a_small_shuffle_buffer_only_shuffles_locally():
    assert rows(Dataset.range(30).shuffle(1, seed=0)) == list(range(30))
    out = rows(Dataset.range(200).shuffle(5, seed=0))
    assert sorted(out) == list(range(200)) and out != list(range(200))
    # output i is drawn from a buffer holding inputs up to i + buffer_size - 1
    assert all(v <= i + 4 for i, v in enumerate(out))
    # the same on a generator (element by element) and on batches of the index stream
    gen = Dataset.from_generator(lambda: iter(range(200))).shuffle(5, seed=0)
    assert sorted(rows(gen)) == list(range(200)) and all(v <= i + 4 for i, v in enumerate(rows(gen)))
    batched = np.concatenate(list(Dataset.range(200).shuffle(5, seed=0).batch(16))).tolist()
    assert sorted(batched) == list(range(200)) and all(v <= i + 4 for i, v in enumerate(batched))


def test_repeat_take_skip_and_cardinality():
    ds = Dataset.range(5)
    assert rows(ds.repeat(3)) == list(range(5)) * 3 and ds.repeat(3).cardinality() == 15
    assert ds.repeat().cardinality() == INFINITE and ds.repeat(-1).cardinality() == INFINITE
    assert rows(ds.repeat().take(12)) == (list(range(5)) * 3)[:12] and ds.repeat().take(12).cardinality() == 12
    assert rows(ds.take(3)) == [0, 1, 2] and rows(ds.take(10)) == list(range(5)) and ds.take(10).cardinality() == 5
    assert rows(ds.take(-1)) == list(range(5))
    assert rows(ds.skip(2)) == [2, 3, 4] and ds.skip(7).cardinality() == 0 and rows(ds.skip(-1)) == []
    assert ds.repeat().skip(3).cardinality() == INFINITE
    assert rows(ds.repeat(2).skip(3).take(4).batch(3)) == [[3, 4, 0], [1]]
    assert ds.repeat().batch(2).cardinality() == INFINITE
    assert ds.repeat(0).cardinality() == 0 and rows(ds.repeat(0)) == []
    with pytest.raises(TypeError, match="infinite"):
        len(ds.repeat())
    assert len(ds.batch(2)) == 3


def test_map_runs_on_elements_or_whole_batches():
    x, y = np.arange(6.0), np.arange(6)
    ds = Dataset.from_tensor_slices((x, y))
    assert [(float(a), int(b)) for a, b in ds.map(lambda a, b: (a * 2, b + 1))] == [
        (2 * a, b + 1) for a, b in zip(x, y)
    ]  # a tuple element's items are the arguments
    calls = []
    batched = ds.batch(4).map(lambda a, b: (calls.append(len(a)), a / 2)[1])
    assert [v.tolist() for v in batched] == [[0, 0.5, 1, 1.5], [2, 2.5]] and calls == [4, 2]
    assert ds.map(lambda a, b: a).cardinality() == 6


def test_from_generator_calls_the_generator_each_pass():
    calls = []

    def gen(n):
        calls.append(n)
        for i in range(n):
            yield np.full(3, i), i

    sig = (TensorSpec((None,), "float32"), TensorSpec((), "int32"))
    ds = Dataset.from_generator(gen, args=(5,), output_signature=sig)
    assert ds.cardinality() == UNKNOWN
    xb, yb = next(iter(ds.batch(2)))
    assert xb.dtype == np.float32 and yb.dtype == np.int32 and xb.tolist() == [[0] * 3, [1] * 3]
    assert len(list(ds.batch(2))) == 3 and calls == [5, 5]
    plain = Dataset.from_generator(lambda: ((i, i * i) for i in range(3)))
    assert [(int(a), int(b)) for a, b in plain] == [(0, 0), (1, 1), (2, 4)]
    with pytest.raises(TypeError, match="callable"):
        Dataset.from_generator(gen(3))
    bad = Dataset.from_generator(lambda: iter([np.zeros(4)]), output_signature=TensorSpec((3,), "float32"))
    with pytest.raises(ValueError, match="does not match"):
        list(bad)


def test_cache_replays_the_first_pass():
    calls = []

    def gen():
        calls.append(1)
        yield from range(4)

    ds = Dataset.from_generator(gen).batch(2).cache()
    assert rows(ds) == rows(ds) == [[0, 1], [2, 3]] and len(calls) == 1


def test_cache_after_a_shuffle_keeps_the_first_passs_order_as_tf_data():
    """tf.data's cache() replays the first complete pass: a shuffle before it is one order for
    every pass (tf.data 2.21 gives the same), one after it reshuffles; a pass left unfinished is
    not kept."""
    for ds in (
        Dataset.range(20).shuffle(20, seed=1).cache(),
        Dataset.range(20).shuffle(20, seed=1).batch(6).cache(),
        Dataset.from_generator(lambda: iter(range(20))).shuffle(20, seed=1).cache(),
    ):
        first = rows(ds)
        assert rows(ds) == first and sorted(np.ravel(np.concatenate([np.ravel(b) for b in first])).tolist()) == list(
            range(20)
        )
        assert first != rows(Dataset.range(20).batch(6) if len(first) == 4 else Dataset.range(20))
    after = Dataset.range(20).cache().shuffle(20, seed=1)
    assert rows(after) != rows(after)
    calls = []

    def gen():
        calls.append(1)
        yield from range(4)

    ds = Dataset.from_generator(gen).cache()
    assert rows(ds.take(2)) == [0, 1] and rows(ds) == rows(ds) == [0, 1, 2, 3] and len(calls) == 2


def test_batches_of_array_rows_stay_rows_through_later_transformations():
    """After batch(), shuffle / repeat / take / skip / cache / prefetch keep a Dataset of arrays a
    stream of each batch's rows (what fit reads a run of batches from at once): its batches are
    those rows of the arrays, and the same as a generator's under the same transformations."""
    x = np.arange(40).reshape(20, 2)
    base = Dataset.from_tensor_slices((x, x[:, 0]))
    gen = Dataset.from_generator(lambda: zip(x, x[:, 0]))
    plain = [
        lambda d: d.batch(6),
        lambda d: d.batch(6).skip(1).take(2),
        lambda d: d.batch(6).repeat(2).skip(3),
        lambda d: d.take(13).batch(6, drop_remainder=True).repeat().take(5),
        lambda d: d.batch(6).cache().prefetch(2),
    ]
    shuffled = [
        lambda d: d.shuffle(20, seed=0).batch(6).repeat(2),
        lambda d: d.batch(6).shuffle(3, seed=1),
        lambda d: d.shuffle(7, seed=2).batch(6).cache().take(3),
    ]
    for make in plain + shuffled:
        ds = make(base)
        assert ds.source_arrays() is not None
        got = [(a.tolist(), b.tolist()) for a, b in ds]
        read = [(x[list(r)].tolist(), x[list(r), 0].tolist()) for r in make(base).batch_rows()]  # the same seed
        assert got == read and got
        if make in plain:
            assert got == [(a.tolist(), b.tolist()) for a, b in make(gen)]
    for other in (
        base.batch(6).map(lambda a, b: (a, b)),
        base.batch(6).filter(lambda a, b: True),
        base.batch(2).batch(3),
    ):
        assert other.source_arrays() is None and other.batch_rows() is None


def test_a_run_of_batches_is_read_at_once():
    """fit's runs of batches of a Dataset of arrays: one slice (a view) of consecutive rows, one
    gather of shuffled ones; a batch of another size (the last) runs alone."""
    from kgraph.runtime.batches import EpochIterator, RowBatches

    x, y = np.arange(44.0).reshape(22, 2), np.arange(22)
    ds = Dataset.from_tensor_slices((x, y)).batch(4)  # 5 batches of 4 and one of 2
    source = RowBatches(ds, ([x], [y], []))
    runs = list(source.runs(EpochIterator(source).epoch(), lambda: 3))
    assert [(step, count, len(b[0][0])) for step, count, b in runs] == [(0, 3, 12), (3, 2, 8), (5, 1, 2)]
    assert all(np.shares_memory(b[0][0], x) for _, _, b in runs)
    assert np.array_equal(np.concatenate([b[1][0] for _, _, b in runs]), y)
    shuffled = Dataset.from_tensor_slices((x, y)).shuffle(22, seed=4, reshuffle_each_iteration=False).batch(4)
    source = RowBatches(shuffled, ([x], [y], []))
    order = np.concatenate([b for _, b in shuffled])
    runs, buffers = [], []
    for _, count, b in source.runs(EpochIterator(source).epoch(), lambda: 4):
        runs.append((count, b[0][0].copy(), b[1][0].copy()))
        buffers.append(b[0][0])
    assert [count for count, _, _ in runs] == [4, 1, 1]
    assert np.array_equal(np.concatenate([y for _, _, y in runs]), order)
    assert np.array_equal(np.concatenate([x for _, x, _ in runs]), x[order])
    assert all(np.shares_memory(b, buffers[0]) for b in buffers)  # one buffer, gathered into again


def test_prefetch_runs_ahead_in_a_thread_and_passes_errors_on():
    produced = []

    def gen():
        for i in range(10):
            produced.append(i)
            yield i

    it = iter(Dataset.from_generator(gen).prefetch(3))
    assert next(it) == 0
    deadline = time.time() + 5
    while len(produced) < 4 and time.time() < deadline:
        time.sleep(0.01)
    assert len(produced) >= 4  # the next elements were made while the consumer waited
    assert [int(v) for v in it] == list(range(1, 10))
    assert rows(Dataset.range(7).map(lambda v: v).batch(3).prefetch(1)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert rows(Dataset.range(7).batch(3).prefetch(1)) == [[0, 1, 2], [3, 4, 5], [6]]  # no thread needed

    def broken():
        yield 1
        raise RuntimeError("the pipeline broke")

    with pytest.raises(RuntimeError, match="pipeline broke"):
        list(Dataset.from_generator(broken).prefetch(2))
    # a consumer that stops early stops the thread
    before = threading.active_count()
    it = iter(Dataset.range(1000).repeat().prefetch(2))
    next(it)
    it.close()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.02)
    assert threading.active_count() == before


def test_pipelines_yield_what_tf_data_yields():
    """tests/fixtures/data/tf_data_pipelines.json: tf.data's elements and cardinalities for the same
    expressions (tools/make_tf_data_fixture.py)."""
    fixture = json.loads((Path(__file__).parent / "fixtures" / "data" / "tf_data_pipelines.json").read_text())
    D = Dataset  # noqa: F841 (the expressions use it)
    for expression, want in fixture["pipelines"].items():
        assert [np.asarray(e).tolist() for e in eval(expression)] == want, expression
    for expression, want in fixture["cardinality"].items():
        assert eval(expression).cardinality() == want, expression


# ------------------------------------------------------------------ fit, evaluate, predict
@pytest.fixture(scope="module")
def data():
    rs = np.random.RandomState(0)
    return rs.normal(size=(20, 12)).astype(np.float32), rs.randint(0, 5, size=20).astype(np.int32)


def _model(strategy=None):
    scope = strategy.scope() if strategy else kgraph.distribute.Strategy().scope()
    with scope:
        model = kgraph.models.model_from_config(CONFIG, seed=0)
        model.compile(
            optimizer=optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
    return model


def _same_weights(a, b):
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(u, v)


def test_fit_on_a_dataset_matches_fit_on_the_arrays_bit_for_bit(data):
    x, y = data
    a, b = _model(), _model()
    ha = a.fit(x, y, batch_size=8, epochs=3, shuffle=False, verbose=0)
    hb = b.fit(Dataset.from_tensor_slices((x, y)).batch(8).prefetch(2), epochs=3, verbose=0)
    assert ha.history == hb.history
    _same_weights(a, b)
    assert a.evaluate(x, y, batch_size=8, verbose=0) == b.evaluate(
        Dataset.from_tensor_slices((x, y)).batch(8), verbose=0
    )
    # the same batches (a GEMM's rounding can depend on its row count: BLAS picks kernels by shape)
    np.testing.assert_array_equal(
        a.predict(x, batch_size=8, verbose=0), b.predict(Dataset.from_tensor_slices(x).batch(8), verbose=0)
    )
    np.testing.assert_array_equal(
        a.predict(x, batch_size=8, verbose=0), b.predict(Dataset.from_tensor_slices((x, y)).batch(8), verbose=0)
    )


def test_fit_on_shuffled_weighted_datasets_matches_the_arrays_in_that_order(data, monkeypatch):
    """A Dataset shuffled once (its order read from the same pipeline), with sample weights in its
    batches or class_weight: the same weights as the arrays in that order; also where laying the
    arrays out whole would copy too much and each batch is laid out alone."""
    x, y = data
    sw = np.linspace(0.5, 1.5, 20)
    cw = {0: 2.0, 3: 0.5}

    def shuffled(*arrays):
        return Dataset.from_tensor_slices(arrays).shuffle(20, seed=3, reshuffle_each_iteration=False).batch(8)

    order = np.concatenate([i for _, i in shuffled(x, np.arange(20))])
    for copy_limit in (None, 0):
        if copy_limit is not None:  # float64 x must be copied to float32: over the limit
            monkeypatch.setattr(kgraph.runtime.batches.ArrayBatches, "SHUFFLE_COPY_BYTES", copy_limit)
        a, b = _model(), _model()
        a.fit(x[order], y[order], sample_weight=sw[order], batch_size=8, epochs=2, shuffle=False, verbose=0)
        b.fit(shuffled(x.astype(np.float64), y, sw), epochs=2, verbose=0)
        _same_weights(a, b)
        a, b = _model(), _model()
        a.fit(x[order], y[order], class_weight=cw, batch_size=8, epochs=2, shuffle=False, verbose=0)
        b.fit(shuffled(x, y), class_weight=cw, epochs=2, verbose=0)
        _same_weights(a, b)


def test_a_dataset_of_arrays_is_checked_once_before_the_first_step(data):
    """Batches of rows of arrays are checked once, whole, when fit starts (not batch by batch):
    a bad value anywhere stops fit before any step, naming its row in the arrays."""
    x, y = data
    bad = x.copy()
    bad[17, 3] = np.nan
    model = _model()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(
        kgraph.runtime.model.DataError, match=r"1 non-finite values \(nan at sample 17, position \(3,\)"
    ):
        model.fit(Dataset.from_tensor_slices((bad, y)).shuffle(20, seed=0).batch(8).repeat(2), epochs=1, verbose=0)
    for u, v in zip(before, model.get_weights()):
        np.testing.assert_array_equal(u, v)  # no step ran
    labels = y.copy()
    labels[19] = 5  # of 5 classes
    with pytest.raises(kgraph.runtime.model.DataError, match="5"):
        model.fit(Dataset.from_tensor_slices((x, labels)).batch(8), epochs=1, verbose=0)


def test_named_inputs_from_a_dataset_are_read_in_the_models_order():
    """A dict of inputs in another order than the model's, and int64 labels: the batches laid out
    without a per-batch check train exactly as the arrays do."""
    fixture = json.loads((Path(__file__).parent / "fixtures" / "tf" / "two_input_adam.json").read_text())
    rs = np.random.RandomState(1)
    a_in, b_in, y = rs.normal(size=(24, 12)), rs.normal(size=(24, 6)), rs.randint(0, 5, size=24).astype(np.int64)

    def model():
        m = kgraph.models.model_from_config(fixture["model_config"], seed=0)
        m.compile(optimizer=optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy")
        return m

    first, second = model(), model()
    names = first.info["input_names"]
    first.fit([a_in, b_in], y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    named = {names[1]: b_in, names[0]: a_in}  # not the model's order
    second.fit(Dataset.from_tensor_slices((named, y)).batch(8), epochs=2, verbose=0)
    _same_weights(first, second)


def test_a_dataset_of_known_cardinality_sets_the_epoch_length(data):
    x, y = data
    seen = []

    class Steps(callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen.append(self.params["steps"])

    _model().fit(Dataset.from_tensor_slices((x, y)).batch(6), epochs=1, verbose=0, callbacks=[Steps()])
    _model().fit(
        Dataset.from_tensor_slices((x, y)).batch(6).repeat(),
        steps_per_epoch=2,
        epochs=1,
        verbose=0,
        callbacks=[Steps()],
    )
    gen = Dataset.from_generator(lambda: iter([(x[:10], y[:10]), (x[10:], y[10:])]))
    hist = _model().fit(gen, epochs=2, verbose=0, callbacks=[Steps()])
    assert seen == [4, 2, None] and len(hist.history["loss"]) == 2  # a generator dataset: each epoch a pass


def test_an_infinite_dataset_needs_steps_as_in_keras(data):
    x, y = data
    forever = Dataset.from_tensor_slices((x, y)).shuffle(20, seed=0).batch(5).repeat()
    model = _model()
    with pytest.raises(ValueError, match="infinitely repeating dataset, please specify a `steps_per_epoch`"):
        model.fit(forever, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="`validation_steps`"):
        model.fit(x, y, validation_data=forever, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="`steps`"):
        model.evaluate(forever, verbose=0)
    with pytest.raises(ValueError, match="sample_weight` should not be passed"):
        model.fit(forever, steps_per_epoch=2, sample_weight=np.ones(20), verbose=0)
    hist = model.fit(forever, steps_per_epoch=3, epochs=3, validation_data=forever, validation_steps=2, verbose=0)
    assert len(hist.history["val_loss"]) == 3 and model.optimizer.iterations == 9
    assert model.predict(Dataset.from_tensor_slices(x).batch(5).repeat(), steps=3, verbose=0).shape == (15, 5)


def test_a_dataset_shorter_than_steps_per_epoch_warns_and_starts_again(data):
    x, y = data
    model = _model()
    with pytest.warns(UserWarning, match="ran out of data"):
        hist = model.fit(Dataset.from_tensor_slices((x, y)).batch(5), steps_per_epoch=3, epochs=2, verbose=0)
    # Keras: 3 of 4 batches in epoch one, the last batch in epoch two (the pass ends), then a new pass
    assert len(hist.history["loss"]) == 2 and model.optimizer.iterations == 4


def test_validation_steps_read_the_same_batches_every_epoch_as_keras_3(data):
    """Keras 3: with validation_steps, each epoch's evaluation starts from the beginning of the
    validation data (training data with steps_per_epoch carries on instead)."""
    x, y = data
    read = []

    class Val:
        def __len__(self):
            return 4

        def __getitem__(self, i):
            read.append(i)
            return x[i * 5 : (i + 1) * 5], y[i * 5 : (i + 1) * 5]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 3 of 4 batches: no "ran out of data"
        hist = _model().fit(x, y, epochs=3, validation_data=Val(), validation_steps=3, verbose=0)
    assert read == [0, 1, 2] * 3 and len(hist.history["val_loss"]) == 3
    val = Dataset.from_tensor_slices((x, y)).batch(5)
    a, b = _model(), _model()
    ha = a.fit(x, y, epochs=2, validation_data=val, validation_steps=2, verbose=0)
    hb = b.fit(x, y, epochs=2, validation_data=val.take(2), verbose=0)
    assert ha.history["val_loss"] == hb.history["val_loss"]


def test_running_out_of_data_warns_as_keras(data):
    """An empty Dataset trains nothing and says so; predict with more steps than batches says so."""
    x, y = data
    model = _model()
    with pytest.warns(UserWarning, match="ran out of data"):
        hist = model.fit(Dataset.from_tensor_slices((x, y)).batch(5).take(0), epochs=2, verbose=0)
    assert hist.history == {} and model.optimizer.iterations == 0
    with pytest.warns(UserWarning, match="ran out of data"):
        assert model.predict(Dataset.from_tensor_slices(x).batch(5), steps=9, verbose=0).shape == (20, 5)


def test_a_dataset_of_single_samples_is_told_to_batch(data):
    x, y = data
    model = _model()
    for call in (
        lambda: model.fit(Dataset.from_tensor_slices((x, y)), verbose=0),
        lambda: model.evaluate(Dataset.from_tensor_slices((x, y)), verbose=0),
        lambda: model.predict(Dataset.from_tensor_slices(x), verbose=0),
    ):
        with pytest.raises(kgraph.runtime.model.DataError, match=r"without its batch axis.*\.batch\(batch_size\)"):
            call()


class Batches:
    """A keras.utils.Sequence-like object: __len__, __getitem__ and on_epoch_end."""

    def __init__(self, x, y, size):
        self.x, self.y, self.size, self.ends = x, y, size, 0

    def __len__(self):
        return -(-len(self.x) // self.size)

    def __getitem__(self, i):
        return self.x[i * self.size : (i + 1) * self.size], self.y[i * self.size : (i + 1) * self.size]

    def on_epoch_end(self):
        self.ends += 1


def test_a_sequence_and_a_list_of_batches_train_as_the_arrays(data):
    x, y = data
    a, b, c = _model(), _model(), _model()
    ha = a.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    seq = Batches(x, y, 8)
    hb = b.fit(seq, epochs=2, shuffle=False, verbose=0)  # (fit's default shuffles a Sequence's batches)
    assert seq.ends == 2 and ha.history == hb.history
    _same_weights(a, b)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 20, 8)]
    hc = c.fit(batches, epochs=2, verbose=0)
    assert ha.history == hc.history
    _same_weights(a, c)
    expected = a.predict(x, batch_size=8, verbose=0)  # the same batches, so the same GEMM shapes
    np.testing.assert_array_equal(c.predict(batches, verbose=0), expected)
    np.testing.assert_array_equal(c.predict(Batches(x, y, 8), verbose=0), expected)
    assert c.evaluate(Batches(x, y, 8), verbose=0) == c.evaluate(x, y, batch_size=8, verbose=0)
    # a list of arrays is still a model's inputs (one input here: nested lists of numbers)
    np.testing.assert_allclose(c.predict([list(r) for r in x], verbose=0), a.predict(x, verbose=0), rtol=1e-6)


def test_fit_shuffles_a_sequences_batches_each_epoch_as_keras_does(data):
    """Keras 3 (and tf-keras's Sequence adapter) reads a PyDataset's batches in a new random order
    each epoch under fit's default shuffle=True; evaluate, predict and shuffle=False read them in
    order."""
    x, y = data

    class Logged(Batches):
        def __init__(self, *args):
            super().__init__(*args)
            self.order = []

        def __getitem__(self, i):
            self.order.append(i)
            return super().__getitem__(i)

    def read(model, call, **kwargs):
        seq = Logged(np.repeat(x, 4, axis=0), np.repeat(y, 4, axis=0), 4)  # 20 batches
        call(model, seq, **kwargs)
        return seq.order

    model = _model()
    fit = read(model, lambda m, s, **k: m.fit(s, epochs=3, verbose=0, **k))
    epochs = [fit[k * 20 : (k + 1) * 20] for k in range(3)]
    assert len(fit) == 60 and all(sorted(e) == list(range(20)) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 3 and list(range(20)) not in epochs
    in_order = list(range(20))
    assert read(model, lambda m, s: m.fit(s, epochs=2, shuffle=False, verbose=0)) == in_order * 2
    assert read(model, lambda m, s: m.evaluate(s, verbose=0)) == in_order
    assert read(model, lambda m, s: m.predict(s, verbose=0)) == in_order
    # seeded: the same orders for a model of the same seed
    assert read(_model(), lambda m, s, **k: m.fit(s, epochs=3, verbose=0)) == fit


def test_mirrored_strategy_splits_batches_from_every_source(data):
    x, y = data
    strategy = kgraph.distribute.MirroredStrategy(["cpu:0", "cpu:1"])
    ref = _model(strategy)
    ref.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    batches = [(x[i : i + 8], y[i : i + 8]) for i in range(0, 20, 8)]
    for source in (
        Dataset.from_tensor_slices((x, y)).batch(8),
        Batches(x, y, 8),
        batches,
        (batch for _ in range(2) for batch in batches),  # a generator: both epochs, steps_per_epoch=3
        Dataset.from_tensor_slices((x, y)).batch(8).repeat(),
    ):
        model = _model(strategy)
        steps = None if isinstance(source, (list, Batches)) else 3
        model.fit(source, epochs=2, shuffle=False, verbose=0, steps_per_epoch=steps)
        _same_weights(model, ref)
        model.replicas.check_identical()


def test_an_unbuilt_model_builds_from_a_dataset_and_trains_every_epoch():
    guide = Path(__file__).parent / "fixtures" / "unbuilt" / "keras216_guide.json"
    rs = np.random.RandomState(0)
    x, y = rs.random_sample((40, 32)).astype(np.float32), rs.random_sample((40, 10)).astype(np.float32)
    model = kgraph.models.load_model(guide, seed=0)
    assert not model.built
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    hist = model.fit(Dataset.from_tensor_slices((x, y)).batch(16), epochs=3, verbose=0)
    # the batch read to build the model is read again: 3 batches in each of the 3 epochs
    assert model.built and len(hist.history["loss"]) == 3 and model.optimizer.iterations == 9


def test_python_numbers_slice_as_tensorflow_types_them():
    """tf.data gives Python floats float32 and Python ints int32 (checked against TF 2.21); NumPy
    arrays and scalars keep their dtypes."""
    from kgraph.data import Dataset

    def first(ds):
        return next(iter(ds.as_numpy_iterator()))

    assert first(Dataset.from_tensor_slices([1.5, 2.5])).dtype == np.float32
    assert first(Dataset.from_tensor_slices([[1, 2]])).dtype == np.int32
    assert first(Dataset.from_tensor_slices([2**40])).dtype == np.int64  # beyond int32: kept, not wrapped
    assert first(Dataset.from_tensor_slices(np.array([1.5]))).dtype == np.float64
    assert first(Dataset.from_tensor_slices([1.5]).map(lambda v: np.float64(2.0))).dtype == np.float64
    assert first(Dataset.from_tensor_slices([np.float64(1.5), np.float64(2.5)])).dtype == np.float64


def test_zip_concatenate_enumerate_unbatch_as_tf_data():
    """Elements, dtypes and cardinalities as tf.data 2.21 gives them (checked on these pipelines),
    and a zipped (x, y) dataset trains as the arrays do."""
    a = Dataset.from_tensor_slices(np.arange(5, dtype="float32"))
    b = Dataset.from_tensor_slices((np.arange(3) * 10, np.ones((3, 2), "float32")))
    zipped = Dataset.zip(a, b)
    assert zipped.cardinality() == 3 and Dataset.zip(a.repeat(), b).cardinality() == 3
    first = next(iter(zipped))
    assert first[0] == 0.0 and first[1][0] == 0 and first[1][1].tolist() == [1.0, 1.0]
    assert [float(v) for v in a.concatenate(a.take(2))] == [0, 1, 2, 3, 4, 0, 1]
    assert a.take(1).concatenate(a.repeat()).cardinality() == -1
    assert [(int(i), float(v)) for i, v in a.enumerate(start=3)][:2] == [(3, 0.0), (4, 1.0)]
    unbatched = b.batch(2).unbatch()
    assert unbatched.cardinality() == UNKNOWN and [int(i) for i, _ in unbatched] == [0, 10, 20]
    assert [float(v) for v in Dataset.zip(a)] == [0, 1, 2, 3, 4]  # one dataset: its own elements
    assert Dataset.zip(a.filter(lambda v: v > 1), a.take(0)).cardinality() == UNKNOWN
    with pytest.raises(ValueError, match="unbatch: every component .* got a scalar"):
        list(a.unbatch())
    x, y = np.random.RandomState(0).rand(16, 12).astype("float32"), (np.arange(16) % 5).astype("int32")
    ds = Dataset.zip(Dataset.from_tensor_slices(x), Dataset.from_tensor_slices(y)).batch(8)
    model = _model()
    assert model.evaluate(ds, verbose=0) == pytest.approx(model.evaluate(x, y, batch_size=8, verbose=0), rel=1e-6)
