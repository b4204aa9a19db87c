"""Keras's Model API over kgraph: a config goes through the frontend, the passes and codegen
into compiled steps that the runtime runs. The only module that knows all of them."""

from __future__ import annotations

import collections
import dataclasses
import inspect
import json
import os
import sys
import types
import warnings
from pathlib import Path

import numba
import numpy as np

from . import distribute
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import optimizers as optimizers_mod
from . import saving
from .codegen import generate_cpu, generate_cuda, step_manifest
from .kernels import fingerprint
from .frontend import (
    ConfigError,
    NotBuiltError,
    build_model,
    config_inputs,
    declare_input_shapes,
    parse_config_text,
    read_config_file,
)
from .frontend.model import PROBE_SIZES, trainable_from_configs
from .frontend.summary import cost_line, format_summary, step_cost
from .passes.loss import LOSSES
from .passes import run_pipeline, updates_last
from .runtime.executable import Executable
from .runtime.loader import write_source
from .runtime.batches import is_batch_source
from .runtime import child, files, sources
from .runtime.policy import gc_paused
from .runtime.checks import DataError
from .runtime.model import CompiledModel, log_names


def _cuda_available() -> bool:
    """numba.cuda.is_available(). Importing numba.cuda to ask takes 70 ms of a first step, so a
    Linux machine with no NVIDIA driver (nor WSL's GPU device) answers no without it."""
    gpu_files = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/dxg")
    if (
        sys.platform.startswith("linux")
        and not numba.config.ENABLE_CUDASIM
        and not any(os.path.exists(f) for f in gpu_files)
    ):
        return False
    from numba import cuda

    return cuda.is_available()


class _WeightLists:
    """Keras's trainable_weights and non_trainable_weights, from a `weights` list."""

    @property
    def trainable_weights(self) -> list:
        return [w for w in self.weights if w.trainable]

    @property
    def non_trainable_weights(self) -> list:
        return [w for w in self.weights if not w.trainable]


