"""Keras's optimizers, as the compiled step runs them: names, arguments and defaults of Keras 3.
The update formulas themselves are IR ops (ir/ops/optim.py) compiled into the step, with the
gradient clipping before them; a learning-rate schedule is evaluated here, once per step."""

from __future__ import annotations

import numpy as np

from . import schedules
from .schedules import LearningRateSchedule


class LearningRate(float):
    """An optimizer's rate as its `learning_rate` reads it: a float, with the methods of the
    variable Keras 3 gives there (`optimizer.learning_rate.assign(0.5)` sets the rate)."""

    def __new__(cls, value, optimizer):
        rate = super().__new__(cls, value)
        rate.optimizer = optimizer
        return rate

    def assign(self, value):
        self.optimizer.learning_rate = value  # a schedule's rate refuses, as the setter does
        return self.optimizer.learning_rate

    def numpy(self):
        return np.float32(self)

    def __reduce__(self):  # copied or pickled (a logs dict holding it), a plain float
        return (float, (float(self),))


class Optimizer:
    kind = ""  # the optimizer pass's name for the update rule

    def __init__(
        self,
        learning_rate,
        hyper: dict,
        name=None,
        weight_decay=None,
        clipnorm=None,
        clipvalue=None,
        global_clipnorm=None,
        **options,
    ):
        """hyper: the subclass's own hyper-parameters; options: the other arguments every Keras 3
        optimizer takes, refused where set to what this runtime does not run (an argument Keras
        does not know raises, as in Keras: a misspelt one would otherwise train as the default)."""
        known = _IGNORED_KEYS | _EMA_KEYS | _DEFAULT_ONLY.keys() | {"gradient_accumulation_steps"}
        unknown = {k: v for k, v in options.items() if k not in known}
        if unknown:
            raise ValueError(f"Argument(s) not recognized: {unknown}")
        for key, default in _DEFAULT_ONLY.items():
            if options.get(key, default) not in (default, None):
                raise ValueError(f"optimizer option {key}={options[key]!r} is not supported yet")
        self.ema = _ema_options(options)
        clipping = {"clipnorm": clipnorm, "clipvalue": clipvalue, "global_clipnorm": global_clipnorm}
        if sum(v is not None for v in clipping.values()) > 1:
            raise ValueError(
                "Only one of `clipnorm`, `clipvalue` and `global_clipnorm` can be set. Received: "
                + ", ".join(f"{k}={v}" for k, v in clipping.items())
            )
        self.gradient_accumulation_steps = _accumulation(options.get("gradient_accumulation_steps"), clipping)
        if isinstance(learning_rate, dict):
            learning_rate = schedules.deserialize(learning_rate)
        self._learning_rate = (
            learning_rate
            if isinstance(learning_rate, LearningRateSchedule)
            else _finite(learning_rate, "learning_rate")
        )
        self.options = {"weight_decay": weight_decay, **clipping}
        self.hyper = hyper
        self.name = name or type(self).__name__.lower()
        self.step_count = 0  # training steps taken: Keras's `_iterations`, the "iteration" its files save

    @property
    def iterations(self) -> int:
        """Keras's: the updates applied so far (the steps taken, over gradient_accumulation_steps)."""
        return self.step_count // (self.gradient_accumulation_steps or 1)

    @iterations.setter
    def iterations(self, value: int):
        self.step_count = int(value) * (self.gradient_accumulation_steps or 1)

    @property
    def scheduled(self) -> bool:
        """Whether a LearningRateSchedule gives the rate (Keras keeps no learning-rate variable then)."""
        return isinstance(self._learning_rate, LearningRateSchedule)

    @property
    def learning_rate(self) -> float:
        """This step's rate, as Keras's property: a schedule's value at the steps taken. A float that
        also answers Keras 3's variable idioms, `.assign(value)` and `.numpy()`."""
        lr = self._learning_rate
        return LearningRate(float(lr(self.step_count)) if self.scheduled else lr, self)

    @learning_rate.setter
    def learning_rate(self, value):
        if self.scheduled:
            raise TypeError(
                "This optimizer was created with a `LearningRateSchedule` object as its "
                "`learning_rate` constructor argument, hence its learning rate is not settable."
            )
        self._learning_rate = _finite(value, "learning_rate")

    def current_learning_rate(self) -> float:
        return self.learning_rate

    def learning_rates(self, steps: int):
        """The rates of the next `steps` steps (a schedule's values), or None when they are all
        current_learning_rate()."""
        if self.scheduled:
            return [float(self._learning_rate(self.step_count + i)) for i in range(steps)]
        return None

    def spec(self) -> tuple:
        """(kind, hyper-parameters with the options that are set) for the optimizer pass."""
        extra = {}
        if self.ema["use_ema"]:
            extra = {"ema_momentum": self.ema["ema_momentum"], "ema_overwrite_frequency": self.ema_overwrite_frequency}
        if self.gradient_accumulation_steps:
            extra["gradient_accumulation_steps"] = self.gradient_accumulation_steps
        return self.kind, {**self.hyper, **{k: float(v) for k, v in self.options.items() if v}, **extra}

    @property
    def use_ema(self) -> bool:
        return self.ema["use_ema"]

    @property
    def ema_overwrite_frequency(self) -> int:
        """Steps between the weights taking their moving average (0: only at the end of fit)."""
        return int(self.ema["ema_overwrite_frequency"] or 0)

    def get_config(self) -> dict:
        lr = self._learning_rate
        return {
            "name": self.name,
            "learning_rate": schedules.serialize(lr) if self.scheduled else lr,
            **self.options,
            **self.ema,
            # only when set: tf-keras's optimizers, which read these configs from .h5 files, refuse the key
            **({"gradient_accumulation_steps": n} if (n := self.gradient_accumulation_steps) else {}),
            **self.hyper,
        }

    def __repr__(self):
        config = {**self.get_config(), "learning_rate": self._learning_rate}
        args = ", ".join(f"{k}={v!r}" for k, v in config.items() if k != "name" and v is not None)
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    kind = "sgd"

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **options):
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        super().__init__(learning_rate, {"momentum": float(momentum), "nesterov": bool(nesterov)}, **options)


