"""The generated Numba step against the NumPy interpreter on the same compiled graph: one training
step of every zoo model (all layers and activations) must give the same loss, outputs and weights."""

import json
from pathlib import Path

import numpy as np
import pytest

import ir
from kgraph.codegen import generate_cpu, step_manifest
from kgraph.frontend import build_model
from kgraph.passes import run_pipeline, split
from kgraph.runtime.executable import Executable
from kgraph.runtime.loader import write_source
from source_checks import array_slice_assignments

CONFIGS = Path(__file__).parent / "fixtures" / "configs"
ARCHS = [
    "seq_mlp",
    "seq_shapes",
    "two_input_concat",
    "residual_add",
    "shared_layer",
    "nested",
    "merges",
    "multi_output",
    "activations",
    "conv2d",
    "conv_layers",
    "norm_embed",
    "noise_layers",
    "preprocess",
]
VOCABULARY = {"norm_embed": 11}  # models whose input is token ids


def _compile(fm, kind, optimizer, parts=1):
    graph = fm.lower(training=kind == "train")
    n_out = len(fm.output_names)
    losses = [{"name": "mean_squared_error"}] * n_out
    if fm.name == "activations":  # its layers form one chain: a loss on the last covers every gradient
        losses = [None] * (n_out - 1) + losses[-1:]
    regs = [(w.node, w.regularizer.get("l1", 0.0), w.regularizer.get("l2", 0.0)) for w in fm.weights if w.regularizer]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(split, "MIN_WEIGHT", 0)  # the zoo's weights are tiny: split them all the same
        compiled = run_pipeline(
            kind,
            graph,
            [w.node for w in fm.weights],
            losses=losses,
            regularizers=regs,
            optimizer=optimizer,
            debug=True,
            trainable=[w.node for w in fm.weights if w.trainable],
            parts=parts,
        )
    path = write_source(generate_cpu(compiled), f"test_{fm.name}_{kind}")
    return compiled, step_manifest(compiled, path)


def _feeds(compiled, exe, inputs, labels, manifest, lr, step):
    feeds = {}
    for p in exe.param_layout:
        feeds[p["node"]] = exe.param_view(p).copy()
    for s in manifest.state:
        feeds[s.node] = manifest.state_view(exe.state, s).copy()
    for nid, x in zip(manifest.inputs, inputs):
        feeds[nid] = x
    for spec, y in zip(manifest.labels, labels):
        feeds[spec.id] = y
    for spec, y in zip(manifest.sample_weights, labels):  # the step weighs every sample 1 when given none
        feeds[spec.id] = np.ones([len(y) if d == "B" else d for d in spec.shape], np.float32)
    feeds["lr"], feeds["step"] = np.float32(lr), float(step)
    return {k: v for k, v in feeds.items() if k in compiled.graph}


# every update kernel, with each clipping and the weight decay somewhere
OPTIMIZERS = [
    ("sgd", {"momentum": 0.9, "nesterov": True, "clipnorm": 0.05}),
    ("adam", {"amsgrad": True, "weight_decay": 0.1, "global_clipnorm": 0.05}),
    ("rmsprop", {"centered": True, "momentum": 0.5, "clipvalue": 0.01}),
    ("adagrad", {}),
    ("adadelta", {}),
    ("adamax", {}),
    ("nadam", {"global_clipnorm": 0.05}),
    ("lion", {"weight_decay": 0.1}),
    ("ftrl", {"l1_regularization_strength": 0.01, "l2_shrinkage_regularization_strength": 0.1, "beta": 0.5}),
]


def _single_weight_config():
    """shared_layer without its bias: one parameter, so its update stays unfused."""
    config = json.loads((CONFIGS / "k3_shared_layer.json").read_text())
    for layer in config["config"]["layers"]:
        if layer["class_name"] == "Dense":
            layer["config"]["use_bias"] = False
    return config


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("optimizer", [("adam", {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7})])
def test_train_step_matches_interpreter(arch, optimizer):
    """With the GEMMs and the update split by weight rows in 2 parts (passes/split.py)."""
    compiled = _check_train_step(
        json.loads((CONFIGS / f"k3_{arch}.json").read_text()), optimizer, VOCABULARY.get(arch), parts=2
    )
    if arch == "seq_mlp":
        assert {n.attrs.get("split") for n in compiled.graph.nodes()} >= {"k", "rows", "cols"}