class Model(_WeightLists, CompiledModel):
    """A Keras model compiled by kgraph. Build one with model_from_json / model_from_yaml /
    load_model; then compile, fit, evaluate and predict as in Keras. A config that declares no
    input shape makes a model that builds, as Keras's, on its first data or on build(input_shape)."""

    snapshot_kinds = ()  # the steps whose passes print the graph into compiled[kind].snapshots (inspect's)
    step_kinds = ("train", "test")  # the steps compile() builds (kgraph inspect: only the one it prints)

    def __init__(self, frontend_model=None, seed: int | None = None, config: dict | None = None):
        self.seed = seed
        self.frontend = None
        self.config = config if frontend_model is None else frontend_model.config
        self.compiled = {}  # kind -> kgraph.passes.Compiled, for `kgraph inspect`
        self.device = "cpu"
        self.compile_args = None
        self._trainable_warned = None  # the compile_args a trainable change has warned about
        self.loss = None  # compile()'s loss, as given (Keras's model.loss)
        self.pending_compile = None  # compile()'s arguments, kept until an unbuilt model builds
        self._layer_objects = None  # model.layers, made once
        self.strategy = distribute.get_strategy()
        self._step_args = {}  # kind -> (losses, optimizer spec) its steps compile with (compile()'s)
        self._shapes = collections.OrderedDict()  # input dims -> {kind: step name}, least recently used first
        self._shape_compiles = 0  # steps compiled for input shapes, for the eviction warning
        self._pad_neutral = None  # whether padding the unknown lengths with 0 changes no output (None: not known yet)
        if frontend_model is None:
            self.name = _config_name(config)
            super().__init__(
                Executable({}, [], "float32", seed),
                {"input_names": [], "input_shapes": [], "output_names": [], "metrics": []},
            )
            return
        self._adopt(frontend_model, Executable({}, [], frontend_model.dtype, seed))

    def _adopt(self, frontend_model, executable):
        """Hold a built frontend model: its weights move into the executable."""
        self.frontend = frontend_model
        self._layer_objects = None
        self._forward_flops = None  # a sample's forward GEMM FLOPs, once fit asks (by input shape: unknown dims)
        self.name = frontend_model.name
        layout, offset = [], 0
        for w in frontend_model.weights:
            layout.append({"node": w.node, "layer": w.layer, "name": w.name, "offset": offset, "shape": list(w.shape)})
            offset += int(np.prod(w.shape))
        exe = Executable({}, layout, frontend_model.dtype)
        exe.random = executable.random  # the random stream (initializers aside) carries on
        exe.set_weights([w.value for w in frontend_model.weights])
        for w in frontend_model.weights:  # the executable holds them now: a second copy for the
            w.value = None  # model's life added a third to a large model's RSS
        info = {
            "input_names": [i.name for i in frontend_model.inputs],
            "input_shapes": [list(i.shape) for i in frontend_model.inputs],
            "output_names": list(frontend_model.output_names),
            "output_keys": frontend_model.output_keys,
            # Keras 3 names a dict of outputs' logs by key (alpha_loss), tf-keras 2 by layer (dense_b_loss)
            "logs_by_key": frontend_model.keras >= 3,
            "metrics": [],
            "dtype": frontend_model.dtype,
            "token_inputs": _token_inputs(frontend_model),
        }
        CompiledModel.__init__(self, exe, info)

    # ------------------------------------------------------------------ building
    @property
    def built(self) -> bool:
        return self.frontend is not None

    def build(self, input_shape) -> None:
        """As keras.Model.build: input_shape is (None, ...) for one input, a list of them for several."""
        if self.built:
            return
        shapes = [input_shape] if _is_shape(input_shape) else list(input_shape)
        frontend = build_model(self.config, seed=self.seed, input_shapes=shapes)
        # the config now declares what the data said, so that save() writes a model that loads built
        frontend.config = self.config = declare_input_shapes(self.config, [i.shape for i in frontend.inputs])
        self._adopt(frontend, self.executable)
        if self.pending_compile is not None:
            args, self.pending_compile = self.pending_compile, None
            self.compile(**args)

    def _build_from(self, x) -> None:
        """Build an unbuilt model from the shapes of its first data (arrays, a list or a dict of them)."""
        if self.built or x is None:
            return
        names = [name for name, _ in config_inputs(self.config)]
        if isinstance(x, dict):
            x = [x[n] for n in names if n in x] if all(n in x for n in names) else list(x.values())
        one_per_input = (
            isinstance(x, (list, tuple)) and len(x) == len(names) and all(isinstance(a, np.ndarray) for a in x)
        )
        xs = list(x) if one_per_input or (isinstance(x, (list, tuple)) and len(names) > 1) else [x]
        try:
            shapes = [(None, *np.shape(a)[1:]) for a in xs]
        except ValueError:
            return  # ragged data: the checks in fit/predict name the problem
        if any(len(shape) < 2 for shape in shapes):
            raise DataError(
                f"data of shape {np.shape(xs[0])}: the model builds its input shape from the data's "
                "rows (samples, features...); for one feature per sample use x.reshape(-1, 1)"
            )
        self.build(shapes if len(shapes) > 1 else shapes[0])

    def _require_built(self, what: str):
        if not self.built:
            raise ValueError(
                f"model {self.name!r} is not built yet: its config declares no input shape. "
                f"It builds on its first fit/evaluate/predict or model.build(input_shape), before {what}"
            )

    # ------------------------------------------------------------------ description
    def summary(self, line_length=None, print_fn=None):
        print_fn = print_fn or print
        if not self.built:
            print_fn(
                f'Model: "{self.name}" (not built yet: its config declares no input shape; it builds on its '
                f"first fit, evaluate or predict, or on model.build(input_shape))"
            )
            return
        self.frontend.summary(print_fn=print_fn, line_length=line_length)
        print_fn(cost_line(self.frontend))

    def count_params(self) -> int:
        self._require_built("count_params()")
        return self.frontend.count_params()

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.config, **kwargs)

    def to_yaml(self, **kwargs) -> str:
        import yaml

        return yaml.safe_dump(self.config, **kwargs)

    def get_config(self) -> dict:
        return self.config.get("config", self.config)

    @property
    def input_names(self):
        return self.info["input_names"]

    @property
    def output_names(self):
        return self.info["output_names"]

    @property
    def layers(self) -> list:
        """The layers, as keras.Model.layers lists them (a Sequential leaves out its InputLayer): the
        same objects on every call, so that layer.trainable = False stays set."""
        self._require_built("its layers exist")
        if self._layer_objects is None:
            self._layer_objects = [Layer(self, info) for info in self.frontend.layers]
        return self._layer_objects

    @property
    def trainable(self) -> bool:
        return all(layer.trainable for layer in self.layers) if self.built else True

    @trainable.setter
    def trainable(self, value) -> None:
        """model.trainable = False freezes every layer (nested models' too), as in Keras."""
        self._require_built("trainable can be set")
        for layer in self.layers:
            layer._set_flag(bool(value))
        self._trainable_changed("the model")

    def _trainable_changed(self, what: str) -> None:
        """Each weight's trainable flag from the layers' flags; from the next compile() the optimizer
        updates the trainable ones."""
        trainable_from_configs(self.frontend.desc, self.frontend.weights, self.frontend.keras)
        if self.compile_args is not None and self._trainable_warned is not self.compile_args:
            self._trainable_warned = self.compile_args  # once until the next compile(): the guide's loops set many
            warnings.warn(
                f"{what}: trainable changed after compile(); call compile() again for the training step to follow it",
                stacklevel=3,
            )

    def get_layer(self, name=None, index=None):
        """As keras.Model.get_layer: by name or by index in model.layers."""
        return _get_layer(self.layers, name, index)

    @property
    def weights(self) -> list:
        """Every weight (kgraph.models.Weight: name, path, shape, numpy(), assign()), get_weights' order."""
        if not self.built:
            return []
        return [Weight(self, k, spec) for k, spec in enumerate(self.frontend.weights)]

    @property
    def inputs(self) -> list:
        self._require_built("it has inputs")
        return [TensorSpec(i.name, tuple(i.shape), i.dtype) for i in self.frontend.inputs]

    @property
    def outputs(self) -> list:
        self._require_built("it has outputs")
        shapes = self.frontend.output_shapes()
        return [TensorSpec(n, s, self.frontend.dtype) for n, s in zip(self.output_names, shapes)]

    @property
    def input_shape(self):
        """(None, ...) for one input, a list of them for several (as Keras 2's model.input_shape)."""
        shapes = [t.shape for t in self.inputs]
        return shapes[0] if len(shapes) == 1 else shapes

    @property
    def output_shape(self):
        shapes = [t.shape for t in self.outputs]
        return shapes[0] if len(shapes) == 1 else shapes

    def __call__(self, x, training=False):
        """model(x): the outputs for x as NumPy arrays (the inference step, as model(x, training=False))."""
        if training:
            raise NotImplementedError(
                "model(x, training=True) is not supported: kgraph runs the training "
                "forward pass only inside fit/train_on_batch"
            )
        self._build_from(x)
        n = len(self._inputs(x)[0])
        return self.predict(x, batch_size=max(1, n), verbose=0)

    # ------------------------------------------------------------------ compilation
    @gc_paused()
    def _build(self, kind, losses=None, optimizer=None, frontend=None, name=None):
        """Compile the step of `kind` ("train", "test", "predict") and install it as `name` (default:
        kind); `frontend`: the model at the input shape it runs on (default: the model's own)."""
        fm, name = frontend or self.frontend, name or kind
        forward, masks = fm.lowered(training=kind == "train")
        compiled = self._passes(kind, fm, forward, losses, optimizer, masks)
        if self.device == "cuda":
            source, launches = generate_cuda(compiled)
            path = write_source(source, f"{_stem(self.name)}_{_stem(name)}_cuda")
            manifest = dataclasses.replace(step_manifest(compiled, path), launches=launches)
        else:
            manifest = step_manifest(
                compiled, write_source(generate_cpu(compiled), f"{_stem(self.name)}_{_stem(name)}")
            )
        self.compiled[kind] = compiled
        self.executable.add_step(name, manifest)
        return manifest

    def _passes(self, kind, fm, forward, losses, optimizer, masks):
        """run_pipeline over the forward graph of frontend model `fm` (and its output masks), with
        the model's weights."""
        masks = {} if kind == "predict" else _loss_masks(self.name, fm, forward, masks, losses)
        regs = [
            (w.node, w.regularizer.get("l1", 0.0), w.regularizer.get("l2", 0.0)) for w in fm.weights if w.regularizer
        ]
        return run_pipeline(
            kind,
            forward,
            [w.node for w in fm.weights],
            losses=losses,
            masks=masks,
            regularizers=regs,
            constraints={w.node: w.constraint for w in fm.weights if w.constraint and w.trainable},
            optimizer=optimizer,
            trainable=[w.node for w in fm.weights if w.trainable],
            parts=1 if self.device == "cuda" else numba.config.NUMBA_NUM_THREADS,
            schedule=updates_last,
            snapshots=kind in self.snapshot_kinds,
            # what train_on_batch, fit and evaluate read of the outputs: their metrics' only
            outputs=None if kind == "predict" else {k for k, row in enumerate(self.info["metrics"]) if row},
        )  # CPU replicas run the updates last (train_apply)

    # ------------------------------------------------------------------ unknown dimensions
    MAX_SHAPES = int(os.environ.get("KGRAPH_MAX_SHAPES", "16"))  # input shapes whose steps are kept

    def _declared_shapes(self) -> str:
        return ", ".join(str(tuple(i.shape)) for i in self.frontend.inputs)

    def _step(self, kind, xs):
        """The step of `kind` for inputs xs. A model whose inputs leave dimensions unknown compiles a
        step per input shape the first time the shape comes, as TensorFlow traces a function per
        input signature, and keeps those of the MAX_SHAPES shapes used last: all of them share the
        weights and the optimizer's state."""
        if not self.built or not self.frontend.unknown_dims:
            return kind
        dims = _dims(xs)
        steps = self._shapes.get(dims)
        if steps is not None and kind in steps:
            self._shapes.move_to_end(dims)
            return steps[kind]
        if steps is None:
            self._make_room()
            steps = self._shapes[dims] = {}
        try:
            frontend = self.frontend.specialize([(None, *d) for d in dims])
        except ConfigError as e:  # the data's shape is what is wrong (an image too small for a layer)
            del self._shapes[dims]
            raise DataError(f"inputs of shape {', '.join(str((None, *d)) for d in dims)}: {e}") from None
        name = self._step_name(kind, xs)
        losses, optimizer = self._step_args.get(kind, (None, None))
        manifest = self._build(kind, losses, optimizer, frontend, name)
        self._shape_compiles += 1
        if kind == "train" and _state_key(manifest) != _state_key(self.executable.state_manifest):
            raise RuntimeError(f"model {self.name!r}: the optimizer's state is laid out differently at {name}")
        steps[kind] = name
        return name

    # Variable-length batches: a masked model pads them to a few lengths (BUCKETS) once it has
    # compiled steps for EXACT_LENGTHS input shapes, so a fit over batches of many lengths compiles
    # a handful of steps; the padding is 0 ids (or 0 features), which the model's mask skips.
    EXACT_LENGTHS = int(os.environ.get("KGRAPH_EXACT_LENGTHS", "4"))

    def _pad_lengths(self, xs):
        """xs padded at the end of each unknown axis to its bucket (the next power of two, at least 8)
        when the model pads neutrally and already holds steps for EXACT_LENGTHS shapes, none for
        these; else xs. Steps already compiled for a shape are used as they are."""
        if not self.built or not self.frontend.unknown_dims or self.EXACT_LENGTHS < 0:
            return xs
        dims = _dims(xs)
        if dims in self._shapes or len(self._shapes) < self.EXACT_LENGTHS or not self.pads_neutrally():
            return xs
        out = []
        for a, spec in zip(xs, self.frontend.inputs):
            pads = [(0, 0)] + [(0, _bucket(n) - n if d is None else 0) for n, d in zip(a.shape[1:], spec.shape[1:])]
            out.append(np.pad(a, pads) if any(p for _, p in pads) else a)
        return out

    def pads_neutrally(self) -> bool:
        """Whether padding the inputs' unknown dimensions with 0 at their ends changes no output, so
        kgraph may pad batches to bucket lengths: the outputs have no unknown dimension, and two
        random rows through the forward graph (NumPy's interpreter, the current weights) give the
        same outputs at two lengths, the longer padded (what a mask_zero Embedding or a Masking
        layer feeding mask-aware layers does; a Conv1D after it would not). Found once a model."""
        if self._pad_neutral is None:
            self._pad_neutral = _pads_neutrally(self.frontend, self.get_weights(), self.info.get("token_inputs", []))
        return self._pad_neutral

    def _step_name(self, kind, xs):
        if not self.built or not self.frontend.unknown_dims:
            return kind
        return f"{kind}@{';'.join('x'.join(map(str, d)) for d in _dims(xs))}"

    def _make_room(self) -> None:
        """Drop the steps of the least recently used input shape when MAX_SHAPES shapes have steps."""
        if len(self._shapes) < max(1, self.MAX_SHAPES):
            return
        _, steps = self._shapes.popitem(last=False)
        for name in steps.values():
            self._drop_step(name)
        if not getattr(self, "_evictions_told", False):
            self._evictions_told = True
            warnings.warn(
                f"model {self.name!r} has compiled steps for {self._shape_compiles} input shapes; it keeps "
                f"those of the {self.MAX_SHAPES} shapes used last (KGRAPH_MAX_SHAPES) and compiles the "
                "others again when they come back: pad batches to a few lengths to compile less (kgraph "
                "pads them itself when a mask makes the padding change nothing)",
                stacklevel=4,
            )

    def fix_input_shapes(self, input_shape) -> None:
        """Fix the inputs' unknown dimensions ahead of time (what `kgraph inspect` and `kgraph compile
        --input-shape` do): input_shape is (None, ...) for one input, a list of them for several.
        The model then runs at that shape only, as if its config declared it (which it now does);
        its weights and the optimizer's state stay."""
        self._require_built("fix_input_shapes()")
        shapes = [input_shape] if _is_shape(input_shape) else list(input_shape)
        if len(shapes) != len(self.frontend.inputs):
            raise ValueError(f"model {self.name!r} has {len(self.frontend.inputs)} inputs, got {len(shapes)} shapes")
        frontend = self.frontend.specialize([(None, *s[1:]) for s in shapes])
        self.config = frontend.config = declare_input_shapes(self.config, [i.shape for i in frontend.inputs])
        self.frontend, self._layer_objects, self._forward_flops = frontend, None, None
        self.info["input_shapes"] = [list(i.shape) for i in frontend.inputs]
        self._forget_shapes()
        if self.compile_args is not None:
            state = self.executable.state.copy()
            losses, optimizer = self._step_args["train"]
            self._build("train", losses, optimizer)
            self._build("test", losses)
            self.executable.state[...] = state  # the same layout (checked at each shape's step)

    def _forget_shapes(self) -> None:
        for steps in self._shapes.values():
            for name in steps.values():
                self._drop_step(name)
        self._shapes.clear()

    def _drop_step(self, name) -> None:
        """Forget an input shape's step, in every replica of a strategy's (they share the steps)."""
        (getattr(self, "replicas", None) or self.executable).drop_step(name)

    def _state_layout(self):
        """The training step's manifest at the first probe shape, passes only (no code): how the
        optimizer's slots lie in the state, the same at every input shape."""
        losses, optimizer = self._step_args["train"]
        forward, masks = self.frontend.lowered(training=True)
        return step_manifest(self._passes("train", self.frontend, forward, losses, optimizer, masks), "")

    def _strategy_device(self, device, unknown) -> tuple:
        """(device, GPU) the model's own executable runs on: compile()'s device, or where the
        strategy's replicas run (a strategy's GPUs, its replica 0's)."""
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'")
        wants = getattr(self.strategy, "device", None)  # the default Strategy has no device of its own
        if wants is None:
            return ("cpu" if device == "auto" and unknown else device), 0
        if device not in ("auto", wants):
            where = "GPUs" if wants == "cuda" else "CPUs"
            raise ValueError(
                f"compile(device={device!r}) under a strategy whose replicas run on {where} "
                f"({getattr(self.strategy, 'devices', '')}): compile with device={wants!r} or 'auto'"
            )
        return wants, getattr(self.strategy, "gpu", 0) if wants == "cuda" else 0

    def _use_device(self, device, gpu: int = 0):
        """Run the steps on "cpu" or "cuda" (on GPU `gpu`); "auto" is CUDA where
        numba.cuda.is_available(). The weights move over; the random stream (dropout, shuffling)
        carries on."""
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'")
        if device != "cpu":
            available = _cuda_available()
            if device == "cuda" and not available:
                raise RuntimeError("device='cuda': no CUDA GPU is available (numba.cuda.is_available() is False)")
            device = "cuda" if available else "cpu"
        if device == self.device and getattr(self.executable, "device_id", 0) == gpu:
            return
        old = self.executable
        if device == "cuda":
            from .runtime.cuda_executable import CudaExecutable

            self.executable = CudaExecutable({}, old.param_layout, old.dtype.name, device=gpu)
        else:
            self.executable = Executable({}, old.param_layout, old.dtype.name)
        self.executable.random = old.random
        self.executable.set_weights(old.get_weights())
        self.device = device

    @gc_paused()
    def compile(
        self,
        optimizer="rmsprop",
        loss=None,
        metrics=None,
        loss_weights=None,
        device="auto",
        steps_per_execution=None,
        **kwargs,
    ):
        """As keras.Model.compile. Compiles the training and test steps (cached on disk) for
        device "cpu" or "cuda" ("auto": CUDA when numba.cuda.is_available(), else the CPU).
        steps_per_execution: steps each call of the compiled step runs in fit, batch callbacks
        then running once a call, as in Keras; by default fit runs several a call (about 10 ms
        of them) when no callback needs every batch, one a call otherwise."""
        unsupported = {k: v for k, v in kwargs.items() if v not in (None, False, "auto")}
        if unsupported:
            why = (
                " (metrics are computed unweighted, as compile's `metrics` are; sample weights weigh the loss)"
                if "weighted_metrics" in unsupported
                else ""
            )
            raise ValueError(f"compile() arguments {sorted(unsupported)} are not supported yet{why}")
        if loss is None:
            raise ValueError("compile() needs a loss, e.g. loss='sparse_categorical_crossentropy'")
        if steps_per_execution not in (None, "auto") and (
            int(steps_per_execution) != steps_per_execution or steps_per_execution < 1
        ):
            raise ValueError(f"steps_per_execution must be a positive integer, got {steps_per_execution!r}")
        self.loss = loss
        self.steps_per_execution = None if steps_per_execution in (None, "auto") else int(steps_per_execution)
        if not self.built:  # checked now, compiled when the model builds from its first data
            self.optimizer = optimizers_mod.get(optimizer)
            for entry in (
                loss.values()
                if isinstance(loss, dict) and "class_name" not in loss
                else loss
                if isinstance(loss, (list, tuple))
                else [loss]
            ):
                if entry is not None:
                    losses_mod.get(entry)
            self.pending_compile = {
                "optimizer": optimizer,
                "loss": loss,
                "metrics": metrics,
                "loss_weights": loss_weights,
                "device": device,
                "steps_per_execution": steps_per_execution,
            }
            return
        # the outputs as the logs name them: a dict of outputs' keys in a Keras 3 config ("alpha_loss"
        # for outputs {"alpha": ...}), else the output layers' names; compile's dicts may use either
        outputs = log_names(self.info)
        by_key = outputs != self.output_names
        loss, loss_weights, metrics = (
            self._keyed(v, by_key) if isinstance(v, dict) and "class_name" not in v else v
            for v in (loss, loss_weights, metrics)
        )
        opt = optimizers_mod.get(optimizer)
        specs = [losses_mod.get(l) if l is not None else None for l in _per_output(loss, outputs, "loss")]
        weights = (
            _per_output(loss_weights, outputs, "loss_weights") if loss_weights is not None else [1.0] * len(outputs)
        )
        missing = [o for o, s, w in zip(outputs, specs, weights) if s is not None and w is None]
        if missing:  # Keras refuses loss_weights that do not match the losses too
            raise ValueError(f"loss_weights has no weight for outputs {missing}, which have a loss")
        for s, w in zip(specs, weights):
            if s is not None:
                s["weight"] = float(w)
        out_units = [shape[-1] if len(shape) > 1 else 1 for shape in self.frontend.output_shapes()]
        self.info["metrics"] = _resolve_metrics(metrics, outputs, specs, out_units, self.frontend.keras)
        self.info["losses"] = specs
        # per output with a loss: what its targets are checked against (class ids below `classes`)
        self.info["targets"] = [
            {"loss": spec["name"], "classes": units if LOSSES[spec["name"]][2] else None}
            for spec, units in zip(specs, out_units)
            if spec is not None
        ]
        self.strategy = distribute.get_strategy() or self.strategy
        unknown = self.frontend.unknown_dims
        if unknown and device == "cuda":  # refused before the weights move
            raise NotImplementedError(
                f"model {self.name!r} has inputs of unknown dimensions ({self._declared_shapes()}): they run on "
                "the CPU so far; compile with device='cpu', or fix the dimensions in the InputLayer"
            )
        self._use_device(*self._strategy_device(device, unknown))
        # CUDA steps compile in this process, and so do replicas' halves; others in a child, which
        # imports while the steps are built (runtime/child.py)
        replicated = self.strategy is not None and type(self.strategy) is not distribute.Strategy
        in_child = self.device == "cpu" and not replicated
        if in_child:
            child.start_spare_for_new_kernels()
        spec = _optimizer_spec(opt, self.frontend.keras)
        self._step_args = {"train": (specs, spec), "test": (specs, None), "predict": (None, None)}
        self._forget_shapes()
        if unknown:  # steps compile per input shape as data arrives (_step); the optimizer's slots now
            self.executable.set_state_layout(self._state_layout())
        else:
            if "train" in self.step_kinds:
                self._build("train", specs, spec)
            if "test" in self.step_kinds:
                self._build("test", specs)
        self.optimizer = opt
        if self.strategy is not None:
            self.strategy.attach(self)
        if not in_child:
            child.stop_spare()  # one that a step added started (Executable.add_step)
        self.compile_args = {
            "optimizer": {"class_name": type(opt).__name__, "config": opt.get_config()},
            "loss": specs,
            "loss_config": _loss_config(loss),
            "metrics": metrics,
            "loss_weights": loss_weights,
        }

    # ------------------------------------------------------------------ files
    def save(self, filepath, overwrite=True, include_optimizer=True):
        """A .keras archive (or legacy .h5) that Keras's load_model opens; with the optimizer's
        state, so training resumes exactly. Written atomically."""
        self._require_built("save()")
        if not overwrite and Path(filepath).exists():
            raise FileExistsError(filepath)
        if not str(filepath).endswith((".keras", ".h5", ".hdf5")):
            raise ValueError(f"{filepath}: model files end in .keras (or .h5 for the legacy format)")
        saving.save_model(self, filepath, include_optimizer)

    def save_weights(self, filepath, overwrite=True):
        """.weights.h5 (Keras 3), .h5 (Keras 2 layout) or .npz, by extension; written atomically."""
        if not str(filepath).lower().endswith((".npz", ".h5", ".hdf5")):
            raise ValueError(f"{filepath}: weight files end in .weights.h5 (Keras 3), .h5 (Keras 2) or .npz")
        self._require_built("save_weights()")
        if not overwrite and Path(filepath).exists():
            raise FileExistsError(filepath)
        saving.save_weights(self, filepath)

    def load_weights(self, filepath, allow_nonfinite=False):
        """As Keras's; weights or optimizer state that are not finite (NaN, inf) are refused, and
        the model keeps what it had, unless allow_nonfinite=True."""
        self._require_built("load_weights()")
        weights, state = self.get_weights(), self.executable.state.copy()
        iterations = getattr(self.optimizer, "step_count", None)
        saving.load_weights(self, filepath)
        try:
            _check_loaded(self, filepath, allow_nonfinite)
        except ValueError:
            self.set_weights(weights)
            self.executable.state[...] = state
            if iterations is not None:
                self.optimizer.step_count = iterations
            raise

    def set_weights(self, weights) -> None:
        if weights and not self.built:
            self._require_built("set_weights()")
        super().set_weights(weights)

    def export(self, directory) -> Path:
        """Write a runnable trainer: the generated steps, manifest.json, weights.npz and train.py,
        which needs only kgraph's runtime and optimizers (`python DIR/train.py --data ...`)."""
        self._require_built("export()")
        if self.compile_args is None:
            raise RuntimeError("compile the model before exporting a trainer")
        if self.device != "cpu":
            raise NotImplementedError("an exported trainer runs on the CPU: compile with device='cpu' to export")
        if self.frontend.unknown_dims:
            raise NotImplementedError(
                f"model {self.name!r} has inputs of unknown dimensions ({self._declared_shapes()}): an exported "
                "trainer runs at one shape; fix them first (kgraph compile --input-shape, model.fix_input_shapes)"
            )
        if "predict" not in self.executable.steps:
            self._build("predict")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        steps = {}
        for kind, m in self.executable.steps.items():
            src = Path(m.module)
            files.write_text(directory / src.name, src.read_text())
            steps[kind] = m.with_module(src.name).to_json()
        manifest = {
            "model": self.name,
            "steps": steps,
            "params": self.executable.param_layout,
            "info": self.info,
            "optimizer": self.compile_args["optimizer"],
            "kernels": fingerprint(),  # of the kernels the steps call (runtime/standalone.py)
        }
        files.write_text(directory / "manifest.json", json.dumps(manifest, indent=1))
        files.write_text(directory / "model.json", self.to_json())
        self.save_weights(directory / "weights.npz")
        files.write_text(directory / "train.py", TRAINER_SCRIPT.format(name=self.name))  # each atomically
        return directory

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        x = self._build_from_source(x)
        if "predict" not in self.executable.steps and not self.frontend.unknown_dims:
            self._build("predict")
        return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)

    def fit(self, x=None, y=None, *args, **kwargs):
        x = self._build_from_source(x)
        self._announce_step_cost(CompiledModel.fit, x, y, *args, **kwargs)
        return super().fit(x, y, *args, **kwargs)

    LARGE_STEP_FLOP = 2e11  # about a second of float32 GEMMs on a 2-core machine

    def _announce_step_cost(self, loop, *args, **kwargs):
        """Say what a step costs before a fit whose steps take seconds (a VGG16 on a CPU), so a user
        knows what to expect instead of watching "Epoch 1/..." for minutes."""
        try:
            bound = inspect.signature(loop).bind(self, *args, **kwargs).arguments
        except TypeError:
            return  # the loop itself names the wrong arguments
        batch, verbose = bound.get("batch_size") or 32, bound.get("verbose", "auto")
        if verbose == 0 or not self.is_chief:
            return
        dims, where = None, ""
        if self.frontend.unknown_dims:  # the cost depends on the data's shape: the arrays', else a probe's
            x = bound.get("x")
            arrays = [x] if isinstance(x, np.ndarray) else x if isinstance(x, (list, tuple)) else None
            if arrays and len(arrays) == len(self.frontend.inputs) and all(isinstance(a, np.ndarray) for a in arrays):
                dims = _dims(arrays)
                where = f" of input shape {', '.join(str((None, *d)) for d in dims)}"
            else:
                where = f" with the unknown dimensions at {PROBE_SIZES[0]} (the batches' shapes decide)"
        if self._forward_flops is None:
            self._forward_flops = {}
        if dims not in self._forward_flops:  # once a shape: it lowers the whole graph
            try:
                frontend = self.frontend if dims is None else self.frontend.specialize([(None, *d) for d in dims])
            except ConfigError:
                return  # the data does not fit the model: the step says so
            self._forward_flops[dims] = step_cost(frontend)["forward_flops"]
        flop = 3 * self._forward_flops[dims] * (batch if isinstance(batch, int) else 32)
        if flop > self.LARGE_STEP_FLOP:
            print(
                f"kgraph: one training step at batch {batch}{where} is about {flop / 1e12:.2g} TFLOP of matrix "
                f"products: about {flop / 3e11:.0f} s at 300 GFLOP/s (summary() shows the cost per sample)",
                flush=True,
            )

    def evaluate(self, x=None, y=None, *args, **kwargs):
        x = self._build_from_source(x)
        return super().evaluate(x, y, *args, **kwargs)

    def train_on_batch(self, x, y, *args, **kwargs):
        self._build_from(x)
        return super().train_on_batch(x, y, *args, **kwargs)

    def test_on_batch(self, x, y, *args, **kwargs):
        self._build_from(x)
        return super().test_on_batch(x, y, *args, **kwargs)

    def _build_from_source(self, x):
        """Build an unbuilt model from arrays, or from the first batch of a generator (which is then
        given back whole)."""
        x = self._peek_to_build(sources.adapt(x))
        self._build_from(x if not is_batch_source(x) else None)
        if not self.built:
            raise ValueError(f"model {self.name!r} is not built: give data (x) to build it from")
        return x

    def _peek_to_build(self, x):
        """Build an unbuilt model from the first batch of a batch source: a Dataset, Sequence or list
        of batches is read again from its start; a one-pass iterable is given back whole."""
        if self.built or not is_batch_source(x):
            return x
        peeked = _PeekedBatches(x)
        self._build_from(peeked.first_x())
        if sources.reiterable(x):
            return x
        # a generator stays one (its batches then read as Keras 3 reads a generator's: batches.py)
        return iter(peeked) if isinstance(x, types.GeneratorType) else peeked

    def _require_compiled(self):
        if not self.built and self.pending_compile is not None:
            raise RuntimeError(f"model {self.name!r} is not built yet: give it data or call model.build(input_shape)")
        if self.built and self.frontend.unknown_dims and self.compile_args is not None:
            return  # its steps compile per input shape
        super()._require_compiled()


