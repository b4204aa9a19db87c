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
    ours = np.column_stack([np.concatenate([x_train, x_test]) * 16,
                            np.concatenate([y_train, y_test])])
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
