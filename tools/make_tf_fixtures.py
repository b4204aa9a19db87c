#!/usr/bin/env python
"""Generate TensorFlow / Keras reference fixtures for kgraph's tests.

kgraph itself never imports TensorFlow.  This script is the one place where
TensorFlow is used: it records what real Keras does so the test-suite can
compare kgraph against it offline.  Run it with an interpreter that has
``tensorflow-cpu``, ``keras`` (3.x) and ``tf-keras`` installed, e.g.::

    python -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.0 h5py pyyaml
    /tmp/tfenv/bin/pip install --no-deps tf-keras==2.21.0
    /tmp/tfenv/bin/python tools/make_tf_fixtures.py [--out tests/fixtures]

It writes three groups of files under ``--out``:

``tf/<case>.npz`` + ``tf/<case>.json``  -- training fidelity fixtures
    A small Keras 3 model is compiled, run through ``predict`` and then
    through five ``train_on_batch`` calls on one fixed batch of 16 rows.

    npz keys:
      ``x0, x1, ...``         model inputs, in Keras input order (float32)
      ``y0, y1, ...``         targets, one per output (sparse labels: int32)
      ``w_init_<i>``          ``model.get_weights()`` before training
      ``pred0, pred1, ...``   ``model.predict(x, batch_size=16)`` of the
                              initial model
      ``loss``                float64[5], the values returned by the five
                              ``train_on_batch`` calls (each is the loss of
                              the batch *before* that step's update,
                              regularization penalties included)
      ``w_step<k>_<i>``       ``model.get_weights()`` after step k (1..5)
      ``pred_after0, ...``    ``model.predict`` after the five steps (in
                              fixtures written since this key was added)

      ``sw``                  per-sample weights given to every call (cases
                              with a sample_weight, or with a class_weight:
                              then the weights Keras derived from it)

    json: ``{"model_config", "compile": {"optimizer", "loss", "loss_weights",
    "metrics"}, "fit": {"sample_weight": bool, "class_weight": {class:
    weight} or null}, "logs": [the dict train_on_batch returned, per step],
    "batch_size", "steps", "versions"}``.  Keras 3.15's ``Huber.get_config``
    drops ``delta``; the script adds it back to the loss config.

``configs/``  -- a zoo of model configs for the parser
    ``k3_<arch>.json``  ``model.to_json()`` of Keras 3 (indented)
    ``k2_<arch>.json``  ``model.to_json()`` of tf-keras 2.x (Keras 2 format)
    ``k21_*.json``      hand-written configs in the Keras 2.1.6 format
    ``<arch>.npz``      ``x0, x1, ...`` (4 input rows), ``w_0, w_1, ...``
                        (Keras 3 ``get_weights()``, also loaded into the
                        tf-keras model), ``pred0, pred1, ...`` (Keras 3
                        predictions) and ``k2_pred0, ...`` (tf-keras
                        predictions with the same weights; they differ from
                        ``pred*`` only where the two libraries define an op
                        differently, e.g. ``hard_sigmoid``).

``rnn/``  -- recurrent layers (issue 16), read by tests/test_recurrent.py
    ``<case>.npz`` + ``k3_<case>.json`` + ``k2_<case>.json``: both configs,
    Keras 3 weights (loaded into tf-keras too), both predictions, the loss
    of one batch and its gradient per weight; see section (c) below.

Everything is seeded; running the script twice gives the same numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # bitwise-stable CPU math

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402  (Keras 3)
import tf_keras  # noqa: E402  (Keras 2 API, tf-keras package)

tf.get_logger().setLevel("ERROR")  # silence tf.function retracing notices

BATCH = 16  # batch size of the training fixtures
STEPS = 5  # number of train_on_batch calls recorded
ZOO_ROWS = 4  # rows in the input batch of the config zoo
SEED = 1234

VERSIONS = {
    "tensorflow": tf.__version__,
    "keras": keras.__version__,
    "tf_keras": tf_keras.__version__,
    "numpy": np.__version__,
}


def reset(seed: int) -> None:
    """Clear both Keras sessions (so auto-generated layer names restart at
    ``dense``, ``dense_1`` ...) and seed every random number generator."""
    keras.backend.clear_session()
    tf_keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    tf_keras.utils.set_random_seed(seed)


def dump_json(obj, path: Path, indent=1) -> None:
    path.write_text(json.dumps(obj, indent=indent) + "\n")


def as_list(x):
    return list(x) if isinstance(x, (list, tuple)) else [x]


# --------------------------------------------------------------------------
# (a) Training fidelity fixtures
# --------------------------------------------------------------------------

IN_DIM = 12
CLASSES = 5


def sgd_momentum():
    return keras.optimizers.SGD(learning_rate=0.05, momentum=0.9)


def adam():
    return keras.optimizers.Adam(learning_rate=0.01)


def build_mlp():
    return keras.Sequential(
        [
            keras.Input(shape=(IN_DIM,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )


def build_residual():
    x = keras.Input(shape=(IN_DIM,))
    h = keras.layers.Dense(IN_DIM, activation="tanh")(x)
    h2 = keras.layers.Add()([x, h])
    out = keras.layers.Dense(CLASSES, activation="softmax")(h2)
    return keras.Model(x, out)


def build_two_input():
    a = keras.Input(shape=(IN_DIM,))
    b = keras.Input(shape=(6,))
    ha = keras.layers.Dense(8, activation="relu")(a)
    hb = keras.layers.Dense(8, activation="relu")(b)
    h = keras.layers.Concatenate()([ha, hb])
    out = keras.layers.Dense(CLASSES, activation="softmax")(h)
    return keras.Model([a, b], out)


def build_logits():
    return keras.Sequential(
        [
            keras.Input(shape=(IN_DIM,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(CLASSES),
        ]
    )


def build_regression():
    return keras.Sequential(
        [
            keras.Input(shape=(IN_DIM,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3),
        ]
    )


def build_binary():
    return keras.Sequential(
        [
            keras.Input(shape=(IN_DIM,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )


def build_l2():
    reg = keras.regularizers
    return keras.Sequential(
        [
            keras.Input(shape=(IN_DIM,)),
            keras.layers.Dense(
                16,
                activation="relu",
                kernel_regularizer=reg.l2(1e-3),
                bias_regularizer=reg.l1(1e-3),
            ),
            keras.layers.Dense(
                CLASSES,
                activation="softmax",
                kernel_regularizer=reg.l1_l2(l1=1e-3, l2=1e-3),
            ),
        ]
    )


def build_positive():
    return keras.Sequential(
        [
            keras.Input(shape=(IN_DIM,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(3, activation="softplus"),
        ]
    )


def build_cnn():
    return keras.Sequential(
        [
            keras.Input(shape=(8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )


def build_binary_logits():
    return keras.Sequential(
        [
            keras.Input(shape=(IN_DIM,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1),
        ]
    )


def build_norm_mlp():
    l2 = keras.regularizers.l2(1e-3)
    return keras.Sequential(
        [
            keras.Input(shape=(IN_DIM,)),
            # no bias before a BatchNormalization: its gradient is rounding
            # noise, which Adam would turn into full-size steps
            keras.layers.Dense(16, use_bias=False, kernel_regularizer=l2),
            keras.layers.BatchNormalization(),
            keras.layers.Activation("relu"),
            keras.layers.Dense(16, activation="relu", kernel_regularizer=l2),
            keras.layers.LayerNormalization(),
            keras.layers.Dense(CLASSES, activation="softmax", kernel_regularizer=l2),
        ]
    )


def build_two_heads():
    x = keras.Input(shape=(IN_DIM,))
    h = keras.layers.Dense(16, activation="relu", name="trunk")(x)
    cls = keras.layers.Dense(CLASSES, activation="softmax", name="cls")(h)
    reg = keras.layers.Dense(3, name="reg")(h)
    return keras.Model(x, [cls, reg])


def build_cnn_bn():
    return keras.Sequential(
        [
            keras.Input(shape=(6, 6, 2)),
            keras.layers.Conv2D(4, 3, padding="same", use_bias=False),
            keras.layers.BatchNormalization(momentum=0.9),
            keras.layers.Activation("relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )


def sparse_targets(rng):
    return [rng.randint(0, CLASSES, size=BATCH).astype(np.int32)]


def onehot_targets(rng):
    labels = rng.randint(0, CLASSES, size=BATCH)
    return [np.eye(CLASSES, dtype=np.float32)[labels]]


def regression_targets(rng):
    return [rng.normal(size=(BATCH, 3)).astype(np.float32)]


def binary_targets(rng):
    return [rng.randint(0, 2, size=(BATCH, 1)).astype(np.float32)]


def binary_targets3(rng):
    return [rng.randint(0, 2, size=(BATCH, 3)).astype(np.float32)]


def sign_targets3(rng):
    return [rng.choice([-1.0, 1.0], size=(BATCH, 3)).astype(np.float32)]


def soft_targets(rng):
    return [rng.dirichlet(np.ones(CLASSES), size=BATCH).astype(np.float32)]


def count_targets(rng):
    return [rng.poisson(2.0, size=(BATCH, 3)).astype(np.float32)]


def away_targets(rng):
    """Regression targets with |t| in [0.5, 2]: MAPE divides by them."""
    return [(rng.choice([-1.0, 1.0], size=(BATCH, 3)) * rng.uniform(0.5, 2.0, size=(BATCH, 3))).astype(np.float32)]


def positive_targets(rng):
    return [rng.exponential(1.0, size=(BATCH, 3)).astype(np.float32)]


def two_head_targets(rng):
    return sparse_targets(rng) + regression_targets(rng)


def sgd():
    return keras.optimizers.SGD(learning_rate=0.05)


L = keras.losses
M = keras.metrics

# case name -> (model builder, input dims, target maker, loss, optimizer maker[, extras]);
# extras: metrics, loss_weights, sample_weight (True: random weights), class_weight. New cases go
# last: a case's seed is its position.
FIDELITY_CASES = {
    "mlp_sgd": (build_mlp, [IN_DIM], sparse_targets, "sparse_categorical_crossentropy", sgd_momentum),
    "mlp_adam": (build_mlp, [IN_DIM], sparse_targets, "sparse_categorical_crossentropy", adam),
    "residual_sgd": (build_residual, [IN_DIM], onehot_targets, "categorical_crossentropy", sgd_momentum),
    "residual_adam": (build_residual, [IN_DIM], onehot_targets, "categorical_crossentropy", adam),
    "two_input_sgd": (build_two_input, [IN_DIM, 6], sparse_targets, "sparse_categorical_crossentropy", sgd_momentum),
    "two_input_adam": (build_two_input, [IN_DIM, 6], sparse_targets, "sparse_categorical_crossentropy", adam),
    "logits_sgd": (
        build_logits,
        [IN_DIM],
        sparse_targets,
        lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        sgd_momentum,
    ),
    "logits_adam": (
        build_logits,
        [IN_DIM],
        sparse_targets,
        lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        adam,
    ),
    "regression_rmsprop": (
        build_regression,
        [IN_DIM],
        regression_targets,
        "mse",
        lambda: keras.optimizers.RMSprop(learning_rate=0.01),
    ),
    "regression_mae_nesterov": (
        build_regression,
        [IN_DIM],
        regression_targets,
        "mae",
        lambda: keras.optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True),
    ),
    "binary_adam": (build_binary, [IN_DIM], binary_targets, "binary_crossentropy", adam),
    "l2_sgd": (build_l2, [IN_DIM], sparse_targets, "sparse_categorical_crossentropy", sgd_momentum),
    "mape_adam": (build_regression, [IN_DIM], away_targets, "mape", adam),
    "msle_adam": (
        build_positive,
        [IN_DIM],
        positive_targets,
        "mean_squared_logarithmic_error",
        adam,
        {"metrics": ["mae", "mse", M.RootMeanSquaredError()]},
    ),
    "huber_sgd": (build_regression, [IN_DIM], regression_targets, lambda: L.Huber(delta=0.5), sgd_momentum),
    "log_cosh_adam": (build_regression, [IN_DIM], regression_targets, "log_cosh", adam),
    "kld_adam": (build_mlp, [IN_DIM], soft_targets, "kl_divergence", adam),
    "poisson_adam": (build_positive, [IN_DIM], count_targets, "poisson", adam),
    "hinge_sgd": (build_regression, [IN_DIM], binary_targets3, "hinge", sgd),
    "squared_hinge_adam": (build_regression, [IN_DIM], sign_targets3, "squared_hinge", adam),
    "categorical_hinge_adam": (
        build_logits,
        [IN_DIM],
        onehot_targets,
        "categorical_hinge",
        adam,
        {"metrics": ["categorical_accuracy", M.TopKCategoricalAccuracy(k=2)]},
    ),
    "cosine_sgd": (build_regression, [IN_DIM], regression_targets, "cosine_similarity", sgd_momentum),
    "cce_smoothing_adam": (
        build_mlp,
        [IN_DIM],
        onehot_targets,
        lambda: L.CategoricalCrossentropy(label_smoothing=0.1),
        adam,
    ),
    "cce_logits_sgd": (
        build_logits,
        [IN_DIM],
        onehot_targets,
        lambda: L.CategoricalCrossentropy(from_logits=True),
        sgd_momentum,
    ),
    "bce_smoothing_adam": (
        build_binary,
        [IN_DIM],
        binary_targets,
        lambda: L.BinaryCrossentropy(label_smoothing=0.2),
        adam,
        {"metrics": ["accuracy", M.AUC(), M.Precision(), M.Recall(thresholds=[0.3, 0.7])]},
    ),
    "bce_logits_adam": (
        build_binary_logits,
        [IN_DIM],
        binary_targets,
        lambda: L.BinaryCrossentropy(from_logits=True),
        adam,
        {"metrics": [M.AUC(from_logits=True)]},
    ),
    "sample_weight_adam": (
        build_mlp,
        [IN_DIM],
        sparse_targets,
        "sparse_categorical_crossentropy",
        adam,
        {"sample_weight": True, "metrics": ["accuracy", M.SparseTopKCategoricalAccuracy(k=2)]},
    ),
    "class_weight_sgd": (
        build_mlp,
        [IN_DIM],
        sparse_targets,
        "sparse_categorical_crossentropy",
        sgd_momentum,
        {"class_weight": {0: 0.5, 1: 2.0, 3: 1.5}},
    ),
    "two_heads_adam": (
        build_two_heads,
        [IN_DIM],
        two_head_targets,
        {"cls": "sparse_categorical_crossentropy", "reg": "mse"},
        adam,
        {"loss_weights": {"cls": 1.0, "reg": 0.5}, "metrics": {"cls": ["accuracy"], "reg": ["mae"]}},
    ),
    "cnn_sgd": (build_cnn, [(8, 8, 1)], sparse_targets, "sparse_categorical_crossentropy", sgd_momentum),
    "cnn_adam": (build_cnn, [(8, 8, 1)], sparse_targets, "sparse_categorical_crossentropy", adam),
    "norm_mlp_sgd": (build_norm_mlp, [IN_DIM], sparse_targets, "sparse_categorical_crossentropy", sgd_momentum),
    "norm_mlp_adam": (build_norm_mlp, [IN_DIM], sparse_targets, "sparse_categorical_crossentropy", adam),
    "cnn_bn_adam": (build_cnn_bn, [(6, 6, 2)], sparse_targets, "sparse_categorical_crossentropy", adam),
}


def on_mlp(make_opt):
    """A case of the MLP with sparse labels: what differs is the optimizer."""
    return (build_mlp, [IN_DIM], sparse_targets, "sparse_categorical_crossentropy", make_opt)


O, S = keras.optimizers, keras.optimizers.schedules
# Every optimizer, each gradient clipping and one schedule per class. Steps
# and thresholds are chosen so that each feature acts within the five steps
# (clipping is active, every schedule changes the rate, Adadelta's tiny
# first steps are scaled up by its learning rate).  Appended after the cases
# above so that their seeds, and files, stay the same.
FIDELITY_CASES.update(
    {
        "opt_adam_amsgrad": on_mlp(lambda: O.Adam(0.01, amsgrad=True)),
        "opt_adamw": on_mlp(lambda: O.AdamW(0.01, weight_decay=0.05)),
        "opt_adagrad": on_mlp(lambda: O.Adagrad(0.05)),
        "opt_adadelta": on_mlp(lambda: O.Adadelta(1.0, rho=0.9)),
        "opt_adamax": on_mlp(lambda: O.Adamax(0.01)),
        "opt_nadam": on_mlp(lambda: O.Nadam(0.01)),
        "opt_rmsprop_centered": on_mlp(lambda: O.RMSprop(0.01, momentum=0.5, centered=True)),
        "opt_sgd_weight_decay": on_mlp(lambda: O.SGD(0.05, momentum=0.9, weight_decay=0.1)),
        "opt_sgd_clipnorm": on_mlp(lambda: O.SGD(0.05, momentum=0.9, clipnorm=0.1)),
        "opt_sgd_clipvalue": on_mlp(lambda: O.SGD(0.05, momentum=0.9, clipvalue=0.02)),
        "opt_adam_global_clipnorm": on_mlp(lambda: O.Adam(0.01, epsilon=0.01, global_clipnorm=0.2)),
        "sched_exponential": on_mlp(
            lambda: O.SGD(S.ExponentialDecay(0.1, decay_steps=2, decay_rate=0.5, staircase=True))
        ),
        "sched_inverse_time": on_mlp(lambda: O.SGD(S.InverseTimeDecay(0.1, decay_steps=1, decay_rate=0.5))),
        "sched_piecewise": on_mlp(lambda: O.SGD(S.PiecewiseConstantDecay([1, 3], [0.1, 0.05, 0.01]))),
        "sched_polynomial": on_mlp(
            lambda: O.SGD(S.PolynomialDecay(0.1, decay_steps=2, end_learning_rate=0.01, power=2.0, cycle=True))
        ),
        "sched_cosine": on_mlp(
            lambda: O.Adam(S.CosineDecay(0.001, decay_steps=3, alpha=0.1, warmup_target=0.02, warmup_steps=2))
        ),
    }
)


# Convolution, normalization and embedding layers that the cases above leave out. "ids": the
# inputs are token ids below that vocabulary size ("unique_ids": no id twice in the batch);
# "randomize": random weights (moving statistics too) before predicting and training, so that a
# folded batch norm reads non-trivial values.
VOCAB = 11


def build_embed_gap(vocab=VOCAB, length=6):
    return keras.Sequential(
        [
            keras.Input(shape=(length,), dtype="int32"),
            keras.layers.Embedding(vocab, 8),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )


def build_embed_flatten():
    return keras.Sequential(
        [
            keras.Input(shape=(5,), dtype="int32"),
            keras.layers.Embedding(VOCAB, 4),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )


def build_group_norm():
    return keras.Sequential(
        [
            keras.Input(shape=(4, 4, 3)),
            keras.layers.Conv2D(6, 3, padding="same"),
            keras.layers.GroupNormalization(groups=3),
            keras.layers.Activation("relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(8),
            keras.layers.GroupNormalization(groups=4, epsilon=0.01),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )


def build_deconv():
    """Conv2DTranspose without output_padding ('same'), then with it ('valid')."""
    return keras.Sequential(
        [
            keras.Input(shape=(2, 2, 2)),
            keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same", activation="relu"),
            keras.layers.Conv2DTranspose(2, 3, strides=2, output_padding=1),
            keras.layers.Flatten(),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )


def build_deconv_same_padded():
    """output_padding with 'same' padding, in 1-D and (per axis) in 2-D."""
    return keras.Sequential(
        [
            keras.Input(shape=(4, 3)),
            keras.layers.Conv1DTranspose(4, 3, strides=2, padding="same", output_padding=1),
            keras.layers.Reshape((2, 4, 4)),
            keras.layers.Conv2DTranspose(
                3, (3, 2), strides=(2, 3), padding="same", output_padding=(1, 2), activation="relu"
            ),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )


def build_separable():
    return keras.Sequential(
        [
            keras.Input(shape=(6, 6, 2)),
            keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", activation="relu"),
            keras.layers.SeparableConv2D(4, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )


def build_bn_fold():
    """Batch norms that kgraph folds at inference (after a linear Conv2D with a bias, a
    SeparableConv2D, a Dense without bias) and one it cannot (after a relu)."""
    return keras.Sequential(
        [
            keras.Input(shape=(5, 5, 2)),
            keras.layers.Conv2D(4, 3, padding="same"),
            keras.layers.BatchNormalization(momentum=0.8),
            keras.layers.Activation("relu"),
            keras.layers.SeparableConv2D(4, 3),
            keras.layers.BatchNormalization(momentum=0.8),
            keras.layers.Conv2D(3, 2, activation="relu"),
            keras.layers.BatchNormalization(momentum=0.8, center=False),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(6, use_bias=False),
            keras.layers.BatchNormalization(momentum=0.8, scale=False),
            keras.layers.Activation("relu"),
            keras.layers.Dense(CLASSES, activation="softmax"),
        ]
    )


SPARSE = "sparse_categorical_crossentropy"
FIDELITY_CASES.update(
    {
        # TensorFlow hands Adam an Embedding's gradient as IndexedSlices, one row per id occurrence,
        # and Keras squares those rows before summing them into v: a repeated id's v differs from the
        # dense gradient's. Unique ids here; embed_repeated_adam records the difference.
        "embed_gap_adam": (
            lambda: build_embed_gap(vocab=40, length=2),
            [2],
            sparse_targets,
            SPARSE,
            adam,
            {"ids": 40, "unique_ids": True},
        ),
        "embed_repeated_adam": (build_embed_gap, [6], sparse_targets, SPARSE, adam, {"ids": VOCAB}),
        "embed_flatten_sgd": (build_embed_flatten, [5], sparse_targets, SPARSE, sgd_momentum, {"ids": VOCAB}),
        "group_norm_adam": (build_group_norm, [(4, 4, 3)], sparse_targets, SPARSE, adam),
        "deconv_adam": (build_deconv, [(2, 2, 2)], sparse_targets, SPARSE, adam),
        "deconv_same_padded_sgd": (build_deconv_same_padded, [(4, 3)], sparse_targets, SPARSE, sgd_momentum),
        "separable_adam": (build_separable, [(6, 6, 2)], sparse_targets, SPARSE, adam),
        # SGD: before a batch norm a bias gets a gradient of rounding noise, which Adam would scale up
        "bn_fold_sgd": (build_bn_fold, [(5, 5, 2)], sparse_targets, SPARSE, sgd_momentum, {"randomize": True}),
    }
)


def leaky(K, slope):
    """LeakyReLU's slope is negative_slope in Keras 3, alpha in tf-keras."""
    return K.layers.LeakyReLU(**({"negative_slope": slope} if K is keras else {"alpha": slope}))