def test_a_recurrent_train_step_matches_interpreter():
    """A SimpleRNN returning its last state (its slice's gradient a pad) then Dense: the step, and
    the shared loop kernels it imports, copy through kernels (source_checks.py)."""
    config = json.loads((Path(__file__).parent / "fixtures" / "rnn" / "k3_simple_rnn.json").read_text())
    _check_train_step(config, OPTIMIZERS[0])


def test_split_step_runs_whole_on_one_thread():
    """The split step with parts=1 at run time (BLAS's own threads do the GEMMs) is the same step."""
    _check_train_step(json.loads((CONFIGS / "k3_seq_mlp.json").read_text()), OPTIMIZERS[1], parts=2, max_threads=1)


@pytest.mark.parametrize("arch", ["seq_mlp", "conv2d"])
def test_every_thread_setting_computes_the_same_floats(arch):
    """The thread tuner picks a setting by timing: split over the cores, whole on one thread, or
    whole on BLAS's threads (runtime/threads.py). A seeded run must not depend on which won: the
    forward GEMM split over K adds its parts in order whatever threads run them (it once ran one
    whole GEMM on one thread: the seeded BN CNN's weights differed between runs)."""
    fm = build_model(json.loads((CONFIGS / f"k3_{arch}.json").read_text()), seed=1)
    compiled, manifest = _compile(fm, "train", OPTIMIZERS[1], parts=2)
    layout, offset = [], 0
    for w in fm.weights:
        layout.append({"node": w.node, "offset": offset, "shape": list(w.shape)})
        offset += int(np.prod(w.shape))
    rs = np.random.RandomState(0)
    xs = [rs.randn(6, *i.shape[1:]).astype(np.float32) for i in fm.inputs]
    ys = [rs.randn(6, *s.shape[1:]).astype(np.float32) for s in manifest.labels]

    def run(option):
        exe = Executable({"train": manifest}, layout, seed=0)  # the same dropout masks
        exe.threads.options = lambda m, batch: [option]
        exe.set_weights([w.value for w in fm.weights])
        outs = [{k: v.copy() for k, v in exe.run("train", xs, ys, lr=0.01, step=s).items()} for s in (1, 2)]
        assert exe._last_parts == option[0]
        return outs, exe.get_weights()

    splits = {n.attrs.get("split") for n in compiled.graph.nodes()}
    assert "k" in splits if arch == "seq_mlp" else "m" in splits
    (split_outs, split_weights), *others = [run(option) for option in [(2, 1), (1, 1), (1, 2)]]
    for outs, weights in others:
        for a, b in zip(split_outs, outs):
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        for a, b in zip(split_weights, weights):
            np.testing.assert_array_equal(a, b)


def _conv_bn_config():
    """Conv2D (no bias) -> BatchNormalization -> ReLU -> MaxPooling2D -> Dense: samples large
    enough (28x28x8) for every loop and column sum of the step to run in parts."""
    from benchmarks.models import cnn_bn

    return cnn_bn("conv_bn_parts", filters=(8,))


@pytest.mark.parametrize("max_threads", [None, 1], ids=["parts", "whole"])
def test_conv_step_split_by_samples_matches_interpreter(max_threads):
    """The convolution's GEMMs split by samples, its loops and batch-norm column sums in parts
    (passes/split.py), run on both cores or on one: the interpreter's numbers."""
    compiled = _check_train_step(_conv_bn_config(), OPTIMIZERS[1], parts=2, max_threads=max_threads)
    nodes = compiled.graph.nodes()
    assert {n.attrs.get("split") for n in nodes if n.op == "matmul" and n.type.rank == 4} == {"m"}
    # the convolution's kernel gradient by samples too: a partial gradient a part, added in order
    kernel_grads = [n for n in nodes if n.op == "matmul" and n.attrs.get("transpose_a") and n.type.rank == 2]
    conv_grads = [n for n in kernel_grads if compiled.graph.type(n.inputs[0]).rank == 4]
    assert conv_grads and {n.attrs["split"] for n in conv_grads} == {"batch"}
    assert all(n.attrs["workspace_fixed"] == 2 * n.type.numel(1) for n in conv_grads)
    parted = {n.op for n in nodes if n.attrs.get("parts") == 2}
    # K.column_sum: the batch's mean; the sum of pooling's gradient (which applied the ReLU's) is
    # written by pooling's gradient itself
    assert {"fused_elementwise", "pool2d_grad", "reduce_mean"} <= parted, parted
    pools = [n for n in nodes if n.op == "pool2d_grad"]
    assert pools and all(n.attrs.get("relu") for n in pools)  # the ReLU's gradient applied there
    sums = [compiled.graph.node(n.attrs["bias_grad"]) for n in pools]
    assert [(s.op, s.attrs["computed_by"]) for s in sums] == [("reduce_sum", n.id) for n in pools]
    # each part's scratch (pooling's: what its window has left, and its sums) a cache line apart
    assert all(n.attrs["workspace_fixed"] == 2 * (2 * n.type.shape[-1] + split.ROW_PAD) for n in pools)
    assert not any(n.op == "act_grad" and n.inputs[0] == p.id for n in nodes for p in pools)
    # loops in parts that also write a column sum: the variance's mean of (x - mean)^2, the
    # gradient's sum(g * x_hat)
    sums = {
        compiled.graph.node(n.attrs["bias_grad"]).op
        for n in nodes
        if n.attrs.get("bias_grad") and n.attrs.get("parts") == 2
    }
    assert sums == {"reduce_sum", "reduce_mean"}


