"""Optimizer updates: each writes its parameter (and its slots) in place, with
Keras 3's formulas. Operands: (w, g, *slots, lr[, step]); hyper-parameters are attrs."""
from __future__ import annotations

import numpy as np

from .registry import OpDef, Pattern, register


def _update_type(types, attrs):
    w, g = types[0], types[1]
    if w.shape != g.shape:
        raise ValueError(f"gradient {g} does not match parameter {w}")
    return w


def sgd_update(w, g, *rest, momentum=0.0, nesterov=False):
    """Keras SGD: m = momentum*m - lr*g; w += m (nesterov: w += momentum*m - lr*g)."""
    lr = w.dtype.type(rest[-1])
    if momentum:
        m = rest[0]
        m *= w.dtype.type(momentum)
        m -= lr * g
        if nesterov:
            w += w.dtype.type(momentum) * m - lr * g
        else:
            w += m
    else:
        w -= lr * g
    return w


def adam_update(w, g, m, v, lr, step, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
    """Keras Adam: bias correction folded into the step size alpha."""
    t = float(step)
    alpha = w.dtype.type(float(lr) * np.sqrt(1 - beta_2 ** t) / (1 - beta_1 ** t))
    m += (g - m) * w.dtype.type(1 - beta_1)
    v += (g * g - v) * w.dtype.type(1 - beta_2)
    w -= alpha * m / (np.sqrt(v) + w.dtype.type(epsilon))
    return w


def rmsprop_update(w, g, v, *rest, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False):
    """Keras RMSprop; slots: velocity[, average gradient if centered][, momentum if momentum > 0]."""
    lr = w.dtype.type(rest[-1])
    slots = list(rest[:-1])
    f = w.dtype.type
    v *= f(rho)
    v += f(1 - rho) * g * g
    if centered:
        ag = slots.pop(0)
        ag *= f(rho)
        ag += f(1 - rho) * g
        denominator = v - ag * ag + f(epsilon)
    else:
        denominator = v + f(epsilon)
    increment = lr * g / np.sqrt(denominator)
    if momentum > 0:
        mom = slots.pop(0)
        mom *= f(momentum)
        mom += increment
        w -= mom
    else:
        w -= increment
    return w


for _name, _fn in [("sgd_update", sgd_update), ("adam_update", adam_update), ("rmsprop_update", rmsprop_update)]:
    register(OpDef(_name, Pattern.UPDATE, _update_type, _fn, None, doc=_fn.__doc__))
