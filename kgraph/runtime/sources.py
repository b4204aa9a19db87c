"""The batch sources fit, evaluate and predict take besides arrays, turned into re-iterable
iterables of batches (kgraph/runtime/batches.py walks them):

- a kgraph.data.Dataset: each epoch is a new pass; its cardinality, when known, is the epoch's
  number of batches (the progress bar's length); an infinite one needs steps_per_epoch;
- a Sequence-like object (`__len__` and `__getitem__`, as keras.utils.Sequence / PyDataset): its
  batches read by index 0 .. len - 1 (fit's shuffle: in a new random order each epoch, as Keras
  reads them), then its on_epoch_end() if it has one;
- a list of batches: a list whose items are all tuples (x, y) or (x, y, sample_weight) of arrays.
  Any other list is arrays (a model's several inputs, or nested lists of numbers);
- any other iterable or generator, as before (one pass per iter(); a generator has one).
"""

from __future__ import annotations

import numpy as np

from ..data import INFINITE, Dataset


def _is_batch_tuple(item) -> bool:
    return (
        isinstance(item, tuple)
        and len(item) in (2, 3)
        and isinstance(item[0], (np.ndarray, list, tuple, dict))
        and np.ndim(_first_array(item[0])) >= 1
    )


def _first_array(x):
    if isinstance(x, dict):
        return next(iter(x.values()), None)
    if isinstance(x, (list, tuple)) and x and isinstance(x[0], np.ndarray):
        return x[0]
    return x


def is_batch_list(x) -> bool:
    """A list of (x, y[, sample_weight]) tuples of arrays, rather than a list of input arrays."""
    return isinstance(x, list) and len(x) > 0 and all(_is_batch_tuple(item) for item in x)


def is_sequence(x) -> bool:
    """Sequence-like: indexable batches with a length, and not arrays."""
    return (
        not isinstance(x, (np.ndarray, list, tuple, dict, str, bytes, Dataset))
        and hasattr(x, "__len__")
        and hasattr(x, "__getitem__")
        and not hasattr(x, "__array__")
    )


class BatchList:
    """A list of batches, walked once per epoch."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


class SequenceBatches:
    """A Sequence's batches by index, one pass per iter() (with `rng`, in a new order each pass),
    then its on_epoch_end()."""

    def __init__(self, sequence, rng=None):
        self.sequence, self.rng = sequence, rng

    def __iter__(self):
        n, done = len(self.sequence), 0
        order = range(n) if self.rng is None else self.rng.permutation(n).tolist()
        try:
            for k, i in enumerate(order):
                batch = self.sequence[i]
                done = k + 1
                yield batch
        finally:  # also when the epoch loop drops the pass after its last batch
            if done == n and hasattr(self.sequence, "on_epoch_end"):
                self.sequence.on_epoch_end()

    def __len__(self):
        return len(self.sequence)


def adapt(x, shuffle_rng=None):
    """x as fit reads it: a list of batches or a Sequence becomes a re-iterable of batches (a
    Sequence's shuffled by `shuffle_rng` when given: fit's shuffle, which Keras applies to a
    PyDataset's batch order, and not to a list's or a dataset's); anything else is returned as it is."""
    if isinstance(x, SequenceBatches):  # adapted before (to build the model from): in this call's order
        x = x.sequence
    if is_batch_list(x):
        return BatchList(x)
    if is_sequence(x):
        return SequenceBatches(x, shuffle_rng)
    return x


def known_batches(source):
    """The number of batches in one pass of a source that knows it (a Dataset of known
    cardinality, a Sequence, a list of batches), else None."""
    if isinstance(source, Dataset):
        n = int(source.cardinality())
        return n if n >= 0 else None
    if isinstance(source, (BatchList, SequenceBatches)):
        return len(source)
    return None


def reiterable(source) -> bool:
    """Whether each iter() of the source is a new pass (so peeking at a batch costs none)."""
    return isinstance(source, (Dataset, BatchList, SequenceBatches))


def check_steps(source, steps, argument) -> None:
    """Keras's error for an infinitely repeating dataset without a number of steps."""
    if steps is None and isinstance(source, Dataset) and int(source.cardinality()) == INFINITE:
        raise ValueError(
            f"When passing an infinitely repeating dataset, please specify a `{argument}` value so "
            "that epoch level callbacks continue to work. The value can be arbitrary, or a number "
            "that you think correctly defines the size of an epoch. Epoch-level callbacks will then "
            "be called at this interval."
        )
