"""Keras's losses by name, function, object or serialized config, resolved to the loss pass's
specs: {"name", and the loss's options}. The formulas live in kgraph.passes.loss, in IR; the
functions here (`kgraph.losses.huber(y_true, y_pred)`) run that IR with the NumPy interpreter."""

from __future__ import annotations

import numpy as np

import ir

from .passes.loss import LOSSES, label_type

# each loss's options and their Keras 3 defaults
OPTIONS = {
    "binary_crossentropy": {"from_logits": False, "label_smoothing": 0.0},
    "categorical_crossentropy": {"from_logits": False, "label_smoothing": 0.0},
    "sparse_categorical_crossentropy": {"from_logits": False},
    "huber": {"delta": 1.0},
}
CLASS_NAMES = {
    "MeanSquaredError": "mean_squared_error",
    "MeanAbsoluteError": "mean_absolute_error",
    "MeanAbsolutePercentageError": "mean_absolute_percentage_error",
    "MeanSquaredLogarithmicError": "mean_squared_logarithmic_error",
    "Huber": "huber",
    "LogCosh": "log_cosh",
    "BinaryCrossentropy": "binary_crossentropy",
    "CategoricalCrossentropy": "categorical_crossentropy",
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
    "KLDivergence": "kl_divergence",
    "Poisson": "poisson",
    "Hinge": "hinge",
    "SquaredHinge": "squared_hinge",
    "CategoricalHinge": "categorical_hinge",
    "CosineSimilarity": "cosine_similarity",
}
# Keras 3's short names, and Keras 2's that saved configs may hold
ALIASES = {
    **CLASS_NAMES,
    "mse": "mean_squared_error",
    "MSE": "mean_squared_error",
    "mae": "mean_absolute_error",
    "MAE": "mean_absolute_error",
    "mape": "mean_absolute_percentage_error",
    "MAPE": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error",
    "MSLE": "mean_squared_logarithmic_error",
    "kld": "kl_divergence",
    "KLD": "kl_divergence",
    "bce": "binary_crossentropy",
    "BCE": "binary_crossentropy",
    "logcosh": "log_cosh",
    "kullback_leibler_divergence": "kl_divergence",
}
REDUCTIONS = ("sum_over_batch_size", "mean", "auto", None)  # all mean "sum, divided by the batch size"


def _known() -> str:
    return ", ".join(sorted(LOSSES) + sorted(ALIASES))


def _spec(name: str, options: dict, where: str) -> dict:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {where!r}; known: {_known()}")
    allowed = OPTIONS.get(name, {})
    if options.get("reduction", None) not in REDUCTIONS:
        raise ValueError(
            f"loss {name}: reduction {options['reduction']!r} is not supported yet (only 'sum_over_batch_size')"
        )
    if options.get("ignore_class") is not None:
        raise ValueError(f"loss {name}: ignore_class is not supported yet")
    if options.get("axis", -1) != -1:
        raise ValueError(f"loss {name}: only axis=-1 is supported")
    spec = {"name": name, **allowed}
    spec.update({k: v for k, v in options.items() if k in allowed})
    return spec


class Loss:
    """A Keras loss object. Subclasses are named as Keras's: `Huber(delta=2.0)`."""

    loss_name = ""

    def __init__(self, reduction="sum_over_batch_size", name=None, **options):
        self.name = name or self.loss_name
        self.spec_ = _spec(self.loss_name, {"reduction": reduction, **options}, self.loss_name)

    def spec(self) -> dict:
        return dict(self.spec_)

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "reduction": "sum_over_batch_size",
            **{k: v for k, v in self.spec_.items() if k != "name"},
        }

    def __call__(self, y_true, y_pred, sample_weight=None):
        """The reduced loss of a batch, as Keras's Loss.__call__ (sum over the batch size)."""
        values = evaluate(self.spec_, y_true, y_pred)
        if sample_weight is not None:
            values = values * np.asarray(sample_weight, values.dtype).reshape(values.shape)
        return values.sum() / values.size


def _loss_class(class_name, name, signature):
    def __init__(self, *args, reduction="sum_over_batch_size", name=None, **kwargs):
        kwargs.update(zip(signature, args))
        unknown = set(kwargs) - set(signature) - {"axis", "ignore_class", "dtype"}
        if unknown:
            raise TypeError(f"{class_name} got unexpected arguments {sorted(unknown)}; it takes {signature}")
        Loss.__init__(self, reduction=reduction, name=name, **kwargs)

    return type(class_name, (Loss,), {"loss_name": name, "__init__": __init__, "__doc__": f"keras.losses.{class_name}"})


for _cls, _name in CLASS_NAMES.items():
    globals()[_cls] = _loss_class(_cls, _name, list(OPTIONS.get(_name, {})))


def evaluate(spec: dict, y_true, y_pred) -> np.ndarray:
    """Per-sample values of a loss on arrays: the loss pass's IR run by the NumPy interpreter."""
    y_pred = np.asarray(y_pred)
    y_pred = y_pred if y_pred.dtype == np.float64 else y_pred.astype(np.float32)
    g = ir.Graph(spec["name"])
    pred = g.source("input", "y_pred", ir.TensorType((ir.BATCH,) + y_pred.shape[1:], str(y_pred.dtype)))
    t = label_type(spec["name"], g.type(pred))
    label = g.source("label", "y_true", t)
    out = LOSSES[spec["name"]][0](g, pred, label, spec)
    y_true = np.asarray(y_true, dtype=t.dtype).reshape(y_pred.shape[: len(t.shape)])
    return ir.interpret(g, {pred: y_pred, label: y_true})[out]


def _loss_function(name):
    def fn(y_true, y_pred, **options):
        return evaluate(_spec(name, options, name), y_true, y_pred)

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = f"keras.losses.{name}: per-sample values"
    return fn


for _name in LOSSES:
    globals()[_name] = _loss_function(_name)


def get(identifier) -> dict:
    """The loss pass's spec from a loss name, a Keras loss function, a Loss object or a Keras
    serialized config ({"class_name", "config"}, a function's config being its name)."""
    if isinstance(identifier, Loss):
        return identifier.spec()
    if callable(identifier) and getattr(identifier, "__name__", None) in LOSSES:
        return _spec(identifier.__name__, {}, identifier.__name__)
    options = {}
    if isinstance(identifier, dict):
        config = identifier.get("config")
        if isinstance(config, str):  # a function: {"class_name": "function", "config": "huber"}
            identifier = config
        else:
            options = {k: v for k, v in (config or {}).items() if k not in ("name", "fn", "dtype")}
            identifier = identifier.get("class_name", "")
    if not isinstance(identifier, str):
        raise ValueError(
            f"unknown loss {identifier!r}; give a name, a kgraph.losses object or function, or a "
            f"Keras config. Known names: {_known()}"
        )
    return _spec(ALIASES.get(identifier, identifier), options, identifier)
