"""Checks of the CUDA backend that test_cuda.py runs in fresh processes: `kernels`, `training` and
`training_cnn` under Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1 must be set before numba is
imported), `ptx` without it (compiles every kernel for sm_90). Each prints "ok" when all passed."""

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(ROOT))

from ir import REGISTRY  # noqa: E402
from ir.ops.optim import UPDATES as REGISTRY_UPDATES  # noqa: E402

CONFIGS = Path(__file__).parent / "fixtures" / "configs"
RNN_FIXTURES = Path(__file__).parent / "fixtures" / "rnn"
RS = np.random.RandomState(0)


def ref(op, *args, **attrs):
    """The NumPy reference of an IR op."""
    return REGISTRY[op].forward(*args, **attrs)


def rand(*shape):
    return RS.randn(*shape).astype(np.float32)


def close(got, want, what):
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6, err_msg=what)


def kernels():
    """Every hand-written kernel on small shapes that are not multiples of its tile."""
    from numba import cuda, float32

    from kgraph.kernels import cuda as K
    from kgraph.kernels.maths import CONSTRAINTS

    STRIDING = (2, 2)  # a one-dimensional launch of 2 blocks of 2 threads: every kernel below strides

    def run(kernel, grid, block, *args):
        dev = [cuda.to_device(a) if isinstance(a, np.ndarray) else a for a in args]
        kernel[grid, block](*dev)
        return [d.copy_to_host() if hasattr(d, "copy_to_host") else d for d in dev]

    # GEMM in every transpose combination; one shape spans two blocks and two K tiles
    for ta, tb, (m, n, k) in [
        (False, False, (70, 20, 21)),
        (False, True, (33, 45, 19)),
        (True, False, (33, 45, 19)),
        (True, True, (9, 70, 5)),
    ]:
        a = rand(k, m) if ta else rand(m, k)
        b = rand(n, k) if tb else rand(k, n)
        out = run(
            K.gemm(ta, tb, K.product),
            K.gemm_grid(m, n),
            (K.THREADS_2D, K.THREADS_2D),
            a,
            b,
            np.zeros((m, n), np.float32),
            np.zeros((m, n), np.float32),
        )[3]
        close(out, ref("matmul", a, b, transpose_a=ta, transpose_b=tb), f"gemm ta={ta} tb={tb}")

    # accumulating (C += A·B) into a column range of a matrix, the operands column ranges too:
    # strided views, as a recurrent layer's gate blocks are (K = 19: two K tiles)
    for ta, tb in [(False, False), (False, True), (True, False)]:
        big_a = rand(19, 40) if ta else rand(33, 40)
        big_b = rand(50, 30) if tb else rand(19, 70)
        take_a = (slice(None), slice(3, 36)) if ta else (slice(None), slice(5, 24))  # (19, 33) or (33, 19)
        take_b = (slice(2, 47), slice(4, 23)) if tb else (slice(None), slice(20, 65))  # (45, 19) or (19, 45)
        for accumulate in (False, True):
            c = rand(33, 50)
            dev_a, dev_b, dev_c = (cuda.to_device(x) for x in (big_a, big_b, c))
            out = dev_c[:, 4:49]
            K.gemm(ta, tb, K.product, accumulate)[K.gemm_grid(33, 45), (K.THREADS_2D, K.THREADS_2D)](
                dev_a[take_a], dev_b[take_b], out, out
            )
            want = c.copy()
            product = ref("matmul", big_a[take_a], big_b[take_b], transpose_a=ta, transpose_b=tb)
            want[:, 4:49] = want[:, 4:49] + product if accumulate else product
            close(dev_c.copy_to_host(), want, f"gemm on views ta={ta} tb={tb} accumulate={accumulate}")

    # a matrix product per leading index (attention), every transpose combination
    for ta in (False, True):
        for tb in (False, True):
            a = rand(3, 4, 5) if ta else rand(3, 5, 4)
            b = rand(3, 6, 4) if tb else rand(3, 4, 6)
            out = run(K.batch_matmul(ta, tb), *STRIDING, a, b, np.zeros((3, 5, 6), np.float32))[2]
            close(out, ref("batch_matmul", a, b, transpose_a=ta, transpose_b=tb), f"batch_matmul ta={ta} tb={tb}")

    @cuda.jit(device=True)
    def bias_relu(acc, bias, j):
        return max(acc + bias[j], float32(0))

    x, w, bias = rand(21, 30), rand(30, 67), rand(67)
    out = run(
        K.gemm(False, False, bias_relu),
        K.gemm_grid(21, 67),
        (K.THREADS_2D, K.THREADS_2D),
        x,
        w,
        bias,
        np.zeros((21, 67), np.float32),
    )[3]
    close(out, ref("fused_dense", x, w, bias, activation="relu"), "gemm with a bias+relu epilogue")

    @cuda.jit(device=True)
    def relu_grad(g, y):
        return g if y > 0 else float32(0)

    g, y = rand(19, 40), np.maximum(rand(19, 40), 0)
    out, gb = run(
        K.act_grad_bias(relu_grad),
        K.bias_grad_grid(40),
        (K.BIAS_COLS, K.BIAS_ROWS),
        g,
        y,
        np.zeros_like(g),
        np.zeros(40, np.float32),
    )[2:]
    want = ref("act_grad", g, y, activation="relu")
    close(out, want, "act_grad")
    close(gb, ref("reduce_sum", want, axes=(0,)), "fused bias gradient")

    # every kernel strides over its work: a grid of far fewer threads than elements or tiles
    # still computes all of it (the simulator's capped grids rely on it; a GPU's grid covers it)
    assert not K.SIM_BLOCKS or (K.blocks(10_000) == K.SIM_BLOCKS and K.threads(10_000) == K.SIM_THREADS)
    close(run(K.fill, *STRIDING, np.zeros(1000, np.float32), 2.0)[0], np.full(1000, 2, np.float32), "fill")
    a, b = rand(70, 21), rand(21, 130)  # 2x3 tiles of the GPU's 64 (5x9 of 16) on one block
    out = run(
        K.gemm(False, False, K.product),
        (1, 1),
        (K.THREADS_2D, K.THREADS_2D),
        a,
        b,
        np.zeros((70, 130), np.float32),
        np.zeros((70, 130), np.float32),
    )[3]
    close(out, ref("matmul", a, b), "gemm on one block")
    g, y = rand(19, 40), np.maximum(rand(19, 40), 0)  # 40 columns: several column groups
    out, gb = run(
        K.act_grad_bias(relu_grad), 1, (K.BIAS_COLS, K.BIAS_ROWS), g, y, np.zeros_like(g), np.zeros(40, np.float32)
    )[2:]
    want = ref("act_grad", g, y, activation="relu")
    close(out, want, "act_grad on one block")
    close(gb, want.sum(0), "fused bias gradient on one block")

    rows = lambda kernel, *args: run(kernel, *STRIDING, *args)  # noqa: E731
    z, t = rand(5, 7), np.abs(rand(5, 7))
    t /= t.sum(1, keepdims=True)
    labels, gr = np.array([0, 6, 3, 3, 1], np.int32), rand(5)
    p = ref("softmax", z)
    close(rows(K.softmax_rows, z, np.zeros_like(z))[1], p, "softmax")
    close(rows(K.softmax_grad_rows, t, p, np.zeros_like(z))[2], ref("softmax_grad", t, p), "softmax_grad")
    close(rows(K.softmax_ce_rows, z, t, np.zeros(5, np.float32))[2], ref("softmax_cross_entropy", z, t), "ce")
    close(
        rows(K.softmax_ce_grad_rows, z, t, gr, np.zeros_like(z))[3],
        ref("softmax_cross_entropy_grad", z, t, gr),
        "ce grad",
    )
    close(
        rows(K.sparse_softmax_ce_rows, z, labels, np.zeros(5, np.float32))[2],
        ref("sparse_softmax_cross_entropy", z, labels),
        "sparse ce",
    )
    close(
        rows(K.sparse_softmax_ce_grad_rows, z, labels, gr, np.zeros_like(z))[3],
        ref("sparse_softmax_cross_entropy_grad", z, labels, gr),
        "sparse ce grad",
    )
    close(rows(K.pick_rows, z, labels, np.zeros(5, np.float32))[2], ref("pick", z, labels), "pick")
    close(rows(K.unpick_rows, gr, labels, np.full_like(z, 9))[2], ref("unpick", gr, labels, z), "unpick")

    x3 = rand(3, 5, 4)
    out = run(K.reduce_3d, *STRIDING, x3, np.zeros((3, 4), np.float32), 1 / 5)[1]
    close(out, ref("reduce_mean", x3, axes=(1,)), "reduce_3d")
    out = run(K.reduce_max_3d, *STRIDING, x3, np.zeros((3, 4), np.float32))[1]
    close(out, ref("reduce_max", x3, axes=(1,)), "reduce_max_3d")
    out = run(K.repeat_3d, *STRIDING, x3, np.zeros((3, 15, 4), np.float32))[1]
    close(out, ref("repeat", x3, axis=1, n=3), "repeat_3d")
    flat = rand(300)
    close(
        run(K.reduce_all, 1, K.REDUCE_THREADS, flat, np.zeros(1, np.float32), 1.0)[1][0],
        ref("reduce_sum", flat),
        "reduce_all",
    )
    g2 = rand(3, 4)
    close(
        run(K.broadcast_3d, *STRIDING, g2, np.zeros((3, 5, 4), np.float32))[1],
        ref("broadcast_like", g2, x3, axes=(1,)),
        "broadcast_3d",
    )
    assert run(K.fill, 1, 1, np.zeros(1, np.float32), 7.0)[0][0] == 7
    parts, dst = [rand(3, 2, 4), rand(3, 5, 4)], np.zeros((3, 7, 4), np.float32)
    for src, start in zip(parts, (0, 2)):
        dst = run(K.copy_3d, *STRIDING, src, 0, dst, start, src.shape[1])[2]
    close(dst, ref("concat", *parts, axis=1), "copy_3d as concat")
    out = run(K.copy_3d, *STRIDING, dst, 2, np.zeros((3, 3, 4), np.float32), 0, 3)[2]
    close(out, ref("slice", dst, axis=1, start=2, stop=5), "copy_3d as slice")

    # the generated optimizer updates over a 300-element bucket (two blocks), against the IR's
    # updates, with the trailing (lr, step, gscale) operands of ir/ops/optim.py and Keras's weight
    # decay; each kernel's arguments as the launcher passes them
    import math

    from kgraph.codegen.cuda import update_kernel_lines
    from kgraph.codegen.lowering import scalars_calls
    from kgraph.kernels import updates as U

    n, lr, step = 300, np.float32(0.01), 3.0
    cases = [
        ("sgd_update", {}),
        ("sgd_update", {"momentum": 0.9}),
        ("sgd_update", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.004}),
        ("adam_update", {}),
        ("adam_update", {"amsgrad": True, "weight_decay": 0.004}),
        ("rmsprop_update", {}),
        ("rmsprop_update", {"centered": True, "momentum": 0.5}),
        ("adagrad_update", {}),
        ("adagrad_update", {"weight_decay": 0.004}),
        ("adadelta_update", {}),
        ("adamax_update", {}),
        ("adamax_update", {"beta_1": 0.8, "weight_decay": 0.004}),
        ("nadam_update", {}),
        ("nadam_update", {"beta_2": 0.99, "weight_decay": 0.004}),
        ("lion_update", {}),
        ("lion_update", {"beta_1": 0.8, "weight_decay": 0.004}),
        ("ftrl_update", {}),
        ("ftrl_update", {"learning_rate_power": -0.7, "l1_regularization_strength": 0.01, "beta": 0.5}),
        # Keras's use_ema after the update: step 3 overwrites the weights with a period of 3, not of 2
        ("adam_update", {"ema_momentum": 0.9, "ema_overwrite_frequency": 3}),
        ("rmsprop_update", {"centered": True, "momentum": 0.5, "ema_momentum": 0.9, "ema_overwrite_frequency": 3}),
        # gradient_accumulation_steps: step 3 applies the mean of 3 steps' gradients; with 2 it only adds
        ("adagrad_update", {"gradient_accumulation_steps": 3, "weight_decay": 0.004, "ema_momentum": 0.9}),
        ("ftrl_update", {"gradient_accumulation_steps": 2}),
        ("sgd_update", {"momentum": 0.9, "ema_momentum": 0.5, "ema_overwrite_frequency": 2}),
    ]
    for op, hyper in cases:
        h = {**REGISTRY_UPDATES[op].defaults, **hyper}
        names = list(REGISTRY_UPDATES[op].slots(h)) + ["average"] * ("ema_momentum" in h)
        names += ["gradient_accumulator"] * ("gradient_accumulation_steps" in h)
        lines = update_kernel_lines(op, h)
        namespace = {"cuda": cuda, "float32": float32, "U": U, "math": math}
        exec("\n".join(lines), namespace)
        kernel = namespace[lines[1].split()[1].split("(")[0]]
        scalars = [
            float(v) for _, call in scalars_calls(op, h) for v in eval(call, {"U": U, "lr": float(lr), "step": step})
        ]
        for gs in (1.0, 0.75):  # the global-clipnorm scale multiplies every gradient
            w, grad = rand(n), rand(n)
            slots = {name: np.abs(rand(n)) + np.float32(REGISTRY_UPDATES[op].slots(h).get(name, 0)) for name in names}
            if "velocity" in slots:
                slots["velocity"] += 20  # the velocity outweighs the squared average gradient (centered)
            want = [a.copy() for a in [w, *slots.values()]]
            ref(op, want[0], grad, *want[1:], lr, step, np.float32(gs), **hyper)
            args = [w, grad, *slots.values(), np.array([gs], np.float32), float(lr) * h.get("weight_decay", 0.0)]
            got = run(kernel, *STRIDING, *(args + scalars))
            for name, a, b in zip(["w"] + names, [got[0]] + got[2 : 2 + len(names)], want):
                if (op, name) == ("ftrl_update", "linear"):
                    # Ftrl's linear term adds (new_acc^p - acc^p) / lr * w: a float32 ulp of the powers
                    # (the simulator's pow is not NumPy's) grows by |w| / lr, 100 times here
                    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6 / lr, err_msg=f"{op} {hyper}: {name}")
                else:
                    close(a, b, f"{op} {hyper} gscale={gs}: {name}")

    # the weight constraints, on a (before, over, after) view: the norms of (2, 3) columns over 5
    for kind, limits in [("non_neg", {}), ("max_norm", {"max_value": 1.0}), ("unit_norm", {})] + [
        ("min_max_norm", {"min_value": 0.5, "max_value": 1.0, "rate": 0.5})
    ]:
        w = rand(2, 5, 3)
        attrs = {"kind": kind, "axes": () if kind == "non_neg" else (1,), **limits}
        want = ref("constrain", w.copy(), None, **attrs)
        code = CONSTRAINTS.index(kind)
        limits = [float(attrs.get("min_value", 0.0)), float(attrs.get("max_value", 0.0)), float(attrs.get("rate", 1.0))]
        close(run(K.constrain, *STRIDING, w, code, *limits)[0], want, f"constrain {kind}")

    m, batch_mean = rand(37), rand(37)
    want = ref("moving_average", m.copy(), batch_mean, momentum=0.99)
    close(run(K.moving_average, *STRIDING, m, batch_mean, 0.99)[0], want, "moving_average")

    graph_ops()


