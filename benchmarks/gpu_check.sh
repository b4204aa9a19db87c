#!/usr/bin/env bash
# Every check of kgraph's CUDA backend that needs a real GPU, in one run of under 10 minutes (the
# steps' limits add up to 585 s) on a one-GPU machine (an H100 or H200 with numba, numba-cuda and
# torch installed). Written on a machine without a GPU: NOTHING HERE HAS RUN ON HARDWARE YET. From the repository's root:
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]     # figures and logs into OUT_DIR (default: $OUT, else gpu_check_out)
#
# Then commit OUT_DIR/summary.txt's figures, with the device's name it records, in benchmarks/RESULTS.md.
#
# Needs pytest there. The GPU machines have no network: wheels in wheels/ are installed first, e.g.
# `pip download -d wheels pytest pytest-xdist nccl4py nvidia-nccl-cu13` (nccl4py brings cuda-core,
# cuda-pathfinder); without nccl4py the NCCL step says so and the rest runs.
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

if ls wheels/*.whl >/dev/null 2>&1; then  # every wheel there (nccl4py's, pytest's where missing)
  pip install --no-index --find-links wheels wheels/*.whl >"$out/pip_wheels.log" 2>&1 \
    && echo "wheels/: installed" >>"$summary" || echo "wheels/: install FAILED (pip_wheels.log)" >>"$summary"
fi
workers=()
python -c "import xdist" 2>/dev/null && workers=(-n 4)  # 4 test processes share the GPU: compiling is the bound

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

step tests 300 env KGRAPH_TEST_REAL_GPU=1 python -m pytest -q -p no:cacheprovider -o addopts= "${workers[@]}" \
  tests/test_cuda.py tests/test_cuda_replicas.py
step example 60 python -m benchmarks.gpu_check example
step cuda_bench 120 python -m benchmarks.cuda_bench
grep -E "GFLOP|samples/s" "$out/cuda_bench.log" >>"$summary"
if python -c "import nccl.core" 2>/dev/null; then
  step nccl 45 python -m benchmarks.gpu_check nccl
else
  echo "nccl: SKIPPED, nccl4py is not installed (put its wheels in wheels/)" >>"$summary"
fi
step two_on_one 60 python -m benchmarks.gpu_check two_on_one
grep "two_on_one" "$out/two_on_one.log" >>"$summary"
cat "$summary"
