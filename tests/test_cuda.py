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


def _check(name, simulator):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1" if simulator else "0")
    return subprocess.run([sys.executable, str(HERE / "cuda_checks.py"), name], env=env, capture_output=True,
                          text=True, timeout=600)


def _passed(result):
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stdout + result.stderr[-4000:]


def test_kernels_in_simulator_match_the_ir_references():
    _passed(_check("kernels", simulator=True))


def test_three_training_steps_in_simulator_match_the_cpu_backend():
    _passed(_check("training", simulator=True))


def test_every_kernel_compiles_to_ptx_for_sm90():
    result = _check("ptx", simulator=False)
    missing = [line for line in result.stderr.splitlines()
               if "NvvmSupportError" in line or "libnvvm" in line.lower() or "nvrtc" in line.lower()]
    if result.returncode != 0 and missing:
        pytest.skip(f"no CUDA compiler libraries here: {missing[-1].strip()}")
    _passed(result)


def test_launcher_source_names_every_node_and_counts_launches(capsys):
    fm = build_model(json.loads(Path(EXAMPLE).read_text()), seed=0)
    compiled = run_pipeline("train", fm.lower(training=True), [w.node for w in fm.weights],
                            losses=[{"name": "sparse_categorical_crossentropy"}],
                            optimizer=("adam", {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}))
    source, launches = generate_cuda(compiled)
    compile(source, "launcher.py", "exec")
    for node in compiled.graph.nodes():
        if not node.is_source:
            assert "# " + ir.format_node(node) in source
    # 2 dense GEMMs, softmax, loss, mean, 3 for the loss gradient's 1/B, its backward, bias
    # gradient, 3 backward GEMMs, 2 dropout multiplies, the fused backward, one optimizer update
    assert launches == 17 and f"LAUNCHES = {launches}" in source
    assert source.count("K.adam[") == 1 and "K.gemm(False, False, epilogue_hidden_relu_fused)" in source
    assert main(["inspect", EXAMPLE, "--device", "cuda", "--after", "plan"]) == 0
    assert "# CUDA: 17 kernel launches per train step" in capsys.readouterr().out


def test_cuda_without_a_gpu_is_a_clear_error():
    from numba import cuda

    import kgraph.models

    if cuda.is_available():
        pytest.skip("a GPU is present")
    model = kgraph.models.load_model(EXAMPLE, seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")   # device "auto": the CPU
    assert model.device == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", device="cuda")
