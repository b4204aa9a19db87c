"""Every program in examples/ runs on a small slice (KGRAPH_EXAMPLE_SMALL=1: fewer epochs), its
datasets served from a local HTTP server, so that the examples never rot."""

import runpy
import sys
from pathlib import Path

import pytest

from fake_datasets import fake_downloads

EXAMPLES = Path(__file__).parent.parent / "examples"
SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))

# what each example prints when it works
EXPECTED = {
    "guide_mlp_dataset.py": ["evaluate on 32 batches", "predict: (1000, 10)"],
    "functional_model.py": ["evaluate (named inputs)"],
    "fashion_mnist_classification.py": ["Test accuracy:", "predicted"],
    "iris_classification.py": ["Test set accuracy:", "Prediction is"],
    "callbacks_checkpoint_early_stopping.py": ["checkpoints: ['weights.01.weights.h5'"],
    "save_and_load.py": ["saved and restored: ['my_model.json', 'my_model.keras', 'my_model.weights.h5']"],
    "mirrored_strategy.py": ["Number of devices: 2", "evaluate:"],
}


def test_every_example_is_tested():
    assert SCRIPTS == sorted(EXPECTED)


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs(script, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KGRAPH_EXAMPLE_SMALL", "1")
    monkeypatch.setattr(sys, "argv", [script, str(tmp_path / "out")])
    with fake_downloads(tmp_path, monkeypatch, n_train=600, n_test=100):
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    out = capsys.readouterr().out
    for text in EXPECTED[script]:
        assert text in out, f"{script} did not print {text!r}:\n{out}"