def _one_op_launcher(op, inputs, attrs):
    """Node `op` over `inputs` (arrays; those 3 long are batches of 3) compiled alone as a predict
    step: (its manifest, with the CUDA launcher's path, and the order the step takes the inputs in:
    batches first, as the step's batch size is its first input's)."""
    import ir
    from ir import BATCH, TensorType

    from kgraph.codegen import generate_cuda, step_manifest
    from kgraph.passes import run_pipeline
    from kgraph.runtime.loader import write_source

    g = ir.Graph(f"one_{op}")
    batched = [a.shape[:1] == (3,) for a in inputs]
    fed = sorted(range(len(inputs)), key=lambda k: not batched[k])
    ids = {
        k: g.source(
            "input",
            f"x{k}",
            TensorType((BATCH, *inputs[k].shape[1:]) if batched[k] else inputs[k].shape, str(inputs[k].dtype)),
        )
        for k in fed
    }
    g.outputs["output:y"] = g.add_node(op, [ids[k] for k in range(len(inputs))], attrs, name="y")
    compiled = run_pipeline("predict", g, [])
    return step_manifest(compiled, write_source(generate_cuda(compiled)[0], f"cuda_check_{op}")), fed


def _graph_cases():
    """(op, inputs, attrs) of the ops whose kernel the launcher generates or picks by shape
    (transpose, pad, crop, reductions over any axes), and of the image and lookup ops with their
    launch arguments. Batch 3; the images are not multiples of any block."""
    x4 = rand(3, 5, 6, 4)
    ties = RS.randint(0, 3, (3, 5, 6, 4)).astype(np.float32)  # windows with several maxima
    relu4 = np.maximum(x4, 0)
    patch = {"kernel": (3, 2), "strides": (2, 1), "dilation": (1, 2), "pads": (1, 1, 2, 0)}
    max_pool = {"mode": "max", "pool": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}  # overlapping windows
    avg_pool = {"mode": "avg", "pool": (2, 3), "strides": (1, 2), "pads": (0, 1, 1, 0)}
    return [
        ("transpose", [x4], {"perm": (0, 2, 3, 1)}),
        ("transpose", [x4], {"perm": (0, 3, 1, 2)}),
        ("pad", [x4], {"pads": ((0, 0), (1, 2), (0, 1), (0, 0))}),
        ("crop", [x4], {"pads": ((0, 0), (1, 0), (2, 1), (0, 0))}),
        ("repeat", [x4], {"axis": 2, "n": 2}),
        ("reduce_sum", [x4], {"axes": (0, 2)}),
        ("reduce_mean", [x4], {"axes": (1, 3), "keepdims": True}),
        ("reduce_max", [x4], {"axes": (0, 2)}),
        ("reduce_max", [x4], {"axes": (1, 2)}),
        ("broadcast_like", [rand(5, 4), x4], {"axes": (0, 2)}),
        ("im2col", [x4], patch),
        ("col2im", [rand(3, 3, 6, 24)], {**patch, "size": (5, 6)}),
        ("pool2d", [ties], max_pool),
        ("pool2d", [x4], avg_pool),
        ("pool2d_grad", [rand(3, 3, 3, 4), ties, ref("pool2d", ties, **max_pool)], max_pool),
        ("pool2d_grad", [rand(3, 5, 3, 4), x4, ref("pool2d", x4, **avg_pool)], avg_pool),
        # with the ReLU's gradient after it (x a ReLU's output: zeros where it was negative)
        ("pool2d_grad", [rand(3, 3, 3, 4), ties, ref("pool2d", ties, **max_pool)], {**max_pool, "relu": True}),
        ("pool2d_grad", [rand(3, 5, 3, 4), relu4, ref("pool2d", relu4, **avg_pool)], {**avg_pool, "relu": True}),
        ("gather", [rand(5, 3), np.float32([[1.7, 0], [4, 1], [4, 4]])], {}),  # float ids are truncated
        ("scatter_add", [rand(3, 2, 4), np.int32([[1, 0], [4, 1], [4, 4]])], {"rows": 5}),
        ("batch_matmul", [rand(3, 2, 5, 4), rand(3, 2, 6, 4)], {"transpose_b": True}),  # attention's scores
        ("reverse_time", [x4], {}),
        # recurrent layers' forward loops over every optional operand: 2 units, 4 steps
        ("rnn_sequence", [rand(3, 4, 8), rand(2, 8), *_state_operands(), rand(3, 2), rand(3, 2)], _rnn_attrs("lstm")),
        ("rnn_sequence", [rand(3, 4, 6), rand(2, 6), rand(6), *_state_operands(), rand(3, 2)], _rnn_attrs("gru")),
    ]


