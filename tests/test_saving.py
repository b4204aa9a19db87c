"""Keras's model and weight files both ways, checkpoints that resume exactly, and bad files."""
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

import kgraph.models as models
from kgraph import callbacks
from kgraph.saving import FileFormatError

FILES = Path(__file__).parent / "fixtures" / "files"
IO = np.load(FILES / "tf_model_io.npz")


@pytest.mark.parametrize("name", ["tf_model.keras", "tf_model.h5"])
def test_loads_tensorflow_model_files(name):
    model = models.load_model(FILES / name)
    np.testing.assert_allclose(model.predict(IO["x"], verbose=0), IO["pred"], rtol=1e-6, atol=1e-7)
    # the saved compile arguments and optimizer state come along
    assert type(model.optimizer).__name__ == "Adam"
    assert model.optimizer.iterations == int(IO["iterations"])
    logs = model.test_on_batch(IO["x"], IO["y"], return_dict=True)
    assert sorted(logs) == ["accuracy", "loss"]


def test_loads_tensorflow_weights_file():
    model = models.load_model(FILES / "tf_model.keras", compile=False)
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    model.load_weights(FILES / "tf_model.weights.h5")
    np.testing.assert_allclose(model.predict(IO["x"], verbose=0), IO["pred"], rtol=1e-6, atol=1e-7)


def test_reverse_direction_was_checked_with_tensorflow():
    report = json.loads((FILES / "reverse_check.json").read_text())
    assert len(report["checks"]) == 8 and all(report["checks"].values()), report


@pytest.mark.parametrize("ext", [".keras", ".h5"])
def test_checkpoint_resumes_exactly(tmp_path, ext):
    x, y = IO["x"], IO["y"]
    straight = models.load_model(FILES / "tf_model.keras")
    for _ in range(4):
        straight.train_on_batch(x, y)
    resumed = models.load_model(FILES / "tf_model.keras")
    for _ in range(2):
        resumed.train_on_batch(x, y)
    resumed.save(tmp_path / f"ckpt{ext}")
    again = models.load_model(tmp_path / f"ckpt{ext}")
    assert again.optimizer.iterations == resumed.optimizer.iterations
    for _ in range(2):
        again.train_on_batch(x, y)
    for a, b in zip(again.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", ["w.weights.h5", "w.h5", "w.npz"])
def test_weight_files_round_trip(tmp_path, name):
    model = models.load_model(FILES / "tf_model.keras")
    ws = [np.random.RandomState(i).standard_normal(w.shape).astype(np.float32) for i, w in enumerate(model.get_weights())]
    model.set_weights(ws)
    model.save_weights(tmp_path / name)
    other = models.load_model(FILES / "tf_model.keras")
    other.load_weights(tmp_path / name)
    for a, b in zip(other.get_weights(), ws):
        np.testing.assert_array_equal(a, b)


def test_model_checkpoint_callback_writes_keras_archives(tmp_path):
    model = models.load_model(FILES / "tf_model.keras")
    cb = callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch:02d}.keras"), monitor="loss", save_best_only=False)
    model.fit(IO["x"], IO["y"], epochs=2, batch_size=4, verbose=0, callbacks=[cb])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m-01.keras", "m-02.keras"]
    loaded = models.load_model(tmp_path / "m-02.keras")
    np.testing.assert_array_equal(loaded.predict(IO["x"], verbose=0), model.predict(IO["x"], verbose=0))


def test_corrupt_and_truncated_files_are_clear_errors_and_load_nothing(tmp_path):
    good = (FILES / "tf_model.keras").read_bytes()
    (tmp_path / "trunc.keras").write_bytes(good[: len(good) // 2])
    with pytest.raises(FileFormatError, match="trunc.keras"):
        models.load_model(tmp_path / "trunc.keras")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(FileFormatError, match="junk.h5"):
        models.load_model(tmp_path / "junk.h5")
    model = models.load_model(FILES / "tf_model.keras")
    before = model.get_weights()
    with pytest.raises(FileFormatError):
        model.load_weights(tmp_path / "junk.h5")
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)


def test_mismatched_weights_name_the_first_mismatch(tmp_path):
    archive = zipfile.ZipFile(FILES / "tf_model.keras")
    small = models.load_model(FILES / "tf_model.keras", compile=False)
    small.save_weights(tmp_path / "w.weights.h5")
    renamed = json.loads(json.dumps(json.loads(archive.read("config.json"))).replace('"hidden"', '"hidden2"'))
    other = models.model_from_json(json.dumps(renamed))
    with pytest.raises(FileFormatError, match="hidden2"):
        other.load_weights(tmp_path / "w.weights.h5")
    wider = json.loads(archive.read("config.json"))
    wider["config"]["layers"][-1]["config"]["units"] = 4   # "head" now has a (5, 4) kernel
    with pytest.raises(FileFormatError, match=r"head/kernel.*\(5, 3\).*\(5, 4\)"):
        models.model_from_json(json.dumps(wider)).load_weights(tmp_path / "w.weights.h5")


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    model = models.load_model(FILES / "tf_model.keras")
    path = tmp_path / "w.npz"
    model.save_weights(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        model.save_weights(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]   # no temporary file left behind
