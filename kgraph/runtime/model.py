"""A compiled model: Keras's training API (fit, evaluate, predict, train_on_batch, weights)
over an Executable. It knows the compiled steps' inputs and outputs, never an op's maths."""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import time
import warnings
from pathlib import Path

import numpy as np

from ..data import Dataset, _flatten
from . import checks, sources
from .abi import Manifest
from .batches import OUT_OF_DATA, ArrayBatches, EpochIterator, IterableBatches, RowBatches, is_batch_source
from .callbacks import Callback, CallbackList, History, ProgbarLogger
from .checks import DataError  # noqa: F401  (kgraph.runtime.model.DataError, as before)
from .executable import Executable
from .files import atomic_write, read_npz_weights, write_npz_weights
from .metrics import Mean, build
from .policy import FREEZE_AFTER_SECONDS, freeze_compiled_objects, plain


def _gives_threads_back(loop):
    """fit, evaluate and predict: BLAS and Numba get their threads back when the loop ends, however
    it ends (the step's thread setting limits BLAS for the whole process while it runs)."""

    @functools.wraps(loop)
    def wrapper(self, *args, **kwargs):
        try:
            return loop(self, *args, **kwargs)
        finally:
            threads = getattr(self.executable, "threads", None)
            if threads is not None:
                threads.release()

    return wrapper


def _shape_str(shape) -> str:
    """(None, 10) or (None,), as Python prints a tuple."""
    return str(tuple(shape))


def _reshape_hint(got, want) -> str:
    """A likely fix for an input of the wrong shape."""
    if len(want) > 1 and tuple(got) == tuple(want[1:]):
        return (
            ": one sample without its batch axis; give batches (x[None] for a single sample; a Dataset of "
            "samples needs .batch(batch_size) before fit, evaluate or predict, as in Keras)"
        )
    order = _axes_order(got, want)
    if order is not None:
        return (
            f": the same dimensions in another order (channels first?); x.transpose({', '.join(map(str, order))}) "
            "puts them in the model's order (a reshape would scramble the values)"
        )
    if len(got) > 1 and None not in want[1:] and np.prod(got[1:]) == np.prod([d for d in want[1:]]):
        return f": the same number of values per sample; reshape with x.reshape(-1, {', '.join(map(str, want[1:]))})"
    if len(got) == 1:
        return ": one value per sample; if each row is a sample, x.reshape(-1, 1) or check the model's input"
    return ""


def output_keys(info: dict) -> list:
    """A dict of outputs' keys in the outputs' order (sorted, as Keras flattens a dict), or []."""
    return sorted(info.get("output_keys") or [])


def log_names(info: dict) -> list:
    """The outputs as the logs name them (val_<name>_loss, <name>_accuracy): a Keras 3 dict of
    outputs' keys, else the output layers' names (tf-keras 2's logs too)."""
    keys = output_keys(info)
    return keys if keys and info.get("logs_by_key", True) else list(info["output_names"])


def _axes_order(got, want):
    """The axes of `got` in `want`'s order, for x.transpose, when its sample dimensions are
    `want`'s in another order (equal sizes taken in turn: (3, 16, 16) -> (16, 16, 3) is
    (0, 2, 3, 1)); else None."""
    sample, target = list(got[1:]), list(want[1:])
    if len(sample) < 2 or None in target or sample == target or sorted(sample) != sorted(target):
        return None
    order, free = [0], list(range(1, len(got)))
    for size in target:
        axis = next(a for a in free if got[a] == size)
        order.append(axis)
        free.remove(axis)
    return tuple(order)


def _loss_hint(loss, got, want) -> str:
    """The likely mix-up of one-hot and integer labels, named."""
    if loss == "categorical_crossentropy" and len(got) <= 2 and (len(got) == 1 or got[1] == 1) and want[-1:] != (1,):
        return ": integer labels with categorical_crossentropy: use sparse_categorical_crossentropy, or one-hot labels"
    if loss == "sparse_categorical_crossentropy" and len(got) == len(want) + 2:
        return (
            ": one-hot labels with sparse_categorical_crossentropy: use categorical_crossentropy, "
            "or integer labels (y.argmax(-1))"
        )
    return ""