def _state_operands():
    """A step mask (a masked step inside a sequence, a row all padding) and a keep mask."""
    mask = np.float32([[1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 0]])
    return mask, np.float32([[2, 0], [2, 2], [0, 2]])


def _rnn_attrs(cell):
    flags = {"masked": True, "recurrent_dropout": True, "initial": True, "recurrent_bias": cell == "gru"}
    acts = {"activation": "relu", "recurrent_activation": "hard_sigmoid_k2"} if cell == "lstm" else {}
    return {"cell": cell, "go_backwards": True, **acts, **flags}


def graph_ops():
    """Each of _graph_cases compiled alone from the IR and run by the CUDA runtime against its
    reference."""
    from kgraph.runtime.cuda_executable import CudaExecutable

    for op, inputs, attrs in _graph_cases():
        manifest, fed = _one_op_launcher(op, inputs, attrs)
        got = CudaExecutable({"predict": manifest}, []).run("predict", [inputs[k] for k in fed])["output:y"]
        close(got, ref(op, *inputs, **attrs), f"{op} {attrs}")


def _model(device, optimizer, loss):
    import kgraph.models

    model = kgraph.models.model_from_json((CONFIGS / "k3_seq_mlp.json").read_text(), seed=2)
    model.compile(optimizer=optimizer, loss=loss, device=device)
    return model


