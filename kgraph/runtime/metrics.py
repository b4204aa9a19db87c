"""Metrics computed from a step's outputs with NumPy and accumulated over an epoch as Keras 3
does: mean metrics average per-sample values over the samples seen since the last reset;
Precision, Recall and AUC accumulate confusion counts. Each class takes Keras's arguments; a
metric travels to a compiled trainer as (class name, config) and is rebuilt with `build`."""

from __future__ import annotations

import numpy as np

from .checks import DataError

EPSILON = 1e-7  # keras.config.epsilon()


def _same_rank(y_true, y_pred):
    """Keras's squeeze_or_expand_to_same_rank for targets: (N,) against (N, 1) and back."""
    y_true = np.asarray(y_true)
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        return y_true[..., 0]
    if y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
        return y_true[..., None]
    return y_true


class Metric:
    """update(y_true, y_pred) per batch, result() so far, reset() at each epoch."""

    default_name = ""

    def __init__(self, name=None):
        self.name = name or self.default_name
        self.reset()

    def get_config(self) -> dict:
        return {"name": self.name}


class Mean(Metric):
    """A running mean of values weighted by a count, like keras.metrics.Mean (the loss trackers)."""

    default_name = "mean"

    def reset(self):
        self.total = 0.0
        self.count = 0.0

    def update_value(self, value, weight=1.0):
        self.total += float(value) * weight
        self.count += weight

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0


class MeanMetricWrapper(Mean):
    """The mean over samples of a per-sample function (Keras's MeanMetricWrapper). With the mask of
    an output (its [B,T] kept steps), each sample's value is the mean over its steps of value * mask
    and it counts as the mean of its mask, as Keras's apply_mask and Mean do: an epoch's result is
    the mean over the kept steps."""

    reads_mask = True  # EpochLogs gives update() the output's mask, if it has one

    def values(self, y_true, y_pred) -> np.ndarray:
        raise NotImplementedError

    def update(self, y_true, y_pred, mask=None):
        y_pred = np.asarray(y_pred)
        v = np.asarray(self.values(_same_rank(y_true, y_pred), y_pred), np.float64)
        if mask is not None:
            mask = np.asarray(mask, np.float64).reshape(len(v), -1)
            v = v.reshape(*mask.shape, -1).mean(axis=2) * mask  # values of more axes than the mask's: their mean
            self.total += float(v.mean(axis=1).sum())
            self.count += float(mask.mean(axis=1).sum())
            return
        v = v.reshape(len(v), -1).mean(axis=1) if v.ndim > 1 else v
        self.total += float(v.sum())
        self.count += len(v)


class Accuracy(MeanMetricWrapper):
    default_name = "accuracy"

    def values(self, y_true, y_pred):
        return y_true == y_pred


class BinaryAccuracy(MeanMetricWrapper):
    default_name = "binary_accuracy"

    def __init__(self, name=None, threshold=0.5):
        self.threshold = float(threshold)
        super().__init__(name)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}

    def values(self, y_true, y_pred):
        return np.mean(y_true == (y_pred > self.threshold), axis=-1)


class CategoricalAccuracy(MeanMetricWrapper):
    default_name = "categorical_accuracy"

    def values(self, y_true, y_pred):
        return np.argmax(y_true, axis=-1) == np.argmax(y_pred, axis=-1)


class SparseCategoricalAccuracy(MeanMetricWrapper):
    default_name = "sparse_categorical_accuracy"

    def values(self, y_true, y_pred):
        return y_true.reshape(y_pred.shape[:-1]) == np.argmax(y_pred, axis=-1)


def _in_top_k(targets, y_pred, k):
    """tf.math.in_top_k: the target is in the top k unless k classes score strictly higher."""
    y_pred = np.asarray(y_pred, np.float32)
    score = np.take_along_axis(y_pred, targets.astype(np.int64)[..., None], axis=-1)
    return (np.sum(y_pred > score, axis=-1) < k) & np.isfinite(score[..., 0])


class TopKCategoricalAccuracy(MeanMetricWrapper):
    default_name = "top_k_categorical_accuracy"

    def __init__(self, k=5, name=None):
        self.k = int(k)
        super().__init__(name)

    def get_config(self):
        return {**super().get_config(), "k": self.k}

    def values(self, y_true, y_pred):
        return _in_top_k(np.argmax(y_true, axis=-1), y_pred, self.k)


