"""Keras's loss names and objects, resolved to the loss pass's specs."""
from __future__ import annotations

ALIASES = {
    "mse": "mean_squared_error", "mae": "mean_absolute_error",
    "MeanSquaredError": "mean_squared_error", "MeanAbsoluteError": "mean_absolute_error",
    "BinaryCrossentropy": "binary_crossentropy", "CategoricalCrossentropy": "categorical_crossentropy",
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
}
KNOWN = ["mean_squared_error", "mean_absolute_error", "binary_crossentropy", "categorical_crossentropy",
         "sparse_categorical_crossentropy"]


class Loss:
    """A Keras loss object: `kgraph.losses.SparseCategoricalCrossentropy(from_logits=True)`."""
    name = ""

    def __init__(self, from_logits=False, reduction="sum_over_batch_size", name=None):
        if reduction not in ("sum_over_batch_size", "auto"):
            raise ValueError(f"loss reduction {reduction!r} is not supported yet (only sum_over_batch_size)")
        self.from_logits = bool(from_logits)

    def spec(self) -> dict:
        return {"name": self.name, "from_logits": self.from_logits}


class MeanSquaredError(Loss):
    name = "mean_squared_error"


class MeanAbsoluteError(Loss):
    name = "mean_absolute_error"


class BinaryCrossentropy(Loss):
    name = "binary_crossentropy"


class CategoricalCrossentropy(Loss):
    name = "categorical_crossentropy"


class SparseCategoricalCrossentropy(Loss):
    name = "sparse_categorical_crossentropy"


def get(identifier) -> dict:
    """{"name", "from_logits"} from a loss name, a Keras loss config dict or a Loss object."""
    if isinstance(identifier, Loss):
        return identifier.spec()
    from_logits = False
    if isinstance(identifier, dict):
        config = identifier.get("config", {}) or {}
        from_logits = bool(config.get("from_logits", False))
        if config.get("label_smoothing"):
            raise ValueError("label_smoothing is not supported yet")
        identifier = identifier.get("class_name", "")
    name = ALIASES.get(identifier, identifier)
    if name not in KNOWN:
        raise ValueError(f"unknown loss {identifier!r}; known: {', '.join(KNOWN + sorted(ALIASES))}")
    return {"name": name, "from_logits": from_logits}


def resolve_accuracy(loss_name: str, output_units: int) -> str:
    """The metric Keras means by "accuracy" for this loss and output width."""
    if loss_name == "binary_crossentropy" or output_units == 1:
        return "binary_accuracy"
    if loss_name == "sparse_categorical_crossentropy":
        return "sparse_categorical_accuracy"
    return "categorical_accuracy"
