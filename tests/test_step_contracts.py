"""What the CPU step's speed rests on, checked without timing anything: fusion changes no number,
the planned arena stays within 5% of its lower bound on the benchmark suite's models, and the
compiled step allocates nothing."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.models import SUITE
from kgraph.codegen import generate_cpu, step_manifest
from kgraph.frontend import build_model
from kgraph.passes import run_pipeline
from kgraph.runtime.executable import Executable
from kgraph.runtime.loader import write_source

TRAINED = [name for name, spec in SUITE.items() if not spec.get("predict")]


def _compiled(config, kind="train", fuse=True, parts=2, loss="sparse_categorical_crossentropy"):
    fm = build_model(config, seed=3)
    compiled = run_pipeline(
        kind,
        fm.lower(training=kind == "train"),
        [w.node for w in fm.weights],
        losses=[{"name": loss}],
        optimizer=("adam", {}),
        fuse=fuse,
        parts=parts,
        trainable=[w.node for w in fm.weights if w.trainable],  # batch norm's moving statistics are state
    )
    return fm, compiled


@pytest.mark.parametrize("name", TRAINED)
def test_planned_arena_is_within_5_percent_of_its_lower_bound(name):
    spec = SUITE[name]
    _, compiled = _compiled(spec["config"], loss=spec["loss"])
    plan = compiled.plan
    for batch in (spec["batch"], 1024):  # (at batch 1 the 64-byte alignment of fixed buffers dominates)
        bound = plan.bound_per_sample * batch + plan.bound_fixed
        assert plan.arena_size(batch) <= 1.05 * bound, (batch, plan.arena_size(batch), bound)


def test_fused_and_unfused_steps_give_the_same_numbers():
    """The residual suite model (dense+bias+relu, shared inputs, fused update) trained 3 steps
    with every fusion pass on and with all of them off."""
    spec = SUITE["residual_mlp_256x4_b64_adam"]
    rs = np.random.RandomState(0)
    x = rs.standard_normal((16, 784)).astype(np.float32)
    y = rs.randint(0, 10, 16).astype(np.int32)
    results = []
    for fuse in (True, False):
        fm, compiled = _compiled(spec["config"], fuse=fuse)
        fused_ops = {n.op for n in compiled.graph.nodes()} & {"fused_dense", "fused_update", "fused_elementwise"}
        assert bool(fused_ops) == fuse
        manifest = step_manifest(compiled, write_source(generate_cpu(compiled), f"contract_{fuse}"))
        layout, offset = [], 0
        for w in fm.weights:
            layout.append({"node": w.node, "offset": offset, "shape": list(w.shape)})
            offset += int(np.prod(w.shape))
        exe = Executable({"train": manifest}, layout)
        exe.set_weights([w.value for w in fm.weights])
        losses = [float(exe.run("train", [x], [y], lr=1e-3, step=s)["loss"][0]) for s in (1, 2, 3)]
        results.append((losses, exe.get_weights()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


ALLOCATIONS = r"""
import json, sys
import numpy as np
from numba.core.runtime import rtsys
from kgraph import models
from benchmarks.models import SUITE
spec = SUITE[sys.argv[1]]
model = models.model_from_config(spec["config"], seed=0)
model.compile(optimizer="adam", loss=spec["loss"])
shape = (8,) + tuple(model.info["input_shapes"][0][1:])
x = np.random.RandomState(0).standard_normal(shape).astype(np.float32)
y = np.arange(8, dtype=np.int32) % spec["n_out"]
exe = model.executable
counts = {}
for parts in (1, 2):
    tuner = exe.threads.tuner("train", exe.steps["train"], 8)
    tuner.options, tuner.best = [(parts, 1)], (parts, 1)
    model.train_on_batch(x, y)
    before = rtsys.get_allocation_stats().alloc
    for _ in range(5):
        exe.run("train", [x], [y], lr=1e-3, step=2)
    counts[parts] = (rtsys.get_allocation_stats().alloc - before) / 5
    for _ in range(5):   # several steps a call: the same arrays cross the boundary, once
        exe.run("train", [np.concatenate([x] * 3)], [np.concatenate([y] * 3)], lr=1e-3, step=2, steps=3)
    counts[f"{parts} x3"] = (rtsys.get_allocation_stats().alloc - before) / 5 - counts[parts]
m = exe.steps["train"]
arguments = 6 + len(m.inputs) + len(m.labels) + len(m.sample_weights) + len(m.outputs)
print(json.dumps([counts, arguments]))
"""


@pytest.mark.compiled_steps  # the compiled step's allocations, in a child that inherits the setting
@pytest.mark.parametrize("name", ["mlp_784_128_10_b32_adam", "cnn_28x28_conv32_b64_adam"])
def test_the_step_allocates_nothing(name):
    """Numba's allocation counter over a call of the step, whole and split, of one step and of
    three: only the arrays passed in from Python (arena, params, grads, state, dropout masks,
    learning rates, input, labels, sample weights, one stash per output returned) get a reference record at
    the boundary; no buffer is allocated inside."""
    env = dict(os.environ, NUMBA_NRT_STATS="1", PYTHONPATH=os.getcwd())
    r = subprocess.run([sys.executable, "-c", ALLOCATIONS, name], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    counts, arguments = json.loads(r.stdout.strip().splitlines()[-1])
    assert arguments == 11  # 6 buffers; input, labels, sample weights; loss and loss:0 (no metric reads output:0)
    assert counts == {"1": arguments, "2": arguments, "1 x3": arguments, "2 x3": arguments}, counts
