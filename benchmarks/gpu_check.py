"""The hardware checks of benchmarks/gpu_check.sh that are not pytest or cuda_bench: each prints
one line of figures (or FAIL and why). Run on a machine with an NVIDIA GPU:

    python -m benchmarks.gpu_check example     # the CUDA training of examples/digits_mlp.json = the CPU's
    python -m benchmarks.gpu_check nccl        # a 1-rank NCCL all-reduce of a real gradient bucket
    python -m benchmarks.gpu_check two_on_one  # 2 replicas on one GPU (host-staged) = 1 replica

None of them has run on hardware yet: they were written on a machine without a GPU."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parent.parent
EXAMPLE = str(ROOT / "examples" / "digits_mlp.json")


def _digits(n=None):
    """The digits' first n rows (all by default); GPU_CHECK_SMALL=1 takes 9 at most, for a smoke
    run of this script in the CUDA simulator."""
    import os

    from kgraph.datasets import digits

    (x, y), _ = digits.load_data()
    if os.environ.get("GPU_CHECK_SMALL") == "1":
        n = min(n or 9, 9)
    return (x, y) if n is None else (x[:n], y[:n])


def example():
    """One epoch of the example on the GPU and on the CPU from the same weights, no shuffling and
    dropout-free (rate 0 changes nothing else): the same losses and weights to 1e-4."""
    import kgraph.models

    config = _dropout_free()
    x, y = _digits()
    models, times = {}, {}
    for device in ("cpu", "cuda"):
        m = kgraph.models.model_from_config(config, seed=0)
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], device=device)
        start = time.perf_counter()
        h = m.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
        times[device] = time.perf_counter() - start
        models[device] = (m, h.history)
    (cpu, hc), (gpu, hg) = models["cpu"], models["cuda"]
    assert type(gpu.executable).__name__ == "CudaExecutable"
    np.testing.assert_allclose(hg["loss"], hc["loss"], rtol=1e-4)
    worst = max(float(np.max(np.abs(u - v))) for u, v in zip(cpu.get_weights(), gpu.get_weights()))
    for u, v in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_allclose(v, u, rtol=1e-3, atol=1e-4)
    print(
        f"example: 1 epoch Adam b64, loss cpu {hc['loss'][0]:.6f} cuda {hg['loss'][0]:.6f}, "
        f"max |weight difference| {worst:.2e}; seconds cpu {times['cpu']:.2f} cuda {times['cuda']:.2f} "
        "(first epoch: compiles included)"
    )


def _bucket_model(device_id=0):
    """The example compiled for CUDA, one 'grads' half run on a batch: its gradient bucket filled."""
    import kgraph.models

    m = kgraph.models.load_model(EXAMPLE, seed=0)
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", device="cuda")
    x, y = _digits(64)
    m.executable.run("train", [x], [y], lr=0.01, step=1.0, part="grads")
    return m


def nccl():
    """A 1-rank NCCL all-reduce (in place, SUM) of the example's real gradient bucket leaves it
    as it was, and kgraph's NcclAllReduce averager (scale by the shard's share, then the sum) with
    one replica on the whole batch too; then the 2-replica averaging on 2 GPUs where there are."""
    import nccl.core as nc
    from numba import cuda

    from kgraph.runtime.cuda_replicas import NcclAllReduce, stream_handle

    m = _bucket_model()
    e = m.executable
    before = e.copy_of("grads")
    assert np.abs(before).max() > 0
    (comm,) = nc.Communicator.init_all([0])
    start = time.perf_counter()
    comm.allreduce(e.device_grads, e.device_grads, nc.SUM, stream=stream_handle(e.stream))
    e.sync()
    took = time.perf_counter() - start
    assert np.array_equal(e.copy_of("grads"), before), "a 1-rank all-reduce changed the bucket"
    comm.destroy()
    averager = NcclAllReduce([0])
    averager.average([e], [64])
    e.sync()
    assert np.array_equal(e.copy_of("grads"), before)
    averager.close()
    line = f"nccl: 1-rank all-reduce of a {before.size}-float bucket in {took * 1e3:.3f} ms (first call), unchanged"
    if len(cuda.gpus) > 1:
        import kgraph.distribute
        import kgraph.models

        x, y = _digits(256)
        one = kgraph.models.load_model(EXAMPLE, seed=0)
        one.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", device="cuda")
        with kgraph.distribute.MirroredStrategy(["gpu:0", "gpu:1"], collective="nccl").scope():
            two = kgraph.models.load_model(EXAMPLE, seed=0)
            two.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        for _ in range(3):
            one.train_on_batch(x, y)
            two.train_on_batch(x, y)
        two.replicas.check_identical()
        for u, v in zip(one.get_weights(), two.get_weights()):
            np.testing.assert_allclose(v, u, rtol=1e-4, atol=1e-5)
        line += "; 2 GPUs through NCCL = 1 replica (3 SGD steps)"
    print(line)


def _dropout_free():
    """The example's config with dropout off: each replica draws its own masks."""
    import json

    config = json.loads(Path(EXAMPLE).read_text())
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "Dropout":
            layer["config"]["rate"] = 0.0
    return config


def two_on_one():
    """MirroredStrategy(["gpu:0", "gpu:0"]): two replicas sharing the GPU, averaged through
    pinned host memory, train as one replica on the whole batch (SGD and Adam, 6 steps of 255
    samples: shards 128 + 127) and stay identical; the milliseconds of a step either way."""
    import kgraph.distribute
    import kgraph.models

    x, y = _digits(255)
    for opt in ("sgd", "adam"):
        one = kgraph.models.model_from_config(_dropout_free(), seed=0)
        one.compile(optimizer=opt, loss="sparse_categorical_crossentropy", device="cuda")
        with kgraph.distribute.MirroredStrategy(["gpu:0", "gpu:0"]).scope():
            two = kgraph.models.model_from_config(_dropout_free(), seed=0)
            two.compile(optimizer=opt, loss="sparse_categorical_crossentropy")
        assert two.replicas.collective == "host" and two.replicas.num_replicas == 2
        losses, ms = {}, {}
        for name, m in (("one", one), ("two", two)):
            losses[name] = [m.train_on_batch(x, y)]  # the first step compiles
            start = time.perf_counter()
            losses[name] += [m.train_on_batch(x, y) for _ in range(5)]
            ms[name] = (time.perf_counter() - start) / 5 * 1e3
        np.testing.assert_allclose(losses["two"], losses["one"], rtol=1e-5)
        for u, v in zip(one.get_weights(), two.get_weights()):
            np.testing.assert_allclose(v, u, rtol=1e-4, atol=1e-6)
        two.replicas.check_identical()
        print(
            f"two_on_one {opt}: 2 replicas on GPU 0 (host-staged) = 1 replica over 6 steps, identical; "
            f"ms/step one replica {ms['one']:.2f}, two {ms['two']:.2f}"
        )


if __name__ == "__main__":
    {"example": example, "nccl": nccl, "two_on_one": two_on_one}[sys.argv[1]]()