class TensorSpec:
    """What model.inputs and model.outputs hold: a name, a (None, ...) shape and a dtype."""

    def __init__(self, name, shape, dtype):
        self.name, self.shape, self.dtype = name, tuple(shape), dtype

    def __repr__(self):
        return f"<TensorSpec name={self.name}, shape={self.shape}, dtype={self.dtype}>"


class Weight:
    """One of the model's weights, as a Keras Variable shows it: name, path, shape, dtype,
    trainable, numpy() and assign(value), read and written through the model."""

    def __init__(self, model, index, spec):
        self._model, self._index = model, index
        self.name = spec.name
        self.path = "/".join((*spec.path, spec.layer, spec.name))
        self.shape = tuple(spec.shape)
        self.dtype = model.frontend.dtype
        self.trainable = spec.trainable

    def numpy(self) -> np.ndarray:
        return self._model.executable.get_weights()[self._index]

    def assign(self, value) -> None:
        weights = self._model.get_weights()
        weights[self._index] = (
            np.asarray(value, self.dtype).reshape(self.shape)
            if np.size(value) == np.prod(self.shape)
            else np.asarray(value)
        )
        self._model.set_weights(weights)

    def __array__(self, dtype=None, copy=None):
        return self.numpy() if dtype is None else self.numpy().astype(dtype)

    def __repr__(self):
        return f"<Weight path={self.path}, shape={self.shape}, dtype={self.dtype}>"


