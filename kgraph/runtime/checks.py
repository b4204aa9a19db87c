"""What fit, evaluate, predict and the *_on_batch calls are given, checked before anything runs.

Every refusal is one DataError (a ValueError) that says what was given, what was expected and the
likely fix. The compiled kernels index arrays by class ids and token ids; these checks are what
keeps a bad id from ever reaching them (the kernels also guard their indices, see
kgraph/codegen/cpu_kernels.py gather_rows)."""

from __future__ import annotations

import numbers
import os

import numpy as np


class DataError(ValueError):
    """Data or arguments that do not fit the model: says what was given and what was expected."""


def allow_nonfinite() -> bool:
    """NaN or inf in inputs and targets is an error unless KGRAPH_ALLOW_NONFINITE=1 (then it is
    trained on, as Keras does)."""
    return os.environ.get("KGRAPH_ALLOW_NONFINITE", "") not in ("", "0")


# ---------------------------------------------------------------------- arguments


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(value, name: str, allow_none=False):
    """A positive integer argument (batch_size, steps...), or None where that means 'default'."""
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < 1:
        raise DataError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_verbose(verbose) -> int:
    if verbose == "auto":
        return 1
    if not _is_int(verbose) or verbose not in (0, 1, 2):
        raise DataError(f"verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
    return int(verbose)


def check_fit_args(epochs, initial_epoch, validation_split, validation_data) -> None:
    """Keras's rules: epochs <= initial_epoch trains nothing (Keras accepts it); a validation_split
    outside [0, 1) is an error."""
    if not _is_int(epochs):
        raise DataError(f"epochs must be an integer, got {epochs!r}")
    if not _is_int(initial_epoch) or initial_epoch < 0:
        raise DataError(f"initial_epoch must be a non-negative integer, got {initial_epoch!r}")
    if not isinstance(validation_split, numbers.Real) or not 0 <= validation_split < 1:
        raise DataError(
            f"validation_split must be in [0, 1), got {validation_split!r} "
            "(the fraction of the samples kept for validation, e.g. 0.1)"
        )
    if (
        validation_data is not None
        and not isinstance(validation_data, (tuple, list))
        and not hasattr(validation_data, "__iter__")
    ):
        raise DataError(
            f"validation_data must be (x_val, y_val), (x_val, y_val, sample_weight) or an iterable "
            f"of batches, got {type(validation_data).__name__}"
        )
    if isinstance(validation_data, (tuple, list)) and len(validation_data) not in (2, 3):
        raise DataError(
            f"validation_data must be (x_val, y_val) or (x_val, y_val, sample_weight), "
            f"got a {type(validation_data).__name__} of {len(validation_data)} items"
        )


# ---------------------------------------------------------------------- arrays


def _where_first(mask) -> str:
    index = [int(i) for i in np.argwhere(mask)[0]]
    return f"sample {index[0]}" if len(index) == 1 else f"sample {index[0]}, position {tuple(index[1:])}"


def _number(value) -> str:
    """A value as a user wrote it: 1073741824, not 1.07374e+09."""
    value = value.item() if hasattr(value, "item") else value
    return str(int(value)) if float(value).is_integer() else repr(value)


def as_array(value, what: str) -> np.ndarray:
    """`value` (an array, or nested lists of numbers) as a NumPy array of numbers."""
    if value is None:
        raise DataError(f"{what} is None")
    try:
        a = np.asarray(value)
    except ValueError as e:  # ragged nested lists
        raise DataError(f"{what} is not a rectangular array of numbers ({e})") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise DataError(
            f"{what} must hold numbers, got an array of dtype {a.dtype} (first item {str(a.flat[0])!r})"
            if a.size
            else f"{what} must hold numbers, got dtype {a.dtype}"
        )
    if a.ndim == 0:
        raise DataError(f"{what} is a single number; give an array with one row per sample")
    if np.issubdtype(a.dtype, np.complexfloating):
        raise DataError(f"{what} holds complex numbers; give real ones")
    return a


def check_finite(a: np.ndarray, what: str) -> None:
    if np.issubdtype(a.dtype, np.floating) and not allow_nonfinite():
        bad = ~np.isfinite(a)
        if bad.any():
            value = a[tuple(np.argwhere(bad)[0])].item()
            raise DataError(
                f"{what} has {int(bad.sum())} non-finite values ({value} at {_where_first(bad)}); "
                "clean the data, or set KGRAPH_ALLOW_NONFINITE=1 to train on it as Keras does"
            )


def check_same_length(named: list) -> int:
    """named: [(what, array)] that must all have one row per sample; returns the sample count."""
    lengths = {what: len(a) for what, a in named}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{what} has {n}" for what, n in lengths.items())
        raise DataError(
            f"the arrays have different numbers of samples: {shown}; every input, target and "
            "sample weight needs one row per sample"
        )
    n = next(iter(lengths.values()))
    if n == 0:
        raise DataError(f"{named[0][0]} has no samples (shape {named[0][1].shape})")
    return n


def check_class_ids(y: np.ndarray, classes: int, what: str) -> None:
    """Sparse class labels: whole numbers in 0 .. classes-1."""
    if np.issubdtype(y.dtype, np.floating):
        if not np.isfinite(y).all():
            raise DataError(f"{what}: a non-finite label (NaN or inf) at {_where_first(~np.isfinite(y))}")
        fractional = y != np.floor(y)
        if fractional.any():
            raise DataError(
                f"{what} are class ids, but {y[fractional][0].item()} at {_where_first(fractional)} is not a "
                f"whole number (for one-hot or probability targets use categorical_crossentropy)"
            )
    if y.size == 0:
        return
    low, high = y.min(), y.max()
    top = f"{classes} classes (0-{classes - 1})"
    if high >= classes:
        hint = (
            ": are they 1-based? (use y - 1)"
            if high == classes and low >= 1
            else f": every label must be below {classes}"
        )
        raise DataError(f"{what} go up to {_number(high)} but the model has {top}{hint}")
    if low < 0:
        raise DataError(f"{what} include {_number(low)} but the model has {top}: class ids start at 0")


def check_token_ids(x: np.ndarray, limit: int, what: str, layer: str) -> None:
    """Ids read by an Embedding of input_dim `limit`: truncated to integers as Keras casts them, in
    0 .. limit-1."""
    if not np.isfinite(x).all():
        raise DataError(f"{what} feeds Embedding {layer!r}, and has a non-finite id at {_where_first(~np.isfinite(x))}")
    if x.size == 0:
        return
    ids = np.trunc(x) if np.issubdtype(x.dtype, np.floating) else x
    low, high = ids.min(), ids.max()
    if low < 0 or high >= limit:
        bad = (ids < 0) | (ids >= limit)
        raise DataError(
            f"{what} feeds Embedding {layer!r} (input_dim {limit}): ids must be in 0-{limit - 1}, "
            f"got {_number(ids[bad][0])} at {_where_first(bad)}"
        )


def validation_epochs(validation_freq):
    """fit's validation_freq as Keras 3 reads it: an int n validates after every n-th epoch, a list
    after the (1-based) epochs it holds. Returns a test of a 1-based epoch."""
    if isinstance(validation_freq, bool) or not isinstance(validation_freq, (int, list)):
        raise ValueError(
            "Expected `validation_freq` to be a list or int. "
            f"Received: validation_freq={validation_freq} of the type {type(validation_freq)}."
        )
    if isinstance(validation_freq, int):
        n = positive_int(validation_freq, "validation_freq")
        return lambda epoch: epoch % n == 0
    return lambda epoch: epoch in validation_freq
