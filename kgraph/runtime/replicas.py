"""Data parallelism: replicas of a compiled model each run the gradient half of the training step
on their shard of the global batch; the gradients (one contiguous bucket) are averaged, weighted by
shard size, so N replicas make the update one replica makes on the whole batch; then every
replica applies it to its own copy of the weights, which stay bit-identical. Weights the step
updates from its own shard (batch norm's moving statistics) are averaged after each step, the
value Keras's MirroredStrategy reads for them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
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


def _synced(executable, kind="train") -> list:
    """[start, stop) ranges of the parameter bucket that the training step `kind` updates in place."""
    return [(s.offset, s.offset + s.size) for s in executable.steps[kind].synced]


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

    def drop_step(self, kind: str) -> None:
        """Forget a step in every replica (they share the steps; each keeps its buffers and code)."""
        for e in self.replicas:
            e.drop_step(kind)

    def train_step(self, xs, ys, sws, lr, step, kind="train") -> dict:
        """kind: the training step to run (a model with unknown dimensions has one per input shape)."""
        bounds = shard_bounds(len(xs[0]), self.num_replicas)
        sizes = [b - a for a, b in bounds]

        def grads(r):
            a, b = bounds[r]
            outs = self.replicas[r].run(
                kind, [x[a:b] for x in xs], [y[a:b] for y in ys], [w[a:b] for w in sws], lr, step, part="grads"
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
            e.apply(lr, step, kind)
        for start, stop in _synced(self.replicas[0], kind):
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


NCCL_UNIQUE_ID_BYTES = 128  # sizeof(ncclUniqueId)


def _mpi_op(name):
    from mpi4py import MPI

    return getattr(MPI, name)


def _nccl_sum():
    import nccl.core as nccl

    return nccl.SUM


# Tags of the fault protocol's point-to-point messages (on kgraph's own duplicate of the
# communicator, so they never meet the user's messages).
FAULT, FAREWELL = 0x6B67, 0x6B68


def replica_timeout(timeout: float | None = None) -> float:
    """Seconds a replica waits for the others in any collective: `timeout`, else
    KGRAPH_REPLICA_TIMEOUT, else 60."""
    value = timeout if timeout is not None else os.environ.get("KGRAPH_REPLICA_TIMEOUT", 60)
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(f"KGRAPH_REPLICA_TIMEOUT={value!r} is not a number of seconds") from None
    if not seconds > 0:
        raise ValueError(f"the replicas' timeout must be positive seconds, not {value!r}")
    return seconds


def _launcher_rank() -> str:
    """This process's rank as the MPI launcher tells it, before MPI starts ("?" if none does)."""
    for name in ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK"):
        if name in os.environ:
            return os.environ[name]
    return "?"


# The watchdog of MPI_Init: a child process, because MPI_Init blocks in C holding the GIL, so no
# thread of this process could keep the time. Any byte or EOF on its stdin (this process done or
# dead) ends it quietly; otherwise at the deadline it prints the line and kills this process.
_WATCHDOG = """
import os, select, signal, sys
pid, seconds, line = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if not select.select([sys.stdin], [], [], seconds)[0]:
    sys.stderr.write(line + "\\n")
    sys.stderr.flush()
    os.kill(pid, signal.SIGKILL)
"""