class CompiledModel:
    def __init__(self, executable: Executable, info: dict, optimizer=None):
        """info: {"input_names", "input_shapes", "output_names", "losses" (per output or None),
        "metrics": per output [{"name": log name, "key", "class", "config"}, ...], "dtype"}."""
        self.executable = executable
        self.info = info
        self.optimizer = optimizer
        self.stop_training = False
        self.history = None
        self.replicas = None  # set by a kgraph.distribute strategy
        self.steps_per_execution = None  # compile()'s: steps a call of the compiled step runs in fit
        self.is_chief = True  # only the chief replica prints and writes files
        self.shuffle_random = executable.random
        self._nonfinite_told = False  # a non-finite loss was reported

    @property
    def metrics_names(self) -> list:
        """The names of evaluate()'s list, in its order (Keras 2's model.metrics_names)."""
        return EpochLogs(self.info).names() if self.info.get("losses") else []

    # ------------------------------------------------------------------ weights
    def get_weights(self) -> list:
        return self.executable.get_weights()

    def set_weights(self, weights) -> None:
        self.executable.set_weights(weights)

    def save_weights(self, filepath, overwrite=True) -> None:
        """Weights in Keras's get_weights() order (.npz), written atomically."""
        if not overwrite and os.path.exists(filepath):
            raise FileExistsError(filepath)
        with atomic_write(filepath) as tmp:
            write_npz_weights(tmp, self.get_weights())

    def load_weights(self, filepath) -> None:
        self.set_weights(read_npz_weights(filepath))

    # ------------------------------------------------------------------ data
    def _inputs(self, x, checked=False) -> list:
        """The model's inputs from one array, a list or tuple of them (Keras input order) or a dict
        by input name: checked (numbers, shapes, finite, token ids in range; the values not again
        when `checked`) and as contiguous arrays of the model's dtype."""
        names, shapes = self.info["input_names"], self.info["input_shapes"]
        if x is None:
            raise DataError("x is None: give the model's inputs (an array, or a list or dict of arrays)")
        if isinstance(x, dict):
            missing = [n for n in names if n not in x]
            if missing:
                raise DataError(f"inputs {missing} are missing; the model's inputs are {names}, got {sorted(x)}")
            x = [x[n] for n in names]
        if isinstance(x, (list, tuple)) and len(names) == 1 and len(x) != 1:
            if all(isinstance(a, np.ndarray) and a.ndim >= 2 for a in x):
                raise DataError(f"the model has 1 input ({names[0]}), got a {type(x).__name__} of {len(x)} arrays")
            x = [x]  # one input given as nested lists of numbers (as np.asarray reads them)
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(names):
            count = f"{len(xs)} array{'' if len(xs) == 1 else 's'}"
            given = f"a {type(x).__name__} of {count}" if isinstance(x, (list, tuple)) else "one array"
            raise DataError(
                f"the model has {len(names)} inputs ({', '.join(names)}), got {given}: give a list of "
                f"{len(names)} arrays in that order, or a dict by input name"
            )
        tokens = {check["input"]: check for check in self.info.get("token_inputs", [])}
        out = []
        for k, (a, name, shape) in enumerate(zip(xs, names, shapes)):
            what = f"input {name!r}"
            a = np.asarray(a) if checked else checks.as_array(a, what)
            if a.ndim != len(shape) or any(d is not None and g != d for g, d in zip(a.shape[1:], shape[1:])):
                raise DataError(
                    f"{what}: data of shape {a.shape} does not match the model's input shape "
                    f"{_shape_str(shape)}" + _reshape_hint(a.shape, shape)
                )
            if checked:
                pass
            elif k in tokens:  # ids an Embedding reads: in its table, whatever KGRAPH_ALLOW_NONFINITE says
                checks.check_token_ids(a, tokens[k]["limit"], what, tokens[k]["layer"])
            else:
                checks.check_finite(a, what)
            out.append(a)
        checks.check_same_length([(f"input {n!r}", a) for n, a in zip(names, out)])
        return self._pad_lengths([np.ascontiguousarray(a, dtype=self.info["dtype"]) for a in out])

    def _pad_lengths(self, xs: list) -> list:
        """The inputs padded to the step's lengths (kgraph.models.Model pads variable-length
        sequences of a masked model to a few bucket lengths); here as given."""
        return xs

    def _step(self, kind: str, xs: list) -> str:
        """The name of the compiled step of `kind` that runs on inputs `xs` (kgraph.models.Model
        compiles one per input shape for a model with unknown dimensions)."""
        return kind

    def _step_name(self, kind: str, xs: list) -> str:
        """The name _step gives, without compiling anything (what fit's StepsPerCall keys on)."""
        return kind

    def _targets(self, y, labels, checked=False) -> list:
        """The targets of the outputs with a loss (`labels`: the step's BatchArrays for them),
        checked against each loss (class ids in range for the sparse ones; a hint when one-hot and
        sparse labels are swapped; the values not again when `checked`)."""
        outputs = self._loss_outputs()
        if y is None:
            raise DataError(
                "y is None: the model was compiled with a loss and needs targets (fit(x, y), or a "
                "generator of (x, y) batches)"
            )
        if isinstance(y, dict):
            y = self._keyed(y, by_key=False)
            missing = [n for n in outputs if n not in y]
            if missing:
                raise DataError(
                    f"targets for outputs {self._shown(missing)} are missing; the outputs with a loss are "
                    f"{self._shown(outputs)}"
                )
            y = [y[n] for n in outputs]
        names = self.info["output_names"]
        if (
            isinstance(y, (list, tuple))
            and len(labels) < len(names) == len(y)
            and all(hasattr(a, "shape") and np.ndim(a) and len(a) == len(y[0]) for a in y)
        ):
            # one target per output, as Keras takes them, those of outputs without a loss unread
            y = [y[names.index(n)] for n in outputs]
        if isinstance(y, (list, tuple)) and len(labels) == 1 and len(y) != 1:
            y = [y]
        ys = list(y) if isinstance(y, (list, tuple)) else [y]
        if len(ys) != len(labels):
            raise DataError(
                f"the model has {len(labels)} outputs with a loss ({', '.join(outputs)}), got {len(ys)} target arrays"
            )
        targets = self.info.get("targets") or [{}] * len(labels)
        out = []
        for a, spec, target, name in zip(ys, labels, targets, outputs):
            what = f"targets of output {self._shown([name])[0]!r}" if len(outputs) > 1 else "the targets (y)"
            a = np.asarray(a) if checked else checks.as_array(a, what)
            want = tuple(spec.shape[1:])
            if a.shape[1:] != want and a.shape[1:] == want + (1,):
                a = a.reshape(a.shape[:-1])  # sparse labels given as (N, 1)
            elif a.shape[1:] != want and want == (1,) and a.ndim == 1:
                a = a.reshape(-1, 1)  # binary targets given as (N,)
            if a.shape[1:] != want:
                raise DataError(
                    f"{what} have shape {a.shape}, the model's output needs "
                    f"{_shape_str((None, *want))}" + _loss_hint(target.get("loss"), a.shape, want)
                )
            if checked:
                pass
            elif target.get("classes"):
                checks.check_class_ids(a, target["classes"], "class labels" if len(outputs) == 1 else what)
            else:
                checks.check_finite(a, what)
            out.append(np.ascontiguousarray(a, dtype=spec.dtype))
        return out

    def _keyed(self, values: dict, by_key: bool) -> dict:
        """A per-output dict (targets, sample weights, compile's losses) of a model built with a
        dict of outputs, given by its keys or by the output layers' names, keyed by the keys
        (by_key) or by the names. Keys win where they are also layer names ({"a": Dense(name="b"),
        "b": Dense(name="a")}), as Keras 3 takes them; any other dict as it is (its unknown names
        are the caller's to name)."""
        keys, names = output_keys(self.info), self.info["output_names"]
        if keys and set(values) <= set(keys):
            given, given_keys = keys, True
        elif keys and set(values) <= set(names):
            given, given_keys = names, False
        else:
            return values
        if given_keys == by_key:
            return values
        wanted = names if given_keys else keys
        return {wanted[given.index(k)]: v for k, v in values.items()}

    def _shown(self, names: list) -> list:
        """Output layers' names as the user knows the outputs: by their keys in a dict of outputs."""
        keys = output_keys(self.info)
        return [keys[self.info["output_names"].index(n)] for n in names] if keys else list(names)

    def _loss_outputs(self) -> list:
        return [name for name, spec in zip(self.info["output_names"], self.info["losses"]) if spec is not None]

    def _sample_weights(self, sample_weight, class_weight, ys, specs, checked=False) -> list:
        """Per-sample loss weights for each output with a loss, or [] (the step then weighs every
        sample 1). One array serves every output, as in Keras; a list or dict gives one per output.
        class_weight {class: weight} turns targets into weights as Keras does (argmax of one-hot
        rows, else the rounded label); it needs a single output and no sample_weight."""
        if class_weight is not None:
            if sample_weight is not None:
                raise ValueError("you cannot give both class_weight and sample_weight")
            if len(ys) != 1:
                raise ValueError("class_weight is only supported for models with a single output")
            y = ys[0]
            classes = np.argmax(y, axis=-1) if y.ndim > 1 and y.shape[-1] != 1 else y.reshape(len(y))
            classes = np.round(classes).astype(np.int64)
            sample_weight = np.array([class_weight.get(int(c), 1.0) for c in classes])
        if sample_weight is None:
            return []
        if isinstance(sample_weight, dict):
            sample_weight = self._keyed(sample_weight, by_key=False)
            missing = [n for n in self._loss_outputs() if n not in sample_weight]
            if missing:
                raise DataError(
                    f"sample_weight has no weights for outputs {self._shown(missing)}; give one array per output "
                    f"with a loss: {self._shown(self._loss_outputs())}"
                )
            sample_weight = [sample_weight[n] for n in self._loss_outputs()]
        sws = list(sample_weight) if isinstance(sample_weight, (list, tuple)) else [sample_weight] * len(specs)
        if len(sws) != len(specs):
            raise DataError(f"the model has {len(specs)} outputs with a loss, got {len(sws)} sample weight arrays")
        out = []
        for a, spec, y in zip(sws, specs, ys):
            a = (np.asarray(a) if checked else checks.as_array(a, "sample_weight")).astype(spec.dtype)
            if not checked:
                checks.check_finite(a, "sample_weight")
            want = (len(y),) + tuple(spec.shape[1:])
            if a.shape != want and a.size == int(np.prod(want)):
                a = a.reshape(want)  # (N, 1) weights for per-sample losses of shape (N,)
            if a.shape != want:
                raise DataError(f"sample_weight of shape {a.shape} does not match the targets (expected {want})")
            out.append(np.ascontiguousarray(a))
        return out

    def _data(self, x, y, sample_weight=None, class_weight=None, kind="test", checked=False) -> tuple:
        """(xs, ys, sample weights) of one batch or of whole arrays for the step `kind` that will run
        on them, checked (the values not again when `checked`)."""
        xs = self._inputs(x, checked)
        step = self.executable.steps[self._step(kind, xs)]
        ys = self._targets(y, step.labels, checked)
        sws = self._sample_weights(sample_weight, class_weight, ys, step.sample_weights, checked)
        checks.check_same_length(
            [("x", xs[0])]
            + [(f"y[{i}]" if len(ys) > 1 else "y", a) for i, a in enumerate(ys)]
            + [("sample_weight", a) for a in sws[:1]]
        )
        return xs, ys, sws

    def _batch_source(self, data, batch_size, shuffle=False, class_weight=None, kind="test"):
        """Batches from arrays (x, y[, sample_weight]) or from an iterable of such batches."""
        if is_batch_source(data):

            def convert(item, checked=False):
                if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
                    raise DataError(f"a batch must be (x, y) or (x, y, sample_weight), got {type(item).__name__}")
                return self._data(item[0], item[1], item[2] if len(item) == 3 else None, class_weight, kind, checked)

            whole = data.source_arrays() if isinstance(data, Dataset) else None
            if whole is not None:
                # Every batch is rows of these arrays: check and lay them out once, here (checking
                # each batch again cost a small model a quarter of its step), and read the batches
                # from them. Where laying out copied more than ArrayBatches would keep, each batch
                # is laid out alone instead.
                arrays = convert(whole)
                sources = _flatten(whole)
                copied = sum(
                    a.nbytes for group in arrays for a in group if not any(np.may_share_memory(a, s) for s in sources)
                )
                if copied <= ArrayBatches.SHUFFLE_COPY_BYTES:
                    return RowBatches(data, arrays)
                return IterableBatches(data, lambda item: convert(item, checked=True))
            return IterableBatches(data, convert)
        return ArrayBatches(*data, batch_size, shuffle, self.shuffle_random)

    # ------------------------------------------------------------------ steps
    def _require_compiled(self):
        if self.optimizer is None or "train" not in self.executable.steps:
            raise RuntimeError("you must compile your model before training/testing: call model.compile(...)")

    def train_on_batch(self, x, y, sample_weight=None, class_weight=None, return_dict=False):
        self._require_compiled()
        logs = EpochLogs(self.info)
        self._train_step(self._data(x, y, sample_weight, class_weight, "train"), logs)
        return logs.result() if return_dict else logs.as_list()

    def _train_step(self, batch, logs, steps=1):
        """`steps` training steps on batches laid back to back in `batch`, in one call."""
        xs, ys, sws = batch
        opt = self.optimizer
        lr, step = opt.current_learning_rate(), opt.step_count + 1
        if self.replicas is not None:
            outs = self.replicas.train_step(xs, ys, sws, lr, step, self._step("train", xs))
        else:
            outs = self.executable.run(
                self._step("train", xs), xs, ys, sws, lr=lr, step=step, steps=steps, lrs=opt.learning_rates(steps)
            )
        opt.step_count += steps
        logs.update(outs, ys, len(xs[0]), steps)
        if not self._nonfinite_told and not np.isfinite(outs["loss"]).all():
            self._nonfinite_told = True  # once a model: every later step would say it again
            warnings.warn(
                f"the loss is {np.ravel(outs['loss'])[~np.isfinite(np.ravel(outs['loss']))][0]} at training "
                f"step {opt.step_count - steps + 1}: the weights are no longer finite; lower the learning "
                "rate, check the data, or stop such runs with kgraph.callbacks.TerminateOnNaN()",
                RuntimeWarning,
                stacklevel=3,
            )

    def _test_step(self, batch, logs, steps=1):
        xs, ys, sws = batch
        logs.update(self.executable.run(self._step("test", xs), xs, ys, sws, steps=steps), ys, len(xs[0]), steps)

    def test_on_batch(self, x, y, sample_weight=None, return_dict=False):
        self._require_compiled()
        logs = EpochLogs(self.info)
        self._test_step(self._data(x, y, sample_weight), logs)
        return logs.result() if return_dict else logs.as_list()

    def predict_on_batch(self, x):
        return self.predict(x, batch_size=len(self._inputs(x)[0]), verbose=0)

    # ------------------------------------------------------------------ loops
    @_gives_threads_back
    def fit(
        self,
        x=None,
        y=None,
        batch_size=None,
        epochs=1,
        verbose="auto",
        callbacks=None,
        validation_split=0.0,
        validation_data=None,
        shuffle=True,
        class_weight=None,
        sample_weight=None,
        initial_epoch=0,
        steps_per_epoch=None,
        validation_steps=None,
        validation_batch_size=None,
        validation_freq=1,
    ):
        """As keras.Model.fit. x may also be an iterable or generator of (x, y) or (x, y, sample_weight)
        batches; with steps_per_epoch, epochs draw that many batches from it in turn. Validation
        runs after the epochs validation_freq names (every n-th, or a list of 1-based epochs) as
        Keras 3's evaluate, its test hooks called on fit's callbacks."""
        self._require_compiled()
        validation_batch_size = checks.positive_int(validation_batch_size, "validation_batch_size", allow_none=True)
        validates = checks.validation_epochs(validation_freq)
        x = sources.adapt(x, self.shuffle_random if shuffle else None)
        validation_data = sources.adapt(validation_data)
        batch_size = checks.positive_int(batch_size, "batch_size", allow_none=True) or 32
        verbose = checks.check_verbose(verbose)
        checks.check_fit_args(epochs, initial_epoch, validation_split, validation_data)
        steps_per_epoch = checks.positive_int(steps_per_epoch, "steps_per_epoch", allow_none=True)
        validation_steps = checks.positive_int(validation_steps, "validation_steps", allow_none=True)
        sources.check_steps(x, steps_per_epoch, "steps_per_epoch")
        sources.check_steps(validation_data, validation_steps, "validation_steps")
        val = None
        if validation_data is not None:
            try:
                val = validation_data if is_batch_source(validation_data) else self._data(*validation_data)
            except DataError as e:  # say which data is wrong: the training data is checked the same way
                raise DataError(f"validation_data: {e}") from None
        if is_batch_source(x):
            if validation_split:
                raise ValueError("validation_split needs arrays; give validation_data with a generator")
            if y is not None:
                raise DataError(
                    "x is a generator or iterable of batches, so y must not be given: the batches carry their targets"
                )
            if sample_weight is not None:  # Keras's words for a Dataset
                raise ValueError(
                    "When providing `x` as a dataset or generator, `sample_weight` should not be "
                    "passed. Instead, the sample weights should be included as part of the batches: "
                    "(x, y, sample_weight)"
                )
            train = x
        else:
            train = self._data(x, y, sample_weight, class_weight, "train")
            if validation_split and val is None:
                n = len(train[0][0])
                split = int(math.floor(n * (1.0 - validation_split)))  # Keras keeps the last ones
                if split == 0 or split == n:
                    raise DataError(
                        f"validation_split={validation_split} of {n} samples leaves {split} to train on "
                        f"and {n - split} to validate: both need at least one"
                    )
                # Keras validates on the last rows with the sample weights given, never the class weights
                xs, ys, sws = train
                if class_weight is not None:  # (class_weight refuses sample_weight: none given)
                    sws = []
                val = tuple([a[split:] for a in group] for group in (xs, ys, sws))
                train = tuple([a[:split] for a in group] for group in train)
        batches = EpochIterator(self._batch_source(train, batch_size, shuffle, class_weight, "train"), steps_per_epoch)
        if val is not None:
            val = EpochIterator(
                self._batch_source(val, validation_batch_size or batch_size), validation_steps, restart=True
            )
        if not self.is_chief:  # other replicas train silently and write nothing
            verbose = 0
            callbacks = [c for c in (callbacks or []) if not getattr(c, "writes_files", False)]
        cbs = CallbackList(
            callbacks,
            add_history=True,
            add_progbar=verbose != 0,
            model=self,
            verbose=verbose,
            epochs=epochs,
            steps=batches.num_batches,
        )
        self.stop_training = False
        self._initial_epoch = None
        cbs.on_train_begin()
        initial_epoch = self._initial_epoch or initial_epoch  # BackupAndRestore's restored epoch, as Keras 3
        logs = {}
        per_call = self._steps_per_call(batches, cbs)
        trained, frozen = 0.0, False  # seconds in steps so far; gc.freeze done (policy.py)
        for epoch in range(initial_epoch, epochs):
            calls = _calls(batches, per_call)
            first = next(calls, None)
            if first is None:  # the source ran out (EpochIterator warned)
                break
            cbs.on_epoch_begin(epoch)
            epoch_logs = EpochLogs(self.info)
            for step, count, batch in itertools.chain([first], calls):
                if self.replicas is not None and len(batch[0][0]) < self.replicas.num_replicas:
                    continue  # a last batch smaller than the number of replicas is skipped
                cbs.on_train_batch_begin(step)
                start = time.perf_counter()
                self._train_step(batch, epoch_logs, count)
                seconds = time.perf_counter() - start
                if per_call is not None:
                    per_call.record(seconds, count, batch)
                trained += seconds
                if trained >= FREEZE_AFTER_SECONDS and (not frozen or step == 0):  # steps loaded since too
                    freeze_compiled_objects(self.executable)
                    frozen = True
                cbs.on_train_batch_end(step + count - 1, epoch_logs.result())
                if self.stop_training:
                    break
            logs = epoch_logs.result()
            if val is not None and validates(epoch + 1):
                cbs.on_test_begin()
                val_logs = self._evaluate(val, cbs).result()
                cbs.on_test_end(val_logs)
                logs.update({"val_" + k: v for k, v in val_logs.items()})
            cbs.on_epoch_end(epoch, logs)
            if self.stop_training or batches.exhausted:
                break
        # Keras's finalize_variable_values, before on_train_end (once a step has made averages)
        if self.optimizer.use_ema and epochs > 0 and self.optimizer.step_count > 0:
            for executable in getattr(self.replicas, "replicas", [self.executable]):
                executable.take_slot("average")
        cbs.on_train_end(logs)
        return self.history

    def _steps_per_call(self, batches, cbs, kind="train"):
        """How many steps each call of the compiled step runs in this fit (a StepsPerCall), or None
        for one step a call: several need whole passes of arrays, or an iterable such as a Dataset
        (its batches of one shape are joined, _runs and RowBatches.runs, also with steps_per_epoch:
        the guide's `.batch(32).repeat()`), one process without replicas, a CPU step, and
        callbacks that need no batch-by-batch hooks, unless compile()'s
        steps_per_execution asked for several, as in Keras (batch hooks then run once a call).
        One step a call on the plain path (KGRAPH_PLAIN=1, kgraph/runtime/policy.py)."""
        fixed = self.steps_per_execution
        if (
            plain()
            or self.replicas is not None
            or (batches.steps_per_epoch is not None and isinstance(batches.batches, ArrayBatches))
            or not self.executable.multi_step
        ):
            return None
        if fixed is None and cbs and any(wants_every_batch(cb, BATCH_HOOKS[kind]) for cb in cbs.callbacks):
            return None
        return StepsPerCall(
            fixed,
            lambda step: self.executable.threads.probing(step, batches.batches.batch_size),
            lambda batch: self._step_name(kind, batch[0]),
        )

    def _evaluate(self, batches, cbs):
        logs = EpochLogs(self.info)
        per_call = self._steps_per_call(batches, cbs, "test")
        for step, count, batch in _calls(batches, per_call):
            if cbs:
                cbs.on_test_batch_begin(step)
            start = time.perf_counter()
            self._test_step(batch, logs, count)
            if per_call is not None:
                per_call.record(time.perf_counter() - start, count, batch)
            if cbs:
                cbs.on_test_batch_end(step + count - 1, logs.result())
        return logs

    @_gives_threads_back
    def evaluate(
        self,
        x=None,
        y=None,
        batch_size=None,
        verbose="auto",
        sample_weight=None,
        steps=None,
        callbacks=None,
        return_dict=False,
    ):
        self._require_compiled()
        batch_size = checks.positive_int(batch_size, "batch_size", allow_none=True) or 32
        verbose = checks.check_verbose(verbose)
        steps = checks.positive_int(steps, "steps", allow_none=True)
        x = sources.adapt(x)
        sources.check_steps(x, steps, "steps")
        data = x if is_batch_source(x) else self._data(x, y, sample_weight)
        batches = EpochIterator(self._batch_source(data, batch_size), steps)
        cbs = CallbackList(
            callbacks, add_progbar=verbose != 0, model=self, verbose=verbose, epochs=1, steps=batches.num_batches
        )
        cbs.on_test_begin()
        logs = self._evaluate(batches, cbs)
        cbs.on_test_end(logs.result())
        return logs.result() if return_dict else logs.as_list()

    @_gives_threads_back
    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """As keras.Model.predict: x is arrays, or a generator / iterable of batches (x, or tuples
        whose first item is x, as Keras takes them), of which `steps` batches are read if given."""
        batch_size = checks.positive_int(batch_size, "batch_size", allow_none=True) or 32
        verbose = checks.check_verbose(verbose)
        steps = checks.positive_int(steps, "steps", allow_none=True)
        x = sources.adapt(x)
        sources.check_steps(x, steps, "steps")
        if is_batch_source(x):
            return self._predict_batches(x, steps, verbose, callbacks)
        xs = self._inputs(x)
        n = len(xs[0])
        count = max(1, math.ceil(n / batch_size))
        if steps is not None:
            count = min(count, steps)
        cbs = CallbackList(callbacks, add_progbar=verbose != 0, model=self, verbose=verbose, epochs=1, steps=count)
        cbs.on_predict_begin()
        outputs = None
        for step in range(count):
            cbs.on_predict_batch_begin(step)
            s = slice(step * batch_size, (step + 1) * batch_size)
            preds = self._predict_step([a[s] for a in xs])
            if outputs is None:
                outputs = [np.empty((min(n, count * batch_size),) + p.shape[1:], p.dtype) for p in preds]
            for o, p in zip(outputs, preds):
                o[s] = p
            cbs.on_predict_batch_end(step, {"outputs": self._structured(preds)})
        cbs.on_predict_end()
        return self._structured(outputs)

    def _structured(self, outputs: list):
        """predict's result as Keras gives it: one array, a list in the outputs' order, or a dict
        by the keys of a model built with a dict of outputs."""
        if self.info.get("output_keys"):  # in the config's order, as Keras returns them
            by_key = dict(zip(output_keys(self.info), outputs))
            return {k: by_key[k] for k in self.info["output_keys"]}
        return outputs[0] if len(outputs) == 1 else outputs

    def _predict_step(self, xs) -> list:
        outs = self.executable.run(self._step("predict", xs), xs)
        return [outs[f"output:{k}"] for k in range(len(self.info["output_names"]))]

    def _predict_batches(self, source, steps, verbose, callbacks):
        cbs = CallbackList(
            callbacks,
            add_progbar=verbose != 0,
            model=self,
            verbose=verbose,
            epochs=1,
            steps=steps or sources.known_batches(source),
        )
        cbs.on_predict_begin()
        parts = []
        for step, item in enumerate(source):
            if steps is not None and step >= steps:
                break
            if isinstance(item, tuple) and len(item) in (1, 2, 3):  # (x,), (x, y), (x, y, sample_weight)
                item = item[0]
            cbs.on_predict_batch_begin(step)
            preds = self._predict_step(self._inputs(item))
            parts.append([p.copy() for p in preds])  # the step's outputs are views the next call reuses
            cbs.on_predict_batch_end(step, {"outputs": self._structured(preds)})
        cbs.on_predict_end()
        if steps is not None and len(parts) < steps:
            warnings.warn(OUT_OF_DATA, stacklevel=3)
        if not parts:
            raise DataError("predict() got a generator or iterable that yielded no batches")
        return self._structured([np.concatenate(column) for column in zip(*parts)])

    # ------------------------------------------------------------------ a compiled trainer on disk
    @classmethod
    def from_directory(cls, directory, get_optimizer, seed=None):
        """Load what `kgraph compile` wrote: manifest.json, the generated steps and weights.npz.
        get_optimizer makes the optimizer from its saved config (kgraph.optimizers.get, which the
        trainer script passes in: the runtime imports nothing above it); seed: of the shuffling
        and the random layers' draws (dropout, noise)."""
        directory = Path(directory)
        manifest = json.loads((directory / "manifest.json").read_text())
        steps = {
            kind: Manifest.from_json(m).with_module(directory / m["module"]) for kind, m in manifest["steps"].items()
        }
        exe = Executable(steps, manifest["params"], manifest["info"]["dtype"], seed=seed)
        model = cls(exe, manifest["info"], get_optimizer(manifest["optimizer"]))
        model.load_weights(directory / "weights.npz")
        model.exported_kernels = manifest.get("kernels")  # None: written before kgraph recorded them
        return model


