"""CUDA backend benchmarks, for a machine with an NVIDIA GPU, numba-cuda and PyTorch.

NO FIGURES EXIST YET: the backend was written and tested on a machine without a GPU (kernels in
Numba's CUDA simulator, PTX compiled for sm_90). Run this on a GPU and record the output in
benchmarks/RESULTS.md, naming the GPU, the driver and the package versions:

    python -m benchmarks.cuda_bench [--quick]

It measures, with medians of repeated CUDA-event timings after warm-up:
1. the fused dense forward + backward at 4096x4096 (batch 4096): kgraph's GEMM with its
   bias+ReLU epilogue, then the fused activation-gradient + bias-gradient kernel and the two
   backward GEMMs, against torch.mm doing the same maths with TF32 off (plain float32);
2. MLP training (784-2048-2048-10, Adam, sparse cross-entropy) in samples/s at batch 256 and
   1024: kgraph's CUDA step against PyTorch eager float32;
3. kernel launches per training step, and the host overhead per step: wall time of a step
   minus the GPU time its stream took (CUDA events), i.e. what Python and Numba's launches cost;
4. the same for the suite's recurrent text classifiers (LSTM and GRU, 80 steps, 128 units): the
   host walks the time steps, a few launches each, so the overhead is what to watch there.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks.models import SUITE, sequential


def _median_ms(fn, repeats, events):
    """Median GPU milliseconds of fn() between two CUDA events on the default stream (after a
    warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start, stop = events()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def dense_forward_backward(n=4096, repeats=10):
    """GFLOP/s of a dense layer's forward (x@w + b, relu) and backward (dx, dw, db), n^3 each."""
    import torch
    from numba import cuda

    from kgraph.kernels import cuda as K

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rs = np.random.RandomState(0)
    x, w, g = (rs.randn(n, n).astype(np.float32) for _ in range(3))
    b = rs.randn(n).astype(np.float32)
    stream = cuda.default_stream()  # where the timing events are recorded

    @cuda.jit(device=True)
    def bias_relu(acc, bias, j):
        return K.maximum(acc + bias[j], np.float32(0))

    @cuda.jit(device=True)
    def relu_grad(gy, y):
        return gy if y > 0 else np.float32(0)

    d_x, d_w, d_g, d_b = (cuda.to_device(a) for a in (x, w, g, b))
    d_y, d_gz, d_dx, d_dw = (cuda.device_array((n, n), np.float32) for _ in range(4))
    d_db = cuda.device_array(n, np.float32)
    forward, back_x, back_w = (
        K.gemm(False, False, bias_relu),
        K.gemm(False, True, K.product),
        K.gemm(True, False, K.product),
    )
    fused_back = K.act_grad_bias(relu_grad)
    grid, block = K.gemm_grid(n, n), (K.THREADS_2D, K.THREADS_2D)

    def kgraph_step():
        forward[grid, block, stream](d_x, d_w, d_b, d_y)
        fused_back[K.bias_grad_grid(n), (K.BIAS_COLS, K.BIAS_ROWS), stream](d_g, d_y, d_gz, d_db)
        back_x[grid, block, stream](d_gz, d_w, d_dx, d_dx)
        back_w[grid, block, stream](d_x, d_gz, d_dw, d_dw)

    tx, tw, tg, tb = (torch.from_numpy(a).cuda() for a in (x, w, g, b))

    def torch_step():
        y = torch.relu(torch.addmm(tb, tx, tw))
        gz = tg * (y > 0)
        gz.sum(0)
        torch.mm(gz, tw.t())
        torch.mm(tx.t(), gz)

    def numba_events():
        return cuda.event(), cuda.event()

    def torch_events():
        return torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    flops = 3 * 2 * n**3
    ms_k = _median_ms(kgraph_step, repeats, numba_events)
    ms_t = _median_ms(torch_step, repeats, torch_events)
    print(
        f"dense fwd+bwd {n}x{n}x{n}: kgraph {ms_k:8.2f} ms ({flops / ms_k / 1e9:7.0f} GFLOP/s)   "
        f"torch.mm (no TF32) {ms_t:8.2f} ms ({flops / ms_t / 1e9:7.0f} GFLOP/s)   kgraph/torch time "
        f"{ms_k / ms_t:.2f}"
    )


MLP = [(2048, "relu"), (2048, "relu"), (10, "softmax")]


def _batches(batch, steps, seed=0):
    rs = np.random.RandomState(seed)
    return [(rs.rand(batch, 784).astype(np.float32), rs.randint(0, 10, batch).astype(np.int32)) for _ in range(steps)]


def _text_batches(spec, batch, steps, seed=0):
    """Word ids and labels for a recurrent suite model (benchmarks/models.py)."""
    rs = np.random.RandomState(seed)
    steps_in = spec["config"]["config"]["layers"][0]["config"]["batch_shape"][1]
    return [
        (rs.randint(0, spec["vocab"], (batch, steps_in)).astype(np.int32), rs.randint(0, 2, batch).astype(np.int32))
        for _ in range(steps)
    ]


def kgraph_training(batch, steps, config=None, data=None):
    """(samples/s, launches per step, host overhead per step in ms) of kgraph's CUDA step: the MLP,
    or `config` on `data` (a list of (x, y) batches)."""
    from numba import cuda

    import kgraph.models

    model = kgraph.models.model_from_config(config or sequential("mlp", 784, MLP), seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", device="cuda")
    data = data or _batches(batch, steps)
    model.train_on_batch(*data[0])  # compiles the kernels
    exe = model.executable
    start = time.perf_counter()
    for x, y in data:
        model.train_on_batch(x, y)
    wall = (time.perf_counter() - start) / steps
    begin, end = cuda.event(), cuda.event()  # GPU time of one step's stream
    gpu = []
    for x, y in data[:20]:
        begin.record(exe.stream)
        exe.run("train", [x], [y], lr=1e-3, step=2.0)
        end.record(exe.stream)
        end.synchronize()
        gpu.append(cuda.event_elapsed_time(begin, end) / 1e3)
    launches = exe.steps["train"].launches
    return batch / wall, launches, (wall - statistics.median(gpu)) * 1e3


def torch_training(batch, steps):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    layers, n_in = [], 784
    for units, _ in MLP[:-1]:
        layers += [torch.nn.Linear(n_in, units), torch.nn.ReLU()]
        n_in = units
    net = torch.nn.Sequential(*layers, torch.nn.Linear(n_in, MLP[-1][0])).cuda()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    data = [(torch.from_numpy(x).cuda(), torch.from_numpy(y).long().cuda()) for x, y in _batches(batch, steps)]

    def step(x, y):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        return loss.item()  # as kgraph's step, bring the loss back to the host

    step(*data[0])
    start = time.perf_counter()
    for x, y in data:
        step(x, y)
    return batch * steps / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
    args = p.parse_args()
    steps = 20 if args.quick else 200
    dense_forward_backward(repeats=3 if args.quick else 10)
    for batch in (256, 1024):
        rate, launches, overhead = kgraph_training(batch, steps)
        peer = torch_training(batch, steps)
        print(
            f"MLP 784-2048-2048-10 Adam b{batch}: kgraph {rate:9.0f} samples/s, torch eager {peer:9.0f} "
            f"samples/s ({rate / peer:.2f}x); {launches} launches/step, host overhead {overhead:.3f} ms/step"
        )
    for name in ("lstm_text_20k_e128_t80_u128_b32_adam", "gru_text_20k_e128_t80_u128_b32_adam"):
        spec = SUITE[name]
        data = _text_batches(spec, spec["batch"], steps // 4)
        rate, launches, overhead = kgraph_training(spec["batch"], len(data), spec["config"], data)
        print(f"{name}: kgraph {rate:9.0f} samples/s; {launches} launches/step, host overhead {overhead:.3f} ms/step")


if __name__ == "__main__":
    main()
