#!/usr/bin/env python
"""Model files as TensorFlow writes them, for kgraph's loading tests. Run with TensorFlow, Keras 3
and tf-keras 2 installed (kgraph is not needed):

    /tmp/tfenv/bin/python tools/make_file_fixtures.py [--out tests/fixtures/files/tf]

For Keras 3 (prefix k3) and tf-keras 2 (prefix tfk2), for a Sequential MLP ("seq") and a
Functional model with a nested Functional model inside ("nest"), for each optimizer, it saves
the model as .keras and .h5 right after compile ("new") and after 3 train steps ("trained").
Extra optimizers (and tf-keras 2's legacy ones) are saved for "seq" after training only.
Then one more train_on_batch on the same batch gives the prediction a resumed model must make.

io.npz holds x, y and per file stem `<stem>/pred` (predictions of the saved model) and
`<stem>/next` (predictions after one more step); index.json lists the stems with what they are.

nested_configs.json (`--only nested` writes just it): to_json() configs of functional models
nested in Sequential and Functional models, by both Kerases, with their weights and predictions.
call_training.json (`--only calls`): layers and nested models called with training=False or True,
with one train step's loss and weights and the weights after predicting.
tfk2_bn_base_{frozen,thawed}.h5 (`--only bn_base`): tf-keras 2's .h5 of a fine-tuning model (a
nested base of Conv2D and BatchNormalization layers), saved with its base frozen and thawed: a
trainable nested model lists its trainable weights first, then the moving statistics;
bn_base_io.npz holds x and each file's predictions."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CORE = ["sgd", "adam", "rmsprop", "adagrad"]
EXTRA = ["adamax", "nadam", "adadelta", "ftrl"]
LEGACY = ["legacy_adam_decay", "legacy_sgd", "legacy_rmsprop"]  # tf-keras 2 only


def optimizer(k, name):
    o = k.optimizers
    if name.startswith("legacy_"):
        o, name = k.optimizers.legacy, name[len("legacy_") :]
    return {
        "sgd": lambda: o.SGD(0.05, momentum=0.9),
        "adam": lambda: o.Adam(0.01),
        "adam_decay": lambda: o.Adam(0.01, decay=0.01),
        "rmsprop": lambda: o.RMSprop(0.01),
        "adagrad": lambda: o.Adagrad(0.05),
        "adamax": lambda: o.Adamax(0.01),
        "nadam": lambda: o.Nadam(0.01),
        "adadelta": lambda: o.Adadelta(1.0),
        "ftrl": lambda: o.Ftrl(0.1, l1_regularization_strength=0.01),
    }[name]()


def build(k, kind):
    L = k.layers
    if kind == "seq":
        return k.Sequential(
            [k.Input((4,)), L.Dense(5, activation="relu", name="d1"), L.Dense(3, activation="softmax", name="out")],
            name="seq",
        )
    xi = k.Input((5,), name="inner_in")
    inner = k.Model(xi, L.Dense(4, activation="tanh", name="inner_dense")(xi), name="inner")
    x = k.Input((4,), name="x")
    h = L.Dense(5, activation="relu", name="d1")(x)
    return k.Model(x, L.Dense(3, activation="softmax", name="out")(inner(h)), name="nest")


def save_all(k, prefix, kind, opt, stage, x, y, out, io, index):
    k.utils.set_random_seed(3)
    model = build(k, kind)
    # the Sequential's loss is a string, the nested model's a loss object: both forms get saved
    loss = "sparse_categorical_crossentropy" if kind == "seq" else k.losses.SparseCategoricalCrossentropy()
    model.compile(optimizer=optimizer(k, opt), loss=loss, metrics=["accuracy"])
    if stage == "trained":
        for _ in range(3):
            model.train_on_batch(x, y)
    stem = f"{prefix}_{kind}_{opt}_{stage}"
    for ext in (".keras", ".h5"):
        model.save(out / f"{stem}{ext}")
    if kind == "nest" and opt == "adam" and stage == "trained":
        model.save_weights(out / (f"{stem}.weights.h5" if prefix == "k3" else f"{stem}_weights.h5"))
    io[f"{stem}/pred"] = model.predict(x, verbose=0)
    model.train_on_batch(x, y)
    io[f"{stem}/next"] = model.predict(x, verbose=0)
    index[stem] = {"keras": prefix, "model": kind, "optimizer": opt, "stage": stage}


def nested_configs(k, x):
    """Functional models inside a Sequential (first, middle, last) and inside a Functional, called
    twice: tf-keras 2 numbers their calls from 1, after the node of their own Input."""
    L, out = k.layers, {}

    def inner(name):
        xi = k.Input((4,))
        return k.Model(xi, L.Dense(4, activation="tanh")(xi), name=name)

    def record(key, model):
        out[key] = {
            "config": json.loads(model.to_json()),
            "weights": [w.tolist() for w in model.get_weights()],
            "pred": model.predict(x, verbose=0).tolist(),
        }

    k.utils.set_random_seed(0)
    record("seq_middle", k.Sequential([k.Input((4,)), inner("model_93"), L.Dense(2)], name="seq_a"))
    model = k.Sequential([inner("model_93"), L.Dense(2)], name="seq_b")
    model(x)  # built on its first call, without an Input
    record("seq_first", model)
    record("seq_last", k.Sequential([k.Input((4,)), L.Dense(4), inner("model_93")], name="seq_c"))
    seq = k.Sequential([k.Input((4,)), inner("model_93"), L.Dense(4)], name="seq_d")
    shared = inner("model_94")
    xin = k.Input((4,), name="xin")
    record("functional", k.Model(xin, L.Add()([shared(seq(xin)), shared(xin)]), name="outer"))
    return out


def call_training_configs(k, x, y):
    """Layers and nested models called with training=False (the transfer-learning idiom
    `base(x, training=False)`) or training=True, which tf-keras 2 honours over fit's and predict's
    mode and Keras 3 overrides: the config, its initial weights, one SGD train_on_batch's loss and
    weights after it, then two predicts (a batch norm called with training=True moves its
    statistics in predict too) and the weights after them."""
    L, out = k.layers, {}

    def record(key, model):
        weights = [w.tolist() for w in model.get_weights()]
        model.compile(optimizer=k.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
        loss = float(np.asarray(model.train_on_batch(x, y)).ravel()[0])
        trained = [w.tolist() for w in model.get_weights()]
        pred = model.predict(x, verbose=0)
        model.predict(x, verbose=0)
        out[key] = {
            "config": json.loads(model.to_json()),
            "weights": weights,
            "loss": loss,
            "trained": trained,
            "pred": pred.tolist(),
            "predicted": [w.tolist() for w in model.get_weights()],
        }

    k.utils.set_random_seed(0)
    xi = k.Input((4,))
    base = k.Model(xi, L.Dropout(0.5)(L.BatchNormalization()(L.Dense(6, activation="relu")(xi))), name="base")
    xin = k.Input((4,))
    record("nested_false", k.Model(xin, L.Dense(3, activation="softmax")(base(xin, training=False))))
    xin = k.Input((4,))
    h = L.BatchNormalization()(L.Dense(6, activation="relu")(xin), training=False)
    record("direct_false", k.Model(xin, L.Dense(3, activation="softmax")(L.Dropout(0.5)(h, training=False))))
    xin = k.Input((4,))
    h = L.BatchNormalization()(L.Dense(6, activation="relu")(xin), training=True)
    record("bn_true", k.Model(xin, L.Dense(3, activation="softmax")(h)))
    return out


def bn_base_files(k, out):
    """tf-keras 2's .h5 of a model with a nested base of Conv2D + BatchNormalization, the base
    frozen and thawed (the weight order of a trainable nested model differs), and predictions."""
    L = k.layers
    k.utils.set_random_seed(0)
    bi = k.Input((6, 6, 3))
    h = L.BatchNormalization(name="bn1")(L.Conv2D(4, 3, use_bias=False, name="c1")(bi))
    h = L.BatchNormalization(name="bn2")(L.Conv2D(4, 1, name="c2")(L.ReLU(6.0, name="r1")(h)))
    base = k.Model(bi, h, name="base")
    rng = np.random.default_rng(1)
    for bn in (base.get_layer("bn1"), base.get_layer("bn2")):  # statistics that are not 0 and 1
        bn.set_weights(
            [rng.uniform(0.5, 1.5, 4), rng.uniform(-0.5, 0.5, 4), rng.uniform(-0.5, 0.5, 4), rng.uniform(0.1, 0.5, 4)]
        )
    x = k.Input((6, 6, 3))
    model = k.Model(x, L.Dense(2, name="head")(L.GlobalAveragePooling2D()(base(x, training=False))))
    xs = rng.uniform(-1, 1, (4, 6, 6, 3)).astype(np.float32)
    io = {"x": xs}
    for state in ("frozen", "thawed"):
        base.trainable = state == "thawed"
        model.save(out / f"tfk2_bn_base_{state}.h5")
        io[state] = model.predict(xs, verbose=0)
    np.savez(out / "bn_base_io.npz", **io)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="tests/fixtures/files/tf")
    p.add_argument(
        "--only",
        choices=["files", "nested", "calls", "bn_base"],
        help="write only the model files, nested or call configs, or the batch-norm base files",
    )
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import keras
    import tensorflow as tf
    import tf_keras

    rs = np.random.RandomState(0)
    x = rs.standard_normal((6, 4)).astype(np.float32)
    y = rs.randint(0, 3, 6).astype(np.int32)
    if args.only in (None, "nested"):
        nested = {"x": x.tolist(), "k3": nested_configs(keras, x), "tfk2": nested_configs(tf_keras, x)}
        (out / "nested_configs.json").write_text(json.dumps(nested) + "\n")
    if args.only in (None, "calls"):
        calls = {"x": x.tolist(), "y": y.tolist()}
        calls.update(k3=call_training_configs(keras, x, y), tfk2=call_training_configs(tf_keras, x, y))
        (out / "call_training.json").write_text(json.dumps(calls) + "\n")
    if args.only in (None, "bn_base"):
        bn_base_files(tf_keras, out)
    if args.only in ("nested", "calls", "bn_base"):
        return
    io, index = {"x": x, "y": y}, {}
    for prefix, k in (("k3", keras), ("tfk2", tf_keras)):
        for kind in ("seq", "nest"):
            for opt in CORE:
                for stage in ("new", "trained"):
                    save_all(k, prefix, kind, opt, stage, x, y, out, io, index)
        for opt in EXTRA + (LEGACY if prefix == "tfk2" else []):
            save_all(k, prefix, "seq", opt, "trained", x, y, out, io, index)
    np.savez(out / "io.npz", **io)
    meta = {"tensorflow": tf.__version__, "keras": keras.__version__, "tf_keras": tf_keras.__version__, "files": index}
    (out / "index.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
