"""Metrics computed from a step's outputs with NumPy, accumulated as Keras does: a mean over
the samples seen since the last reset."""
from __future__ import annotations

import numpy as np


def sparse_categorical_accuracy(y_true, y_pred):
    return (np.argmax(y_pred, axis=-1) == y_true.reshape(y_pred.shape[:-1])).astype(np.float64)


def categorical_accuracy(y_true, y_pred):
    return (np.argmax(y_pred, axis=-1) == np.argmax(y_true, axis=-1)).astype(np.float64)


def binary_accuracy(y_true, y_pred, threshold=0.5):
    return np.mean((y_pred > threshold) == (y_true.reshape(y_pred.shape) > 0.5), axis=-1, dtype=np.float64)


def mean_absolute_error(y_true, y_pred):
    return np.mean(np.abs(y_pred - y_true.reshape(y_pred.shape)), axis=-1, dtype=np.float64)


def mean_squared_error(y_true, y_pred):
    return np.mean(np.square(y_pred - y_true.reshape(y_pred.shape)), axis=-1, dtype=np.float64)


METRICS = {
    "sparse_categorical_accuracy": sparse_categorical_accuracy,
    "categorical_accuracy": categorical_accuracy,
    "binary_accuracy": binary_accuracy,
    "mean_absolute_error": mean_absolute_error,
    "mean_squared_error": mean_squared_error,
}


class Mean:
    """A running mean weighted by the number of samples, like keras.metrics.Mean."""

    def __init__(self):
        self.total = 0.0
        self.count = 0.0

    def update(self, value, weight=1.0):
        self.total += float(value) * weight
        self.count += weight

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0