class SparseTopKCategoricalAccuracy(TopKCategoricalAccuracy):
    default_name = "sparse_top_k_categorical_accuracy"

    def values(self, y_true, y_pred):
        return _in_top_k(y_true.reshape(y_pred.shape[:-1]), y_pred, self.k)


class MeanAbsoluteError(MeanMetricWrapper):
    default_name = "mean_absolute_error"

    def values(self, y_true, y_pred):
        return np.mean(np.abs(y_true - y_pred), axis=-1, dtype=np.float64)


class MeanSquaredError(MeanMetricWrapper):
    default_name = "mean_squared_error"

    def values(self, y_true, y_pred):
        return np.mean(np.square(y_true - y_pred), axis=-1, dtype=np.float64)


class MeanAbsolutePercentageError(MeanMetricWrapper):
    default_name = "mean_absolute_percentage_error"

    def values(self, y_true, y_pred):
        return 100.0 * np.mean(np.abs((y_true - y_pred) / np.maximum(np.abs(y_true), EPSILON)), axis=-1)


class MeanSquaredLogarithmicError(MeanMetricWrapper):
    default_name = "mean_squared_logarithmic_error"

    def values(self, y_true, y_pred):
        logs = np.log(np.maximum(y_pred, EPSILON) + 1.0) - np.log(np.maximum(y_true, EPSILON) + 1.0)
        return np.mean(np.square(logs), axis=-1)


class _Probabilistic(MeanMetricWrapper):
    """A crossentropy metric: Keras's arguments from_logits (and label_smoothing)."""

    def __init__(self, name=None, from_logits=False, label_smoothing=0.0):
        self.from_logits, self.label_smoothing = bool(from_logits), float(label_smoothing)
        super().__init__(name)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


def _log_probabilities(y_pred, from_logits):
    """log p over the last axis as Keras's backend takes it: log_softmax of logits, else the
    probabilities normalized to sum 1 and clipped to [eps, 1 - eps]."""
    y_pred = np.asarray(y_pred, np.float64)
    if from_logits:
        z = y_pred - y_pred.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return np.log(np.clip(y_pred / y_pred.sum(axis=-1, keepdims=True), EPSILON, 1 - EPSILON))


class BinaryCrossentropy(_Probabilistic):
    default_name = "binary_crossentropy"

    def values(self, y_true, y_pred):
        y_true = y_true * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        if self.from_logits:  # the stable form of sigmoid crossentropy
            z = np.asarray(y_pred, np.float64)
            return np.mean(np.maximum(z, 0) - z * y_true + np.log1p(np.exp(-np.abs(z))), axis=-1)
        p = np.clip(y_pred, EPSILON, 1 - EPSILON)
        return np.mean(-(y_true * np.log(p) + (1 - y_true) * np.log(1 - p)), axis=-1)


class CategoricalCrossentropy(_Probabilistic):
    default_name = "categorical_crossentropy"

    def values(self, y_true, y_pred):
        classes = y_pred.shape[-1]
        y_true = y_true * (1 - self.label_smoothing) + self.label_smoothing / classes
        return -np.sum(y_true * _log_probabilities(y_pred, self.from_logits), axis=-1)


class SparseCategoricalCrossentropy(_Probabilistic):
    default_name = "sparse_categorical_crossentropy"

    def __init__(self, name=None, from_logits=False):
        super().__init__(name, from_logits)

    def get_config(self):
        return {"name": self.name, "from_logits": self.from_logits}

    def values(self, y_true, y_pred):
        logp = _log_probabilities(y_pred, self.from_logits)
        if not self.from_logits:  # TensorFlow takes the clipped log p for logits: softmax normalizes it again
            top = logp.max(axis=-1, keepdims=True)
            logp = logp - top - np.log(np.exp(logp - top).sum(axis=-1, keepdims=True))
        labels = y_true.reshape(y_pred.shape[:-1]).astype(np.int64)
        return -np.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]


class KLDivergence(MeanMetricWrapper):
    default_name = "kl_divergence"

    def values(self, y_true, y_pred):
        t, p = np.clip(y_true, EPSILON, 1), np.clip(y_pred, EPSILON, 1)
        return np.sum(t * np.log(t / p), axis=-1)


