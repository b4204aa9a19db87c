"""Run the suite against TensorFlow and PyTorch in one run and write RESULTS.md and results.png.

    python -m benchmarks [--only NAME] [--repeats 3] [--epochs 3] [--vs tensorflow,torch] [--cold]

With --only, the entries not run keep their figures from results.json (RESULTS.md says which day
measured which); the notes after RESULTS.md's HAND_NOTES line are kept. --cold measures only
kgraph's first step on an empty cache (of every entry, or those of --only) into results.json.

Needs the `bench` extra (tensorflow-cpu, torch, matplotlib); a missing peer is skipped."""

from __future__ import annotations

import argparse
import json
import datetime
import importlib.util
import os
import platform
from pathlib import Path

import numpy as np

from kgraph.bench import cold_first_step, compare, gemm_peak_gflops
from kgraph.runtime.files import write_text as write_atomic

from .models import SUITE, gemm_flops_per_step

HERE = Path(__file__).parent


def _versions():
    import numba

    out = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__}
    for mod in ("tensorflow", "torch"):
        if importlib.util.find_spec(mod):
            out[mod] = __import__(mod).__version__
    return out


def _machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", help="run only these suite entries")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--vs", default="tensorflow,torch")
    p.add_argument("--out", default=str(HERE))
    p.add_argument("--rewrite", action="store_true", help="rewrite RESULTS.md from results.json, measuring nothing")
    p.add_argument("--cold", action="store_true", help="measure only kgraph's first step on an empty cache")
    args = p.parse_args()
    if args.rewrite or args.cold:
        saved = json.loads((Path(args.out) / "results.json").read_text())
        for name, row in saved["rows"].items():
            if args.cold and (not args.only or name in args.only):
                row["kgraph"]["first_step_cold_s"] = cold_first_step(SUITE[name])
                when = {"date": datetime.date.today().isoformat(), "machine": _machine()}
                saved.setdefault("measured", {}).setdefault(name, {"date": "an earlier run", "peak": saved["peak"]})
                saved["measured"][name]["cold"] = when
                print(f"{name}: kgraph's first step on an empty cache {row['kgraph']['first_step_cold_s']:.2f} s")
        write_results(Path(args.out), saved["rows"], saved["frameworks"], saved["peak"], saved.get("measured"))
        return
    peers = [f for f in args.vs.split(",") if f and importlib.util.find_spec(f)]
    frameworks = ["kgraph"] + peers
    peak = gemm_peak_gflops()
    rows, measured = {}, {}
    for name, spec in SUITE.items():
        if args.only and name not in args.only:
            continue
        print(f"{name}: {', '.join(frameworks)} x {args.repeats}", flush=True)
        rows[name] = compare(spec, frameworks, repeats=args.repeats, epochs=args.epochs)
        measured[name] = {"date": datetime.date.today().isoformat(), "peak": peak, "machine": _machine()}
        for f, r in rows[name].items():
            print(
                f"  {f:<11} {r['samples_per_s']:>10.0f} samples/s  import {r['import_s']:.2f} s  "
                f"first step {r['first_step_s']:.2f} s "
                f"(new model {r['first_step_new_s']:.2f} s, empty cache {r['first_step_cold_s']:.2f} s)  "
                f"loss {r['final_loss']:.4f}  rss {r['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    if args.only:  # the entries not run keep their earlier figures, and say when they were taken
        rows, measured = _merged(Path(args.out), rows, measured)
    write_results(Path(args.out), rows, frameworks, peak, measured)


def _merged(out: Path, rows, measured):
    """The saved results.json's rows with this run's in their place (in the suite's order)."""
    path = out / "results.json"
    if not path.exists():
        return rows, measured
    saved = json.loads(path.read_text())
    old_dates = saved.get("measured", {})
    for name in saved["rows"]:
        if name not in rows:
            measured[name] = old_dates.get(name, {"date": "an earlier run", "peak": saved["peak"]})
    both = {**saved["rows"], **rows}
    order = [n for n in SUITE if n in both]
    return {n: both[n] for n in order}, {n: measured[n] for n in order}


def _seconds(value) -> str:
    return "—" if value is None else f"{value:.2f}"


# RESULTS.md's text after this line is written by hand and kept when the tables are rewritten
HAND_NOTES = "<!-- notes written by hand below: python -m benchmarks keeps them -->"


# rows measured before results.json recorded each row's machine: the machine RESULTS.md named then
EARLIER_MACHINE = "Intel(R) Xeon(R) Processor, 2 cores, Linux x86_64"


def _days(measured) -> dict:
    """{(date, machine): (the rows measured in that run, its sgemm peak)}, in date order."""
    days = {}
    for name, m in (measured or {}).items():
        days.setdefault((m["date"], m.get("machine", EARLIER_MACHINE)), ([], m["peak"]))[0].append(name)
    return dict(sorted(days.items()))


def _when(days) -> str:
    """'Machine: M. Measured D' or, when rows were measured in several runs (--only), each run's
    machine and rows: a ratio compares frameworks within a row; rows of different runs differ."""
    if len(days) <= 1:
        date, machine = next(iter(days), (datetime.date.today().isoformat(), _machine()))
        return f"Machine: {machine}. Measured {date}"
    return "Measured on several machines or days, each row in one run: " + "; ".join(
        f"{d} on {m}: {', '.join(names)}" for (d, m), (names, _) in days.items()
    )


def _peaks(days, peak) -> str:
    """The sgemm peak, or each run's when rows were measured in several runs."""
    if len(days) <= 1:
        return f"{peak:.0f} GFLOP/s"
    return "; ".join(f"{p:.0f} GFLOP/s in the {d} run on {m.split(',')[0]}" for (d, m), (_, p) in days.items())


def write_results(out: Path, rows, frameworks, peak, measured=None):
    """RESULTS.md, results.json and results.png from the rows. The % of the GEMM-bound limit uses
    each row's own run's sgemm peak where measured says it."""
    row_peak = lambda name: (measured or {}).get(name, {}).get("peak", peak)
    days = _days(measured)
    lines = [
        "# Benchmark results",
        "",
        f"{_when(days)} by `python -m benchmarks` (medians of alternating runs, each in its own process).",
        f"Versions: {', '.join(f'{k} {v}' for k, v in _versions().items())}.",
        f"float32 GEMM peak (NumPy sgemm 1024³): {_peaks(days, peak)}.",
    ]
    cold = {(m["cold"]["date"], m["cold"]["machine"]) for m in (measured or {}).values() if "cold" in m}
    if cold:  # --cold measured them apart from the rest of their rows
        runs = "; ".join(f"{d} on {m}" for d, m in sorted(cold))
        lines.append(f"kgraph's first steps on an empty cache: measured by `--cold`, {runs}.")
    if os.environ.get("NUMBA_OPT", "3") != "3":  # kgraph's kernels compiled (or cached) below -O3
        lines.append(f"NUMBA_OPT={os.environ['NUMBA_OPT']} was set (kgraph's kernels not fully optimised).")
    if os.environ.get("OPENBLAS_CORETYPE"):
        lines.append(f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} was set (slows NumPy/Numba GEMMs).")
    lines += [
        "",
        "| benchmark | framework | samples/s | vs kgraph | % of GEMM-bound limit | import (s) | "
        "first step (s) | first step, new model (s) | first step, empty cache (s) | peak RSS (MB) | final loss |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, res in rows.items():
        spec = SUITE[name]
        limit = row_peak(name) * 1e9 / gemm_flops_per_step(spec["config"], spec["batch"]) * spec["batch"]
        if spec.get("predict"):
            limit *= 3  # inference does a third of the GEMM work
        for f in frameworks:
            r = res[f]
            ratio = res["kgraph"]["samples_per_s"] / r["samples_per_s"]
            lines.append(
                f"| {name} | {f} | {r['samples_per_s']:.0f} | {ratio:.2f}× | "
                f"{100 * r['samples_per_s'] / limit:.0f}% | {_seconds(r.get('import_s'))} | "
                f"{r['first_step_s']:.2f} | "
                f"{r.get('first_step_new_s', r['first_step_s']):.2f} | "
                f"{_seconds(r.get('first_step_cold_s', r['first_step_s'] if f != 'kgraph' else None))} | "
                f"{r['peak_rss_mb']:.0f} | {r['final_loss']:.4f} |"
            )
    lines += targets(rows, row_peak)
    lines += [
        "",
        "\"vs kgraph\" is kgraph's samples/s divided by that framework's (above 1: kgraph is faster).",
        "The GEMM-bound limit is the GEMM peak divided by 6·batch·Σ in·out FLOPs per step (issue #4's",
        "definition); the first layer needs no input gradient, so a step can run above 100% of it.",
        "Import: `import kgraph.models`, `import keras` (TensorFlow) or `import torch` in a fresh process",
        "that has already imported NumPy; each framework sets itself up there (kgraph loads Numba's",
        "registries, which Numba would otherwise load on the first step).",
        "First step: from building the model to the end of its first training step (first prediction for",
        "predict), compilation included. kgraph's compiled steps come from its on-disk cache after the first",
        "run; \"new model\" is the first step of a model whose step was never compiled (a fresh name), with",
        "kgraph's kernels in the cache as after any earlier model: that step runs as Python calling the",
        "compiled kernels while a child process compiles it (kgraph/runtime/background.py). The peers",
        "compile every run, so both columns show the same figure for them. \"Empty cache\" is kgraph's first",
        "step in a fresh process with empty Numba and kgraph caches (a fresh install: the kernels compile",
        "too), measured once an entry; the peers have no such cache, so it is their first step again.",
        "The epochs are timed once kgraph's step is compiled; an entry ending in \"_8_steps\" is a short run,",
        "whose samples/s count every epoch from the first (what the runtime spends deciding included).",
    ]
    out.mkdir(parents=True, exist_ok=True)
    results = out / "RESULTS.md"
    _, marker, notes = (results.read_text() if results.exists() else "").partition(HAND_NOTES)
    lines += [HAND_NOTES + notes] if marker else [HAND_NOTES, ""]
    saved = {"frameworks": frameworks, "peak": peak, "rows": rows, "measured": measured or {}}
    write_atomic(results, "\n".join(lines))
    write_atomic(out / "results.json", json.dumps(saved, indent=1))
    _chart(out / "results.png", rows, frameworks)
    print(f"wrote {out / 'RESULTS.md'} and {out / 'results.png'}")


# issue #4's targets: (what, suite entry, peer or None for samples/s, at least)
TARGETS = [
    ("784-128-10 b32: 12x TensorFlow's fit", "mlp_784_128_10_b32_adam", "tensorflow", 12.0),
    ("784-128-10 b32: 5x PyTorch eager", "mlp_784_128_10_b32_adam", "torch", 5.0),
    ("784-128-10 b256: 2.2x PyTorch eager", "mlp_784_128_10_b256_adam", "torch", 2.2),
    ("784-512-512-10 b128: 62k samples/s (1.5x torch.compile)", "mlp_784_512_512_10_b128_adam", None, 62000),
    ("wide MLP b256: 1.1x TensorFlow", "wide_1024_4096_4096_1024_b256_sgd", "tensorflow", 1.1),
    # issue #16's
    ("LSTM text b32: 3x TensorFlow's fit", "lstm_text_20k_e128_t80_u128_b32_adam", "tensorflow", 3.0),
    ("LSTM text b32: ahead of PyTorch eager", "lstm_text_20k_e128_t80_u128_b32_adam", "torch", 1.0),
    # issue #18's: the suite's CNNs at 2x PyTorch eager and 3x TensorFlow
    ("simple CNN b64: 2x PyTorch eager", "cnn_28x28_conv32_b64_adam", "torch", 2.0),
    ("simple CNN b64: 3x TensorFlow's fit", "cnn_28x28_conv32_b64_adam", "tensorflow", 3.0),
    ("BN CNN b64: 2x PyTorch eager", "cnn_bn_28x28_3blocks_b64_adam", "torch", 2.0),
    ("BN CNN b64: 3x TensorFlow's fit", "cnn_bn_28x28_3blocks_b64_adam", "tensorflow", 3.0),
    ("BN CNN b128: 2x PyTorch eager", "cnn_bn_28x28_3blocks_b128_adam", "torch", 2.0),
    ("BN CNN b128: 3x TensorFlow's fit", "cnn_bn_28x28_3blocks_b128_adam", "tensorflow", 3.0),
]


def targets(rows, peak_of) -> list:
    """The targets table: each measured, met or not, the samples/s it needs and the GEMM-bound
    limit that caps it on this machine (peak_of(name): the sgemm GFLOP/s of the run that measured name)."""
    lines = [
        "",
        "## Targets",
        "",
        "| target | measured | met | kgraph samples/s it needs | GEMM-bound limit | needs / limit |",
        "|---|---:|:---:|---:|---:|---:|",
    ]
    for what, name, peer, goal in TARGETS:
        if name not in rows or (peer and peer not in rows[name]):
            continue
        spec, ours = SUITE[name], rows[name]["kgraph"]["samples_per_s"]
        value = ours / rows[name][peer]["samples_per_s"] if peer else ours
        needs = goal * rows[name][peer]["samples_per_s"] if peer else goal
        limit = peak_of(name) * 1e9 / gemm_flops_per_step(spec["config"], spec["batch"]) * spec["batch"]
        shown = f"{value:.2f}x" if peer else f"{value:.0f}"
        lines.append(
            f"| {what} | {shown} | {'yes' if value >= goal else 'no'} | {needs:.0f} | {limit:.0f} | "
            f"{100 * needs / limit:.0f}% |"
        )
    lines += [
        "",
        "The limit counts the first layer's input gradient, which no framework computes, so a step",
        "can pass 100% of it; a target above about 100% is out of reach at this machine's sgemm peak.",
        "At batch 32 a 784x128 GEMM with 32 rows runs at a fraction of a core's sgemm peak: the step",
        "splits its GEMMs and update over both cores (kgraph/passes/split.py), which pays only when",
        "the second core is free (see the note on this machine below).",
    ]
    return lines + first_step_and_memory_targets(rows, peak_of)


WARM_FIRST_STEP_S = 0.5


def first_step_and_memory_targets(rows, peak_of) -> list:
    """Issue #4's per-model targets: a first step no slower than TensorFlow's, under 0.5 s with
    the cache warm, and a peak RSS below TensorFlow's. The GEMM-bound time of one step is what
    bounds a first step from below (a first prediction for predict)."""
    lines = [
        "",
        "| model | first step: kgraph warm / new model / empty cache / TensorFlow (s) | ≤ TensorFlow | "
        f"warm < {WARM_FIRST_STEP_S} s | one step at the GEMM-bound limit (s) | "
        "peak RSS: kgraph / TensorFlow (MB) | below TensorFlow |",
        "|---|---:|:---:|:---:|---:|---:|:---:|",
    ]
    yes = lambda ok: "yes" if ok else "no"
    for name, res in rows.items():
        if "tensorflow" not in res:
            continue
        spec, ours, tf = SUITE[name], res["kgraph"], res["tensorflow"]
        flops = gemm_flops_per_step(spec["config"], spec["batch"]) / (3 if spec.get("predict") else 1)
        warm, new = ours["first_step_s"], ours.get("first_step_new_s", ours["first_step_s"])
        lines.append(
            f"| {name} | {warm:.2f} / {new:.2f} / {_seconds(ours.get('first_step_cold_s'))} / {tf['first_step_s']:.2f} | "
            f"{yes(max(warm, new) <= tf['first_step_s'])} | {yes(warm < WARM_FIRST_STEP_S)} | "
            f"{flops / (peak_of(name) * 1e9):.3f} | {ours['peak_rss_mb']:.0f} / {tf['peak_rss_mb']:.0f} | "
            f"{yes(ours['peak_rss_mb'] < tf['peak_rss_mb'])} |"
        )
    return lines


def _chart(path, rows, frameworks):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart")
        return
    names = list(rows)
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(names) * len(frameworks) + 1.5))
    height = 0.8 / len(frameworks)
    for k, f in enumerate(frameworks):
        speedups = [rows[n]["kgraph"]["samples_per_s"] / rows[n][f]["samples_per_s"] for n in names]
        ax.barh([i + k * height for i in range(len(names))], [1 / s for s in speedups], height, label=f)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(names))], names)
    ax.set_xlabel("samples/s relative to kgraph (kgraph = 1)")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.legend()
    ax.set_title("Training throughput, same model, data and machine")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
