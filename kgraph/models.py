"""Keras's Model API over kgraph: a config goes through the frontend, the passes and codegen
into compiled steps that the runtime runs. The only module that knows all of them."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numba
import numpy as np

from . import distribute
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod
from . import saving
from .codegen import generate_cpu, generate_cuda, step_manifest
from .frontend import build_model, parse_config_text, read_config_file
from .passes import default_parts, run_pipeline
from .runtime.executable import Executable
from .runtime.loader import write_source
from .runtime.model import CompiledModel


def _cuda_available() -> bool:
    """numba.cuda.is_available(). Importing numba.cuda to ask takes 70 ms of a first step, so a
    Linux machine with no NVIDIA driver (nor WSL's GPU device) answers no without it."""
    gpu_files = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg")
    if sys.platform.startswith("linux") and not numba.config.ENABLE_CUDASIM \
            and not any(os.path.exists(f) for f in gpu_files):
        return False
    from numba import cuda

    return cuda.is_available()


class Model(CompiledModel):
    """A Keras model compiled by kgraph. Build one with model_from_json / model_from_yaml /
    load_model; then compile, fit, evaluate and predict as in Keras."""

    def __init__(self, frontend_model, seed: int | None = None):
        self.frontend = frontend_model
        self.name = frontend_model.name
        self.seed = seed
        layout, offset = [], 0
        for w in frontend_model.weights:
            layout.append({"node": w.node, "layer": w.layer, "name": w.name, "offset": offset, "shape": list(w.shape)})
            offset += int(np.prod(w.shape))
        exe = Executable({}, layout, frontend_model.dtype, seed)
        exe.set_weights([w.value for w in frontend_model.weights])
        for w in frontend_model.weights:   # the executable holds them now: a second copy for the
            w.value = None                 # model's life added a third to a large model's RSS
        info = {"input_names": [i.name for i in frontend_model.inputs],
                "input_shapes": [list(i.shape) for i in frontend_model.inputs],
                "output_names": list(frontend_model.output_names), "metrics": [], "dtype": frontend_model.dtype}
        super().__init__(exe, info)
        self.compiled = {}        # kind -> kgraph.passes.Compiled, for `kgraph inspect`
        self.device = "cpu"
        self.compile_args = None
        self.strategy = distribute.get_strategy()

    # ------------------------------------------------------------------ description
    def summary(self, line_length=None, print_fn=None):
        self.frontend.summary(print_fn=print_fn or print, line_length=line_length)

    def count_params(self) -> int:
        return self.frontend.count_params()

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.frontend.config, **kwargs)

    def to_yaml(self, **kwargs) -> str:
        import yaml

        return yaml.safe_dump(self.frontend.config, **kwargs)

    @property
    def input_names(self):
        return self.info["input_names"]

    @property
    def output_names(self):
        return self.info["output_names"]

    # ------------------------------------------------------------------ compilation
    def _build(self, kind, losses=None, optimizer=None):
        fm = self.frontend
        regs = [(w.node, w.regularizer.get("l1", 0.0), w.regularizer.get("l2", 0.0))
                for w in fm.weights if w.regularizer]
        compiled = run_pipeline(kind, fm.lower(training=kind == "train"), [w.node for w in fm.weights],
                                losses=losses, regularizers=regs, optimizer=optimizer,
                                trainable=[w.node for w in fm.weights if w.trainable],
                                parts=1 if self.device == "cuda" else default_parts())
        if self.device == "cuda":
            source, launches = generate_cuda(compiled)
            path = write_source(source, f"{_stem(self.name)}_{kind}_cuda")
            manifest = {**step_manifest(compiled, path), "launches": launches}
        else:
            manifest = step_manifest(compiled, write_source(generate_cpu(compiled), f"{_stem(self.name)}_{kind}"))
        self.compiled[kind] = compiled
        self.executable.add_step(kind, manifest)

    def _use_device(self, device):
        """Run the steps on "cpu" or "cuda"; "auto" is CUDA where numba.cuda.is_available().
        The weights move over; the random stream (dropout, shuffling) carries on."""
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'")
        if device != "cpu":
            available = _cuda_available()
            if device == "cuda" and not available:
                raise RuntimeError("device='cuda': no CUDA GPU is available (numba.cuda.is_available() is False)")
            device = "cuda" if available else "cpu"
        if device == self.device:
            return
        if device == "cuda":
            from .runtime.cuda_executable import CudaExecutable as make
        else:
            make = Executable
        old = self.executable
        self.executable = make({}, old.param_layout, old.dtype.name)
        self.executable.random = old.random
        self.executable.set_weights(old.get_weights())
        self.device = device

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, loss_weights=None, device="auto",
                steps_per_execution=None, **kwargs):
        """As keras.Model.compile. Compiles the training and test steps (cached on disk) for
        device "cpu" or "cuda" ("auto": CUDA when numba.cuda.is_available(), else the CPU).
        steps_per_execution: steps each call of the compiled step runs in fit, batch callbacks
        then running once a call, as in Keras; by default fit runs several a call (about 10 ms
        of them) when no callback needs every batch, one a call otherwise."""
        unsupported = {k: v for k, v in kwargs.items() if v not in (None, False, "auto")}
        if unsupported:
            raise ValueError(f"compile() arguments {sorted(unsupported)} are not supported yet")
        if loss is None:
            raise ValueError("compile() needs a loss, e.g. loss='sparse_categorical_crossentropy'")
        if steps_per_execution not in (None, "auto") and (int(steps_per_execution) != steps_per_execution
                                                           or steps_per_execution < 1):
            raise ValueError(f"steps_per_execution must be a positive integer, got {steps_per_execution!r}")
        self.steps_per_execution = None if steps_per_execution in (None, "auto") else int(steps_per_execution)
        outputs = self.output_names
        opt = optimizers_mod.get(optimizer)
        specs = [losses_mod.get(l) if l is not None else None for l in _per_output(loss, outputs, "loss")]
        weights = _per_output(loss_weights, outputs, "loss_weights") if loss_weights is not None else [1.0] * len(outputs)
        for s, w in zip(specs, weights):
            if s is not None:
                s["weight"] = float(w)
        out_units = [self.frontend_output_units(k) for k in range(len(outputs))]
        self.info["metrics"] = _resolve_metrics(metrics, outputs, specs, out_units)
        self.info["losses"] = specs
        self.strategy = distribute.get_strategy() or self.strategy
        self._use_device("cpu" if device == "auto" and self.strategy is not None else device)
        if self.strategy is not None and self.device == "cuda":
            raise NotImplementedError("data-parallel strategies run on the CPU backend; compile with device='cpu'")
        self._build("train", specs, opt.spec())
        self._build("test", specs)
        self.optimizer = opt
        if self.strategy is not None:
            self.strategy.attach(self)
        self.compile_args = {"optimizer": {"class_name": type(opt).__name__, "config": opt.get_config()},
                             "loss": specs, "loss_config": _loss_config(loss), "metrics": metrics,
                             "loss_weights": loss_weights}

    # ------------------------------------------------------------------ files
    def save(self, filepath, overwrite=True, include_optimizer=True):
        """A .keras archive (or legacy .h5) that Keras's load_model opens; with the optimizer's
        state, so training resumes exactly. Written atomically."""
        if not overwrite and Path(filepath).exists():
            raise FileExistsError(filepath)
        if not str(filepath).endswith((".keras", ".h5", ".hdf5")):
            raise ValueError(f"{filepath}: model files end in .keras (or .h5 for the legacy format)")
        saving.save_model(self, filepath, include_optimizer)

    def save_weights(self, filepath, overwrite=True):
        """.weights.h5 (Keras 3), .h5 (Keras 2 layout) or .npz, by extension; written atomically."""
        if not overwrite and Path(filepath).exists():
            raise FileExistsError(filepath)
        saving.save_weights(self, filepath)

    def load_weights(self, filepath):
        saving.load_weights(self, filepath)

    def export(self, directory) -> Path:
        """Write a runnable trainer: the generated steps, manifest.json, weights.npz and train.py,
        which needs only kgraph's runtime (`python DIR/train.py --data ...`)."""
        if self.compile_args is None:
            raise RuntimeError("compile the model before exporting a trainer")
        if self.device != "cpu":
            raise NotImplementedError("an exported trainer runs on the CPU: compile with device='cpu' to export")
        if "predict" not in self.executable.steps:
            self._build("predict")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        steps = {}
        for kind, m in self.executable.steps.items():
            src = Path(m["module"])
            (directory / src.name).write_text(src.read_text())
            steps[kind] = {**m, "module": src.name}
        manifest = {"model": self.name, "steps": steps, "params": self.executable.param_layout,
                    "info": self.info, "optimizer": self.compile_args["optimizer"]}
        (directory / "manifest.json").write_text(json.dumps(manifest, indent=1))
        (directory / "model.json").write_text(self.to_json())
        self.save_weights(directory / "weights.npz")
        (directory / "train.py").write_text(TRAINER_SCRIPT.format(name=self.name))
        return directory


    def frontend_output_units(self, k) -> int:
        graph = self.frontend.lower(training=False)
        shape = graph.type(graph.outputs[f"output:{k}"]).shape
        return shape[-1] if shape else 1

    def predict(self, x, batch_size=None, verbose="auto", callbacks=None):
        if "predict" not in self.executable.steps:
            self._build("predict")
        return super().predict(x, batch_size=batch_size, verbose=verbose, callbacks=callbacks)


