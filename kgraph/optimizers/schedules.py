"""Keras 3's learning-rate schedules: arguments, config names and formulas as Keras's. The runtime
evaluates one in Python at the optimizer's iteration count (0 for the first step) and passes the
rate to the compiled step, so no schedule is compiled."""

from __future__ import annotations

import math

import numpy as np


class LearningRateSchedule:
    def __call__(self, step) -> float:
        raise NotImplementedError

    def _keep(self, args: dict):
        """Store the constructor's arguments: they are the attributes and the config."""
        args = {k: v for k, v in args.items() if k not in ("self", "__class__")}
        if "decay_steps" in args and args["decay_steps"] <= 0:
            raise ValueError(f"Argument `decay_steps` must be > 0. Received: decay_steps={args['decay_steps']}")
        self._config = args
        self.__dict__.update(args)

    def get_config(self) -> dict:
        return dict(self._config)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._config.items())})"


class ExponentialDecay(LearningRateSchedule):
    """initial_learning_rate * decay_rate ** (step / decay_steps), the exponent floored if staircase."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="ExponentialDecay"):
        self._keep(locals())

    def __call__(self, step):
        p = step / self.decay_steps
        return self.initial_learning_rate * self.decay_rate ** (math.floor(p) if self.staircase else p)


class InverseTimeDecay(LearningRateSchedule):
    """initial_learning_rate / (1 + decay_rate * step / decay_steps), the quotient floored if staircase."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="InverseTimeDecay"):
        self._keep(locals())

    def __call__(self, step):
        p = step / self.decay_steps
        return self.initial_learning_rate / (1 + self.decay_rate * (math.floor(p) if self.staircase else p))


class PiecewiseConstantDecay(LearningRateSchedule):
    """values[0] while step <= boundaries[0], values[i] while step <= boundaries[i], then values[-1]."""

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        if len(boundaries) != len(values) - 1:
            raise ValueError(
                f"The length of boundaries should be 1 less than the length of values. Received: "
                f"boundaries={boundaries} of length {len(boundaries)}, and values={values} of length "
                f"{len(values)}."
            )
        self._keep(locals())

    def __call__(self, step):
        return next((v for b, v in zip(self.boundaries, self.values) if step <= b), self.values[-1])


class PolynomialDecay(LearningRateSchedule):
    """(initial - end) * (1 - step / decay_steps) ** power + end, the step held at decay_steps;
    with cycle, decay_steps grows to the first multiple of itself not below the step instead."""

    def __init__(
        self,
        initial_learning_rate,
        decay_steps,
        end_learning_rate=0.0001,
        power=1.0,
        cycle=False,
        name="PolynomialDecay",
    ):
        self._keep(locals())

    def __call__(self, step):
        decay_steps = self.decay_steps
        if self.cycle:
            decay_steps *= math.ceil(step / decay_steps) if step else 1
        else:
            step = min(step, decay_steps)
        span = self.initial_learning_rate - self.end_learning_rate
        return span * (1 - step / decay_steps) ** self.power + self.end_learning_rate


class CosineDecay(LearningRateSchedule):
    """With warmup_target: linear from initial_learning_rate to warmup_target over warmup_steps, then a
    cosine from there to warmup_target * alpha over decay_steps; without it, the cosine alone starts at
    initial_learning_rate."""

    def __init__(
        self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay", warmup_target=None, warmup_steps=0
    ):
        self._keep(locals())

    def __call__(self, step):
        start, warmup = self.initial_learning_rate, 0
        if self.warmup_target is not None:
            start, warmup = self.warmup_target, self.warmup_steps
        step = min(step, self.decay_steps + warmup)
        if step < warmup:
            return (self.warmup_target - self.initial_learning_rate) * step / warmup + self.initial_learning_rate
        cosine = 0.5 * (1 + math.cos(math.pi * (step - warmup) / self.decay_steps))
        return start * ((1 - self.alpha) * cosine + self.alpha)


class CosineDecayRestarts(LearningRateSchedule):
    """SGDR: a cosine from initial_learning_rate down to alpha times it over first_decay_steps, then
    again over periods t_mul times longer each, from a rate m_mul times lower each; in float32, as
    Keras computes it (the restart's index is a floor of a logarithm)."""

    def __init__(self, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0, name="SGDRDecay"):
        if first_decay_steps <= 0:
            raise ValueError(
                f"Argument `first_decay_steps` must be > 0. Received: first_decay_steps={first_decay_steps}"
            )
        self._keep(locals())

    def __call__(self, step):
        f32 = np.float32
        fraction = f32(step) / f32(self.first_decay_steps)
        t_mul, m_mul, alpha = f32(self.t_mul), f32(self.m_mul), f32(self.alpha)
        if t_mul == 1:
            restart = np.floor(fraction)
            fraction = fraction - restart
        else:
            restart = np.floor(np.log(f32(1) - fraction * (f32(1) - t_mul)) / np.log(t_mul))
            done = (f32(1) - t_mul**restart) / (f32(1) - t_mul)
            fraction = (fraction - done) / t_mul**restart
        cosine = f32(0.5) * m_mul**restart * (f32(1) + np.cos(f32(math.pi) * fraction))
        return float(f32(self.initial_learning_rate) * ((f32(1) - alpha) * cosine + alpha))


ALL = {
    c.__name__: c
    for c in (
        ExponentialDecay,
        InverseTimeDecay,
        PiecewiseConstantDecay,
        PolynomialDecay,
        CosineDecay,
        CosineDecayRestarts,
    )
}


def serialize(schedule: LearningRateSchedule) -> dict:
    """The dict Keras 3 writes for a schedule (keras.optimizers.schedules.serialize)."""
    return {
        "module": "keras.optimizers.schedules",
        "class_name": type(schedule).__name__,
        "config": schedule.get_config(),
        "registered_name": None,
    }


def deserialize(config: dict) -> LearningRateSchedule:
    """A schedule from a Keras config: {"class_name": ..., "config": {...}}."""
    name = config.get("class_name")
    if name not in ALL:
        raise ValueError(f"unknown learning-rate schedule {name!r}; known: {', '.join(ALL)}")
    return ALL[name](**config.get("config", {}))