def _get_layer(layers, name, index):
    """keras.Model.get_layer's lookup in `layers`: by name or by index."""
    if index is not None:
        if name is not None:
            raise ValueError("give either name or index, not both")
        if not -len(layers) <= index < len(layers):
            raise ValueError(
                f"was asked to retrieve layer at index {index} but the model only has {len(layers)} layers"
            )
        return layers[index]
    for layer in layers:
        if layer.name == name:
            return layer
    raise ValueError(f"no such layer: {name}. Existing layers are: {[l.name for l in layers]}")


def _set_config_flags(layer, value: bool) -> None:
    """Keras's trainable setter on a layer's config: a nested model's sets every layer inside it,
    nested ones too; an InputLayer's config keeps no flag, as Keras writes it (tf-keras refuses one)."""
    if layer.class_name != "InputLayer":
        layer.config["trainable"] = value
    for inner in layer.model.layers if layer.model is not None else ():
        _set_config_flags(inner, value)


class Layer(_WeightLists):
    """A layer as keras.Model.layers shows it: name, class_name, trainable, its weights (read and
    written through the model: get_weights, set_weights, weights), output_shape, get_config; a
    nested model's also its own layers and get_layer."""

    def __init__(self, model, info):
        self._model, self._info = model, info
        self.name = info.name
        self.class_name = info.class_name
        desc = model.frontend.desc
        for name in info.path:  # the enclosing nested models, outermost first
            desc = next(l for l in desc.layers if l.name == name).model
        self._desc = next(l for l in desc.layers if l.name == info.name)
        self._config = self._desc.config
        full = (*info.path, info.name)
        self._indices = [k for k, w in enumerate(model.frontend.weights) if (*w.path, w.layer)[: len(full)] == full]
        self._layer_objects, self._input_flag = None, True

    @property
    def layers(self) -> list:
        """A nested model's layers, as its keras.Model.layers lists them."""
        if self._info.layers is None:
            raise AttributeError(f"{self.class_name} layer {self.name!r} is not a model: it has no layers")
        if self._layer_objects is None:
            self._layer_objects = [Layer(self._model, info) for info in self._info.layers]
        return self._layer_objects

    def get_layer(self, name=None, index=None):
        """A nested model's keras.Model.get_layer."""
        return _get_layer(self.layers, name, index)

    def summary(self, line_length=None, print_fn=None):
        """A nested model's keras.Model.summary: its own layers' table."""
        self.layers  # noqa: B018 (raises for a layer that is not a model)
        weights = [self._model.frontend.weights[k] for k in self._indices]
        nested = types.SimpleNamespace(
            desc=self._desc.model,
            name=self.name,
            layers=self._info.layers,
            dtype=self._model.frontend.dtype,
            weights=weights,
            count_params=lambda: sum(int(np.prod(w.shape)) for w in weights),
        )
        (print_fn or print)(format_summary(nested, line_length))

    @property
    def trainable(self) -> bool:
        if self.class_name == "InputLayer":
            return self._input_flag
        return bool(self._config.get("trainable", True))

    @trainable.setter
    def trainable(self, value) -> None:
        """As Keras's layer.trainable = False: its weights leave trainable_weights, and from the next
        compile() the optimizer no longer updates them (the config saves the flag, as Keras's). On a
        nested model it sets every layer inside, as Keras does: unfreezing a base model that was
        saved frozen trains its BatchNormalization layers in training mode again."""
        self._set_flag(bool(value))
        self._model._trainable_changed(f"layer {self.name!r}")

    def _set_flag(self, value: bool) -> None:
        if self.class_name == "InputLayer":
            self._input_flag = value  # (its config keeps none)
        _set_config_flags(self._desc, value)

    @property
    def weights(self) -> list:
        return [w for k, w in enumerate(self._model.weights) if k in self._indices]

    def get_weights(self) -> list:
        everything = self._model.get_weights()
        return [everything[k] for k in self._indices]

    def set_weights(self, weights) -> None:
        weights = list(weights)
        if len(weights) != len(self._indices):
            raise ValueError(f"layer {self.name!r} expects {len(self._indices)} weights, got {len(weights)}")
        everything = self._model.get_weights()
        for k, w in zip(self._indices, weights):
            w = np.asarray(w)
            if w.shape != everything[k].shape:
                raise ValueError(
                    f"layer {self.name!r}: weight {k - self._indices[0]} has shape {everything[k].shape}, got {w.shape}"
                )
            everything[k] = w
        self._model.set_weights(everything)

    def count_params(self) -> int:
        return self._info.params

    @property
    def output_shape(self):
        shapes = self._info.output_shapes
        return shapes[-1] if shapes else None

    def get_config(self) -> dict:
        return dict(self._config)

    def __repr__(self):
        return f"<{self.class_name} name={self.name}>"


