"""kgraph against TensorFlow: predictions and the first 5 train_on_batch steps, from fixtures that
tools/make_tf_fixtures.py wrote with TensorFlow 2.21 / Keras 3 (TensorFlow is not needed here)."""

import json
from pathlib import Path

import numpy as np
import pytest

import kgraph.models as models
from kgraph import optimizers

FIXTURES = Path(__file__).parent / "fixtures" / "tf"
CASES = sorted(p.stem for p in FIXTURES.glob("*.json"))
# where kgraph knowingly differs from TensorFlow
DIFFERENCES = {
    "embed_repeated_adam": "TensorFlow gives Adam an Embedding's gradient as IndexedSlices, one row per id "
    "occurrence, and Keras squares those rows before summing them into v; kgraph squares "
    "the summed (dense) gradient, as Keras's JAX and PyTorch backends do",
}


def _load(case):
    meta = json.loads((FIXTURES / f"{case}.json").read_text())
    data = np.load(FIXTURES / f"{case}.npz")
    return meta, data


def _arrays(data, prefix):
    return [data[k] for k in sorted(k for k in data.files if k.startswith(prefix) and k[len(prefix) :].isdigit())]


def test_every_fixture_is_tested():
    assert len(CASES) >= 70  # models and losses, every optimizer, clipping and schedule (opt_*, sched_*), layers


def _compile(model, meta):
    c = meta["compile"]
    model.compile(
        optimizer=optimizers.get(c["optimizer"]),
        loss=c["loss"],
        loss_weights=c.get("loss_weights"),
        metrics=c.get("metrics") or None,
    )


def _fit_weights(meta, data):
    """train_on_batch's sample_weight / class_weight arguments, as the fixture gave them to Keras."""
    fit = meta.get("fit", {})
    if fit.get("class_weight"):
        return {"class_weight": {int(k): v for k, v in fit["class_weight"].items()}}
    return {"sample_weight": data["sw"]} if fit.get("sample_weight") else {}


def _check_predictions(model, xs, expected, when):
    pred = model.predict(xs, batch_size=16, verbose=0)
    for k, (p, e) in enumerate(zip(pred if isinstance(pred, list) else [pred], expected)):
        np.testing.assert_allclose(p, e, rtol=1e-5, atol=1e-6, err_msg=f"output {k} {when}")


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, marks=pytest.mark.xfail(reason=DIFFERENCES[c], strict=True)) if c in DIFFERENCES else c
        for c in CASES
    ],
)
def test_matches_tensorflow(case):
    meta, data = _load(case)
    model = models.model_from_config(meta["model_config"])
    n = len(model.get_weights())
    model.set_weights([data[f"w_init_{i}"] for i in range(n)])
    xs, ys = _arrays(data, "x"), _arrays(data, "y")

    _check_predictions(model, xs, [data[f"pred{k}"] for k in range(len(model.output_names))], "before training")

    _compile(model, meta)
    weights = _fit_weights(meta, data)
    for step in range(meta["steps"]):
        logs = model.train_on_batch(xs, ys, return_dict=True, **weights)
        np.testing.assert_allclose(
            logs["loss"],
            data["loss"][step],
            rtol=1e-5,
            atol=1e-6,  # cosine crosses 0
            err_msg=f"loss of step {step + 1}",
        )
        if "logs" in meta:  # every log Keras reported, under Keras's names
            keras_logs = meta["logs"][step]
            assert sorted(logs) == sorted(keras_logs)
            for name, value in keras_logs.items():
                np.testing.assert_allclose(logs[name], value, rtol=1e-5, atol=1e-6, err_msg=f"{name}, step {step + 1}")
        for i, w in enumerate(model.get_weights()):
            np.testing.assert_allclose(
                w, data[f"w_step{step + 1}_{i}"], rtol=1e-5, atol=1e-6, err_msg=f"weight {i} after step {step + 1}"
            )
    if "pred_after0" in data:  # moving statistics have moved: a folded batch norm reads them
        _check_predictions(model, xs, _arrays(data, "pred_after"), "after training")
