"""Metrics against hand-computed values, accumulated over batches as Keras does (Keras's own values
on real batches are checked by test_tf_fidelity through the fixtures' logs), and the resolution
of metric names and objects."""

import math

import numpy as np
import pytest

from kgraph import metrics
from kgraph.runtime.metrics import build


def _result(metric, *batches):
    for y_true, y_pred in batches:
        metric.update(np.asarray(y_true), np.asarray(y_pred, np.float32))
    return metric.result()


def test_accuracies_average_over_all_samples_seen():
    m = metrics.BinaryAccuracy()
    assert _result(m, ([[1], [0], [1], [0]], [[0.7], [0.2], [0.4], [0.6]])) == 0.5
    assert _result(m, ([[1]], [[0.9]])) == pytest.approx(3 / 5)
    m.reset()
    assert m.result() == 0.0
    assert _result(metrics.BinaryAccuracy(threshold=0.3), ([1, 0], [[0.4], [0.2]])) == 1.0
    probs = [[0.1, 0.7, 0.2], [0.5, 0.4, 0.1], [0.2, 0.3, 0.5]]
    assert _result(metrics.CategoricalAccuracy(), (np.eye(3)[[1, 1, 2]], probs)) == pytest.approx(2 / 3)
    assert _result(metrics.SparseCategoricalAccuracy(), ([[1], [1], [2]], probs)) == pytest.approx(2 / 3)
    assert _result(metrics.SparseCategoricalAccuracy(), ([1, 0, 0], probs)) == pytest.approx(2 / 3)


def test_top_k_counts_ties_as_in_top_k():
    probs = [[0.1, 0.5, 0.4], [0.3, 0.3, 0.4]]
    # row 0: label 2 is second; row 1: label 0 ties with class 1 behind class 2
    assert _result(metrics.SparseTopKCategoricalAccuracy(k=2), ([2, 0], probs)) == 1.0
    assert _result(metrics.SparseTopKCategoricalAccuracy(k=1), ([2, 0], probs)) == 0.0
    assert _result(metrics.TopKCategoricalAccuracy(k=1), (np.eye(3)[[1, 2]], probs)) == 1.0


def test_regression_metrics():
    batch = ([[0, 1], [2, 3]], [[1, 1], [2, 5]])  # per-sample |err| means 0.5, 1; err**2 means 0.5, 2
    assert _result(metrics.MeanAbsoluteError(), batch) == pytest.approx(0.75)
    assert _result(metrics.MeanSquaredError(), batch) == pytest.approx(1.25)
    assert _result(metrics.RootMeanSquaredError(), batch) == pytest.approx(math.sqrt(1.25))
    rmse = metrics.RootMeanSquaredError()
    assert _result(rmse, batch, ([[0, 0]], [[3, 3]])) == pytest.approx(math.sqrt((0.5 + 2 + 9) / 3))


Y_TRUE = [1, 0, 1, 1, 0]
Y_PRED = [0.9, 0.8, 0.3, 0.6, 0.1]


def test_precision_and_recall_count_over_the_epoch():
    # at 0.5: tp = {0.9, 0.6}, fp = {0.8}, fn = {0.3}
    assert _result(metrics.Precision(), (Y_TRUE, Y_PRED)) == pytest.approx(2 / 3)
    assert _result(metrics.Recall(), (Y_TRUE, Y_PRED)) == pytest.approx(2 / 3)
    # counts, not means: one more batch of a single true positive
    assert _result(metrics.Precision(), (Y_TRUE, Y_PRED), ([1], [0.7])) == pytest.approx(3 / 4)
    # a list of thresholds gives a list; at 0.85 only 0.9 is positive
    assert _result(metrics.Precision(thresholds=[0.5, 0.85]), (Y_TRUE, Y_PRED)) == pytest.approx([2 / 3, 1.0])
    assert _result(metrics.Recall(thresholds=[0.5, 0.85]), (Y_TRUE, Y_PRED)) == pytest.approx([2 / 3, 1 / 3])
    # nothing predicted positive: 0, as Keras's divide_no_nan
    assert _result(metrics.Precision(thresholds=0.95), (Y_TRUE, Y_PRED)) == 0.0
    # top_k / class_id on class scores
    scores = [[0.6, 0.7, 0.1], [0.9, 0.2, 0.8]]
    labels = [[1, 0, 0], [1, 0, 1]]
    assert _result(metrics.Precision(top_k=1), (labels, scores)) == pytest.approx(1 / 2)  # 0.7 wrong, 0.9 right
    assert _result(metrics.Recall(class_id=2), (labels, scores)) == pytest.approx(1.0)


