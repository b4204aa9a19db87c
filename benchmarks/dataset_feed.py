"""fit fed from a Dataset against fit fed from the same arrays (issue #19: a Dataset of arrays
should cost the step nothing). Each framework's two feeds alternate, each run in its own
process; medians of the samples/s of the timed epochs. Writes DATASET_FEED.md.

    python -m benchmarks.dataset_feed [--repeats 5] [--epochs 3] [--vs tensorflow]

kgraph reads `kgraph.data.Dataset.from_tensor_slices((x, y)).batch(b).prefetch(AUTOTUNE)` (with
`.shuffle(1000, seed=0)` before batch in the shuffled case, against fit(shuffle=True) on the
arrays), TensorFlow the same pipeline in tf.data."""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import statistics
from pathlib import Path

from kgraph.bench import measure_in_subprocess

from .__main__ import _machine, _versions
from .models import SUITE

HERE = Path(__file__).parent
# (benchmark, shuffled): shuffled, the arrays with fit(shuffle=True), the Dataset with shuffle(1000)
CASES = [("mlp_784_128_10_b32_adam", False), ("mlp_784_128_10_b256_adam", False), ("mlp_784_128_10_b32_adam", True)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--vs", default="tensorflow")
    p.add_argument("--out", default=str(HERE / "DATASET_FEED.md"))
    args = p.parse_args()
    frameworks = ["kgraph"] + [f for f in args.vs.split(",") if f and importlib.util.find_spec(f)]
    lines = [
        "# fit from a Dataset against fit from arrays",
        "",
        f"Machine: {_machine()}. Measured {datetime.date.today().isoformat()} by "
        f"`python -m benchmarks.dataset_feed --repeats {args.repeats}` (medians; the two feeds alternate, "
        "each run in its own process).",
        f"Versions: {', '.join(f'{k} {v}' for k, v in _versions().items())}.",
        "",
        "Wall: samples per second of the timed epochs. CPU: samples per CPU second (user + system, every",
        "thread of the process, the prefetching one included), which other load on a shared machine does not",
        "change; the issue's 5% is judged on it when the wall figures spread.",
        "",
        "| benchmark | framework | shuffled | arrays (samples/s) | Dataset (samples/s) | Dataset / arrays | "
        "arrays (samples/CPU s) | Dataset (samples/CPU s) | Dataset / arrays, CPU |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, shuffled in CASES:
        spec = {**SUITE[name], "shuffle": shuffled}
        for f in frameworks:
            rates = {"arrays": [], "dataset": []}
            cpu = {"arrays": [], "dataset": []}
            for _ in range(args.repeats):
                for feed in rates:
                    run = measure_in_subprocess(f, {**spec, "feed": feed}, args.epochs)
                    rates[feed].append(run["samples_per_s"])
                    cpu[feed].append(run["samples_per_cpu_s"])
            a, d = statistics.median(rates["arrays"]), statistics.median(rates["dataset"])
            ca, cd = statistics.median(cpu["arrays"]), statistics.median(cpu["dataset"])
            what = "shuffled" if shuffled else "in order"
            print(f"{name} {what} {f}: arrays {a:.0f}, Dataset {d:.0f} samples/s ({d / a:.3f}); "
                  f"per CPU s {ca:.0f}, {cd:.0f} ({cd / ca:.3f})", flush=True)  # fmt: skip
            lines.append(
                f"| {name} | {f} | {'yes' if shuffled else 'no'} | {a:.0f} | {d:.0f} | {d / a:.3f} | "
                f"{ca:.0f} | {cd:.0f} | {cd / ca:.3f} |"
            )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