class _PeekedBatches:
    """A generator or iterable of batches whose first batch was read to build the model: it gives
    that batch back first, then the rest."""

    def __init__(self, source):
        self._iterator = iter(source)
        self._first = [next(self._iterator)]
        self._length = getattr(source, "__len__", None)

    def first_x(self):
        item = self._first[0]
        return item[0] if isinstance(item, tuple) else item

    def __iter__(self):
        first, self._first = self._first, []
        yield from first
        yield from self._iterator

    def __len__(self):
        if self._length is None:
            raise TypeError("a generator has no length")
        return self._length()


def _is_shape(value) -> bool:
    return isinstance(value, (tuple, list)) and all(d is None or isinstance(d, int) for d in value)


def _config_name(config) -> str:
    """The name the frontend gives the model (Keras 2.1's Sequential config is a bare layer list)."""
    cfg = config.get("config")
    return (cfg.get("name") if isinstance(cfg, dict) else None) or str(config.get("class_name", "model")).lower()


def _loss_masks(name, fm, forward, output_masks, losses) -> dict:
    """{output index: mask node} for the outputs with a loss whose Keras mask weights it. Keras
    multiplies the per-step losses by the mask, so the mask must have their shape (an output
    [B,T,C] with a mask [B,T]); otherwise Keras fails or broadcasts by accident: refused."""
    out = {}
    for k, mask in output_masks.items():
        if losses is None or k >= len(losses) or losses[k] is None:
            continue
        steps, pred = forward.type(mask).shape, forward.type(forward.outputs[f"output:{k}"]).shape
        if pred[:-1] != steps:
            raise NotImplementedError(
                f"model {name!r}: output {fm.output_names[k]!r} of shape {pred} carries a mask of shape "
                f"{steps}, which cannot weight its per-sample losses (shape {pred[:-1]}) as Keras's masks do"
            )
        out[k] = mask
    return out