def build_act_layers():
    """The activation layers between Dense layers, and the noise layers at rate 0 (Keras draws
    other random numbers than kgraph: only their identity can be compared in training)."""
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=(IN_DIM,)),
            L.GaussianNoise(0.0),
            L.Dense(16),
            leaky(keras, 0.2),
            L.GaussianDropout(0.0),
            L.Dense(16),
            L.PReLU(alpha_initializer=keras.initializers.Constant(0.25)),
            L.AlphaDropout(0.0),
            L.Dense(16),
            L.ELU(alpha=0.7),
            L.ActivityRegularization(l1=1e-3, l2=1e-2),
            L.Dense(16),
            L.ReLU(max_value=1.5, negative_slope=0.1, threshold=0.05),
            L.Dense(16),
            L.ReLU(max_value=6.0),
            L.Dense(CLASSES),
            L.Softmax(),
        ]
    )


def build_act_seq():
    """PReLU with shared axes, a Softmax over the time axis, SpatialDropout1D at rate 0."""
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=(6, 4)),
            L.Conv1D(5, 2, padding="same"),
            L.PReLU(shared_axes=[1]),
            L.SpatialDropout1D(0.0),
            L.Softmax(axis=1),
            L.Flatten(),
            L.Dense(CLASSES, activation="softmax"),
        ]
    )


def build_preprocess_cnn():
    """Rescaling (per channel), an adapted Normalization, Resizing and CenterCrop before a CNN."""
    L = keras.layers
    norm = L.Normalization()
    norm.adapt(np.random.RandomState(7).normal(1.0, 2.0, size=(64, 9, 9, 3)).astype(np.float32))
    return keras.Sequential(
        [
            keras.Input(shape=(7, 7, 3)),
            L.Rescaling([0.5, 1.0, 2.0], offset=0.25),
            L.Resizing(9, 9),
            norm,
            L.CenterCrop(6, 6),
            L.Conv2D(4, 3, activation="relu"),
            L.SpatialDropout2D(0.0),
            L.MaxPooling2D(2),
            L.Flatten(),
            L.Dense(CLASSES, activation="softmax"),
        ]
    )


FIDELITY_CASES.update(
    {
        "act_layers_adam": (build_act_layers, [IN_DIM], sparse_targets, SPARSE, adam),
        "act_seq_sgd": (build_act_seq, [(6, 4)], sparse_targets, SPARSE, sgd_momentum),
        "preprocess_cnn_adam": (build_preprocess_cnn, [(7, 7, 3)], sparse_targets, SPARSE, adam),
    }
)


def build_dot():
    """Dot and cosine Dot of two learned embeddings (a siamese / recommender head)."""
    L = keras.layers
    a, b = keras.Input(shape=(IN_DIM,)), keras.Input(shape=(6,))
    ha, hb = L.Dense(8, activation="tanh")(a), L.Dense(8, activation="tanh")(b)
    dot = L.Dot(axes=1)([ha, hb])
    cos = L.Dot(axes=-1, normalize=True)([ha, hb])
    out = L.Dense(CLASSES, activation="softmax")(L.Concatenate()([dot, cos, ha]))
    return keras.Model([a, b], out)


FIDELITY_CASES["dot_adam"] = (build_dot, [IN_DIM, 6], sparse_targets, SPARSE, adam)


# ---- attention layers (issue 22): a transformer encoder block, Luong and Bahdanau attention


def build_mha_encoder(use_bias=True):
    """Self-attention + residual + LayerNormalization, a Dense feed-forward + residual +
    LayerNormalization, pooled and classified: a transformer encoder block. Adam runs it without
    biases: the key's bias has a zero gradient (softmax ignores a score added to every step), and
    Adam would scale its rounding noise up to the learning rate."""

    def build():
        L = keras.layers
        x = keras.Input(shape=(5, 6))
        a = L.MultiHeadAttention(num_heads=2, key_dim=4, value_dim=3, use_bias=use_bias)(x, x)
        h = L.LayerNormalization()(L.Add()([x, a]))
        f = L.Dense(6)(L.Dense(8, activation="relu")(h))
        h = L.LayerNormalization()(L.Add()([h, f]))
        return keras.Model(x, L.Dense(CLASSES, activation="softmax")(L.GlobalAveragePooling1D()(h)))

    return build


def build_mha_causal():
    """Causal cross-attention with a key of its own (value=, key= keywords), no biases, its own
    output width: more query steps than key steps, so the causal mask is not square."""
    L = keras.layers
    q, v, k = keras.Input(shape=(5, 6)), keras.Input(shape=(4, 3)), keras.Input(shape=(4, 2))
    a = L.MultiHeadAttention(num_heads=3, key_dim=2, use_bias=False, output_shape=7)(
        q, value=v, key=k, use_causal_mask=True
    )
    return keras.Model([q, v, k], L.Dense(CLASSES, activation="softmax")(L.GlobalAveragePooling1D()(a)))


def build_attention():
    """Luong attention of projected queries over values: scaled dot scores."""
    L = keras.layers
    q, v = keras.Input(shape=(5, 6)), keras.Input(shape=(4, 6))
    a = L.Attention(use_scale=True)([L.Dense(4)(q), L.Dense(4)(v)])
    return keras.Model([q, v], L.Dense(CLASSES, activation="softmax")(L.GlobalAveragePooling1D()(a)))


def build_attention_concat():
    """Attention's concat scores, with a key and a causal mask."""
    L = keras.layers
    q, v, k = keras.Input(shape=(5, 6)), keras.Input(shape=(4, 3)), keras.Input(shape=(4, 6))
    a = L.Attention(use_scale=True, score_mode="concat")([q, v, k], use_causal_mask=True)
    return keras.Model([q, v, k], L.Dense(CLASSES, activation="softmax")(L.Flatten()(a)))


def build_additive(use_scale):
    def build():
        L = keras.layers
        q, v, k = keras.Input(shape=(5, 6)), keras.Input(shape=(4, 3)), keras.Input(shape=(4, 6))
        a = L.AdditiveAttention(use_scale=use_scale)([L.Dense(6, activation="tanh")(q), v, k])
        return keras.Model([q, v, k], L.Dense(CLASSES, activation="softmax")(L.Flatten()(a)))

    return build