def _conv_blocks_config():
    """Convolutions of few channels (passes/split.py block_convolutions): a 3x3 linear one, 'same'
    padding, stride 2, then average pooling; a 2x2 ReLU one of its 3 channels, then max pooling;
    a 3x3 linear one with no pooling after it; and a 2x2 tanh one (apart). The first three run as
    one blocked kernel each, and the first two's pooling gradients (the second's applies the
    ReLU's) feed their kernel gradients in blocks too."""
    from benchmarks.models import obj

    def conv(name, filters, kernel, activation, strides=1, padding="valid"):
        return obj(
            "Conv2D",
            {
                "name": name,
                "filters": filters,
                "kernel_size": [kernel, kernel],
                "strides": [strides, strides],
                "padding": padding,
                "activation": activation,
            },
        )

    def pool(name, cls, size):
        return obj(cls, {"name": name, "pool_size": [size, size], "strides": [size, size], "padding": "valid"})

    layers = [
        obj("InputLayer", {"batch_shape": [None, 17, 15, 2], "dtype": "float32", "name": "image"}),
        conv("c1", 3, 3, "linear", strides=2, padding="same"),
        pool("p1", "AveragePooling2D", 2),
        conv("c2", 4, 2, "relu"),
        pool("p2", "MaxPooling2D", 2),
        obj("UpSampling2D", {"name": "up", "size": [4, 4]}),
        conv("c3", 5, 3, "linear"),
        conv("c4", 2, 2, "tanh"),
        obj("Flatten", {"name": "flatten"}),
        obj("Dense", {"name": "dense", "units": 3, "activation": "tanh"}),
    ]
    return {"class_name": "Sequential", "config": {"name": "conv_blocks", "layers": layers}}


@pytest.mark.parametrize(
    "block_bytes, max_threads", [(1, None), (split.BLOCK_BYTES, 1)], ids=["sample_blocks-parts", "planned_blocks-whole"]
)
def test_convolution_blocks_match_interpreter(monkeypatch, max_threads, block_bytes):
    """Each convolution's im2col, GEMM, bias + activation and pooling run as one kernel a block of
    samples at a time (and pooling's gradient with the kernel gradient): the interpreter's numbers,
    whether a part holds one block or several, on both cores or on one."""
    monkeypatch.setattr(split, "BLOCK_BYTES", block_bytes)
    compiled = _check_train_step(_conv_blocks_config(), OPTIMIZERS[1], parts=2, max_threads=max_threads)
    blocks = {n.id: n.attrs["conv_block"] for n in compiled.graph.nodes() if n.attrs.get("conv_block")}
    forward = [b for b in blocks.values() if "conv" in b]
    assert len(forward) == 3 and [b["pool"] is not None for b in forward] == [True, True, False]
    backward = [compiled.graph.node(b["kernel_grad"]).type.shape for b in blocks.values() if "kernel_grad" in b]
    assert backward == [(2 * 2 * 3, 4), (3 * 3 * 2, 3)]  # c2's, then c1's
    if block_bytes == 1:
        assert {b["block"] for b in blocks.values()} == {1}
    plan = compiled.plan
    index = {nid: k for k, nid in enumerate(plan.schedule)}
    for node in compiled.graph.nodes():  # what a block's members read and write is live where it runs
        if node.attrs.get("runs_at"):
            at = index[node.attrs["runs_at"]]
            for nid in (node.id, *node.inputs):
                root = plan.slots[nid].view_of if nid in plan.slots and plan.slots[nid].view_of else nid
                if root in plan.intervals:
                    lo, hi = plan.intervals[root]
                    assert (lo <= at <= hi) if nid == node.id else hi >= at, (node.id, nid)