def test_auc_of_a_ranking():
    # 4 of the 6 (positive, negative) pairs are ordered: ROC AUC 2/3 when no two scores share a bucket
    assert _result(metrics.AUC(), (Y_TRUE, Y_PRED)) == pytest.approx(2 / 3, abs=1e-6)
    assert _result(metrics.AUC(), ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])) == pytest.approx(1.0)
    assert _result(metrics.AUC(), ([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9])) == pytest.approx(0.0, abs=1e-6)
    # from_logits applies a sigmoid first
    logits = np.log(np.array(Y_PRED) / (1 - np.array(Y_PRED)))
    assert _result(metrics.AUC(from_logits=True), (Y_TRUE, logits)) == pytest.approx(2 / 3, abs=1e-6)
    # PR curve, Davis & Goadrich interpolation: perfect ranking gives 1
    assert _result(metrics.AUC(curve="PR"), ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])) == pytest.approx(1.0)
    # three thresholds {-eps, 0.5, 1+eps}: ROC points (1, 1), (1/2, 2/3), (0, 0); trapezoids
    expected = (1 - 0.5) * (1 + 2 / 3) / 2 + 0.5 * (2 / 3) / 2
    assert _result(metrics.AUC(num_thresholds=3), (Y_TRUE, Y_PRED)) == pytest.approx(expected)


def test_names_and_objects_resolve_with_keras_log_names():
    assert metrics.get("mae") == ("mae", "MeanAbsoluteError", {"name": "mae"})
    assert metrics.get("mean_squared_error")[:2] == ("mean_squared_error", "MeanSquaredError")
    assert metrics.get("accuracy", "sparse_categorical_crossentropy", 10)[:2] == (
        "accuracy",
        "SparseCategoricalAccuracy",
    )
    assert metrics.get("acc", "mse", 1)[1] == "BinaryAccuracy"
    name, cls, config = metrics.get(metrics.AUC(num_thresholds=50))
    assert (name, cls) == ("auc", "AUC") and build(cls, config).num_thresholds == 50
    keras_config = {
        "module": "keras.metrics",
        "class_name": "Recall",
        "config": {"name": "recall", "dtype": "float32", "thresholds": [0.3, 0.7], "top_k": None, "class_id": None},
    }
    name, cls, config = metrics.get(keras_config)
    assert name == "recall" and build(cls, config).thresholds.tolist() == pytest.approx([0.3, 0.7])
    assert metrics.get(metrics.RootMeanSquaredError())[0] == "root_mean_squared_error"
    assert metrics.get(metrics.SparseTopKCategoricalAccuracy(k=3, name="top3"))[0] == "top3"


def test_unknown_metric_is_one_line_listing_the_known_ones():
    with pytest.raises(ValueError) as e:
        metrics.get("accuracyy")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("unknown metric 'accuracyy'; known:")
    assert "AUC" in msg and "mae" in msg and "sparse_top_k_categorical_accuracy" in msg


