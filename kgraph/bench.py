"""Side-by-side training benchmarks: the same Keras config, data, batch size and optimizer in
kgraph, TensorFlow (`model_from_json` + `fit`) and an equivalent PyTorch eager loop.

Each measurement runs in its own process (so peak memory is that framework's alone), and
`compare` alternates the frameworks (A B A B) and reports medians."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

FRAMEWORKS = ("kgraph", "tensorflow", "torch")


def make_data(config, n, n_out, loss, seed=0, vocab=None):
    """Normal inputs, or word ids below `vocab` (a text model's)."""
    from .frontend import build_model

    fm = build_model(config, seed=seed)
    rs = np.random.RandomState(seed)
    xs = [
        rs.randint(0, vocab, (n, *i.shape[1:])).astype(np.int32) if vocab else _normal_float32(rs, (n, *i.shape[1:]))
        for i in fm.inputs
    ]
    if loss == "sparse_categorical_crossentropy":
        y = rs.randint(0, n_out, n).astype(np.int32)
    else:
        y = _normal_float32(rs, (n, n_out))
    return xs, y


def _normal_float32(rs, shape, rows=4096):
    """rs.standard_normal(shape).astype(np.float32), the same numbers, drawn a few rows at a time:
    the whole float64 draw would double the data for a moment and count in the peak RSS."""
    out = np.empty(shape, np.float32)
    for r in range(0, shape[0], rows):
        out[r : r + rows] = rs.standard_normal((min(rows, shape[0] - r), *shape[1:]))
    return out


class _EpochTimer:
    """Wall time of each epoch (`times`) and its (user, system) CPU seconds (`cpu`), from the
    framework's own callback hooks."""

    def __init__(self):
        self.times, self.cpu, self._start = [], [], None

    @staticmethod
    def _now():
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter(), usage.ru_utime, usage.ru_stime

    def begin(self, *args, **kwargs):
        self._start = self._now()

    def end(self, *args, **kwargs):
        wall, user, system = (b - a for a, b in zip(self._start, self._now()))
        self.times.append(wall)
        self.cpu.append((user, system))


def _keras_like_run(spec, xs, y, epochs, model, compile_model, lambda_callback, t0, settle=lambda: None, dataset=None):
    """The same measurement for kgraph and TensorFlow, which share Keras's API: the first step
    (compilation included), then timed epochs of predict or fit. settle: what to wait for between
    the two (kgraph's background compilation of a new step: the epochs time the compiled step).
    With spec["feed"] == "dataset", fit reads dataset(x, y, batch, shuffle) (kgraph.data's or
    tf.data's from_tensor_slices(...)[.shuffle(1000, seed=0)].batch(batch)) instead of the arrays;
    spec["shuffle"] shuffles either feed (the arrays with fit's shuffle=True)."""
    b, timer = spec["batch"], _EpochTimer()
    if spec.get("predict"):
        model.predict([x[:b] for x in xs], batch_size=b, verbose=0)
        first = time.perf_counter() - t0
        settle()
        for _ in range(epochs):
            timer.begin()
            model.predict(xs, batch_size=b, verbose=0)
            timer.end()
        return first, timer, float("nan")
    compile_model()
    model.train_on_batch([x[:b] for x in xs], y[:b])
    first = time.perf_counter() - t0
    if not epochs:
        return first, timer, float("nan")
    settle()
    cb = lambda_callback(on_epoch_begin=timer.begin, on_epoch_end=timer.end)
    if spec.get("feed") == "dataset":
        data = dataset(tuple(xs) if len(xs) > 1 else xs[0], y, b, bool(spec.get("shuffle")))
        hist = model.fit(data, epochs=epochs, verbose=0, callbacks=[cb])
    else:
        shuffle = bool(spec.get("shuffle"))
        hist = model.fit(xs, y, batch_size=b, epochs=epochs, verbose=0, callbacks=[cb], shuffle=shuffle)
    return first, timer, hist.history["loss"][-1]


def run_kgraph(spec, xs, y, epochs):
    from . import callbacks, data, models, optimizers

    config = spec["config"]
    if spec.get("new_model"):  # a name no earlier run used: its generated step is not in the cache
        config = {**config, "config": {**config["config"], "name": f"{config['config']['name']}_{uuid.uuid4().hex}"}}
    t0 = time.perf_counter()
    model = models.model_from_config(config, seed=0)
    opt = optimizers.get(spec["optimizer"][0])
    opt.learning_rate = spec["optimizer"][1]
    try:
        return _keras_like_run(
            spec,
            xs,
            y,
            epochs,
            model,
            lambda: model.compile(optimizer=opt, loss=spec["loss"]),
            callbacks.LambdaCallback,
            t0,
            settle=lambda: model.executable.compiler.wait(),
            dataset=lambda x, y, b, shuffle: (
                _shuffled(data.Dataset.from_tensor_slices((x, y)), shuffle).batch(b).prefetch(data.AUTOTUNE)
            ),
        )
    finally:
        if spec.get("new_model"):  # leave no file or compiling child of a one-off name behind
            model.executable.compiler.stop()
            for m in model.executable.steps.values():
                Path(m.module).unlink(missing_ok=True)


def run_tensorflow(spec, xs, y, epochs):
    import keras

    t0 = time.perf_counter()
    model = keras.models.model_from_json(json.dumps(spec["config"]))
    opt = keras.optimizers.get({"class_name": spec["optimizer"][0], "config": {"learning_rate": spec["optimizer"][1]}})
    return _keras_like_run(
        spec,
        xs,
        y,
        epochs,
        model,
        lambda: model.compile(optimizer=opt, loss=spec["loss"]),
        keras.callbacks.LambdaCallback,
        t0,
        dataset=_tf_dataset,
    )


def _tf_dataset(x, y, batch, shuffle):
    import tensorflow as tf

    return _shuffled(tf.data.Dataset.from_tensor_slices((x, y)), shuffle).batch(batch).prefetch(tf.data.AUTOTUNE)


def _shuffled(dataset, shuffle):
    """The Keras guide's shuffle before batch (a buffer of 1000), where the feed is shuffled."""
    return dataset.shuffle(1000, seed=0) if shuffle else dataset


def run_torch(spec, xs, y, epochs):
    """An eager PyTorch loop over the same forward graph (kgraph's IR evaluated with torch ops)."""
    import torch

    from .frontend import build_model

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    fm = build_model(spec["config"], seed=0)
    graph = fm.lower(training=False)
    params = {w.node: torch.tensor(w.value, requires_grad=True) for w in fm.weights}
    ops = {
        "matmul": torch.matmul,
        "add": torch.add,
        "relu": torch.relu,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "softmax": lambda v, axis=-1: torch.softmax(v, axis),
        "reshape": lambda v, shape: v.reshape([-1 if d == "B" else d for d in shape]),
        "im2col": _torch_im2col,
        "pool2d": _torch_pool2d,
        "gather": lambda table, ids: table[ids.long()],
        "slice": lambda v, axis, start, stop: v.narrow(axis, start, stop - start),
        "rnn_sequence": _torch_rnn,
    }
    out_id = graph.outputs["output:0"]
    logits_of_softmax = graph.node(out_id).op == "softmax" and spec["loss"] == "sparse_categorical_crossentropy"

    def forward(inputs):
        env = dict(params)
        env.update(zip([i.node for i in fm.inputs], inputs))
        for node in graph.nodes():
            if node.is_source:
                continue
            if node.id == out_id and logits_of_softmax:
                return env[node.inputs[0]]  # cross_entropy takes the logits
            env[node.id] = ops[node.op](*[env[i] for i in node.inputs], **node.semantic_attrs())
        return env[out_id]

    if any(layer["class_name"] == "Conv2D" for layer in spec["config"]["config"]["layers"]):
        params, forward = _torch_cnn(spec["config"], fm)  # torch's own conv2d and batch_norm
    tx = [torch.from_numpy(x) for x in xs]
    timer = _EpochTimer()
    b = spec["batch"]
    if spec.get("predict"):
        with torch.no_grad():
            forward([x[:b] for x in tx])
            first = time.perf_counter() - t0
            for _ in range(epochs):
                timer.begin()
                for s in range(0, len(tx[0]), b):
                    forward([x[s : s + b] for x in tx])
                timer.end()
        return first, timer, float("nan")
    ty = torch.from_numpy(y).long() if logits_of_softmax else torch.from_numpy(y)
    name, lr = spec["optimizer"]
    opt = (
        torch.optim.Adam(params.values(), lr=lr, eps=1e-7)
        if name == "adam"
        else torch.optim.SGD(params.values(), lr=lr)
    )
    loss_fn = torch.nn.functional.cross_entropy if logits_of_softmax else torch.nn.functional.mse_loss

    def step(s):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(forward([x[s : s + b] for x in tx]), ty[s : s + b])
        loss.backward()
        opt.step()
        return loss

    step(0)
    first = time.perf_counter() - t0
    for _ in range(epochs):
        timer.begin()
        total = 0.0
        for s in range(0, len(tx[0]), b):
            total += float(step(s).detach())
        timer.end()
    return first, timer, total / (len(tx[0]) // b)


def _torch_cnn(config, fm):
    """(params, forward) of a Sequential CNN as a PyTorch user writes it: F.conv2d (oneDNN's
    convolutions) on channels-last images, F.batch_norm in training mode, F.max_pool2d, Linear
    maths; the weights are kgraph's initial ones. forward takes [NHWC images] and returns the
    logits of a softmax output."""
    import torch
    import torch.nn.functional as F

    values = {w.node: w.value for w in fm.weights}
    params = {}

    def param(name, value, grad=True):
        params[name] = torch.tensor(np.ascontiguousarray(value), requires_grad=grad)
        return params[name]

    layers = []
    for layer in config["config"]["layers"][1:]:
        cls, c = layer["class_name"], layer["config"]
        name = c["name"]
        if cls == "Conv2D":
            kernel = param(f"{name}_kernel", values[f"{name}_kernel"].transpose(3, 2, 0, 1))
            bias = param(f"{name}_bias", values[f"{name}_bias"]) if c.get("use_bias", True) else None
            padding = "same" if c.get("padding") == "same" else 0
            layers.append((cls, kernel, bias, tuple(c.get("strides", (1, 1))), padding, c.get("activation")))
        elif cls == "BatchNormalization":
            stats = [param(f"{name}_{k}", values[f"{name}_{k}"], False) for k in ("moving_mean", "moving_variance")]
            affine = [param(f"{name}_{k}", values[f"{name}_{k}"]) for k in ("gamma", "beta")]
            layers.append((cls, *stats, *affine, 1 - c.get("momentum", 0.99), c.get("epsilon", 1e-3)))
        elif cls == "Dense":
            kernel, bias = (
                param(f"{name}_kernel", values[f"{name}_kernel"]),
                param(f"{name}_bias", values[f"{name}_bias"]),
            )
            layers.append((cls, kernel, bias, c.get("activation")))
        elif cls == "MaxPooling2D":
            layers.append((cls, tuple(c["pool_size"]), tuple(c.get("strides") or c["pool_size"])))
        elif cls in ("Activation", "Flatten"):
            layers.append((cls, c.get("activation")))
        else:
            raise NotImplementedError(f"the PyTorch CNN runner has no {cls}")

    def act(x, name, last):
        if name == "relu":
            return torch.relu(x)
        if name == "softmax" and not last:
            return torch.softmax(x, -1)
        return x  # linear, or the output's softmax, which cross_entropy takes as logits

    def forward(inputs):
        x = inputs[0].permute(0, 3, 1, 2)  # NCHW view of the NHWC images (channels-last memory)
        for k, (cls, *a) in enumerate(layers):
            last = k == len(layers) - 1
            if cls == "Conv2D":
                x = act(F.conv2d(x, a[0], a[1], stride=a[2], padding=a[3]), a[4], last)
            elif cls == "BatchNormalization":
                x = F.batch_norm(x, a[0], a[1], a[2], a[3], training=True, momentum=a[4], eps=a[5])
            elif cls == "MaxPooling2D":
                x = F.max_pool2d(x, a[0], a[1])
            elif cls == "Activation":
                x = act(x, a[0], last)
            elif cls == "Flatten":
                x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)  # Keras flattens NHWC
            else:
                x = act(x @ a[0] + a[1], a[2], last)
        return x

    return {k: p for k, p in params.items() if p.requires_grad}, forward


def _torch_rnn(xp, u, *rb, cell, activation, recurrent_activation, go_backwards, reset_after=True, **flags):
    """kgraph's rnn_sequence of a plain LSTM, or GRU with reset_after (Keras 3's; rb its recurrent
    bias), with tanh and sigmoid and no mask, dropout or initial state, step by step as PyTorch
    eager runs a custom cell: every step's h (an LSTM's, then every step's c)."""
    import torch

    flags.pop("recurrent_bias", None)
    if (
        cell not in ("lstm", "gru")
        or (activation, recurrent_activation) != ("tanh", "sigmoid")
        or go_backwards
        or not reset_after
        or any(flags.values())
    ):
        raise NotImplementedError("the PyTorch runner has the plain LSTM and GRU (reset_after) only")
    h = xp.new_zeros(xp.shape[0], u.shape[0])
    c, hs, cs = h, [], []
    for t in range(xp.shape[1]):
        if cell == "lstm":
            i, f, g, o = (xp[:, t] + h @ u).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            cs.append(c)
        else:
            xz, xr, xh = xp[:, t].chunk(3, 1)
            rz, rr, rh = (h @ u + rb[0] if rb else h @ u).chunk(3, 1)
            z = torch.sigmoid(xz + rz)
            h = z * h + (1 - z) * torch.tanh(xh + torch.sigmoid(xr + rr) * rh)
        hs.append(h)
    return torch.cat([torch.stack(hs, 1), torch.stack(cs, 1)], 2) if cell == "lstm" else torch.stack(hs, 1)


def _torch_im2col(x, kernel, strides, dilation, pads):
    """kgraph's NHWC im2col (patch features ordered (i, j, c)) with torch's unfold."""
    import torch.nn.functional as F

    b, h, w, c = x.shape
    pt, pb, pl, pr = pads
    xp = F.pad(x.permute(0, 3, 1, 2), (pl, pr, pt, pb))
    cols = F.unfold(xp, kernel, dilation=dilation, stride=strides)  # (B, C*kh*kw, L)
    oh = (h + pt + pb - dilation[0] * (kernel[0] - 1) - 1) // strides[0] + 1
    ow = (w + pl + pr - dilation[1] * (kernel[1] - 1) - 1) // strides[1] + 1
    cols = cols.reshape(b, c, kernel[0], kernel[1], oh, ow).permute(0, 4, 5, 2, 3, 1)
    return cols.reshape(b, oh, ow, -1)


def _torch_pool2d(x, mode, pool, strides, pads):
    import torch.nn.functional as F

    if any(pads):
        raise NotImplementedError("the PyTorch peer pools without padding only")
    y = (F.max_pool2d if mode == "max" else F.avg_pool2d)(x.permute(0, 3, 1, 2), pool, strides)
    return y.permute(0, 2, 3, 1)


RUNNERS = {"kgraph": run_kgraph, "tensorflow": run_tensorflow, "torch": run_torch}


# what each framework imports before its first model: its own setup, timed apart from the first step
IMPORTS = {"kgraph": "kgraph.models", "tensorflow": "keras", "torch": "torch"}


def measure(framework, spec, epochs):
    """One run in this process: first-step time, samples/s per epoch (the first excluded when
    there are several), the final loss and the peak RSS."""
    n = spec["batch"] * spec["steps"]
    xs, y = make_data(spec["config"], n, spec["n_out"], spec["loss"], vocab=spec.get("vocab"))
    first, timer, loss = RUNNERS[framework](spec, xs, y, epochs)
    if spec.get("short"):  # a short run: samples/s over every epoch, the first (its decisions) included
        wall, cpu = sum(timer.times), sum(u + s for u, s in timer.cpu)
        rates = [n * len(timer.times) / wall] if wall else [float("nan")]
        cpu_rates = [n * len(timer.cpu) / cpu] if cpu else [float("nan")]
    else:
        skip = 1 if len(timer.times) > 1 else 0
        rates = [n / t for t in timer.times[skip:]] or [float("nan")]
        # per CPU second (user + system, every thread): what a shared machine's load cannot inflate
        cpu_rates = [n / (u + s) for u, s in timer.cpu[skip:] if u + s > 0] or [float("nan")]
    return {
        "framework": framework,
        "first_step_s": first,
        "samples_per_s": statistics.median(rates),
        "epoch_rates": rates,
        "samples_per_cpu_s": statistics.median(cpu_rates),
        "final_loss": loss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def measure_import(framework, python=sys.executable, env=None) -> float:
    """Seconds the framework's import takes in a fresh process that has imported NumPy (in a
    process of its own: a measurement that imported it first ran TensorFlow's fit slower)."""
    code = (
        "import importlib, time, numpy; t = time.perf_counter(); "
        f"importlib.import_module({IMPORTS[framework]!r}); print(time.perf_counter() - t)"
    )
    r = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(f"importing {framework} failed:\n{r.stderr[-2000:]}")
    return float(r.stdout.split()[-1])


def measure_in_subprocess(framework, spec, epochs, python=sys.executable, env=None):
    code = (
        "import json, sys; from kgraph.bench import measure; "
        "spec = json.loads(sys.stdin.read()); "
        f"print('KGRAPH-BENCH ' + json.dumps(measure({framework!r}, spec, {epochs})))"
    )
    r = subprocess.run([python, "-c", code], input=json.dumps(spec), capture_output=True, text=True, env=env)
    for line in r.stdout.splitlines():
        if line.startswith("KGRAPH-BENCH "):
            return json.loads(line[len("KGRAPH-BENCH ") :])
    raise RuntimeError(f"{framework} benchmark failed:\n{r.stderr[-2000:]}")


def compare(spec, frameworks=FRAMEWORKS, repeats=3, epochs=3, env=None):
    """Alternate the frameworks `repeats` times; medians of each metric per framework. kgraph's
    first step is also measured for a model whose step was never compiled ("first_step_new_s":
    its kernels come from the cache, as after any earlier model) and once on an empty cache
    ("first_step_cold_s", a fresh install's); the peers compile every run."""
    runs = {f: [] for f in frameworks}
    new, cold = [], None
    for _ in range(repeats):
        for f in frameworks:
            runs[f].append({**measure_in_subprocess(f, spec, epochs, env=env), "import_s": measure_import(f, env=env)})
            if f == "kgraph":
                new.append(measure_in_subprocess(f, {**spec, "new_model": True}, 0, env=env)["first_step_s"])
                cold = cold if cold is not None else cold_first_step(spec, env)
    summary = {}
    for f, rs in runs.items():
        summary[f] = {
            k: statistics.median(r[k] for r in rs)
            for k in ("import_s", "first_step_s", "samples_per_s", "final_loss", "peak_rss_mb")
        }
        summary[f]["first_step_new_s"] = statistics.median(new) if f == "kgraph" else summary[f]["first_step_s"]
        summary[f]["first_step_cold_s"] = cold if f == "kgraph" else summary[f]["first_step_s"]
    return summary


def cold_first_step(spec, env=None) -> float:
    """kgraph's first step on an empty cache, in a fresh process (a fresh install's first run: its
    kernels and the step compile, and the thread tuner remembers nothing). Once a suite entry: it
    takes Numba's whole compile of the kernels."""
    with tempfile.TemporaryDirectory(prefix="kgraph-cold-") as tmp:
        fresh = dict(env or os.environ, NUMBA_CACHE_DIR=f"{tmp}/numba", KGRAPH_CACHE_DIR=f"{tmp}/kgraph")
        return measure_in_subprocess("kgraph", {**spec, "new_model": True}, 0, env=fresh)["first_step_s"]


def gemm_peak_gflops(n=1024, repeats=5) -> float:
    """The machine's float32 GEMM rate (NumPy sgemm), the ceiling for GEMM-bound training."""
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    np.dot(a, b)
    best = min(_timed(lambda: np.dot(a, b)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
