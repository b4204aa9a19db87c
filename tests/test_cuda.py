"""The CUDA backend without a GPU. Every hand-written kernel and a training run go through Numba's
CUDA simulator in a fresh process (the simulator must be on before numba is imported, and this
process has imported it); every kernel is compiled to PTX for sm_90 where libNVVM and NVRTC
are installed; the generated launcher is read as source."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ir
from kgraph.cli import main
from kgraph.codegen import generate_cuda
from kgraph.frontend import build_model
from kgraph.passes import run_pipeline

HERE = Path(__file__).parent
EXAMPLE = str(HERE.parent / "examples" / "digits_mlp.json")


def _check(name, simulator, gemm_threads=4):
    """Run check `name` of cuda_checks.py in a fresh process, in the simulator; on a real GPU
    where KGRAPH_TEST_REAL_GPU=1 (benchmarks/gpu_check.sh sets it). gemm_threads: the GEMM's
    blocks in the simulator, 4x4 threads or the GPU's 16x16 (kgraph/kernels/cuda.py)."""
    real = os.environ.get("KGRAPH_TEST_REAL_GPU") == "1"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1" if simulator and not real else "0")
    env["KGRAPH_CUDASIM_GEMM_THREADS"] = str(gemm_threads)
    return subprocess.run(
        [sys.executable, str(HERE / "cuda_checks.py"), name], env=env, capture_output=True, text=True, timeout=600
    )


def _passed(result):
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr[-4000:]


def test_kernels_in_simulator_match_the_ir_references():
    """The GEMM on the GPU's 16x16-thread blocks; the training checks run it on 4x4."""
    _passed(_check("kernels", simulator=True, gemm_threads=16))


def test_the_simulators_shared_arrays_are_one_per_block_whatever_the_thread_switches():
    """Numba's simulator looks a block's shared array up and stores it without a lock: kgraph
    locks it (kgraph/kernels/cuda.py), else a switch between the two gave one thread a tile of its
    own, and a recurrent check failed one run in twenty with weights of 1e20."""
    if os.environ.get("KGRAPH_TEST_REAL_GPU") == "1":
        pytest.skip("a check of the simulator")
    _passed(_check("shared_arrays_race", simulator=True))


def test_three_training_steps_in_simulator_match_the_cpu_backend():
    _passed(_check("training", simulator=True))


def test_cnn_training_steps_in_simulator_match_the_cpu_backend():
    _passed(_check("training_cnn", simulator=True))


def test_preprocessing_activation_and_noise_layers_in_simulator_match_the_cpu_backend():
    _passed(_check("training_extra", simulator=True))


def test_a_masked_outputs_loss_and_metric_in_simulator_match_the_cpu_backend():
    _passed(_check("training_masked", simulator=True))


def test_recurrent_layers_in_simulator_match_tensorflow():
    _passed(_check("training_recurrent_tf", simulator=True))


def test_masked_recurrent_layers_dropout_and_learned_initial_states_in_simulator_match_the_cpu_backend():
    _passed(_check("training_recurrent_cpu", simulator=True))


def test_every_kernel_compiles_to_ptx_for_sm90():
    result = _check("ptx", simulator=False)
    missing = [
        line
        for line in result.stderr.splitlines()
        if "NvvmSupportError" in line or "libnvvm" in line.lower() or "nvrtc" in line.lower()
    ]
    if result.returncode != 0 and missing:
        pytest.skip(f"no CUDA compiler libraries here: {missing[-1].strip()}")
    _passed(result)


def test_launcher_source_names_every_node_and_counts_launches(capsys):
    fm = build_model(json.loads(Path(EXAMPLE).read_text()), seed=0)
    compiled = run_pipeline(
        "train",
        fm.lower(training=True),
        [w.node for w in fm.weights],
        losses=[{"name": "sparse_categorical_crossentropy"}],
        optimizer=("adam", {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}),
    )
    source, launches = generate_cuda(compiled)
    compile(source, "launcher.py", "exec")
    for node in compiled.graph.nodes():
        if not node.is_source:
            assert "# " + ir.format_node(node) in source
    # 2 dense GEMMs, softmax, loss, its sample weights, mean, 2 for the loss gradient's weights/B
    # (the count, and one loop reading the seed), its backward, bias gradient, 3 backward GEMMs, 2
    # dropout multiplies, the fused backward, one optimizer update
    assert launches == 17 and f"LAUNCHES = {launches}" in source
    # the step is its two halves, which data-parallel replicas launch apart
    assert "train_grads(lr, step)\n        train_apply(lr, step)" in source
    assert "train_step.grads = train_grads" in source and "train_step.apply = train_apply" in source
    assert source.count("adam_update[") == 1 and "K.gemm(False, False, epilogue_hidden_relu_fused)" in source
    assert main(["inspect", EXAMPLE, "--device", "cuda", "--after", "plan"]) == 0
    assert "# CUDA: 17 kernel launches per train step" in capsys.readouterr().out