def training():
    """Three Adam steps of an MLP with dropout and a sparse cross-entropy (with sample weights on
    the last), then a test and a predict step, in the simulator and on the CPU backend: the same
    losses, outputs and weights to 1e-5. Then two steps each of SGD (nesterov, weight decay,
    global-norm clipping) and RMSprop (centered, momentum) on other losses. (The update kernels'
    other options are checked kernel by kernel.)"""
    from kgraph import optimizers

    x = rand(7, 8)  # a batch of 7: no tile or block size divides it
    y = np.array([0, 2, 1, 1, 0, 2, 2], np.int32)
    sw = np.abs(rand(7)) + 0.5
    loss = "sparse_categorical_crossentropy"
    cpu, gpu = (_model(device, optimizers.Adam(learning_rate=0.01), loss) for device in ("cpu", "cuda"))
    assert type(gpu.executable).__name__ == "CudaExecutable"
    for weights in (None, None, sw):
        np.testing.assert_allclose(
            gpu.train_on_batch(x, y, sample_weight=weights), cpu.train_on_batch(x, y, sample_weight=weights), rtol=1e-5
        )
    for u, v in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_allclose(v, u, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gpu.evaluate(x, y, verbose=0), cpu.evaluate(x, y, verbose=0), rtol=1e-5)
    np.testing.assert_allclose(
        gpu.evaluate(x, y, sample_weight=sw, verbose=0), cpu.evaluate(x, y, sample_weight=sw, verbose=0), rtol=1e-5
    )
    # weights set on the host reach the device
    gpu.set_weights([np.zeros_like(w) for w in gpu.get_weights()])
    assert np.all(gpu.predict(x[:2], verbose=0) == np.float32(1 / 3))

    onehot = np.eye(3, dtype=np.float32)[y]
    for make, loss in [
        (
            lambda: optimizers.SGD(
                0.1,
                momentum=0.9,
                nesterov=True,
                weight_decay=0.01,
                global_clipnorm=0.5,
                use_ema=True,
                ema_overwrite_frequency=2,
            ),
            "categorical_crossentropy",
        ),
        (lambda: optimizers.RMSprop(0.01, centered=True, momentum=0.5), "mean_squared_error"),
    ]:
        cpu, gpu = (_model(device, make(), loss) for device in ("cpu", "cuda"))
        for _ in range(2):
            np.testing.assert_allclose(
                gpu.train_on_batch(x, onehot, sample_weight=sw),
                cpu.train_on_batch(x, onehot, sample_weight=sw),
                rtol=1e-5,
                err_msg=loss,
            )
        for u, v in zip(cpu.get_weights(), gpu.get_weights()):
            np.testing.assert_allclose(v, u, rtol=1e-5, atol=1e-6, err_msg=loss)


def _cnn_config():
    """A small CNN: Conv2D + MaxPooling2D + BatchNormalization + Flatten + Dense (softmax) on 6x6x2
    images, with weight constraints that act (the kernels' norms start above their limits). The
    convolution's activation is tanh: batch norm cancels the bias gradient of a relu that is
    active across a channel's pooled positions to rounding noise, which Adam then scales up to a
    full step, different on each backend."""

    def limit(cls, **config):
        return {"module": "keras.constraints", "class_name": cls, "config": config}

    def layer(cls, **config):
        return {"module": "keras.layers", "class_name": cls, "config": config}

    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "cnn",
            "layers": [
                layer("InputLayer", batch_shape=[None, 6, 6, 2], dtype="float32", name="image"),
                layer(
                    "Conv2D",
                    name="conv",
                    filters=3,
                    kernel_size=[3, 3],
                    activation="tanh",
                    kernel_constraint=limit("MaxNorm", max_value=0.5, axis=[0, 1, 2]),
                ),
                layer("MaxPooling2D", name="pool", pool_size=[2, 2]),
                layer("BatchNormalization", name="bn", momentum=0.9, gamma_constraint=limit("NonNeg")),
                layer("Flatten", name="flat"),
                layer(
                    "Dense",
                    name="out",
                    units=3,
                    activation="softmax",
                    kernel_constraint=limit("MinMaxNorm", min_value=0.2, max_value=1.0, rate=0.5),
                ),
            ],
        },
    }


def _same_training(cpu, gpu, x, y, steps=2):
    """The CUDA model's steps give the CPU model's losses and weights."""
    for _ in range(steps):
        np.testing.assert_allclose(gpu.train_on_batch(x, y), cpu.train_on_batch(x, y), rtol=1e-5)
    for u, v in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_allclose(v, u, rtol=1e-5, atol=1e-6)


