"""The compiled step's calling contract (kgraph/runtime/abi.py): the generated functions take the
arguments it names, a manifest survives manifest.json unchanged, and its "a·B + c" layout."""

import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kgraph.runtime.abi import BATCH, STEP_ARGS, STEPS_ARGS, Manifest, Place, RandomSource, Size, StateSlot, at_batch

EXAMPLE = Path(__file__).parent.parent / "examples" / "digits_mlp.json"


def test_importing_the_contract_loads_no_numba():
    """Code generation reads the step's arguments from it: importing it must not cost Numba's registries."""
    code = "import kgraph.runtime.abi; import sys; assert 'numba' not in sys.modules"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr


def test_batch_axis_is_the_irs():
    import ir

    assert BATCH == ir.BATCH


def test_size_at_a_batch():
    assert Size(212, 32).at(1) == 244 and Size(212, 32).at(32) == 212 * 32 + 32 and Size(0, 7).at(100) == 7
    assert at_batch(["B", 64], 5) == (5, 64) and at_batch([], 5) == ()


@pytest.fixture(scope="module")
def model():
    from kgraph import models

    model = models.load_model(EXAMPLE, seed=0)
    model.compile(optimizer="adagrad", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_generated_functions_take_the_contracts_arguments(model):
    """The whole step's and the replicas' halves' leading parameters, in order."""
    exe = model.executable
    m = exe.steps["train"]
    whole = list(inspect.signature(exe.function("train").py_func).parameters)
    assert whole[: len(STEPS_ARGS)] == STEPS_ARGS
    assert len(whole) == len(STEPS_ARGS) + len(m.inputs) + len(m.labels) + len(m.sample_weights) + len(m.outputs)
    for half in ("grads", "apply"):
        params = list(inspect.signature(exe.function("train", half).py_func).parameters)
        assert params[: len(STEP_ARGS)] == STEP_ARGS


def test_manifest_json_round_trips_unchanged(model):
    for m in model.executable.steps.values():
        d = m.to_json()
        assert json.loads(json.dumps(d)) == d  # plain JSON
        assert Manifest.from_json(json.loads(json.dumps(d))) == m
        assert list(d) == [f for f in Manifest.__dataclass_fields__ if f != "launches"]
    m = model.executable.steps["train"]
    assert m.arena == Size(*m.to_json()["arena"]) and isinstance(m.state[0], StateSlot)
    assert {s.init for s in m.state} == {0.1}  # Adagrad's initial accumulator value
    assert m.rng_masks[0].to_json() == {
        "node": "dropout_mask",
        "offset": 0,
        "batch": True,
        "size": 64,
        "rate": 0.1,
        "dist": "bernoulli",
        "shape": ["B", 64],
        "layer": "dropout",
    }


def test_a_compiled_trainers_manifest_loads_and_is_written_back_the_same(model, tmp_path):
    model.export(tmp_path)
    text = (tmp_path / "manifest.json").read_text()
    on_disk = json.loads(text)
    for kind, d in on_disk["steps"].items():
        m = Manifest.from_json(d)
        assert m.module == d["module"] and m == model.executable.steps[kind].with_module(d["module"])
        assert m.to_json() == d
    again = {**on_disk, "steps": {k: Manifest.from_json(d).to_json() for k, d in on_disk["steps"].items()}}
    assert json.dumps(again, indent=1) == text


def test_an_older_manifest_loads_with_the_defaults_of_what_it_lacks():
    """Trainers written before the thread plan, sample weights, replicas and noise layers."""
    old = {
        "kind": "test",
        "module": "m.py",
        "function": "test_step",
        "arena": [10, 4],
        "rng": [3, 0],
        "rng_masks": [{"node": "d", "offset": 0, "batch": True, "size": 3, "rate": 0.5, "shape": ["B", 3]}],
        "inputs": ["x"],
        "labels": [{"id": "y0", "dtype": "int32", "shape": ["B"]}],
        "outputs": {"loss": {"region": "arena", "offset": 2, "batch": False, "shape": [], "dtype": "float32"}},
        "state": [{"node": "s", "slot": "m", "param": "w", "offset": 0, "shape": [2]}],
        "state_size": 2,
    }
    m = Manifest.from_json(old)
    assert (m.parts, m.gemm_flops_per_sample, m.sample_weights, m.synced) == (1, 0, (), ())
    assert m.rng_masks[0].dist == "bernoulli" and m.state[0].init == 0.0 and m.launches is None


def test_the_a_times_b_plus_c_layout():
    """Per-sample slots take B elements per unit of offset; fixed ones follow the per-sample part."""
    m = Manifest(
        "train",
        0,
        1,
        "m.py",
        "train_step",
        Size(10, 4),
        Size(6, 2),
        (RandomSource("p", 1, True, 5, 0.5), RandomSource("f", 1, False, 1, 0.5)),
        ("x",),
        (),
        (),
        {
            "per": Place("arena", 3, True, (BATCH, 2), "float32"),
            "fixed": Place("arena", 1, False, (), "float32"),
            "weight": Place("params", 7, False, (3,), "float32"),
        },
        (),
        0,
        (),
        0,
    )
    assert m.output_slice(m.outputs["per"], 4) == (12, (4, 2))
    assert m.output_slice(m.outputs["fixed"], 4) == (41, (1,))
    assert m.output_slice(m.outputs["weight"], 4) == (7, (3,))
    assert m.rng_slice(m.rng_masks[0], 4) == slice(4, 24)
    assert m.rng_slice(m.rng_masks[1], 4) == slice(25, 26)
    state = np.arange(10.0)
    view = m.state_view(state, StateSlot("s", "m", "w", 4, (2, 3)))
    np.testing.assert_array_equal(view, [[4, 5, 6], [7, 8, 9]])
    assert view.base is state


def test_manifest_is_frozen(model):
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        model.executable.steps["train"].module = "elsewhere.py"
