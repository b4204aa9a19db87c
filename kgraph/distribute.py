"""Data-parallel training with the semantics of Keras's MirroredStrategy and of Horovod.

    strategy = kgraph.distribute.MirroredStrategy(devices=["cpu:0", "cpu:1"])
    with strategy.scope():
        model = kgraph.models.load_model("model.json")
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=256)   # the global batch, split across the replicas

The batch given to fit is the global batch; each replica trains on an equal shard (sizes differ
by at most one sample) and the gradients are averaged weighted by shard size, so N replicas make
the same update as one replica on the whole batch. Losses and metrics are global means. A final
batch with fewer samples than replicas is skipped. Evaluation and prediction run on replica 0."""

from __future__ import annotations

import contextlib

import numpy as np

_STACK: list = []


class Strategy:
    num_replicas_in_sync = 1

    @contextlib.contextmanager
    def scope(self):
        """Models created (or compiled) inside train with this strategy."""
        _STACK.append(self)
        try:
            yield self
        finally:
            _STACK.pop()

    def attach(self, model) -> None:
        """Give a compiled model its replicas (the default strategy has one: none to add)."""
        model.replicas = None


def get_strategy():
    """The strategy of the innermost scope, or None."""
    return _STACK[-1] if _STACK else None


class MirroredStrategy(Strategy):
    """In-process replicas, one thread each. devices: ["cpu:0", "cpu:1", ...]; by default the
    local GPUs, and without any one CPU replica (as Keras)."""

    def __init__(self, devices=None):
        devices = list(devices) if devices else ["cpu:0"]
        bad = [d for d in devices if not str(d).lower().startswith(("cpu", "/cpu", "/job"))]
        if bad:
            raise ValueError(f"devices {bad} are not available: this build trains on CPUs (use 'cpu:N')")
        self.devices = devices
        self.num_replicas_in_sync = len(devices)

    def attach(self, model) -> None:
        from .runtime.replicas import ThreadReplicas

        model.replicas = (
            ThreadReplicas(model.executable, self.num_replicas_in_sync, model.seed)
            if self.num_replicas_in_sync > 1
            else None
        )


class MPIStrategy(Strategy):
    """One replica per MPI process (mpi4py), across processes and machines:

        mpirun -n 4 kgraph train model.json --data train.npz --strategy mpi

    Rank 0's initial weights are broadcast; only rank 0 prints progress and writes files."""

    def __init__(self, comm=None, timeout: float | None = None):
        try:
            import mpi4py  # noqa: F401
        except ImportError:
            raise ImportError("MPIStrategy needs mpi4py and an MPI: pip install 'kgraph[mpi]'") from None
        from .runtime.replicas import replica_timeout, start_mpi

        self.timeout = replica_timeout(timeout)
        MPI = start_mpi(self.timeout)  # within the timeout, or this process ends with one line
        self.comm = comm or MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.num_replicas_in_sync = self.comm.Get_size()

    def attach(self, model) -> None:
        from .runtime.replicas import MPIReplicas

        model.replicas = MPIReplicas(model.executable, self.comm, self.timeout)
        seed = np.array([np.random.SeedSequence().entropy % (2**63) if model.seed is None else model.seed], np.int64)
        model.replicas.bcast(seed, "sharing the shuffling seed")  # every rank shuffles the data the same way
        model.shuffle_random = np.random.default_rng(int(seed[0]))
        model.is_chief = self.rank == 0