def training_cnn():
    """The CNN on a batch of 3 (its convolution's GEMM is 48x3x18: no tile size divides it), two
    steps each of Adam and Nadam in the simulator and on the CPU backend: the same losses, and
    weights (batch norm's moving statistics included) to 1e-5; then a test step (batch norm in
    inference mode). The simulator is slow: these shapes keep it to seconds."""
    import kgraph.models
    from kgraph import optimizers

    x, y = rand(3, 6, 6, 2), np.array([0, 2, 1], np.int32)
    for optimizer in (optimizers.Adam, optimizers.Nadam):
        cpu, gpu = (kgraph.models.model_from_json(json.dumps(_cnn_config()), seed=3) for _ in range(2))
        for model, device in ((cpu, "cpu"), (gpu, "cuda")):
            model.compile(
                optimizer=optimizer(learning_rate=0.01), loss="sparse_categorical_crossentropy", device=device
            )
        _same_training(cpu, gpu, x, y)
    np.testing.assert_allclose(gpu.evaluate(x, y, verbose=0), cpu.evaluate(x, y, verbose=0), rtol=1e-5)


def _extra_config():
    """The preprocessing, activation and noise layers of kgraph/frontend/extra_layers.py on 3x4x2
    images: constant nodes (per-channel values, resize matrices), normal draws, a penalty."""

    def layer(cls, **config):
        return {"module": "keras.layers", "class_name": cls, "config": config}

    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "extra",
            "layers": [
                layer("InputLayer", batch_shape=[None, 3, 4, 2], dtype="float32", name="image"),
                layer("Rescaling", name="rescale", scale=[0.5, 2.0], offset=0.1),
                layer("Resizing", name="resize", height=4, width=5),
                layer("Normalization", name="norm", axis=-1, mean=[0.1, -0.2], variance=[1.5, 0.5]),
                layer("Normalization", name="adapted", axis=-1),
                layer("ReLU", name="relu", max_value=1.0, negative_slope=0.1, threshold=0.2),
                layer("CenterCrop", name="crop", height=3, width=3),
                layer("GaussianNoise", name="noise", stddev=0.3),
                layer(
                    "PReLU",
                    name="prelu",
                    shared_axes=[1, 2],
                    alpha_initializer={"class_name": "Constant", "config": {"value": 0.2}},
                ),
                layer("ActivityRegularization", name="activity", l2=0.01),
                layer("Reshape", name="rows", target_shape=[9, 2]),
                layer("Softmax", name="softmax", axis=1),
                layer("AlphaDropout", name="alpha_dropout", rate=0.2),
                layer("Flatten", name="flat"),
                layer("Dense", name="out", units=3, activation="softmax"),
            ],
        },
    }


def training_extra():
    """Two Adam steps of _extra_config in the simulator and on the CPU backend (the same noise:
    both draw it on the host), then a test and a predict step: the same numbers to 1e-5."""
    import kgraph.models
    from kgraph import optimizers

    x, y = rand(3, 3, 4, 2), np.array([0, 2, 1], np.int32)
    cpu, gpu = (kgraph.models.model_from_json(json.dumps(_extra_config()), seed=3) for _ in range(2))
    weights = cpu.get_weights()
    weights[:2] = [np.float32([0.3, -0.1]), np.float32([2.0, 0.7])]  # the adapted mean and variance
    for model, device in ((cpu, "cpu"), (gpu, "cuda")):
        model.set_weights(weights)
        model.compile(
            optimizer=optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy", device=device
        )
    _same_training(cpu, gpu, x, y)
    np.testing.assert_allclose(gpu.evaluate(x, y, verbose=0), cpu.evaluate(x, y, verbose=0), rtol=1e-5)
    np.testing.assert_allclose(gpu.predict(x, verbose=0), cpu.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def training_masked():
    """Embedding(mask_zero=True) -> Dense per step: the loss and the mae metric weighted by the
    output's mask (one row all padding), two Adam steps in the simulator and on the CPU backend."""
    import kgraph.models
    from kgraph import optimizers

    layers = [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 5], "name": "x"}},
        {"class_name": "Embedding", "config": {"name": "e", "input_dim": 9, "output_dim": 2, "mask_zero": True}},
        {"class_name": "Dense", "config": {"name": "d", "units": 3}},
    ]
    config = {"class_name": "Sequential", "config": {"name": "tagger", "layers": layers}}
    rng = np.random.default_rng(0)
    x = rng.integers(1, 9, size=(3, 5)).astype(np.float32)
    x[0, 2:], x[1, :] = 0, 0
    y = rng.normal(size=(3, 5, 3)).astype(np.float32)
    cpu, gpu = (kgraph.models.model_from_json(json.dumps(config), seed=3) for _ in range(2))
    for model, device in ((cpu, "cpu"), (gpu, "cuda")):
        model.compile(optimizer=optimizers.Adam(learning_rate=0.01), loss="mse", metrics=["mae"], device=device)
    for _ in range(2):
        got, want = gpu.train_on_batch(x, y, return_dict=True), cpu.train_on_batch(x, y, return_dict=True)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, err_msg=name)
    for u, v in zip(cpu.get_weights(), gpu.get_weights()):
        np.testing.assert_allclose(v, u, rtol=1e-5, atol=1e-6)


def training_recurrent_tf():
    """TensorFlow's fixtures (tests/fixtures/rnn, batch 6, 7 steps) on CUDA in the simulator: the
    predictions, and one SGD step's loss and weights (w - lr * TensorFlow's gradient). `states`:
    an LSTM returning sequences and states, a GRU (reset_after, its recurrent bias's gradient a
    column sum) and a Bidirectional SimpleRNN (go_backwards); `gru_v1`: reset_after=False (two
    recurrent GEMMs a step, one accumulating). (Initial states: training_recurrent_cpu.)"""
    import kgraph.models
    from kgraph.optimizers import SGD

    for case in ("states", "gru_v1"):
        config = json.loads((RNN_FIXTURES / f"k3_{case}.json").read_text())
        data = np.load(RNN_FIXTURES / f"{case}.npz")
        xs = [data[k] for k in sorted(data) if k.startswith("x")]
        model = kgraph.models.model_from_config(config, seed=0)
        model.set_weights([data[f"w_{i}"] for i in range(len(model.get_weights()))])
        model.compile(optimizer=SGD(learning_rate=0.1), loss="sparse_categorical_crossentropy", device="cuda")
        assert type(model.executable).__name__ == "CudaExecutable"
        np.testing.assert_allclose(model.predict(xs, verbose=0), data["pred0"], rtol=1e-5, atol=1e-6, err_msg=case)
        np.testing.assert_allclose(model.train_on_batch(xs, data["y0"]), data["loss"], rtol=1e-5, err_msg=case)
        for i, w in enumerate(model.get_weights()):
            want = data[f"w_{i}"] - 0.1 * data[f"grad_{i}"]
            np.testing.assert_allclose(w, want, rtol=1e-5, atol=1e-6, err_msg=f"{case} w_{i}")


