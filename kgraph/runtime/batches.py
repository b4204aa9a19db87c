"""The batches of each epoch, walked as Keras 3's EpochIterator walks them: from arrays (sliced
in order or shuffled each pass, the last batch partial) or from any Python iterable or generator
of (x, y) or (x, y, sample_weight) batches."""

from __future__ import annotations

import itertools
import math
import types
import warnings

import numpy as np

from ..data import join_rows
from .sources import known_batches

OUT_OF_DATA = (
    "Your input ran out of data; interrupting training. Make sure that your dataset or generator can "
    "generate at least `steps_per_epoch * epochs` batches."
)


REPLAYED = (
    "A generator is read once: each pass over it after the first starts again from its first {} batches "
    "(Keras 3 keeps them and reads them again too), then goes on with what the generator has left. Give a "
    "Dataset, a keras-style Sequence or a list of batches to read every batch each epoch."
)


class ArrayBatches:
    """One pass over arrays per iteration: lists (xs, ys, sws) of batch_size rows.

    Shuffling gathers the whole epoch's rows once, into buffers kept across epochs, and yields
    slices of them: a batch gathered just before its step sits modified in one core's cache, and
    a step split over the cores (kgraph/passes/split.py) then waits for the other cores to fetch it
    (784-128-10 at batch 32: 210 us a step instead of 138). Arrays larger than SHUFFLE_COPY_BYTES
    in all are gathered batch by batch instead, so that no second copy of them is kept."""

    SHUFFLE_COPY_BYTES = 1 << 30

    def __init__(self, xs, ys, sws, batch_size, shuffle=False, rng=None):
        self.arrays = (xs, ys, sws)
        self.n = len(xs[0])
        self.batch_size = batch_size
        self.shuffle, self.rng = shuffle, rng
        self.num_batches = max(1, math.ceil(self.n / batch_size))
        self._shuffled = None

    def __iter__(self):
        arrays, order = self.epoch_arrays()
        for step in range(self.num_batches):
            yield self.rows(arrays, order, step, 1)

    def epoch_arrays(self):
        """(arrays, order) of one pass: the arrays gathered in a new shuffled order when they fit
        in SHUFFLE_COPY_BYTES (order None), else the arrays themselves and the order to read them in."""
        arrays, order = self.arrays, None
        if self.shuffle:
            order = self.rng.permutation(self.n)
            if sum(a.nbytes for group in self.arrays for a in group) <= self.SHUFFLE_COPY_BYTES:
                arrays, order = self._gather(order), None
        return arrays, order

    def rows(self, arrays, order, step, count):
        """Batches step .. step + count - 1 of a pass, back to back in one (xs, ys, sws)."""
        rows = slice(step * self.batch_size, (step + count) * self.batch_size)
        if order is not None:
            rows = order[rows]
        return tuple([a[rows] for a in group] for group in arrays)

    def calls(self, steps_per_call):
        """One pass as (first step, steps, batches): runs of whole batches, as many as
        steps_per_call() says before each, then the partial last batch alone."""
        arrays, order = self.epoch_arrays()
        step, whole = 0, self.n // self.batch_size
        while step < self.num_batches:
            count = min(steps_per_call(), whole - step) if step < whole else 1
            yield step, count, self.rows(arrays, order, step, count)
            step += count

    def _gather(self, order):
        if self._shuffled is None:
            self._shuffled = tuple([np.empty_like(a) for a in group] for group in self.arrays)
        for group, copies in zip(self.arrays, self._shuffled):
            for a, copy in zip(group, copies):
                np.take(a, order, axis=0, out=copy)
        return self._shuffled


class IterableBatches:
    """Batches from a user's iterable; `convert` turns each item into (xs, ys, sws) lists. A
    source that knows its length (a Dataset of known cardinality, a Sequence, a list of batches)
    gives the epoch its number of batches.

    A generator is read once, so each pass starts with its first PEEKED batches again, then goes on
    with what it has left, as Keras 3 reads one (it keeps those batches from when it looked at the
    data's structure): a finite generator's later passes are those batches, where a pass over
    nothing had logged a validation loss of 0. (Training with steps_per_epoch draws every epoch
    from one pass: EpochIterator.)"""

    PEEKED = 2  # Keras 3's NUM_BATCHES_FOR_TENSOR_SPEC

    def __init__(self, data, convert):
        self.data, self.convert = data, convert
        self.num_batches = known_batches(data)
        self.batch_size = None  # the rows of the last batch (the thread tuner's key)
        self.peeked = list(itertools.islice(data, self.PEEKED)) if isinstance(data, types.GeneratorType) else None
        self.passes = 0

    def __iter__(self):
        items = self.data
        if self.peeked is not None:  # a generator: each pass starts with the batches Keras keeps
            if self.passes == 1:
                warnings.warn(REPLAYED.format(len(self.peeked)), stacklevel=2)
            self.passes += 1
            items = itertools.chain(self.peeked, self.data)
        for item in items:
            batch = self.convert(item)
            self.batch_size = len(batch[0][0]) if batch[0] else None
            yield batch


