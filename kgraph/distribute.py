"""Data-parallel training with the semantics of Keras's MirroredStrategy and of Horovod.

    strategy = kgraph.distribute.MirroredStrategy(devices=["cpu:0", "cpu:1"])
    with strategy.scope():
        model = kgraph.models.load_model("model.json")
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=256)   # the global batch, split across the replicas

The batch given to fit is the global batch; each replica trains on an equal shard (sizes differ
by at most one sample) and the gradients are averaged weighted by shard size, so N replicas make
the same update as one replica on the whole batch. Losses and metrics are global means. A final
batch with fewer samples than replicas is skipped. Evaluation and prediction run on replica 0.

On GPUs (`MirroredStrategy()` takes every local GPU; `devices=["gpu:0", "gpu:1"]`, "/gpu:0" or
"cuda:0" pick them) each replica is a CUDA executable on its GPU, and the gradient bucket is
averaged by NCCL or through pinned host memory (kgraph/runtime/cuda_replicas.py)."""

from __future__ import annotations

import contextlib
import os
import re

import numpy as np

_STACK: list = []


def parse_device(spec) -> tuple:
    """("cpu" | "gpu", index) of a device name as Keras and PyTorch write them: "cpu:0", "/cpu:0",
    "gpu:1", "/gpu:1", "cuda:1", "/device:GPU:1", "/job:localhost/replica:0/task:0/device:GPU:1"."""
    s = str(spec).strip().lower()
    m = re.search(r"(?:^|/|device:)(cpu|gpu|cuda):(\d+)$", s)
    if m:
        return ("cpu" if m.group(1) == "cpu" else "gpu", int(m.group(2)))
    if s.startswith(("cpu", "/cpu", "/job")) and "gpu" not in s:
        return ("cpu", 0)
    raise ValueError(f"unknown device {spec!r}: use 'cpu:N', 'gpu:N' (also '/gpu:N', 'cuda:N')")


def local_gpus() -> int:
    """The local GPUs numba sees (the simulator's one, under NUMBA_ENABLE_CUDASIM=1); 0 without
    a driver, asked without importing numba.cuda where no NVIDIA device file exists."""
    from .models import _cuda_available

    if not _cuda_available():
        return 0
    from numba import cuda

    return len(cuda.gpus)


def gpu_ids(indices: list, available: int, simulator: bool) -> list:
    """numba's device id for each requested GPU index. In the simulator every index names its one
    simulated device, so any number of "GPUs" share it (as two replicas may share a real GPU)."""
    if simulator:
        return [0 for _ in indices]
    missing = [f"gpu:{i}" for i in indices if i >= available]
    if missing:
        have = (
            f"{available} GPU{'s' if available != 1 else ''}"
            if available
            else "no GPU (numba.cuda.is_available() is False)"
        )
        raise ValueError(f"devices {missing} are not available: this machine has {have}")
    return list(indices)


def _local_rank() -> int | None:
    """This process's rank among those of its machine, as the MPI launcher (or Slurm) tells it."""
    for name in (
        "OMPI_COMM_WORLD_LOCAL_RANK",
        "MPI_LOCALRANKID",
        "MV2_COMM_WORLD_LOCAL_RANK",
        "PMI_LOCAL_RANK",
        "PMIX_LOCAL_RANK",
        "SLURM_LOCALID",
    ):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None


class Strategy:
    num_replicas_in_sync = 1
    device = None  # where the replicas run ("cpu" or "cuda"); None: wherever compile() says

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
    """In-process replicas. devices: ["cpu:0", "cpu:1", ...] (one thread each) or ["gpu:0",
    "gpu:1", ...] (also "/gpu:0", "cuda:0": a CUDA executable each, a GPU may be named twice);
    by default every local GPU, and without any one CPU replica (as Keras). collective (GPUs):
    "auto", "nccl" or "host" (kgraph/runtime/cuda_replicas.py)."""

    def __init__(self, devices=None, collective: str | None = None):
        if devices:
            devices = list(devices)
        else:
            count = local_gpus()
            devices = [f"gpu:{i}" for i in range(count)] if count else ["cpu:0"]
        parsed = [parse_device(d) for d in devices]
        kinds = {kind for kind, _ in parsed}
        if len(kinds) > 1:
            raise ValueError(f"devices {devices} mix CPUs and GPUs: a strategy's replicas all run on one kind")
        self.devices = devices
        self.device = "cuda" if kinds == {"gpu"} else "cpu"
        self.collective = collective
        if self.device == "cuda":
            from numba import config

            simulator = bool(config.ENABLE_CUDASIM)
            self.gpus = gpu_ids([i for _, i in parsed], 1 if simulator else local_gpus(), simulator)
        else:
            self.gpus = []
        self.num_replicas_in_sync = len(devices)

    @property
    def gpu(self) -> int:
        """The GPU of replica 0 (the model's own executable)."""
        return self.gpus[0]

    def attach(self, model) -> None:
        if self.num_replicas_in_sync == 1:
            model.replicas = None
        elif self.device == "cuda":
            from .runtime.cuda_replicas import CudaReplicas

            model.replicas = CudaReplicas(model.executable, self.gpus, model.seed, self.collective)
        else:
            from .runtime.replicas import ThreadReplicas

            model.replicas = ThreadReplicas(model.executable, self.num_replicas_in_sync, model.seed)


class MPIStrategy(Strategy):
    """One replica per MPI process (mpi4py), across processes and machines:

        mpirun -n 4 kgraph train model.json --data train.npz --strategy mpi
        mpirun -n 8 --hostfile hosts kgraph train model.json --strategy mpi --device cuda

    Rank 0's initial weights are broadcast; only rank 0 prints progress and writes files.
    device "cuda" (or "auto" where a GPU is): each rank trains on one GPU, its rank among the
    ranks of its machine (the launcher's local rank) picking it, and the gradient bucket is
    all-reduced by NCCL (its communicator's unique id broadcast by rank 0 over MPI), or staged
    through host memory over MPI where NCCL cannot serve (collective: "auto", "nccl", "host")."""

    def __init__(self, comm=None, timeout: float | None = None, device: str = "cpu", collective: str | None = None):
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda'")
        try:
            import mpi4py  # noqa: F401
        except ImportError:
            raise ImportError("MPIStrategy needs mpi4py and an MPI: pip install 'kgraph[mpi]'") from None
        from .runtime.replicas import replica_timeout, start_mpi

        count = local_gpus() if device != "cpu" else 0
        if device == "cuda" and not count:
            raise RuntimeError("device='cuda': no CUDA GPU is available (numba.cuda.is_available() is False)")
        self.timeout = replica_timeout(timeout)
        MPI = start_mpi(self.timeout)  # within the timeout, or this process ends with one line
        self.comm = comm or MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.num_replicas_in_sync = self.comm.Get_size()
        self.device = "cuda" if count else "cpu"
        self.collective = collective
        local = _local_rank()
        self.gpu = (self.rank if local is None else local) % count if count else 0
        self.devices = [f"gpu:{self.gpu}" if count else "cpu:0"]

    def attach(self, model) -> None:
        from .runtime.replicas import MPIReplicas

        model.replicas = MPIReplicas(model.executable, self.comm, self.timeout, self.collective)
        seed = np.array([np.random.SeedSequence().entropy % (2**63) if model.seed is None else model.seed], np.int64)
        model.replicas.bcast(seed, "sharing the shuffling seed")  # every rank shuffles the data the same way
        model.shuffle_random = np.random.default_rng(int(seed[0]))
        model.is_chief = self.rank == 0