def _tiny_rnn(cell, **layer):
    """Embedding(mask_zero) -> cell(go_backwards) -> Dense(softmax): 3 units over 4 steps."""
    return {
        "class_name": "Sequential",
        "config": {
            "name": f"tiny_{cell.lower()}",
            "layers": [
                {"class_name": "InputLayer", "config": {"batch_shape": [None, 4], "name": "x"}},
                {
                    "class_name": "Embedding",
                    "config": {"name": "e", "input_dim": 9, "output_dim": 2, "mask_zero": True},
                },
                {"class_name": cell, "config": {"name": "r", "units": 3, "go_backwards": True, **layer}},
                {"class_name": "Dense", "config": {"name": "d", "units": 3, "activation": "softmax"}},
            ],
        },
    }


def _learned_initial_states():
    """tests/fixtures/rnn's initial_state model (an LSTM, then a GRU, each from initial states) with
    its initial states made by Dense layers from the inputs, so that the backward pass wants their
    gradients; 4 steps."""
    config = json.loads((RNN_FIXTURES / "k3_initial_state.json").read_text())
    layers = config["config"]["layers"]
    layers[0]["config"]["batch_shape"] = [None, 4, 3]
    for name, source in (("h_in", "input_layer_1"), ("c_in", "input_layer_2")):
        inbound = {"class_name": "__keras_tensor__", "config": {"shape": [None, 5], "keras_history": [source, 0, 0]}}
        dense = {"class_name": "Dense", "config": {"name": name, "units": 5, "activation": "tanh"}, "name": name}
        layers.insert(3, {**dense, "inbound_nodes": [{"args": [inbound], "kwargs": {}}]})
    for layer in layers:
        for node in layer["inbound_nodes"]:
            for state in node["kwargs"].get("initial_state", []):
                history = state["config"]["keras_history"]
                history[0] = {"input_layer_1": "h_in", "input_layer_2": "c_in"}[history[0]]
    return config


def training_recurrent_cpu():
    """A predict step and an SGD step in the simulator and on the CPU backend (the same keep masks:
    both draw them on the host), the same outputs, loss and weights: padded sequences (a
    masked step inside one, a row all padding) through an LSTM with dropout and recurrent_dropout
    and GRUs of both reset_after modes, all going backwards; and an LSTM and a GRU whose initial
    states are learned (their gradients)."""
    import kgraph.models
    from kgraph import optimizers

    x = np.array([[3, 1, 0, 0], [2, 0, 5, 8], [0, 0, 0, 0]], np.float32)
    y = np.array([0, 2, 1], np.int32)
    cases = [
        (_tiny_rnn("LSTM", dropout=0.2, recurrent_dropout=0.3), x),
        (_tiny_rnn("GRU", reset_after=False, recurrent_activation="hard_sigmoid"), x),
        (_tiny_rnn("GRU", recurrent_dropout=0.3), x),
        (_learned_initial_states(), [rand(3, 4, 3), rand(3, 5), rand(3, 5)]),
    ]
    for config, xs in cases:
        cpu, gpu = (kgraph.models.model_from_config(config, seed=5) for _ in range(2))
        for model, device in ((cpu, "cpu"), (gpu, "cuda")):  # SGD: the step is the gradient (Adam's first its sign)
            model.compile(optimizer=optimizers.SGD(0.5), loss="sparse_categorical_crossentropy", device=device)
        np.testing.assert_allclose(gpu.predict(xs, verbose=0), cpu.predict(xs, verbose=0), rtol=1e-5, atol=1e-6)
        _same_training(cpu, gpu, xs, y, steps=1)


def _trained(config, strategy, optimizer, x, y, steps=2):
    """A model of `config` (seed 4) compiled under `strategy` (None: one replica) on `device`,
    and its losses over `steps` steps on the whole batch x, y."""
    import kgraph.distribute
    import kgraph.models
    from kgraph import optimizers

    device = "cuda" if strategy is None or strategy.device == "cuda" else "cpu"
    with (strategy or kgraph.distribute.Strategy()).scope():
        model = kgraph.models.model_from_json(config, seed=4)
        model.compile(optimizer=optimizers.get(optimizer), loss="mse", device=device)
    return model, [model.train_on_batch(x, y) for _ in range(steps)]


def _same(a, b, what):
    (model_a, losses_a), (model_b, losses_b) = a, b
    np.testing.assert_allclose(losses_a, losses_b, rtol=1e-5, err_msg=what)
    for u, v in zip(model_a.get_weights(), model_b.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6, err_msg=what)


def _gpus():
    """(GPUs to name, simulator?): in the simulator any number name its one device; on a real
    machine its GPUs, so one GPU runs the replicas side by side on it (host-staged)."""
    from numba import config, cuda

    return (3 if config.ENABLE_CUDASIM else len(cuda.gpus)), bool(config.ENABLE_CUDASIM)


def replicas_mlp():
    """2 and 3 replicas on the simulated GPU (several "GPUs" that are the one simulated device:
    the host-staged average) give the losses and weights of one replica on the whole batch of 7
    (shards 4+3 and 3+2+2), for SGD (momentum) and Adam; the replicas stay bit-identical."""
    import kgraph.distribute

    config = (CONFIGS / "k3_residual_add.json").read_text()
    x, y = rand(7, 12), rand(7, 5)
    gpus, simulator = _gpus()
    for optimizer in ("sgd", "adam"):
        one = _trained(config, None, optimizer, x, y)
        assert type(one[0].executable).__name__ == "CudaExecutable" and one[0].replicas is None
        for devices in (["gpu:0", f"gpu:{1 % gpus}"], ["/gpu:0", f"cuda:{1 % gpus}", f"gpu:{2 % gpus}"]):
            strategy = kgraph.distribute.MirroredStrategy(devices)
            many = _trained(config, strategy, optimizer, x, y)
            assert many[0].replicas.num_replicas == len(devices)
            assert many[0].replicas.collective == "host" or not simulator, many[0].replicas.collective
            assert all(type(e).__name__ == "CudaExecutable" for e in many[0].replicas.replicas)
            _same(many, one, f"{optimizer} {devices}")
            many[0].replicas.check_identical()
    # fit: batches of 5 and 2 rows; the last, fewer rows than replicas, is skipped (as on the CPU)
    model = many[0]
    before = model.optimizer.iterations
    history = model.fit(x, y, batch_size=5, epochs=1, shuffle=False, verbose=0)
    assert model.optimizer.iterations == before + 1 and np.isfinite(history.history["loss"][0])
    model.replicas.check_identical()
    # a replica that drifts is caught
    e = many[0].replicas.replicas[2]
    e.params[0] += 1.0
    try:
        many[0].replicas.check_identical()
    except RuntimeError as err:
        assert "replica 2" in str(err), err
    else:
        raise AssertionError("check_identical missed a drifted replica")