@pytest.mark.parametrize("config", [_conv_bn_config, _conv_blocks_config], ids=["batch_norm", "blocks"])
def test_python_step_serial_kernels_compute_the_parallel_ones_floats(monkeypatch, config):
    """A step's Python function runs the parallel kernels as Python (drivers) or in their serial
    forms (runtime/serial.py): the convolution step in parts, run so and compiled, gives the same
    floats bit for bit."""
    from kgraph.kernels import cpu as K
    from kgraph.runtime import serial, typecheck
    from kgraph.runtime.loader import import_file

    fm = build_model(config(), seed=1)
    _, manifest = _compile(fm, "train", OPTIMIZERS[1], parts=2)
    rs = np.random.RandomState(0)
    x = rs.randn(6, *fm.inputs[0].shape[1:]).astype(np.float32)
    y = rs.randn(6, *manifest.labels[0].shape[1:]).astype(np.float32)

    layout, offset = [], 0
    for w in fm.weights:
        layout.append({"node": w.node, "offset": offset, "shape": list(w.shape)})
        offset += int(np.prod(w.shape))

    def run(parallel):
        with monkeypatch.context() as patch:
            patch.setattr(typecheck, "_TWINS", {})
            if parallel:  # the module's globals as they are: the parallel kernels
                patch.setattr(typecheck, "serial_namespace", lambda namespace, form=None: dict(namespace))
            exe = Executable({"train": manifest}, layout)
            exe.threads.options = lambda m, batch: [(2, 1)]  # every kernel in its two parts
            exe.set_weights([w.value for w in fm.weights])
            outs = [exe.run("train", [x], [y], lr=0.01, step=s) for s in (1, 2)]
            assert exe._last_parts == 2
            return outs, exe.get_weights()

    (serial_outs, serial_weights), (parallel_outs, parallel_weights) = run(False), run(True)
    parted = [v for v in vars(import_file(manifest.module)).values() if serial.is_parallel(v)]
    assert (
        parted and serial.is_parallel(K.pool2d) and serial.serial_cpu_kernels().pool2d is serial.python_form(K.pool2d)
    )
    # the generated loops and updates in parts are drivers too, over their `_rows` kernels
    assert all(serial.is_driver(v) and v.py_func.__name__ == "kernel" for v in parted), parted
    for a, b in zip(serial_outs, parallel_outs):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for a, b in zip(serial_weights, parallel_weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda o: o[0])
def test_every_update_kernel_matches_its_reference(optimizer, fused):
    config = json.loads((CONFIGS / "k3_residual_add.json").read_text()) if fused else _single_weight_config()
    compiled = _check_train_step(config, optimizer, parts=2 if fused else 1)
    assert {n.op == "fused_update" for n in compiled.graph.nodes() if n.op.endswith("_update")} == {fused}


