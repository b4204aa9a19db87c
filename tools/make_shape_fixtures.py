#!/usr/bin/env python
"""TensorFlow fixtures for models whose inputs leave dimensions unknown (issue 22): a token
sequence of any length ([None, None]: Embedding, GlobalAveragePooling1D, Dense) and a fully
convolutional net on images of any size ([None, None, None, 3]: Conv2D, GlobalAveragePooling2D),
and a sequence model of any length ([None, None]: Embedding(mask_zero=True), LSTM, Dense) whose
batches end in padding (zeros) of different lengths.

    /tmp/tfenv/bin/python tools/make_shape_fixtures.py [--out tests/fixtures/shapes] [case ...]

Per case it writes <case>.json (Keras 3's model.to_json()) and <case>.npz:
  w_<i>                get_weights() of the fresh model
  xa, xb               inputs of two shapes (4 rows each)
  pred_a, pred_b       predict() of each with the fresh weights
  ya, yb               sparse targets for them
  loss                 float64[3]: train_on_batch losses (before each step's update) of three steps
                       on (xa, ya), (xb, yb), (xa, ya): the weights and the optimizer's slots carry
                       across shapes (tokens, lstm: SGD with momentum, as TensorFlow's Adam updates
                       an Embedding's repeated ids apart, see embed_repeated_adam; fcn: Adam)
  w_after_<i>          get_weights() after the three steps
  optimizer            json {"class_name", "config"} of the optimizer of those steps
  summary              json [[layer name, output shape as Keras reports it]] (None for unknown dims)
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # bitwise-stable CPU math

import numpy as np  # noqa: E402
import keras  # noqa: E402  (Keras 3)

SEED = 22
ROWS = 4
OPTIMIZERS = {  # as the npz's "optimizer" records it, which the test compiles with
    "sgd": {"class_name": "SGD", "config": {"learning_rate": 0.1, "momentum": 0.9}},
    "adam": {"class_name": "Adam", "config": {"learning_rate": 0.05}},
}


def tokens():
    inp = keras.Input(shape=(None,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(20, 6, name="embedding")(inp)
    h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    out = keras.layers.Dense(3, activation="softmax", name="dense")(h)
    model = keras.Model(inp, out, name="tokens")
    rng = np.random.default_rng(SEED)
    return model, rng.integers(0, 20, (ROWS, 7)), rng.integers(0, 20, (ROWS, 12)), 3, OPTIMIZERS["sgd"]


def fcn():
    inp = keras.Input(shape=(None, None, 3), name="image")
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inp)
    h = keras.layers.Conv2D(5, 3, strides=2, activation="tanh", name="conv_2")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    out = keras.layers.Dense(2, activation="softmax", name="dense")(h)
    model = keras.Model(inp, out, name="fcn")
    rng = np.random.default_rng(SEED)
    return model, rng.normal(size=(ROWS, 9, 9, 3)), rng.normal(size=(ROWS, 12, 10, 3)), 2, OPTIMIZERS["adam"]


def lstm():
    inp = keras.Input(shape=(None,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(20, 6, mask_zero=True, name="embedding")(inp)
    h = keras.layers.LSTM(5, name="lstm")(h)
    out = keras.layers.Dense(3, activation="softmax", name="dense")(h)
    model = keras.Model(inp, out, name="lstm")
    rng = np.random.default_rng(SEED)
    xa, xb = rng.integers(1, 20, (ROWS, 6)), rng.integers(1, 20, (ROWS, 11))
    for x in (xa, xb):  # each row padded (id 0, masked) after a length of its own, as a padded batch is
        for row, n in zip(x, rng.integers(2, x.shape[1] + 1, ROWS)):
            row[n:] = 0
    return model, xa, xb, 3, OPTIMIZERS["sgd"]


CASES = {"tokens": tokens, "fcn": fcn, "lstm": lstm}


def write(name, out: Path) -> None:
    keras.utils.set_random_seed(SEED)
    model, xa, xb, classes, optimizer = CASES[name]()
    xa, xb = (x.astype("int32" if x.dtype.kind == "i" else "float32") for x in (xa, xb))
    rng = np.random.default_rng(SEED + 1)
    ya, yb = rng.integers(0, classes, ROWS), rng.integers(0, classes, ROWS)
    arrays = {f"w_{i}": w for i, w in enumerate(model.get_weights())}
    arrays.update(xa=xa, xb=xb, ya=ya, yb=yb)
    arrays["pred_a"] = model.predict(xa, verbose=0)
    arrays["pred_b"] = model.predict(xb, verbose=0)
    model.compile(optimizer=keras.optimizers.get(optimizer), loss="sparse_categorical_crossentropy")
    arrays["loss"] = np.array([model.train_on_batch(x, y) for x, y in ((xa, ya), (xb, yb), (xa, ya))], np.float64)
    arrays.update({f"w_after_{i}": w for i, w in enumerate(model.get_weights())})
    arrays["optimizer"] = np.array(json.dumps(optimizer))
    arrays["summary"] = np.array(json.dumps([[layer.name, list(layer.output.shape)] for layer in model.layers]))
    np.savez_compressed(out / f"{name}.npz", **arrays)
    (out / f"{name}.json").write_text(json.dumps(json.loads(model.to_json()), indent=1) + "\n")
    print(f"wrote {name}: losses {arrays['loss']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "shapes"))
    parser.add_argument("cases", nargs="*", help=f"the cases to write, of {', '.join(CASES)} (default: all)")
    args = parser.parse_args()
    if set(args.cases) - set(CASES):
        parser.error(f"unknown cases {sorted(set(args.cases) - set(CASES))}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.cases or CASES:
        write(name, out)


if __name__ == "__main__":
    main()