class Adam(Optimizer):
    kind = "adam"

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **options):
        hyper = {"beta_1": float(beta_1), "beta_2": float(beta_2), "epsilon": float(epsilon), "amsgrad": bool(amsgrad)}
        super().__init__(learning_rate, hyper, **options)


class AdamW(Adam):
    """Keras's AdamW is Adam with a weight decay (0.004 unless given), which it requires."""

    def __init__(
        self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **options
    ):
        if weight_decay is None:
            raise ValueError("Argument `weight_decay` must be a float. Received: weight_decay=None")
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay=weight_decay, **options)


class RMSprop(Optimizer):
    kind = "rmsprop"

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **options):
        hyper = {"rho": float(rho), "momentum": float(momentum), "epsilon": float(epsilon), "centered": bool(centered)}
        super().__init__(learning_rate, hyper, **options)


class Adagrad(Optimizer):
    kind = "adagrad"

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, **options):
        hyper = {"initial_accumulator_value": float(initial_accumulator_value), "epsilon": float(epsilon)}
        super().__init__(learning_rate, hyper, **options)


class Adadelta(Optimizer):
    kind = "adadelta"

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, **options):
        super().__init__(learning_rate, {"rho": float(rho), "epsilon": float(epsilon)}, **options)


class Adamax(Optimizer):
    kind = "adamax"

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **options):
        hyper = {"beta_1": float(beta_1), "beta_2": float(beta_2), "epsilon": float(epsilon)}
        super().__init__(learning_rate, hyper, **options)


class Nadam(Optimizer):
    kind = "nadam"

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, **options):
        hyper = {"beta_1": float(beta_1), "beta_2": float(beta_2), "epsilon": float(epsilon)}
        super().__init__(learning_rate, hyper, **options)


class Lion(Optimizer):
    """Keras 3's Lion: the sign of an interpolated momentum, one slot."""

    kind = "lion"

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.99, **options):
        if not 0 < beta_1 <= 1:
            raise ValueError(
                f"Argument `beta_1` must be in the [0, 1] range. Otherwise, the optimizer degenerates "
                f"to SignSGD. Received: beta_1={beta_1}."
            )
        super().__init__(learning_rate, {"beta_1": float(beta_1), "beta_2": float(beta_2)}, **options)


