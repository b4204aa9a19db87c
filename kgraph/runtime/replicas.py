"""Data parallelism: replicas of a compiled model each run the gradient half of the training step
on their shard of the global batch; the gradients (one contiguous bucket) are averaged, weighted by
shard size, so N replicas make the update one replica makes on the whole batch; then every
replica applies it to its own copy of the weights, which stay bit-identical. Weights the step
updates from its own shard (batch norm's moving statistics) are averaged after each step, the
value Keras's MirroredStrategy reads for them."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .executable import Executable


class ReplicaError(RuntimeError):
    """A replica failed or stopped answering: the others stop too, with this message."""


def shard_bounds(n: int, replicas: int) -> list:
    """Split n samples into `replicas` contiguous shards whose sizes differ by at most one
    (an uneven last batch gives the first shards one sample more). Needs n >= replicas."""
    if n < replicas:
        raise ReplicaError(f"a batch of {n} samples cannot be split across {replicas} replicas")
    base, extra = divmod(n, replicas)
    bounds, start = [], 0
    for r in range(replicas):
        stop = start + base + (1 if r < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def _merge(outs: list, sizes: list) -> dict:
    """Outputs of the shards as if one step ran on the whole batch: per-sample outputs are
    concatenated, scalar losses averaged weighted by shard size."""
    n = sum(sizes)
    merged = {}
    for name in outs[0]:
        parts = [o[name] for o, s in zip(outs, sizes) if s]
        if name == "loss" or name.startswith("loss:"):
            merged[name] = np.array([sum(float(o[name][0]) * s for o, s in zip(outs, sizes) if s) / n])
        else:
            merged[name] = np.concatenate(parts)
    return merged


def _synced(executable) -> list:
    """[start, stop) ranges of the parameter bucket that the train step updates in place."""
    return [(s.offset, s.offset + s.size) for s in executable.steps["train"].synced]


class ThreadReplicas:
    """In-process replicas, one thread each (the compiled steps release the GIL)."""

    def __init__(self, executable: Executable, replicas: int, seed: int | None = None):
        self.replicas = [executable]
        for r in range(1, replicas):
            twin = Executable(
                executable.steps, executable.param_layout, executable.dtype.name, None if seed is None else seed + r
            )
            self.replicas.append(twin)
        for e in self.replicas:
            e.threads.max_threads = 1  # one core per replica: more threads would oversubscribe
        self.pool = ThreadPoolExecutor(replicas, thread_name_prefix="kgraph-replica")
        self.broadcast()

    @property
    def num_replicas(self) -> int:
        return len(self.replicas)

    def broadcast(self):
        """Replica 0's weights and optimizer state to every other replica."""
        first = self.replicas[0]
        for e in self.replicas[1:]:
            if e.state.size != first.state.size:
                e.state = np.zeros_like(first.state)
            e.params[...] = first.params
            e.state[...] = first.state

    def train_step(self, xs, ys, sws, lr, step) -> dict:
        bounds = shard_bounds(len(xs[0]), self.num_replicas)
        sizes = [b - a for a, b in bounds]

        def grads(r):
            a, b = bounds[r]
            outs = self.replicas[r].run(
                "train", [x[a:b] for x in xs], [y[a:b] for y in ys], [w[a:b] for w in sws], lr, step, part="grads"
            )
            return {k: v.copy() for k, v in outs.items()}

        outs = list(self.pool.map(grads, range(self.num_replicas)))
        n = sum(sizes)
        total = self.replicas[0].grads
        total *= sizes[0] / n
        for e, s in zip(self.replicas[1:], sizes[1:]):
            total += e.grads * e.dtype.type(s / n)
        for e in self.replicas[1:]:
            e.grads[...] = total
        for e in self.replicas:
            e.apply(lr, step)
        for start, stop in _synced(self.replicas[0]):
            mean = sum(e.params[start:stop] for e in self.replicas) / self.num_replicas
            for e in self.replicas:
                e.params[start:stop] = mean
        return _merge(outs, sizes)

    def check_identical(self):
        for r, e in enumerate(self.replicas[1:], 1):
            if not (
                np.array_equal(e.params, self.replicas[0].params) and np.array_equal(e.state, self.replicas[0].state)
            ):
                raise ReplicaError(f"replica {r} drifted from replica 0")


