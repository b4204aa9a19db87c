import numpy as np

from kgraph.datasets import digits


def test_shapes_dtypes_and_ranges():
    (x_train, y_train), (x_test, y_test) = digits.load_data()
    assert x_train.shape == (1437, 64) and y_train.shape == (1437,)
    assert x_test.shape == (360, 64) and y_test.shape == (360,)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int32
    x = np.concatenate([x_train, x_test])
    assert x.min() == 0.0 and x.max() == 1.0
    # Pixels are counts 0..16 scaled by 1/16, so exact multiples of 1/16.
    np.testing.assert_array_equal(x * 16, np.round(x * 16))


def test_splits_partition_the_whole_set():
    (x_train, y_train), (x_test, y_test) = digits.load_data()
    with np.load(digits._PATH) as raw:
        x_raw, y_raw = raw["x"], raw["y"]
    assert x_raw.dtype == np.uint8 and x_raw.shape == (1797, 64)
    ours = np.column_stack([np.concatenate([x_train, x_test]) * 16, np.concatenate([y_train, y_test])])
    theirs = np.column_stack([x_raw, y_raw]).astype(np.float32)
    # Same multiset of (pixels, label) rows: sort both row-wise and compare.
    np.testing.assert_array_equal(ours[np.lexsort(ours.T)], theirs[np.lexsort(theirs.T)])


def test_classes_are_balanced_in_both_splits():
    (_, y_train), (_, y_test) = digits.load_data()
    counts = np.bincount(np.concatenate([y_train, y_test]), minlength=10)
    assert counts.sum() == 1797 and counts.min() >= 174 and counts.max() <= 183
    test_share = np.bincount(y_test, minlength=10) / counts
    assert np.all((test_share > 0.1) & (test_share < 0.3))


def test_shuffle_is_deterministic_and_seeded():
    (a, ya), _ = digits.load_data()
    (b, yb), _ = digits.load_data()
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)
    (c, _), _ = digits.load_data(seed=1)
    assert not np.array_equal(a, c)


def test_test_split_sets_the_held_out_fraction():
    (x_train, _), (x_test, _) = digits.load_data(test_split=0.5)
    assert len(x_train) == 898 and len(x_test) == 899
    (x_train, _), (x_test, _) = digits.load_data(test_split=0.0)
    assert len(x_train) == 1797 and len(x_test) == 0


# ---------------------------------------------------------------- downloaded datasets (a local server)
import gzip  # noqa: E402
import os  # noqa: E402

import pytest  # noqa: E402

from fake_datasets import checksums as fake_checksums  # noqa: E402
from fake_datasets import fake_downloads, make_files  # noqa: E402
from kgraph.datasets import _files, fashion_mnist, imdb, iris, mnist  # noqa: E402


@pytest.fixture
def served(tmp_path, monkeypatch):
    with fake_downloads(tmp_path, monkeypatch, n_train=50, n_test=20) as server:
        yield server


def test_mnist_and_fashion_mnist_have_keras_layout(served):
    files, _, cache = served
    for module in (mnist, fashion_mnist):
        (x_train, y_train), (x_test, y_test) = module.load_data()
        assert x_train.shape == (50, 28, 28) and y_train.shape == (50,)
        assert x_test.shape == (20, 28, 28) and y_test.shape == (20,)
        assert x_train.dtype == y_train.dtype == np.uint8 and y_train.max() <= 9
    with gzip.open(cache / "fashion-mnist" / "train-images-idx3-ubyte.gz") as f:
        np.testing.assert_array_equal(
            np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28), fashion_mnist.load_data()[0][0]
        )
    assert (cache / "mnist.npz").read_bytes() == files["mnist.npz"]


def test_iris_reads_tensorflows_csv_files(served):
    files, _, _ = served
    (x_train, y_train), (x_test, y_test) = iris.load_data()
    assert x_train.shape == (120, 4) and x_test.shape == (30, 4) and x_train.dtype == np.float32
    assert y_train.dtype == np.int32 and set(y_train) <= {0, 1, 2}
    second = files["iris_training.csv"].decode().splitlines()[1].split(",")
    np.testing.assert_allclose(x_train[0], [float(v) for v in second[:4]], rtol=1e-6)
    assert y_train[0] == int(second[4])