def test_cuda_without_a_gpu_is_a_clear_error():
    from numba import cuda

    import kgraph.models

    if cuda.is_available():
        pytest.skip("a GPU is present")
    model = kgraph.models.load_model(EXAMPLE, seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")  # device "auto": the CPU
    assert model.device == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", device="cuda")


def _train_graph(config, optimizer, loss="sparse_categorical_crossentropy"):
    fm = build_model(json.loads(Path(config).read_text()), seed=0)
    return run_pipeline(
        "train",
        fm.lower(training=True),
        [w.node for w in fm.weights],
        losses=[{"name": loss}] * len(fm.output_names),
        optimizer=optimizer.spec(),
        trainable=[w.node for w in fm.weights if w.trainable],
    )


def test_every_optimizer_and_option_generates_its_update_launches():
    from kgraph import optimizers

    # clipnorm rewrites each gradient out of the gradient bucket: one launch per parameter (4)
    for opt, kernel, n in [
        (optimizers.Adam(amsgrad=True, global_clipnorm=1.0), "adam", 1),
        (optimizers.AdamW(), "adam", 1),
        (optimizers.SGD(momentum=0.9, nesterov=True, weight_decay=0.01), "sgd", 1),
        (optimizers.RMSprop(centered=True, momentum=0.5, clipnorm=1.0), "rmsprop", 4),
        (optimizers.Adagrad(weight_decay=0.01), "adagrad", 1),
        (optimizers.Adadelta(), "adadelta", 1),
        (optimizers.Adamax(clipnorm=1.0), "adamax", 4),
        (optimizers.Nadam(global_clipnorm=1.0), "nadam", 1),
        (optimizers.Lion(), "lion", 1),
        (optimizers.Ftrl(l1_regularization_strength=0.01), "ftrl", 1),
    ]:
        source, _ = generate_cuda(_train_graph(EXAMPLE, opt))
        compile(source, "launcher.py", "exec")
        assert source.count(f"{kernel}_update[") == n, opt
        assert f"U.{kernel}(" in source and f"U.{kernel}_scalars(lr, step, " in source, opt
    # Keras's use_ema: the moving average in the same launch, its scalars on the host
    source, _ = generate_cuda(_train_graph(EXAMPLE, optimizers.Adam(use_ema=True, ema_overwrite_frequency=2)))
    assert source.count("adam_update[") == 1
    assert "U.moving_average(" in source and "U.moving_average_scalars(step, 0.99, 2, False)" in source


def test_every_ir_op_has_a_cuda_kernel():
    """Each op of the registry has an emitter in the CUDA codegen, an element function, or (an
    optimizer update) a record in kgraph.kernels.updates: no op a model can hold is refused for
    want of one."""
    from ir import REGISTRY, Pattern
    from ir.ops.optim import UPDATES
    from kgraph.codegen.cuda import CudaCodegen
    from kgraph.codegen.lowering import OPERATORS, PYTHON_MATH, element_function
    from kgraph.kernels.updates import UPDATES as KERNEL_UPDATES

    lowered = {"batch_norm"}  # rewritten into other ops before codegen (kgraph/passes/fold.py)
    for name, op in REGISTRY.items():
        if op.pattern in (Pattern.SOURCE, Pattern.VIEW) or hasattr(CudaCodegen, "_emit_" + name) or name in lowered:
            continue
        if op.pattern is Pattern.ELEMWISE:
            assert (
                name in OPERATORS
                or name in PYTHON_MATH
                or name in ("act_grad", "fused_elementwise")
                or element_function(name, {})
            ), name
        else:
            assert name in UPDATES or name == "fused_update", name
    assert set(KERNEL_UPDATES) == set(UPDATES)


def _bn_mlp(tmp_path):
    """seq_mlp with a BatchNormalization: its moving statistics are an in-place update op."""
    config = json.loads((HERE / "fixtures" / "configs" / "k3_seq_mlp.json").read_text())
    config["config"]["layers"].insert(
        2,
        {
            "module": "keras.layers",
            "class_name": "BatchNormalization",
            "config": {"name": "bn", "axis": -1, "momentum": 0.99, "epsilon": 0.001},
        },
    )
    path = tmp_path / "bn_mlp.json"
    path.write_text(json.dumps(config))
    return path


def test_batch_norm_moving_statistics_and_reduce_max_generate_their_launches(tmp_path):
    from kgraph import optimizers

    source, _ = generate_cuda(_train_graph(_bn_mlp(tmp_path), optimizers.SGD()))
    compile(source, "launcher.py", "exec")
    assert source.count("K.moving_average[") == 2
    source, _ = generate_cuda(_train_graph(EXAMPLE, optimizers.SGD(), loss="categorical_hinge"))
    assert source.count("K.reduce_max_3d[") == 1


@pytest.mark.parametrize("config", ["k3_conv2d", "k3_conv_layers", "k3_norm_embed", "k3_more_ops", "k3_einsum_dense"])
def test_convolution_normalization_and_embedding_models_generate_launchers(config):
    from kgraph import optimizers

    path = HERE / "fixtures" / "configs" / f"{config}.json"
    source, launches = generate_cuda(_train_graph(path, optimizers.Adam(), loss="mean_squared_error"))
    compile(source, "launcher.py", "exec")
    assert f"LAUNCHES = {launches}" in source


@pytest.mark.parametrize("case", ["mha_mask", "luong", "additive"])
def test_attention_models_generate_launchers(case):
    """The attention layers' scores and weighted sums launch batch_matmul kernels, forward and
    backward (the kernel itself is checked against its reference in the simulator: `kernels`)."""
    from kgraph import optimizers

    path = HERE / "fixtures" / "attention" / f"k3_{case}.json"
    source, launches = generate_cuda(_train_graph(path, optimizers.Adam(), loss="sparse_categorical_crossentropy"))
    compile(source, "launcher.py", "exec")
    assert f"LAUNCHES = {launches}" in source
    assert "K.batch_matmul(False, False)" in source  # the weighted sum of the values


RNN = HERE / "fixtures" / "rnn"


@pytest.mark.parametrize("case", sorted(p.stem.removeprefix("k3_") for p in RNN.glob("k3_*.json")))
def test_recurrent_models_generate_launchers(case):
    """Every recurrent fixture's training step: the host walks each layer's steps forward and back,
    a recurrent GEMM and a unit kernel per step, and LAUNCHES counts every step's launches."""
    from kgraph import optimizers

    compiled = _train_graph(RNN / f"k3_{case}.json", optimizers.SGD())
    source, launches = generate_cuda(compiled)
    compile(source, "launcher.py", "exec")
    layers = [n for n in compiled.graph.nodes() if n.op == "rnn_sequence"]
    assert source.count("K.rnn_step[") == source.count("K.rnn_start[") == len(layers) >= 1
    assert source.count("K.rnn_step_grad[") == len({n.attrs.get("saved_for") for n in layers} - {None})
    per_step = 0
    for n in layers:
        v1 = n.attrs["cell"] == "gru" and not n.attrs.get("reset_after", True)
        per_step += (4 if v1 else 2) + (4 if v1 else 2)  # forward and backward launches a step
        assert f"for t in range({n.type.shape[1]}):" in source
    assert f"LAUNCHES = {launches}" in source and launches > per_step * 7 - 1
    if case == "gru_v1":  # the candidate's GEMMs read column ranges; d he accumulates
        assert "gemm_nt_acc = K.gemm(False, True, K.product, True)" in source
        assert "cols_v_gru_recurrent_kernel_10_15 = v_gru_recurrent_kernel[:, 10:15]" in source


def test_a_one_dimensional_launch_has_whole_warps_and_the_same_grid():
    from kgraph.kernels import cuda as K

    assert [K.threads(n) for n in (1, 32, 33, 255, 256, 10_000)] == [32, 32, 64, 256, 256, 256]
    for n in (1, 33, 256, 257, 10_000):  # blocks of K.threads(n) cover n as blocks of THREADS_1D do
        assert K.blocks(n, K.threads(n)) == K.blocks(n) and K.blocks(n) * K.threads(n) >= n
    fm = build_model(json.loads(Path(EXAMPLE).read_text()), seed=0)
    compiled = run_pipeline("predict", fm.lower(training=False), [w.node for w in fm.weights])
    source, _ = generate_cuda(compiled)
    assert "K.THREADS_1D, stream]" not in source and "threads_B = K.threads(B)" in source