BATCH_HOOKS = {
    "train": ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end"),
    "test": ("on_test_batch_begin", "on_test_batch_end"),
}


def wants_every_batch(callback, hooks) -> bool:
    """Whether a callback has batch hooks of its own (History and the progress bar are fine with
    one call a run of steps: the bar moves between calls)."""
    if isinstance(callback, (History, ProgbarLogger)):
        return False
    return any(getattr(getattr(callback, hook), "__func__", None) is not getattr(Callback, hook) for hook in hooks)


def _calls(batches, per_call):
    """One epoch of an EpochIterator as (first step, steps, batches) a call: runs of batches as
    per_call says, or one batch a call when it is None."""
    source = batches.batches
    if per_call is None:
        if isinstance(source, RowBatches):
            return ((step, 1, source.take(rows)) for step, rows in batches.epoch())
        return ((step, 1, batch) for step, batch in batches.epoch())
    if isinstance(source, ArrayBatches):
        return source.calls(per_call)
    if isinstance(source, RowBatches):
        return source.runs(batches.epoch(), per_call)
    return _runs(batches.epoch(), per_call)


def _runs(epoch, per_call):
    """An iterable's batches as ArrayBatches.calls gives arrays' ones: runs of consecutive batches
    of one shape, as many as per_call() says, joined into one (xs, ys, sws) (a copy of each batch,
    small against its step); a batch of another shape (a last partial one) starts the next run."""

    def shapes(batch):
        return tuple(tuple(None if a is None else a.shape for a in group) for group in batch)

    pending = next(epoch, None)
    while pending is not None:
        step, first = pending
        run, pending = [first], None
        want = per_call(first)
        while len(run) < want:
            pending = next(epoch, None)
            if pending is None or shapes(pending[1]) != shapes(first):
                break
            run.append(pending[1])
            pending = None
        if len(run) == 1:
            yield step, 1, first
        else:
            yield (
                step,
                len(run),
                tuple(
                    [None if first[g][i] is None else _join([b[g][i] for b in run]) for i in range(len(first[g]))]
                    for g in range(len(first))
                ),
            )
        if pending is None:
            pending = next(epoch, None)


