"""Iris, as TensorFlow's guides load it (premade estimators, custom training walkthrough): 120
training and 30 test flowers, 4 features each (sepal length, sepal width, petal length, petal
width, in cm) and the species 0 setosa, 1 versicolor, 2 virginica. R. A. Fisher (1936), from the
UCI Machine Learning Repository."""

import numpy as np

from ._files import TF_DATA_FOLDER, DatasetDownloadError, get_files

COLUMN_NAMES = ["SepalLength", "SepalWidth", "PetalLength", "PetalWidth", "Species"]
SPECIES = ["Setosa", "Versicolor", "Virginica"]


def _read(path):
    """TensorFlow's CSV layout: a header "rows,features,class names...", then one flower a line."""
    with open(path) as f:
        header = f.readline().strip().split(",")
        try:
            rows, features = int(header[0]), int(header[1])
            table = np.loadtxt(f, delimiter=",", ndmin=2)
        except ValueError as e:
            raise DatasetDownloadError(f"{path} is not TensorFlow's Iris CSV file ({e})") from None
    if table.shape != (rows, features + 1) or header[2:] != [s.lower() for s in SPECIES]:
        raise DatasetDownloadError(
            f"{path} is not TensorFlow's Iris CSV file: its header says {header}, its "
            f"table is {table.shape}; delete it to download it again"
        )
    return table[:, :features].astype(np.float32), table[:, features].astype(np.int32)


def load_data():
    """`(x_train, y_train), (x_test, y_test)`: float32 features of shapes (120, 4) and (30, 4),
    int32 species ids of shapes (120,) and (30,), from iris_training.csv and iris_test.csv."""
    train_file, test_file = get_files(["iris_training.csv", "iris_test.csv"], TF_DATA_FOLDER, subdir="iris")
    train, test = _read(train_file), _read(test_file)
    return train, test
