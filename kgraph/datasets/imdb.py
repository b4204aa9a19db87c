"""IMDB movie reviews, as keras.datasets.imdb: 25,000 training and 25,000 test reviews as lists of
word indexes (by frequency), labelled 1 (positive) or 0 (negative)."""

import json

import numpy as np

from ._files import KERAS_FOLDER, get_file


def load_data(
    path="imdb.npz", num_words=None, skip_top=0, maxlen=None, seed=113, start_char=1, oov_char=2, index_from=3, **kwargs
):
    """Keras's arguments and result: `(x_train, y_train), (x_test, y_test)`, x lists of lists of
    word indexes (shuffled with `seed`, each starting with start_char, words offset by
    index_from, words outside [skip_top, num_words) replaced by oov_char or dropped when it is
    None, reviews of maxlen words or more left out), y int arrays of 0 and 1."""
    if kwargs:
        raise TypeError(f"Unrecognized keyword arguments: {sorted(kwargs)}")
    with np.load(get_file("imdb.npz", KERAS_FOLDER, cache_name=path), allow_pickle=True) as f:
        # allow_pickle: the reviews are object arrays; the file passed its SHA-256 first
        x_train, labels_train = f["x_train"], f["y_train"]
        x_test, labels_test = f["x_test"], f["y_test"]
    rng = np.random.RandomState(seed)
    order = np.arange(len(x_train))
    rng.shuffle(order)
    x_train, labels_train = x_train[order], labels_train[order]
    order = np.arange(len(x_test))
    rng.shuffle(order)
    x_test, labels_test = x_test[order], labels_test[order]

    start = [] if start_char is None else [start_char]
    x_train = [start + [w + index_from for w in x] for x in x_train]
    x_test = [start + [w + index_from for w in x] for x in x_test]
    if maxlen:
        keep = [k for k, x in enumerate(x_train) if len(x) < maxlen]
        x_train, labels_train = [x_train[k] for k in keep], labels_train[keep]
        keep = [k for k, x in enumerate(x_test) if len(x) < maxlen]
        x_test, labels_test = [x_test[k] for k in keep], labels_test[keep]
        if not x_train or not x_test:
            raise ValueError(
                f"After filtering for sequences shorter than maxlen={maxlen}, no sequence was kept. Increase maxlen."
            )
    xs = x_train + x_test
    if not num_words:
        num_words = max(max(x) for x in xs)
    if oov_char is not None:
        xs = [[w if skip_top <= w < num_words else oov_char for w in x] for x in xs]
    else:
        xs = [[w for w in x if skip_top <= w < num_words] for x in xs]
    n = len(x_train)
    return (xs[:n], np.asarray(labels_train)), (xs[n:], np.asarray(labels_test))


def get_word_index(path="imdb_word_index.json"):
    """{word: index} of the reviews' words (add index_from to match load_data's indexes)."""
    with open(get_file("imdb_word_index.json", KERAS_FOLDER, cache_name=path)) as f:
        return json.load(f)
