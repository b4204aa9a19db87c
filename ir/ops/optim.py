"""Optimizer updates: each writes its parameter (and its slots) in place, with Keras 3's formulas.

Operands: (w, g, *slots, lr, step, gscale); hyper-parameters are attrs. The three trailing
scalars are the same for every parameter, so one fused loop can update them all: `lr` is this
step's learning rate, `step` the 1-based iteration and `gscale` a factor on every gradient
(global-norm clipping needs one scalar over all gradients; it is 1 otherwise). Every update also
takes Keras's generic `weight_decay`, applied first as Keras does: w -= w * weight_decay * lr,
its `use_ema` after the update (attrs ema_momentum, ema_overwrite_frequency; the average is a
slot after the optimizer's own) and its gradient_accumulation_steps (the accumulator the last
slot: `step` counts micro-steps, the update runs on every n-th with the mean gradient, and the
optimizer's own step count, the average's too, counts updates, as Keras's `iterations`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .registry import OpDef, Pattern, Role, register

SHARED = ("lr", "step", "gscale")


@dataclass(frozen=True)
class UpdateRule:
    """What the optimizer pass needs to know of an update op."""

    defaults: dict  # hyper-parameters with Keras's defaults
    slots: Callable[[dict], dict]  # full hyper-parameters -> {slot name: initial value}, in operand order


UPDATES: dict[str, UpdateRule] = {}


def _update_type(types, attrs):
    w, g = types[0], types[1]
    if w.shape != g.shape:
        raise ValueError(f"gradient {g} does not match parameter {w}")
    return w


def _update(name, defaults, slots):
    """Register `rule(w, g, *slots, lr, t, **hyper)` as update op `name`; the shared part
    (weight decay, gradient scale, defaults) is done here once for all rules."""

    def wrap(rule):
        def forward(w, g, *operands, weight_decay=0.0, **hyper):
            *slot_arrays, lr, step, gscale = operands
            f = w.dtype.type
            ema_momentum, ema_frequency = hyper.pop("ema_momentum", None), hyper.pop("ema_overwrite_frequency", 0)
            from_weights, before = hyper.pop("ema_from_weights", False), w.copy()
            steps = hyper.pop("gradient_accumulation_steps", None)
            if steps:  # the accumulator is the last slot; the update and the average count whole updates
                *slot_arrays, accumulator = slot_arrays
                update, step = step % steps == 0, (step - 1) // steps + 1
                if not update:
                    accumulator += g
                else:
                    g = (g + accumulator) / f(steps)
                    accumulator[...] = 0
            if ema_momentum is not None:  # the average is the last slot left
                *slot_arrays, average = slot_arrays
            if not steps or update:
                if weight_decay:
                    w -= w * f(weight_decay) * f(lr)
                rule(w, g * f(gscale), *slot_arrays, lr=float(lr), t=float(step), **{**defaults, **hyper})
            if ema_momentum is not None:
                if from_weights and step == 1:  # tf-keras's average starts from the weights
                    average[...] = before
                moving_average(w, average, float(step), ema_momentum, ema_frequency, from_weights)
            return w

        register(
            OpDef(
                name,
                Pattern.UPDATE,
                _update_type,
                forward,
                None,
                doc=rule.__doc__,
                roles=frozenset({Role.OPTIMIZER_UPDATE}),
            )
        )
        UPDATES[name] = UpdateRule(dict(defaults), slots)
        return rule

    return wrap


def moving_average(w, average, step, momentum, overwrite_frequency, from_weights=False):
    """Keras's use_ema, after the update: average = momentum*average + (1-momentum)*w, with
    momentum 0 on the first step in Keras 3 (the average starts as the updated weights; tf-keras's,
    from_weights, starts from the weights before it and decays from the first step); every
    `overwrite_frequency` steps the weights take the average."""
    f = w.dtype.type
    momentum = momentum if step != 1 or from_weights else 0.0
    average[...] = f(momentum) * average + (f(1) - f(momentum)) * w  # 1 - momentum in float32, as Keras
    if overwrite_frequency and step % overwrite_frequency == 0:
        w[...] = average


def _zeros(*names):
    return dict.fromkeys(names, 0.0)


@_update("sgd_update", {"momentum": 0.0, "nesterov": False}, lambda h: {"momentum": 0.0} if h["momentum"] else {})
def sgd(w, g, *m, lr, t, momentum, nesterov):
    """Keras SGD: m = momentum*m - lr*g; w += m (nesterov: w += momentum*m - lr*g)."""
    f = w.dtype.type
    if not momentum:
        w -= f(lr) * g
        return
    (m,) = m
    m *= f(momentum)
    m -= f(lr) * g
    w += (f(momentum) * m - f(lr) * g) if nesterov else m


@_update(
    "adam_update",
    {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False},
    lambda h: _zeros("m", "v", *(["v_hat"] if h["amsgrad"] else [])),
)
def adam(w, g, m, v, *v_hat, lr, t, beta_1, beta_2, epsilon, amsgrad):
    """Keras Adam (and AdamW, with weight_decay): bias correction folded into the step size alpha;
    amsgrad divides by the running maximum of v."""
    f = w.dtype.type
    alpha = f(lr * math.sqrt(1 - beta_2**t) / (1 - beta_1**t))
    m += (g - m) * f(1 - beta_1)
    v += (g * g - v) * f(1 - beta_2)
    if amsgrad:
        np.maximum(v_hat[0], v, out=v_hat[0])
        v = v_hat[0]
    w -= alpha * m / (np.sqrt(v) + f(epsilon))


@_update(
    "rmsprop_update",
    {"rho": 0.9, "momentum": 0.0, "epsilon": 1e-7, "centered": False},
    lambda h: _zeros(
        "velocity", *(["average_gradient"] if h["centered"] else []), *(["momentum"] if h["momentum"] else [])
    ),
)
def rmsprop(w, g, v, *slots, lr, t, rho, momentum, epsilon, centered):
    """Keras RMSprop; slots: velocity[, average gradient if centered][, momentum if momentum > 0]."""
    f = w.dtype.type
    slots = list(slots)
    v *= f(rho)
    v += f(1 - rho) * g * g
    if centered:
        ag = slots.pop(0)
        ag *= f(rho)
        ag += f(1 - rho) * g
        denominator = v - ag * ag + f(epsilon)
    else:
        denominator = v + f(epsilon)
    increment = f(lr) * g / np.sqrt(denominator)
    if momentum > 0:
        mom = slots.pop(0)
        mom *= f(momentum)
        mom += increment
        w -= mom
    else:
        w -= increment


@_update(
    "adagrad_update",
    {"initial_accumulator_value": 0.1, "epsilon": 1e-7},
    lambda h: {"accumulator": h["initial_accumulator_value"]},
)
def adagrad(w, g, acc, *, lr, t, initial_accumulator_value, epsilon):
    """Keras Adagrad: acc += g^2; w -= lr*g / sqrt(acc + epsilon)."""
    f = w.dtype.type
    acc += g * g
    w -= f(lr) * g / np.sqrt(acc + f(epsilon))


@_update(
    "adadelta_update", {"rho": 0.95, "epsilon": 1e-7}, lambda h: _zeros("accumulated_grad", "accumulated_delta_var")
)
def adadelta(w, g, acc_g, acc_dx, *, lr, t, rho, epsilon):
    """Keras Adadelta: delta = -sqrt(acc_dx + eps) * g / sqrt(acc_g + eps), with acc_g updated first
    and acc_dx after; w += lr*delta."""
    f = w.dtype.type
    acc_g *= f(rho)
    acc_g += f(1 - rho) * g * g
    delta = -(np.sqrt(acc_dx + f(epsilon)) * g) / np.sqrt(acc_g + f(epsilon))
    acc_dx *= f(rho)
    acc_dx += f(1 - rho) * delta * delta
    w += f(lr) * delta


@_update("adamax_update", {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}, lambda h: _zeros("m", "u"))
def adamax(w, g, m, u, *, lr, t, beta_1, beta_2, epsilon):
    """Keras Adamax: u = max(beta_2*u, |g|); w -= lr*m / ((1 - beta_1^t) * (u + epsilon))."""
    f = w.dtype.type
    m += (g - m) * f(1 - beta_1)
    np.maximum(f(beta_2) * u, np.abs(g), out=u)
    w -= f(lr) * m / (f(1 - beta_1**t) * (u + f(epsilon)))


def nadam_momentum_product(beta_1, t):
    """Keras Nadam's u_product after step t: the product over s = 1..t of
    beta_1 * (1 - 0.5 * 0.96**s). Past s = 1000 the bracket is 1 in float64, so the loop stops there
    (cpu_kernels has a copy)."""
    p = 1.0
    for s in range(1, min(int(t), 1000) + 1):
        p *= 1 - 0.5 * 0.96**s
    return p * beta_1**t


@_update("nadam_update", {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}, lambda h: _zeros("m", "v"))
def nadam(w, g, m, v, *, lr, t, beta_1, beta_2, epsilon):
    """Keras Nadam, with its momentum schedule u_t = beta_1 * (1 - 0.5 * 0.96**t)."""
    f = w.dtype.type
    u_t, u_next = beta_1 * (1 - 0.5 * 0.96**t), beta_1 * (1 - 0.5 * 0.96 ** (t + 1))
    u_product = nadam_momentum_product(beta_1, t)
    m += (g - m) * f(1 - beta_1)
    v += (g * g - v) * f(1 - beta_2)
    m_hat = f(u_next / (1 - u_product * u_next)) * m + f((1 - u_t) / (1 - u_product)) * g
    v_hat = v / f(1 - beta_2**t)
    w -= m_hat * f(lr) / (np.sqrt(v_hat) + f(epsilon))


@_update("lion_update", {"beta_1": 0.9, "beta_2": 0.99}, lambda h: _zeros("momentum"))
def lion(w, g, m, *, lr, t, beta_1, beta_2):
    """Keras Lion: w -= lr * sign(beta_1*m + (1 - beta_1)*g); then m = beta_2*m + (1 - beta_2)*g."""
    f = w.dtype.type
    w -= f(lr) * np.sign(m * f(beta_1) + g * f(1 - beta_1))
    m *= f(beta_2)
    m += g * f(1 - beta_2)


@_update(
    "ftrl_update",
    {
        "learning_rate_power": -0.5,
        "initial_accumulator_value": 0.1,
        "l1_regularization_strength": 0.0,
        "l2_regularization_strength": 0.0,
        "l2_shrinkage_regularization_strength": 0.0,
        "beta": 0.0,
    },
    lambda h: {"accumulator": h["initial_accumulator_value"], "linear": 0.0},
)
def ftrl(
    w,
    g,
    accum,
    linear,
    *,
    lr,
    t,
    learning_rate_power,
    initial_accumulator_value,
    l1_regularization_strength,
    l2_regularization_strength,
    l2_shrinkage_regularization_strength,
    beta,
):
    """Keras Ftrl: the weight is solved from the accumulated linear term each step,
    w = (clip(linear, -l1, l1) - linear) / (new_accum^-p / lr + 2*l2 + beta/lr)."""
    f = w.dtype.type
    power = f(-learning_rate_power)
    new_accum = accum + g * g
    linear += g + f(2 * l2_shrinkage_regularization_strength) * w - (new_accum**power - accum**power) / f(lr) * w
    quadratic = new_accum**power / f(lr) + f(2 * l2_regularization_strength + beta / lr)
    l1 = f(l1_regularization_strength)
    w[...] = (np.clip(linear, -l1, l1) - linear) / quadratic
    accum[...] = new_accum


# ---------------------------------------------------------------- weight constraints

CONSTRAINT_EPSILON = 1e-7  # Keras's backend.epsilon()


def _constrain(w, updated, kind, axes=(), min_value=0.0, max_value=2.0, rate=1.0):
    """Keras's constraints, in place (keras/src/constraints): NonNeg clamps at 0; MaxNorm, UnitNorm
    and MinMaxNorm rescale w by its L2 norms over `axes` (kept as size-1 dims). `updated`: the
    update node that wrote w, an operand for the order only."""
    f = w.dtype.type
    if kind == "non_neg":
        np.maximum(w, f(0), out=w)
        return w
    norms = np.sqrt(np.sum(np.square(w), axis=tuple(axes), keepdims=True))
    eps = f(CONSTRAINT_EPSILON)
    if kind == "unit_norm":
        w[...] = w / (eps + norms)
        return w
    if kind == "max_norm":
        desired = np.clip(norms, f(0), f(max_value))
    else:  # min_max_norm
        desired = f(rate) * np.clip(norms, f(min_value), f(max_value)) + f(1 - rate) * norms
    w[...] = w * (desired / (eps + norms))
    return w


register(
    OpDef(
        "constrain",
        Pattern.UPDATE,
        lambda types, attrs: types[0],
        _constrain,
        None,
        doc="a weight constraint in place, after its update (operand 2): Keras's MaxNorm, NonNeg, ...",
    )
)
