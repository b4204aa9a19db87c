#!/usr/bin/env python
"""Write tests/fixtures/corpus/: configs in the styles real models are saved in, by TensorFlow's
Keras 3 (`k3_*`) and tf-keras 2 (`k2_*`), with tiny shapes so that the suite can train each one
step. tests/test_corpus.py checks that every config either trains or is refused with one line.

    /tmp/tfenv/bin/python tools/make_corpus.py     # the venv of tools/make_tf_fixtures.py

Keras 1 configs cannot be written by today's TensorFlow; the corpus keeps hand-written ones
(`k1_*.json`) in the layout Keras 1.2's to_json() wrote."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402  (Keras 3)
import tf_keras  # noqa: E402  (Keras 2 API)

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "corpus"


def mlp(K):
    return K.Sequential(
        [
            K.Input(shape=(20,)),
            K.layers.Dense(32, activation="relu"),
            K.layers.Dropout(0.2),
            K.layers.Dense(32, activation="relu"),
            K.layers.Dense(5, activation="softmax"),
        ],
        name="mlp",
    )


def cnn(K):
    L = K.layers
    return K.Sequential(
        [
            K.Input(shape=(12, 12, 1)),
            L.Conv2D(8, 3, activation="relu"),
            L.MaxPooling2D(),
            L.Conv2D(8, 3, padding="same", activation="relu"),
            L.Flatten(),
            L.Dense(5, activation="softmax"),
        ],
        name="cnn",
    )


def gan_generator(K):
    """A DCGAN generator: Dense -> Reshape -> transposed convolutions with batch norm and LeakyReLU."""
    L = K.layers
    return K.Sequential(
        [
            K.Input(shape=(8,)),
            L.Dense(4 * 4 * 8, use_bias=False),
            L.BatchNormalization(),
            L.LeakyReLU(),
            L.Reshape((4, 4, 8)),
            L.Conv2DTranspose(8, 3, strides=2, padding="same", use_bias=False),
            L.BatchNormalization(),
            L.LeakyReLU(),
            L.Conv2DTranspose(1, 3, strides=2, padding="same", activation="tanh"),
        ],
        name="generator",
    )


def mobilenet_style(K):
    """MobileNet's block: depthwise + pointwise convolutions, batch norm, ReLU(6)."""
    L = K.layers
    x = inp = K.Input(shape=(16, 16, 3))
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = L.Conv2D(16, 1, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.1)(x)
    out = L.Dense(5, activation="softmax")(x)
    return K.Model(inp, out, name="mobilenet_style")


def unet_style(K):
    """U-Net's shape: down with convolutions and pooling, up with upsampling and skip concatenations."""
    L = K.layers
    inp = K.Input(shape=(16, 16, 1))
    c1 = L.Conv2D(4, 3, padding="same", activation="relu")(inp)
    p1 = L.MaxPooling2D()(c1)
    c2 = L.Conv2D(8, 3, padding="same", activation="relu")(p1)
    u1 = L.UpSampling2D()(c2)
    m1 = L.Concatenate()([u1, c1])
    c3 = L.Conv2D(4, 3, padding="same", activation="relu")(m1)
    out = L.Conv2D(1, 1, activation="sigmoid")(c3)
    return K.Model(inp, out, name="unet_style")


def nested(K):
    """A functional model used as a layer of another, twice (a shared encoder)."""
    L = K.layers
    enc_in = K.Input(shape=(10,))
    encoder = K.Model(enc_in, L.Dense(6, activation="tanh")(enc_in), name="encoder")
    a, b = K.Input(shape=(10,), name="a"), K.Input(shape=(10,), name="b")
    merged = L.Concatenate()([encoder(a), encoder(b)])
    return K.Model([a, b], L.Dense(5, activation="softmax")(merged), name="siamese")


def sequential_in_sequential(K):
    L = K.layers
    block = K.Sequential([K.Input(shape=(20,)), L.Dense(16, activation="relu")], name="block")
    return K.Sequential([K.Input(shape=(20,)), block, L.Dense(5, activation="softmax")], name="outer")


def lambda_model(K):
    """A Lambda layer: refused, its code never run."""
    L = K.layers
    return K.Sequential(
        [K.Input(shape=(20,)), L.Lambda(lambda t: t * 2.0), L.Dense(5, activation="softmax")], name="with_lambda"
    )


MODELS = {
    "mlp": mlp,
    "cnn": cnn,
    "gan_generator": gan_generator,
    "mobilenet_style": mobilenet_style,
    "unet_style": unet_style,
    "nested": nested,
    "sequential_in_sequential": sequential_in_sequential,
    "lambda": lambda_model,
}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for prefix, K in (("k3", keras), ("k2", tf_keras)):
        for name, make in MODELS.items():
            K.backend.clear_session()
            config = json.loads(make(K).to_json())
            (OUT / f"{prefix}_{name}.json").write_text(json.dumps(config, indent=1) + "\n")
            print("wrote", f"{prefix}_{name}.json")


if __name__ == "__main__":
    main()