def _stem(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name) or "model"


def _per_output(value, outputs, what):
    if isinstance(value, dict) and "class_name" not in value:  # {output name: value}, not a Keras config
        unknown = set(value) - set(outputs)
        if unknown:
            raise ValueError(f"{what} names unknown outputs {sorted(unknown)}; the outputs are {outputs}")
        return [value.get(o) for o in outputs]
    if isinstance(value, (list, tuple)):
        if len(value) != len(outputs):
            raise ValueError(f"{what} has {len(value)} entries for {len(outputs)} outputs")
        return list(value)
    return [value] * len(outputs)


def _resolve_metrics(metrics, outputs, specs, out_units):
    """Per output, [{"name": log name, "key": the metric's own name, "class", "config"}], as Keras 3:
    one output takes a list of metrics; several take a list with one entry per output, or a dict
    by output name, and log each metric as "<output>_<name>" (a repeated name gets "_1", "_2")."""
    if not metrics:
        return [[] for _ in outputs]
    if isinstance(metrics, dict):
        unknown = set(metrics) - set(outputs)
        if unknown:
            raise ValueError(f"metrics names unknown outputs {sorted(unknown)}; the outputs are {outputs}")
        per = [metrics.get(o) for o in outputs]
    elif len(outputs) == 1:
        per = [metrics]
    elif isinstance(metrics, (list, tuple)) and len(metrics) == len(outputs):
        per = list(metrics)
    else:
        raise ValueError(f"the model has {len(outputs)} outputs {outputs}: give metrics as a list with one entry "
                         f"per output or a dict by output name")
    resolved, seen = [], {}
    for k, entry in enumerate(per):
        row = []
        for m in (entry if isinstance(entry, (list, tuple)) else [entry] if entry is not None else []):
            key, cls, config = metrics_mod.get(m, specs[k]["name"] if specs[k] else "", out_units[k])
            name = key if len(outputs) == 1 else f"{outputs[k]}_{key}"
            seen[name] = seen.get(name, -1) + 1
            row.append({"name": f"{name}_{seen[name]}" if seen[name] else name, "key": key, "class": cls,
                        "config": config})
        resolved.append(row)
    return resolved


