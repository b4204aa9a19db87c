"""No slowdown over long runs: kgraph's samples/s in each of 20 epochs of the suite's first model
(784-128-10, batch 32, Adam), epoch 20 against epoch 2. Denormals and allocation growth would
show here, and so would the thread tuner looking again (kgraph/runtime/threads.py).
Writes benchmarks/LONG_RUN.md.

    python -m benchmarks.long_run [--epochs 20] [--steps 4000] [--model mlp_784_128_10_b32_adam]

Each epoch's user and system CPU seconds are shown beside its speed: a trainer that slowed down
(denormals, allocation growth) would spend more user time on each later epoch. On a shared VM
both move with the host: the split step's threads wait longer for each other when the host is
busy (user time), and a machine that pages out memory left untouched for about a second (this
VM runs DAMON's pageout) faults the training data back in (system time)."""

from __future__ import annotations

import argparse
import datetime
import statistics
from pathlib import Path

from kgraph import callbacks, models, optimizers
from kgraph.bench import _EpochTimer, make_data

from .__main__ import _machine
from .models import SUITE

HERE = Path(__file__).parent


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--model", default="mlp_784_128_10_b32_adam")
    p.add_argument("--steps", type=int, default=4000, help="steps per epoch")
    args = p.parse_args()
    spec = {**SUITE[args.model], "steps": args.steps}
    n = spec["batch"] * spec["steps"]
    xs, y = make_data(spec["config"], n, spec["n_out"], spec["loss"])
    model = models.model_from_config(spec["config"], seed=0)
    opt = optimizers.get(spec["optimizer"][0])
    opt.learning_rate = spec["optimizer"][1]
    model.compile(optimizer=opt, loss=spec["loss"])
    model.train_on_batch([x[: spec["batch"]] for x in xs], y[: spec["batch"]])
    model.executable.compiler.wait()  # a step new to the cache: the epochs time the compiled one
    timer = _EpochTimer()
    cb = callbacks.LambdaCallback(on_epoch_begin=timer.begin, on_epoch_end=timer.end)
    model.fit(xs, y, batch_size=spec["batch"], epochs=args.epochs, verbose=0, callbacks=[cb], shuffle=True)
    rates = [n / wall for wall in timer.times]
    ratio = rates[-1] / rates[1]
    lines = [
        "# Long runs",
        "",
        f"Machine: {_machine()}. Measured {datetime.date.today().isoformat()} by `python -m benchmarks.long_run`:",
        f"{args.model}, {args.epochs} epochs of {spec['steps']} steps, shuffled.",
        "",
        "| epoch | samples/s | user CPU (s) | system CPU (s) |",
        "|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {i + 1} | {r:.0f} | {user:.2f} | {system:.2f} |"
        for i, (r, (user, system)) in enumerate(zip(rates, timer.cpu))
    ]
    early, late = statistics.median(rates[1:6]), statistics.median(rates[-5:])
    users = [user for user, _ in timer.cpu]
    spread = (max(rates[1:]) - min(rates[1:])) / statistics.median(rates[1:])
    lines += [
        "",
        f"Epoch {args.epochs} against epoch 2: {ratio:.3f} (the target is within 5%: 0.95 or more).",
        f"The median of the last 5 epochs against that of epochs 2 to 6: {late / early:.3f}. Epochs 2 to "
        f"{args.epochs} spread over {100 * spread:.0f}% of their median.",
        f"User CPU of the last 5 epochs against that of epochs 2 to 6 (medians): "
        f"{statistics.median(users[-5:]) / statistics.median(users[1:6]):.3f}.",
        "",
    ]
    (HERE / "LONG_RUN.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