def _check_train_step(config, optimizer, vocabulary=None, parts=1, max_threads=None):
    """One compiled training step against the interpreter; `vocabulary`: the input is token ids;
    parts: compile the GEMMs split in that many parts; max_threads: cores the executable may use."""
    fm = build_model(config, seed=1)
    trains = any(w.trainable for w in fm.weights)  # merge or preprocessing layers only: nothing to train
    kind = "train" if trains else "test"
    compiled, manifest = _compile(fm, kind, optimizer if trains else None, parts)
    # copies (a pad, a concatenation, ...) through kernels, not array assignments (source_checks.py)
    assert array_slice_assignments(Path(manifest.module).read_text(), shared=True) == [], manifest.module
    layout, offset = [], 0
    for w in fm.weights:
        layout.append({"node": w.node, "offset": offset, "shape": list(w.shape)})
        offset += int(np.prod(w.shape))
    exe = Executable({kind: manifest}, layout)
    exe.threads.max_threads = max_threads
    exe.set_weights([w.value for w in fm.weights])
    rs = np.random.RandomState(0)
    inputs = [rs.randn(5, *i.shape[1:]).astype(np.float32) * 0.5 for i in fm.inputs]
    if vocabulary:
        inputs = [rs.randint(0, vocabulary, size=x.shape).astype(np.float32) for x in inputs]
    labels = [rs.randn(5, *s.shape[1:]).astype(np.float32) for s in manifest.labels]
    for step in (1, 2):
        feeds = _feeds(compiled, exe, inputs, labels, manifest, 0.01, step)
        outs = exe.run(kind, inputs, labels, lr=0.01, step=step)
        for node in compiled.graph.sources("rng"):  # the dropout masks (or normal draws) the step just drew
            feeds[node.id] = exe.rng_mask(kind, node.id, len(inputs[0]))
            if node.attrs.get("dist") != "normal":
                assert set(np.unique(feeds[node.id])) <= {0.0, np.float32(1 / (1 - node.attrs["rate"]))}
        env = ir.interpret(compiled.graph, feeds)
        np.testing.assert_allclose(outs["loss"][0], env[compiled.graph.outputs["loss"]], rtol=1e-5)
        for k in range(len(fm.output_names)):
            np.testing.assert_allclose(
                outs[f"output:{k}"], env[compiled.graph.outputs[f"output:{k}"]], rtol=1e-4, atol=1e-6
            )
        for p, w in zip(layout, exe.get_weights()):
            np.testing.assert_allclose(w, feeds[p["node"]], rtol=1e-4, atol=1e-6, err_msg=p["node"])
    return compiled


def test_generated_source_is_readable():
    fm = build_model(json.loads((CONFIGS / "k3_seq_mlp.json").read_text()), seed=1)
    compiled, manifest = _compile(fm, "test", None)
    src = Path(manifest.module).read_text()
    assert src.startswith('"""Generated by kgraph')
    # every node's IR line is the comment above its code
    for node in compiled.graph.nodes():
        if not node.is_source:
            assert "# " + ir.format_node(node) in src
    compile(src, manifest.module, "exec")


def test_same_graph_same_file():
    fm = build_model(json.loads((CONFIGS / "k3_seq_mlp.json").read_text()), seed=1)
    _, m1 = _compile(fm, "test", None)
    _, m2 = _compile(fm, "test", None)
    assert m1.module == m2.module