# what tools/make_tf_fixtures.py gave Keras 3.15 for the fixture's cases that are not a string
_CLASS_CASES = {
    "LogCoshError": ("LogCoshError", {}),
    "CosineSimilarity": ("CosineSimilarity", {}),
    "BinaryCrossentropy_logits_smoothing": ("BinaryCrossentropy", {"from_logits": True, "label_smoothing": 0.1}),
    "CategoricalCrossentropy_logits_smoothing": (
        "CategoricalCrossentropy",
        {"from_logits": True, "label_smoothing": 0.2},
    ),
    "SparseCategoricalCrossentropy_logits": ("SparseCategoricalCrossentropy", {"from_logits": True}),
    "Precision_categorical_top_k": ("Precision", {"top_k": 2}),
    "Recall_categorical_top_k": ("Recall", {"top_k": 2}),
    "AUC_multi_label_binary": ("AUC", {"multi_label": True}),
    "AUC_PR_multi_label_weights_binary": (
        "AUC",
        {"curve": "PR", "multi_label": True, "label_weights": [1.0, 2.0, 0.5, 1.0]},
    ),
    "AUC_label_weights_binary": ("AUC", {"label_weights": [1.0, 2.0, 0.5, 1.0]}),
    "MeanIoU_sparse_argmax": ("MeanIoU", {"num_classes": 4, "sparse_y_pred": False}),
    "IoU_sparse_targets": ("IoU", {"num_classes": 4, "target_class_ids": [0, 2], "sparse_y_pred": False}),
    "OneHotMeanIoU_categorical": ("OneHotMeanIoU", {"num_classes": 4}),
    "OneHotIoU_categorical": ("OneHotIoU", {"num_classes": 4, "target_class_ids": [1, 3]}),
    "BinaryIoU_binary": ("BinaryIoU", {}),
    "BinaryIoU_threshold_binary": ("BinaryIoU", {"target_class_ids": [1], "threshold": 0.3}),
}


@pytest.fixture(scope="module")
def tf_metrics():
    from pathlib import Path

    with np.load(Path(__file__).parent / "fixtures" / "tf" / "metrics.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize(
    "case",
    [
        "mape",
        "msle",
        "binary_crossentropy",
        "categorical_crossentropy",
        "sparse_categorical_crossentropy",
        "kl_divergence",
        "poisson",
        "hinge",
        "squared_hinge",
        "categorical_hinge",
        *_CLASS_CASES,
    ],
)
def test_loss_like_metrics_match_keras_over_two_batches(tf_metrics, case):
    """The metrics Keras 3 accepts by these names and classes (a loss's mean over the samples seen)
    against the values Keras 3.15 gave on the same two batches."""
    if case in _CLASS_CASES:
        metric = build(*_CLASS_CASES[case])
    else:
        name, class_name, config = metrics.get(case)
        assert name == case  # logged under the string given, as Keras does
        metric = build(class_name, config)
    batches = [(tf_metrics[f"{case}/y_true{k}"], tf_metrics[f"{case}/y_pred{k}"]) for k in (0, 1)]
    assert _result(metric, *batches) == pytest.approx(float(tf_metrics[f"{case}/result"]), rel=2e-6, abs=1e-7)


@pytest.mark.parametrize("keras", ["k2", "k3"])
def test_metric_class_names_log_as_the_keras_that_saved_the_model_logs_them(keras):
    """tf-keras logs metrics=["AUC"] as "auc" (the object's name; KLDivergence as
    "kullback_leibler_divergence"), Keras 3 as "AUC"; both keep an alias as given ("mae")."""
    from pathlib import Path

    import kgraph

    config = (Path(__file__).parent / "fixtures" / "configs" / f"{keras}_seq_mlp.json").read_text()
    model = kgraph.models.model_from_json(config)
    model.compile("sgd", "categorical_crossentropy", metrics=["AUC", "KLDivergence", "mae", "RootMeanSquaredError"])
    x = np.random.default_rng(0).random((6, 8), np.float32)
    logs = model.evaluate(x, np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]], verbose=0, return_dict=True)
    expected = {
        "k2": ["auc", "kullback_leibler_divergence", "mae", "root_mean_squared_error"],
        "k3": ["AUC", "KLDivergence", "mae", "RootMeanSquaredError"],
    }[keras]
    assert sorted(logs) == sorted(["loss", *expected])


