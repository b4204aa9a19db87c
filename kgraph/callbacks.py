"""Keras 3 compatible training callbacks.

Behaviour, defaults and printed messages follow `keras/src/callbacks/*`, so
code written against `keras.callbacks` runs unchanged on a kgraph trainer.
The model a callback sees needs only: `stop_training` (bool attribute),
`get_weights()`, `set_weights(weights)`, `save_weights(path)`, `save(path)`
and `optimizer.learning_rate` (a plain float attribute).

The base class, `CallbackList`, `History` and `ProgbarLogger` live in the runtime
(`kgraph/runtime/callbacks.py`, which the training loops use) and are re-exported here.
"""

import collections
import csv
import io
import json
import operator
import os
import shutil
import time
import warnings

import numpy as np

from kgraph.runtime.callbacks import Callback, CallbackList, History, ProgbarLogger  # noqa: F401  (re-exported)
from kgraph.runtime.files import write_text
from kgraph.frontend.normalize import snake_case
from kgraph.runtime.progbar import print_msg

# Which way Keras's built-in metrics improve, standing in for the
# `metric._direction` that Keras reads from the compiled model in mode="auto".
_MAXIMIZED = frozenset(
    """accuracy acc binary_accuracy categorical_accuracy
    sparse_categorical_accuracy top_k_categorical_accuracy
    sparse_top_k_categorical_accuracy auc precision recall f1_score
    fbeta_score r2_score iou binary_iou mean_iou one_hot_iou one_hot_mean_iou
    cosine_similarity pearson_correlation concordance_correlation
    precision_at_recall recall_at_precision sensitivity_at_specificity
    specificity_at_sensitivity""".split()
)
_MINIMIZED = frozenset(
    """loss mean_squared_error mse mean_absolute_error mae
    mean_absolute_percentage_error mape mean_squared_logarithmic_error msle
    root_mean_squared_error logcosh log_cosh_error hinge squared_hinge categorical_hinge
    binary_crossentropy categorical_crossentropy
    sparse_categorical_crossentropy binary_focal_crossentropy
    categorical_focal_crossentropy kl_divergence poisson""".split()
)


def _compiled_direction(model, metric: str):
    """The direction, "up" or "down", of the model's compiled metric whose own name is `metric` (an accuracy, AUC,
    precision or recall rises; an error falls), else None."""
    rows = (getattr(model, "info", None) or {}).get("metrics") or []
    for entry in (entry for row in rows for entry in row if entry["key"] == metric):
        kind = snake_case(entry["class"])
        return "up" if kind in _MAXIMIZED else "down" if kind in _MINIMIZED else None
    return None


class MonitorCallback(Callback):
    """Shared logic of callbacks that track the best value of one log key."""

    def __init__(self, monitor="val_loss", mode="auto", baseline=None, min_delta=0):
        super().__init__()
        if mode not in ("auto", "min", "max"):
            warnings.warn(
                f"{type(self).__name__} mode '{mode}' is unknown, fallback to auto mode.",
                stacklevel=2,
            )
            mode = "auto"
        self.monitor = monitor
        self.mode = mode
        self.best = baseline
        self.min_delta = abs(min_delta)
        self.monitor_op = None

    def _set_monitor_op(self):
        metric = self.monitor.removeprefix("val_")
        # mode "auto": by the name, else as Keras 3 by the compiled metric of that name (its own,
        # as given to a metric object: SparseTopKCategoricalAccuracy(name="top2") rises)
        direction = _compiled_direction(self.model, metric) if metric not in _MINIMIZED | _MAXIMIZED else None
        if self.mode == "min" or (self.mode == "auto" and (metric in _MINIMIZED or direction == "down")):
            self.monitor_op = operator.lt
            # Improving means dropping by more than min_delta.
            self.min_delta *= -1
        elif self.mode == "max" or metric in _MAXIMIZED or direction == "up":
            self.monitor_op = operator.gt
        else:
            raise ValueError(
                f"{type(self).__name__} callback received "
                f"monitor={self.monitor}, but Keras isn't able to "
                "automatically determine whether that metric should be "
                "maximized or minimized. Pass `mode='max'` in order to "
                "monitor based on the highest metric value, or pass "
                "`mode='min'` in order to use the lowest value."
            )

    def _is_improvement(self, monitor_value, reference_value):
        if reference_value is None:
            return True
        return self.monitor_op(monitor_value - self.min_delta, reference_value)


