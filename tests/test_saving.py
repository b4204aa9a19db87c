"""Keras's model and weight files both ways, checkpoints that resume exactly, and bad files."""

import json
import warnings
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import kgraph.models as models
from kgraph import callbacks, optimizers
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
    assert len(report["checks"]) == 10 and all(report["checks"].values()), report


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


@pytest.mark.parametrize(
    "make",
    [
        lambda: optimizers.Nadam(0.01),  # Keras 3 saves its momentum product as one more variable
        lambda: optimizers.Adam(0.01, use_ema=True, ema_overwrite_frequency=3, gradient_accumulation_steps=2),
        lambda: optimizers.Adam(optimizers.schedules.ExponentialDecay(0.01, 2, 0.5)),
        lambda: optimizers.Nadam(optimizers.schedules.CosineDecay(0.01, 10)),
    ],
    ids=["nadam", "adam_ema_accumulation", "adam_schedule", "nadam_schedule"],
)
def test_a_checkpoint_of_these_optimizers_resumes_exactly(tmp_path, make):
    """Their state in Keras 3's layout (the averages and the gradient sums first; no learning-rate
    variable where the rate is a schedule) round-trips, in the middle of an accumulation: the run
    resumed from a .keras file equals the straight one."""
    x, y = IO["x"], IO["y"]
    runs = []
    for _ in range(2):
        model = models.load_model(FILES / "tf_model.keras", compile=False)
        model.compile(optimizer=make(), loss="sparse_categorical_crossentropy")
        runs.append(model)
    straight, resumed = runs
    for _ in range(5):
        straight.train_on_batch(x, y)
    for _ in range(3):
        resumed.train_on_batch(x, y)
    resumed.save(tmp_path / "ckpt.keras")
    h5py = pytest.importorskip("h5py")
    with zipfile.ZipFile(tmp_path / "ckpt.keras") as archive, archive.open("model.weights.h5") as member:
        with h5py.File(member, "r") as f:
            saved = len(f["optimizer"]["vars"])
    # as Keras 3 counts them (it loads none where the count differs): iterations, the rate unless
    # a schedule computes it, each slot of each trainable weight, Nadam's momentum product
    opt, trainable = resumed.optimizer, len(resumed.trainable_weights)
    slots = len({s.slot for s in resumed.executable.state_manifest.state})
    schedule = isinstance(opt._learning_rate, optimizers.schedules.LearningRateSchedule)
    assert saved == 1 + (not schedule) + slots * trainable + (opt.kind == "nadam")
    again = models.load_model(tmp_path / "ckpt.keras")
    assert again.optimizer.step_count == 3
    for _ in range(2):
        again.train_on_batch(x, y)
    for a, b in zip(again.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "config, make, ext",
    [
        ("k3_luong", lambda: optimizers.Adam(optimizers.schedules.ExponentialDecay(0.01, 2, 0.5)), ".keras"),
        ("k3_luong", lambda: optimizers.Adam(optimizers.schedules.ExponentialDecay(0.01, 2, 0.5)), ".h5"),
        ("k3_luong", lambda: optimizers.Nadam(optimizers.schedules.ExponentialDecay(0.01, 2, 0.5)), ".keras"),
        ("k2_luong", lambda: optimizers.Nadam(0.01), ".h5"),  # tf-keras's layout: no momentum product
    ],
    ids=["adam_schedule.keras", "adam_schedule.h5", "nadam_schedule.keras", "tf_keras_nadam.h5"],
)
def test_optimizer_state_of_scalar_weights_resumes_exactly(tmp_path, config, make, ext):
    """Where the rate is a schedule, the slots follow the iteration count directly, and the first
    may be a scalar weight's (Attention's scale), as a learning-rate variable is: the loader takes
    the layout the slots fit. A last scalar slot is Keras 3 Nadam's momentum product only where
    the slots leave one over (tf-keras's Nadam saves none)."""
    path = Path(__file__).parent / "fixtures" / "attention" / f"{config}.json"
    rng = np.random.default_rng(0)
    runs = []
    for _ in range(2):
        model = models.load_model(path, seed=0)
        model.get_layer("dense").trainable = False  # the scalars come first
        model.compile(optimizer=make(), loss="mse")
        runs.append(model)
    xs = [rng.normal(size=(4, *i.shape[1:])).astype(np.float32) for i in runs[0].frontend.inputs]
    y = rng.normal(size=(4, *runs[0].output_shape[1:])).astype(np.float32)
    straight, resumed = runs
    assert straight.trainable_weights[0].shape == ()
    for _ in range(5):
        straight.train_on_batch(xs, y)
    for _ in range(3):
        resumed.train_on_batch(xs, y)
    resumed.save(tmp_path / f"ckpt{ext}")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "optimizer starts fresh"
        again = models.load_model(tmp_path / f"ckpt{ext}")  # (its config keeps dense frozen)
    assert again.optimizer.step_count == 3
    for _ in range(2):
        again.train_on_batch(xs, y)
    for a, b in zip(again.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("state", ["frozen", "thawed"])
def test_tf_keras_h5_of_a_thawed_base_loads_its_weights_by_name(state, tmp_path):
    """tf-keras 2 lists a trainable nested model's weights trainable first, then its batch norms'
    moving statistics; a frozen one's by layer. A tester's fine-tuned MobileNet .h5 was refused
    ("moving_mean has shape (3, 3, 8, 1) in the file") until they were matched by name; and
    kgraph's .h5 lists them as Keras reads them (by position), as the file it read does."""
    h5py = pytest.importorskip("h5py")
    io = np.load(FILES / "tf" / "bn_base_io.npz")
    source = FILES / "tf" / f"tfk2_bn_base_{state}.h5"
    model = models.load_model(source, compile=False)
    assert model.get_layer("base").trainable is (state == "thawed")
    np.testing.assert_allclose(model.predict(io["x"], verbose=0), io[state], rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "again.h5")

    def names(path):
        with h5py.File(path, "r") as f:
            found = f["model_weights"]["base"].attrs["weight_names"]
            return [(n.decode() if isinstance(n, bytes) else n).split(":")[0].split("/")[-2:] for n in found]

    assert names(tmp_path / "again.h5") == names(source)


@pytest.mark.parametrize("name", ["w.weights.h5", "w.h5", "w.npz"])
def test_weight_files_round_trip(tmp_path, name):
    model = models.load_model(FILES / "tf_model.keras")
    ws = [
        np.random.RandomState(i).standard_normal(w.shape).astype(np.float32) for i, w in enumerate(model.get_weights())
    ]
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
    with pytest.raises(FileFormatError, match=r"trunc.keras: not a readable .keras archive") as e:
        model.load_weights(tmp_path / "trunc.keras")
    assert str(e.value).count("trunc.keras") == 1


@pytest.mark.parametrize("where", ["group", "dataset", "model_weights"])
def test_an_h5_missing_what_it_lists_names_it(tmp_path, where):
    """A whole-model .h5 whose layer_names or weight_names list what is not there: one line that
    names the layer (or weight), not h5py's KeyError."""
    import h5py

    path = tmp_path / "m.h5"
    shutil.copy(TF / "tfk2_nest_adam_trained.h5", path)
    with h5py.File(path, "a") as f:
        if where == "group":
            del f["model_weights/out"]
        elif where == "dataset":
            g = f["model_weights/out"]
            del g[str(g.attrs["weight_names"][0])]
        else:
            del f["model_weights"]
    expected = {
        "group": r"m.h5: layer 'out' is listed in the file but its weights group is missing",
        "dataset": r"m.h5: weight 'out/kernel:0' of layer 'out' is listed in the file but missing",
        "model_weights": r"m.h5: has a model_config but no model_weights group",
    }[where]
    with pytest.raises(FileFormatError, match=expected):
        models.load_model(path)


def test_load_weights_reads_a_whole_models_keras_archive():
    """As Keras 3's: the archive's weights, and the optimizer state when compiled."""
    x, y = TF_IO["x"], TF_IO["y"]
    model = models.load_model(TF / "k3_nest_adam_new.keras")
    model.load_weights(TF / "k3_nest_adam_trained.keras")
    np.testing.assert_allclose(model.predict(x, verbose=0), TF_IO["k3_nest_adam_trained/pred"], rtol=1e-5, atol=1e-5)
    assert model.optimizer.iterations == 3
    model.train_on_batch(x, y)
    np.testing.assert_allclose(model.predict(x, verbose=0), TF_IO["k3_nest_adam_trained/next"], atol=1e-5)


def test_mismatched_weights_name_the_first_mismatch(tmp_path):
    archive = zipfile.ZipFile(FILES / "tf_model.keras")
    small = models.load_model(FILES / "tf_model.keras", compile=False)
    small.save_weights(tmp_path / "w.weights.h5")
    # a layer renamed loads its weights all the same: Keras 3 reads a group by its place among
    # the layers of its class (dense, dense_1, ...), not by the name it records
    renamed = json.loads(json.dumps(json.loads(archive.read("config.json"))).replace('"hidden"', '"hidden2"'))
    other = models.model_from_json(json.dumps(renamed))
    other.load_weights(tmp_path / "w.weights.h5")
    for a, b in zip(other.get_weights(), small.get_weights()):
        np.testing.assert_array_equal(a, b)
    # another model's file: what it holds is named, not an empty list
    conv = models.model_from_json((Path(__file__).parent / "fixtures" / "configs" / "k3_conv2d.json").read_text())
    conv.save_weights(tmp_path / "conv.weights.h5")
    with pytest.raises(
        FileFormatError,
        match=r"no weights for layer 'hidden2'; the file's groups fill this model's layers \[\], and its groups "
        r"\['layers/conv2d'.* fill none of them",
    ):
        other.load_weights(tmp_path / "conv.weights.h5")
    wider = json.loads(archive.read("config.json"))
    wider["config"]["layers"][-1]["config"]["units"] = 4  # "head" now has a (5, 4) kernel
    with pytest.raises(FileFormatError, match=r"head/kernel.*\(5, 3\).*\(5, 4\)"):
        models.model_from_json(json.dumps(wider)).load_weights(tmp_path / "w.weights.h5")
    # a group read by its place is named where the layer's name is not the group's
    wider = json.loads(json.dumps(renamed))
    wider["config"]["layers"][-1]["config"]["units"] = 4
    with pytest.raises(FileFormatError, match=r"head/kernel has shape \(5, 3\) in the file's group layers/dense_1, "):
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
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"]  # no temporary file left behind


# ---------------------------------------------------------------------- files TensorFlow wrote (issue 14)
# tools/make_file_fixtures.py: Keras 3 (k3) and tf-keras 2 (tfk2), .keras and .h5, right after compile
# ("new") and after 3 steps ("trained"), for each optimizer; `next` is TF's prediction after one more step.
TF = FILES / "tf"
TF_IO = np.load(TF / "io.npz")
TF_INDEX = json.loads((TF / "index.json").read_text())["files"]


def _resumable(stem, ext):
    """Whether kgraph carries on with the saved optimizer state to TensorFlow's next step: tf-keras
    2 writes no state at all for its legacy optimizers in a .keras archive, and tf-keras 2's Nadam
    multiplies its momentum product once per variable in a step (a counter it keeps in Python,
    read when the step is traced), where Keras 3 and kgraph do once a step."""
    info = TF_INDEX[stem]
    if info["optimizer"] == "nadam" and info["keras"] == "tfk2":
        return False
    return not (info["optimizer"].startswith("legacy_") and ext == ".keras")


@pytest.mark.parametrize("ext", [".keras", ".h5"])
@pytest.mark.parametrize("stem", sorted(TF_INDEX))
def test_files_tensorflow_writes_load_and_train_on(stem, ext, recwarn):
    x, y = TF_IO["x"], TF_IO["y"]
    model = models.load_model(TF / f"{stem}{ext}")
    np.testing.assert_allclose(model.predict(x, verbose=0), TF_IO[f"{stem}/pred"], rtol=1e-5, atol=1e-5)
    history = model.fit(x, y, batch_size=len(x), epochs=1, verbose=0, shuffle=False)  # one step, as TF took
    assert np.isfinite(history.history["loss"][0])
    fresh_warned = any("optimizer starts fresh" in str(w.message) for w in recwarn)
    if _resumable(stem, ext):
        assert not fresh_warned
        # tf.keras's legacy RMSprop adds epsilon inside the square root: a 1e-5 difference
        tol = 1e-4 if TF_INDEX[stem]["optimizer"] == "legacy_rmsprop" else 1e-5
        np.testing.assert_allclose(model.predict(x, verbose=0), TF_IO[f"{stem}/next"], atol=tol)
    elif TF_INDEX[stem]["optimizer"] == "nadam":  # its moments and step count load all the same
        assert not fresh_warned and model.optimizer.iterations == 4


def test_tf_written_state_is_what_resumes():
    """The resumed step differs from a fresh optimizer's: the state above was really used."""
    x, y = TF_IO["x"], TF_IO["y"]
    stem = "tfk2_nest_adam_trained"
    model = models.load_model(TF / f"{stem}.h5")
    assert model.optimizer.iterations == 3
    fresh = models.load_model(TF / f"{stem}.h5", compile=False)
    fresh.compile(optimizer=optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.train_on_batch(x, y)
    fresh.train_on_batch(x, y)
    assert np.abs(fresh.predict(x, verbose=0) - TF_IO[f"{stem}/next"]).max() > 1e-3
    np.testing.assert_allclose(model.predict(x, verbose=0), TF_IO[f"{stem}/next"], atol=1e-5)


def test_a_tf_keras_models_h5_is_saved_as_tf_keras_saves_it(tmp_path):
    """tf-keras 2 builds its legacy optimizers (which refuse weight_decay) from a training config
    without is_legacy_optimizer=False, and keeps no learning-rate variable: kgraph's .h5 of a
    Keras 2 config is written its way (tools/check_keras_files.py resumes it in tf-keras), and
    kgraph resumes it too."""
    import h5py

    x, y = TF_IO["x"], TF_IO["y"]
    model = models.load_model(TF / "tfk2_nest_adam_trained.h5")
    model.train_on_batch(x, y)
    model.save(tmp_path / "m.h5")
    with h5py.File(tmp_path / "m.h5") as f:
        assert f.attrs["keras_version"].startswith("2.")
        assert json.loads(f.attrs["training_config"])["optimizer_config"]["config"]["is_legacy_optimizer"] is False
        names = [n.decode() for n in f["optimizer_weights"].attrs["weight_names"]]
    trainable = len(model.trainable_weights)
    assert names[0] == "iteration:0" and len(names) == 1 + 2 * trainable and names[1].startswith("Adam/m/")
    again = models.load_model(tmp_path / "m.h5")
    assert again.optimizer.iterations == 4
    again.train_on_batch(x, y)
    model.train_on_batch(x, y)
    for a, b in zip(again.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # "accuracy" as the accuracy it resolved to: tf-keras reads a saved bare "accuracy" otherwise
    # (a tester's 0.65 in tf-keras for kgraph's 0.30)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(tmp_path / "acc.h5")
    with h5py.File(tmp_path / "acc.h5") as f:
        assert json.loads(f.attrs["training_config"])["metrics"] == [
            [
                {
                    "class_name": "MeanMetricWrapper",
                    "config": {"name": "accuracy", "dtype": "float32", "fn": "sparse_categorical_accuracy"},
                }
            ]
        ]
    assert models.load_model(tmp_path / "acc.h5").metrics_names == ["loss", "accuracy"]
    models.load_model(TF / "k3_nest_adam_trained.h5").save(tmp_path / "k3.h5")
    with h5py.File(tmp_path / "k3.h5") as f:  # a Keras 3 config's .h5 stays Keras 3's
        assert f.attrs["keras_version"].startswith("3.")
        assert [n.decode() for n in f["optimizer_weights"].attrs["weight_names"]][1].endswith("/learning_rate")


@pytest.mark.parametrize("name", ["k3_nest_adam_trained.weights.h5", "tfk2_nest_adam_trained_weights.h5"])
def test_tf_written_weight_files_load(name):
    model = models.load_model(TF / "k3_nest_adam_new.keras", compile=False)
    model.load_weights(TF / name)
    np.testing.assert_allclose(
        model.predict(TF_IO["x"], verbose=0), TF_IO["k3_nest_adam_trained/pred"], rtol=1e-5, atol=1e-5
    )


def test_saved_compile_arguments_in_every_keras_spelling():
    from kgraph.saving import _compile_arguments

    lr = {"learning_rate": 0.01}
    for opt in (
        "Custom>Adam",
        "keras.optimizers.Adam",
        {"class_name": "Custom>Adam", "config": lr},
        {"module": "keras.optimizers", "class_name": "Adam", "config": lr, "registered_name": None},
        {"module": "keras.optimizers.legacy", "class_name": "Adam", "config": {**lr, "decay": 0.0}},
        {"class_name": "keras.optimizers.legacy.Adam", "config": {"lr": 0.01}},
    ):
        args = _compile_arguments({"optimizer": opt, "loss": "keras.losses.mse", "metrics": [["acc"]]}, "f")
        assert args["loss"] == "mse" and args["metrics"] == ["acc"]
        got = args["optimizer"] if isinstance(args["optimizer"], str) else args["optimizer"]["class_name"]
        assert got == "Adam", opt
    # a legacy optimizer's decay is lr / (1 + decay * iterations): an InverseTimeDecay schedule
    args = _compile_arguments(
        {
            "optimizer": {"class_name": "Adam", "config": {"lr": 0.1, "decay": 0.5}},
            "loss": {
                "class_name": "SparseCategoricalCrossentropy",
                "config": {"reduction": "auto", "fn": "sparse_categorical_crossentropy"},
            },
        },
        "f",
    )
    opt = optimizers.get(args["optimizer"])
    opt.iterations = 4
    assert opt.learning_rate == pytest.approx(0.1 / (1 + 0.5 * 4))


def _rewrite_keras(src, dst, config_edit=None, weights_edit=None):
    import h5py

    with zipfile.ZipFile(src) as z:
        files = {n: z.read(n) for n in z.namelist()}
    if config_edit:
        config = json.loads(files["config.json"])
        config_edit(config)
        files["config.json"] = json.dumps(config).encode()
    if weights_edit:
        tmp = dst.with_suffix(".w.h5")
        tmp.write_bytes(files["model.weights.h5"])
        with h5py.File(tmp, "a") as f:
            weights_edit(f)
        files["model.weights.h5"] = tmp.read_bytes()
    with zipfile.ZipFile(dst, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)


def test_partial_optimizer_state_loads_the_weights_and_starts_fresh(tmp_path):
    def drop_slots(f):
        for i in (4, 5):
            del f["optimizer/vars"][str(i)]
        for i in range(6, 10):  # keep the numbering dense, as Keras writes it
            f["optimizer/vars"].move(str(i), str(i - 2))

    path = tmp_path / "partial.keras"
    _rewrite_keras(TF / "k3_seq_adam_trained.keras", path, weights_edit=drop_slots)
    with pytest.warns(
        UserWarning,
        match=r"partial.keras: the optimizer state was not loaded \(the file has 6 "
        r"slot variables, adam\S* here has 8\); the optimizer starts fresh",
    ):
        model = models.load_model(path)
    np.testing.assert_allclose(model.predict(TF_IO["x"], verbose=0), TF_IO["k3_seq_adam_trained/pred"], atol=1e-5)
    assert model.optimizer.iterations == 0
    assert np.isfinite(model.train_on_batch(TF_IO["x"], TF_IO["y"])).all()


def test_an_optimizer_kgraph_lacks_loads_the_model_uncompiled(tmp_path):
    def lamb(config):
        config["compile_config"]["optimizer"] = {
            "module": None,
            "class_name": "Addons>LAMB",
            "config": {},
            "registered_name": "Addons>LAMB",
        }

    path = tmp_path / "lamb.keras"
    _rewrite_keras(TF / "k3_seq_adam_trained.keras", path, config_edit=lamb)
    with pytest.warns(UserWarning, match="loaded uncompiled.*unknown optimizer 'LAMB'"):
        model = models.load_model(path)
    assert model.optimizer is None
    np.testing.assert_allclose(model.predict(TF_IO["x"], verbose=0), TF_IO["k3_seq_adam_trained/pred"], atol=1e-5)


def test_saved_loss_weights_that_are_not_numbers_load_the_model_uncompiled(tmp_path):
    """compile("adam", "sparse_categorical_crossentropy", ["accuracy"]) passes the metrics as
    Keras's third argument, loss_weights, and Keras saves them so."""

    def misplaced(config):
        config["compile_config"]["loss_weights"] = ["accuracy"]

    path = tmp_path / "misplaced.keras"
    _rewrite_keras(TF / "k3_seq_adam_trained.keras", path, config_edit=misplaced)
    with pytest.warns(UserWarning, match=r"loaded uncompiled.*loss_weights \['accuracy'\] are not numbers"):
        model = models.load_model(path)
    assert model.optimizer is None


def test_keras_2_2_adam_state_with_its_stand_in_vhats(tmp_path):
    """Keras 2.2-2.3 wrote `lr`, "Adam/iterations:0", all m, all v, then one (1,) vhat per weight."""
    import h5py

    stem = "tfk2_seq_legacy_adam_decay_trained"
    path = tmp_path / "keras22.h5"
    path.write_bytes((TF / f"{stem}.h5").read_bytes())
    with h5py.File(path, "a") as f:
        training = json.loads(f.attrs["training_config"])
        opt = training["optimizer_config"]["config"]
        opt["lr"] = opt.pop("learning_rate")
        f.attrs["training_config"] = json.dumps(training)
        g = f["optimizer_weights"]
        names = [n.decode() if isinstance(n, bytes) else n for n in g.attrs["weight_names"]]
        g.move(names[0], "Adam/iterations:0")
        names[0] = "Adam/iterations:0"
        for i in range(4):
            g.create_dataset(f"training/Adam/Variable_{8 + i}:0", data=np.zeros(1, np.float32))
            names.append(f"training/Adam/Variable_{8 + i}:0")
        g.attrs["weight_names"] = np.array([n.encode() for n in names])
    model = models.load_model(path)
    assert model.optimizer.iterations == 3
    model.train_on_batch(TF_IO["x"], TF_IO["y"])
    np.testing.assert_allclose(model.predict(TF_IO["x"], verbose=0), TF_IO[f"{stem}/next"], atol=1e-5)


def test_a_saved_metric_kgraph_cannot_compute_is_left_out_with_a_warning():
    from kgraph.saving import _compile_arguments

    saved = {
        "optimizer": "adam",
        "loss": "mse",
        "metrics": ["mae", {"module": "keras.metrics", "class_name": "FancyMetric", "config": {}}],
    }
    with pytest.warns(UserWarning, match="f.keras: the saved metric 'FancyMetric' is left out"):
        assert _compile_arguments(saved, "f.keras")["metrics"] == ["mae"]


@pytest.mark.parametrize("suffix, weights_only", [(".keras", False), (".h5", False), (".weights.h5", True)])
def test_fit_resumed_from_a_checkpoint_equals_the_straight_run(tmp_path, suffix, weights_only):
    """Shuffling and dropout on: the checkpoint holds the random streams' state, and the learning
    rate comes back exactly (not rounded to the file's float32), so the resumed run is bit for bit
    the straight one."""
    import kgraph
    from kgraph.datasets import digits

    (x, y), _ = digits.load_data()
    x, y = x[:256], y[:256]

    def make():
        m = kgraph.models.load_model("examples/digits_mlp.json", seed=5)  # its Dropout(0.1) draws masks
        m.compile(optimizer=kgraph.optimizers.Adam(learning_rate=0.001), loss="sparse_categorical_crossentropy")
        return m

    straight = make()
    path = str(tmp_path / f"ck_{{epoch}}{suffix}")
    checkpoint = kgraph.callbacks.ModelCheckpoint(path, save_weights_only=weights_only)
    straight.fit(x, y, epochs=4, batch_size=32, verbose=0, callbacks=[checkpoint])
    if weights_only:
        resumed = make()
        resumed.load_weights(path.format(epoch=2))
    else:
        resumed = kgraph.models.load_model(path.format(epoch=2))
    assert resumed.optimizer.learning_rate == 0.001
    resumed.fit(x, y, epochs=4, initial_epoch=2, batch_size=32, verbose=0)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("suffix", [".keras", ".h5", ".weights.h5", ".npz"])
def test_nonfinite_weights_or_state_are_refused_unless_asked(tmp_path, suffix):
    import kgraph
    from kgraph.datasets import digits

    (x, y), _ = digits.load_data()
    model = kgraph.models.load_model("examples/digits_mlp.json", seed=1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x[:64], y[:64], epochs=1, verbose=0)
    good = model.get_weights()
    broken = [w.copy() for w in good]
    broken[2][0, 0] = np.nan
    model.set_weights(broken)
    path = tmp_path / f"m{suffix}"
    (model.save_weights if suffix in (".weights.h5", ".npz") else model.save)(path)
    fresh = kgraph.models.load_model("examples/digits_mlp.json", seed=2)
    fresh.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    before = fresh.get_weights()
    with pytest.raises(FileFormatError, match="digit/kernel holds 1 NaN or infinite values.*allow_nonfinite=True"):
        fresh.load_weights(path) if suffix in (".weights.h5", ".npz") else kgraph.models.load_model(path)
    assert all(np.array_equal(a, b) for a, b in zip(before, fresh.get_weights()))  # kept what it had
    if suffix in (".weights.h5", ".npz"):
        fresh.load_weights(path, allow_nonfinite=True)
        assert np.isnan(fresh.get_weights()[2][0, 0])
    else:
        assert np.isnan(kgraph.models.load_model(path, allow_nonfinite=True).get_weights()[2][0, 0])


def test_nan_optimizer_state_is_refused(tmp_path):
    import kgraph

    model = kgraph.models.load_model("examples/digits_mlp.json", seed=1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.executable.state[:] = np.nan
    model.save(tmp_path / "m.keras")
    with pytest.raises(FileFormatError, match="optimizer state holds NaN"):
        kgraph.models.load_model(tmp_path / "m.keras")


def test_use_ema_averages_start_from_the_weights_when_nothing_made_them():
    """fit() that runs no step keeps the weights (the averages, zeros until a step, are not taken:
    a reviewer saw them zero the weights), and state from a file without averages (OptimizerV2's
    layout) starts them from the weights, not from zero."""
    x, y = IO["x"], IO["y"]
    model = models.load_model(FILES / "tf_model.keras", compile=False)
    model.compile(optimizer=optimizers.Adam(0.01, use_ema=True), loss="sparse_categorical_crossentropy")
    before = model.get_weights()
    model.fit(x, y, epochs=1, initial_epoch=1, verbose=0)
    for a, b in zip(model.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    trainable = [w for w, t in zip(model.get_weights(), model.frontend.weights) if t.trainable]
    moments = [np.full_like(w, 0.01) for w in trainable] + [np.full_like(w, 0.02) for w in trainable]
    names = ["iter:0"] + [f"Adam/{k}/{i}:0" for k in ("m", "v") for i in range(len(trainable))]
    from kgraph import saving

    saving.load_optimizer_state(model, [np.array(3)] + moments, names, "legacy.h5")
    named = zip(*saving._legacy_optimizer_weights(model))
    averages = [value for name, value in named if name.endswith("_average")]
    assert model.optimizer.step_count == 3 and len(averages) == len(trainable)
    for a, w in zip(averages, trainable):
        np.testing.assert_array_equal(a, w)
