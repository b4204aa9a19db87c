"""Keras's metrics by name, object or serialized config: `metrics=["accuracy", "mae",
kgraph.metrics.AUC()]`. The classes (and their maths) are the runtime's; this module resolves
what compile() is given into (log name, class name, config) for each output."""

from __future__ import annotations

import inspect

from .frontend.normalize import snake_case
from .runtime.metrics import METRICS, Metric

# the metric classes, re-exported so that users write kgraph.metrics.AUC() as keras.metrics.AUC()
from .runtime.metrics import (  # noqa: F401
    AUC,
    Accuracy,
    BinaryAccuracy,
    BinaryCrossentropy,
    BinaryIoU,
    CategoricalAccuracy,
    CategoricalCrossentropy,
    CategoricalHinge,
    CosineSimilarity,
    Hinge,
    IoU,
    KLDivergence,
    LogCoshError,
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanIoU,
    MeanSquaredError,
    MeanSquaredLogarithmicError,
    OneHotIoU,
    OneHotMeanIoU,
    Poisson,
    Precision,
    Recall,
    RootMeanSquaredError,
    SparseCategoricalAccuracy,
    SparseCategoricalCrossentropy,
    SparseTopKCategoricalAccuracy,
    SquaredHinge,
    TopKCategoricalAccuracy,
)


# Keras 3's metric strings: class names, their snake_case, and the short aliases
NAMES = {
    **{c: c for c in METRICS},
    **{snake_case(c): c for c in METRICS},
    "mse": "MeanSquaredError",
    "MSE": "MeanSquaredError",
    "mae": "MeanAbsoluteError",
    "MAE": "MeanAbsoluteError",
    "rmse": "RootMeanSquaredError",
    "mape": "MeanAbsolutePercentageError",
    "MAPE": "MeanAbsolutePercentageError",
    "msle": "MeanSquaredLogarithmicError",
    "MSLE": "MeanSquaredLogarithmicError",
    "bce": "BinaryCrossentropy",
    "BCE": "BinaryCrossentropy",
}


# where a tf-keras metric class's own name is not Keras 3's
TF_KERAS_NAMES = {"KLDivergence": "kullback_leibler_divergence"}


def _known() -> str:
    return ", ".join(["accuracy", "acc"] + sorted(set(NAMES) - {"accuracy"}))


def accuracy_class(loss_name: str, output_units: int) -> str:
    """The metric Keras means by "accuracy" for this output: binary for one unit, sparse for
    integer labels, else categorical: both Kerases decide by the shapes, so several sigmoid units
    under binary_crossentropy (multi-label) get categorical accuracy, as in Keras."""
    if output_units == 1:
        return "BinaryAccuracy"
    if loss_name == "sparse_categorical_crossentropy":
        return "SparseCategoricalAccuracy"
    return "CategoricalAccuracy"


def _from_config(class_name: str, config: dict) -> Metric:
    cls = METRICS[class_name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    ignored = {k for k, v in config.items() if k not in accepted and (k == "dtype" or v in (None, False))}
    unsupported = set(config) - accepted - ignored
    if unsupported:
        raise ValueError(f"metric {class_name}: arguments {sorted(unsupported)} are not supported")
    return cls(**{k: v for k, v in config.items() if k in accepted})


def get(identifier, loss_name: str = "", output_units: int = 0, keras: int = 3) -> tuple[str, str, dict]:
    """(log name, class name, config) of a metric given as a Keras name, a kgraph.metrics object
    or a Keras config {"class_name", "config"}. A string keeps its spelling as the log name, as
    in Keras ("mae" logs as "mae"), but for a tf-keras model (keras=2) a class's name logs as
    tf-keras logs it, under the class's own name ("AUC" as "auc"); an object logs under its name."""
    if isinstance(identifier, Metric):
        return identifier.name, type(identifier).__name__, identifier.get_config()
    if isinstance(identifier, dict) and identifier.get("class_name") in METRICS:
        m = _from_config(identifier["class_name"], dict(identifier.get("config") or {}))
        return m.name, type(m).__name__, m.get_config()
    if isinstance(identifier, str) and identifier.lower() in ("accuracy", "acc"):
        class_name = accuracy_class(loss_name, output_units)
    elif isinstance(identifier, str) and identifier in NAMES:
        class_name = NAMES[identifier]
    else:
        raise ValueError(f"unknown metric {identifier!r}; known: {_known()}")
    name = identifier
    if keras < 3 and identifier in METRICS:
        name = TF_KERAS_NAMES.get(class_name) or METRICS[class_name].default_name
    try:
        metric = METRICS[class_name]()
    except TypeError:
        needed = [
            n for n, p in inspect.signature(METRICS[class_name].__init__).parameters.items() if p.default is p.empty
        ][1:]
        raise ValueError(
            f"metric {identifier!r} needs {', '.join(needed)}: give kgraph.metrics.{class_name}({needed[0]}=...)"
        ) from None
    return name, class_name, {**metric.get_config(), "name": name}