def build_dot_attention():
    """Attention as Keras 2 models wrote it by hand: Dot scores over sequences, a softmax, and a
    Dot of the weights with the values (batched matrix products), plus a cosine Dot over steps."""
    L = keras.layers
    q, v = keras.Input(shape=(5, 6)), keras.Input(shape=(4, 6))
    scores = L.Dot(axes=[2, 2])([L.Dense(6)(q), v])  # (None, 5, 4)
    weights = L.Activation("softmax")(scores)
    attended = L.Dot(axes=[2, 1])([weights, v])  # (None, 5, 6)
    cos = L.Dot(axes=1, normalize=True)([q, attended])  # (None, 6, 6)
    h = L.Concatenate()([L.Flatten()(attended), L.Flatten()(cos)])
    return keras.Model([q, v], L.Dense(CLASSES, activation="softmax")(h))


RANDOM = {"randomize": True}  # biases and scales away from their zeros and ones
FIDELITY_CASES.update(
    {
        "mha_encoder_adam": (build_mha_encoder(use_bias=False), [(5, 6)], sparse_targets, SPARSE, adam, RANDOM),
        "mha_encoder_sgd": (build_mha_encoder(), [(5, 6)], sparse_targets, SPARSE, sgd_momentum, RANDOM),
        "mha_causal_adam": (build_mha_causal, [(5, 6), (4, 3), (4, 2)], sparse_targets, SPARSE, adam, RANDOM),
        "attention_sgd": (build_attention, [(5, 6), (4, 6)], sparse_targets, SPARSE, sgd_momentum, RANDOM),
        "attention_concat_adam": (
            build_attention_concat,
            [(5, 6), (4, 3), (4, 6)],
            sparse_targets,
            SPARSE,
            adam,
            RANDOM,
        ),
        "additive_attention_adam": (
            build_additive(True),
            [(5, 6), (4, 3), (4, 6)],
            sparse_targets,
            SPARSE,
            adam,
            RANDOM,
        ),
        "additive_attention_sgd": (
            build_additive(False),
            [(5, 6), (4, 3), (4, 6)],
            sparse_targets,
            SPARSE,
            sgd_momentum,
            RANDOM,
        ),
        "dot_attention_sgd": (build_dot_attention, [(5, 6), (4, 6)], sparse_targets, SPARSE, sgd_momentum, RANDOM),
    }
)


# Sequence labelling with Embedding(mask_zero=True) on padded rows (issue 16): Keras weights each
# step's loss (and the metrics) by the output's mask. "padded": unique nonzero ids (TensorFlow's
# IndexedSlices make Adam differ on repeated ids, see embed_repeated_adam), then rows cut to
# random lengths by padding with 0 (one row all padding, one row whole).
SEQ_STEPS, SEQ_VOCAB = 6, 120


def step_targets(rng):
    return [rng.randint(0, CLASSES, size=(BATCH, SEQ_STEPS)).astype(np.int32)]


def padded_ids(rng, empty=True):
    """empty=False: row 0 keeps one step (a masked average of no step is 0/0)."""
    ids = rng.permutation(np.arange(1, SEQ_VOCAB))[: BATCH * SEQ_STEPS].reshape(BATCH, SEQ_STEPS)
    lengths = rng.randint(1, SEQ_STEPS, size=BATCH)
    lengths[0], lengths[1] = 0 if empty else 1, SEQ_STEPS
    ids[np.arange(SEQ_STEPS)[None, :] >= lengths[:, None]] = 0
    return ids.astype(np.int32)


def build_seq_label_lstm():
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=(SEQ_STEPS,)),
            L.Embedding(SEQ_VOCAB, 4, mask_zero=True),
            L.LSTM(5, return_sequences=True),
            L.TimeDistributed(L.Dense(CLASSES, activation="softmax")),
        ]
    )


def build_seq_label_gru():
    L = keras.layers
    ids = keras.Input(shape=(SEQ_STEPS,))
    h = L.GRU(5, return_sequences=True)(L.Embedding(SEQ_VOCAB, 4, mask_zero=True)(ids))
    return keras.Model(ids, L.Dense(CLASSES, activation="softmax")(h))  # Dense passes the mask on


def build_masked_classifier():
    """The last step's output of an LSTM carries no mask: a plain loss."""
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=(SEQ_STEPS,)),
            L.Embedding(SEQ_VOCAB, 4, mask_zero=True),
            L.LSTM(5),
            L.Dense(CLASSES, activation="softmax"),
        ]
    )


def build_masking_regressor():
    """Masking (steps whose features are all 0) and per-step sample weights ([B, T]), which Keras
    multiplies by the mask before the mean over the kept steps."""
    L = keras.layers
    return keras.Sequential(
        [
            keras.Input(shape=(SEQ_STEPS, 3)),
            L.Masking(mask_value=0.0),
            L.SimpleRNN(4, return_sequences=True),
            L.TimeDistributed(L.Dense(2)),
        ]
    )


def step_regression_targets(rng):
    return [rng.normal(size=(BATCH, SEQ_STEPS, 2)).astype(np.float32)]


SEQ = {"padded": True, "metrics": ["accuracy"], "randomize": True}
FIDELITY_CASES.update(
    {
        "seq_label_adam": (build_seq_label_lstm, [SEQ_STEPS], step_targets, SPARSE, adam, SEQ),
        "seq_label_gru_sgd": (build_seq_label_gru, [SEQ_STEPS], step_targets, SPARSE, sgd_momentum, SEQ),
        "masked_classifier_adam": (build_masked_classifier, [SEQ_STEPS], sparse_targets, SPARSE, adam, SEQ),
        "seq_masking_sgd": (
            build_masking_regressor,
            [(SEQ_STEPS, 3)],
            step_regression_targets,
            "mse",
            sgd_momentum,
            {"padded_steps": True, "step_weights": True, "metrics": ["mae"], "randomize": True},
        ),
    }
)


def build_masked_batchnorm():
    """BatchNormalization of masked sequences: in training Keras computes the batch's moments over
    the kept steps only (the moving statistics too), on the features (axis -1) and on the steps
    (axis 1) alike, and passes the mask on."""
    L = keras.layers
    ids = keras.Input(shape=(SEQ_STEPS,))
    h = L.BatchNormalization()(L.Embedding(SEQ_VOCAB, 4, mask_zero=True)(ids))
    h = L.BatchNormalization(axis=1)(L.LSTM(5, return_sequences=True)(h))
    return keras.Model(ids, L.Dense(CLASSES, activation="softmax")(L.GlobalAveragePooling1D()(h)))


FIDELITY_CASES["masked_batchnorm_sgd"] = (
    build_masked_batchnorm,
    [SEQ_STEPS],
    sparse_targets,
    SPARSE,
    sgd_momentum,
    {**SEQ, "nonempty": True},
)


# Masks into attention (issue 22). Keras 3's MultiHeadAttention deletes the masks of the tensors
# it reads as it runs (so a later reader of them would read none): each masked tensor here feeds
# one MultiHeadAttention and nothing after it.


def build_mha_keras_masks():
    """Self-attention of Embedding(mask_zero): Keras 3's dot_product_attention, then (scores
    returned) its Softmax layer, which zeroes the weights of a padded query step; the per-step
    loss is weighted by the query's mask, carried through both."""
    L = keras.layers
    ids = keras.Input(shape=(SEQ_STEPS,))
    e = L.Embedding(SEQ_VOCAB, 4, mask_zero=True)(ids)
    a = L.MultiHeadAttention(num_heads=2, key_dim=3)(e, e)
    b, _ = L.MultiHeadAttention(num_heads=2, key_dim=2, value_dim=3)(a, a, return_attention_scores=True)
    return keras.Model(ids, L.Dense(CLASSES, activation="softmax")(b))


def build_attention_keras_masks():
    """Attention (its weights returned: those of padded query steps too, so the padding id's
    embedding gets a gradient) and causal AdditiveAttention over masked ids, averaged over the
    kept steps."""
    L = keras.layers
    ids = keras.Input(shape=(SEQ_STEPS,))
    e = L.Embedding(SEQ_VOCAB, 4, mask_zero=True)(ids)
    d = L.Dense(4)(e)
    a, w = L.Attention(use_scale=True)([e, d], return_attention_scores=True)
    b = L.AdditiveAttention()([e, d], use_causal_mask=True)
    h = L.Concatenate()([L.GlobalAveragePooling1D()(a), L.GlobalAveragePooling1D()(b), L.Flatten()(w)])
    return keras.Model(ids, L.Dense(CLASSES, activation="softmax")(h))


FIDELITY_CASES.update(
    {
        "mha_keras_masks_sgd": (build_mha_keras_masks, [SEQ_STEPS], step_targets, SPARSE, sgd_momentum, SEQ),
        "attention_keras_masks_sgd": (  # Adam: TensorFlow's sparse update of the repeated padding id differs
            build_attention_keras_masks,
            [SEQ_STEPS],
            sparse_targets,
            SPARSE,
            sgd_momentum,
            {**SEQ, "nonempty": True},
        ),
    }
)

# Ftrl: its defaults, and every regularization term acting (the clip keeps some weights at 0)
FIDELITY_CASES.update(
    {
        "opt_ftrl": on_mlp(lambda: O.Ftrl(0.1)),
        "opt_ftrl_regularized": on_mlp(
            lambda: O.Ftrl(
                0.1,
                learning_rate_power=-0.7,
                initial_accumulator_value=0.05,
                l1_regularization_strength=0.01,
                l2_regularization_strength=0.02,
                l2_shrinkage_regularization_strength=0.03,
                beta=0.5,
            )
        ),
    }
)


def build_masked_merges():
    """Keras 3's Multiply, Maximum and Minimum of masked sequences: a masked step counts as 1 in a
    product (zeroed where no input keeps it) and takes the other operand's value in a maximum or
    minimum; with every input masked, and with an unmasked one among them (no output mask)."""
    L = keras.layers
    a, b = keras.Input(shape=(SEQ_STEPS,)), keras.Input(shape=(SEQ_STEPS,))
    ea = L.Embedding(SEQ_VOCAB, 4, mask_zero=True)(a)
    eb = L.Embedding(SEQ_VOCAB, 4, mask_zero=True)(b)
    plain = L.Embedding(SEQ_VOCAB, 4)(b)
    merged = [
        L.Multiply()([ea, eb]),
        L.Maximum()([ea, eb]),
        L.Minimum()([ea, eb, plain]),
        L.Multiply()([plain, ea]),
        L.Maximum()([plain, eb]),
    ]
    h = L.Concatenate()([L.GlobalAveragePooling1D()(m) for m in merged])
    return keras.Model([a, b], L.Dense(CLASSES, activation="softmax")(h))


FIDELITY_CASES["masked_merges_sgd"] = (
    build_masked_merges,
    [SEQ_STEPS, SEQ_STEPS],
    sparse_targets,
    SPARSE,
    sgd_momentum,
    {**SEQ, "nonempty": True},
)


def build_constrained_sequence():
    """Weight constraints, which Keras's optimizer applies after each update: UnitNorm on the
    embeddings' rows, MaxNorm, UnitNorm and NonNeg on an LSTM's kernels and bias, MinMaxNorm (rate
    0.5) and NonNeg on a Dense's; each acts (the norms start outside the limits)."""
    L, C = keras.layers, keras.constraints
    ids = keras.Input(shape=(SEQ_STEPS,))
    # rows of norm about 1 (the default's 0.05 would scale Adam's rounding by 20)
    init = keras.initializers.RandomUniform(-1.0, 1.0)
    h = L.Embedding(SEQ_VOCAB, 4, embeddings_initializer=init, embeddings_constraint=C.UnitNorm(axis=1))(ids)
    h = L.LSTM(
        5,
        kernel_constraint=C.MaxNorm(0.5),
        recurrent_constraint=C.UnitNorm(),
        bias_constraint=C.NonNeg(),
    )(h)
    h = L.Dense(6, activation="tanh", kernel_constraint=C.MinMaxNorm(0.2, 0.6, rate=0.5), bias_constraint="non_neg")(h)
    return keras.Model(ids, L.Dense(CLASSES, activation="softmax")(h))


def build_constrained_cnn():
    """MaxNorm over a Conv2D kernel's three input axes (Keras's advice for convolutions), NonNeg on
    a BatchNormalization's gamma and a PReLU's alpha, MaxNorm on the head's kernel columns."""
    L, C = keras.layers, keras.constraints
    return keras.Sequential(
        [
            keras.Input(shape=(6, 6, 2)),
            # no bias: before a batch norm its gradient is rounding, which Adam scales up
            L.Conv2D(4, 3, padding="same", use_bias=False, kernel_constraint=C.MaxNorm(0.8, axis=[0, 1, 2])),
            L.BatchNormalization(gamma_constraint=C.NonNeg(), beta_constraint=C.MaxNorm(0.05)),
            L.PReLU(alpha_initializer="ones", alpha_constraint=C.NonNeg()),
            L.GlobalAveragePooling2D(),
            L.Dense(CLASSES, activation="softmax", kernel_constraint=C.MaxNorm(0.4)),
        ]
    )


FIDELITY_CASES.update(
    {
        "constraints_seq_adam": (
            build_constrained_sequence,
            [SEQ_STEPS],
            sparse_targets,
            SPARSE,
            adam,
            {"ids": SEQ_VOCAB, "unique_ids": True},
        ),
        "constraints_seq_sgd": (
            build_constrained_sequence,
            [SEQ_STEPS],
            sparse_targets,
            SPARSE,
            sgd_momentum,
            {"ids": SEQ_VOCAB, "unique_ids": True},
        ),
        "constraints_cnn_sgd": (build_constrained_cnn, [(6, 6, 2)], sparse_targets, SPARSE, sgd_momentum),
        "constraints_cnn_adam": (build_constrained_cnn, [(6, 6, 2)], sparse_targets, SPARSE, adam),
    }
)


def build_keras_ops():
    """Keras 3 operations between layers (x * 2.0 - 0.5, keras.ops.mean, x[:, -1], ...), which the
    config holds as entries of module keras.src.ops.*: gradients flow through each."""
    K, L = keras.ops, keras.layers
    x = keras.Input(shape=(IN_DIM,))
    h = L.Dense(12)(x)
    h = K.relu(h * 2.0 - 0.5) + K.sigmoid(h) / 3.0
    seq = K.transpose(K.reshape(h, (-1, 3, 4)), (0, 2, 1))  # (B, 4, 3)
    parts = [
        K.mean(seq, axis=1),
        K.max(seq, axis=-1),
        seq[:, -1],
        K.sum(K.square(seq[:, 1:3]), axis=1),
        K.squeeze(K.expand_dims(K.tanh(x), 1), 1),
        K.clip(K.matmul(seq, K.transpose(seq, (0, 2, 1)))[:, 0], -1.0, 1.0),
        K.maximum(1.0 - K.exp(-K.abs(x)), 0.2),
    ]
    return keras.Model(x, L.Dense(CLASSES, activation="softmax")(K.concatenate(parts, axis=-1)))