class Poisson(MeanMetricWrapper):
    default_name = "poisson"

    def values(self, y_true, y_pred):
        return np.mean(y_pred - y_true * np.log(y_pred + EPSILON), axis=-1)


def _hinge_labels(y_true):
    """Keras's hinge losses read 0/1 labels as -1/1."""
    return 2.0 * y_true - 1.0 if np.all((y_true == 0) | (y_true == 1)) else y_true


class Hinge(MeanMetricWrapper):
    default_name = "hinge"

    def values(self, y_true, y_pred):
        return np.mean(np.maximum(1.0 - _hinge_labels(y_true) * y_pred, 0.0), axis=-1)


class SquaredHinge(MeanMetricWrapper):
    default_name = "squared_hinge"

    def values(self, y_true, y_pred):
        return np.mean(np.square(np.maximum(1.0 - _hinge_labels(y_true) * y_pred, 0.0)), axis=-1)


class CategoricalHinge(MeanMetricWrapper):
    default_name = "categorical_hinge"

    def values(self, y_true, y_pred):
        positive = np.sum(y_true * y_pred, axis=-1)
        negative = np.max((1.0 - y_true) * y_pred, axis=-1)
        return np.maximum(negative - positive + 1.0, 0.0)


class LogCoshError(MeanMetricWrapper):
    default_name = "logcosh"

    def values(self, y_true, y_pred):
        x = np.asarray(y_pred, np.float64) - y_true
        return np.mean(x + np.logaddexp(0.0, -2.0 * x) - np.log(2.0), axis=-1)


class CosineSimilarity(MeanMetricWrapper):
    default_name = "cosine_similarity"

    def values(self, y_true, y_pred):
        def unit(v):
            v = np.asarray(v, np.float64)
            return v / np.sqrt(np.maximum(np.sum(v * v, axis=-1, keepdims=True), 1e-12))

        return np.sum(unit(y_true) * unit(y_pred), axis=-1)


class RootMeanSquaredError(MeanSquaredError):
    default_name = "root_mean_squared_error"
    reads_mask = False  # Keras's is a Mean of the squared errors, a new tensor without the mask

    def result(self):
        return float(np.sqrt(super().result()))


# ---------------------------------------------------------------- confusion counts


def _thresholds(thresholds, default=0.5) -> np.ndarray:
    return np.atleast_1d(np.asarray(default if thresholds is None else thresholds, np.float32))


def _binary_inputs(y_true, y_pred, top_k=None, class_id=None, by_label=False):
    """Flattened (positive labels, predictions) as Keras's update_confusion_matrix_variables sees them;
    by_label: (rows, labels), the last axis kept (a 1-D prediction as one label)."""
    y_pred = np.asarray(y_pred, np.float32)
    y_true = _same_rank(y_true, y_pred)
    if top_k is not None:  # each row's top k predictions (ties: the first), the others never positive
        top = np.argsort(-y_pred, axis=-1, kind="stable")[..., :top_k]
        kept = np.full_like(y_pred, -np.inf)
        np.put_along_axis(kept, top, np.take_along_axis(y_pred, top, axis=-1), axis=-1)
        y_pred = kept
    if class_id is not None:
        y_true, y_pred = y_true[..., class_id], y_pred[..., class_id]
    if np.shape(y_true) != y_pred.shape:
        raise ValueError(
            f"confusion metrics need targets shaped as the predictions: got {np.shape(y_true)} "
            f"for {y_pred.shape} (one-hot targets, or class_id)"
        )
    shape = (-1, y_pred.shape[-1] if y_pred.ndim > 1 else 1) if by_label else (-1,)
    return np.asarray(y_true).reshape(shape) != 0, y_pred.reshape(shape)


class _Confusion(Metric):
    """True/false positives (and negatives) at each threshold: pred > threshold is positive."""

    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None):
        self.init_thresholds, self.top_k, self.class_id = thresholds, top_k, class_id
        # with top_k, Keras's default threshold is -1e10: a row's top k are positive whatever their scores
        self.thresholds = _thresholds(thresholds, 0.5 if top_k is None else -1e10)
        super().__init__(name)

    def get_config(self):
        return {
            **super().get_config(),
            "thresholds": self.init_thresholds,
            "top_k": self.top_k,
            "class_id": self.class_id,
        }

    def reset(self):
        self.tp, self.fp, self.fn = (np.zeros(len(self.thresholds)) for _ in range(3))

    def update(self, y_true, y_pred):
        positive, pred = _binary_inputs(y_true, y_pred, self.top_k, self.class_id)
        above = pred[None, :] > self.thresholds[:, None]
        self.tp += (above & positive).sum(axis=1)
        self.fp += (above & ~positive).sum(axis=1)
        self.fn += (~above & positive).sum(axis=1)

    def _result(self, denominator):
        r = np.divide(self.tp, denominator, out=np.zeros_like(self.tp), where=denominator != 0)
        return float(r[0]) if len(r) == 1 else [float(v) for v in r]