class RowBatches:
    """A Dataset's batches where each is rows of the arrays it was made from (Dataset.batch_rows):
    `arrays`, those arrays checked and laid out for the step once, as (xs, ys, sws). Iterating
    gives each batch's rows (a range or an int array), which EpochIterator walks as batches;
    `take(rows)` reads a batch, `runs` joins consecutive batches into one read (one slice, a
    view, or one gather) per call of the step, not one per batch."""

    def __init__(self, dataset, arrays):
        self.dataset, self.arrays = dataset, arrays
        self.num_batches = known_batches(dataset)
        self.batch_size = None  # the rows of the last batch (the thread tuner's key)
        self._gathered = None  # buffers the gathers write into, kept from call to call

    def take(self, rows):
        """The (xs, ys, sws) of these rows (one batch's or a run's): views of the arrays for a
        range, else gathered into buffers that the next take overwrites (a new array each time
        cost 784-128-10 at batch 32 a tenth of its step in page faults); the step, its metrics
        and callbacks are done with a batch before the next is taken."""
        if isinstance(rows, range):
            index = slice(rows.start, rows.stop)
            return tuple([a[index] for a in group] for group in self.arrays)
        n = len(rows)
        if self._gathered is None or len(self._gathered[0][0]) < n:
            self._gathered = tuple([np.empty((n, *a.shape[1:]), a.dtype) for a in group] for group in self.arrays)
        return tuple(
            [np.take(a, rows, axis=0, out=out[:n], mode="clip") for a, out in zip(group, outs)]  # rows are in range
            for group, outs in zip(self.arrays, self._gathered)
        )

    def __iter__(self):
        for rows in self.dataset.batch_rows():
            self.batch_size = len(rows)
            yield rows

    def runs(self, epoch, per_call):
        """An EpochIterator's epoch over these batches as (first step, steps, batches): runs of
        consecutive batches of one size, as many as per_call() says (every batch has the same
        shape past its rows, so the same step), read at once; a batch of another size (a last
        partial one) starts the next run."""
        pending = next(epoch, None)
        while pending is not None:
            step, first = pending
            run, pending, size = [first], None, len(first)
            want = per_call()
            while len(run) < want:
                pending = next(epoch, None)
                if pending is None or len(pending[1]) != size:
                    break
                run.append(pending[1])
                pending = None
            yield step, len(run), self.take(join_rows(run))
            if pending is None:
                pending = next(epoch, None)


def is_batch_source(x) -> bool:
    """Whether fit's x is an iterable of batches rather than arrays (a list, tuple or dict of
    arrays, or one array)."""
    return not isinstance(x, (np.ndarray, list, tuple, dict)) and hasattr(x, "__iter__")


class EpochIterator:
    """With steps_per_epoch, epochs draw that many batches from one iterator that carries on
    across epochs (a new pass starts when a pass of known length ends, and an epoch stops short,
    with Keras's warning, at the end of a pass); without it, every epoch is one pass. With
    `restart` (validation_steps: Keras 3 evaluates the same batches every epoch) each epoch starts
    a new pass. A source that runs out (before steps_per_epoch, an empty one, or a generator on its
    second pass) warns as Keras does and sets `exhausted`, which ends training."""

    def __init__(self, batches, steps_per_epoch=None, restart=False):
        self.batches = batches
        self.steps_per_epoch = steps_per_epoch
        self.restart = restart
        self.exhausted = False
        self._iterator, self._seen = None, 0

    @property
    def num_batches(self):
        return self.steps_per_epoch or self.batches.num_batches

    def epoch(self):
        """Yields (step, (xs, ys, sws)) for one epoch."""
        known = self.batches.num_batches
        if self._iterator is None or self.steps_per_epoch is None or self.restart:
            self._iterator, self._seen = iter(self.batches), 0
        steps = self.steps_per_epoch or known
        if steps == 0:  # a source of no batches (an empty Dataset, Sequence or list)
            warnings.warn(OUT_OF_DATA, stacklevel=3)
            self.exhausted = True
            return
        step = 0
        while steps is None or step < steps:
            if known is not None and self._seen >= known:  # a pass of arrays ended before steps_per_epoch
                warnings.warn(OUT_OF_DATA, stacklevel=3)
                break
            try:
                batch = next(self._iterator)
            except StopIteration:  # a generator without steps_per_epoch ends its only pass here
                if self.steps_per_epoch is not None or step == 0:
                    warnings.warn(OUT_OF_DATA, stacklevel=3)
                    self.exhausted = True
                break
            self._seen += 1
            yield step, batch
            step += 1
        if known is not None and self._seen >= known:
            self._iterator = None