FIDELITY_CASES["keras_ops_sgd"] = (build_keras_ops, [IN_DIM], sparse_targets, SPARSE, sgd_momentum)


KERAS3_ACTIVATIONS = [
    "hard_silu",
    "hard_swish",
    "celu",
    "hard_tanh",
    "log_sigmoid",
    "squareplus",
    "sparse_plus",
    "sparse_sigmoid",
    "hard_shrink",
    "soft_shrink",
    "tanh_shrink",
]


def build_keras3_activations():
    """Keras 3's newer activations by name, each on a Dense branch of its own (a chain of the
    shrinks would zero most gradients)."""
    L = keras.layers
    x = keras.Input(shape=(IN_DIM,))
    branches = [L.Dense(4, activation=name)(L.Dense(6)(x)) for name in KERAS3_ACTIVATIONS]
    return keras.Model(x, L.Dense(CLASSES, activation="softmax")(L.Concatenate()(branches)))


FIDELITY_CASES["act_keras3_sgd"] = (build_keras3_activations, [IN_DIM], sparse_targets, SPARSE, sgd_momentum)


def build_unit_norm_identity():
    """UnitNormalization over the features and over (steps, features), and Identity, which pass
    an Embedding's mask on to the pooling."""
    L = keras.layers
    ids = keras.Input(shape=(SEQ_STEPS,))
    h = L.Identity()(L.Embedding(SEQ_VOCAB, 4, mask_zero=True)(ids))
    a = L.GlobalAveragePooling1D()(L.UnitNormalization()(L.Dense(5)(h)))
    b = L.Flatten()(L.UnitNormalization(axis=[1, 2])(L.Dense(3)(h)))
    return keras.Model(ids, L.Dense(CLASSES, activation="softmax")(L.Concatenate()([a, b])))


FIDELITY_CASES["unit_norm_identity_sgd"] = (
    build_unit_norm_identity,
    [SEQ_STEPS],
    sparse_targets,
    SPARSE,
    sgd_momentum,
    {**SEQ, "nonempty": True},
)


def build_constant_operands():
    """Tensors no input depends on, which Keras 3 computes when the model is built and saves as
    their values (`__tensor__` operands): a positional embedding's table added to the token
    embeddings, a fixed per-feature scale, and a (1, 6) constant as the first operand."""
    K, L = keras.ops, keras.layers
    ids = keras.Input(shape=(SEQ_STEPS,))
    h = L.Embedding(SEQ_VOCAB, 6)(ids) + L.Embedding(SEQ_STEPS, 6)(K.arange(SEQ_STEPS))
    h = K.mean(h * K.linspace(0.5, 1.5, 6), axis=1)
    return keras.Model(ids, L.Dense(CLASSES, activation="softmax")(K.ones((1, 6)) * 0.1 - h))


FIDELITY_CASES["constant_operands_sgd"] = (
    build_constant_operands,
    [SEQ_STEPS],
    sparse_targets,
    SPARSE,
    sgd_momentum,
    {**SEQ, "nonempty": True},
)


def build_compare_ops():
    """Comparisons, where, cast, log_softmax and integer powers between layers, trained: no
    gradient through a comparison, where's through the branch it takes."""
    K, L = keras.ops, keras.layers
    x = keras.Input(shape=(IN_DIM,))
    h = L.Dense(8)(x)
    gated = K.where(K.greater_equal(h, 0.0), h, 0.1 * h) + K.cast(K.less(x[:, :8], 0.2), "float32") * h
    powers = K.power(h, 2) * 0.1 - K.power(h * h + 1.0, -1) + K.power(h, 3) * 0.01
    return keras.Model(
        x, L.Dense(CLASSES, activation="softmax")(K.concatenate([gated, powers, K.log_softmax(h)], axis=-1))
    )


FIDELITY_CASES["compare_ops_sgd"] = (build_compare_ops, [IN_DIM], sparse_targets, SPARSE, sgd_momentum)

# Keras's use_ema: the weights take their moving average every 3rd step (every step for SGD);
# between, they train as without it
FIDELITY_CASES["opt_adam_ema"] = on_mlp(lambda: O.Adam(0.01, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3))
FIDELITY_CASES["opt_sgd_ema"] = on_mlp(
    lambda: O.SGD(0.1, momentum=0.5, use_ema=True, ema_momentum=0.6, ema_overwrite_frequency=1)
)


def build_more_ops():
    """keras.ops reductions and moves between layers, trained: var, std, logsumexp, norm,
    normalize, rsqrt, glu, split, take, swapaxes, moveaxis, repeat, tile, flip, pad, a strided
    slice and the activation ops."""
    K, L = keras.ops, keras.layers
    x = keras.Input(shape=(IN_DIM,))
    h = K.reshape(L.Dense(12)(x), (-1, 3, 4))
    flat = lambda t: K.reshape(t, (-1, int(np.prod(t.shape[1:]))))  # noqa: E731
    parts = [
        K.var(h, axis=1),
        K.std(h, axis=-1, keepdims=True),
        K.logsumexp(h, axis=(1, 2)),
        K.norm(h, axis=-1),
        K.normalize(h, axis=1),
        K.rsqrt(K.abs(h) + 1.0),
        K.glu(h, axis=-1),
        K.split(h, [1, 3], axis=-1)[1],
        K.take(h, [2, 0], axis=1),
        K.swapaxes(h, 1, 2)[:, 0],
        K.moveaxis(h, 1, 2)[:, 1],
        K.repeat(h, 2, axis=1)[:, 1:3],
        K.tile(h, (1, 1, 2))[:, 0],
        K.flip(h, axis=1),
        K.pad(h, ((0, 0), (1, 0), (0, 1))),
        h[:, ::2, 1::2],
        K.leaky_relu(h, negative_slope=0.1) + K.hard_sigmoid(h) + K.log_sigmoid(h),
    ]
    return keras.Model(x, L.Dense(CLASSES, activation="softmax")(K.concatenate([flat(t) for t in parts], axis=-1)))


FIDELITY_CASES["more_ops_sgd"] = (build_more_ops, [IN_DIM], sparse_targets, SPARSE, sgd_momentum)


def build_scaled_norms():
    """RMSNormalization over one axis and two, ConvNeXt's LayerScale, and LayerNormalization's
    (deprecated) rms_scaling, between Dense layers."""
    from keras.src.applications.convnext import LayerScale

    L = keras.layers
    x = keras.Input(shape=(IN_DIM,))
    h = L.Reshape((3, 4))(L.Dense(12)(x))
    h = L.RMSNormalization()(h) + L.RMSNormalization(axis=[1, 2], epsilon=1e-3)(h)
    h = LayerScale(0.5, 4)(h)
    h = L.LayerNormalization(axis=[1, 2], rms_scaling=True, epsilon=1e-2)(L.Dense(4)(h))
    return keras.Model(x, L.Dense(CLASSES, activation="softmax")(L.Flatten()(h)))


FIDELITY_CASES["scaled_norms_sgd"] = (build_scaled_norms, [IN_DIM], sparse_targets, SPARSE, sgd_momentum, RANDOM)

# Keras's gradient_accumulation_steps: every 2nd (3rd) step applies the mean gradient, with
# AdamW's decay and a schedule read at the steps taken, or an EMA over the updates
FIDELITY_CASES["opt_adamw_accumulate"] = on_mlp(
    lambda: O.AdamW(S.ExponentialDecay(0.02, 1, 0.8), weight_decay=0.05, gradient_accumulation_steps=2)
)
FIDELITY_CASES["opt_sgd_accumulate_ema"] = on_mlp(
    lambda: O.SGD(
        0.1, momentum=0.5, gradient_accumulation_steps=3, use_ema=True, ema_momentum=0.6, ema_overwrite_frequency=1
    )
)


def build_einsum():
    """keras.ops.einsum between tensors (attention's scores and weighted sum), with a constant
    and of one operand, and EinsumDense layers with an ellipsis and a bias over part of the output."""
    K, L = keras.ops, keras.layers
    x = keras.Input(shape=(IN_DIM,))
    h = K.reshape(L.Dense(12)(x), (-1, 3, 2, 2))  # (batch, steps, heads, width)
    q, k = L.EinsumDense("abcd,de->abce", output_shape=(3, 2, 2), bias_axes="e")(h), h * 0.5
    scores = K.softmax(K.einsum("bqhd,bkhd->bhqk", q, k), axis=-1)
    mixed = K.einsum("bhqk,bkhd->bqhd", scores, h)
    summed = K.einsum("bqhd->bhd", mixed) + K.einsum("bqhd,de->bhe", mixed, K.ones((2, 2)) * 0.3)
    dense = L.EinsumDense("...d,de->...e", output_shape=4, bias_axes="e", activation="tanh")(L.Flatten()(mixed))
    out = L.EinsumDense("abc,cd->abd", output_shape=(2, 3), bias_axes="b")(summed)
    return keras.Model(x, L.Dense(CLASSES, activation="softmax")(K.concatenate([L.Flatten()(out), dense], axis=-1)))


FIDELITY_CASES["einsum_sgd"] = (build_einsum, [IN_DIM], sparse_targets, SPARSE, sgd_momentum, RANDOM)


def serialize_loss(loss):
    if isinstance(loss, (str, dict)):
        return loss
    config = keras.losses.serialize(loss)
    if isinstance(loss, keras.losses.Huber):  # Keras 3.15's get_config drops it
        config["config"]["delta"] = float(loss._fn_kwargs["delta"])
    return config


def serialize_metrics(metrics):
    if isinstance(metrics, dict):
        return {k: serialize_metrics(v) for k, v in metrics.items()}
    if isinstance(metrics, (list, tuple)):
        return [serialize_metrics(m) for m in metrics]
    return metrics if isinstance(metrics, str) else keras.metrics.serialize(metrics)


def make_fidelity_case(name, spec, out_dir: Path, seed: int) -> None:
    builder, in_dims, make_targets, loss, make_opt, *extras = spec
    extras = extras[0] if extras else {}
    reset(seed)
    rng = np.random.RandomState(seed)
    if extras.get("padded"):
        xs = [padded_ids(rng, not extras.get("nonempty")) for _ in in_dims]
    elif extras.get("padded_steps"):  # features 0 from a random step on: Masking skips them
        xs = [rng.normal(size=(BATCH, *d)).astype(np.float32) for d in in_dims]
        for x in xs:
            x[np.arange(SEQ_STEPS)[None, :] >= rng.randint(1, SEQ_STEPS + 1, size=BATCH)[:, None]] = 0
    elif extras.get("unique_ids"):
        xs = [rng.permutation(extras["ids"])[: BATCH * d].reshape(BATCH, d).astype(np.int32) for d in in_dims]
    elif extras.get("ids"):
        xs = [rng.randint(0, extras["ids"], size=(BATCH, *np.atleast_1d(d))).astype(np.int32) for d in in_dims]
    else:
        xs = [rng.normal(size=(BATCH, *np.atleast_1d(d))).astype(np.float32) for d in in_dims]
    ys = make_targets(rng)

    model = builder()
    if extras.get("randomize"):
        randomize_weights(model, seed)
    opt = make_opt()
    loss_obj = loss() if callable(loss) else loss
    metrics = extras.get("metrics", [])
    model.compile(optimizer=opt, loss=loss_obj, metrics=metrics, loss_weights=extras.get("loss_weights"))
    class_weight = extras.get("class_weight")
    sw = None
    if extras.get("sample_weight"):
        sw = rng.uniform(0.0, 2.0, size=BATCH).astype(np.float32)
    elif extras.get("step_weights"):  # Keras's temporal sample weights, one per step
        sw = rng.uniform(0.0, 2.0, size=(BATCH, SEQ_STEPS)).astype(np.float32)
    elif class_weight:
        sw = np.array([class_weight.get(int(c), 1.0) for c in ys[0]], np.float32)

    arrays = {}
    for i, x in enumerate(xs):
        arrays[f"x{i}"] = x
    for i, y in enumerate(ys):
        arrays[f"y{i}"] = y
    for i, w in enumerate(model.get_weights()):
        arrays[f"w_init_{i}"] = w
    x_in = xs if len(xs) > 1 else xs[0]
    y_in = ys if len(ys) > 1 else ys[0]
    for i, p in enumerate(as_list(model.predict(x_in, batch_size=BATCH, verbose=0))):
        arrays[f"pred{i}"] = p

    if sw is not None:
        arrays["sw"] = sw

    # Sanity check: the first train_on_batch value must equal the loss of the
    # untouched model on the same batch (i.e. it is reported pre-update), unless
    # a BatchNormalization makes training and inference differ.
    loss_before = model.test_on_batch(x_in, y_in, sample_weight=sw, return_dict=True)["loss"]

    losses, logs = [], []
    for step in range(1, STEPS + 1):
        if class_weight:
            out = model.train_on_batch(x_in, y_in, class_weight=class_weight, return_dict=True)
        else:
            out = model.train_on_batch(x_in, y_in, sample_weight=sw, return_dict=True)
        logs.append({k: np.asarray(v).tolist() for k, v in out.items()})
        losses.append(float(out["loss"]))
        for i, w in enumerate(model.get_weights()):
            arrays[f"w_step{step}_{i}"] = w
    arrays["loss"] = np.asarray(losses, dtype=np.float64)
    # after training: the moving statistics moved, so inference differs from the start
    for i, p in enumerate(as_list(model.predict(x_in, batch_size=BATCH, verbose=0))):
        arrays[f"pred_after{i}"] = p
    training_mode = any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers
    )  # batch statistics
    assert training_mode or np.isclose(losses[0], loss_before, rtol=1e-5, atol=1e-6), (name, losses[0], loss_before)
    assert np.all(np.isfinite(arrays["loss"])), name

    np.savez_compressed(out_dir / f"{name}.npz", **arrays)
    meta = {
        "model_config": json.loads(model.to_json()),
        "compile": {
            "optimizer": keras.optimizers.serialize(opt),
            "loss": serialize_loss(loss_obj),
            "loss_weights": extras.get("loss_weights"),
            "metrics": serialize_metrics(metrics),
        },
        "fit": {
            "sample_weight": sw is not None and not class_weight,
            "class_weight": {str(k): v for k, v in class_weight.items()} if class_weight else None,
        },
        "logs": logs,
        "batch_size": BATCH,
        "steps": STEPS,
        "versions": VERSIONS,
    }
    dump_json(meta, out_dir / f"{name}.json")
    print(f"  tf/{name}: loss {np.round(arrays['loss'], 5).tolist()}")