class Precision(_Confusion):
    default_name = "precision"

    def result(self):
        return self._result(self.tp + self.fp)


class Recall(_Confusion):
    default_name = "recall"

    def result(self):
        return self._result(self.tp + self.fn)


def _no_nan_div(a, b):
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b != 0)


class AUC(Metric):
    """Keras's AUC over num_thresholds evenly spaced thresholds (ROC or PR curve; the PR curve's
    'interpolation' is Davis & Goadrich's, as Keras's). multi_label: one curve per label (the last
    axis), their AUCs averaged (weighted by label_weights); otherwise one curve over every entry,
    each label's counts weighted by label_weights."""

    default_name = "auc"

    def __init__(
        self,
        num_thresholds=200,
        curve="ROC",
        summation_method="interpolation",
        name=None,
        multi_label=False,
        num_labels=None,
        label_weights=None,
        from_logits=False,
    ):
        if num_thresholds <= 1:
            raise ValueError(f"AUC: num_thresholds must be > 1, got {num_thresholds}")
        curve, summation_method = curve.upper(), summation_method.lower()
        if curve not in ("ROC", "PR") or summation_method not in ("interpolation", "minoring", "majoring"):
            raise ValueError(
                f"AUC: curve {curve!r} / summation_method {summation_method!r} not supported "
                f"(curve ROC or PR; interpolation, minoring or majoring)"
            )
        self.num_thresholds, self.curve, self.summation_method = int(num_thresholds), curve, summation_method
        self.multi_label, self.num_labels = bool(multi_label), num_labels
        self.label_weights = None if label_weights is None else [float(w) for w in np.ravel(label_weights)]
        if self.label_weights is not None and min(self.label_weights) < 0:
            raise ValueError(f"AUC: label_weights must be non-negative, got {self.label_weights}")
        self.from_logits = bool(from_logits)
        super().__init__(name)

    def get_config(self):
        return {
            **super().get_config(),
            "num_thresholds": self.num_thresholds,
            "curve": self.curve,
            "summation_method": self.summation_method,
            "multi_label": self.multi_label,
            "num_labels": self.num_labels,
            "label_weights": self.label_weights,
            "from_logits": self.from_logits,
        }

    def reset(self):
        self.tp = self.fp = self.tn = self.fn = None  # (thresholds, labels or 1), from the first batch

    def update(self, y_true, y_pred):
        positive, pred = _binary_inputs(y_true, y_pred, by_label=True)
        if self.from_logits:
            pred = (1 / (1 + np.exp(-pred))).astype(np.float32)
        labels = pred.shape[1]
        weights = np.ones(labels) if self.label_weights is None else np.asarray(self.label_weights)
        if len(weights) != labels:
            raise DataError(f"metric {self.name!r}: {len(weights)} label_weights for predictions of {labels} labels")
        # Keras's bucketing: a prediction is above threshold i (i/(n-1)) iff ceil(p*(n-1)) - 1 >= i
        pred = np.clip(pred, 0, 1)
        bucket = np.maximum(np.ceil(pred * np.float32(self.num_thresholds - 1)) - 1, 0).astype(np.int64)
        n = self.num_thresholds

        def above(rows):  # per label: how many of `rows` are above each threshold, weighted
            counts = [np.bincount(bucket[rows[:, k], k], minlength=n) * weights[k] for k in range(labels)]
            return np.stack(counts, axis=1)[::-1].cumsum(axis=0)[::-1]

        tp, fp = above(positive), above(~positive)
        fn = (positive * weights).sum(axis=0) - tp
        tn = (~positive * weights).sum(axis=0) - fp
        counts = [tp, fp, tn, fn] if self.multi_label else [c.sum(axis=1, keepdims=True) for c in (tp, fp, tn, fn)]
        if self.tp is None:
            self.tp, self.fp, self.tn, self.fn = counts
        elif self.tp.shape != counts[0].shape:
            raise DataError(f"metric {self.name!r} (multi_label): {labels} labels after {self.tp.shape[1]}")
        else:
            for name, c in zip(("tp", "fp", "tn", "fn"), counts):
                setattr(self, name, getattr(self, name) + c)

    def result(self) -> float:
        if self.tp is None:
            return 0.0
        by_label = self._auc(self.tp, self.fp, self.tn, self.fn)  # one per column
        if not self.multi_label:
            return float(by_label[0])
        if self.label_weights is None:
            return float(np.mean(by_label))
        weights = np.asarray(self.label_weights)
        return float(_no_nan_div(np.sum(by_label * weights), np.sum(weights)))

    def _auc(self, tp, fp, tn, fn) -> np.ndarray:
        if self.curve == "PR" and self.summation_method == "interpolation":
            dtp = tp[:-1] - tp[1:]
            p = tp + fp
            dp = p[:-1] - p[1:]
            slope = _no_nan_div(dtp, np.maximum(dp, 0))
            intercept = tp[1:] - slope * p[1:]
            both = (p[:-1] > 0) & (p[1:] > 0)
            ratio = np.where(both, _no_nan_div(p[:-1], np.maximum(p[1:], 0)), 1.0)
            area = _no_nan_div(slope * (dtp + intercept * np.log(ratio)), np.maximum(tp[1:] + fn[1:], 0))
            return np.sum(area, axis=0)
        recall = _no_nan_div(tp, tp + fn)
        x, y = (_no_nan_div(fp, fp + tn), recall) if self.curve == "ROC" else (recall, _no_nan_div(tp, tp + fp))
        heights = {
            "interpolation": (y[:-1] + y[1:]) / 2,
            "minoring": np.minimum(y[:-1], y[1:]),
            "majoring": np.maximum(y[:-1], y[1:]),
        }[self.summation_method]
        return np.sum((x[:-1] - x[1:]) * heights, axis=0)


