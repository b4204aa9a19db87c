"""Configs in the styles real models are saved in (tests/fixtures/corpus: Keras 1.2 by hand, tf-keras 2
and Keras 3 written by TensorFlow with tools/make_corpus.py): every one either trains, or is
refused with one line that names what is unsupported."""

from pathlib import Path

import numpy as np
import pytest

import kgraph
from kgraph.frontend import ConfigError

CORPUS = sorted((Path(__file__).parent / "fixtures" / "corpus").glob("*.json"))
# refused on purpose: a Lambda holds Python bytecode that kgraph never runs
REFUSED = {"k3_lambda": "Lambda", "k2_lambda": "Lambda"}


def test_the_corpus_spans_keras_1_to_3():
    prefixes = {p.name[:2] for p in CORPUS}
    assert prefixes == {"k1", "k2", "k3"} and len(CORPUS) >= 18


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_config_trains_or_is_refused_in_one_line(path):
    try:
        model = kgraph.models.load_model(path, seed=0)
    except ConfigError as e:
        message = str(e)
        assert "\n" not in message and len(message) < 2000, message
        assert path.stem in REFUSED, f"refused: {message}"
        assert REFUSED[path.stem] in message
        return
    assert path.stem not in REFUSED, "a config kgraph should refuse was loaded"
    rng = np.random.default_rng(0)
    xs = [rng.random((4, *shape[1:])).astype(np.float32) for shape in model.info["input_shapes"]]
    model.compile(optimizer="adam", loss="mse")
    ys = [rng.random((4, *t.shape[1:])).astype(np.float32) for t in model.outputs]
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(xs, ys)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights())), "no weight moved"