def _token_inputs(frontend_model) -> list:
    """[{"input": index, "limit": input_dim, "layer"}] for each Embedding that reads a model input
    (through reshapes and the like): the ids checked before each step."""
    graph, _ = frontend_model.lowered(training=False)
    inputs = {i.node: k for k, i in enumerate(frontend_model.inputs)}
    out = []
    for node in graph.nodes():
        if node.op != "gather":
            continue
        source = node.inputs[1]
        while graph.node(source).op in ("reshape", "transpose", "copy") and graph.node(source).inputs:
            source = graph.node(source).inputs[0]
        if source in inputs:
            out.append({"input": inputs[source], "limit": int(graph.type(node.inputs[0]).shape[0]), "layer": node.id})
    return out


def _dims(xs) -> tuple:
    """The inputs' shapes past the batch axis: what a model with unknown dimensions compiles a step for."""
    return tuple(tuple(int(d) for d in np.shape(a)[1:]) for a in xs)


def _bucket(n: int) -> int:
    """The length a batch of length n is padded to: the next power of two, at least 8."""
    return max(8, 1 << max(0, int(n) - 1).bit_length())


def _pads_neutrally(fm, weights, token_inputs) -> bool:
    """Model.pads_neutrally's check, on two rows at the frontend's probe sizes (the shorter padded to
    the longer), which the model is known to build at."""
    import ir

    if any(None in shape[1:] for shape in fm.output_shapes()):
        return False
    short, long = PROBE_SIZES[:2]
    rng = np.random.default_rng(0)
    limits = {t["input"]: t["limit"] for t in token_inputs}
    rows, outs = [], []
    for k, spec in enumerate(fm.inputs):
        shape = [2] + [short if d is None else d for d in spec.shape[1:]]
        if k in limits:
            rows.append(rng.integers(1, max(2, limits[k]), size=shape).astype(np.float32))
        else:
            rows.append(rng.normal(size=shape).astype(np.float32))
    for extra in (0, long - short):
        xs = [
            np.pad(a, [(0, 0)] + [(0, extra if d is None else 0) for d in s.shape[1:]]) for a, s in zip(rows, fm.inputs)
        ]
        shaped = fm.specialize([(None, *a.shape[1:]) for a in xs])
        g = shaped.lower(training=False)
        feeds = {i.node: a.astype(g.type(i.node).dtype) for i, a in zip(shaped.inputs, xs)}
        feeds.update({w.node: np.asarray(v) for w, v in zip(shaped.weights, weights)})
        env = ir.interpret(g, feeds)
        outs.append([env[g.outputs[f"output:{k}"]] for k in range(len(fm.output_names))])
    return all(np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(*outs))


