"""Model files both ways between TensorFlow's Keras and kgraph. Run with TensorFlow and kgraph
installed (the `bench` extra):

    python tools/check_keras_files.py [--out tests/fixtures/files]

1. Trains a small Functional model (with a nested Sequential) in Keras for 3 steps and saves it as
   .keras, legacy .h5 and .weights.h5, with inputs and predictions (kgraph's tests load these).
2. Loads each file in kgraph, saves it again from kgraph (.keras, .h5, .weights.h5), loads those in
   Keras, and records whether Keras's predictions are identical in reverse_check.json.
3. The same model in tf-keras 2 (Adam, and RMSprop centered with momentum): saved as .h5 after 3
   steps, loaded in kgraph, trained one step and saved as .h5 again; tf-keras loads that file
   compiled, and one more step there equals one more step in kgraph (the optimizer resumed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def keras_model(keras=None, optimizer=None):
    if keras is None:
        import keras

    keras.utils.set_random_seed(7)
    inner = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, activation="tanh", name="inner_dense")], name="inner"
    )
    x = keras.Input((6,), name="x")
    h = keras.layers.Dense(6, activation="relu", name="hidden")(x)
    h = keras.layers.Add(name="residual")([x, h])
    y = keras.layers.Dense(3, activation="softmax", name="head")(inner(h))
    model = keras.Model(x, y, name="filemodel")
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return model


def tf_keras_checks(out, x, y, checks):
    """tf-keras 2 loads kgraph's .h5 of its own model compiled, and resumes its optimizer."""
    import tf_keras

    import kgraph.models

    for name, make in [
        ("Adam", lambda: tf_keras.optimizers.Adam(0.01)),
        ("RMSprop", lambda: tf_keras.optimizers.RMSprop(0.01, momentum=0.5, centered=True)),
    ]:
        model = keras_model(tf_keras, make())
        for _ in range(3):
            model.train_on_batch(x, y)
        src, path = out / "tfk2_check.h5", out / "tfk2_check_kgraph.h5"
        model.save(src)
        km = kgraph.models.load_model(src)
        km.train_on_batch(x, y)
        km.save(path)
        try:
            back = tf_keras.models.load_model(path)
            resumed = int(back.optimizer.iterations.numpy()) == 4
            back.train_on_batch(x, y)
            km.train_on_batch(x, y)
            same = resumed and all(
                np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(back.get_weights(), km.get_weights())
            )
        except Exception as e:  # recorded as a failed check, with why
            print(f"tf-keras {name}: {type(e).__name__}: {e}")
            same = False
        checks[f"tf-keras 2 loads kgraph's .h5 of its {name} model compiled and resumes it: the same next step"] = same
        src.unlink()
        path.unlink()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="tests/fixtures/files")
    out = Path(p.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    import keras
    import tensorflow as tf

    import kgraph.models

    rs = np.random.RandomState(0)
    x = rs.standard_normal((8, 6)).astype(np.float32)
    y = rs.randint(0, 3, 8).astype(np.int32)
    model = keras_model()
    for _ in range(3):
        model.train_on_batch(x, y)
    model.save(out / "tf_model.keras")
    model.save(out / "tf_model.h5")
    model.save_weights(out / "tf_model.weights.h5")
    pred = model.predict(x, verbose=0)
    np.savez(out / "tf_model_io.npz", x=x, y=y, pred=pred, iterations=int(model.optimizer.iterations.numpy()))

    import tf_keras

    report = {"tensorflow": tf.__version__, "keras": keras.__version__, "tf_keras": tf_keras.__version__, "checks": {}}
    for src in ("tf_model.keras", "tf_model.h5"):
        km = kgraph.models.load_model(out / src)
        report["checks"][f"kgraph loads {src}"] = bool(np.allclose(km.predict(x, verbose=0), pred, rtol=1e-6))
        stem = Path(src).name.replace(".", "_")
        for fmt in (".keras", ".h5"):
            path = out / f"reverse_{stem}{fmt}"
            km.save(path)
            back = keras.models.load_model(path)
            same = bool(np.array_equal(back.predict(x, verbose=0), pred))
            report["checks"][f"Keras loads kgraph's {fmt} of {src}: identical predictions"] = same
            path.unlink()
        wpath = out / f"reverse_{stem}.weights.h5"
        km.save_weights(wpath)
        fresh = keras_model()
        fresh.load_weights(wpath)
        report["checks"][f"Keras loads kgraph's .weights.h5 of {src}: identical predictions"] = bool(
            np.array_equal(fresh.predict(x, verbose=0), pred)
        )
        wpath.unlink()
    tf_keras_checks(out, x, y, report["checks"])
    (out / "reverse_check.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