# --------------------------------------------------------------------------
# (b) Config zoo: the same architecture built with Keras 3 and with tf-keras
# --------------------------------------------------------------------------
#
# Every builder takes the Keras module ``K`` (``keras`` or ``tf_keras``) and
# uses only API common to both, so the two configs describe the same graph.
# Layer names are left to Keras (both sessions are cleared first) unless a
# name makes the graph easier to read.


def zoo_seq_mlp(K):
    if K is keras:
        inp = K.layers.InputLayer(shape=(8,))
    else:
        inp = K.layers.InputLayer(input_shape=(8,))
    return K.Sequential(
        [
            inp,
            K.layers.Dense(16, activation="relu"),
            K.layers.Dropout(0.5),
            K.layers.Dense(3, activation="softmax"),
        ]
    )


def zoo_seq_shapes(K):
    return K.Sequential(
        [
            K.Input(shape=(4, 3)),
            K.layers.Flatten(),
            K.layers.Dense(6),
            K.layers.Reshape((2, 3)),
            K.layers.Flatten(),
            K.layers.Activation("tanh"),
            K.layers.Dense(2),
        ]
    )


def zoo_two_input_concat(K):
    a = K.Input(shape=(12,), name="input_a")
    b = K.Input(shape=(6,), name="input_b")
    ha = K.layers.Dense(8, activation="relu", name="dense_a")(a)
    hb = K.layers.Dense(8, activation="relu", name="dense_b")(b)
    h = K.layers.Concatenate(name="concat")([ha, hb])
    out = K.layers.Dense(5, activation="softmax", name="head")(h)
    return K.Model([a, b], out, name="two_input_concat")


def zoo_residual_add(K):
    x = K.Input(shape=(12,), name="x")
    h = K.layers.Dense(12, activation="tanh", name="hidden")(x)
    s = K.layers.Add(name="skip")([x, h])
    out = K.layers.Dense(5, activation="softmax", name="head")(s)
    return K.Model(x, out, name="residual_add")


def zoo_shared_layer(K):
    a = K.Input(shape=(6,), name="left")
    b = K.Input(shape=(6,), name="right")
    shared = K.layers.Dense(4, activation="tanh", name="shared")
    out = K.layers.Add(name="sum")([shared(a), shared(b)])
    return K.Model([a, b], out, name="shared_layer")


def zoo_nested(K):
    sub = K.Sequential(
        [
            K.Input(shape=(6,)),
            K.layers.Dense(8, activation="relu", name="sub_dense_1"),
            K.layers.Dense(8, activation="tanh", name="sub_dense_2"),
        ],
        name="sub",
    )
    x = K.Input(shape=(10,), name="x")
    h = K.layers.Dense(6, activation="relu", name="pre")(x)
    h = sub(h)
    out = K.layers.Dense(3, name="post")(h)
    return K.Model(x, out, name="nested")


def zoo_merges(K):
    a = K.Input(shape=(5,), name="a")
    b = K.Input(shape=(5,), name="b")
    L = K.layers
    parts = [
        L.Subtract(name="sub")([a, b]),
        L.Multiply(name="mul")([a, b]),
        L.Average(name="avg")([a, b]),
        L.Maximum(name="max")([a, b]),
        L.Minimum(name="min")([a, b]),
    ]
    out = L.Concatenate(name="concat")(parts)
    return K.Model([a, b], out, name="merges")


def zoo_multi_output(K):
    x = K.Input(shape=(7,), name="x")
    h = K.layers.Dense(10, activation="relu", name="trunk")(x)
    cls = K.layers.Dense(4, activation="softmax", name="cls")(h)
    reg = K.layers.Dense(2, name="reg")(h)
    return K.Model(x, [cls, reg], name="multi_output")


ACTIVATIONS = [
    "linear",
    "relu",
    "sigmoid",
    "tanh",
    "softmax",
    "elu",
    "selu",
    "softplus",
    "softsign",
    "gelu",
    "swish",
    "silu",
    "leaky_relu",
    "relu6",
    "hard_sigmoid",
    "exponential",
]


def zoo_activations(K):
    """A chain of Dense(4, activation=a); every layer's output is also a model
    output, so a mismatch can be pinned on a single activation."""
    x = K.Input(shape=(4,), name="x")
    h, outs = x, []
    for a in ACTIVATIONS:
        h = K.layers.Dense(4, activation=a, name=f"dense_{a}")(h)
        outs.append(h)
    return K.Model(x, outs, name="activations")


def set_activation_weights(model, seed):
    """Weights close to the identity, so values stay O(1) along the chain
    (nothing overflows in ``exponential``) but every activation still sees
    both signs and a range of magnitudes."""
    rng = np.random.RandomState(seed)
    weights = []
    for w in model.get_weights():
        if w.ndim == 2:
            weights.append((np.eye(w.shape[0]) * 1.5 + rng.normal(scale=0.4, size=w.shape)).astype(np.float32))
        else:
            weights.append(rng.normal(scale=0.2, size=w.shape).astype(np.float32))
    model.set_weights(weights)


def zoo_initializers(K):
    """Parallel Dense(6) branches on one input, each with another
    initializer / regularizer, concatenated (a chain would let a Zeros
    kernel blank out everything after it)."""
    I, R = K.initializers, K.regularizers
    kernels = [
        ("glorot_uniform", I.GlorotUniform(seed=1)),
        ("glorot_normal", I.GlorotNormal(seed=2)),
        ("he_uniform", I.HeUniform(seed=3)),
        ("he_normal", I.HeNormal(seed=4)),
        ("lecun_uniform", I.LecunUniform(seed=5)),
        ("lecun_normal", I.LecunNormal(seed=6)),
        ("variance_scaling", I.VarianceScaling(scale=2.0, mode="fan_out", distribution="uniform", seed=7)),
        ("zeros", I.Zeros()),
        ("ones", I.Ones()),
        ("constant", I.Constant(0.3)),
        ("random_normal", I.RandomNormal(mean=0.0, stddev=0.1, seed=8)),
        ("random_uniform", I.RandomUniform(minval=-0.1, maxval=0.1, seed=9)),
        ("truncated_normal", I.TruncatedNormal(mean=0.0, stddev=0.1, seed=10)),
        ("orthogonal", I.Orthogonal(gain=1.0, seed=11)),
        ("identity", I.Identity(gain=1.0)),
    ]
    biases = {
        "glorot_uniform": I.Constant(0.1),
        "he_normal": I.RandomNormal(stddev=0.05, seed=12),
        "lecun_uniform": I.RandomUniform(-0.05, 0.05, seed=13),
        "zeros": I.Ones(),
        "orthogonal": I.TruncatedNormal(stddev=0.05, seed=14),
    }
    regs = {
        "glorot_normal": dict(kernel_regularizer=R.l1(1e-3)),
        "he_uniform": dict(kernel_regularizer=R.l2(1e-3), bias_regularizer=R.l2(1e-4)),
        "lecun_normal": dict(kernel_regularizer=R.l1_l2(l1=1e-4, l2=1e-3)),
        "ones": dict(activity_regularizer=R.l2(1e-4)),
    }
    x = K.Input(shape=(6,), name="x")
    branches = []
    for name, init in kernels:
        layer = K.layers.Dense(
            6,
            name=f"k_{name}",
            kernel_initializer=init,
            bias_initializer=biases.get(name, "zeros"),
            **regs.get(name, {}),
        )
        branches.append(layer(x))
    out = K.layers.Concatenate(name="concat")(branches)
    return K.Model(x, out, name="initializers")


def zoo_conv2d(K):
    """Conv2D's options, one branch each; every branch is a model output."""
    x = K.Input(shape=(9, 9, 3), name="image")
    C = K.layers.Conv2D
    outs = [
        C(4, 3, padding="same", strides=2, activation="relu", name="same_s2")(x),
        C(4, (3, 2), dilation_rate=2, name="valid_dilated")(x),
        C(5, (2, 3), strides=(2, 1), padding="same", use_bias=False, activation="tanh", name="same_s21")(x),
        C(3, 1, name="pointwise")(x),
        C(6, 3, groups=3, padding="same", name="grouped")(x),
    ]
    return K.Model(x, outs, name="conv2d")


def zoo_conv_layers(K):
    x = K.Input(shape=(8, 8, 3), name="image")
    s = K.Input(shape=(10, 4), name="sequence")
    L = K.layers
    outs = [
        L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(x),
        L.SeparableConv2D(5, 3, strides=2, activation="relu", name="separable")(x),
        L.Conv2DTranspose(4, 3, strides=2, padding="same", name="transpose_same")(x),
        L.Conv2DTranspose(2, (3, 2), strides=(2, 3), name="transpose_valid")(x),
        L.MaxPooling2D(3, strides=2, padding="same", name="max_same")(x),
        L.AveragePooling2D(3, strides=2, padding="same", name="avg_same")(x),
        L.AveragePooling2D((2, 3), name="avg_valid")(x),
        L.GlobalMaxPooling2D(name="global_max")(x),
        L.UpSampling2D((2, 3), name="upsample")(
            L.Cropping2D(((1, 2), (0, 3)), name="crop")(L.ZeroPadding2D(((1, 0), (2, 1)), name="zeropad")(x))
        ),
        L.Conv1D(3, 3, padding="causal", dilation_rate=2, name="causal")(s),
        L.Conv1D(2, 2, strides=2, activation="relu", name="conv1d")(s),
        L.GlobalAveragePooling1D(name="gap1d")(L.MaxPooling1D(2, name="max1d")(s)),
        L.GlobalMaxPooling1D(name="gmp1d")(L.AveragePooling1D(3, strides=1, name="avg1d")(s)),
    ]
    return K.Model([x, s], outs, name="conv_layers")


def zoo_norm_embed(K):
    ids = K.Input(shape=(6,), name="ids", dtype="int32")
    L = K.layers
    e = L.Embedding(11, 8, name="embed")(ids)
    h = L.LayerNormalization(name="ln")(e)
    h = L.Dense(6, activation="relu", name="dense_seq")(h)
    h = L.GroupNormalization(groups=3, name="gn")(h)
    h = L.Permute((2, 1), name="permute")(h)
    v = L.GlobalAveragePooling1D(name="pool")(h)
    v = L.BatchNormalization(name="bn")(v)
    r = L.RepeatVector(3, name="repeat")(v)
    img = L.Reshape((2, 3, 6), name="as_image")(L.Flatten(name="flat")(h))
    bn2 = L.BatchNormalization(axis=-1, name="bn_image")(img)
    return K.Model(ids, [r, bn2], name="norm_embed")


def zoo_act_layers(K):
    """The activation layers, each option on a branch of its own (all model outputs)."""
    x = K.Input(shape=(5, 4), name="x")
    L = K.layers
    outs = [
        leaky(K, 0.3)(x),
        leaky(K, 0.05)(x),
        L.ReLU(name="relu")(x),
        L.ReLU(max_value=6.0, name="relu6")(x),
        L.ReLU(max_value=1.0, negative_slope=0.1, threshold=0.5, name="relu_all")(x),
        L.ReLU(negative_slope=0.2, name="relu_leaky")(x),
        L.ReLU(threshold=0.3, name="relu_threshold")(x),
        L.ReLU(max_value=0.8, negative_slope=0.3, name="relu_capped")(x),
        L.PReLU(name="prelu")(x),
        L.PReLU(shared_axes=[1], name="prelu_shared")(x),
        L.ELU(name="elu")(x),
        L.ELU(alpha=0.4, name="elu_04")(x),
        L.Softmax(name="softmax")(x),
        L.Softmax(axis=1, name="softmax_time")(x),
    ]
    return K.Model(x, outs, name="act_layers")


def zoo_noise_layers(K):
    """Noise and regularization layers are the identity at inference; Masking zeroes the steps
    whose features all equal mask_value (zoo_inputs plants some)."""
    x = K.Input(shape=(5, 4), name="x")
    img = K.Input(shape=(4, 4, 3), name="img")
    L = K.layers
    h = L.Masking(mask_value=0.5, name="masking")(x)
    h = L.SpatialDropout1D(0.3, name="spatial1d")(h)
    h = L.GaussianNoise(0.5, name="noise")(h)
    h = L.GaussianDropout(0.3, name="gdrop")(h)
    h = L.AlphaDropout(0.2, name="adrop")(h)
    h = L.ActivityRegularization(l1=0.1, l2=0.2, name="activity")(h)
    out = L.Dense(3, name="dense")(h)
    i = L.SpatialDropout2D(0.4, name="spatial2d")(img)
    return K.Model([x, img], [h, out, i], name="noise_layers")


def zoo_preprocess(K):
    """Rescaling, Normalization (given, inverted, over several axes, adapted), Resizing and CenterCrop."""
    x = K.Input(shape=(6, 8, 3), name="image")
    L = K.layers
    adapted = L.Normalization(axis=(1, 3), name="norm_adapted")
    adapted.adapt(np.random.RandomState(3).normal(0.5, 3.0, size=(32, 6, 8, 3)).astype(np.float32))
    outs = [
        L.Rescaling(1.0 / 255, name="rescale")(x),
        L.Rescaling([0.5, -1.0, 2.0], offset=[0.1, 0.2, -0.3], name="rescale_channels")(x),
        L.Normalization(mean=[0.1, -0.2, 0.3], variance=[1.5, 0.5, 4.0], name="norm_given")(x),
        L.Normalization(axis=None, mean=0.5, variance=2.0, name="norm_scalar")(x),
        L.Normalization(mean=[0.1, -0.2, 0.3], variance=[1.5, 0.5, 4.0], invert=True, name="norm_invert")(x),
        adapted(x),
        L.Resizing(9, 5, name="resize_bilinear")(x),
        L.Resizing(4, 11, interpolation="nearest", name="resize_nearest")(x),
        L.Resizing(3, 3, name="resize_down")(x),
        L.CenterCrop(4, 5, name="center_crop")(x),
    ]
    return K.Model(x, outs, name="preprocess")


def zoo_thresholded(K):
    """ThresholdedReLU exists in Keras 2 only (tf-keras writes this zoo entry alone)."""
    x = K.Input(shape=(6,), name="x")
    h = K.layers.ThresholdedReLU(theta=0.4, name="thresholded")(x)
    return K.Model(x, [h, K.layers.ThresholdedReLU(name="theta_default")(x)], name="thresholded")


def randomize_weights(model, seed):
    """Random weights everywhere (positive ones for the variances), so biases, scales and
    the moving statistics all matter in the predictions."""
    rng = np.random.RandomState(seed)
    weights = []
    for v in model.weights:
        w = rng.normal(scale=0.4, size=tuple(v.shape))
        if "variance" in v.name:
            w = np.abs(w) + 0.5
        weights.append(w.astype(np.float32))
    model.set_weights(weights)


