"""The LSTM text classifier of the suite (lstm_text_20k_e128_t80_u128) on batches of variable
length (issue 22): how many steps kgraph compiles and the samples/s of the timed epochs, against
the same model fed fixed-length arrays. Prints a table (and writes it with --out).

    python -m benchmarks.variable_lengths [--samples 4096] [--batch 32] [--epochs 2] [--per-length] [--out F.md]

The model declares [None, None] word ids with Embedding(mask_zero=True). Modes:
  fixed       arrays of length 80 (one step)
  bucketed    a generator of batches each padded to its own longest row (lengths drawn around 80,
              8 to 400), as a Dataset padding per batch gives them: kgraph compiles the first 4
              lengths as they are and pads later new lengths to powers of two (KGRAPH_EXACT_LENGTHS)
  per-length  the same batches with the padding off (EXACT_LENGTHS = -1): a step per length, the 16
              used last kept (KGRAPH_MAX_SHAPES). It compiles once per distinct length (tens of
              seconds each), so it runs only with --per-length; without it the table gives the
              count it would compile.
Each mode runs one warm-up epoch, waits for its background compiles, runs two more, then times
--epochs epochs. samples/s counts rows; "tokens kept" is the share of the fed positions that are
real words (the rest is padding: the recurrent loop skips a step that no row of the batch reaches,
but the input projection, and a step where some rows still have words, compute it)."""

from __future__ import annotations

import argparse
import copy
import datetime
import time

import numpy as np

from .models import SUITE


def config():
    """The suite's LSTM text classifier with [None, None] inputs and Embedding(mask_zero=True)."""
    cfg = copy.deepcopy(SUITE["lstm_text_20k_e128_t80_u128_b32_adam"]["config"])
    layers = cfg["config"]["layers"]
    layers[0]["config"]["batch_shape"] = [None, None]
    layers[1]["config"]["mask_zero"] = True
    return cfg


def lengths(rng, n, mean=80, low=8, high=400):
    """Review lengths: log-normal around `mean` (a batch's longest row then lies around 140 to 200),
    clipped to [low, high]."""
    return np.clip(np.round(rng.lognormal(np.log(mean), 0.35, n)), low, high).astype(int)


def batches(rng, n, batch, vocab=20000):
    """(x, y) batches, each padded with 0 to its own longest row."""
    out = []
    for start in range(0, n, batch):
        lens = lengths(rng, min(batch, n - start))
        x = np.zeros((len(lens), lens.max()), np.int32)
        for i, k in enumerate(lens):
            x[i, :k] = rng.integers(1, vocab, k)
        out.append((x, rng.integers(0, 2, len(lens)).astype(np.int32)))
    return out


def run(mode, data, batch, epochs):
    from kgraph.models import model_from_config

    model = model_from_config(config(), seed=0)
    if mode == "per-length":
        model.EXACT_LENGTHS, model.MAX_SHAPES = -1, 16
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")

    def fit(n_epochs):
        if mode == "fixed":
            x, y = data
            return model.fit(x, y, batch_size=batch, epochs=n_epochs, shuffle=False, verbose=0)

        def forever():
            while True:
                yield from data

        return model.fit(forever(), steps_per_epoch=len(data), epochs=n_epochs, verbose=0)

    start = time.perf_counter()
    fit(1)
    model.executable.compiler.wait()
    fit(2)  # the compiled steps load, the thread settings are timed
    warmup = time.perf_counter() - start
    start = time.perf_counter()
    fit(epochs)
    seconds = time.perf_counter() - start
    rows = len(data[0]) if mode == "fixed" else sum(len(x) for x, _ in data)
    words = int((data[0] > 0).sum()) if mode == "fixed" else sum(int((x > 0).sum()) for x, _ in data)
    return {
        "compiles": len(model._shapes),
        "warmup_s": warmup,
        "samples_per_s": rows * epochs / seconds,
        "words_per_s": words * epochs / seconds,
    }


def kept(data, bucket) -> float:
    """The share of fed positions that hold words when each batch is padded to `bucket(length)`."""
    words = sum(int((x > 0).sum()) for x, _ in data)
    fed = sum(len(x) * bucket(x.shape[1]) for x, _ in data)
    return words / fed


def main():
    from kgraph.models import _bucket

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--per-length", action="store_true", help="also run the per-length mode (slow: many compiles)")
    p.add_argument("--out", help="also write the table, with the machine and date, to this Markdown file")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    varied = batches(rng, args.samples, args.batch)
    fixed = (rng.integers(1, 20000, (args.samples, 80)).astype(np.int32), rng.integers(0, 2, args.samples))
    distinct = len({x.shape[1] for x, _ in varied})
    exact = list(dict.fromkeys(x.shape[1] for x, _ in varied))[:4]  # the lengths compiled as they are
    rows = [("fixed", fixed, 1.0), ("bucketed", varied, kept(varied, lambda n: n if n in exact else _bucket(n)))]
    if args.per_length:
        rows.append(("per-length", varied, kept(varied, lambda n: n)))
    table = [
        f"{args.samples} samples, batch {args.batch}, {len(varied)} batches of {distinct} distinct lengths",
        "",
        "| mode | steps compiled | warm-up (s) | samples/s | words/s | tokens kept | words/s / fixed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(table), flush=True)
    base = None
    for mode, data, share in rows:
        r = run(mode, data, args.batch, args.epochs)
        base = base or r["words_per_s"]
        table.append(
            f"| {mode} | {r['compiles'] or 1} | {r['warmup_s']:.1f} | {r['samples_per_s']:.0f} | "
            f"{r['words_per_s']:.0f} | {share:.2f} | {r['words_per_s'] / base:.2f} |"
        )
        print(table[-1], flush=True)
    if not args.per_length:
        table.append(f"| per-length (not run) | {distinct} | | | | {kept(varied, lambda n: n):.2f} | |")
        print(table[-1])
    if args.out:
        from kgraph.runtime.files import write_text

        from .__main__ import _machine, _versions

        head = [
            "# The LSTM text classifier on batches of variable length",
            "",
            f"Machine: {_machine()}. Measured {datetime.date.today().isoformat()} by "
            f"`python -m benchmarks.variable_lengths --samples {args.samples} --epochs {args.epochs}`.",
            f"Versions: {', '.join(f'{k} {v}' for k, v in _versions().items())}.",
            "",
            __doc__.split("\n\n", 1)[1].strip(),
            "",
            "words/s counts the real words (not the padding) a second: the fair comparison, since the fixed",
            "mode's rows are 80 words and the varied ones average about 80 inside batches padded to 140-200.",
            "",
        ]
        write_text(args.out, "\n".join(head + table) + "\n")


if __name__ == "__main__":
    main()
