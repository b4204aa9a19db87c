"""The callbacks the training loops themselves use: the `Callback` base class, `CallbackList`
(which calls each hook on every callback), `History` and `ProgbarLogger`. Keras's other callbacks
(EarlyStopping, ModelCheckpoint, ...) build on these in `kgraph/callbacks.py`, which re-exports
them; the runtime imports only this module, so a compiled trainer runs without that one.

Behaviour, defaults and printed messages follow `keras/src/callbacks/*`."""

from .progbar import Progbar, print_msg


class Callback:
    """Base class: override the hooks you need; all of them default to no-ops.

    Attributes:
        params: dict of run parameters (`verbose`, `epochs`, `steps`).
        model: the model being trained, evaluated or run.
    """

    def __init__(self):
        self.params = None
        self.model = None

    def set_params(self, params):
        self.params = params

    def set_model(self, model):
        self.model = model

    def on_batch_begin(self, batch, logs=None):
        """Backwards compatible alias of `on_train_batch_begin`."""

    def on_batch_end(self, batch, logs=None):
        """Backwards compatible alias of `on_train_batch_end`."""

    def on_epoch_begin(self, epoch, logs=None):
        """Called at the start of a training epoch (0-based `epoch`)."""

    def on_epoch_end(self, epoch, logs=None):
        """Called with the epoch's metrics, validation ones prefixed `val_`."""

    def on_train_batch_begin(self, batch, logs=None):
        self.on_batch_begin(batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        """`logs` hold the running epoch means up to this batch."""
        self.on_batch_end(batch, logs=logs)

    def on_test_batch_begin(self, batch, logs=None):
        pass

    def on_test_batch_end(self, batch, logs=None):
        pass

    def on_predict_batch_begin(self, batch, logs=None):
        pass

    def on_predict_batch_end(self, batch, logs=None):
        pass

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_test_begin(self, logs=None):
        pass

    def on_test_end(self, logs=None):
        pass

    def on_predict_begin(self, logs=None):
        pass

    def on_predict_end(self, logs=None):
        pass


def _pythonify_logs(logs):
    """Flattens nested dicts, turns scalars into floats and sorts the keys.

    Sorting is why Keras prints `accuracy` before `loss`.
    """
    result = {}
    for key, value in sorted((logs or {}).items()):
        if isinstance(value, dict):
            result.update(_pythonify_logs(value))
            continue
        try:
            value = float(value)
        except (TypeError, ValueError):
            pass  # non-scalars (e.g. per-class arrays) pass through
        result[key] = value
    return result


class CallbackList(Callback):
    """Calls every hook on each callback in turn, sharing one `logs` dict.

    Callbacks run in list order and may add to `logs` (LearningRateScheduler
    adds `learning_rate`), which is why History and ProgbarLogger go last.
    `fit` builds one as
    `CallbackList(cbs, add_history=True, add_progbar=verbose != 0,
    model=model, verbose=verbose, epochs=epochs, steps=steps)`.
    """

    def __init__(
        self,
        callbacks=None,
        add_history=False,
        add_progbar=False,
        model=None,
        **params,
    ):
        super().__init__()
        self.callbacks = list(callbacks) if callbacks else []
        self._history = next((cb for cb in self.callbacks if isinstance(cb, History)), None)
        self._progbar = next((cb for cb in self.callbacks if isinstance(cb, ProgbarLogger)), None)
        if self._history is None and add_history:
            self._history = History()
            self.callbacks.append(self._history)
        if self._progbar is None and add_progbar:
            self._progbar = ProgbarLogger()
            self.callbacks.append(self._progbar)
        self.set_model(model)
        self.set_params(params)

    def append(self, callback):
        self.callbacks.append(callback)

    def set_params(self, params):
        self.params = params
        if params:
            for callback in self.callbacks:
                callback.set_params(params)

    def set_model(self, model):
        if model is None:
            return
        super().set_model(model)
        if self._history is not None:
            model.history = self._history
        for callback in self.callbacks:
            callback.set_model(model)

    def _dispatch(self, hook, *args, logs=None):
        logs = _pythonify_logs(logs)
        for callback in self.callbacks:
            getattr(callback, hook)(*args, logs)  # positional, as Keras calls them: `def on_epoch_end(self, epoch, l)`

    def on_batch_begin(self, batch, logs=None):
        self._dispatch("on_batch_begin", batch, logs=logs)

    def on_batch_end(self, batch, logs=None):
        self._dispatch("on_batch_end", batch, logs=logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._dispatch("on_epoch_begin", epoch, logs=logs)

    def on_epoch_end(self, epoch, logs=None):
        self._dispatch("on_epoch_end", epoch, logs=logs)

    def on_train_batch_begin(self, batch, logs=None):
        self._dispatch("on_train_batch_begin", batch, logs=logs)

    def on_train_batch_end(self, batch, logs=None):
        self._dispatch("on_train_batch_end", batch, logs=logs)

    def on_test_batch_begin(self, batch, logs=None):
        self._dispatch("on_test_batch_begin", batch, logs=logs)

    def on_test_batch_end(self, batch, logs=None):
        self._dispatch("on_test_batch_end", batch, logs=logs)

    def on_predict_batch_begin(self, batch, logs=None):
        self._dispatch("on_predict_batch_begin", batch, logs=logs)

    def on_predict_batch_end(self, batch, logs=None):
        self._dispatch("on_predict_batch_end", batch, logs=logs)

    def on_train_begin(self, logs=None):
        self._dispatch("on_train_begin", logs=logs)

    def on_train_end(self, logs=None):
        self._dispatch("on_train_end", logs=logs)

    def on_test_begin(self, logs=None):
        self._dispatch("on_test_begin", logs=logs)

    def on_test_end(self, logs=None):
        self._dispatch("on_test_end", logs=logs)

    def on_predict_begin(self, logs=None):
        self._dispatch("on_predict_begin", logs=logs)

    def on_predict_end(self, logs=None):
        self._dispatch("on_predict_end", logs=logs)


class History(Callback):
    """Records each epoch's logs; `fit` returns this object.

    Attributes:
        history: dict mapping each log key to its list of per-epoch values.
        epoch: list of the 0-based epoch indices recorded.
    """

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)
        self.model.history = self


class ProgbarLogger(Callback):
    """Prints `Epoch i/n` headers and a progress bar for fit/evaluate/predict.

    Reads `verbose` ("auto" means 1), `epochs` and `steps` from `params`.
    Validation inside `fit` stays silent; its `val_*` results show on the
    epoch's final line.
    """

    def __init__(self):
        super().__init__()
        self.seen = 0
        self.progbar = None
        self.target = None
        self.verbose = 1
        self.epochs = 1
        self._called_in_fit = False

    def set_params(self, params):
        super().set_params(params)
        verbose = params.get("verbose", 1)
        self.verbose = 1 if verbose == "auto" else verbose
        self.epochs = params.get("epochs", 1)
        self.target = params.get("steps")

    def on_train_begin(self, logs=None):
        self._called_in_fit = True

    def on_test_begin(self, logs=None):
        if not self._called_in_fit:
            self._reset_progbar()

    def on_predict_begin(self, logs=None):
        self._reset_progbar()

    def on_epoch_begin(self, epoch, logs=None):
        self._reset_progbar()
        if self.verbose and self.epochs > 1:
            print_msg(f"Epoch {epoch + 1}/{self.epochs}")

    def on_train_batch_end(self, batch, logs=None):
        self._update_progbar(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        if not self._called_in_fit:
            self._update_progbar(batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        self._update_progbar(batch, None)  # predictions are not metrics

    def on_epoch_end(self, epoch, logs=None):
        self._finalize_progbar(logs)

    def on_test_end(self, logs=None):
        if not self._called_in_fit:
            self._finalize_progbar(logs)

    def on_predict_end(self, logs=None):
        self._finalize_progbar(logs)

    def _reset_progbar(self):
        self.seen = 0
        # Logs are already running means, so the bar shows them as given.
        self.progbar = Progbar(target=self.target, verbose=self.verbose, stateless_metrics=())
        self._setup_before = self._setup_seconds()

    def _setup_seconds(self):
        """The seconds the model's steps spent compiling or loading so far (Executable.setup_seconds),
        which the bar leaves out of its times."""
        return getattr(getattr(self.model, "executable", None), "setup_seconds", 0.0)

    def _exclude_setup(self):
        self.progbar.excluded = self._setup_seconds() - self._setup_before

    def _update_progbar(self, batch, logs):
        if self.progbar is None:
            self._reset_progbar()
        self.seen = batch + 1
        if self.verbose == 1:
            self._exclude_setup()
            self.progbar.update(self.seen, list((logs or {}).items()), finalize=False)

    def _finalize_progbar(self, logs):
        if self.progbar is None:
            self._reset_progbar()
        if self.target is None:
            # Unknown step count (a generator): learnt from the first pass.
            self.target = self.seen
            self.progbar.target = self.target
        self._exclude_setup()
        self.progbar.update(self.target, list((logs or {}).items()), finalize=True)
