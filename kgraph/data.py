"""Input pipelines with tf.data's names and semantics, over NumPy arrays:

    ds = kgraph.data.Dataset.from_tensor_slices((x, y)).shuffle(1000, seed=0).batch(32).prefetch(2)
    model.fit(ds, epochs=5)

A Dataset is re-iterable: every `iter(ds)` is a new pass (a new shuffle order unless
reshuffle_each_iteration=False). Elements are NumPy arrays, or tuples and dicts of them.

Array sources are fast: from_tensor_slices followed by shuffle / repeat / take / skip carries only
an index stream, and batch() turns it into a stream of each batch's rows (a range, or an int array
when shuffled), which shuffle / repeat / take / skip / cache after batch() keep: a batch is read as
one slice (a view) or one np.take per array, and fit reads a run of batches at once (batch_rows);
no per-sample Python. Generators, map() and filter() are per element (or per batch after batch()),
as they are in tf.data.

shuffle(buffer_size) is tf.data's buffered shuffle: it fills a buffer of buffer_size elements and
draws each output at random from it, refilling the slot from the input. A buffer smaller than the
data only shuffles locally (with buffer_size=1 nothing moves); a buffer at least as large as one
pass of finite data gives a uniform permutation of each pass (one rng.permutation).
"""

from __future__ import annotations

import itertools
import math
import queue
import threading

import numpy as np

INFINITE = -1  # tf.data.INFINITE_CARDINALITY
UNKNOWN = -2  # tf.data.UNKNOWN_CARDINALITY
AUTOTUNE = -1  # tf.data.AUTOTUNE: prefetch then keeps PREFETCH_AUTOTUNE batches ready
PREFETCH_AUTOTUNE = 2

__all__ = ["Dataset", "TensorSpec", "INFINITE", "UNKNOWN", "AUTOTUNE", "INFINITE_CARDINALITY", "UNKNOWN_CARDINALITY"]
INFINITE_CARDINALITY, UNKNOWN_CARDINALITY = INFINITE, UNKNOWN


class Cardinality(int):
    """An int that also answers .numpy(), as tf's cardinality() tensor does."""

    def numpy(self) -> int:
        return int(self)


class TensorSpec:
    """The shape and dtype of one component of a generator's elements (tf.TensorSpec); None in
    the shape is any size."""

    def __init__(self, shape, dtype="float32", name=None):
        self.shape = None if shape is None else tuple(shape)
        self.dtype = np.dtype(getattr(dtype, "as_numpy_dtype", dtype))
        self.name = name

    def __repr__(self):
        return f"TensorSpec(shape={self.shape}, dtype={self.dtype.name})"


# ------------------------------------------------------------------ structures of arrays
def _flatten(structure) -> list:
    """The arrays of an element (tuples and dicts nest; anything else is one component)."""
    if isinstance(structure, tuple):
        return [leaf for item in structure for leaf in _flatten(item)]
    if isinstance(structure, dict):
        return [leaf for item in structure.values() for leaf in _flatten(item)]
    return [structure]


def _pack(template, leaves):
    """An element of template's nesting from its flat components."""
    it = iter(leaves)

    def build(t):
        if isinstance(t, tuple):
            return tuple(build(item) for item in t)
        if isinstance(t, dict):
            return {k: build(v) for k, v in t.items()}
        return next(it)

    return build(template)


def _as_arrays(structure):
    """Lists and scalars become arrays (tf.data reads a list as one tensor, not as a structure), of
    the dtypes TensorFlow gives Python numbers: float32 and int32 (NumPy's float64 and int64 are
    kept, as tf.data keeps them)."""
    if isinstance(structure, tuple):
        return tuple(_as_arrays(item) for item in structure)
    if isinstance(structure, dict):
        return {k: _as_arrays(v) for k, v in structure.items()}
    if isinstance(structure, np.ndarray):
        return structure
    array = np.asarray(structure)
    if array.dtype in (np.float64, np.int64) and _python_numbers(structure):
        with np.errstate(over="ignore"):
            narrow = array.astype(np.float32 if array.dtype == np.float64 else np.int32)
        # tf.constant refuses Python ints beyond int32; kgraph keeps them 64-bit rather than wrap
        return narrow if array.dtype == np.float64 or np.array_equal(narrow, array) else array
    return array