def _state_key(manifest) -> tuple:
    """What of a training step's manifest says where the optimizer's slots lie."""
    return manifest.state_size, tuple((s.slot, s.param, s.offset, tuple(s.shape)) for s in manifest.state)


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


def _resolve_metrics(metrics, outputs, specs, out_units, keras):
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
        raise ValueError(
            f"the model has {len(outputs)} outputs {outputs}: give metrics as a list with one entry "
            f"per output or a dict by output name"
        )
    resolved, seen = [], {}
    for k, entry in enumerate(per):
        row = []
        for m in entry if isinstance(entry, (list, tuple)) else [entry] if entry is not None else []:
            key, cls, config = metrics_mod.get(m, specs[k]["name"] if specs[k] else "", out_units[k], keras)
            name = key if len(outputs) == 1 else f"{outputs[k]}_{key}"
            seen[name] = seen.get(name, -1) + 1
            row.append(
                {"name": f"{name}_{seen[name]}" if seen[name] else name, "key": key, "class": cls, "config": config}
            )
        resolved.append(row)
    return resolved


# ---------------------------------------------------------------------- constructors


@gc_paused()
def model_from_config(config: dict, seed: int | None = None) -> Model:
    try:
        return Model(build_model(config, seed=seed), seed=seed)
    except NotBuiltError:  # no input shape: it builds from its first data, as in Keras
        return Model(seed=seed, config=config)