def zoo_inputs(arch, shapes, rng):
    if arch == "norm_embed":
        return [rng.randint(0, 11, size=(ZOO_ROWS,) + shapes[0]).astype(np.int32)]
    xs = [rng.normal(size=(ZOO_ROWS,) + s).astype(np.float32) for s in shapes]
    if arch == "noise_layers":  # steps Masking masks (all features 0.5), one that it keeps
        xs[0][0, 1] = xs[0][2, 4] = xs[0][3, 0] = 0.5
        xs[0][1, 2, :3] = 0.5
    return xs


# arch name -> (builder, input shapes without batch dim)
def zoo_tensor_ops(K):
    """TensorFlow / Keras 3 operations between layers: tf-keras writes them as TFOpLambda and
    SlicingOpLambda layers, Keras 3 as op entries (module keras.src.ops.*)."""
    if K is keras:
        ops = SimpleNamespace(
            relu=keras.ops.relu,
            mean=lambda x, axis: keras.ops.mean(x, axis=axis),
            concat=lambda xs, axis: keras.ops.concatenate(xs, axis=axis),
            reshape=keras.ops.reshape,
            transpose=keras.ops.transpose,
            matmul_t=lambda a, b: keras.ops.matmul(a, keras.ops.transpose(b, (0, 2, 1))),
            clip=keras.ops.clip,
            min=lambda x, axis: keras.ops.min(x, axis=axis),
        )
    else:
        ops = SimpleNamespace(
            relu=tf.nn.relu,
            mean=lambda x, axis: tf.reduce_mean(x, axis=axis),
            concat=lambda xs, axis: tf.concat(xs, axis=axis),
            reshape=tf.reshape,
            transpose=tf.transpose,
            matmul_t=lambda a, b: tf.matmul(a, b, transpose_b=True),
            clip=tf.clip_by_value,
            min=lambda x, axis: tf.reduce_min(x, axis=axis),
        )
    x, y = K.Input(shape=(4, 3)), K.Input(shape=(4, 3))
    h = ops.relu(K.layers.Dense(3)(x) * 2.0 - 0.5) + y / 4.0
    seq = ops.transpose(ops.reshape(h, (-1, 3, 4)), (0, 2, 1))  # (B, 4, 3)
    parts = [ops.mean(seq, 1), seq[:, -1], seq[:, 1:3, 0], ops.clip(ops.matmul_t(seq, x)[:, 0], -1.0, 1.0)]
    parts += [ops.min(seq, 2), seq[..., 0] ** 2]  # an Ellipsis; x ** 2 (tf.math.pow in tf-keras)
    return K.Model([x, y], K.layers.Dense(2)(ops.concat(parts, -1)))


def zoo_tensor_compare(K):
    """Comparisons, where, cast, log_softmax and integer powers between layers (tf-keras:
    TFOpLambda layers of tf.math.greater, tf.where, tf.cast, tf.nn.log_softmax, tf.math.pow)."""
    if K is keras:
        o = keras.ops
        ops = SimpleNamespace(
            greater=o.greater,
            not_equal=o.not_equal,
            where=o.where,
            cast=o.cast,
            log_softmax=lambda x: o.log_softmax(x, axis=-1),
            power=o.power,
            concat=lambda xs: o.concatenate(xs, axis=-1),
        )
    else:
        ops = SimpleNamespace(
            greater=tf.math.greater,
            not_equal=tf.math.not_equal,
            where=tf.where,
            cast=tf.cast,
            log_softmax=lambda x: tf.nn.log_softmax(x, axis=-1),
            power=tf.math.pow,
            concat=lambda xs: tf.concat(xs, axis=-1),
        )
    x = K.Input(shape=(6,))
    h = K.layers.Dense(6)(x)
    a = ops.where(ops.greater(h, 0.1), h, h * 0.5)
    b = ops.cast(ops.not_equal(x, 0.0), "float32") * h
    c = ops.log_softmax(h)
    d = ops.power(h, 3) + ops.power(h * h + 1.0, -2)
    return K.Model(x, K.layers.Dense(3)(ops.concat([a, b, c, d])))


def zoo_more_ops(K):
    """Reductions, moves and elementwise ops (tf-keras: tf.math.rsqrt, reduce_variance,
    reduce_logsumexp, tf.norm, tf.tile, tf.reverse, tf.pad, a strided slice; Keras 3 the ops)."""
    if K is keras:
        o = keras.ops
        ops = SimpleNamespace(
            rsqrt=o.rsqrt,
            reciprocal=o.reciprocal,
            sign=o.sign,
            log1p=o.log1p,
            leaky=lambda t: o.leaky_relu(t, negative_slope=0.1),
            var=lambda t: o.var(t, axis=1),
            std=lambda t: o.std(t, axis=2),
            logsumexp=lambda t: o.logsumexp(t, axis=1),
            norm=lambda t: o.norm(t, axis=-1),
            tile=lambda t: o.tile(t, (1, 1, 2)),
            flip=lambda t: o.flip(t, axis=1),
            pad=lambda t: o.pad(t, ((0, 0), (1, 0), (0, 2))),
            concat=lambda xs: o.concatenate(xs, axis=-1),
        )
    else:
        ops = SimpleNamespace(
            rsqrt=tf.math.rsqrt,
            reciprocal=tf.math.reciprocal,
            sign=tf.math.sign,
            log1p=tf.math.log1p,
            leaky=lambda t: tf.nn.leaky_relu(t, alpha=0.1),
            var=lambda t: tf.math.reduce_variance(t, axis=1),
            std=lambda t: tf.math.reduce_std(t, axis=2),
            logsumexp=lambda t: tf.math.reduce_logsumexp(t, axis=1),
            norm=lambda t: tf.norm(t, axis=-1),
            tile=lambda t: tf.tile(t, [1, 1, 2]),
            flip=lambda t: tf.reverse(t, axis=[1]),
            pad=lambda t: tf.pad(t, [[0, 0], [1, 0], [0, 2]]),
            concat=lambda xs: tf.concat(xs, axis=-1),
        )
    x = K.Input(shape=(6, 4))
    h = K.layers.Dense(4)(x)
    positive = K.layers.Dense(4, activation="softplus")(x) + 0.5
    parts = [ops.rsqrt(positive)[:, 0], ops.reciprocal(positive)[:, 1], ops.sign(h)[:, 2], ops.log1p(positive)[:, 3]]
    parts += [ops.leaky(h)[:, 4], ops.var(h), ops.std(h), ops.logsumexp(h), ops.norm(h)]
    parts += [ops.tile(h)[:, 0], ops.flip(h)[:, 0], ops.pad(h)[:, 0], h[:, ::2, 1], h[:, 1::3, 2]]
    return K.Model(x, K.layers.Dense(3)(ops.concat(parts)))


def zoo_categorical(K):
    """Discretization of real inputs into bucket ids, as ids, one_hot, multi_hot and count
    vectors, and CategoryEncoding of those ids, before a Dense layer (tf-keras encodes to rank 2
    at most: one_hot of one value a sample)."""
    L = K.layers
    x = K.Input(shape=(4,))
    ids = L.Discretization(bin_boundaries=[-0.5, 0.0, 0.5])(x)
    one = L.Dense(1)(x)
    parts = [
        x,
        L.Discretization(bin_boundaries=[-1.0, 0.3], output_mode="one_hot")(one),
        L.Discretization(bin_boundaries=[0.0, 0.1, 1.0], output_mode="count")(x),
        L.CategoryEncoding(num_tokens=4, output_mode="multi_hot")(ids),
        L.CategoryEncoding(num_tokens=5, output_mode="count")(ids),
        L.CategoryEncoding(num_tokens=3, output_mode="one_hot")(L.Discretization(bin_boundaries=[0.0])(one)),
    ]
    return K.Model(x, L.Dense(3)(L.Concatenate()(parts)))


def zoo_einsum_dense(K):
    """EinsumDense layers (tf-keras's too): over the last axis, with an ellipsis, and splitting it
    into two with a bias over one of them."""
    L = K.layers
    x = K.Input(shape=(4, 3))
    a = L.EinsumDense("abc,cd->abd", output_shape=(4, 5), bias_axes="d", activation="relu")(x)
    b = L.EinsumDense("...c,cd->...d", output_shape=2)(x)
    c = L.EinsumDense("abc,cde->abde", output_shape=(4, 2, 3), bias_axes="d")(x)
    return K.Model(x, L.Dense(3)(L.Concatenate()([L.Flatten()(a), L.Flatten()(b), L.Flatten()(c)])))


ZOO = {
    "seq_mlp": (zoo_seq_mlp, [(8,)]),
    "seq_shapes": (zoo_seq_shapes, [(4, 3)]),
    "two_input_concat": (zoo_two_input_concat, [(12,), (6,)]),
    "residual_add": (zoo_residual_add, [(12,)]),
    "shared_layer": (zoo_shared_layer, [(6,), (6,)]),
    "nested": (zoo_nested, [(10,)]),
    "merges": (zoo_merges, [(5,), (5,)]),
    "multi_output": (zoo_multi_output, [(7,)]),
    "activations": (zoo_activations, [(4,)]),
    "initializers": (zoo_initializers, [(6,)]),
    "conv2d": (zoo_conv2d, [(9, 9, 3)]),
    "conv_layers": (zoo_conv_layers, [(8, 8, 3), (10, 4)]),
    "norm_embed": (zoo_norm_embed, [(6,)]),
    "act_layers": (zoo_act_layers, [(5, 4)]),
    "noise_layers": (zoo_noise_layers, [(5, 4), (4, 4, 3)]),
    "preprocess": (zoo_preprocess, [(6, 8, 3)]),
    "thresholded": (zoo_thresholded, [(6,)]),
    "tensor_ops": (zoo_tensor_ops, [(4, 3), (4, 3)]),
    "tensor_compare": (zoo_tensor_compare, [(6,)]),
    "more_ops": (zoo_more_ops, [(6, 4)]),
    "categorical": (zoo_categorical, [(4,)]),
    "einsum_dense": (zoo_einsum_dense, [(4, 3)]),
}
RANDOM_WEIGHTS = ("conv2d", "conv_layers", "norm_embed", "act_layers", "noise_layers")
K2_ONLY = ("thresholded",)  # layers Keras 3 no longer has


def make_zoo_arch(arch, spec, out_dir: Path, seed: int) -> dict:
    """Build ``arch`` with Keras 3 and tf-keras, share the Keras 3 weights,
    write both configs and the npz.  Returns the npz arrays."""
    builder, shapes = spec
    reset(seed)
    rng = np.random.RandomState(seed)
    xs = zoo_inputs(arch, shapes, rng)
    x_in = xs if len(xs) > 1 else xs[0]

    if arch in K2_ONLY:
        return make_k2_only_arch(arch, builder, x_in, xs, out_dir)
    m3 = builder(keras)
    if arch == "activations":
        set_activation_weights(m3, seed)
    if arch in RANDOM_WEIGHTS:
        randomize_weights(m3, seed)
    weights = m3.get_weights()
    preds3 = as_list(m3.predict(x_in, verbose=0))

    m2 = builder(tf_keras)
    m2.set_weights(weights)
    preds2 = as_list(m2.predict(x_in, verbose=0))

    arrays = {f"x{i}": x for i, x in enumerate(xs)}
    arrays.update({f"w_{i}": w for i, w in enumerate(weights)})
    arrays.update({f"pred{i}": p for i, p in enumerate(preds3)})
    arrays.update({f"k2_pred{i}": p for i, p in enumerate(preds2)})
    if arch in RANDOM_WEIGHTS + ("preprocess",):  # what summary() shows per layer: output shape, parameters
        arrays["summary"] = np.array(
            json.dumps(
                [
                    [
                        layer.name,
                        list(layer.output.shape),
                        layer.count_params(),
                        sum(int(np.prod(w.shape)) for w in layer.trainable_weights),
                    ]
                    for layer in m3.layers
                ]
            )
        )
    np.savez_compressed(out_dir / f"{arch}.npz", **arrays)

    dump_json(json.loads(m3.to_json()), out_dir / f"k3_{arch}.json")
    dump_json(json.loads(m2.to_json()), out_dir / f"k2_{arch}.json")

    diffs = [float(np.max(np.abs(p3 - p2))) for p3, p2 in zip(preds3, preds2)]
    print(f"  configs/{arch}: {len(weights)} weights, max |k3-k2| per output {['%.1e' % d for d in diffs]}")
    if arch != "activations":  # the only arch with a known semantic gap
        assert max(diffs) < 1e-5, (arch, diffs)
    return arrays


def make_k2_only_arch(arch, builder, x_in, xs, out_dir: Path) -> dict:
    """A zoo entry of tf-keras alone: k2_<arch>.json, and its predictions as pred*."""
    m2 = builder(tf_keras)
    arrays = {f"x{i}": x for i, x in enumerate(xs)}
    arrays.update({f"w_{i}": w for i, w in enumerate(m2.get_weights())})
    arrays.update({f"pred{i}": p for i, p in enumerate(as_list(m2.predict(x_in, verbose=0)))})
    np.savez_compressed(out_dir / f"{arch}.npz", **arrays)
    dump_json(json.loads(m2.to_json()), out_dir / f"k2_{arch}.json")
    print(f"  configs/{arch}: tf-keras only")
    return arrays


# --------------------------------------------------------------------------
# Keras 2.1.6 configs, written by hand
# --------------------------------------------------------------------------
#
# Keras 2.1.x predates the ``{"name", "layers"}`` Sequential config (2.2.0):
# a Sequential config is a bare list of layers, the first carrying
# ``batch_input_shape`` and ``dtype``.  Functional models are class "Model";
# every inbound node is a list of ``[layer_name, node_index, tensor_index,
# kwargs]``.  ``glorot_uniform`` was serialized as the VarianceScaling it
# builds.  Default names were counted from 1 (``dense_1``, ``input_1``).
# ``model.to_json()`` wrote one line with json's default separators.

K21_GLOROT_UNIFORM = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0, "mode": "fan_avg", "distribution": "uniform", "seed": None},
}
K21_ZEROS = {"class_name": "Zeros", "config": {}}


def k21_dense(name, units, activation, **extra):
    config = {"name": name, "trainable": True}
    config.update(extra)  # batch_input_shape / dtype on a first layer
    config.update(
        {
            "units": units,
            "activation": activation,
            "use_bias": True,
            "kernel_initializer": K21_GLOROT_UNIFORM,
            "bias_initializer": K21_ZEROS,
            "kernel_regularizer": None,
            "bias_regularizer": None,
            "activity_regularizer": None,
            "kernel_constraint": None,
            "bias_constraint": None,
        }
    )
    return {"class_name": "Dense", "config": config}