class _IoU(Metric):
    """Keras's IoU family: a confusion matrix over num_classes of class ids (a float prediction is
    truncated to its class id, as Keras casts it; argmax along `axis` where not sparse), entries
    whose target is ignore_class or whose ids are outside [0, num_classes) left out; IoU per class tp / (tp + fp + fn), averaged over the
    target classes whose denominator is not 0."""

    def __init__(
        self,
        num_classes,
        target_class_ids=None,
        name=None,
        ignore_class=None,
        sparse_y_true=True,
        sparse_y_pred=True,
        axis=-1,
    ):
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
            raise ValueError(f"{type(self).__name__}: num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        ids = range(num_classes) if target_class_ids is None else list(target_class_ids)
        if not ids or any(not isinstance(c, int) or not 0 <= c < num_classes for c in ids):
            raise ValueError(f"{type(self).__name__}: target_class_ids must be class ids below {num_classes}")
        self.target_class_ids = list(ids)
        self.ignore_class, self.sparse_y_true, self.sparse_y_pred, self.axis = (
            ignore_class,
            bool(sparse_y_true),
            bool(sparse_y_pred),
            axis,
        )
        super().__init__(name)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "target_class_ids": self.target_class_ids,
            "ignore_class": self.ignore_class,
            "sparse_y_true": self.sparse_y_true,
            "sparse_y_pred": self.sparse_y_pred,
            "axis": self.axis,
        }

    def reset(self):
        self.matrix = np.zeros((self.num_classes, self.num_classes))

    def _ids(self, y_true, y_pred):
        y_true = np.asarray(y_true) if self.sparse_y_true else np.argmax(y_true, axis=self.axis)
        y_pred = np.asarray(y_pred, np.float32) if self.sparse_y_pred else np.argmax(y_pred, axis=self.axis)
        return np.asarray(y_true, np.float32).ravel(), np.asarray(y_pred, np.float32).ravel()

    def update(self, y_true, y_pred):
        y_true, y_pred = self._ids(y_true, y_pred)
        if y_true.shape != y_pred.shape:
            raise DataError(
                f"metric {self.name!r}: {y_true.size} target class ids for {y_pred.size} predicted ones "
                f"(one-hot targets need sparse_y_true=False, probabilities sparse_y_pred=False)"
            )
        # ids truncated toward 0, as Keras 3 casts them to int64 (-0.5 is class 0), then those
        # outside [0, num_classes) and the ignored class left out, as Keras 3 leaves them
        y_true, y_pred = np.trunc(y_true), np.trunc(y_pred)
        kept = (y_true >= 0) & (y_true < self.num_classes) & (y_pred >= 0) & (y_pred < self.num_classes)
        if self.ignore_class is not None:
            kept &= y_true != self.ignore_class
        np.add.at(self.matrix, (y_true[kept].astype(np.int64), y_pred[kept].astype(np.int64)), 1.0)

    def result(self) -> float:
        ids = self.target_class_ids
        tp = np.diagonal(self.matrix)[ids]
        denominator = (self.matrix.sum(axis=0)[ids] + self.matrix.sum(axis=1)[ids]) - tp
        valid = np.sum(denominator > 1e-9)
        return float(np.sum(tp / (denominator + 1e-7)) / (valid + 1e-7))  # Keras 3's epsilons