def _join(parts):
    """Arrays back to back: a view when each starts where the one before ends in memory
    (a Dataset's batches of consecutive rows are slices of its arrays), else a copy."""
    first = parts[0]
    end = first.ctypes.data + first.nbytes
    for part in parts[1:]:
        if not (
            part.flags.c_contiguous
            and first.flags.c_contiguous
            and part.dtype == first.dtype
            and part.shape[1:] == first.shape[1:]
            and part.ctypes.data == end
        ):
            return np.concatenate(parts)
        end += part.nbytes
    return np.lib.stride_tricks.as_strided(first, (sum(len(p) for p in parts), *first.shape[1:]))


class StepsPerCall:
    """Steps a call of the compiled step runs in fit: compile()'s steps_per_execution, else as
    many as take about TARGET seconds (at most MOST), from the last call's time; one call's cost
    (Python, the call, the metrics' update) is then paid once for them all, and the progress bar
    still moves several times a second. While the executable times its thread settings
    (`probing(step)`), calls take about PROBE_TARGET seconds: a slow setting is then left soon.
    A model with unknown dimensions runs a step per input shape ("train@80"): `step_of(batch)`
    names the step of a batch, and each step's time and thread timings are its own."""

    TARGET = 0.01
    PROBE_TARGET = 0.002
    MOST = 64

    def __init__(self, fixed=None, probing=lambda step: False, step_of=lambda batch: None):
        self.fixed, self.probing, self.step_of = fixed, probing, step_of
        self.step = None  # the step of the coming call: that of the batch it starts with, else the last's
        self.step_seconds = {}  # by step: of its last call

    def __call__(self, batch=None) -> int:
        if self.fixed:
            return self.fixed
        if batch is not None:
            self.step = self.step_of(batch)
        if self.step not in self.step_seconds:
            return 1
        target = self.PROBE_TARGET if self.probing(self.step) else self.TARGET
        return max(1, min(self.MOST, int(target / self.step_seconds[self.step])))

    def record(self, seconds, steps, batch=None) -> None:
        if batch is not None:
            self.step = self.step_of(batch)
        if seconds > 0:
            self.step_seconds[self.step] = seconds / steps