@pytest.mark.parametrize("relu", [False, True], ids=["", "relu"])
@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize(
    "mode, pool, strides, pads",
    [
        ("max", (3, 3), (2, 2), (1, 1, 1, 1)),  # overlapping windows
        ("max", (2, 2), (2, 2), (0, 0, 0, 0)),  # the tutorials' CNN
        ("avg", (2, 3), (1, 2), (0, 1, 1, 0)),
    ],
)
def test_pool_kernels_match_the_reference_where_windows_tie(mode, pool, strides, pads, parts, relu):
    """Max pooling's gradient goes to each window's first maximum; the inputs are small integers,
    so most windows hold several (and zeros: relu, the ReLU's gradient applied too)."""
    from ir.ops import REGISTRY
    from kgraph.kernels import cpu as K

    rs = np.random.RandomState(0)
    x = rs.randint(0, 3, (4, 7, 6, 5)).astype(np.float32)
    attrs = {"mode": mode, "pool": pool, "strides": strides, "pads": pads}
    want_y = REGISTRY["pool2d"].forward(x, **attrs)
    g = rs.randn(*want_y.shape).astype(np.float32)
    args = (mode == "max", *pool, *strides, pads[0], pads[2])
    y, gx = np.full_like(want_y, np.nan), np.full_like(x, np.nan)
    K.pool2d(x, y, *args, parts)
    c = x.shape[-1]
    scratch, bias = np.full((parts, 2 * c + split.ROW_PAD), np.nan, np.float32), np.full(c, np.nan, np.float32)
    K.pool2d_grad(g, x, y, gx, scratch, bias, *args, relu, True)
    np.testing.assert_allclose(y, want_y, rtol=1e-6)
    want = REGISTRY["pool2d_grad"].forward(g, x, want_y, **attrs, relu=relu)
    np.testing.assert_allclose(gx, want, rtol=1e-6, atol=1e-7)
    # the bias gradient it also writes: gx's sums over all but the channels, the parts added in order
    np.testing.assert_allclose(bias, want.sum(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(bias, scratch[:, c : 2 * c].sum(axis=0) if parts == 2 else scratch[0, c : 2 * c])
    alone = np.full_like(x, np.nan)  # without the sums: C columns a part, the same gradient
    K.pool2d_grad(g, x, y, alone, np.zeros((parts, c + split.ROW_PAD), np.float32), bias[:0], *args, relu, False)
    np.testing.assert_array_equal(alone, gx)
    if relu:  # the reference: pooling's gradient, then the ReLU's
        unfused = REGISTRY["pool2d_grad"].forward(g, x, want_y, **attrs) * (x > 0)
        np.testing.assert_allclose(want, unfused, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("rank", [1, 2, 3, 4, 5])
def test_pad_and_crop_copy_their_windows_through_copy_3d(rank):
    """A pad's (a slice's gradient, ZeroPadding) and a crop's copies (codegen/cpu.py window_copy)
    are K.copy_3d calls over views, whatever the rank and margins (loops past three merged axes),
    with no array assignment but the pad's zero fill: they give np.pad's and the crop's floats."""
    from ir import BATCH
    from kgraph.codegen.cpu import window_copy
    from kgraph.kernels import cpu as K

    rs = np.random.RandomState(rank)
    for case in range(12):
        big = [3] + list(rs.randint(1, 5, rank - 1))
        pads = [(0, 0)] + [tuple(rs.randint(0, 3, 2)) if rs.rand() < 0.6 else (0, 0) for _ in range(rank - 1)]
        if case == 0:  # the batch axis cut too (not from a layer, but the IR allows it)
            pads[0] = (1, 0)
        if case == 1:  # every other axis cut: rank 5 nests two loops
            pads[1:] = [(1, 2)] * (rank - 1)
        big = [d + lo + hi for d, (lo, hi) in zip(big, pads)]
        small = [d - lo - hi for d, (lo, hi) in zip(big, pads)]
        shape = [d if pads[0] != (0, 0) or a else BATCH for a, d in enumerate(big)]
        x = rs.rand(*small).astype(np.float32)
        padded = np.zeros(big, np.float32)
        lines = window_copy("x", "out", shape, pads, True)
        assert not any("] =" in line for line in lines), lines
        exec("\n".join(lines), {"K": K, "B": big[0], "x": x, "out": padded})
        np.testing.assert_array_equal(padded, np.pad(x, pads), err_msg="\n".join(lines))
        cropped = np.zeros(small, np.float32)
        lines = window_copy("x", "out", shape, pads, False)
        exec("\n".join(lines), {"K": K, "B": big[0], "x": padded, "out": cropped})
        np.testing.assert_array_equal(cropped, x, err_msg="\n".join(lines))


_ONE_FORM_PER_KERNEL = """
import sys
import numpy as np
from numba.core import types
from kgraph import models
from kgraph.runtime.loader import import_file

model = models.model_from_json(open(sys.argv[1]).read())
model.compile(optimizer="adam", loss="categorical_crossentropy")
x = np.random.default_rng(0).normal(size=(4,) + tuple(model.input_shape[1:])).astype(np.float32)
y = np.eye(model.output_shape[-1], dtype=np.float32)[[0, 1, 0, 1]]
model.train_on_batch(x, y)
module = import_file(model.executable.steps["train"].module)
arrays = {k: v for k, v in vars(module).items() if isinstance(v, np.ndarray)}
assert arrays and not [k for k, v in arrays.items() if v.flags.writeable], arrays
kernels = [v for v in vars(module).values() if hasattr(v, "signatures") and v.signatures]
assert kernels
for kernel in kernels:
    forms = [tuple(t.copy(readonly=False) if isinstance(t, types.Array) else t for t in s) for s in kernel.signatures]
    assert len(forms) == len(set(forms)), (kernel, kernel.signatures)
print("one form each:", len(kernels))
"""


def test_a_steps_constant_arrays_are_read_only_so_its_kernels_compile_once():
    """Numba types a compiled step's global arrays read-only; the step's Python function (the
    suite's steps, background compiles) calls the same kernels, and with writable arrays each
    kernel given one would compile a second, writable form. A fresh process, because the kernel
    library is shared: another model in this worker may pass a constant in another argument."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _ONE_FORM_PER_KERNEL, str(CONFIGS / "k3_seq_mlp.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "one form each" in done.stdout, done.stdout + done.stderr