def k21_input(name, dim):
    return {
        "name": name,
        "class_name": "InputLayer",
        "config": {"batch_input_shape": [None, dim], "dtype": "float32", "sparse": False, "name": name},
        "inbound_nodes": [],
    }


def k21_node(layer, config, *inbound):
    """A functional-model layer entry; ``inbound`` are layer names, each
    taken at node 0, tensor 0."""
    return {
        "name": config["config"]["name"],
        "class_name": layer,
        "config": config["config"],
        "inbound_nodes": [[[src, 0, 0, {}] for src in inbound]],
    }


def k21_model(layers, inputs, outputs, name="model_1"):
    return {
        "class_name": "Model",
        "config": {
            "name": name,
            "layers": layers,
            "input_layers": [[n, 0, 0] for n in inputs],
            "output_layers": [[n, 0, 0] for n in outputs],
        },
        "keras_version": "2.1.6",
        "backend": "tensorflow",
    }


def k21_configs() -> dict:
    """file name -> config; weights line up with the matching zoo npz."""
    seq_mlp = {
        "class_name": "Sequential",
        "config": [
            k21_dense("dense_1", 16, "relu", batch_input_shape=[None, 8], dtype="float32"),
            {
                "class_name": "Dropout",
                "config": {"name": "dropout_1", "trainable": True, "rate": 0.5, "noise_shape": None, "seed": None},
            },
            k21_dense("dense_2", 3, "softmax"),
        ],
        "keras_version": "2.1.6",
        "backend": "tensorflow",
    }
    # Same graph and weight order as zoo arch "two_input_concat".
    two_input = k21_model(
        [
            k21_input("input_1", 12),
            k21_input("input_2", 6),
            k21_node("Dense", k21_dense("dense_1", 8, "relu"), "input_1"),
            k21_node("Dense", k21_dense("dense_2", 8, "relu"), "input_2"),
            k21_node(
                "Concatenate",
                {"config": {"name": "concatenate_1", "trainable": True, "axis": -1}},
                "dense_1",
                "dense_2",
            ),
            k21_node("Dense", k21_dense("dense_3", 5, "softmax"), "concatenate_1"),
        ],
        inputs=["input_1", "input_2"],
        outputs=["dense_3"],
    )
    # Same graph and weight order as zoo arch "residual_add".
    residual = k21_model(
        [
            k21_input("input_1", 12),
            k21_node("Dense", k21_dense("dense_1", 12, "tanh"), "input_1"),
            k21_node("Add", {"config": {"name": "add_1", "trainable": True}}, "input_1", "dense_1"),
            k21_node("Dense", k21_dense("dense_2", 5, "softmax"), "add_1"),
        ],
        inputs=["input_1"],
        outputs=["dense_2"],
    )
    return {
        "k21_seq_mlp.json": ("seq_mlp", seq_mlp),
        "k21_two_input.json": ("two_input_concat", two_input),
        "k21_residual_add.json": ("residual_add", residual),
    }


def check_k21_against_npz(config, arrays) -> None:
    """Rebuild a Keras 2.1 config with tf-keras (which still reads the old
    list-style Sequential and "Model" formats) and check it reproduces the
    npz predictions with the npz weights."""
    model = tf_keras.models.model_from_json(json.dumps(config))
    n_w = sum(1 for k in arrays if k.startswith("w_"))
    model.set_weights([arrays[f"w_{i}"] for i in range(n_w)])
    n_x = sum(1 for k in arrays if k.startswith("x"))
    xs = [arrays[f"x{i}"] for i in range(n_x)]
    pred = model.predict(xs if n_x > 1 else xs[0], verbose=0)
    assert np.allclose(pred, arrays["pred0"], atol=1e-5), "k21 mismatch"


# --------------------------------------------------------------------------
# (c) Recurrent layers (issue 16): configs of both Keras, weights, predictions, gradients
# --------------------------------------------------------------------------
#
# rnn/<case>.npz + rnn/k3_<case>.json + rnn/k2_<case>.json. npz keys: x0..., y0 (sparse labels),
# w_<i> (Keras 3 get_weights(), loaded into the tf-keras model too), pred0 (Keras 3 predict),
# k2_pred0 (tf-keras predict with the same weights; differs only where the two define an
# activation differently: hard_sigmoid), loss (Keras 3 sparse cross-entropy of the batch, float64)
# and grad_<i> (its gradient per weight, get_weights() order), summary (json: [name, output
# shape(s), params] per layer). Small on purpose: vocabulary 20, 7 steps, 5 units.

RNN_VOCAB, RNN_STEPS, RNN_ROWS = 20, 7, 6


def rnn_embed_lstm(K):
    return K.Sequential(
        [
            K.Input(shape=(RNN_STEPS,)),
            K.layers.Embedding(RNN_VOCAB, 4),
            K.layers.LSTM(5),
            K.layers.Dense(3, activation="softmax"),
        ]
    )


def rnn_stacked_gru(K):
    return K.Sequential(
        [
            K.Input(shape=(RNN_STEPS, 3)),
            K.layers.GRU(5, return_sequences=True),
            K.layers.GRU(4, return_sequences=True, go_backwards=True),
            K.layers.Flatten(),
            K.layers.Dense(3, activation="softmax"),
        ]
    )


def rnn_bilstm(K):
    return K.Sequential(
        [
            K.Input(shape=(RNN_STEPS,)),
            K.layers.Embedding(RNN_VOCAB, 4),
            K.layers.Bidirectional(K.layers.LSTM(5, return_sequences=True)),
            K.layers.Bidirectional(K.layers.LSTM(3), merge_mode="sum"),
            K.layers.Dense(3, activation="softmax"),
        ]
    )


def rnn_simple(K):
    return K.Sequential(
        [
            K.Input(shape=(RNN_STEPS, 3)),
            K.layers.SimpleRNN(5, return_sequences=True),
            K.layers.SimpleRNN(4, go_backwards=True, activation="softsign"),
            K.layers.Dense(3, activation="softmax"),
        ]
    )


def rnn_gru_v1(K):
    return K.Sequential(
        [
            K.Input(shape=(RNN_STEPS, 3)),
            K.layers.GRU(5, reset_after=False, recurrent_activation="hard_sigmoid"),
            K.layers.Dense(3, activation="softmax"),
        ]
    )


def rnn_mask_zero(K):
    return K.Sequential(
        [
            K.Input(shape=(RNN_STEPS,)),
            K.layers.Embedding(RNN_VOCAB, 4, mask_zero=True),
            K.layers.Bidirectional(K.layers.GRU(5, return_sequences=True), merge_mode="ave"),
            K.layers.LSTM(5, return_sequences=True),
            K.layers.SimpleRNN(4),
            K.layers.Dense(3, activation="softmax"),
        ]
    )


def rnn_conv_lstm(K):
    return K.Sequential(
        [
            K.Input(shape=(RNN_STEPS, 3)),
            K.layers.Conv1D(6, 3, padding="same", activation="relu"),
            K.layers.MaxPooling1D(2),
            K.layers.LSTM(5),
            K.layers.Dense(3, activation="softmax"),
        ]
    )


def rnn_states(K):
    x = K.Input(shape=(RNN_STEPS, 3))
    seq, h, c = K.layers.LSTM(5, return_sequences=True, return_state=True)(x)
    g = K.layers.GRU(4, return_state=True)(seq)
    b = K.layers.Bidirectional(K.layers.SimpleRNN(3), merge_mode=None)(x)  # Masking: Keras 3 passes kwargs
    out = K.layers.Dense(3, activation="softmax")(K.layers.Concatenate()([g[0], g[1], h, c, *b]))
    return K.Model(x, out)


def rnn_masking(K):
    return K.Sequential(
        [
            K.Input(shape=(RNN_STEPS, 3)),
            K.layers.Masking(mask_value=0.0),
            K.layers.Bidirectional(K.layers.SimpleRNN(3, return_sequences=True), merge_mode="mul"),
            K.layers.GRU(4, go_backwards=True, reset_after=False),
            K.layers.Dense(3, activation="softmax"),
        ]
    )


def rnn_initial_state(K):
    x, h, c = K.Input(shape=(RNN_STEPS, 3)), K.Input(shape=(5,)), K.Input(shape=(5,))
    seq = K.layers.LSTM(5, return_sequences=True)(x, initial_state=[h, c])
    out = K.layers.GRU(5)(seq, initial_state=[h])
    return K.Model([x, h, c], K.layers.Dense(3, activation="softmax")(out))


def rnn_masked_initial_state(K):
    """Recurrent layers given initial states on a masked sequence: Keras 3 runs them through the
    padded steps too (and passes the mask on), tf-keras carries the state over them."""
    ids, h, c = K.Input(shape=(RNN_STEPS,)), K.Input(shape=(5,)), K.Input(shape=(5,))
    e = K.layers.Embedding(RNN_VOCAB, 3, mask_zero=True)(ids)
    seq = K.layers.LSTM(5, return_sequences=True)(e, initial_state=[h, c])
    out = K.layers.GRU(5)(seq, initial_state=[h])
    return K.Model([ids, h, c], K.layers.Dense(3, activation="softmax")(out))


def rnn_mask_merge(K):
    """Merges pass on the AND of their inputs' masks; Dense passes its input's on."""
    ids = K.Input(shape=(RNN_STEPS,))
    e = K.layers.Embedding(RNN_VOCAB, 4, mask_zero=True)(ids)
    a = K.layers.LSTM(4, return_sequences=True)(e)
    b = K.layers.Dense(4)(e)
    h = K.layers.Concatenate()([K.layers.Add()([a, b]), b])
    return K.Model(ids, K.layers.Dense(3, activation="softmax")(K.layers.GRU(5)(h)))


def rnn_cells(K):
    """Cells inside RNN layers (one, and stacked), and a Bidirectional returning its states."""
    L = K.layers
    x = K.Input(shape=(RNN_STEPS, 3))
    seq = L.RNN(L.LSTMCell(5), return_sequences=True)(x)
    last = L.RNN(L.StackedRNNCells([L.GRUCell(4), L.SimpleRNNCell(3)]), go_backwards=True)(seq)
    o, fh, fc, bh, bc = L.Bidirectional(L.LSTM(3, return_state=True))(x)
    out = L.Dense(3, activation="softmax")(L.Concatenate()([last, o, fh, fc, bh, bc]))
    return K.Model(x, out)


def rnn_time_distributed(K):
    L = K.layers
    return K.Sequential(
        [
            K.Input(shape=(RNN_STEPS, 3)),
            L.GRU(5, return_sequences=True),
            L.TimeDistributed(L.Dense(4, activation="relu")),
            L.TimeDistributed(L.Dropout(0.2)),
            L.Flatten(),
            L.Dense(3, activation="softmax"),
        ]
    )


RNN_CASES = {
    "embed_lstm": rnn_embed_lstm,
    "stacked_gru": rnn_stacked_gru,
    "bilstm": rnn_bilstm,
    "simple_rnn": rnn_simple,
    "gru_v1": rnn_gru_v1,
    "mask_zero": rnn_mask_zero,
    "conv_lstm": rnn_conv_lstm,
    "states": rnn_states,
    "masking": rnn_masking,
    "initial_state": rnn_initial_state,
    "mask_merge": rnn_mask_merge,
    "cells": rnn_cells,
    "time_distributed": rnn_time_distributed,
    "masked_initial_state": rnn_masked_initial_state,
}


def rnn_inputs(model, rng):
    if len(model.inputs) > 1:  # initial states after the sequence
        return [rnn_inputs(keras.Model(model.inputs[0], model.inputs[0]), rng)] + [
            rng.normal(size=(RNN_ROWS, *i.shape[1:])).astype(np.float32) for i in model.inputs[1:]
        ]
    if len(model.inputs[0].shape) == 2:  # token ids; a few rows padded with 0 at either end
        ids = rng.randint(1, RNN_VOCAB, size=(RNN_ROWS, RNN_STEPS))
        ids[1, 4:] = 0
        ids[2, :3] = 0
        ids[3, 2] = 0
        return ids.astype(np.float32)
    x = rng.normal(size=(RNN_ROWS, RNN_STEPS, 3)).astype(np.float32)
    x[1, 5:] = 0  # steps a Masking layer skips
    x[4, 0] = 0
    return x


def make_rnn_case(name, builder, out_dir: Path, seed: int, make_inputs=None, save_files=False) -> None:
    reset(seed)
    rng = np.random.RandomState(seed)
    m3 = builder(keras)
    randomize_weights(m3, seed)
    x = (make_inputs or rnn_inputs)(m3, rng)
    y = rng.randint(0, 3, size=RNN_ROWS).astype(np.int32)
    weights = m3.get_weights()
    assert [id(v) for v in m3.trainable_weights] == [id(v) for v in m3.weights], name
    with tf.GradientTape() as tape:
        # training=False: dropout off, so the gradient is a fixed number (no layer here differs otherwise)
        loss = keras.losses.SparseCategoricalCrossentropy()(y, m3(x, training=False))
    grads = tape.gradient(loss, m3.trainable_weights)
    m2 = builder(tf_keras)
    m2.set_weights(weights)
    arrays = {
        "y0": y,
        "pred0": m3.predict(x, verbose=0),
        "k2_pred0": m2.predict(x, verbose=0),
        "loss": np.float64(loss.numpy()),
    }
    arrays.update({f"x{i}": xi for i, xi in enumerate(as_list(x))})
    if save_files or name in (
        "bilstm",
        "cells",
        "time_distributed",
    ):  # each Keras's weights files, for kgraph's loaders
        m3.save(out_dir / f"{name}.keras")
        m2.save(out_dir / f"{name}_k2.h5")
        if save_files:  # tf-keras's .keras archive too (its MultiHeadAttention groups: _query_dense, ...)
            m2.save(out_dir / f"{name}_k2.keras")
    arrays.update({f"w_{i}": w for i, w in enumerate(weights)})
    arrays.update({f"grad_{i}": tf.convert_to_tensor(g).numpy() for i, g in enumerate(grads)})  # IndexedSlices too
    arrays["summary"] = np.array(
        json.dumps(
            [
                [
                    layer.name,
                    [list(o.shape) for o in layer.output]
                    if isinstance(layer.output, (list, tuple))
                    else list(layer.output.shape),
                    layer.count_params(),
                ]
                for layer in m3.layers
            ]
        )
    )
    np.savez_compressed(out_dir / f"{name}.npz", **arrays)
    dump_json(json.loads(m3.to_json()), out_dir / f"k3_{name}.json")
    dump_json(json.loads(m2.to_json()), out_dir / f"k2_{name}.json")
    diff = float(np.max(np.abs(arrays["pred0"] - arrays["k2_pred0"])))
    print(f"  {out_dir.name}/{name}: loss {float(loss):.5f}, max |k3-k2| {diff:.1e}")
    # gru_v1: hard_sigmoid is clip(0.2x + 0.5) in tf-keras, relu6(x + 3) / 6 in Keras 3;
    # mha_keras_masks: Keras 3's MultiHeadAttention returning its scores zeroes the weights of a
    # query step that sees no key step, tf-keras's attends to every step alike
    # masked_initial_state: Keras 3 runs a layer given initial states through the masked steps
    if name not in ("gru_v1", "mha_keras_masks", "masked_initial_state"):
        assert diff < 1e-5, (name, diff)