class EpochLogs:
    """What an epoch (or an evaluate, or one *_on_batch call) reports, in Keras 3's log order: the
    loss (mean over samples of the batches' losses), the compiled metrics of each output and,
    with several losses, each output's "<name>_loss"."""

    def __init__(self, info):
        self.loss = Mean()
        with_loss = [k for k, spec in enumerate(info["losses"]) if spec is not None]
        target = {k: i for i, k in enumerate(with_loss)}  # output -> its position among the targets
        self.metrics = [
            (m["name"], target[k], k, build(m["class"], m["config"]))
            for k, row in enumerate(info["metrics"])
            for m in row
        ]
        self.output_losses = (
            [(f"{log_names(info)[k]}_loss", k, Mean()) for k in with_loss] if len(with_loss) > 1 else []
        )

    def update(self, outs, ys, n, steps=1):
        """One call's outputs: of one step on n samples, or of `steps` steps on n // steps samples
        each (every output with a leading axis of steps: the metrics take their samples at once)."""
        batch = n // steps
        for value in outs["loss"].reshape(steps):
            self.loss.update_value(value, batch)
        for name, i, k, metric in self.metrics:
            out = outs[f"output:{k}"]
            out = out if steps == 1 else out.reshape((n, *out.shape[2:]))
            mask = outs.get(f"mask:{k}") if getattr(metric, "reads_mask", False) else None
            try:
                if mask is None:
                    metric.update(ys[i], out)
                else:  # the steps Keras's mask keeps (passes/loss.py outputs it)
                    metric.update(ys[i], out, mask if steps == 1 else mask.reshape((n, *mask.shape[2:])))
            except DataError:  # the metric's own words
                raise
            except ValueError:  # NumPy's broadcasting error, said in the user's terms
                raise DataError(
                    f"metric {name!r} cannot compare targets of shape {np.shape(ys[i])} with outputs "
                    f"of shape {out.shape}: it needs targets shaped like the outputs (sparse labels "
                    "go with sparse_categorical_accuracy, 'accuracy' or the sparse top-k)"
                ) from None
        for _, k, mean in self.output_losses:
            for value in outs[f"loss:{k}"].reshape(steps):
                mean.update_value(value, batch)

    def result(self) -> dict:
        return {
            "loss": self.loss.result(),
            **{name: m.result() for name, _, _, m in self.metrics},
            **{name: m.result() for name, _, m in self.output_losses},
        }

    def names(self) -> list:
        """Keras's order for evaluate's list: the loss, the metrics whose log name is their own name
        (one output), each output's loss, then the other logs sorted by name."""
        first = (
            ["loss"]
            + [name for name, _, _, m in self.metrics if name == m.name]
            + [name for name, _, _ in self.output_losses]
        )
        everything = ["loss"] + [name for name, *_ in self.metrics] + [name for name, *_ in self.output_losses]
        return first + sorted(n for n in everything if n not in first)

    def as_list(self):
        logs = self.result()
        values = [logs[n] for n in self.names()]
        return values[0] if len(values) == 1 else values
