"""Data-parallel scaling on this machine: samples/s of 1 and 2 MPI ranks (and 2 in-process
replicas) on the same global batch, the scaling efficiency, and the time of the gradient
allreduce per step. Needs the `mpi` extra; writes benchmarks/DISTRIBUTED.md.

    python -m benchmarks.distributed [--batch 256] [--steps 60] [--repeats 3]"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
WORKER = r'''
import json, statistics, sys, time
import numpy as np
import kgraph.distribute, kgraph.models as models
from benchmarks.models import SUITE
spec = SUITE[sys.argv[1]]
batch, steps, mode = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
strategy = (kgraph.distribute.MPIStrategy() if mode == "mpi" else
            kgraph.distribute.MirroredStrategy([f"cpu:{i}" for i in range(int(mode))]))
with strategy.scope():
    model = models.model_from_config(spec["config"], seed=0)
    model.compile(optimizer=spec["optimizer"][0], loss=spec["loss"])
rs = np.random.RandomState(0)
x = rs.standard_normal((batch * steps, 784)).astype(np.float32)
y = rs.randint(0, spec["n_out"], batch * steps).astype(np.int32)
model.train_on_batch(x[:batch], y[:batch])          # compile and warm up
reps = getattr(model, "replicas", None)
allreduce = []
if reps is not None and hasattr(reps, "_allreduce"):  # time the collective alone, on the real bucket
    g = model.executable.grads
    for _ in range(20):
        reps.comm.Barrier(); t = time.perf_counter(); reps._allreduce(g, "timing"); allreduce.append(time.perf_counter() - t)
t = time.perf_counter()
for s in range(steps):
    model.train_on_batch(x[s * batch:(s + 1) * batch], y[s * batch:(s + 1) * batch])
elapsed = time.perf_counter() - t
if getattr(model, "is_chief", True):
    print("KGRAPH-DIST " + json.dumps({"samples_per_s": batch * steps / elapsed,
                                       "allreduce_ms": 1e3 * statistics.median(allreduce) if allreduce else 0.0,
                                       "grad_bucket_mb": model.executable.grads.nbytes / 2**20}))
'''


def run(mode, name, batch, steps):
    env = dict(
        os.environ,
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_mpi_yield_when_idle="1",
        PYTHONPATH=str(HERE.parent),
    )
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(WORKER)
    cmd = [sys.executable, f.name, name, str(batch), str(steps)]
    if mode.startswith("mpi"):
        ranks = mode[3:]
        cmd = ["mpirun", "-n", ranks, "--oversubscribe", "--bind-to", "none"] + cmd + ["mpi"]
        env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    else:
        cmd += [mode[len("threads") :]]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE.parent)
    os.unlink(f.name)
    for line in r.stdout.splitlines():
        if line.startswith("KGRAPH-DIST "):
            return json.loads(line[len("KGRAPH-DIST ") :])
    raise RuntimeError(f"{mode} failed:\n{r.stderr[-3000:]}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mlp_784_512_512_10_b128_adam")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    modes = ["mpi1", "mpi2", "threads1", "threads2"]
    runs = {m: [] for m in modes}
    for _ in range(args.repeats):  # alternate the configurations, then take medians
        for m in modes:
            runs[m].append(run(m, args.model, args.batch, args.steps))
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}

    from .__main__ import _machine, _versions

    lines = [
        "# Data-parallel scaling",
        "",
        f"Machine: {_machine()}. {time.strftime('%Y-%m-%d')}, `python -m benchmarks.distributed` "
        f"(medians of {args.repeats} alternating runs). Model {args.model}, global batch {args.batch}, "
        f"{args.steps} steps of Adam.",
        f"Versions: {', '.join(f'{k} {v}' for k, v in _versions().items())}.",
        "",
        "| replicas | samples/s | speed-up | scaling efficiency | allreduce per step (ms) | gradient bucket (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m, label, n, base in [
        ("mpi1", "1 MPI rank", 1, "mpi1"),
        ("mpi2", "2 MPI ranks", 2, "mpi1"),
        ("threads1", "1 replica in-process", 1, "threads1"),
        ("threads2", "2 threads (MirroredStrategy)", 2, "threads1"),
    ]:
        r, base = med[m], med[base]["samples_per_s"]
        lines.append(
            f"| {label} | {r['samples_per_s']:.0f} | {r['samples_per_s'] / base:.2f}× | "
            f"{100 * r['samples_per_s'] / base / n:.0f}% | {r['allreduce_ms']:.2f} | {r['grad_bucket_mb']:.2f} |"
        )
    lines += [
        "",
        "Each MPI rank runs one BLAS thread, the single rank too. In-process replicas run one BLAS thread",
        "each; the single in-process replica picks its BLAS threads as usual (two for GEMMs this size).",
        "No GPU was at hand: GPU figures are still to be measured.",
        "",
    ]
    (HERE / "DISTRIBUTED.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
