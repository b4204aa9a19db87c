"""The compiled step's calling contract, written once: the arguments a generated step takes
(kgraph/codegen writes them, the runtime passes them) and its manifest, everything the runtime
needs to call it (kgraph.codegen.step_manifest builds one; a compiled trainer's manifest.json
holds them as JSON).

Buffers whose size grows with the batch are laid out "a·B + c": the per-sample part first, a
slot with batch=True at offset o taking B·size elements from o·B, then the fixed part from a·B.

Imports nothing but the standard library: code generation and a trainer read it without loading
Numba."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import NamedTuple

BATCH = "B"  # the batch axis in a manifest's shapes (ir.BATCH)


def at_batch(shape, batch: int) -> tuple:
    """A manifest's shape with its batch axis set to `batch`."""
    return tuple(batch if d == BATCH else d for d in shape)


class Size(NamedTuple):
    """A buffer's size in elements at batch B: per_sample·B + fixed."""

    per_sample: int
    fixed: int

    def at(self, batch: int) -> int:
        return self.per_sample * batch + self.fixed


# The generated CPU functions' leading arguments, in order, before the batch arrays (inputs,
# labels, sample weights; then the whole step's output stashes). The whole step runs n steps a
# call; the replicas' halves ("grads", "apply") one. parts: how many cores run the GEMMs and
# updates split by weight rows (1: whole; passes/split.py).
class StepsArgs(NamedTuple):
    n: int
    B: int
    arena: object
    params: object
    grads: object
    state: object
    rngs: object  # n steps' random sources, one after the other
    lrs: object  # n learning rates
    step0: float  # the first step's number
    parts: int


class StepArgs(NamedTuple):
    B: int
    arena: object
    params: object
    grads: object
    state: object
    rng: object
    lr: float
    step: float
    parts: int


STEPS_ARGS = list(StepsArgs._fields)
STEP_ARGS = list(StepArgs._fields)


class _Record:
    """A frozen dataclass read from and written to JSON objects: keys in field order, tuples as
    lists; keys missing from an older file take the field's default."""

    def to_json(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_json(cls, d: dict):
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if k == "shape" else v for k, v in d.items() if k in known})


def _plain(v):
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, _Record):
        return v.to_json()
    return v


@dataclass(frozen=True)
class Place(_Record):
    """Where a step's output lives: in `region` ("arena", "params", "grads", "state") at offset,
    per sample (batch=True, "a·B + c") or fixed."""

    region: str
    offset: int
    batch: bool
    shape: tuple
    dtype: str


@dataclass(frozen=True)
class RandomSource(_Record):
    """A random source the runtime draws into the rng buffer before each step: dropout's keep
    mask (dist "bernoulli", keep probability 1 - rate) or a noise layer's normal draws."""

    node: str | None
    offset: int
    batch: bool
    size: int
    rate: float
    dist: str = "bernoulli"
    shape: tuple = ()
    layer: str = ""


@dataclass(frozen=True)
class BatchArray(_Record):
    """A label or sample-weight argument of the step."""

    id: str
    dtype: str
    shape: tuple


@dataclass(frozen=True)
class StateSlot(_Record):
    """An optimizer slot of parameter `param` in the state bucket; Keras starts it at `init`."""

    node: str
    slot: str | None
    param: str | None
    offset: int
    shape: tuple
    init: float = 0.0


@dataclass(frozen=True)
class Synced(_Record):
    """A range of the parameter bucket the step updates from its batch (batch norm's moving
    statistics): replicas average it after each step."""

    offset: int
    size: int


_LISTS = {
    "rng_masks": RandomSource,
    "labels": BatchArray,
    "sample_weights": BatchArray,
    "state": StateSlot,
    "synced": Synced,
}


@dataclass(frozen=True)
class Manifest(_Record):
    """How to call one generated step: the function, its buffers' sizes, its batch arguments and
    where its outputs are. Field order is manifest.json's key order."""

    kind: str
    gemm_flops_per_sample: int  # of its largest GEMM: the runtime picks BLAS's threads from it
    parts: int  # the GEMMs split in this many parts at most (kgraph/passes/split.py)
    module: str  # the generated source's path
    function: str
    arena: Size
    rng: Size
    rng_masks: tuple  # RandomSource
    inputs: tuple  # node ids, in the step's argument order
    labels: tuple  # BatchArray
    sample_weights: tuple  # BatchArray
    outputs: dict  # name -> Place; the whole step copies them into one stash each
    state: tuple  # StateSlot
    state_size: int
    synced: tuple  # Synced
    param_size: int
    launches: int | None = None  # kernel launches a step (CUDA steps only)
    # its GEMMs with several rows a sample (convolutions) split by samples: with its images and
    # large loops, the whole step can run in parts, however large its GEMMs (runtime/threads.py)
    split_by_samples: bool = False

    def to_json(self) -> dict:
        d = super().to_json()
        d["outputs"] = {k: p.to_json() for k, p in self.outputs.items()}
        if self.launches is None:
            del d["launches"]
        return d

    @classmethod
    def from_json(cls, d: dict) -> Manifest:
        d = {"gemm_flops_per_sample": 0, "parts": 1, "sample_weights": (), "synced": (), "param_size": 0, **d}
        d.update(
            {k: tuple(_LISTS[k].from_json(x) for x in d[k]) for k in _LISTS},
            arena=Size(*d["arena"]),
            rng=Size(*d["rng"]),
            inputs=tuple(d["inputs"]),
            outputs={k: Place.from_json(p) for k, p in d["outputs"].items()},
        )
        return super().from_json(d)

    def with_module(self, module) -> Manifest:
        return replace(self, module=str(module))

    def output_slice(self, place: Place, batch: int) -> tuple:
        """(start, shape) of output `place` in its region at this batch size."""
        shape = at_batch(place.shape, batch) or (1,)
        if place.region != "arena":
            return place.offset, shape
        return (place.offset * batch if place.batch else self.arena.per_sample * batch + place.offset), shape

    def rng_slice(self, source: RandomSource, batch: int) -> slice:
        """Where random source `source` lies in one step's rng buffer at this batch size."""
        start = source.offset * batch if source.batch else self.rng.per_sample * batch + source.offset
        return slice(start, start + (source.size * batch if source.batch else source.size))

    def state_view(self, state, slot: StateSlot):
        """Slot `slot` of the state bucket `state`, shaped."""
        return state[slot.offset : slot.offset + math.prod(slot.shape)].reshape(slot.shape)
