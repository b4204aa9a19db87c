"""The entry point of a trainer written by `kgraph compile`: runs with the runtime and the optimizers alone."""

from __future__ import annotations

import argparse
import sys

from numba.core.errors import NumbaError

from ..kernels import fingerprint
from . import data
from .model import CompiledModel


REEXPORT = (
    "this trainer was written by an older kgraph, whose generated steps call kernels that have "
    "moved: write it again with `kgraph compile CONFIG -o DIR`"
)
CHANGED = (
    "this trainer's steps were written for other kgraph kernels than the installed ones (kgraph "
    "was upgraded since `kgraph compile -o`), and a step's call of one failed: write it again with "
    "`kgraph compile CONFIG -o DIR`"
)


def main(directory, argv=None, *, get_optimizer=None) -> int:
    """get_optimizer: kgraph.optimizers.get, passed in by train.py (the runtime imports nothing above it)."""
    if get_optimizer is None:  # a train.py from before the runtime took it
        print(f"error: {REEXPORT}", file=sys.stderr)
        return 2
    p = argparse.ArgumentParser(
        description=f"Train the model compiled in {directory} (needs only kgraph's runtime and optimizers)."
    )
    p.add_argument(
        "--data", required=True, help=f"an .npz file (x, y[, x_val, y_val]) or one of: {', '.join(data.BUILTIN)}"
    )
    p.add_argument("--epochs", type=int, default=5, help="passes over the training rows (default: 5)")
    p.add_argument("--batch-size", type=int, default=32, help="samples per step (default: 32)")
    p.add_argument(
        "--validation-split",
        type=float,
        default=0.0,
        help="fraction of the rows (the last ones, as Keras) kept for validation when --data has no x_val",
    )
    p.add_argument("--weights", help="start from these weights (.npz, as --save-weights writes them)")
    p.add_argument(
        "--seed", type=int, help="seed of the shuffling and of dropout's and noise's draws (default: a fresh one)"
    )
    p.add_argument("--save-weights", help="write the trained weights here (.npz)")
    p.add_argument(
        "--verbose", type=int, default=1, choices=[0, 1, 2], help="0 silent, 1 progress bar, 2 one line per epoch"
    )
    args = p.parse_args(argv)
    model = None
    try:
        model = CompiledModel.from_directory(directory, get_optimizer, seed=args.seed)
        if args.weights:
            model.load_weights(args.weights)
        xs, ys, val = data.load(args.data)
        data.check_names(args.data, xs, ys, val, model.info)
        hist = model.fit(
            xs,
            ys,
            batch_size=args.batch_size,
            epochs=args.epochs,
            verbose=args.verbose,
            validation_data=val,
            validation_split=args.validation_split if val is None else 0.0,
        )
        if args.save_weights:
            model.save_weights(args.save_weights)
        final = " - ".join(f"{k}: {v[-1]:.4f}" for k, v in hist.history.items())
        print(f"final: {final}" if final else "final: no epochs ran (--epochs 0)")
    except ImportError as e:  # ModuleNotFoundError too: a step importing a kgraph module that moved
        if not (e.name or "").startswith("kgraph"):
            raise
        print(f"error: {REEXPORT} ({e})", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (TypeError, NumbaError) as e:  # a step calling a kernel whose parameters changed since
        if model is None or model.exported_kernels == fingerprint():
            raise
        print(f"error: {CHANGED} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})", file=sys.stderr)
        return 2
    return 0