def _python_numbers(value) -> bool:
    """Whether value is a Python int or float, or lists of them (what tf.constant types as 32-bit)."""
    if isinstance(value, list):
        return all(_python_numbers(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, (bool, np.generic))


def _call(fn, element):
    """tf.data calls map's and filter's function with a tuple element's items as arguments."""
    return fn(*element) if isinstance(element, tuple) else fn(element)


def _buffered_shuffle(items, buffer_size, rng):
    """tf.data's shuffle: each output is drawn uniformly from a buffer of buffer_size items,
    and its slot refilled from the input; the rest of the buffer comes out in random order."""
    buffer = []
    draws, k = rng.integers(0, buffer_size, 4096), 0
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        if k == len(draws):
            draws, k = rng.integers(0, buffer_size, 4096), 0
        j = draws[k]
        k += 1
        yield buffer[j]
        buffer[j] = item
    for j in rng.permutation(len(buffer)):
        yield buffer[j]


def _buffered_shuffle_indices(chunks, buffer_size, rng):
    """_buffered_shuffle of an index stream, a chunk at a time with no per-index Python: step t of
    a chunk takes its item t in and gives out what slot draw[t] held, which is the item taken in
    at the slot's previous draw, or what the slot held when the chunk began."""
    buffer = np.empty(0, np.intp)
    for chunk in chunks:
        chunk = np.asarray(chunk, dtype=np.intp)
        if len(buffer) < buffer_size:  # filling
            fill = buffer_size - len(buffer)
            buffer, chunk = np.concatenate([buffer, chunk[:fill]]), chunk[fill:]
            if not len(chunk):
                continue
        draws = rng.integers(0, buffer_size, len(chunk))
        order = np.argsort(draws, kind="stable")  # each slot's draws, in time order
        slots = draws[order]
        again = slots[1:] == slots[:-1]  # order[k + 1] draws the slot order[k] drew
        previous = np.full(len(chunk), -1, np.intp)
        previous[order[1:][again]] = order[:-1][again]
        yield np.where(previous >= 0, chunk[previous], buffer[draws])
        last = np.append(~again, True)  # each slot's last draw in the chunk leaves its item there
        buffer = buffer.copy()
        buffer[slots[last]] = chunk[order[last]]
    yield buffer[rng.permutation(len(buffer))]


class Dataset:
    """A pipeline of elements. Build one with from_tensor_slices, from_generator or range, then
    chain batch, shuffle, repeat, map, take, skip, cache and prefetch."""

    def __init__(self, elements, cardinality, arrays=None, indices=None, batched=False):
        """elements: () -> iterator of elements (one pass). For an index stream over arrays,
        arrays is (template, flat arrays) and indices: () -> iterator of index chunks (ranges
        of step 1 or int arrays) of one pass: runs of rows, each row an element, or with
        `batched` each chunk one batch's rows."""
        self._elements = elements if arrays is None else self._elements_from_indices
        self._cardinality = cardinality
        self._arrays = arrays
        self._indices = indices
        self._batched = batched

    # ---------------------------------------------------------------- sources
    @staticmethod
    def from_tensor_slices(tensors, name=None) -> "Dataset":
        """Elements are the rows of the arrays: an array, a tuple (x, y[, w]) or a dict by input
        name, nested as you like; every array needs the same number of rows."""
        template = _as_arrays(tensors)
        leaves = _flatten(template)
        if any(a.ndim == 0 for a in leaves):
            raise ValueError(
                "from_tensor_slices needs arrays with at least one axis (the rows to slice), "
                f"got a scalar of shape {[a.shape for a in leaves if a.ndim == 0][0]}"
            )
        rows = {len(a) for a in leaves}
        if len(rows) > 1:
            raise ValueError(f"from_tensor_slices: all arrays need the same number of rows, got {sorted(rows)}")
        n = rows.pop()
        return Dataset(None, n, (template, leaves), lambda: iter([range(n)]))

    @staticmethod
    def range(*args, dtype="int64") -> "Dataset":
        """Dataset.range(stop) / (start, stop[, step]), as Python's range."""
        return Dataset.from_tensor_slices(np.arange(*args, dtype=dtype))

    @staticmethod
    def from_generator(
        generator, output_types=None, output_shapes=None, args=None, output_signature=None, name=None
    ) -> "Dataset":
        """Elements from generator(*args), called anew for each pass. With output_signature (a
        structure of TensorSpec) or output_types, each component is converted to its dtype and
        checked against its shape."""
        if not callable(generator):
            raise TypeError(
                "`generator` must be a Python callable (a function returning an iterator, e.g. "
                "lambda: my_generator()), as in tf.data; got a " + type(generator).__name__
            )
        args = tuple(args or ())
        specs = None
        if output_signature is not None:
            specs = _flatten(output_signature)
        elif output_types is not None:
            shapes = _flatten(output_shapes) if output_shapes is not None else [None] * len(_flatten(output_types))
            specs = [TensorSpec(s, t) for t, s in zip(_flatten(output_types), shapes)]

        def convert(element):
            element = _as_arrays(element)
            if specs is None:
                return element
            leaves = _flatten(element)
            if len(leaves) != len(specs):
                raise ValueError(f"from_generator: an element has {len(leaves)} components, the signature {len(specs)}")
            out = []
            for a, spec in zip(leaves, specs):
                a = a.astype(spec.dtype, copy=False)
                if spec.shape is not None and (
                    a.ndim != len(spec.shape) or any(d is not None and d != s for d, s in zip(spec.shape, a.shape))
                ):
                    raise ValueError(
                        f"from_generator: an element of shape {a.shape} does not match the signature's {spec}"
                    )
                out.append(a)
            return _pack(element, out)

        return Dataset(lambda: (convert(e) for e in generator(*args)), UNKNOWN)

    # ---------------------------------------------------------------- iteration
    def __iter__(self):
        return iter(self._elements())

    def as_numpy_iterator(self):
        """The elements as NumPy arrays (they are already)."""
        return iter(self)

    def cardinality(self) -> Cardinality:
        """The number of elements: INFINITE (-1) after repeat(), UNKNOWN (-2) for a generator."""
        return Cardinality(self._cardinality)

    def __len__(self):
        if self._cardinality == INFINITE:
            raise TypeError("The dataset is infinite.")
        if self._cardinality == UNKNOWN:
            raise TypeError("The dataset length is unknown.")
        return self._cardinality

    def __bool__(self):  # a Dataset is truthy even when empty, as tf's
        return True

    def source_arrays(self):
        """When every element is a batch of rows of the same arrays (from_tensor_slices, then batch,
        and any of shuffle, repeat, take, skip, cache, prefetch; no map or filter): those arrays
        whole, in the elements' structure, so a consumer can check them once. Else None."""
        if not self._batched:
            return None
        template, leaves = self._arrays
        return _pack(template, leaves)

    def batch_rows(self):
        """Where source_arrays() is not None: an iterator over one pass's batches, each as the rows
        of those arrays it holds (a range of step 1, or an int array). Else None."""
        return self._indices() if self._batched else None

    def _elements_from_indices(self):
        template, leaves = self._arrays
        if self._batched:
            for rows in self._indices():
                yield _pack(template, [a[_rows_index(rows)] for a in leaves])
            return
        for chunk in self._indices():
            for i in chunk:
                yield _pack(template, [a[i] for a in leaves])

    def _derive(self, elements, cardinality, indices=None, batch_indices=None):
        """A dataset after self: an index stream when self is one (`indices` over elements, or
        `batch_indices` over a stream of batches' rows; None where the transformation has none)."""
        index = batch_indices if self._batched else indices
        if self._arrays is not None and index is not None:
            return Dataset(None, cardinality, self._arrays, index, self._batched)
        return Dataset(elements, cardinality)

    # ---------------------------------------------------------------- transformations
    def batch(
        self, batch_size, drop_remainder=False, num_parallel_calls=None, deterministic=None, name=None
    ) -> "Dataset":
        """Consecutive elements stacked into batches of batch_size; the last one smaller unless
        drop_remainder."""
        batch_size = _count(batch_size, "batch_size", low=1)
        n = self._cardinality
        if n >= 0:
            n = n // batch_size if drop_remainder else math.ceil(n / batch_size)
        if self._arrays is not None and not self._batched:
            return Dataset(None, n, self._arrays, lambda: self._batch_indices(batch_size, drop_remainder), True)

        def batches():
            pending = []
            for element in self:
                pending.append(element)
                if len(pending) == batch_size:
                    yield _stack(pending)
                    pending = []
            if pending and not drop_remainder:
                yield _stack(pending)

        return Dataset(batches, n)

    def _batch_indices(self, batch_size, drop_remainder):
        """The rows of each batch of an index stream: a range where they are consecutive, else
        an int array."""
        pieces, count = [], 0
        for chunk in self._indices():
            if not count:  # whole batches of the chunk: slices of it (ranges of a range)
                whole = len(chunk) - len(chunk) % batch_size
                for start in range(0, whole, batch_size):
                    yield chunk[start : start + batch_size]
                chunk = chunk[whole:]
            while len(chunk):
                take = min(len(chunk), batch_size - count)
                pieces.append(chunk[:take])
                chunk, count = chunk[take:], count + take
                if count == batch_size:
                    yield join_rows(pieces)
                    pieces, count = [], 0
        if count and not drop_remainder:
            yield join_rows(pieces)

    def shuffle(self, buffer_size, seed=None, reshuffle_each_iteration=True, name=None) -> "Dataset":
        """tf.data's buffered shuffle (see the module's note). With a seed the orders are the same
        on every run; reshuffle_each_iteration=False gives every pass the same order."""
        buffer_size = _count(buffer_size, "buffer_size", low=1)
        base = np.random.SeedSequence().entropy if seed is None else int(seed)
        passes = itertools.count()
        n = self._cardinality

        def rng():
            return np.random.default_rng([base, next(passes) if reshuffle_each_iteration else 0])

        def elements():
            return _buffered_shuffle(iter(self), buffer_size, rng())

        def batch_indices():  # batches shuffled whole, as elements
            return _buffered_shuffle(self._indices(), buffer_size, rng())

        def indices():
            r = rng()
            if 0 <= n <= buffer_size:  # the buffer holds the whole pass: a permutation
                chunks = [np.asarray(c, dtype=np.intp) for c in self._indices()]
                order = np.concatenate(chunks) if chunks else np.empty(0, np.intp)
                yield order[r.permutation(len(order))]
                return
            yield from _buffered_shuffle_indices(self._indices(), buffer_size, r)

        return self._derive(elements, n, indices, batch_indices)

    def repeat(self, count=None, name=None) -> "Dataset":
        """The dataset count times (None or -1: forever); each repetition is a new pass."""
        count = -1 if count is None else int(count)
        n = self._cardinality
        if n == 0 or count == 0:
            card = 0
        elif count < 0:
            card = INFINITE
        else:
            card = n * count if n >= 0 else n

        def passes(make):
            for _ in itertools.count() if count < 0 else range(count):
                yield from make()

        return self._derive(
            lambda: passes(self.__iter__), card, lambda: passes(self._indices), lambda: passes(self._indices)
        )

    def take(self, count, name=None) -> "Dataset":
        """The first count elements (-1: all)."""
        count = int(count)
        n = self._cardinality
        if count < 0:
            return self
        card = count if n == INFINITE else (min(n, count) if n >= 0 else UNKNOWN)

        def indices():
            left = count
            for chunk in self._indices():
                if left <= 0:
                    return
                yield chunk[:left]
                left -= len(chunk)

        return self._derive(
            lambda: itertools.islice(self, count), card, indices, lambda: itertools.islice(self._indices(), count)
        )

    def skip(self, count, name=None) -> "Dataset":
        """All but the first count elements (-1: skip all)."""
        count = int(count)
        n = self._cardinality
        if count < 0:  # tf.data's cardinality stays infinite (its iteration never ends: here it yields nothing)
            ds = self.take(0)
            ds._cardinality = INFINITE if n == INFINITE else 0
            return ds
        card = n if n < 0 else max(0, n - count)

        def indices():
            left = count
            for chunk in self._indices():
                if left >= len(chunk):
                    left -= len(chunk)
                    continue
                yield chunk[left:]
                left = 0

        return self._derive(
            lambda: itertools.islice(self, count, None),
            card,
            indices,
            lambda: itertools.islice(self._indices(), count, None),
        )

    def map(self, map_func, num_parallel_calls=None, deterministic=None, name=None) -> "Dataset":
        """map_func on each element (a tuple element's items are its arguments). After batch()
        it runs once a batch, on whole arrays: the fast place for NumPy preprocessing."""
        return Dataset(lambda: (_as_arrays(_call(map_func, e)) for e in self), self._cardinality)

    @staticmethod
    def zip(*datasets, name=None) -> "Dataset":
        """Elements (a, b, ...) of the datasets side by side (one tuple of them, or several
        arguments), until the shortest ends."""
        if len(datasets) == 1 and isinstance(datasets[0], Dataset):  # tf.data: the dataset's own elements
            return datasets[0]
        if len(datasets) == 1 and isinstance(datasets[0], (tuple, list)):
            datasets = tuple(datasets[0])
        cards = [d._cardinality for d in datasets]
        finite = [c for c in cards if c >= 0]
        card = UNKNOWN if UNKNOWN in cards else min(finite) if finite else INFINITE
        return Dataset(lambda: zip(*datasets), card)

    def concatenate(self, dataset, name=None) -> "Dataset":
        """This dataset's elements, then `dataset`'s."""
        a, b = self._cardinality, dataset._cardinality
        card = INFINITE if INFINITE in (a, b) else UNKNOWN if UNKNOWN in (a, b) else a + b
        return Dataset(lambda: itertools.chain(self, dataset), card)

    def enumerate(self, start=0, name=None) -> "Dataset":
        """Elements (i, element), i counting from start (int64, as tf.data's)."""
        return Dataset(lambda: ((np.int64(i), e) for i, e in enumerate(self, int(start))), self._cardinality)

    def unbatch(self, name=None) -> "Dataset":
        """Each element's rows as elements (batch()'s inverse)."""

        def rows():
            for element in self:
                leaves = _flatten(element)
                if any(np.ndim(leaf) == 0 for leaf in leaves):
                    raise ValueError("unbatch: every component of an element needs a first axis to split; got a scalar")
                for i in range(len(leaves[0]) if leaves else 0):
                    yield _pack(element, [leaf[i] for leaf in leaves])

        return Dataset(rows, UNKNOWN)

    def filter(self, predicate, name=None) -> "Dataset":
        """The elements for which predicate is true."""
        return Dataset(lambda: (e for e in self if bool(_call(predicate, e))), UNKNOWN)  # tf's, even of an infinite one

    def cache(self, filename="", name=None) -> "Dataset":
        """Keeps the elements of the first complete pass in memory and replays them after: a
        shuffle before cache() is then the same order every pass, as in tf.data. Over arrays
        only the order of the rows is kept."""
        if filename:
            raise ValueError("cache(filename) is not supported: kgraph caches in memory (call cache())")
        if self._cardinality == INFINITE:
            return self  # tf.data never completes a pass to replay: it reads on as it is
        store = {}

        def replay(make):
            def items():
                if "done" in store:
                    yield from store["done"]
                    return
                seen = []
                for item in make():
                    seen.append(item)
                    yield item
                store["done"] = seen

            return items

        return self._derive(replay(self.__iter__), self._cardinality, replay(self._indices), replay(self._indices))

    def prefetch(self, buffer_size=AUTOTUNE, name=None) -> "Dataset":
        """A background thread keeps the next buffer_size elements (batches, after batch()) ready,
        so the training step does not wait on the pipeline's Python (a generator, map). Batches of
        arrays, a slice or one gather each, are handed over directly: a thread would not make them
        sooner, and would compete with the training step for the cores."""
        size = PREFETCH_AUTOTUNE if buffer_size in (None, AUTOTUNE) else _count(buffer_size, "buffer_size", low=1)
        if self._batched:
            return self
        return Dataset(lambda: _prefetched(self, size), self._cardinality)

    def __repr__(self):
        return f"<Dataset cardinality={self._cardinality}>"


def _count(value, what, low):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")
    return int(value)


def join_rows(pieces):
    """Pieces of an index stream (ranges of step 1 and int arrays) as one: a range where they are
    consecutive, else an int array."""
    first = pieces[0]
    if len(pieces) == 1:
        return first
    if isinstance(first, range) and all(isinstance(b, range) and a.stop == b.start for a, b in zip(pieces, pieces[1:])):
        return range(first.start, pieces[-1].stop)
    return np.concatenate([np.asarray(p, dtype=np.intp) for p in pieces])


def _rows_index(rows):
    """A batch's rows as an index: a slice (a view) for a range, else the int array."""
    return slice(rows.start, rows.stop) if isinstance(rows, range) else rows


def _stack(elements):
    """Elements of one structure stacked into a batch."""
    columns = zip(*[_flatten(e) for e in elements])
    try:
        return _pack(elements[0], [np.stack(c) for c in columns])
    except ValueError as e:
        raise ValueError(f"batch(): elements of different shapes cannot be stacked ({e})") from None


_DONE = object()


def _prefetched(dataset, size):
    """dataset's elements, produced by a daemon thread up to `size` ahead. The thread stops when
    the consumer stops (the generator is closed or collected); its errors reach the consumer."""
    ready = queue.Queue(size)
    stop = threading.Event()

    def produce():
        try:
            for element in dataset:
                while not stop.is_set():
                    try:
                        ready.put((element, None), timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if stop.is_set():
                    return
            item = (_DONE, None)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            item = (_DONE, e)
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return
            except queue.Full:
                pass

    thread = threading.Thread(target=produce, name="kgraph-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            element, error = ready.get()
            if element is _DONE:
                if error is not None:
                    raise error
                return
            yield element
    finally:
        stop.set()
