"""Data parallelism on GPUs: replicas of a compiled model, each a CudaExecutable on its own GPU
(or several on one GPU) with its own resident weights, optimizer state and stream. Each runs the
gradient half of the training step on its shard of the global batch; the gradient bucket is
averaged, weighted by shard size, once per step; then each applies the update to its own
weights, which stay bit-identical. Batch norm's moving statistics are averaged after each step,
as on the CPU (kgraph/runtime/replicas.py, whose shards and merged outputs these are).

Two ways to average the bucket:
- "nccl": NCCL's all-reduce, in place on the devices (nccl4py, the optional extra
  `kgraph[nccl]`): each replica scales its bucket by its share of the batch, then one summing
  all-reduce over the replicas' streams. NCCL needs one replica per GPU.
- "host": host-staged, through pinned host memory: each bucket is copied to the host, summed
  there in replica order (the CPU replicas' arithmetic, so the same numbers), and the average
  copied back. It serves where NCCL cannot: the CUDA simulator, a machine without nccl4py, two
  replicas on one GPU.

One host thread drives every replica: launches are asynchronous, so the GPUs run their halves at
the same time while the thread queues the next one's."""

from __future__ import annotations

import os

import numpy as np

from .cuda_executable import CudaExecutable
from .replicas import ReplicaError, _merge, _synced, shard_bounds

COLLECTIVES = ("auto", "nccl", "host")


def average_buckets(buckets: list, sizes: list) -> np.ndarray:
    """The average of the replicas' gradient buckets weighted by their shard sizes, into the first
    bucket (returned): sum_r bucket_r * (size_r / n), in replica order, in the buckets' dtype. The
    arithmetic of the CPU's ThreadReplicas, so a GPU and a CPU run average alike."""
    n = sum(sizes)
    total = buckets[0]
    total *= total.dtype.type(sizes[0] / n)
    for b, s in zip(buckets[1:], sizes[1:]):
        total += b * total.dtype.type(s / n)
    return total


def nccl_available() -> bool:
    """Whether nccl4py imports (the `nccl` package of pip install 'kgraph[nccl]')."""
    try:
        import nccl.core  # noqa: F401
    except Exception:  # ImportError, or its CUDA libraries missing (OSError, RuntimeError)
        return False
    return True


def choose_collective(devices: list, simulator: bool, has_nccl, requested: str | None = None) -> str:
    """ "nccl" or "host" for replicas on `devices` (one hashable per replica naming its physical
    GPU: a device id, or (host, id) across machines). requested: "auto" (default: the
    KGRAPH_COLLECTIVE environment variable, else auto), "nccl" or "host". NCCL is used where it can
    serve: not in the simulator, with nccl4py installed (has_nccl() says), one replica per GPU.
    Asking for "nccl" where it cannot serve is an error."""
    requested = requested or os.environ.get("KGRAPH_COLLECTIVE", "auto")
    if requested not in COLLECTIVES:
        raise ValueError(f"unknown collective {requested!r}: use one of {', '.join(COLLECTIVES)} (KGRAPH_COLLECTIVE)")
    if requested == "host":
        return "host"
    why = None
    if simulator:
        why = "the CUDA simulator has no NCCL"
    elif len(set(devices)) < len(devices):
        why = "two replicas share a GPU, which NCCL refuses"
    elif not has_nccl():
        why = "nccl4py is not installed (pip install 'kgraph[nccl]')"
    if why is None:
        return "nccl"
    if requested == "nccl":
        raise ValueError(f"the NCCL all-reduce cannot serve here: {why}")
    return "host"


def stream_handle(stream) -> int:
    """The cudaStream_t of a numba stream, as an int (numba's ctypes binding or NVIDIA's)."""
    handle = stream.handle
    return int(getattr(handle, "value", handle) or 0)


class HostStaged:
    """Averages the replicas' gradient buckets through pinned host memory."""

    name = "host"

    def average(self, replicas: list, sizes: list) -> None:
        buckets = [e.stage_grads() for e in replicas]  # every replica's copy is queued before any wait
        for e in replicas:
            e.sync()
        total = average_buckets(buckets, sizes)  # into replica 0's pinned buffer
        for e in replicas:
            e.load_grads(total)


