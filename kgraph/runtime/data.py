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
    """(x, y, validation) from "digits", "reviews" or an .npz holding x (or x0, x1, ... in the
    model's order, or x_<input name>, ...), y (or y0, ..., or y_<output name>, ...) and optionally
    x_val/y_val in the same forms (x_val_<input name>). x and y are lists of arrays, or dicts by
    name (what fit takes); validation is None or (x, y). labels: whether y is needed (not to
    predict)."""
    if spec in BUILTIN:
        from ..datasets import digits, reviews

        (x, y), (xv, yv) = (digits if spec == "digits" else reviews).load_data()
        return [x], [y], ([xv], [yv])
    path = Path(spec)
    if not path.exists():
        raise DataFileError(f"{spec}: no such data file (give an .npz file or one of: {', '.join(BUILTIN)})")
    how = "give an .npz file holding x and y (numpy.savez(path, x=..., y=...))"
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise DataFileError(f"{spec}: an .npy file holds one array; {how}")
    if not magic.startswith(b"PK"):  # an .npz is a zip archive
        raise DataFileError(f"{spec}: not an .npz file (a CSV or other text is not read); {how}")
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

    def given(prefix):
        """prefix's arrays numbered (a list), else named (a dict: x_image -> {"image": ...}). A file
        with x (or x0) may hold other x_ arrays (x_test, x_mean) as it always could: they are not
        inputs then."""
        numbered = arrays(prefix)
        if numbered:
            return numbered
        return {
            k[len(prefix) + 1 :]: data[k]
            for k in data
            if k.startswith(prefix + "_") and (prefix.endswith("_val") or not _validation(k))
        }

    xs, ys = given("x"), given("y")
    if not xs:
        raise DataFileError(
            f"{spec}: has no array named x (or x0, x1, ..., or x_<input name>); it holds {sorted(data)}"
        )
    if labels and not ys:
        raise DataFileError(
            f"{spec}: has no array named y (or y0, y1, ..., or y_<output name>), the targets; it holds {sorted(data)}"
        )
    xv, yv = given("x_val"), given("y_val")
    return xs, ys, ((xv, yv) if len(xv) and len(yv) else None)


def check_names(spec: str, xs, ys, validation, info: dict) -> None:
    """An .npz's x_<name> and y_<name> arrays name the model's inputs and outputs (an output by its
    key or its layer's name; `info`: the model's): one that names none is a mistake (a typo, or the
    file of another model), not an array to skip as fit skips a dict's extra keys."""
    from .model import output_keys

    input_names = info["input_names"]
    output_names = sorted(set(output_keys(info)) | set(info["output_names"]))
    pairs = [(xs, "x", "inputs", input_names), (ys, "y", "outputs", output_names)]
    if validation:
        pairs += [(validation[0], "x_val", "inputs", input_names), (validation[1], "y_val", "outputs", output_names)]
    for arrays, prefix, what, names in pairs:
        unknown = sorted(set(arrays) - set(names)) if isinstance(arrays, dict) else []
        if unknown:
            raise DataFileError(
                f"{spec}: has arrays {', '.join(f'{prefix}_{n}' for n in unknown)} for {what} the model does not "
                f"have; its {what} are {list(names)}"
            )


def _validation(key: str) -> bool:
    """Whether an array's name is a validation one (x_val, x_val0, x_val_<name>), not x_<name>."""
    rest = key[2:]
    return rest == "val" or rest.startswith("val_") or (rest.startswith("val") and rest[3:].isdigit())


def rows(arrays) -> int:
    """The number of rows of load's x or y (a list or a dict of arrays)."""
    first = next(iter(arrays.values())) if isinstance(arrays, dict) else arrays[0]
    return len(first)