def test_mean_iou_truncates_predictions_and_leaves_out_ids_outside_its_classes():
    """As Keras 3: a float prediction is cast to its class id (0.9 -> 0), ids outside
    [0, num_classes) and the ignored class are left out, and classes never seen do not count."""
    y_true = [0, 1, 1, 2, 5, 1, 0, 2]
    y_pred = [0.9, 1.2, 2.0, 2.7, 1.0, -1.5, 0.0, -0.5]
    # kept: (0,0) (1,1) (1,2) (2,2) (0,0) and (2,0) (-0.5 is class 0); (5,1) and (1,-1.5) are out
    # class 0: tp 2, den 3 -> 2/3; class 1: tp 1, den 2 -> 1/2; class 2: tp 1, den 3 -> 1/3
    assert _result(metrics.MeanIoU(num_classes=3), (y_true, y_pred)) == pytest.approx(1 / 2, rel=1e-6)
    assert _result(metrics.MeanIoU(num_classes=4), (y_true, y_pred)) == pytest.approx(1 / 2, rel=1e-6)  # 3: unseen
    # ignoring class 0: (1,1) (1,2) (2,2) (2,0): class 0 0/1, class 1 1/2, class 2 1/3
    ignoring = _result(metrics.MeanIoU(num_classes=3, ignore_class=0), (y_true, y_pred))
    assert ignoring == pytest.approx((0 + 1 / 2 + 1 / 3) / 3, rel=1e-6)
    assert _result(metrics.IoU(3, target_class_ids=[1]), (y_true, y_pred)) == pytest.approx(1 / 2, rel=1e-6)
    with pytest.raises(ValueError, match=r"metric 'MeanIoU' needs num_classes: give kgraph\.metrics\.MeanIoU\("):
        metrics.get("MeanIoU")


def test_metric_objects_are_saved_as_keras_serializes_them(tmp_path):
    """compile(metrics=[AUC(multi_label=True), MeanIoU(3, ...)]) saves each as its class and
    config (it was written as the Python object: a TypeError from json), and loads back."""
    from pathlib import Path

    import kgraph

    config = (Path(__file__).parent / "fixtures" / "configs" / "k3_seq_mlp.json").read_text()
    model = kgraph.models.model_from_json(config)
    chosen = [
        metrics.AUC(multi_label=True, label_weights=[1, 2, 3]),
        metrics.MeanIoU(3, sparse_y_true=False, sparse_y_pred=False),
    ]
    model.compile("sgd", "categorical_crossentropy", metrics=chosen)
    x = np.random.default_rng(0).random((6, 8), np.float32)
    y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1, 2]]
    expected = model.evaluate(x, y, verbose=0, return_dict=True)
    for name in ("m.keras", "m.h5"):
        model.save(tmp_path / name)
        loaded = kgraph.models.load_model(tmp_path / name)
        assert loaded.evaluate(x, y, verbose=0, return_dict=True) == pytest.approx(expected)
    model.compile("sgd", "categorical_crossentropy", metrics=[metrics.MeanIoU(3, sparse_y_pred=False)])
    with pytest.raises(ValueError, match=r"metric 'mean_io_u': 18 target class ids for 6 predicted ones \(one-hot"):
        model.evaluate(x, y, verbose=0)


@pytest.mark.parametrize(
    "loss, units, expected",
    [
        ("binary_crossentropy", 1, "BinaryAccuracy"),
        ("binary_crossentropy", 3, "CategoricalAccuracy"),  # multi-label sigmoids: Keras decides by shape
        ("mean_squared_error", 1, "BinaryAccuracy"),
        ("sparse_categorical_crossentropy", 10, "SparseCategoricalAccuracy"),
        ("categorical_crossentropy", 10, "CategoricalAccuracy"),
    ],
)
def test_accuracy_resolves_as_keras_resolves_it(loss, units, expected):
    """Keras (3 and tf-keras) picks "accuracy"'s metric by the output's shape: binary for one unit;
    three sigmoid units under binary_crossentropy got binary accuracy here, 0.51 where Keras says 0.28."""
    assert metrics.get("accuracy", loss, units)[1] == expected
