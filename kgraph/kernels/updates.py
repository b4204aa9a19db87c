"""The optimizers' update maths, one record per optimizer (Keras 3's formulas), written once for
the CPU and CUDA kernels alike.

A record, looked up by the update op's name (`UPDATES["adam_update"]`), has
- `slots`: the IR's slot names the element function takes, in its argument order (the IR op in
  ir/ops/optim.py declares Keras's defaults and which slots a configuration has; a slot it does
  not have is passed as 0 and its result dropped);
- `scalars(lr, step, **hyper)`: the per-step values of the element function, in float64, computed
  once a step (inside the compiled CPU step, on the host for CUDA), with the hyper-parameters as
  keyword arguments;
- `element(w, g, *slots, *scalars)`: one weight's update, returning (w, *slots).

The driver (a generated loop per target) applies Keras's generic parts around the element: the
weight decay first (w -= w * weight_decay * lr) and the gradient scale (global-norm clipping)
as each gradient is read, and casts the scalars to the weights' dtype."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable

from .maths import clip, jitable, maximum, sign


@dataclass(frozen=True)
class Update:
    slots: tuple
    scalars: Callable
    element: Callable

    @property
    def name(self) -> str:
        return self.element.__name__

    @property
    def slot_params(self) -> list:
        """The element's names for its slots (the generated kernels' argument names)."""
        return list(inspect.signature(self.element).parameters)[2 : 2 + len(self.slots)]

    @property
    def scalar_params(self) -> list:
        """The element's names for the values `scalars` returns, in that order."""
        return list(inspect.signature(self.element).parameters)[2 + len(self.slots) :]


UPDATES: dict[str, Update] = {}


def update(name, slots):
    """Register `element` with its per-step `scalars` as the kernel of IR update op `name`."""

    def wrap(scalars):
        def with_element(element):
            UPDATES[name] = Update(tuple(slots), scalars, element)
            return element

        return with_element

    return wrap


# ---------------------------------------------------------------- SGD


@jitable
def sgd_scalars(lr, step, momentum, nesterov):
    return lr, momentum, nesterov


@update("sgd_update", ["momentum"])(sgd_scalars)
@jitable
def sgd(w, g, m, lr, mu, nesterov):
    """m = mu*m - lr*g; w += m (nesterov: w += mu*m - lr*g); without momentum w -= lr*g."""
    if mu == 0:
        return w - lr * g, m
    m = mu * m - lr * g
    return w + ((mu * m - lr * g) if nesterov else m), m


# ---------------------------------------------------------------- Adam (and AdamW)


@jitable
def adam_scalars(lr, step, beta_1, beta_2, epsilon, amsgrad):
    """The bias corrections folded into the step size alpha."""
    return lr * math.sqrt(1 - beta_2**step) / (1 - beta_1**step), 1 - beta_1, 1 - beta_2, epsilon, amsgrad


@update("adam_update", ["m", "v", "v_hat"])(adam_scalars)
@jitable
def adam(w, g, m, v, v_hat, alpha, one_minus_beta_1, one_minus_beta_2, epsilon, amsgrad):
    """amsgrad divides by v_hat, the running maximum of v."""
    m = m + (g - m) * one_minus_beta_1
    v = v + (g * g - v) * one_minus_beta_2
    if amsgrad:
        v_hat = maximum(v_hat, v)
        return w - alpha * m / (math.sqrt(v_hat) + epsilon), m, v, v_hat
    return w - alpha * m / (math.sqrt(v) + epsilon), m, v, v_hat


# ---------------------------------------------------------------- RMSprop


@jitable
def rmsprop_scalars(lr, step, rho, momentum, epsilon, centered):
    return lr, rho, 1 - rho, momentum, epsilon, centered


@update("rmsprop_update", ["velocity", "average_gradient", "momentum"])(rmsprop_scalars)
@jitable
def rmsprop(w, g, v, average, mom, lr, rho, one_minus_rho, momentum, epsilon, centered):
    """v: the moving average of g^2; centered also keeps g's (average) and divides by the variance."""
    v = rho * v + one_minus_rho * g * g
    denominator = v + epsilon
    if centered:
        average = rho * average + one_minus_rho * g
        denominator = v - average * average + epsilon
    increment = lr * g / math.sqrt(denominator)
    if momentum > 0:
        mom = momentum * mom + increment
        return w - mom, v, average, mom
    return w - increment, v, average, mom


# ---------------------------------------------------------------- Adagrad, Adadelta


@jitable
def adagrad_scalars(lr, step, initial_accumulator_value, epsilon):
    return lr, epsilon


@update("adagrad_update", ["accumulator"])(adagrad_scalars)
@jitable
def adagrad(w, g, accumulator, lr, epsilon):
    accumulator = accumulator + g * g
    return w - lr * g / math.sqrt(accumulator + epsilon), accumulator


@jitable
def adadelta_scalars(lr, step, rho, epsilon):
    return lr, rho, 1 - rho, epsilon


@update("adadelta_update", ["accumulated_grad", "accumulated_delta_var"])(adadelta_scalars)
@jitable
def adadelta(w, g, acc_g, acc_dx, lr, rho, one_minus_rho, epsilon):
    """delta = -sqrt(acc_dx + eps) * g / sqrt(acc_g + eps), acc_g updated before and acc_dx after."""
    acc_g = rho * acc_g + one_minus_rho * g * g
    delta = -(math.sqrt(acc_dx + epsilon) * g) / math.sqrt(acc_g + epsilon)
    acc_dx = rho * acc_dx + one_minus_rho * delta * delta
    return w + lr * delta, acc_g, acc_dx


