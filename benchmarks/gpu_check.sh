#!/usr/bin/env bash
# Every check of kgraph's CUDA backend that needs a real GPU, in one run of under 10 minutes on a
# one-GPU machine (an H100 or H200 with numba, numba-cuda and torch installed). Written on a
# machine without a GPU: NOTHING HERE HAS RUN ON HARDWARE YET. From the repository's root:
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]     # figures and logs into OUT_DIR (default: $OUT, else gpu_check_out)
#
# Optional wheels (the GPU machines have no network): put nccl4py and its dependencies
# (nvidia-nccl-cu13, cuda-core, cuda-bindings, cuda-pathfinder; `pip download "nccl4py[cu13]"`) in
# wheels/ and they are installed first; without them the NCCL step says so and the rest runs.
#
# Steps (each under its own time limit, each one line in summary.txt, with the device's name):
#  1. tests/test_cuda.py and tests/test_cuda_replicas.py for real (KGRAPH_TEST_REAL_GPU=1: the
#     checks the suite runs in the simulator run on the GPU; the PTX test too);
#  2. the CUDA training of examples/digits_mlp.json against the CPU backend (benchmarks/gpu_check.py);
#  3. benchmarks/cuda_bench.py: the fused dense layer at 4096 against torch.mm (TF32 off), MLP
#     training against PyTorch eager, launches and host time per step;
#  4. a 1-rank NCCL all-reduce of a real gradient bucket (and 2 GPUs through NCCL where there are);
#  5. 2 replicas on one GPU through the host-staged path, against 1 replica.
set -u
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$out"
summary="$out/summary.txt"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_WAIT_POLICY=passive
{
  echo "# kgraph gpu_check $(date -u +%Y-%m-%dT%H:%MZ) commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "device: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)"
  python -c "import sys, numpy, numba; print('python', sys.version.split()[0], 'numpy', numpy.__version__, 'numba', numba.__version__)"
  python -c "import numba_cuda; print('numba-cuda', numba_cuda.__version__)" 2>/dev/null || echo "numba-cuda: not installed"
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>/dev/null || echo "torch: not installed"
} >"$summary"

if ls wheels/*.whl >/dev/null 2>&1; then
  pip install --no-index --find-links wheels nccl4py >"$out/pip_nccl.log" 2>&1 \
    && echo "nccl4py: installed from wheels/" >>"$summary" || echo "nccl4py: install from wheels/ FAILED (pip_nccl.log)" >>"$summary"
fi

step() {  # step NAME SECONDS COMMAND...: its output in OUT/NAME.log, its last line and status in the summary
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  local last
  last=$(grep -v '^\s*$' "$out/$name.log" | tail -1)
  echo "$name: rc=$rc $((SECONDS - start))s | $last" >>"$summary"
}

KGRAPH_TEST_REAL_GPU=1 step tests 240 python -m pytest -q -p no:cacheprovider -n 0 tests/test_cuda.py tests/test_cuda_replicas.py
step example 90 python -m benchmarks.gpu_check example
step cuda_bench 150 python -m benchmarks.cuda_bench
grep -E "GFLOP|samples/s" "$out/cuda_bench.log" >>"$summary"
if python -c "import nccl.core" 2>/dev/null; then
  step nccl 60 python -m benchmarks.gpu_check nccl
else
  echo "nccl: SKIPPED, nccl4py is not installed (put its wheels in wheels/)" >>"$summary"
fi
step two_on_one 60 python -m benchmarks.gpu_check two_on_one
grep "two_on_one" "$out/two_on_one.log" >>"$summary"
cat "$summary"