class Ftrl(Optimizer):
    """Keras 3's Ftrl (Follow The Regularized Leader): two slots, accumulator and linear."""

    kind = "ftrl"

    def __init__(
        self,
        learning_rate=0.001,
        learning_rate_power=-0.5,
        initial_accumulator_value=0.1,
        l1_regularization_strength=0.0,
        l2_regularization_strength=0.0,
        l2_shrinkage_regularization_strength=0.0,
        beta=0.0,
        **options,
    ):
        hyper = {
            "learning_rate_power": float(learning_rate_power),
            "initial_accumulator_value": float(initial_accumulator_value),
            "l1_regularization_strength": float(l1_regularization_strength),
            "l2_regularization_strength": float(l2_regularization_strength),
            "l2_shrinkage_regularization_strength": float(l2_shrinkage_regularization_strength),
            "beta": float(beta),
        }
        if hyper["learning_rate_power"] > 0:
            raise ValueError(
                "`learning_rate_power` needs to be negative or zero. Received: "
                f"learning_rate_power={learning_rate_power}."
            )
        for key in ("initial_accumulator_value", *(k for k in hyper if k.endswith("_strength"))):
            if hyper[key] < 0:
                raise ValueError(f"`{key}` needs to be positive or zero. Received: {key}={hyper[key]}.")
        super().__init__(learning_rate, hyper, **options)


ALL = {c.__name__.lower(): c for c in (SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta, Adamax, Nadam, Lion, Ftrl)}
# Keras arguments with no effect on the update here
_IGNORED_KEYS = {"is_legacy_optimizer", "jit_compile"}
_EMA_KEYS = {"use_ema", "ema_momentum", "ema_overwrite_frequency"}
# Keras config keys this runtime runs only at their default value
_DEFAULT_ONLY = {"loss_scale_factor": None, "decay": 0.0}


def _accumulation(steps, clipping) -> int | None:
    """Keras's gradient_accumulation_steps, checked as Keras checks it: the weights update every
    `steps` steps, with the mean of their gradients."""
    if not steps:
        return None
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(
            f"`gradient_accumulation_steps` must be an integer >= 2. Received: gradient_accumulation_steps={steps}"
        )
    clipped = [k for k, v in clipping.items() if v is not None]
    if clipped:  # Keras clips the accumulated mean, which the clipping nodes before the update do not see
        raise ValueError(f"gradient_accumulation_steps with {clipped[0]} is not supported yet")
    return steps


def _ema_options(options) -> dict:
    """Keras's use_ema, ema_momentum and ema_overwrite_frequency, checked as Keras checks them."""
    use_ema = bool(options.get("use_ema", False))
    momentum = options.get("ema_momentum", 0.99)
    frequency = options.get("ema_overwrite_frequency")
    if use_ema:
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum <= 1:
            raise ValueError(f"`ema_momentum` must be in the range [0, 1]. Received: ema_momentum={momentum}")
        if frequency and (isinstance(frequency, bool) or not isinstance(frequency, int) or frequency < 1):
            raise ValueError(
                "`ema_overwrite_frequency` must be an integer >= 1 or None. "
                f"Received: ema_overwrite_frequency={frequency}"
            )
    return {"use_ema": use_ema, "ema_momentum": momentum, "ema_overwrite_frequency": frequency}


def _class(name) -> type:
    cls = ALL.get(str(name).lower())
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(ALL)}")
    return cls


def get(identifier) -> Optimizer:
    """An optimizer from a name ("adam"), a Keras config dict (learning-rate schedules included),
    or an Optimizer (returned as is)."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        return _class(identifier)()
    if isinstance(identifier, dict):
        cls = _class(identifier.get("class_name", identifier.get("name", "")))
        config = dict(identifier.get("config", identifier))
        return cls(**{k: v for k, v in config.items() if k != "class_name"})
    raise ValueError(f"cannot interpret {identifier!r} as an optimizer")


__all__ = ["Optimizer", "get", "schedules", *(c.__name__ for c in ALL.values())]


def _finite(value, name) -> float:
    """A hyper-parameter as a float: a number, and finite (a NaN rate would train to NaN silently)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number
