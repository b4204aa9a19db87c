"""UCI "Optical Recognition of Handwritten Digits" (8x8), as shipped in scikit-learn.

1,797 grayscale 8x8 digit images flattened to 64 features with integer values
0..16 (counts of "on" pixels in 4x4 blocks of a 32x32 bitmap), 10 classes.
This is the test part of the UCI set, byte-for-byte the copy that scikit-learn
bundles as `sklearn/datasets/data/digits.csv.gz`.

Source: UCI Machine Learning Repository,
https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits
E. Alpaydin and C. Kaynak (1998). Licensed under CC BY 4.0.
"""

import os

import numpy as np

_PATH = os.path.join(os.path.dirname(__file__), "digits.npz")


def load_data(test_split=0.2, seed=113):
    """Loads the digits set as `(x_train, y_train), (x_test, y_test)`.

    Args:
        test_split: fraction of the samples held out as the test set.
        seed: seed of the shuffle applied before splitting, so the split
            is the same on every call and every machine.

    Returns:
        Tuple of NumPy arrays. `x_*` are float32 of shape `(n, 64)` scaled
        to [0, 1]; `y_*` are int32 class labels 0..9 of shape `(n,)`.
    """
    if not 0 <= test_split < 1:
        raise ValueError(f"test_split must be in [0, 1). Received: {test_split}")
    with np.load(_PATH) as f:
        x, y = f["x"], f["y"]

    # Same shuffle-then-slice recipe as keras.datasets.boston_housing.
    indices = np.arange(len(x))
    np.random.RandomState(seed).shuffle(indices)
    x = x[indices].astype(np.float32) / 16.0
    y = y[indices].astype(np.int32)

    n_train = int(len(x) * (1 - test_split))
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