class NcclAllReduce:
    """Averages the replicas' gradient buckets with NCCL, in place on the devices: each bucket
    scaled by its replica's share of the batch, then one summing all-reduce, every replica's
    call in one NCCL group (one host thread drives all the GPUs). Not run on hardware yet: see
    benchmarks/gpu_check.sh, which checks it against the host-staged average."""

    name = "nccl"

    def __init__(self, device_ids: list):
        import nccl.core as nccl

        self.nccl = nccl
        self.comms = nccl.Communicator.init_all(list(device_ids))

    def average(self, replicas: list, sizes: list) -> None:
        n = sum(sizes)
        for e, s in zip(replicas, sizes):
            e.scale_grads(s / n)
        self.nccl.group_start()
        try:
            for comm, e in zip(self.comms, replicas):
                with e.on_device():
                    g = e.device_grads
                    comm.allreduce(g, g, self.nccl.SUM, stream=stream_handle(e.stream))
        finally:
            self.nccl.group_end()

    def close(self) -> None:
        for comm in self.comms:
            comm.destroy()
        self.comms = []


class CudaReplicas:
    """In-process replicas on GPUs. devices: numba's device id per replica (a GPU may be named
    more than once: those replicas share it); replica 0 is the model's own executable, which
    must be on devices[0]. collective: "auto", "nccl" or "host" (choose_collective)."""

    def __init__(self, executable: CudaExecutable, devices: list, seed: int | None = None, collective=None):
        from numba import config

        if executable.device_id != devices[0]:
            raise ValueError(f"replica 0 runs on GPU {executable.device_id}, not on devices[0] = {devices[0]}")
        self.devices = list(devices)
        self.replicas = [executable]
        for r, d in enumerate(devices[1:], 1):
            twin = CudaExecutable(
                executable.steps,
                executable.param_layout,
                executable.dtype.name,
                None if seed is None else seed + r,
                device=d,
            )
            self.replicas.append(twin)
        self.collective = choose_collective(devices, bool(config.ENABLE_CUDASIM), nccl_available, collective)
        self.averager = NcclAllReduce(devices) if self.collective == "nccl" else HostStaged()
        self.broadcast()

    @property
    def num_replicas(self) -> int:
        return len(self.replicas)

    def broadcast(self):
        """Replica 0's weights and optimizer state to every other replica."""
        first = self.replicas[0]
        params, state = first.copy_of("params"), first.copy_of("state")
        for e in self.replicas[1:]:
            e.params[...] = params  # host copies: uploaded before its next step
            e.state[...] = state

    def train_step(self, xs, ys, sws, lr, step, kind="train") -> dict:
        """kind: the training step to run (the CPU replicas' signature; CUDA models have one)."""
        bounds = shard_bounds(len(xs[0]), self.num_replicas)
        sizes = [b - a for a, b in bounds]
        for e, (a, b) in zip(self.replicas, bounds):  # every GPU starts before the first is waited for
            e.launch(kind, [x[a:b] for x in xs], [y[a:b] for y in ys], [w[a:b] for w in sws], lr, step, part="grads")
        self.averager.average(self.replicas, sizes)
        for e in self.replicas:
            e.apply(lr, step, kind)
        ranges = _synced(self.replicas[0], kind)
        if ranges:  # batch norm's moving statistics, from each replica's shard: their mean
            packed = [e.read_ranges("params", ranges) for e in self.replicas]
            mean = sum(packed) / self.num_replicas
            for e in self.replicas:
                e.write_ranges("params", ranges, mean)
        outs = [{k: v.copy() for k, v in e.collect().items()} for e in self.replicas]
        return _merge(outs, sizes)

    def check_identical(self):
        first = [self.replicas[0].copy_of(b) for b in ("params", "state")]
        for r, e in enumerate(self.replicas[1:], 1):
            if not all(np.array_equal(e.copy_of(b), f) for b, f in zip(("params", "state"), first)):
                raise ReplicaError(f"replica {r} (GPU {self.devices[r]}) drifted from replica 0")