class IoU(_IoU):
    default_name = "io_u"

    def __init__(
        self,
        num_classes,
        target_class_ids,
        name=None,
        ignore_class=None,
        sparse_y_true=True,
        sparse_y_pred=True,
        axis=-1,
    ):
        super().__init__(num_classes, target_class_ids, name, ignore_class, sparse_y_true, sparse_y_pred, axis)


class MeanIoU(_IoU):
    default_name = "mean_io_u"

    def __init__(self, num_classes, name=None, ignore_class=None, sparse_y_true=True, sparse_y_pred=True, axis=-1):
        super().__init__(num_classes, None, name, ignore_class, sparse_y_true, sparse_y_pred, axis)

    def get_config(self):
        return {k: v for k, v in super().get_config().items() if k != "target_class_ids"}


class OneHotIoU(_IoU):
    default_name = "one_hot_io_u"

    def __init__(self, num_classes, target_class_ids, name=None, ignore_class=None, sparse_y_pred=False, axis=-1):
        super().__init__(num_classes, target_class_ids, name, ignore_class, False, sparse_y_pred, axis)

    def get_config(self):
        return {k: v for k, v in super().get_config().items() if k != "sparse_y_true"}


class OneHotMeanIoU(_IoU):
    default_name = "one_hot_mean_io_u"

    def __init__(self, num_classes, name=None, ignore_class=None, sparse_y_pred=False, axis=-1):
        super().__init__(num_classes, None, name, ignore_class, False, sparse_y_pred, axis)

    def get_config(self):
        return {k: v for k, v in super().get_config().items() if k not in ("target_class_ids", "sparse_y_true")}


class BinaryIoU(_IoU):
    """Two classes, a prediction at or above `threshold` being class 1."""

    default_name = "binary_io_u"

    def __init__(self, target_class_ids=(0, 1), threshold=0.5, name=None):
        self.threshold = float(threshold)
        super().__init__(2, list(target_class_ids), name)

    def get_config(self):
        return {"name": self.name, "target_class_ids": self.target_class_ids, "threshold": self.threshold}

    def _ids(self, y_true, y_pred):
        y_pred = (np.asarray(y_pred, np.float32) >= self.threshold).astype(np.float32)
        return np.asarray(y_true, np.float32).ravel(), y_pred.ravel()


METRICS = {
    cls.__name__: cls
    for cls in (
        Accuracy,
        BinaryAccuracy,
        CategoricalAccuracy,
        SparseCategoricalAccuracy,
        TopKCategoricalAccuracy,
        SparseTopKCategoricalAccuracy,
        MeanAbsoluteError,
        MeanSquaredError,
        RootMeanSquaredError,
        MeanAbsolutePercentageError,
        MeanSquaredLogarithmicError,
        BinaryCrossentropy,
        CategoricalCrossentropy,
        SparseCategoricalCrossentropy,
        KLDivergence,
        Poisson,
        Hinge,
        SquaredHinge,
        CategoricalHinge,
        LogCoshError,
        CosineSimilarity,
        Precision,
        Recall,
        AUC,
        IoU,
        MeanIoU,
        OneHotIoU,
        OneHotMeanIoU,
        BinaryIoU,
    )
}


def build(class_name: str, config: dict) -> Metric:
    """A fresh metric from its (class name, get_config()) pair."""
    return METRICS[class_name](**config)