# ---------------------------------------------------------------- Adamax, Nadam


@jitable
def adamax_scalars(lr, step, beta_1, beta_2, epsilon):
    return lr, 1 - beta_1, beta_2, 1 - beta_1**step, epsilon


@update("adamax_update", ["m", "u"])(adamax_scalars)
@jitable
def adamax(w, g, m, u, lr, one_minus_beta_1, beta_2, correction, epsilon):
    """u = max(beta_2*u, |g|); w -= lr*m / ((1 - beta_1^t) * (u + epsilon))."""
    m = m + (g - m) * one_minus_beta_1
    u = maximum(beta_2 * u, abs(g))
    return w - lr * m / (correction * (u + epsilon)), m, u


@jitable
def nadam_momentum_product(beta_1, step):
    """Keras Nadam's u_product after `step`: the product over s = 1..step of
    beta_1 * (1 - 0.5 * 0.96**s). Past s = 1000 the bracket is 1 in float64: the loop stops there."""
    p = 1.0
    for s in range(1, min(int(step), 1000) + 1):
        p *= 1 - 0.5 * 0.96**s
    return p * beta_1**step


@jitable
def nadam_scalars(lr, step, beta_1, beta_2, epsilon):
    """Nadam's momentum schedule u_t = beta_1 * (1 - 0.5 * 0.96**t): the factors on m and g, and v's
    bias correction."""
    u_t, u_next = beta_1 * (1 - 0.5 * 0.96**step), beta_1 * (1 - 0.5 * 0.96 ** (step + 1))
    u_product = nadam_momentum_product(beta_1, step)
    return (
        lr,
        u_next / (1 - u_product * u_next),
        (1 - u_t) / (1 - u_product),
        1 - beta_1,
        1 - beta_2,
        1 - beta_2**step,
        epsilon,
    )


@update("nadam_update", ["m", "v"])(nadam_scalars)
@jitable
def nadam(w, g, m, v, lr, c_m, c_g, one_minus_beta_1, one_minus_beta_2, v_correction, epsilon):
    m = m + (g - m) * one_minus_beta_1
    v = v + (g * g - v) * one_minus_beta_2
    return w - (c_m * m + c_g * g) * lr / (math.sqrt(v / v_correction) + epsilon), m, v


# ---------------------------------------------------------------- Lion


@jitable
def lion_scalars(lr, step, beta_1, beta_2):
    return lr, beta_1, 1 - beta_1, beta_2, 1 - beta_2


@update("lion_update", ["momentum"])(lion_scalars)
@jitable
def lion(w, g, m, lr, beta_1, one_minus_beta_1, beta_2, one_minus_beta_2):
    """w -= lr * sign(beta_1*m + (1 - beta_1)*g); then m = beta_2*m + (1 - beta_2)*g."""
    w = w - lr * sign(m * beta_1 + g * one_minus_beta_1)
    return w, m * beta_2 + g * one_minus_beta_2


# ---------------------------------------------------------------- Ftrl


@jitable
def ftrl_scalars(
    lr,
    step,
    learning_rate_power,
    initial_accumulator_value,
    l1_regularization_strength,
    l2_regularization_strength,
    l2_shrinkage_regularization_strength,
    beta,
):
    return (
        lr,
        -learning_rate_power,
        l1_regularization_strength,
        2 * l2_regularization_strength + beta / lr,
        2 * l2_shrinkage_regularization_strength,
    )


@update("ftrl_update", ["accumulator", "linear"])(ftrl_scalars)
@jitable
def ftrl(w, g, accumulator, linear, lr, power, l1, two_l2, two_l2_shrinkage):
    """The weight is solved from the accumulated linear term: (clip(linear, -l1, l1) - linear) /
    (accumulator^power / lr + 2*l2 + beta/lr), power = -learning_rate_power."""
    new_accumulator = accumulator + g * g
    linear = linear + (g + two_l2_shrinkage * w - (new_accumulator**power - accumulator**power) / lr * w)
    quadratic = new_accumulator**power / lr + two_l2
    return (clip(linear, -l1, l1) - linear) / quadratic, new_accumulator, linear


# ---------------------------------------------------------------- Keras's use_ema, after any update


@jitable
def moving_average_scalars(step, momentum, overwrite_frequency, from_weights):
    """This step's momentum of the weights' moving average and 1 - momentum, whether the weights
    then take the average (1.0 every `overwrite_frequency` steps; 0 never), and whether the average
    starts from the weights before the step (1.0 on the first step of tf-keras's, which decays
    from them; Keras 3's momentum is 0 on the first step instead, so it starts as the updated
    weights)."""
    first = step == 1
    if not from_weights and first:
        momentum = 0.0
    overwrite = overwrite_frequency > 0 and step % overwrite_frequency == 0
    return momentum, 1.0 - momentum, (1.0 if overwrite else 0.0), (1.0 if from_weights and first else 0.0)


@jitable
def moving_average(w, average, momentum, one_minus_momentum, overwrite):
    """average = momentum*average + (1-momentum)*w of the updated weight; returns (w, average)."""
    average = momentum * average + one_minus_momentum * w
    return (average if overwrite else w), average


# ---------------------------------------------------------------- Keras's gradient_accumulation_steps


@jitable
def accumulation_scalars(step, steps):
    """Whether micro-step `step` (1-based) applies the update (1.0 every `steps` steps, else 0.0,
    when the gradient is only added to its sum), and the count the sum is divided by."""
    return (1.0 if step % steps == 0 else 0.0), float(steps)