def replicas_cnn():
    """The batch-norm CNN on 2 and 3 simulated GPUs gives what the CPU's replicas give on the same
    shards (batch norm normalizes each shard by its own statistics, as Keras's MirroredStrategy
    does, so here the reference is the CPU's replicas, not one replica), Adam and SGD, a batch of
    5 (uneven shards); its moving statistics are averaged, so the replicas stay identical."""
    import kgraph.distribute

    config = json.dumps(_cnn_config())
    x, y = rand(5, 6, 6, 2), rand(5, 3)
    for optimizer, replicas in (("adam", 2), ("sgd", 3)):
        gpu = _trained(
            config,
            kgraph.distribute.MirroredStrategy([f"gpu:{i % _gpus()[0]}" for i in range(replicas)]),
            optimizer,
            x,
            y,
        )
        cpu = _trained(
            config, kgraph.distribute.MirroredStrategy([f"cpu:{i}" for i in range(replicas)]), optimizer, x, y
        )
        assert type(cpu[0].executable).__name__ == "Executable"
        _same(gpu, cpu, f"{optimizer} {replicas}")
        gpu[0].replicas.check_identical()
    names = [w.node for w in gpu[0].frontend.weights]
    mean = gpu[0].get_weights()[next(i for i, n in enumerate(names) if "moving_mean" in n)]
    assert np.abs(mean).max() > 0


def cli_mirrored():
    """`kgraph train MODEL --data tiny.npz --strategy mirrored --replicas 2 --device cuda` on the
    simulated GPU: two GPU replicas train the example one epoch (two batches of 8) and save weights."""
    import tempfile

    from kgraph.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        rs = np.random.RandomState(0)
        np.savez(f"{tmp}/tiny.npz", x=rs.rand(16, 64).astype(np.float32), y=rs.randint(0, 10, 16).astype(np.int32))
        example = str(ROOT / "examples" / "digits_mlp.json")
        args = ["train", example, "--data", f"{tmp}/tiny.npz", "--epochs", "1", "--batch-size", "8"]
        args += ["--strategy", "mirrored", "--replicas", "2", "--device", "cuda", "--verbose", "0"]
        assert main(args + ["--save-weights", f"{tmp}/w.npz"]) == 0
        assert np.load(f"{tmp}/w.npz") is not None


def host_staged():
    """The host-staged average of three replicas' gradient buckets on the simulated GPU, weighted
    by shard sizes 3, 2, 2, against NumPy; every replica's device bucket holds it afterwards."""
    from kgraph.runtime.cuda_executable import CudaExecutable
    from kgraph.runtime.cuda_replicas import HostStaged

    layout = [{"node": "w", "offset": 0, "shape": [5, 3]}, {"node": "b", "offset": 15, "shape": [4]}]
    replicas = [CudaExecutable({}, layout, seed=r) for r in range(3)]
    buckets = [rand(19) for _ in replicas]
    for e, g in zip(replicas, buckets):
        e.load_grads(g)
    sizes = [3, 2, 2]
    HostStaged().average(replicas, sizes)
    want = sum(g.astype(np.float64) * s for g, s in zip(buckets, sizes)) / sum(sizes)
    for e in replicas:
        e.sync()
        np.testing.assert_allclose(e.copy_of("grads"), want, rtol=1e-6, atol=1e-7)
    assert all(np.array_equal(e.copy_of("grads"), replicas[0].copy_of("grads")) for e in replicas)
    # the device scaling the NCCL path applies before its summing all-reduce
    replicas[0].load_grads(buckets[0])
    replicas[0].scale_grads(3 / 7)
    np.testing.assert_allclose(replicas[0].copy_of("grads"), buckets[0] * np.float32(3 / 7), rtol=1e-7)