def start_mpi(timeout: float | None = None):
    """mpi4py's MPI module, MPI initialized. MPI_Init waits for every rank of the job; if one
    never arrives, this process ends (killed, after a one-line error) after the timeout."""
    import mpi4py

    if "mpi4py.MPI" in sys.modules and sys.modules["mpi4py.MPI"].Is_initialized():
        return sys.modules["mpi4py.MPI"]
    seconds = replica_timeout(timeout)
    line = (
        f"kgraph: error: rank {_launcher_rank()}: MPI did not start within {seconds:g} s "
        "(KGRAPH_REPLICA_TIMEOUT): MPI_Init waits for every rank and one never arrived. Stopping."
    )
    watchdog = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(os.getpid()), str(seconds), line], stdin=subprocess.PIPE
    )
    try:
        rc = dict(initialize=mpi4py.rc.initialize, finalize=mpi4py.rc.finalize)
        mpi4py.rc.initialize = False  # initialized below, where the watchdog sees it...
        mpi4py.rc.finalize = True if rc["finalize"] is None else rc["finalize"]  # ...and finalized at exit
        try:
            from mpi4py import MPI
        finally:
            mpi4py.rc(**rc)
        if not MPI.Is_initialized():
            MPI.Init_thread()
    finally:
        watchdog.stdin.close()
        watchdog.wait()
    return MPI


