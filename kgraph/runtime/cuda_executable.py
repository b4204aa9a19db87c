"""The compiled steps of one model on a CUDA device. Parameters, gradients, optimizer state and
the arenas stay on the device between steps; a step copies its batch (and dropout masks) over
from pinned host buffers on one stream, launches the generated kernels, and brings back only
its outputs (losses, predictions).

Each executable lives on one GPU (`device`, numba's device id): every allocation, copy and launch
runs with that GPU's context current, so replicas on several GPUs (or several on one GPU) each
keep their own resident weights, optimizer state and stream (kgraph/runtime/cuda_replicas.py)."""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import numpy as np
from numba import cuda

from .abi import Manifest
from .executable import Executable, _check_buffers
from .loader import import_file

BUCKETS = ("params", "grads", "state")


def _on_device(method):
    """The method, run with its executable's GPU current."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        with self.on_device():
            return method(self, *args, **kwargs)

    return wrapped


@dataclass
class _Binding:
    """One step kind at one batch size: the step bound to its device views, and the device and
    pinned host buffers of its batch, dropout masks and outputs."""

    step: object
    batch: list  # (device, pinned host) per input, label and sample weight
    rng: tuple  # (device, pinned host)
    outputs: dict  # name -> (device view, pinned host)


class CudaExecutable:
    """Executable's interface (run, get_weights/set_weights, params, grads, state) on a GPU."""

    multi_step = False  # run() takes one step a call

    get_weights = Executable.get_weights
    set_weights = Executable.set_weights
    param_view = Executable.param_view
    take_slot = Executable.take_slot
    fill_slot = Executable.fill_slot
    _slot_pairs = Executable._slot_pairs
    draw_masks = Executable.draw_masks
    _ones = Executable._ones
    _initial_state = Executable._initial_state

    def __init__(self, steps: dict, params: list, dtype: str = "float32", seed: int | None = None, device: int = 0):
        if np.dtype(dtype) != np.float32:
            raise NotImplementedError(f"the CUDA backend runs float32 models only, not {dtype}")
        self.dtype = np.dtype(dtype)
        self.steps = steps
        self.param_layout = params
        self.random = np.random.default_rng(seed)
        self.device_id = device
        self._ones_cache = {}
        self._dirty = set()  # host copies handed out: uploaded before the next step
        self._arenas = {}
        self._bindings = {}
        self._last = None  # the binding of the last "grads" half, whose "apply" half comes next
        self._pending = None  # the outputs of a launched step, until collect()
        with self.on_device():
            self.stream = cuda.stream()
            size = sum(int(np.prod(p["shape"])) for p in params)
            self._device, self._host = {}, {}
            for name, n in (("params", size), ("grads", size)):
                self._allocate(name, n)
            self.state_manifest = steps.get("train")  # as Executable's
            self._allocate("state", self._initial_state(self.state_manifest))

    def on_device(self):
        """A context in which this executable's GPU is the current one."""
        return cuda.gpus[self.device_id] if len(cuda.gpus) > 1 else contextlib.nullcontext()

    def _allocate(self, bucket, n):
        """A device bucket of n zeros, or holding array n, and its pinned host copy."""
        values = n if isinstance(n, np.ndarray) else np.zeros(n, self.dtype)
        self._host[bucket] = cuda.pinned_array(max(values.size, 1), self.dtype)
        self._host[bucket][:] = 0
        self._host[bucket][: values.size] = values
        self._device[bucket] = cuda.to_device(self._host[bucket], stream=self.stream)

    @_on_device
    def add_step(self, kind: str, manifest: Manifest) -> None:
        """Install (or replace) a compiled step; a new training step starts with fresh optimizer
        state (as Executable.add_step)."""
        self.steps[kind] = manifest
        if kind == "train":
            self.state_manifest = manifest
            self._allocate("state", self._initial_state(manifest))
            self._dirty.discard("state")
            self._bindings.clear()  # they hold views of the old state
        self._bindings = {k: b for k, b in self._bindings.items() if k[0] != kind}

    # ------------------------------------------------------------------ host copies of the buckets
    @_on_device
    def _mirror(self, bucket) -> np.ndarray:
        """The host copy of a device bucket; changes to it reach the device before the next step."""
        if bucket not in self._dirty:
            self._device[bucket].copy_to_host(self._host[bucket], stream=self.stream)
            self.stream.synchronize()
            self._dirty.add(bucket)
        return self._host[bucket]

    params = property(lambda self: self._mirror("params"))
    grads = property(lambda self: self._mirror("grads"))
    state = property(lambda self: self._mirror("state"))

    @_on_device
    def copy_of(self, bucket) -> np.ndarray:
        """A host copy of a bucket that leaves the device's the one in use (check_identical's)."""
        if bucket in self._dirty:
            return self._host[bucket].copy()
        return self._device[bucket].copy_to_host(stream=self.stream)

    @_on_device
    def read_ranges(self, bucket, ranges) -> np.ndarray:
        """The [start, stop) ranges of a bucket, packed into one host array (batch norm's moving
        statistics, which replicas average)."""
        if bucket in self._dirty:
            return np.concatenate([self._host[bucket][a:b] for a, b in ranges])
        packed = np.concatenate([self._device[bucket][a:b].copy_to_host(stream=self.stream) for a, b in ranges])
        self.stream.synchronize()
        return packed

    @_on_device
    def write_ranges(self, bucket, ranges, packed) -> None:
        """read_ranges' inverse: `packed` into the ranges of the bucket."""
        at = 0
        for a, b in ranges:
            if bucket in self._dirty:  # the host copy is uploaded before the next step
                self._host[bucket][a:b] = packed[at : at + b - a]
            else:
                self._device[bucket][a:b].copy_to_device(
                    np.ascontiguousarray(packed[at : at + b - a]), stream=self.stream
                )
            at += b - a
        self.stream.synchronize()  # packed may go once this returns

    # ------------------------------------------------------------------ the gradient bucket, staged
    @_on_device
    def stage_grads(self) -> np.ndarray:
        """Start copying the gradient bucket into its pinned host buffer; valid after sync()."""
        self._device["grads"].copy_to_host(self._host["grads"], stream=self.stream)
        return self._host["grads"]

    @_on_device
    def load_grads(self, values) -> None:
        """Start copying `values` (the averaged gradients) into the device's gradient bucket, through
        the pinned host buffer; the next launch on the stream reads them."""
        if values is not self._host["grads"]:
            np.copyto(self._host["grads"], values)
        self._device["grads"].copy_to_device(self._host["grads"], stream=self.stream)
        self._dirty.discard("grads")

    @_on_device
    def scale_grads(self, factor: float) -> None:
        """grads *= factor on the device (a replica's share of the batch, before a summing all-reduce)."""
        from ..kernels import cuda as K

        g = self._device["grads"]
        K.scale[K.update_blocks(g.size), K.threads(g.size), self.stream](g, float(factor))

    @property
    def device_grads(self):
        """The gradient bucket on the device (what NCCL all-reduces in place)."""
        return self._device["grads"]

    @_on_device
    def sync(self) -> None:
        self.stream.synchronize()

    # ------------------------------------------------------------------ running
    @_on_device
    def _binding(self, kind, inputs) -> _Binding:
        batch = len(inputs[0])
        if (kind, batch) in self._bindings:
            return self._bindings[(kind, batch)]
        m = self.steps[kind]
        _check_buffers(kind, m, batch, 1, self.dtype)  # before the device and pinned buffers of a new batch size
        need = m.arena.at(batch)
        if kind not in self._arenas or self._arenas[kind].size < need:
            self._arenas[kind] = cuda.to_device(np.zeros(max(need, 1), self.dtype), stream=self.stream)
            self._bindings = {k: b for k, b in self._bindings.items() if k[0] != kind}
        arena = self._arenas[kind]
        io = [
            (cuda.device_array(x.shape, x.dtype, stream=self.stream), cuda.pinned_array(x.shape, x.dtype))
            for x in inputs
        ]
        n_rng = max(m.rng.at(batch), 1)
        rng = (cuda.device_array(n_rng, self.dtype, stream=self.stream), cuda.pinned_array(n_rng, self.dtype))
        module = import_file(m.module)
        consts = cuda.to_device(module.CONSTS, stream=self.stream)
        step = module.bind(
            batch, arena, *(self._device[b] for b in BUCKETS), rng[0], consts, *(d for d, _ in io), self.stream
        )
        outputs = {}
        for name, place in m.outputs.items():
            start, shape = m.output_slice(place, batch)
            buf = arena if place.region == "arena" else self._device[place.region]
            outputs[name] = (
                buf[start : start + int(np.prod(shape))].reshape(shape),
                cuda.pinned_array(shape, self.dtype),
            )
        self._bindings[(kind, batch)] = _Binding(step, io, rng, outputs)
        return self._bindings[(kind, batch)]

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
        """One step on a batch (as Executable.run: no sample weights weigh every sample 1; lrs, if
        given, holds this step's rate), or its "grads" half (apply() runs the other). Returns its
        outputs as host arrays, valid until the next call."""
        self.launch(kind, inputs, labels, sample_weights, lr, step, part, steps, lrs)
        return self.collect()

    @_on_device
    def launch(self, kind, inputs, labels=(), sample_weights=(), lr=0.0, step=1.0, part="step", steps=1, lrs=None):
        """run()'s work without waiting for it: the batch's copies, the step's (or its half's)
        launches and the copies of its outputs are queued on the stream; collect() waits."""
        if part not in ("step", "grads"):
            raise ValueError(f"unknown part {part!r} of a step")
        if steps != 1:  # multi_step is False: fit runs one step a call here
            raise NotImplementedError("the CUDA backend runs one step a call")
        lr = lr if lrs is None else lrs[0]
        m = self.steps[kind]
        if labels and not sample_weights:
            sample_weights = self._ones(m, len(inputs[0]))
        arrays = list(inputs) + list(labels) + list(sample_weights)
        b = self._binding(kind, arrays)
        if part == "grads" and not hasattr(b.step, "grads"):
            raise NotImplementedError(f"the {kind} step has no gradient half (nothing to train)")
        for bucket in self._dirty:
            self._device[bucket].copy_to_device(self._host[bucket], stream=self.stream)
        self._dirty.clear()
        for (device, host), x in zip(b.batch, arrays):
            np.copyto(host, x)
            device.copy_to_device(host, stream=self.stream)
        if m.rng_masks:  # drawn on the host as the CPU backend does, so both give the same masks
            self.draw_masks(b.rng[1], m, len(arrays[0]))
            b.rng[0].copy_to_device(b.rng[1], stream=self.stream)
        (b.step.grads if part == "grads" else b.step)(float(lr), float(step))
        for device, host in b.outputs.values():
            device.copy_to_host(host, stream=self.stream)
        self._last = b if part == "grads" else None
        self._pending = b

    @_on_device
    def collect(self) -> dict:
        """Wait for the launched step; its outputs as host arrays, valid until the next launch."""
        self.stream.synchronize()
        return {name: host for name, (_, host) in self._pending.outputs.items()}

    @_on_device
    def apply(self, lr: float, step: float, kind: str = "train") -> None:
        """Queue the optimizer update from the gradient bucket (after replicas averaged it): the
        "apply" half of the last "grads" half run (whose step `kind` names: the CPU's signature).
        Host copies handed out go to the device first."""
        if self._last is None:
            raise RuntimeError("apply() follows a run of the step's 'grads' half")
        for bucket in self._dirty:
            self._device[bucket].copy_to_device(self._host[bucket], stream=self.stream)
        self._dirty.clear()
        self._last.step.apply(float(lr), float(step))
        self._last = None
