"""A fresh install's first seconds, as a user sees them: `kgraph train` in a terminal on an empty
cache (Numba's and kgraph's), seconds from its "Epoch 1/2" line to the progress bar's first frame
(issue #18's targets: 1.5 s for the digits MLP, 3 s for the suite's CNNs; the LSTM example is
shown without one). The cases alternate, each run in a fresh process with fresh caches, and the
median is reported. Writes benchmarks/FIRST_BAR.md.

    python -m benchmarks.first_bar [--repeats 3]

The progress bar draws its frames only on a terminal, so each run gets a pseudo-terminal."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pty
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from kgraph.runtime.files import write_text

from .__main__ import _machine
from .models import cnn, cnn_bn

HERE = Path(__file__).parent
ROOT = HERE.parent
TIMEOUT_S = 120


def cases(tmp: Path) -> list:
    """(name, `kgraph train` arguments, target seconds or None)."""
    rs = np.random.RandomState(0)
    images = tmp / "images.npz"
    np.savez(images, x=rs.rand(1024, 28, 28, 1).astype(np.float32), y=rs.randint(0, 10, 1024))
    configs = {}
    for name, config in (("cnn", cnn("first_bar_cnn")), ("cnn_bn", cnn_bn("first_bar_cnn_bn"))):
        configs[name] = tmp / f"{name}.json"
        configs[name].write_text(json.dumps(config))
    return [
        ("digits MLP (examples/digits_mlp.json)", [str(ROOT / "examples/digits_mlp.json")], 1.5),
        ("simple CNN (suite), batch 64", [str(configs["cnn"]), "--data", str(images), "--batch-size", "64"], 3.0),
        ("BN CNN (suite), batch 64", [str(configs["cnn_bn"]), "--data", str(images), "--batch-size", "64"], 3.0),
        (
            "LSTM example, --data reviews",
            [str(ROOT / "examples/lstm_text_classifier.json"), "--data", "reviews"],
            None,
        ),
    ]


def first_bar_seconds(arguments: list) -> float:
    """Seconds from "Epoch 1/" to the first progress-bar frame after it, on an empty cache."""
    with tempfile.TemporaryDirectory(prefix="kgraph-first-bar-") as caches:
        env = dict(os.environ, NUMBA_CACHE_DIR=f"{caches}/numba", KGRAPH_CACHE_DIR=f"{caches}/kgraph", COLUMNS="100")
        command = [sys.executable, "-m", "kgraph.cli", "train", *arguments, "--epochs", "2", "--seed", "0"]
        parent, child = pty.openpty()
        process = subprocess.Popen(command, stdout=child, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        os.close(child)
        try:
            return _watch(parent, process)
        finally:
            process.kill()
            process.wait()
            os.close(parent)


def _watch(terminal: int, process) -> float:
    output, epoch_at, deadline = b"", None, time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([terminal], [], [], 0.01)
        if not ready:
            if process.poll() is not None:
                break
            continue
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # the process closed the terminal
            break
        now = time.monotonic()
        output += chunk
        if epoch_at is None and b"Epoch 1/" in output:
            epoch_at, output = now, output.split(b"Epoch 1/", 1)[1].partition(b"\n")[2]
        if epoch_at is not None and b"/" in output:  # a frame: " 1/45 ━━━━..."
            return now - epoch_at
    raise RuntimeError(f"no progress bar after 'Epoch 1/' within {TIMEOUT_S} s:\n{output[-2000:]!r}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = cases(Path(tmp))
        seconds = {name: [] for name, _, _ in runs}
        for _ in range(args.repeats):  # alternating: each case once a round
            for name, arguments, _ in runs:
                seconds[name].append(first_bar_seconds(arguments))
                print(f"{name}: {seconds[name][-1]:.2f} s", flush=True)
    lines = [
        "# A fresh install's first seconds",
        "",
        f"Machine: {_machine()}. Measured {datetime.date.today().isoformat()} by `python -m benchmarks.first_bar`:",
        '`kgraph train MODEL --epochs 2 --seed 0` in a pseudo-terminal with empty caches, seconds from "Epoch 1/2"',
        f"to the progress bar's first frame, {args.repeats} runs a case, the cases alternating.",
        "",
        "| case | runs (s) | median (s) | target (s) | met |",
        "|---|---|---:|---:|:---:|",
    ]
    for name, _, target in runs:
        median = statistics.median(seconds[name])
        met = "" if target is None else ("yes" if median <= target else "no")
        shown = "" if target is None else f"{target:.1f}"
        lines.append(f"| {name} | {', '.join(f'{s:.2f}' for s in seconds[name])} | {median:.2f} | {shown} | {met} |")
    write_text(HERE / "FIRST_BAR.md", "\n".join(lines) + "\n")
    print(f"wrote {HERE / 'FIRST_BAR.md'}")


if __name__ == "__main__":
    main()