class EarlyStopping(MonitorCallback):
    """Stops training once `monitor` has stopped improving.

    Args:
        monitor: log key to watch.
        min_delta: smallest change that counts as an improvement.
        patience: epochs without improvement before stopping.
        verbose: 1 prints when stopping and restoring.
        mode: "min", "max" or "auto" (inferred from the metric name).
        baseline: value to beat; until it is beaten, improvements don't
            reset the patience counter.
        restore_best_weights: at the end of training, put back the weights
            of the best epoch (or of the first watched epoch if none beat
            `baseline`).
        start_from_epoch: epochs of warm-up before watching starts.
    """

    def __init__(
        self,
        monitor="val_loss",
        min_delta=0,
        patience=0,
        verbose=0,
        mode="auto",
        baseline=None,
        restore_best_weights=False,
        start_from_epoch=0,
    ):
        super().__init__(monitor, mode, min_delta=min_delta)
        self.patience = patience
        self.verbose = verbose
        self.baseline = baseline
        self.restore_best_weights = restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.wait = 0
        self.stopped_epoch = 0
        self.best_weights = None
        self.best_epoch = 0

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor_op is None:
            self._set_monitor_op()
        current = self.get_monitor_value(logs)
        if current is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            # Something to restore even if nothing ever beats the baseline.
            self.best_weights = self.model.get_weights()
            self.best_epoch = epoch

        self.wait += 1
        if self._is_improvement(current, self.best):
            self.best = current
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._is_improvement(current, self.baseline):
                self.wait = 0
            return

        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            print_msg(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                print_msg(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)

    def get_monitor_value(self, logs):
        logs = logs or {}
        value = logs.get(self.monitor)
        if value is None:
            warnings.warn(
                f"Early stopping conditioned on metric `{self.monitor}` which "
                f"is not available. Available metrics are: {','.join(logs)}",
                stacklevel=2,
            )
        return value


class ModelCheckpoint(MonitorCallback):
    """Saves the model or its weights every epoch or every `save_freq` batches.

    Args:
        filepath: path, may hold `str.format` fields filled from the 1-based
            `epoch`, the 1-based `batch` (batch-level saving) and the logs,
            e.g. `"ckpt-{epoch:02d}-{val_loss:.2f}.weights.h5"`.
        monitor: log key judged when `save_best_only`.
        verbose: 1 prints a line per save decision.
        save_best_only: save only when `monitor` improves on the best so far.
        save_weights_only: call `model.save_weights(path)` instead of
            `model.save(path)`.
        mode: "min", "max" or "auto".
        save_freq: "epoch", or an int number of batches between saves.
        initial_value_threshold: value that a first save must beat.
    """

    writes_files = True  # with several replicas, only the chief runs it

    def __init__(
        self,
        filepath,
        monitor="val_loss",
        verbose=0,
        save_best_only=False,
        save_weights_only=False,
        mode="auto",
        save_freq="epoch",
        initial_value_threshold=None,
    ):
        super().__init__(monitor, mode, initial_value_threshold)
        if save_freq != "epoch" and not isinstance(save_freq, int):
            raise ValueError(f"Unrecognized save_freq: {save_freq}. Expected save_freq are 'epoch' or integer values")
        self.filepath = os.fspath(filepath)
        self.verbose = verbose
        self.save_best_only = save_best_only
        self.save_weights_only = save_weights_only
        self.save_freq = save_freq
        self._batches_seen_since_last_saving = 0
        self._last_batch_seen = None
        self._current_epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._should_save_on_batch(batch):
            self._save_model(self._current_epoch, batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor_op is None:
            self._set_monitor_op()
        if self.save_freq == "epoch":
            self._save_model(epoch, None, logs)

    def _should_save_on_batch(self, batch):
        if self.save_freq == "epoch":
            return False
        if self._last_batch_seen is None or batch <= self._last_batch_seen:
            added = batch + 1  # a new epoch restarted the batch count
        else:
            added = batch - self._last_batch_seen
        self._batches_seen_since_last_saving += added
        self._last_batch_seen = batch
        if self._batches_seen_since_last_saving >= self.save_freq:
            self._batches_seen_since_last_saving = 0
            return True
        return False

    def _should_save_model(self, epoch, logs, filepath):
        if not self.save_best_only:
            if self.verbose > 0:
                print_msg(f"\nEpoch {epoch + 1}: saving model to {filepath}")
            return True
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(
                f"Can save best model only with {self.monitor} available.",
                stacklevel=2,
            )
            return True
        if np.ndim(current) > 0:
            warnings.warn(
                "Can save best model only when `monitor` is a scalar value. "
                f"Received: {current}. Falling back to `save_best_only=False`.",
                stacklevel=2,
            )
            return True
        best_str = "None" if self.best is None else f"{self.best:.5f}"
        if self._is_improvement(current, self.best):
            if self.verbose > 0:
                print_msg(
                    f"\nEpoch {epoch + 1}: {self.monitor} improved from "
                    f"{best_str} to {current:.5f}, saving model to {filepath}"
                )
            self.best = current
            return True
        if self.verbose > 0:
            print_msg(f"\nEpoch {epoch + 1}: {self.monitor} did not improve from {best_str}")
        return False

    def _save_model(self, epoch, batch, logs):
        logs = logs or {}
        filepath = self._get_file_path(epoch, batch, logs)
        if not self._should_save_model(epoch, logs, filepath):
            return
        if os.path.isdir(filepath):
            raise IOError(
                "Please specify a non-directory filepath for ModelCheckpoint. "
                f"Filepath used is an existing directory: {filepath}"
            )
        dirname = os.path.dirname(filepath)
        if dirname:
            os.makedirs(dirname, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(filepath)
        else:
            self.model.save(filepath)
        if self.verbose > 0:
            print_msg(f"\nEpoch {epoch + 1}: finished saving model to {filepath}")

    def _get_file_path(self, epoch, batch, logs):
        fields = {"epoch": epoch + 1}
        if batch is not None and "batch" not in logs:
            fields["batch"] = batch + 1
        try:
            return self.filepath.format(**fields, **logs)
        except KeyError as e:
            raise KeyError(f'Failed to format this callback filepath: "{self.filepath}". Reason: {e}') from e


class LearningRateScheduler(Callback):
    """Sets `model.optimizer.learning_rate = schedule(epoch, lr)` each epoch.

    Args:
        schedule: `f(epoch, lr) -> float` (0-based epoch); a one-argument
            `f(epoch)` works too.
        verbose: 1 prints the new rate.
    """

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if not hasattr(optimizer, "learning_rate"):
            raise ValueError('Optimizer must have a "learning_rate" attribute.')
        try:
            learning_rate = self.schedule(epoch, float(optimizer.learning_rate))
        except TypeError:  # one-argument schedule
            learning_rate = self.schedule(epoch)
        if not isinstance(learning_rate, (float, np.float32, np.float64)):
            raise ValueError(f"The output of the `schedule` function should be a float. Got: {learning_rate}")
        optimizer.learning_rate = learning_rate
        if self.verbose > 0:
            print_msg(f"\nEpoch {epoch + 1}: LearningRateScheduler setting learning rate to {learning_rate}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class ReduceLROnPlateau(MonitorCallback):
    """Multiplies the learning rate by `factor` when `monitor` plateaus.

    Args:
        monitor: log key to watch.
        factor: multiplier applied to the rate, < 1.
        patience: epochs without improvement before reducing.
        verbose: 1 prints each reduction.
        mode: "min", "max" or "auto".
        min_delta: smallest change that counts as an improvement.
        cooldown: epochs to wait after a reduction before counting again.
        min_lr: floor for the rate.
    """

    def __init__(
        self,
        monitor="val_loss",
        factor=0.1,
        patience=10,
        verbose=0,
        mode="auto",
        min_delta=1e-4,
        cooldown=0,
        min_lr=0.0,
    ):
        super().__init__(monitor, mode, min_delta=min_delta)
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor >= 1.0. Received factor={factor}")
        self.factor = factor
        self.patience = patience
        self.verbose = verbose
        self.cooldown = cooldown
        self.min_lr = min_lr
        self.cooldown_counter = 0
        self.wait = 0

    def on_train_begin(self, logs=None):
        self.best = None
        self.cooldown_counter = 0
        self.wait = 0

    def in_cooldown(self):
        return self.cooldown_counter > 0

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor_op is None:
            self._set_monitor_op()
        logs = logs if logs is not None else {}
        logs["learning_rate"] = float(self.model.optimizer.learning_rate)
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(
                "Learning rate reduction is conditioned on metric "
                f"`{self.monitor}` which is not available. Available metrics "
                f"are: {','.join(logs)}.",
                stacklevel=2,
            )
            return

        if self.in_cooldown():
            self.cooldown_counter -= 1
            self.wait = 0
        if self._is_improvement(current, self.best):
            self.best = current
            self.wait = 0
        elif not self.in_cooldown():
            self.wait += 1
            if self.wait >= self.patience and self._reduce_lr(epoch):
                self.cooldown_counter = self.cooldown
                self.wait = 0

    def _reduce_lr(self, epoch):
        optimizer = self.model.optimizer
        old_lr = float(optimizer.learning_rate)
        # float32 compare: a rate stored at min_lr in float32 counts as there.
        if old_lr <= np.float32(self.min_lr):
            return False
        new_lr = max(old_lr * self.factor, self.min_lr)
        optimizer.learning_rate = new_lr
        if self.verbose > 0:
            print_msg(f"\nEpoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new_lr}.")
        return True


class CSVLogger(Callback):
    """Writes each epoch's logs to a CSV file, one row per epoch, the file replaced atomically
    each epoch (a kill never leaves it truncated).

    Columns are `epoch` then the sorted log keys of the first epoch; if that
    epoch had no `val_*` keys, `val_` copies of every key are added so a
    later validation run still fits (missing cells read `NA`).

    Args:
        filename: path of the CSV file.
        separator: field delimiter.
        append: append to an existing file (writing the header only if the
            file is empty) instead of overwriting it.
    """

    writes_files = True  # with several replicas, only the chief runs it

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.sep = separator
        self.filename = os.fspath(filename)
        self.append = append
        self.writer = None
        self.keys = None
        self.append_header = True
        self.csv_file = None  # the rows so far: the whole file is rewritten atomically each epoch

    def on_train_begin(self, logs=None):
        # the old file stays whole until the first epoch's rows replace it; a kill at any point
        # leaves either it or a complete newer file, never a truncated one
        self.previous = ""
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                self.previous = f.read()
            self.append_header = not self.previous
        self.csv_file = io.StringIO()
        self.writer = None
        self.keys = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
            if self.keys and not any(k.startswith("val_") for k in self.keys):
                self.keys += [f"val_{k}" for k in self.keys]
        if self.writer is None:
            self.writer = csv.DictWriter(
                self.csv_file,
                fieldnames=["epoch"] + self.keys,
                delimiter=self.sep,
                lineterminator="\r\n",  # csv.excel's, as Keras writes
            )
            if self.append_header:
                self.writer.writeheader()
        row = {"epoch": epoch}
        row.update((k, _csv_value(logs.get(k, "NA"))) for k in self.keys)
        self.writer.writerow(row)
        write_text(self.filename, self.previous + self.csv_file.getvalue())

    def on_train_end(self, logs=None):
        self.writer = None


def _csv_value(value):
    if isinstance(value, str):
        return value
    if isinstance(value, collections.abc.Iterable) and np.ndim(value) > 0:
        return f'"[{", ".join(map(str, value))}]"'
    return value


class TerminateOnNaN(Callback):
    """Stops training when a batch's loss is NaN or infinite, and gives the model back the weights
    it had before that batch (the last finite ones: Keras leaves the broken ones). Keeping them
    costs a copy of the weights each batch.

    Args:
        raise_error: raise RuntimeError instead of setting
            `model.stop_training`.
    """

    def __init__(self, raise_error=False):
        super().__init__()
        self.raise_error = raise_error
        self._before = None

    def on_batch_begin(self, batch, logs=None):
        self._before = self.model.get_weights()

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None or np.isfinite(loss):
            return
        if self._before is not None:
            self.model.set_weights(self._before)
        if self.raise_error:
            raise RuntimeError(
                f"NaN or Inf loss encountered at batch {batch}. Loss value: {loss}. Terminating training immediately."
            )
        print_msg(f"Batch {batch}: Invalid loss, terminating training")
        self.model.stop_training = True


class RemoteMonitor(Callback):
    """Posts each epoch's logs to a server, as Keras's: an HTTP POST to `root + path` of the JSON
    {"epoch": epoch, **logs}, in the form field `field` or (send_as_json) as the body. A server
    that cannot be reached gives a warning, and training goes on. Keras posts through `requests`;
    this posts through the standard library's urllib, with a timeout (Keras waits without one).

    Args:
        root: the server's root URL.
        path: the path under root the events go to.
        field: the form field holding the JSON (when not send_as_json).
        headers: extra HTTP headers.
        send_as_json: post the JSON itself, as application/json.
        timeout: seconds to wait for the server (kgraph's; not a Keras argument).
    """

    def __init__(
        self,
        root="http://localhost:9000",
        path="/publish/epoch/end/",
        field="data",
        headers=None,
        send_as_json=False,
        timeout=10.0,
    ):
        super().__init__()
        self.root, self.path, self.field = root, path, field
        self.headers, self.send_as_json, self.timeout = headers, send_as_json, timeout

    def on_epoch_end(self, epoch, logs=None):
        import urllib.error
        import urllib.parse
        import urllib.request

        send = {"epoch": epoch}
        for k, v in (logs or {}).items():
            send[k] = v.item() if isinstance(v, (np.ndarray, np.generic)) else v
        if self.send_as_json:
            body, kind = json.dumps(send).encode(), "application/json"
        else:
            body, kind = (
                urllib.parse.urlencode({self.field: json.dumps(send)}).encode(),
                "application/x-www-form-urlencoded",
            )
        request = urllib.request.Request(
            self.root + self.path, data=body, headers={"Content-Type": kind, **(self.headers or {})}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout):
                pass
        except urllib.error.HTTPError:
            pass  # the server answered (an error status): Keras's requests.post does not raise either
        except (urllib.error.URLError, OSError, ValueError):
            warnings.warn(f"Could not reach RemoteMonitor root server at {self.root}", stacklevel=2)


class LambdaCallback(Callback):
    """Builds a callback from plain functions.

    Epoch hooks get `(epoch, logs)`, batch hooks `(batch, logs)`, begin/end
    hooks `(logs)`, by position as Keras passes them. Any other
    hook (e.g. `on_test_end=...`) can be given as a keyword argument.
    """

    def __init__(
        self,
        on_epoch_begin=None,
        on_epoch_end=None,
        on_train_begin=None,
        on_train_end=None,
        on_train_batch_begin=None,
        on_train_batch_end=None,
        **kwargs,
    ):
        super().__init__()
        self.__dict__.update(kwargs)
        hooks = {
            "on_epoch_begin": on_epoch_begin,
            "on_epoch_end": on_epoch_end,
            "on_train_begin": on_train_begin,
            "on_train_end": on_train_end,
            "on_train_batch_begin": on_train_batch_begin,
            "on_train_batch_end": on_train_batch_end,
        }
        for name, fn in hooks.items():
            if fn is not None:
                setattr(self, name, fn)


class BackupAndRestore(Callback):
    """Backs up the training state in `backup_dir` at the end of each epoch (or every `save_freq`
    batches) and, when a fit starts where a backup is, restores it and goes on from the epoch after
    it, as Keras 3's: the weights with the optimizer's state and the random streams
    (`latest.weights.h5`, so the resumed run computes what the straight run would have), and the
    epoch (`training_metadata.json`). The backup is deleted when the fit ends, unless
    delete_checkpoint=False; double_checkpoint keeps the one before too (`.bkp`), which a backup
    that cannot be read falls back to. Every replica restores; the chief alone writes.

    Args:
        backup_dir: a directory for this callback alone.
        save_freq: "epoch", or a number of batches.
        double_checkpoint: keep the previous backup too.
        delete_checkpoint: delete the backup when training ends.
    """

    def __init__(self, backup_dir, save_freq="epoch", double_checkpoint=False, delete_checkpoint=True):
        super().__init__()
        if not backup_dir:
            raise ValueError("Empty `backup_dir` argument passed")
        if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int)):
            raise ValueError(
                f"Invalid value for argument `save_freq`. Received: save_freq={save_freq}. "
                "Expected either 'epoch' or an integer value."
            )
        self.backup_dir, self.save_freq = str(backup_dir), save_freq
        self.double_checkpoint, self.delete_checkpoint = double_checkpoint, delete_checkpoint
        self._weights_path = os.path.join(self.backup_dir, "latest.weights.h5")
        self._metadata_path = os.path.join(self.backup_dir, "training_metadata.json")
        self._current_epoch, self._last_batch_seen, self._batches_since_save = 0, 0, 0

    def on_train_begin(self, logs=None):
        self._batches_since_save, self._last_batch_seen = 0, 0
        try:
            self._restore()
        except (OSError, ValueError):  # kgraph's file errors are ValueErrors: fall back to the one before
            previous = self._weights_path + ".bkp"
            if not os.path.exists(previous):
                raise
            shutil.copyfile(previous, self._weights_path)
            if os.path.exists(self._metadata_path + ".bkp"):
                shutil.copyfile(self._metadata_path + ".bkp", self._metadata_path)
            elif os.path.exists(self._metadata_path):
                os.remove(self._metadata_path)
            self._restore()

    def _restore(self):
        if os.path.exists(self._weights_path):
            self.model.load_weights(self._weights_path)
        if os.path.exists(self._metadata_path):
            with open(self._metadata_path) as f:
                self.model._initial_epoch = int(json.load(f)["epoch"])

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch, self._last_batch_seen = epoch + 1, 0
        if self.save_freq == "epoch":
            self._save()

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        # Keras's count: a batch number not above the last one seen starts a new epoch
        self._batches_since_save += batch + 1 if batch <= self._last_batch_seen else batch - self._last_batch_seen
        self._last_batch_seen = batch
        if self._batches_since_save >= self.save_freq:
            self._batches_since_save = 0
            self._save()

    def _save(self):
        if not getattr(self.model, "is_chief", True):
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        if self.double_checkpoint:
            for path in (self._weights_path, self._metadata_path):
                if os.path.exists(path):
                    shutil.copyfile(path, path + ".bkp")
        self.model.save_weights(self._weights_path)
        write_text(self._metadata_path, json.dumps({"epoch": self._current_epoch, "batch": self._last_batch_seen}))

    def on_train_end(self, logs=None):
        if self.delete_checkpoint and getattr(self.model, "is_chief", True) and os.path.exists(self.backup_dir):
            shutil.rmtree(self.backup_dir)


class TensorBoard(Callback):
    """Writes the logs as TensorBoard scalars, as Keras's TensorBoard callback lays them out:
    `log_dir/train` and `log_dir/validation`, tags `epoch_<metric>` at step = epoch (and
    `batch_<metric>` every `update_freq` batches when it is an int or "batch").

    Needs the optional `tensorboard` package (its event-file writer and protos): view with
    `tensorboard --logdir log_dir`. Histograms, images and the graph are not written."""

    writes_files = True  # with several replicas, only the chief runs it

    def __init__(self, log_dir="logs", update_freq="epoch", **unsupported):
        super().__init__()
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError:
            raise ImportError(
                "the TensorBoard callback needs the tensorboard package: pip install 'kgraph[tensorboard]'"
            ) from None
        ignored = {k: v for k, v in unsupported.items() if v not in (None, 0, False)}
        if ignored:
            warnings.warn(f"TensorBoard: {sorted(ignored)} are not written by kgraph", stacklevel=2)
        self._event, self._summary, self._writer_cls = event_pb2, summary_pb2, EventFileWriter
        self.log_dir = str(log_dir)
        self.update_freq = 1 if update_freq == "batch" else update_freq
        self._writers = {}
        self._batches = 0

    def _write(self, run, tag, value, step):
        if run not in self._writers:
            self._writers[run] = self._writer_cls(os.path.join(self.log_dir, run))
        summary = self._summary.Summary(value=[self._summary.Summary.Value(tag=tag, simple_value=float(value))])
        self._writers[run].add_event(self._event.Event(wall_time=time.time(), step=int(step), summary=summary))

    def on_train_batch_end(self, batch, logs=None):
        self._batches += 1
        if isinstance(self.update_freq, int) and self._batches % self.update_freq == 0:
            for k, v in (logs or {}).items():
                self._write("train", f"batch_{k}", v, self._batches)

    def on_epoch_end(self, epoch, logs=None):
        for k, v in (logs or {}).items():
            run, name = ("validation", k[4:]) if k.startswith("val_") else ("train", k)
            self._write(run, f"epoch_{name}", v, epoch)
        lr = getattr(getattr(self.model, "optimizer", None), "learning_rate", None)
        if lr is not None:
            self._write("train", "epoch_learning_rate", lr, epoch)
        for w in self._writers.values():
            w.flush()

    def on_train_end(self, logs=None):
        for w in self._writers.values():
            w.close()
        self._writers = {}
