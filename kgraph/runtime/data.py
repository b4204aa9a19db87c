"""Training data from a file or a bundled dataset, for the CLI and compiled trainers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

BUILTIN = {
    "digits": "the UCI 8x8 handwritten digits (1,797 samples, bundled)",
    "reviews": "generated toy reviews: 40 word ids (1,000 words, 0 pads), 1 when good words outnumber bad",
}


class DataFileError(ValueError):
    pass


def load(spec: str, labels: bool = True):
    """(x, y, validation) from "digits", "reviews" or an .npz holding x (or x0, x1, ...), y (or y0, ...) and
    optionally x_val/y_val. x and y are lists of arrays; validation is None or (xs, ys). labels:
    whether y is needed (not to predict)."""
    if spec in BUILTIN:
        from ..datasets import digits, reviews

        (x, y), (xv, yv) = (digits if spec == "digits" else reviews).load_data()
        return [x], [y], ([xv], [yv])
    path = Path(spec)
    if not path.exists():
        raise DataFileError(f"{spec}: no such data file (give an .npz file or one of: {', '.join(BUILTIN)})")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001 - numpy raises several types for a bad file
        raise DataFileError(f"{spec}: not a readable .npz file ({e})") from None

    def arrays(prefix):
        """data[prefix], or data[prefix + "0"], data[prefix + "1"], ... in the numbers' order (x10
        after x9: the inputs' order; x01 is 1), which must run from 0 without a gap."""
        if prefix in data:
            return [data[prefix]]
        numbered = sorted(
            (int(k[len(prefix) :]), k) for k in data if k.startswith(prefix) and k[len(prefix) :].isdigit()
        )
        if [n for n, _ in numbered] != list(range(len(numbered))):
            names = ", ".join(k for _, k in numbered)
            raise DataFileError(
                f"{spec}: arrays {names}: numbered arrays run from {prefix}0 without a gap or a number twice"
            )
        return [data[k] for _, k in numbered]

    xs, ys = arrays("x"), arrays("y")
    if not xs:
        raise DataFileError(f"{spec}: has no array named x (or x0, x1, ...); it holds {sorted(data)}")
    if labels and not ys:
        raise DataFileError(f"{spec}: has no array named y (or y0, y1, ...), the targets; it holds {sorted(data)}")
    xv, yv = arrays("x_val"), arrays("y_val")
    return xs, ys, ((xv, yv) if xv and yv else None)
