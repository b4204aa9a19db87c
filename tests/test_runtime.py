"""Runtime details that keep long runs fast: denormals flushed, BLAS threads chosen per GEMM size."""
import json
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parent.parent / "examples" / "digits_mlp.json"


def test_denormals_are_flushed_once_a_model_exists():
    code = ("import numpy as np, json, sys\n"
            "import kgraph.models as m\n"
            "tiny = np.float32(1e-39)\n"
            "before = float(tiny * np.float32(1.0))\n"
            f"m.load_model({str(EXAMPLE)!r})\n"
            "after = float(tiny * np.float32(1.0))\n"
            "print(json.dumps([before, after]))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    before, after = json.loads(r.stdout.strip().splitlines()[-1])
    assert before > 0 and after == 0.0


def test_small_gemms_run_on_one_blas_thread():
    from threadpoolctl import threadpool_info

    from kgraph.runtime.executable import SMALL_GEMM_FLOPS, Executable

    exe = Executable({}, [])
    exe._choose_blas_threads(SMALL_GEMM_FLOPS / 2)
    assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}
    exe.max_blas_threads = 1
    exe._choose_blas_threads(SMALL_GEMM_FLOPS * 100)
    assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}
