"""A generated sequence dataset for recurrent models: toy "reviews" of word ids, labelled 1 when
they hold more "good" words than "bad" ones, as keras.datasets.imdb's padded sequences look.

Word 0 is padding (the reviews are padded at the front, as keras pad_sequences does, for
Embedding(mask_zero=True)); ids 1-10 are good words, 11-20 bad ones, the rest neutral. Generated
from a seed on each call: nothing to download, and the same rows on every machine."""

import numpy as np


def load_data(num_words=1000, maxlen=40, n_train=2000, n_test=500, seed=113):
    """`(x_train, y_train), (x_test, y_test)`: int32 [n, maxlen] word ids and int32 0/1 labels."""
    if num_words < 22 or maxlen < 4:
        raise ValueError(f"need num_words >= 22 and maxlen >= 4, got {num_words} and {maxlen}")
    rng = np.random.RandomState(seed)
    n = n_train + n_test
    x = np.zeros((n, maxlen), np.int32)
    y = np.zeros(n, np.int32)
    for i in range(n):
        length = rng.randint(maxlen // 4, maxlen + 1)
        words = rng.randint(21, num_words, size=length)
        good, bad = rng.randint(0, 4, size=2)
        if good == bad:
            good += 1
        at = rng.choice(length, size=min(good + bad, length), replace=False)
        words[at[:good]] = rng.randint(1, 11, size=len(at[:good]))
        words[at[good:]] = rng.randint(11, 21, size=len(at[good:]))
        x[i, maxlen - length :] = words
        y[i] = int(np.sum(words <= 10) > np.sum((words > 10) & (words <= 20)))
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