# --------------------------------------------------------------------------
# (d) Attention layers (issue 22) as each Keras saves them: tests/test_attention.py
# --------------------------------------------------------------------------
#
# The same files as (c), in attention/: both configs (Keras 3 passes value= and key= as keyword
# tensors in its inbound nodes, tf-keras as a kwargs dict beside the query's reference), the
# Keras 3 weights loaded into both, both predictions, a loss and its gradient, and each Keras's
# weights files (.keras, .h5).


def attn_mha(K):
    q, v, k = K.Input(shape=(5, 6)), K.Input(shape=(4, 3)), K.Input(shape=(4, 2))
    a = K.layers.MultiHeadAttention(num_heads=2, key_dim=3, value_dim=2, output_shape=4)(q, v, key=k)
    b = K.layers.MultiHeadAttention(num_heads=2, key_dim=2)(q, q, use_causal_mask=True)
    h = K.layers.Concatenate()([a, b])
    return K.Model([q, v, k], K.layers.Dense(3, activation="softmax")(K.layers.GlobalAveragePooling1D()(h)))


def attn_luong(K):
    q, v, k = K.Input(shape=(5, 6)), K.Input(shape=(4, 3)), K.Input(shape=(4, 6))
    a = K.layers.Attention(use_scale=True)([q, v, k], use_causal_mask=True)
    b = K.layers.Attention(score_mode="concat")([q, K.layers.Dense(6)(v)])
    h = K.layers.Concatenate()([a, b])
    return K.Model([q, v, k], K.layers.Dense(3, activation="softmax")(K.layers.Flatten()(h)))


def attn_additive(K):
    q, v = K.Input(shape=(5, 6)), K.Input(shape=(4, 6))
    a = K.layers.AdditiveAttention()([q, v])
    b = K.layers.AdditiveAttention(use_scale=False)([q, v, v], use_causal_mask=True)
    h = K.layers.Add()([a, b])
    return K.Model([q, v], K.layers.Dense(3, activation="softmax")(K.layers.Flatten()(h)))


def attn_mha_mask(K):
    """An attention_mask input (0/1, float) by keyword, with a causal mask on top."""
    q, v, mask = K.Input(shape=(5, 6)), K.Input(shape=(4, 3)), K.Input(shape=(5, 4), name="mask")
    a = K.layers.MultiHeadAttention(num_heads=2, key_dim=3)(q, v, attention_mask=mask, use_causal_mask=True)
    return K.Model([q, v, mask], K.layers.Dense(3, activation="softmax")(K.layers.Flatten()(a)))


def attn_mha_keras_masks(K):
    """Embedding(mask_zero) masks into MultiHeadAttention: self-attention (the query's and the
    value's masks ANDed), cross-attention with a query of another mask and a key of its own, the
    attention scores returned, and the query's mask carried on to a masked average. Keras 3's
    MultiHeadAttention deletes the masks of the tensors it reads as it runs, so a masked tensor
    read again later reads unmasked there: each one here feeds one attention layer (kgraph keeps
    the masks, as tf-keras does)."""
    L = K.layers
    ids, other = K.Input(shape=(RNN_STEPS,), name="ids"), K.Input(shape=(5,), name="other_ids")
    e = L.Embedding(RNN_VOCAB, 6, mask_zero=True)(ids)
    e2 = L.Embedding(RNN_VOCAB, 3, mask_zero=True)(ids)
    o = L.Embedding(RNN_VOCAB, 4, mask_zero=True)(other)
    a, scores = L.MultiHeadAttention(num_heads=2, key_dim=3)(e, e, return_attention_scores=True)
    b = L.MultiHeadAttention(num_heads=2, key_dim=2, value_dim=3)(o, e2, key=L.Dense(5)(e2), use_causal_mask=True)
    h = L.LayerNormalization()(L.Add()([e, a]))
    pooled = L.Concatenate()([L.GlobalAveragePooling1D()(h), L.GlobalAveragePooling1D()(b), L.Flatten()(scores)])
    return K.Model([ids, other], L.Dense(3, activation="softmax")(pooled))


def attn_scored_keras_masks(K):
    """Attention and AdditiveAttention read the query's and the value's masks (Masking's here),
    zero the masked query steps and return their weights."""
    L = K.layers
    x, v = K.Input(shape=(RNN_STEPS, 3), name="x"), K.Input(shape=(5, 3), name="v")
    q, mv = L.Masking()(x), L.Masking()(v)
    a, weights = L.Attention(use_scale=True)([q, mv], return_attention_scores=True)
    b = L.AdditiveAttention()([q, mv, L.Dense(3)(mv)], use_causal_mask=True)
    c = L.Attention(score_mode="concat")([L.Dense(3)(v), mv])  # an unmasked query, masked values
    h = L.Concatenate()([L.GlobalAveragePooling1D()(L.Add()([a, b])), L.Flatten()(weights), L.Flatten()(c)])
    return K.Model([x, v], L.Dense(3, activation="softmax")(h))


ATTENTION_CASES = {
    "mha": attn_mha,
    "luong": attn_luong,
    "additive": attn_additive,
    "mha_mask": attn_mha_mask,
    "mha_keras_masks": attn_mha_keras_masks,
    "scored_keras_masks": attn_scored_keras_masks,
}


def attention_inputs(model, rng):
    """Normal draws; a mask input 0/1 with the first key step always seen (a row that hides every
    step is where Keras's backends differ). A model with Keras masks gets padded rows: ids of
    lengths 1 to all (row 0 one step, row 1 whole), features all 0 from a random step on."""
    out = []
    padded = any(type(layer).__name__ == "Masking" or getattr(layer, "mask_zero", False) for layer in model.layers)
    for i in model.inputs:
        x = rng.normal(size=(RNN_ROWS, *i.shape[1:])).astype(np.float32)
        if not padded:
            pass
        elif len(i.shape) == 2:  # token ids, rows padded with 0 to lengths 1 to all (a masked average needs one)
            steps = i.shape[1]
            x = rng.randint(1, RNN_VOCAB, size=(RNN_ROWS, steps))
            x[np.arange(steps)[None, :] >= rng.randint(1, steps + 1, size=RNN_ROWS)[:, None]] = 0
            x[0, 1:], x[1, :] = 0, np.maximum(x[1], 1)
            x = x.astype(np.float32)
        elif "mask" not in i.name and len(i.shape) == 3:  # steps of all-zero features from a random step on
            steps = i.shape[1]
            x[np.arange(steps)[None, :] >= rng.randint(1, steps + 1, size=RNN_ROWS)[:, None]] = 0
            x[0, 1:] = 0
        if "mask" in i.name:
            x = (x > 0).astype(np.float32)
            x[:, :, 0] = 1
        out.append(x)
    return out


# Metric values alone (tf/metrics.npz): each metric Keras 3 accepts as compile's metric over two
# batches of fixed targets and predictions, read by tests/test_metrics.py. Keyed by what compile
# was given: a string (its log name) or a class with its config.
def metric_cases():
    return {
        "mape": lambda: keras.metrics.get("mape"),
        "msle": lambda: keras.metrics.get("msle"),
        "binary_crossentropy": lambda: keras.metrics.get("binary_crossentropy"),
        "categorical_crossentropy": lambda: keras.metrics.get("categorical_crossentropy"),
        "sparse_categorical_crossentropy": lambda: keras.metrics.get("sparse_categorical_crossentropy"),
        "kl_divergence": lambda: keras.metrics.get("kl_divergence"),
        "poisson": lambda: keras.metrics.get("poisson"),
        "hinge": lambda: keras.metrics.get("hinge"),
        "squared_hinge": lambda: keras.metrics.get("squared_hinge"),
        "categorical_hinge": lambda: keras.metrics.get("categorical_hinge"),
        "LogCoshError": lambda: keras.metrics.LogCoshError(),
        "CosineSimilarity": lambda: keras.metrics.CosineSimilarity(),
        "BinaryCrossentropy_logits_smoothing": lambda: keras.metrics.BinaryCrossentropy(
            from_logits=True, label_smoothing=0.1
        ),
        "CategoricalCrossentropy_logits_smoothing": lambda: keras.metrics.CategoricalCrossentropy(
            from_logits=True, label_smoothing=0.2
        ),
        "SparseCategoricalCrossentropy_logits": lambda: keras.metrics.SparseCategoricalCrossentropy(from_logits=True),
        # top_k without thresholds: each row's top k count as positive, whatever their scores
        "Precision_categorical_top_k": lambda: keras.metrics.Precision(top_k=2),
        "Recall_categorical_top_k": lambda: keras.metrics.Recall(top_k=2),
        # one curve per label (the binary cases' 4 columns), averaged or weighted; weighted counts
        "AUC_multi_label_binary": lambda: keras.metrics.AUC(multi_label=True),
        "AUC_PR_multi_label_weights_binary": lambda: keras.metrics.AUC(
            curve="PR", multi_label=True, label_weights=[1.0, 2.0, 0.5, 1.0]
        ),
        "AUC_label_weights_binary": lambda: keras.metrics.AUC(label_weights=[1.0, 2.0, 0.5, 1.0]),
        # the IoU family: class ids (a probability truncated to 0, as Keras casts it) or argmax
        "MeanIoU_sparse_argmax": lambda: keras.metrics.MeanIoU(num_classes=4, sparse_y_pred=False),
        "IoU_sparse_targets": lambda: keras.metrics.IoU(num_classes=4, target_class_ids=[0, 2], sparse_y_pred=False),
        "OneHotMeanIoU_categorical": lambda: keras.metrics.OneHotMeanIoU(num_classes=4),
        "OneHotIoU_categorical": lambda: keras.metrics.OneHotIoU(num_classes=4, target_class_ids=[1, 3]),
        "BinaryIoU_binary": lambda: keras.metrics.BinaryIoU(),
        "BinaryIoU_threshold_binary": lambda: keras.metrics.BinaryIoU(target_class_ids=[1], threshold=0.3),
    }


def make_metric_fixtures(tf_dir, seed):
    rng = np.random.RandomState(seed)
    classes, rows = 4, (6, 5)
    probs = [rng.dirichlet(np.ones(classes), size=n).astype(np.float32) for n in rows]
    logits = [rng.normal(size=(n, classes)).astype(np.float32) for n in rows]
    labels = [rng.randint(0, classes, size=n).astype(np.int32) for n in rows]
    positive = [rng.uniform(0.1, 3, size=(n, 3)).astype(np.float32) for n in rows]
    targets = [rng.uniform(0, 3, size=(n, 3)).astype(np.float32) for n in rows]
    arrays = {}
    for name, make in metric_cases().items():
        logit = "logits" in name
        if "sparse" in name.lower():
            batches = list(zip(labels, logits if logit else probs))
        elif "categorical" in name.lower() or name in ("kl_divergence", "CosineSimilarity"):
            batches = [(np.eye(classes, dtype=np.float32)[y], p) for y, p in zip(labels, logits if logit else probs)]
        elif "binary" in name.lower() or "hinge" in name:
            batches = [
                ((p > 0.3).astype(np.float32), (l if logit or "hinge" in name else p)) for p, l in zip(probs, logits)
            ]
        else:
            batches = list(zip(targets, positive))
        metric = make()
        for k, (y_true, y_pred) in enumerate(batches):
            metric.update_state(y_true, y_pred)
            arrays[f"{name}/y_true{k}"], arrays[f"{name}/y_pred{k}"] = y_true, y_pred
        arrays[f"{name}/result"] = np.float64(metric.result())
    np.savez(tf_dir / "metrics.npz", **arrays)
    print(f"  tf/metrics.npz: {len(metric_cases())} metrics")


# --------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="tests/fixtures", type=Path, help="fixture root (default: tests/fixtures)")
    parser.add_argument("--only", nargs="*", help="regenerate only these fidelity cases / zoo archs")
    args = parser.parse_args(argv)
    wanted = lambda name: args.only is None or name in args.only

    tf.config.experimental.enable_op_determinism()
    tf_dir = args.out / "tf"
    cfg_dir = args.out / "configs"
    tf_dir.mkdir(parents=True, exist_ok=True)
    cfg_dir.mkdir(parents=True, exist_ok=True)
    print("versions:", VERSIONS)

    print("training fidelity fixtures:")
    for i, (name, spec) in enumerate(FIDELITY_CASES.items()):
        if wanted(name):
            make_fidelity_case(name, spec, tf_dir, SEED + i)

    if wanted("metrics"):
        make_metric_fixtures(tf_dir, SEED + 400)

    print("config zoo:")
    zoo_arrays = {}
    for i, (arch, spec) in enumerate(ZOO.items()):
        if wanted(arch):
            zoo_arrays[arch] = make_zoo_arch(arch, spec, cfg_dir, SEED + 100 + i)
    print("recurrent layers:")
    rnn_dir = args.out / "rnn"
    rnn_dir.mkdir(parents=True, exist_ok=True)
    for i, (name, builder) in enumerate(RNN_CASES.items()):
        if wanted(name):
            make_rnn_case(name, builder, rnn_dir, SEED + 200 + i)
    print("attention layers:")
    attn_dir = args.out / "attention"
    attn_dir.mkdir(parents=True, exist_ok=True)
    for i, (name, builder) in enumerate(ATTENTION_CASES.items()):
        if wanted(name):
            make_rnn_case(name, builder, attn_dir, SEED + 300 + i, make_inputs=attention_inputs, save_files=True)
    if args.only is not None:
        return 0

    print("Keras 2.1.6 configs:")
    for fname, (arch, config) in k21_configs().items():
        (cfg_dir / fname).write_text(json.dumps(config) + "\n")
        check_k21_against_npz(config, zoo_arrays[arch])
        print(f"  configs/{fname} (weights: {arch}.npz) ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
