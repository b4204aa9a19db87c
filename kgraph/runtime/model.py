"""A compiled model: Keras's training API (fit, evaluate, predict, train_on_batch, weights)
over an Executable. It knows the compiled steps' inputs and outputs, never an op's maths."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from ..callbacks import CallbackList
from .executable import Executable
from .metrics import METRICS, Mean


class DataError(ValueError):
    """Data that does not fit the model: names both shapes."""


class CompiledModel:
    def __init__(self, executable: Executable, info: dict, optimizer=None):
        """info: {"input_names", "input_shapes", "output_names", "losses" (per output or None),
        "metrics": per output [[log name, metric fn name], ...], "dtype"}."""
        self.executable = executable
        self.info = info
        self.optimizer = optimizer
        self.stop_training = False
        self.history = None
        self.replicas = None          # set by a kgraph.distribute strategy
        self.is_chief = True          # only the chief replica prints and writes files
        self.shuffle_random = executable.random

    # ------------------------------------------------------------------ weights
    def get_weights(self) -> list:
        return self.executable.get_weights()

    def set_weights(self, weights) -> None:
        self.executable.set_weights(weights)

    def save_weights(self, filepath, overwrite=True) -> None:
        """Weights in Keras's get_weights() order, written atomically (temporary file, fsync, rename)."""
        filepath = str(filepath)
        if not overwrite and os.path.exists(filepath):
            raise FileExistsError(filepath)
        tmp = f"{filepath}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            np.savez(f, **{f"w{i:04d}": w for i, w in enumerate(self.get_weights())})
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)

    def load_weights(self, filepath) -> None:
        try:
            with np.load(filepath) as data:
                weights = [data[k] for k in sorted(data.files)]
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read weights from {filepath}: {e}") from None
        self.set_weights(weights)

    # ------------------------------------------------------------------ data
    def _inputs(self, x) -> list:
        names, shapes = self.info["input_names"], self.info["input_shapes"]
        if isinstance(x, dict):
            missing = [n for n in names if n not in x]
            if missing:
                raise DataError(f"inputs {missing} are missing; the model's inputs are {names}")
            x = [x[n] for n in names]
        xs = list(x) if isinstance(x, (list, tuple)) else [x]
        if len(xs) != len(names):
            raise DataError(f"the model has {len(names)} inputs ({', '.join(names)}), got {len(xs)} arrays")
        out = []
        for a, name, shape in zip(xs, names, shapes):
            a = np.ascontiguousarray(a, dtype=self.info["dtype"])
            if tuple(a.shape[1:]) != tuple(shape[1:]):
                raise DataError(f"input {name!r}: data of shape {a.shape} does not match the model's "
                                f"input shape {tuple(shape)}")
            out.append(a)
        if len({len(a) for a in out}) > 1:
            raise DataError(f"inputs have different numbers of samples: {[len(a) for a in out]}")
        return out

    def _targets(self, y) -> list:
        labels = self.executable.steps["test"]["labels"]
        if isinstance(y, dict):
            y = [y[n] for n in self.info["output_names"]]
        ys = list(y) if isinstance(y, (list, tuple)) else [y]
        if len(ys) != len(labels):
            raise DataError(f"the model has {len(labels)} outputs with a loss, got {len(ys)} target arrays")
        out = []
        for a, spec in zip(ys, labels):
            a = np.asarray(a)
            want = tuple(spec["shape"][1:])
            if a.shape[1:] != want and a.shape[1:] == want + (1,):
                a = a.reshape(a.shape[:-1])          # sparse labels given as (N, 1)
            elif a.shape[1:] != want and want == (1,) and a.ndim == 1:
                a = a.reshape(-1, 1)                 # binary targets given as (N,)
            if a.shape[1:] != want:
                raise DataError(f"targets of shape {a.shape} do not match the model's output "
                                f"(expected (None, {', '.join(map(str, want))}))")
            out.append(np.ascontiguousarray(a, dtype=spec["dtype"]))
        return out

    # ------------------------------------------------------------------ steps
    def _require_compiled(self):
        if self.optimizer is None or "train" not in self.executable.steps:
            raise RuntimeError("you must compile your model before training/testing: call model.compile(...)")

    def _batch_logs(self, outs, ys, trackers):
        n = len(ys[0]) if ys else 1
        trackers["loss"].update(outs["loss"][0], n)
        if len(self.info["output_names"]) > 1:
            for k, name in enumerate(self.info["output_names"]):
                if f"loss:{k}" in outs:
                    trackers.setdefault(f"{name}_loss", Mean()).update(outs[f"loss:{k}"][0], n)
        for k, specs in enumerate(self.info["metrics"]):
            for log_name, fn in specs:
                values = METRICS[fn](ys[k], outs[f"output:{k}"])
                trackers.setdefault(log_name, Mean()).update(values.mean(), len(values))
        return {k: t.result() for k, t in trackers.items()}

    def train_on_batch(self, x, y, return_dict=False):
        self._require_compiled()
        xs, ys = self._inputs(x), self._targets(y)
        logs = self._train_step(xs, ys, {"loss": Mean()})
        return logs if return_dict else _as_list(logs)

    def _train_step(self, xs, ys, trackers):
        opt = self.optimizer
        lr, step = opt.current_learning_rate(), opt.iterations + 1
        if self.replicas is not None:
            outs = self.replicas.train_step(xs, ys, lr, step)
        else:
            outs = self.executable.run("train", xs, ys, lr=lr, step=step)
        opt.iterations += 1
        return self._batch_logs(outs, ys, trackers)

    def test_on_batch(self, x, y, return_dict=False):
        self._require_compiled()
        logs = self._batch_logs(self.executable.run("test", self._inputs(x), self._targets(y)),
                                self._targets(y), {"loss": Mean()})
        return logs if return_dict else _as_list(logs)

    def predict_on_batch(self, x):
        return self.predict(x, batch_size=len(self._inputs(x)[0]), verbose=0)

    # ------------------------------------------------------------------ loops
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            validation_split=0.0, validation_data=None, shuffle=True, initial_epoch=0):
        self._require_compiled()
        batch_size = batch_size or 32
        verbose = 1 if verbose == "auto" else verbose
        xs, ys = self._inputs(x), self._targets(y)
        if validation_split and validation_data is None:
            split = int(math.floor(len(xs[0]) * (1.0 - validation_split)))  # Keras takes the last samples
            validation_data = ([a[split:] for a in xs], [a[split:] for a in ys])
            xs, ys = [a[:split] for a in xs], [a[:split] for a in ys]
        if validation_data is not None:
            vx, vy = validation_data[0], validation_data[1]
            vxs, vys = self._inputs(vx), self._targets(vy)
        n = len(xs[0])
        steps = max(1, math.ceil(n / batch_size))
        if self.replicas is not None and n % batch_size and n % batch_size < self.replicas.num_replicas:
            steps -= 1  # a last batch smaller than the number of replicas is skipped
        if not self.is_chief:  # other replicas train silently and write nothing
            verbose = 0
            callbacks = [c for c in (callbacks or []) if not getattr(c, "writes_files", False)]
        cbs = CallbackList(callbacks, add_history=True, add_progbar=verbose != 0, model=self,
                           verbose=verbose, epochs=epochs, steps=steps)
        self.stop_training = False
        cbs.on_train_begin()
        logs = {}
        for epoch in range(initial_epoch, epochs):
            cbs.on_epoch_begin(epoch)
            if shuffle:
                order = self.shuffle_random.permutation(n)
                ex, ey = [a[order] for a in xs], [a[order] for a in ys]
            else:
                ex, ey = xs, ys
            trackers = {"loss": Mean()}
            for step in range(steps):
                cbs.on_train_batch_begin(step)
                s = slice(step * batch_size, (step + 1) * batch_size)
                logs = self._train_step([a[s] for a in ex], [a[s] for a in ey], trackers)
                cbs.on_train_batch_end(step, logs)
                if self.stop_training:
                    break
            logs = dict(logs)
            if validation_data is not None:
                val = self._evaluate(vxs, vys, batch_size, None)
                logs.update({"val_" + k: v for k, v in val.items()})
            cbs.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        cbs.on_train_end(logs)
        return self.history

    def _evaluate(self, xs, ys, batch_size, cbs):
        trackers, logs = {"loss": Mean()}, {}
        n = len(xs[0])
        for step in range(max(1, math.ceil(n / batch_size))):
            s = slice(step * batch_size, (step + 1) * batch_size)
            if cbs:
                cbs.on_test_batch_begin(step)
            bys = [a[s] for a in ys]
            logs = self._batch_logs(self.executable.run("test", [a[s] for a in xs], bys), bys, trackers)
            if cbs:
                cbs.on_test_batch_end(step, logs)
        return logs

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", callbacks=None, return_dict=False):
        self._require_compiled()
        batch_size = batch_size or 32
        verbose = 1 if verbose == "auto" else verbose
        xs, ys = self._inputs(x), self._targets(y)
        steps = max(1, math.ceil(len(xs[0]) / batch_size))
        cbs = CallbackList(callbacks, add_progbar=verbose != 0, model=self, verbose=verbose, epochs=1, steps=steps)
        cbs.on_test_begin()
        logs = self._evaluate(xs, ys, batch_size, cbs)
        cbs.on_test_end(logs)
        return logs if return_dict else _as_list(logs)

    def predict(self, x, batch_size=None, verbose="auto", callbacks=None):
        batch_size = batch_size or 32
        verbose = 1 if verbose == "auto" else verbose
        xs = self._inputs(x)
        n = len(xs[0])
        steps = max(1, math.ceil(n / batch_size))
        cbs = CallbackList(callbacks, add_progbar=verbose != 0, model=self, verbose=verbose, epochs=1, steps=steps)
        cbs.on_predict_begin()
        outputs = None
        for step in range(steps):
            cbs.on_predict_batch_begin(step)
            s = slice(step * batch_size, (step + 1) * batch_size)
            outs = self.executable.run("predict", [a[s] for a in xs])
            preds = [outs[f"output:{k}"] for k in range(len(self.info["output_names"]))]
            if outputs is None:
                outputs = [np.empty((n,) + p.shape[1:], p.dtype) for p in preds]
            for o, p in zip(outputs, preds):
                o[s] = p
            cbs.on_predict_batch_end(step, {"outputs": preds})
        cbs.on_predict_end()
        return outputs[0] if len(outputs) == 1 else outputs

    # ------------------------------------------------------------------ a compiled trainer on disk
    @classmethod
    def from_directory(cls, directory):
        """Load what `kgraph compile` wrote: manifest.json, the generated steps and weights.npz."""
        from ..optimizers import get as get_optimizer

        directory = Path(directory)
        manifest = json.loads((directory / "manifest.json").read_text())
        for m in manifest["steps"].values():
            m["module"] = str(directory / m["module"])
        exe = Executable(manifest["steps"], manifest["params"], manifest["info"]["dtype"])
        model = cls(exe, manifest["info"], get_optimizer(manifest["optimizer"]))
        model.load_weights(directory / "weights.npz")
        return model


def _as_list(logs):
    values = list(logs.values())
    return values[0] if len(values) == 1 else values