class MPIReplicas:
    """One replica per MPI process (mpi4py). Collectives time out instead of hanging when a
    rank dies: the survivors raise ReplicaError and abort the job."""

    def __init__(self, executable: Executable, comm, timeout: float | None = None):
        self.comm = comm
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.executable = executable
        self.timeout = float(timeout or os.environ.get("KGRAPH_REPLICA_TIMEOUT", 60))
        self.broadcast()

    @property
    def num_replicas(self) -> int:
        return self.size

    def _wait(self, request, what):
        deadline = time.monotonic() + self.timeout
        while not request.Test():
            if time.monotonic() > deadline:
                msg = (
                    f"rank {self.rank}: no answer from the other replicas within {self.timeout:.0f} s "
                    f"while {what}; a replica has probably died. Stopping."
                )
                raise ReplicaError(msg)
            time.sleep(0.0002)

    def _allreduce(self, array, what):
        from mpi4py import MPI

        self._wait(self.comm.Iallreduce(MPI.IN_PLACE, array, op=MPI.SUM), what)

    def broadcast(self):
        e = self.executable
        sizes = np.array([e.state.size], np.int64)
        self._wait(self.comm.Ibcast(sizes, root=0), "broadcasting the weights")
        if e.state.size != sizes[0]:
            e.state = np.zeros(int(sizes[0]), e.dtype)
        self._wait(self.comm.Ibcast(e.params, root=0), "broadcasting the weights")
        if e.state.size:
            self._wait(self.comm.Ibcast(e.state, root=0), "broadcasting the optimizer state")

    def train_step(self, xs, ys, sws, lr, step) -> dict:
        """xs, ys, sws: the global batch (every rank reads the same data); each takes its shard."""
        n = len(xs[0])
        a, b = shard_bounds(n, self.size)[self.rank]
        e = self.executable
        outs = {
            k: v.copy()
            for k, v in e.run(
                "train", [x[a:b] for x in xs], [y[a:b] for y in ys], [w[a:b] for w in sws], lr, step, part="grads"
            ).items()
        }
        e.grads *= e.dtype.type((b - a) / n)
        self._allreduce(e.grads, "averaging gradients")
        e.apply(lr, step)
        ranges = _synced(e)
        if ranges:  # one small collective for all the moving statistics
            packed = np.concatenate([e.params[lo:hi] for lo, hi in ranges])
            self._allreduce(packed, "averaging the moving statistics")
            packed /= self.size
            at = 0
            for lo, hi in ranges:
                e.params[lo:hi] = packed[at : at + hi - lo]
                at += hi - lo
        return self._gather(outs, b - a, n)

    def _gather(self, outs, count, n):
        """Every rank gets the whole batch's outputs, so metrics and logs agree everywhere."""
        merged = {}
        for name in sorted(outs):
            if name == "loss" or name.startswith("loss:"):
                v = np.array([float(outs[name][0]) * count])
                self._allreduce(v, "averaging the loss")
                merged[name] = v / n
            else:
                merged[name] = np.concatenate(self.comm.allgather(outs[name]))
        return merged

    def check_identical(self):
        digest = np.array([float(np.sum(self.executable.params, dtype=np.float64))])
        low, high = digest.copy(), digest.copy()
        from mpi4py import MPI

        self.comm.Allreduce(MPI.IN_PLACE, low, op=MPI.MIN)
        self.comm.Allreduce(MPI.IN_PLACE, high, op=MPI.MAX)
        if low[0] != high[0]:
            raise ReplicaError(f"rank {self.rank}: the replicas' weights differ")