def model_from_json(json_string: str, custom_objects=None, seed: int | None = None) -> Model:
    return model_from_config(parse_config_text(json_string, "json"), seed=seed)


def model_from_yaml(yaml_string: str, custom_objects=None, seed: int | None = None) -> Model:
    return model_from_config(parse_config_text(yaml_string, "yaml"), seed=seed)


@gc_paused()
def load_model(
    filepath, custom_objects=None, compile=True, seed: int | None = None, allow_nonfinite: bool = False
) -> Model:
    """A model from a .keras archive or legacy .h5 file (weights, and with compile=True the saved
    compile arguments and optimizer state), or from a config alone: .json, .yaml or .yml.
    Weights or optimizer state that are not finite are refused unless allow_nonfinite=True."""
    if str(filepath).lower().endswith((".keras", ".h5", ".hdf5")):
        config, compile_config, restore = saving.read_model_file(filepath)
        model = model_from_config(config, seed=seed)
        if compile and compile_config:
            model.compile(
                optimizer=compile_config["optimizer"],
                loss=compile_config["loss"],
                metrics=compile_config.get("metrics"),
                loss_weights=compile_config.get("loss_weights"),
            )
        restore(model)
        _check_loaded(model, filepath, allow_nonfinite)
        return model
    return model_from_config(read_config_file(filepath), seed=seed)


def _optimizer_spec(opt, keras: int) -> tuple:
    """The optimizer pass's (kind, hyper-parameters): Keras 3's formulas, but a tf-keras model's
    use_ema as tf-keras computes it (the average starts from the weights, and decays from the
    first step)."""
    kind, hyper = opt.spec()
    if keras < 3 and "ema_momentum" in hyper:
        hyper["ema_from_weights"] = True
    return kind, hyper


def _check_loaded(model, source, allow_nonfinite) -> None:
    """A file's weights and optimizer state must be finite, its iteration count not negative: a
    NaN read from a file would train to NaN silently."""
    if model.optimizer is not None and model.optimizer.step_count < 0:
        raise saving.FileFormatError(f"{source}: the optimizer's iteration count is {model.optimizer.step_count}")
    if allow_nonfinite:
        return
    for weight, value in zip(model.weights, model.get_weights()):
        if not np.isfinite(value).all():
            raise saving.FileFormatError(
                f"{source}: weight {weight.path} holds {int((~np.isfinite(value)).sum())} "
                "NaN or infinite values; load with allow_nonfinite=True to take them anyway"
            )
    if not np.isfinite(model.executable.state).all():
        raise saving.FileFormatError(
            f"{source}: the optimizer state holds NaN or infinite values; load with "
            "allow_nonfinite=True to take it anyway"
        )


def _loss_config(loss):
    """The loss argument as Keras serializes it in compile_config."""
    if isinstance(loss, losses_mod.Loss):
        return {
            "module": "keras.losses",
            "class_name": type(loss).__name__,
            "config": loss.get_config(),
            "registered_name": None,
        }
    if isinstance(loss, (list, tuple)):
        return [_loss_config(l) for l in loss]
    if isinstance(loss, dict) and "class_name" not in loss:
        return {k: _loss_config(v) for k, v in loss.items()}
    return loss


TRAINER_SCRIPT = '''"""Trainer for model {name!r}, compiled by kgraph. Needs only kgraph's runtime and optimizers:

    python train.py --data data.npz --epochs 5
"""
import sys
from pathlib import Path

from kgraph.optimizers import get as get_optimizer
from kgraph.runtime.standalone import main

if __name__ == "__main__":
    sys.exit(main(Path(__file__).resolve().parent, get_optimizer=get_optimizer))
'''