def test_imdb_follows_keras_index_rules(served):
    (x_train, y_train), (x_test, y_test) = imdb.load_data()
    assert len(x_train) == 6 and len(x_test) == 2 and y_train.tolist().count(1) == 3
    # start_char, then words offset by index_from=3; as in Keras, the largest index becomes oov_char
    assert all(x[0] == 1 and all(w >= 4 or w == 2 for w in x[1:]) for x in x_train + x_test)
    (short, _), (short_test, _) = imdb.load_data(num_words=10, maxlen=11)
    assert len(short) == 6 and len(short_test) == 1  # reviews of maxlen words or more are left out
    assert all(len(x) < 11 and all(w == 2 or w < 10 for w in x) for x in short)  # oov_char for >= num_words
    assert imdb.get_word_index() == {"the": 1, "movie": 2}


def test_downloads_are_cached_and_a_wrong_checksum_is_refused(served, monkeypatch):
    _, _, cache = served
    mnist.load_data()
    monkeypatch.setenv("KGRAPH_DATASETS_URL", "http://127.0.0.1:9/")  # nothing listens there
    assert mnist.load_data()[0][0].shape == (50, 28, 28)  # read from the cache
    monkeypatch.setenv("KGRAPH_DATASETS_URL", served[1])
    monkeypatch.setitem(_files.CHECKSUMS, "t10k-labels-idx1-ubyte.gz", "0" * 64)
    with pytest.raises(_files.DatasetDownloadError, match="expected checksum 0000"):
        fashion_mnist.load_data()
    assert not (cache / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz").exists()  # nothing half-kept
    assert not [p for p in (cache / "fashion-mnist").iterdir() if p.name.endswith(".part")]
    # a cached file that no longer matches is fetched again
    (cache / "mnist.npz").write_bytes(b"corrupt")
    with pytest.warns(UserWarning, match="expected checksum"):
        assert mnist.load_data()[0][0].shape == (50, 28, 28)


def test_offline_the_error_names_the_url_and_the_place(tmp_path, monkeypatch):
    monkeypatch.setenv("KGRAPH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))  # not the user's Keras downloads
    monkeypatch.setenv("KGRAPH_DATASETS_URL", "http://127.0.0.1:9/mirror/")
    with pytest.raises(_files.DatasetDownloadError) as info:
        mnist.load_data()
    message = str(info.value)
    assert "http://127.0.0.1:9/mirror/mnist.npz" in message and str(tmp_path / "mnist.npz") in message
    assert os.listdir(tmp_path) == []


def test_the_default_origins_are_keras_and_tensorflows():
    assert _files.KERAS_FOLDER == "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
    assert _files.TF_DATA_FOLDER == "https://storage.googleapis.com/download.tensorflow.org/data/"
    assert set(make_files(n_train=2, n_test=2)) == set(_files.CHECKSUMS)


def test_offline_one_error_names_every_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KGRAPH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("KGRAPH_DATASETS_URL", "http://127.0.0.1:9/mirror/")
    with pytest.raises(_files.DatasetDownloadError) as info:
        fashion_mnist.load_data()
    message = str(info.value)
    assert all(f"http://127.0.0.1:9/mirror/{name}" in message for name in fashion_mnist.FILES)
    assert str(tmp_path / "fashion-mnist") in message


def test_a_file_keras_downloaded_is_taken_from_its_cache(tmp_path, monkeypatch):
    """A user of Keras has ~/.keras/datasets: its files are copied when their checksums are right."""
    files = make_files(n_train=5, n_test=3)
    monkeypatch.setattr(_files, "CHECKSUMS", fake_checksums(files))
    monkeypatch.setenv("KGRAPH_DATA_DIR", str(tmp_path / "kgraph"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("KGRAPH_DATASETS_URL", "http://127.0.0.1:9/")  # nothing listens there
    keras = tmp_path / "keras" / "datasets"
    (keras / "fashion-mnist").mkdir(parents=True)
    (keras / "mnist.npz").write_bytes(files["mnist.npz"])
    for name in fashion_mnist.FILES:
        (keras / "fashion-mnist" / name).write_bytes(files[name])
    assert mnist.load_data()[0][0].shape == (5, 28, 28)
    assert fashion_mnist.load_data()[1][0].shape == (3, 28, 28)
    assert (tmp_path / "kgraph" / "mnist.npz").read_bytes() == files["mnist.npz"]
    (keras / "mnist.npz").write_bytes(b"not it")  # a wrong copy is not taken
    (tmp_path / "kgraph" / "mnist.npz").unlink()
    with pytest.raises(_files.DatasetDownloadError, match="could not download"):
        mnist.load_data()