class MPIReplicas:
    """One replica per MPI process (mpi4py). Every collective is nonblocking and polled against
    a deadline (the timeout): MPI has no timeouts of its own, so a stopped or dead rank would hang
    the others for ever. When a deadline passes, the rank tells the others (they stop waiting at
    once), learns which ranks still answer, prints one line naming those that do not, and ends
    the process with exit status 1: MPI cannot go on after a collective failed, and
    MPI_Finalize would wait for the missing rank for ever too."""

    def __init__(self, executable: Executable, comm, timeout: float | None = None, collective: str | None = None):
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.executable = executable
        self.timeout = replica_timeout(timeout)
        self.grace = min(2.0, self.timeout)  # for the answers of the ranks that still run
        self.comm = comm  # until the duplicate is made: _wait needs it for the fault messages
        dup, request = comm.Idup()  # kgraph's messages apart from the user's
        self._wait(request, "starting the replicas")
        self.comm = dup
        self.broadcast()
        self.collective = "mpi"  # the CPU's, and a GPU's staged through host memory
        self.nccl = None
        if hasattr(executable, "device_grads"):  # a CUDA executable
            self.collective = "nccl" if self._agree_on_nccl(collective) else "host"
            if self.collective == "nccl":
                self._start_nccl()

    def _agree_on_nccl(self, requested) -> bool:
        """Whether every rank can all-reduce with NCCL: not the simulator, nccl4py everywhere, no
        two ranks on one GPU of one machine (the ranks' (host, GPU) pairs are gathered)."""
        import socket
        import zlib

        from numba import config

        from .cuda_replicas import COLLECTIVES, choose_collective, nccl_available

        requested = requested or os.environ.get("KGRAPH_COLLECTIVE", "auto")
        if requested not in COLLECTIVES:
            raise ValueError(
                f"unknown collective {requested!r}: use one of {', '.join(COLLECTIVES)} (KGRAPH_COLLECTIVE)"
            )
        simulator = bool(config.ENABLE_CUDASIM)
        mine = np.array([zlib.crc32(socket.gethostname().encode()), self.executable.device_id], np.int64)
        pairs = np.zeros((self.size, 2), np.int64)
        self._wait(self.comm.Iallgather(mine, pairs), "comparing the ranks' GPUs")
        devices = [tuple(p) for p in pairs.tolist()]
        local = choose_collective(devices, simulator, nccl_available, "host" if requested == "host" else "auto")
        everyone = np.array([int(local == "nccl")], np.int64)
        self._allreduce(everyone, "comparing the ranks' GPUs", _mpi_op("MIN"))
        if requested == "nccl" and not everyone[0]:
            choose_collective(devices, simulator, nccl_available, "nccl")  # raises this rank's reason
            raise ValueError("the NCCL all-reduce cannot serve here: another rank cannot use it")
        return bool(everyone[0])

    def _start_nccl(self):
        """NCCL's communicator over the ranks: rank 0 makes the unique id, MPI broadcasts it.
        (ncclCommInitRank blocks until every rank joins, without kgraph's deadline.)"""
        import nccl.core as nccl

        uid = np.zeros(NCCL_UNIQUE_ID_BYTES, np.uint8)
        if self.rank == 0:
            uid[:] = np.frombuffer(nccl.get_unique_id().as_bytes, np.uint8)
        self.bcast(uid, "sharing NCCL's unique id")
        with self.executable.on_device():
            self.nccl = nccl.Communicator.init(self.size, self.rank, nccl.UniqueId.from_bytes(uid.tobytes()))

    def _wait_device(self, what):
        """Wait for the executable's stream (an NCCL all-reduce on it), at most the timeout, and
        stop at once when another rank reports a fault, as _wait does for MPI's requests."""
        from mpi4py import MPI
        from numba import cuda

        e = self.executable
        with e.on_device():
            done = cuda.event(timing=False)
            done.record(e.stream)
        deadline = time.monotonic() + self.timeout
        while not done.query():
            if self.comm.Iprobe(MPI.ANY_SOURCE, FAULT):
                self._fail(what, "(another rank timed out)")
            if time.monotonic() > deadline:
                self._fail(what, f"within {self.timeout:g} s (KGRAPH_REPLICA_TIMEOUT)")
            time.sleep(0.0002)

    @property
    def num_replicas(self) -> int:
        return self.size

    def _wait(self, request, what):
        """Wait for a nonblocking collective, at most the timeout, and stop at once when
        another rank reports a fault."""
        from mpi4py import MPI

        deadline = time.monotonic() + self.timeout
        next_probe = 0.0
        while True:
            now = time.monotonic()
            try:  # mpi4py raises MPI.Exception where MPI reports an error (a peer's connection lost)
                if request.Test():
                    return
                if now > next_probe:  # a probe costs a little: a hundred a second at most
                    if self.comm.Iprobe(MPI.ANY_SOURCE, FAULT):
                        self._fail(what, "(another rank timed out)")
                    next_probe = now + 0.01
            except MPI.Exception as e:
                self._fail(what, f"(MPI: {str(e).splitlines()[0] if str(e) else type(e).__name__})")
            if now > deadline:
                self._fail(what, f"within {self.timeout:g} s (KGRAPH_REPLICA_TIMEOUT)")
            time.sleep(0.0002)

    def _exchange(self, tag, peers) -> set:
        """Send `tag` to `peers` and collect theirs, for at most the grace period: the set of
        peers heard from."""
        from mpi4py import MPI

        token = np.array([self.rank], np.int64)
        sends = []  # never waited on: a stopped peer never takes its message
        for r in peers:
            with contextlib.suppress(MPI.Exception):  # a dead peer's connection may be gone
                sends.append(self.comm.Isend(token, dest=r, tag=tag))
        heard, status, got = set(), MPI.Status(), np.zeros(1, np.int64)
        deadline = time.monotonic() + self.grace
        while heard < set(peers) and time.monotonic() < deadline:
            try:
                if self.comm.Iprobe(MPI.ANY_SOURCE, tag, status):
                    self.comm.Recv(got, status.Get_source(), tag)
                    heard.add(status.Get_source())
                    continue
            except MPI.Exception:
                pass
            time.sleep(0.001)
        return heard & set(peers)

    def _fail(self, what, how):
        """The fault protocol: every rank that still runs sends FAULT to all (a rank waiting in
        a collective joins in when it sees one), so those that send none within the grace
        period are the stopped or dead; each prints its line, and ranks exit only after every
        live one has printed (FAREWELL), or the launcher would kill them first."""
        others = [r for r in range(self.size) if r != self.rank]
        alive = self._exchange(FAULT, others)
        silent = [r for r in others if r not in alive]
        if silent:
            who = f"rank {silent[0]}" if len(silent) == 1 else "ranks " + ", ".join(map(str, silent))
            msg = f"{who} did not answer {how} while {what}: stopped or dead. Stopping."
        else:
            msg = f"a collective did not complete {how} while {what}, yet every rank answers. Stopping."
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.write(2, f"kgraph: error: rank {self.rank}: {msg}\n".encode())
        self._exchange(FAREWELL, sorted(alive))
        os._exit(1)

    def _allreduce(self, array, what, op=None):
        from mpi4py import MPI

        self._wait(self.comm.Iallreduce(MPI.IN_PLACE, array, op=op or MPI.SUM), what)

    def bcast(self, array, what):
        """Rank 0's `array` into every rank's, in place."""
        self._wait(self.comm.Ibcast(array, root=0), what)

    def broadcast(self):
        e = self.executable
        sizes = np.array([e.state.size], np.int64)
        self.bcast(sizes, "broadcasting the weights")
        if e.state.size != sizes[0]:
            e.state = np.zeros(int(sizes[0]), e.dtype)
        self.bcast(e.params, "broadcasting the weights")
        if e.state.size:
            self.bcast(e.state, "broadcasting the optimizer state")

    def drop_step(self, kind: str) -> None:
        self.executable.drop_step(kind)

    def train_step(self, xs, ys, sws, lr, step, kind="train") -> dict:
        """xs, ys, sws: the global batch (every rank reads the same data); each takes its shard.
        kind: the training step to run (one per input shape for unknown dimensions)."""
        n = len(xs[0])
        bounds = shard_bounds(n, self.size)
        a, b = bounds[self.rank]
        e = self.executable
        outs = {
            k: v.copy()
            for k, v in e.run(
                kind, [x[a:b] for x in xs], [y[a:b] for y in ys], [w[a:b] for w in sws], lr, step, part="grads"
            ).items()
        }
        if self.nccl is not None:  # in place on the device
            from .cuda_replicas import stream_handle

            e.scale_grads((b - a) / n)
            with e.on_device():
                self.nccl.allreduce(e.device_grads, e.device_grads, _nccl_sum(), stream=stream_handle(e.stream))
            self._wait_device("averaging gradients")
        else:  # a GPU's bucket through host memory (e.grads is its host copy)
            grads = e.grads
            grads *= e.dtype.type((b - a) / n)
            self._allreduce(grads, "averaging gradients")
        e.apply(lr, step, kind)
        ranges = _synced(e, kind)
        if ranges:  # one small collective for all the moving statistics
            packed = np.concatenate([e.params[lo:hi] for lo, hi in ranges])
            self._allreduce(packed, "averaging the moving statistics")
            packed /= self.size
            at = 0
            for lo, hi in ranges:
                e.params[lo:hi] = packed[at : at + hi - lo]
                at += hi - lo
        return self._gather(outs, bounds)

    def _gather(self, outs, bounds):
        """Every rank gets the whole batch's outputs, so metrics and logs agree everywhere."""
        sizes = [b - a for a, b in bounds]
        n, count = sum(sizes), sizes[self.rank]
        merged = {}
        for name in sorted(outs):
            if name == "loss" or name.startswith("loss:"):
                v = np.array([float(outs[name][0]) * count])
                self._allreduce(v, "averaging the loss")
                merged[name] = v / n
            else:
                mine = np.ascontiguousarray(outs[name])
                row = int(np.prod(mine.shape[1:], dtype=np.int64))
                whole = np.empty((n, *mine.shape[1:]), mine.dtype)
                counts = [s * row for s in sizes]
                displs = [a * row for a, _ in bounds]
                self._wait(self.comm.Iallgatherv(mine, [whole, (counts, displs)]), f"gathering the outputs ({name})")
                merged[name] = whole
        return merged

    def check_identical(self):
        from mpi4py import MPI

        e = self.executable
        params = e.copy_of("params") if hasattr(e, "copy_of") else e.params
        digest = np.array([float(np.sum(params, dtype=np.float64))])
        low, high = digest.copy(), digest.copy()
        self._allreduce(low, "comparing the replicas' weights", MPI.MIN)
        self._allreduce(high, "comparing the replicas' weights", MPI.MAX)
        if low[0] != high[0]:
            raise ReplicaError(f"rank {self.rank}: the replicas' weights differ")
