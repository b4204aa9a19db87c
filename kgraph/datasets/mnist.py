"""MNIST handwritten digits, as keras.datasets.mnist: 60,000 28x28 grayscale training images and
10,000 test images of the digits 0-9. Yann LeCun and Corinna Cortes hold its copyright; it is
available under the Creative Commons Attribution-Share Alike 3.0 license."""

import numpy as np

from ._files import KERAS_FOLDER, get_file


def load_data(path="mnist.npz"):
    """`(x_train, y_train), (x_test, y_test)`: uint8 arrays of shapes (60000, 28, 28), (60000,),
    (10000, 28, 28), (10000,); pixels 0..255, labels 0..9. path: the file's name in the cache
    (~/.kgraph/datasets or $KGRAPH_DATA_DIR)."""
    with np.load(get_file("mnist.npz", KERAS_FOLDER, cache_name=path), allow_pickle=False) as f:
        return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])