def ptx():
    """Every kernel of the launchers of a few models, and every hand-written kernel, compiled to
    PTX for sm_90 with their argument types."""
    from types import SimpleNamespace

    import numba.cuda.dispatcher
    from numba import cuda

    from kgraph import optimizers
    from kgraph.kernels import cuda as K

    # with no GPU here, a device function called from a kernel asks for the current device's
    # compute capability when it compiles: answer sm_90's
    numba.cuda.dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=(9, 0))
    from kgraph.codegen.cuda import generate
    from kgraph.frontend import build_model
    from kgraph.passes import run_pipeline
    from kgraph.runtime.loader import import_file, write_source

    seen, kernels = set(), []

    def add(module, arch, generated=True):
        for name, sig in module.SIGNATURES:
            if not name.startswith("K.") and not generated:
                continue
            kernel = getattr(K, name[2:]) if name.startswith("K.") else getattr(module, name)
            if (kernel, sig) not in seen:
                seen.add((kernel, sig))
                kernels.append((f"{arch}:{name}", kernel, sig))

    # every kernel of these launchers; of the next ones, only the hand-written kernels (their
    # generated elementwise kernels are of kinds already covered, and each costs a compilation)
    for arch, opt, loss, generated in [
        ("seq_mlp", optimizers.Adam(), "sparse_categorical_crossentropy", True),
        ("activations", optimizers.RMSprop(centered=True, momentum=0.5), "mean_squared_error", True),
        ("two_input_concat", optimizers.SGD(momentum=0.9), "categorical_crossentropy", True),
        ("seq_shapes", optimizers.SGD(), "mean_squared_error", True),
        ("seq_mlp", optimizers.Nadam(), "mean_squared_error", False),
        ("conv2d", optimizers.Adagrad(), "mean_squared_error", False),
        ("conv_layers", optimizers.Adadelta(), "mean_squared_error", False),
        ("norm_embed", optimizers.Adamax(), "mean_squared_error", False),  # and moving_average
        ("seq_mlp", optimizers.SGD(), "categorical_hinge", False),  # reduce_max
        # recurrent layers: GRU reset_after=False (its GEMMs on column views, one accumulating);
        # LSTMs, GRU with a recurrent bias, Bidirectional LSTMs (reverse_time), initial states
        ("rnn/gru_v1", optimizers.SGD(), "sparse_categorical_crossentropy", True),
        ("rnn/states", optimizers.SGD(), "sparse_categorical_crossentropy", False),
        ("rnn/bilstm", optimizers.SGD(), "sparse_categorical_crossentropy", False),
        ("rnn/initial_state", optimizers.SGD(), "sparse_categorical_crossentropy", False),
    ]:
        folder, _, name = arch.rpartition("/")
        config = json.loads(((RNN_FIXTURES if folder else CONFIGS) / f"k3_{name}.json").read_text())
        fm = build_model(config, seed=0)
        compiled = run_pipeline(
            "train",
            fm.lower(training=True),
            [w.node for w in fm.weights],
            losses=[{"name": loss}] * len(fm.output_names),
            optimizer=opt.spec(),
            trainable=[w.node for w in fm.weights if w.trainable],
        )
        add(import_file(write_source(generate(compiled)[0], f"ptx_{name}")), arch, generated)
    # the generated shuffles and reductions, and the image and lookup ops, as the simulator runs them
    for op, inputs, attrs in _graph_cases():
        add(import_file(_one_op_launcher(op, inputs, attrs)[0].module), op)
    # the hand-written kernels no launcher above used, with types of their own
    others = {
        "pick_rows": "void(float32[:, ::1], int32[::1], float32[::1])",
        "unpick_rows": "void(float32[::1], int32[::1], float32[:, ::1])",
        "softmax_ce_rows": "void(float32[:, ::1], float32[:, ::1], float32[::1])",
        "softmax_grad_rows": "void(float32[:, ::1], float32[:, ::1], float32[:, ::1])",
        "rnn_carry_grad": "void(float32[:, ::1], float32[:, ::1], float32[:, ::1], float32[:, ::1], boolean)",  # d h0
        "scale": "void(float32[::1], float64)",
        "constrain": "void(float32[:, :, ::1], int64, float64, float64, float64)",
    }
    used = {k for k, _ in seen}
    for name in dir(K):
        kernel = getattr(K, name)
        if isinstance(kernel, type(K.fill)) and not kernel.targetoptions["device"] and kernel not in used:
            kernels.append((name, kernel, others[name]))
    # a kernel of a factory over a device function (the GEMM's epilogue, an activation's
    # gradient: kernels/cuda.py) compiles whole once per form of its other constants and types;
    # for another device function, only that function, with the types the whole one called its
    # own with, and it must return what that one returned (else the kernel compiles whole): a
    # third of the check's time went to GEMMs that differed by their epilogue only
    whole, devices, counts = {}, set(), {"kernels": 0, "device functions of others": 0}
    for name, kernel, sig in kernels:
        functions, constants = _closure(kernel.py_func)
        form = (kernel.py_func.__code__, tuple(constants.items()), str(sig))
        try:
            if form in whole and all(_compiled_alone(f, whole[form][at], devices) for at, f in functions.items()):
                counts["device functions of others"] += len(functions)
                continue
            whole.setdefault(form, functions)
            devices.update(functions.values())
            ptx_text, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
        except Exception as e:
            raise AssertionError(f"{name} {sig}: {e}") from e
        assert ".target sm_90" in ptx_text and ".entry" in ptx_text, name
        counts["kernels"] += 1
    print(f"compiled {counts}", file=sys.stderr)


def _compiled_alone(function, compiled, devices) -> bool:
    """Compiles device function `function` to PTX with the one set of argument types that
    `compiled` (the same factory's device function, compiled in a whole kernel) has; whether it
    returns the same type. False (the kernel is to compile whole) where that is not one set."""
    from numba import cuda

    if function in devices:
        return True
    if len(compiled.overloads) != 1:
        return False
    ((argtypes, result),) = compiled.overloads.items()
    ptx_text, return_type = cuda.compile_ptx(function.py_func, argtypes, device=True, cc=(9, 0))
    assert ".target sm_90" in ptx_text and ".func" in ptx_text, function
    if return_type != result.signature.return_type:
        return False
    devices.add(function)
    return True


def _closure(func):
    """({name: CUDA device function}, {name: any other value}) of `func`'s closure."""
    from numba.cuda.dispatcher import CUDADispatcher

    functions, constants = {}, {}
    for name, cell in zip(func.__code__.co_freevars, func.__closure__ or ()):
        value = cell.cell_contents
        is_device = isinstance(value, CUDADispatcher) and value.targetoptions.get("device")
        (functions if is_device else constants)[name] = value
    return functions, constants


def shared_arrays_race():
    """kgraph's lock on the simulator's shared arrays (kernels/cuda.py): a thread switched out
    between its block's look-up of a shared array that missed and the store would get an array
    of its own; with the switch forced there every time, the GEMM (two shared tiles, 16 threads
    a block) still computes a @ b (without the lock it reads tiles nothing wrote)."""
    import time

    from numba import cuda
    from numba.cuda.simulator import kernelapi

    from kgraph.kernels import cuda as K

    class Switching(dict):
        def __setitem__(self, key, value):
            time.sleep(0.001)  # the other threads run between the missed look-up and this store
            dict.__setitem__(self, key, value)

    start = kernelapi.FakeCUDAShared.__init__

    def switching(self, *args, **kwargs):
        start(self, *args, **kwargs)
        self._allocations = Switching()

    kernelapi.FakeCUDAShared.__init__ = switching
    a, b = rand(20, 24), rand(24, 18)
    dev_out = cuda.to_device(np.zeros((20, 18), np.float32))
    K.gemm(False, False, K.product)[K.gemm_grid(20, 18), (K.THREADS_2D, K.THREADS_2D)](
        cuda.to_device(a), cuda.to_device(b), cuda.to_device(np.zeros(18, np.float32)), dev_out
    )
    np.testing.assert_allclose(dev_out.copy_to_host(), a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)


if __name__ == "__main__":
    # The simulator runs a block's threads as Python threads and polls them from this one; at
    # Python's default 5 ms switch interval the poll held the GIL while they waited (a third of the
    # recurrent checks' time went so)
    sys.setswitchinterval(1e-3)
    {
        "kernels": kernels,
        "training": training,
        "training_cnn": training_cnn,
        "training_extra": training_extra,
        "training_masked": training_masked,
        "training_recurrent_tf": training_recurrent_tf,
        "training_recurrent_cpu": training_recurrent_cpu,
        "ptx": ptx,
        "replicas_mlp": replicas_mlp,
        "replicas_cnn": replicas_cnn,
        "host_staged": host_staged,
        "cli_mirrored": cli_mirrored,
        "shared_arrays_race": shared_arrays_race,
    }[sys.argv[1]]()
    print("ok")