# ---------------------------------------------------------------------- constructors

def model_from_config(config: dict, seed: int | None = None) -> Model:
    return Model(build_model(config, seed=seed), seed=seed)


def model_from_json(json_string: str, custom_objects=None, seed: int | None = None) -> Model:
    return model_from_config(parse_config_text(json_string, "json"), seed=seed)


def model_from_yaml(yaml_string: str, custom_objects=None, seed: int | None = None) -> Model:
    return model_from_config(parse_config_text(yaml_string, "yaml"), seed=seed)


def load_model(filepath, custom_objects=None, compile=True, seed: int | None = None) -> Model:
    """A model from a .keras archive or legacy .h5 file (weights, and with compile=True the saved
    compile arguments and optimizer state), or from a config alone: .json, .yaml or .yml."""
    if str(filepath).lower().endswith((".keras", ".h5", ".hdf5")):
        config, compile_config, restore = saving.read_model_file(filepath)
        model = model_from_config(config, seed=seed)
        if compile and compile_config:
            model.compile(optimizer=compile_config["optimizer"], loss=compile_config["loss"],
                          metrics=compile_config.get("metrics"), loss_weights=compile_config.get("loss_weights"))
        restore(model)
        return model
    return model_from_config(read_config_file(filepath), seed=seed)


def _loss_config(loss):
    """The loss argument as Keras serializes it in compile_config."""
    if isinstance(loss, losses_mod.Loss):
        return {"module": "keras.losses", "class_name": type(loss).__name__, "config": loss.get_config(),
                "registered_name": None}
    if isinstance(loss, (list, tuple)):
        return [_loss_config(l) for l in loss]
    if isinstance(loss, dict) and "class_name" not in loss:
        return {k: _loss_config(v) for k, v in loss.items()}
    return loss


TRAINER_SCRIPT = '''"""Trainer for model {name!r}, compiled by kgraph. Needs only kgraph's runtime:

    python train.py --data data.npz --epochs 5
"""
import sys
from pathlib import Path

from kgraph.runtime.standalone import main

if __name__ == "__main__":
    sys.exit(main(Path(__file__).resolve().parent))
'''
