"""The compiled steps of one model and the buffers they share: the parameter bucket, the
gradient bucket, the optimizer state and one arena per step kind."""

from __future__ import annotations

import math
import time

import numpy as np

from .abi import STEP_ARGS, STEPS_ARGS, Manifest, StepArgs, StepsArgs, at_batch  # noqa: F401 (STEP*_ARGS: as before)
from .background import StepCompiler, compile_notice, has_cached_code, prepare_numba
from .cache import mark_kernels_compiled
from .child import spares_start, start_spare
from .loader import import_file
from . import policy
from .policy import compile_steps, flush_denormals
from .threads import ThreadPlan
from .typecheck import checked_twin


if policy.runs_steps:
    prepare_numba()  # on import: a model's first step is only its own work


class Executable:
    multi_step = True  # run() takes steps > 1 (fit then runs several steps a call)

    def __init__(self, steps: dict, params: list, dtype: str = "float32", seed: int | None = None):
        """steps: kind -> Manifest (kgraph/runtime/abi.py); params: [{"node", "offset", "shape"}]."""
        flush_denormals()  # as TensorFlow does (kgraph/runtime/policy.py)
        self.dtype = np.dtype(dtype)
        self.steps = steps
        self.param_layout = params
        size = sum(int(np.prod(p["shape"])) for p in params)
        self.params = np.zeros(size, self.dtype)
        self.grads = np.zeros(size, self.dtype)
        self.state_manifest = steps.get("train")  # the step whose layout `state` follows (saving reads it)
        self.state = self._initial_state(self.state_manifest)
        self._functions = {}
        self._arenas = {}
        self._rng_buffers = {}
        self._output_views = {}
        self._stashes = {}
        self._sizes = {}
        self._lr_buffer = np.zeros(1)
        self._ones_cache = {}
        self.random = np.random.default_rng(seed)
        self.threads = ThreadPlan()  # replicas sharing the cores set threads.max_threads = 1
        self.compiler = StepCompiler()
        self._compiled = set()  # (kind, part) whose compiled function runs the calls
        self._called = set()  # (kind, part, compiled): the forms of each step called so far
        self._bounded = set()  # (kind, batch, steps) whose buffers were checked against KGRAPH_MAX_BYTES
        # Seconds of each form's first call (its Python function while it compiles, the compiled
        # one): what compiling or loading code took. Progress bars leave them out (progbar.py).
        self.setup_seconds = 0.0

    def add_step(self, kind: str, manifest: Manifest) -> None:
        """Install (or replace) a compiled step; a new training step starts with fresh optimizer state.
        Other kinds of names (a model's steps per input shape, "train@80") leave the state alone."""
        self.drop_step(kind)
        self.steps[kind] = manifest
        if kind == "train":
            self.set_state_layout(manifest)
        if spares_start() and not has_cached_code(self.function(kind)):
            start_spare()  # it will compile in a child: start that now, while the model gets ready

    def drop_step(self, kind: str) -> None:
        """Forget a step and what was kept for it (its function, arena, output views, timings)."""
        self.steps.pop(kind, None)
        self._functions = {k: f for k, f in self._functions.items() if k[0] != kind}
        self._compiled = {k for k in self._compiled if k[0] != kind}
        self._called = {k for k in self._called if k[0] != kind}
        for store in (self._stashes, self._arenas, self._rng_buffers):
            store.pop(kind, None)
        self._sizes = {k: v for k, v in self._sizes.items() if k[0] != kind}
        self._bounded = {k for k in self._bounded if k[0] != kind}
        self._output_views = {k: v for k, v in self._output_views.items() if k[0] != kind}
        self.threads.forget(kind)

    def set_state_layout(self, manifest) -> None:
        """Fresh optimizer state laid out as `manifest`'s (a training step's) slots."""
        self.state_manifest = manifest
        self.state = self._initial_state(manifest)

    def _initial_state(self, manifest) -> np.ndarray:
        """The optimizer's slots as Keras starts them: zeros, or e.g. Adagrad's initial_accumulator_value."""
        state = np.zeros(manifest.state_size if manifest else 0, self.dtype)
        for s in manifest.state if manifest else ():
            manifest.state_view(state, s)[...] = s.init
        return state

    # ------------------------------------------------------------------ weights
    def param_view(self, p) -> np.ndarray:
        n = int(np.prod(p["shape"]))
        return self.params[p["offset"] : p["offset"] + n].reshape(p["shape"])

    def get_weights(self) -> list:
        return [self.param_view(p).copy() for p in self.param_layout]

    def _slot_pairs(self, name: str):
        """(parameter view, its optimizer slot `name`'s view) of every parameter with that slot."""
        m = self.state_manifest
        layout = {p["node"]: p for p in self.param_layout}
        return [
            (self.param_view(layout[s.param]), m.state_view(self.state, s))
            for s in (m.state if m else ())
            if s.slot == name
        ]

    def take_slot(self, name: str) -> None:
        """Every parameter takes the value of its optimizer slot `name`: Keras's use_ema replaces
        the weights by their moving averages ("average") at the end of fit."""
        for param, slot in self._slot_pairs(name):
            param[...] = slot

    def fill_slot(self, name: str) -> None:
        """Every optimizer slot `name` takes its parameter's value: the moving averages of a run
        resumed from a file that kept none start from the weights, not from zero."""
        for param, slot in self._slot_pairs(name):
            slot[...] = param

    def set_weights(self, weights) -> None:
        if len(weights) != len(self.param_layout):
            raise ValueError(f"expected {len(self.param_layout)} weight arrays, got {len(weights)}")
        for p, w in zip(self.param_layout, weights):
            w = np.asarray(w)
            if tuple(w.shape) != tuple(p["shape"]):
                raise ValueError(
                    f"weight {p.get('name', p['node'])}: shape {tuple(w.shape)} does not match "
                    f"the model's {tuple(p['shape'])}"
                )
            self.param_view(p)[...] = w

    # ------------------------------------------------------------------ running
    def run(
        self,
        kind: str,
        inputs: list,
        labels: list = (),
        sample_weights: list = (),
        lr: float = 0.0,
        step: float = 1.0,
        part: str = "step",
        steps: int = 1,
        lrs=None,
    ) -> dict:
        """One call of the compiled step (or of the "grads" half of "train"); no sample weights
        weigh every sample 1. The whole step runs `steps` consecutive steps in the call: the batch
        arguments hold steps x B rows, step s learns at lrs[s] (default: lr for all) and is step
        number step + s. Returns the outputs as views valid until the next call: each shaped as the
        step's output, with a leading axis of `steps` when several ran."""
        m = self.steps[kind]
        batch = len(inputs[0]) // steps
        if labels and not sample_weights:
            sample_weights = self._ones(m, len(inputs[0]))
        batch_args = (*inputs, *labels, *sample_weights)
        if (kind, batch, steps) not in self._bounded:  # once per size: a step may take 0.1 ms
            _check_buffers(kind, m, batch, steps, self.dtype)
            self._bounded.add((kind, batch, steps))
        arena = self._buffer(self._arenas, kind, m.arena.at(batch))
        rng = self._random_sources(kind, m, batch, steps)
        stash = self._stash(kind, m, batch, steps) if part == "step" else ()
        rates = self._rates(lr, lrs, steps) if part == "step" else None

        def step_args(parts):  # the contract's leading arguments (kgraph/runtime/abi.py)
            if part == "step":
                return StepsArgs(
                    steps, batch, arena, self.params, self.grads, self.state, rng, rates, float(step), parts
                )
            return StepArgs(batch, arena, self.params, self.grads, self.state, rng, float(lr), float(step), parts)

        fn = self._callable(kind, part, lambda: (*step_args(1), *batch_args, *stash))
        compiled = fn is self._functions[(kind, part)]
        # A step never compiled (KGRAPH_COMPILE_STEPS=0) takes the settings a compiled one would,
        # its GEMMs split in parts too: the same calls, only each kernel call is Python's.
        tuned = compiled or not compile_steps()
        busy = self.compiler.busy()  # a compile child takes a core
        option = self.threads.pick(kind, m, batch, tuned, busy)
        args = step_args(self.threads.use(option, m))
        if kind.partition("@")[0] == "train":  # "train", or a step per input shape ("train@80")
            self._last_batch, self._last_parts = batch_args, args.parts
        first = (kind, part, compiled) not in self._called
        start = time.perf_counter()
        if first:
            with compile_notice(kind, getattr(fn, "__module__", None)):
                fn(*args, *batch_args, *stash)
            if not compiled and compile_steps():
                mark_kernels_compiled()  # its Python function's first call compiled them
            self._called.add((kind, part, compiled))
            self.setup_seconds += time.perf_counter() - start
        else:
            fn(*args, *batch_args, *stash)
        # a call timed while a compile child takes a core (another step compiling) says little of
        # its option, and a look's choice is remembered for later programs (threads.py)
        if tuned and not busy and not self.compiler.busy():
            self.threads.record(kind, m, batch, option, (time.perf_counter() - start) / steps)
        return self._outputs(kind, part, m, batch, steps, stash if part == "step" else arena)

    def function(self, kind, part="step"):
        """The compiled function: the whole step, or for "train" its "grads" or "apply" half."""
        if (kind, part) not in self._functions:
            m = self.steps[kind]
            name = m.function if part == "step" else f"{kind.split('@')[0]}_{part}"  # train@80: train_grads
            self._functions[(kind, part)] = getattr(import_file(m.module), name)
        return self._functions[(kind, part)]

    def _callable(self, kind, part, arguments):
        """The compiled step, or while a new one compiles in the background its Python function
        (kgraph/runtime/background.py), which reads the types of arguments(). Replicas' halves
        ("grads", "apply") always run compiled, unless no step compiles (KGRAPH_COMPILE_STEPS=0)."""
        dispatcher = self.function(kind, part)
        if not compile_steps():
            return checked_twin(dispatcher)  # Numba types it, and Python runs it
        if part != "step" or (kind, part) in self._compiled:
            return dispatcher
        fn = self.compiler.callable(dispatcher, arguments())
        if fn is dispatcher:
            self._compiled.add((kind, part))
        return fn

    def _buffer(self, store, kind, need):
        buf = store.get(kind)
        if buf is None or buf.size < need:
            buf = store[kind] = np.zeros(max(need, 1), self.dtype)
        return buf

    def _random_sources(self, kind, m, batch, steps) -> np.ndarray:
        """The rng buffer of `steps` steps, one after the other, each drawn afresh."""
        size = m.rng.at(batch)
        rng = self._buffer(self._rng_buffers, kind, size * steps)
        if m.rng_masks:
            for s in range(steps):
                self.draw_masks(rng[s * size : (s + 1) * size], m, batch)
        return rng

    def _outputs(self, kind, part, m, batch, steps, home) -> dict:
        """Views of the call's outputs: in the stashes (the whole step) or the arena (a half)."""
        key = (kind, part, batch, steps)
        cached = self._output_views.get(key)
        if cached is None or cached[0] is not home:  # views stay valid until their buffers are reallocated
            if part == "step":
                views = {
                    name: a[: steps * size].reshape(shape if steps == 1 else (steps, *shape))
                    for (name, (size, shape)), a in zip(self._output_sizes(kind, batch), home)
                }
            else:
                views = {name: self._output(home, m, place, batch) for name, place in m.outputs.items()}
            cached = self._output_views[key] = (home, views)
        return cached[1]

    def _output_sizes(self, kind, batch) -> list:
        """[(name, (elements, shape))] of the step's outputs for one step at this batch size."""
        key = (kind, batch)
        if key not in self._sizes:
            outputs = self.steps[kind].outputs.items()
            shapes = [(name, at_batch(p.shape, batch) or (1,)) for name, p in outputs]
            self._sizes[key] = [(name, (int(np.prod(shape)), shape)) for name, shape in shapes]
        return self._sizes[key]

    def _stash(self, kind, m, batch, steps) -> list:
        """One array per output that the whole step copies each step's output into."""
        stash = self._stashes.get(kind)
        sizes = self._output_sizes(kind, batch)
        if stash is None or any(a.size < steps * size for a, (_, (size, _)) in zip(stash, sizes)):
            stash = self._stashes[kind] = [
                np.zeros(max(steps * size, 1), np.dtype(p.dtype))
                for (_, (size, _)), p in zip(sizes, m.outputs.values())
            ]
        return stash

    def _rates(self, lr, lrs, steps) -> np.ndarray:
        if self._lr_buffer.size < steps:
            self._lr_buffer = np.zeros(steps)
        rates = self._lr_buffer[:steps]
        rates[:] = lr if lrs is None else lrs
        return rates

    def draw_masks(self, rng, m, batch):
        """Fill the random sources of step manifest m in the rng buffer: dropout's keep masks
        (0 or 1 / (1 - rate)), or standard normal draws for the noise layers (dist "normal")."""
        for mask in m.rng_masks:
            view = rng[m.rng_slice(mask, batch)]
            if mask.dist == "normal":
                self.random.standard_normal(out=view, dtype=self.dtype)
                continue
            self.random.random(out=view, dtype=self.dtype)
            np.greater_equal(view, mask.rate, out=view)  # keep with probability 1 - rate
            view *= self.dtype.type(1.0 / (1.0 - mask.rate))

    def apply(self, lr: float, step: float, kind: str = "train") -> None:
        """The optimizer update of training step `kind` from the gradient bucket (after replicas
        averaged it)."""
        batch = self._last_batch  # the update half never reads the batch arguments
        args = StepArgs(
            len(batch[0]),
            self._arenas[kind],
            self.params,
            self.grads,
            self.state,
            self._rng_buffers[kind],
            float(lr),
            float(step),
            self._last_parts,
        )
        self.function(kind, "apply")(*args, *batch)

    def _ones(self, m, batch) -> list:
        shapes = [at_batch(s.shape, batch) for s in m.sample_weights]
        key = tuple(shapes)
        if key not in self._ones_cache:
            self._ones_cache[key] = [np.ones(s, self.dtype) for s in shapes]
        return self._ones_cache[key]

    def rng_mask(self, kind, node, batch) -> np.ndarray:
        """The mask (or normal draws) of rng node `node` drawn by the last step of `kind` (for tests)."""
        m = self.steps[kind]
        mask = next(k for k in m.rng_masks if k.node == node)
        return self._rng_buffers[kind][m.rng_slice(mask, batch)].reshape(at_batch(mask.shape, batch)).copy()

    def _output(self, arena, m, place, batch):
        start, shape = m.output_slice(place, batch)
        buf = arena if place.region == "arena" else getattr(self, place.region)
        return buf[start : start + int(np.prod(shape))].reshape(shape)


def _check_buffers(kind, m, batch, steps, dtype) -> None:
    """Refuse a step whose buffers at this batch size would pass KGRAPH_MAX_BYTES, before they are
    allocated: a config of few weights can declare huge values (RepeatVector(n=10**9) made a
    16 GB arena per sample, filled for minutes)."""
    from .. import limits  # here: kgraph.limits imports kgraph.runtime.files
    from .checks import DataError

    elements = m.arena.at(batch) + m.rng.at(batch) * steps
    elements += sum(steps * math.prod(at_batch(p.shape, batch) or (1,)) for p in m.outputs.values())
    n = elements * np.dtype(dtype).itemsize
    if n > limits.limit("KGRAPH_MAX_BYTES"):
        raise DataError(
            limits.too_big(f"the {kind} step's values at batch size {batch}", n, "KGRAPH_MAX_BYTES")
            + " or lower the batch size"
        )
