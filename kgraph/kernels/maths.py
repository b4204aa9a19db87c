"""The element and row maths of every kernel, written once.

Each function is plain Python over scalars (or 1-D rows) and is registered with Numba's
`register_jitable`, so the same source runs in three places: in Python (the step's Python
twin, the CUDA simulator), inside `numba.njit` CPU kernels and inside `numba.cuda.jit` kernels.
The CPU and CUDA drivers (cpu.py, cuda.py and the generated loops) only decide which thread
computes which element.

Constants go through `like(x, value)`: a bare Python float would turn a float32 computation into
float64 (slower, and different numbers from TensorFlow's). Row sums accumulate in float64 on
every target (the rows are short: a softmax over classes).

Adding an activation: its forward `name(x, ...)` and gradient `name_grad(g, v, ...)` here (v is
the activation's output or input, as ir/ops/elementwise.py's ACTIVATIONS says), with the IR op
(shape rule, NumPy reference, VJP) in ir/ops/elementwise.py; hyper-parameters are keyword
arguments named as the op's attrs. Adding an optimizer: its element function and its per-step
scalars in updates.py."""

from __future__ import annotations

import math

import numpy as np
from numba import types
from numba.extending import overload, register_jitable

jitable = register_jitable(inline="never")
# The recurrent cells (called per unit of every step) are inlined into the CPU's row loops, so the
# loops vectorise once their activation codes are constants (kernels/rnn_rows.py). Only they are:
# inlining the activations too made the kernels' compile take minutes.
# (A new decorator per function: register_jitable pops `inline` from the options it was made with,
# so one decorator object reused inlines only the first function it decorates.)


def cell_jitable(fn):
    return register_jitable(inline="always")(fn)


SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
SQRT_HALF = 1 / math.sqrt(2.0)
INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805


def like(x, value):
    """`value` as a number of x's type."""
    return type(x)(value)


@overload(like)
def _like(x, value):
    kind = x  # the Numba type of x: compiled code casts to it

    def cast(x, value):
        return kind(value)

    return cast


# ---------------------------------------------------------------- helpers
# Numba >= 0.66 cannot compile the builtins max and min for CUDA (numba#10753); these have
# Python's semantics (the first argument wins ties and NaN comparisons).


@jitable
def maximum(a, b):
    return b if b > a else a


@jitable
def minimum(a, b):
    return b if b < a else a


@jitable
def flag(condition, x):
    """1 or 0 in x's type."""
    return like(x, 1) if condition else like(x, 0)


# ---------------------------------------------------------------- elementwise ops of the IR


@jitable
def greater(a, b):
    return flag(a > b, a)


@jitable
def greater_equal(a, b):
    return flag(a >= b, a)


@jitable
def less(a, b):
    return flag(a < b, a)


@jitable
def less_equal(a, b):
    return flag(a <= b, a)


@jitable
def equal(a, b):
    return flag(a == b, a)


@jitable
def where(c, a, b):
    return a if c != like(c, 0) else b


@jitable
def sign(x):
    return like(x, 1) if x > like(x, 0) else (like(x, -1) if x < like(x, 0) else like(x, 0))


@jitable
def clip(x, lo, hi):
    return minimum(maximum(x, like(x, lo)), like(x, hi))


@jitable
def in_range(x, lo, hi):
    return flag(x >= like(x, lo) and x <= like(x, hi), x)


@jitable
def square(x):
    return x * x


# ---------------------------------------------------------------- activations and their gradients
# name(x, ...) and name_grad(g, v, ...) = g * name'(.), v being the output or the input.


@jitable
def linear_grad(g, v):
    return g


@jitable
def relu(x):
    return maximum(x, like(x, 0))


@jitable
def relu_grad(g, y):
    return g if y > like(y, 0) else like(g, 0)


@jitable
def relu6(x):
    return minimum(maximum(x, like(x, 0)), like(x, 6))


@jitable
def relu6_grad(g, y):
    return g if (y > like(y, 0) and y < like(y, 6)) else like(g, 0)


@jitable
def leaky_relu(x, alpha=0.2):
    return x if x > like(x, 0) else x * like(x, alpha)


@jitable
def leaky_relu_grad(g, y, alpha=0.2):
    return g if y > like(y, 0) else g * like(g, alpha)


@jitable
def elu(x, alpha=1.0):
    return x if x > like(x, 0) else like(x, alpha) * math.expm1(x)


@jitable
def elu_grad(g, y, alpha=1.0):
    return g if y > like(y, 0) else g * (y + like(y, alpha))


@jitable
def selu(x):
    return like(x, SELU_SCALE) * (x if x > like(x, 0) else like(x, SELU_ALPHA) * math.expm1(x))


@jitable
def selu_grad(g, y):
    return g * like(g, SELU_SCALE) if y > like(y, 0) else g * (y + like(y, SELU_SCALE * SELU_ALPHA))


@jitable
def sigmoid(x):
    one = like(x, 1)
    return one / (one + math.exp(-x))


@jitable
def sigmoid_grad(g, y):
    return g * y * (like(y, 1) - y)


@jitable
def hard_sigmoid(x):
    return minimum(maximum(x / like(x, 6) + like(x, 0.5), like(x, 0)), like(x, 1))


@jitable
def hard_sigmoid_grad(g, y):
    return g / like(g, 6) if (y > like(y, 0) and y < like(y, 1)) else like(g, 0)


@jitable
def tanh(x):
    return math.tanh(x)


# Eigen's float32 tanh (ptanh_float, Eigen/src/Core/MathFunctionsImpl.h; also XLA's and ONNX
# Runtime's MLAS): an odd rational p(x)/q(x), degrees 13/6, exact to 4e-7 absolutely over float32,
# where tanh rounds to +-1 beyond the clamp. It is a few multiplies and one divide with no call,
# so a loop over it vectorises (math.tanh is a libm call per element), and it is what TensorFlow's
# CPU kernels compute. Only float32 takes it: float64 is the gradient checks' precision.
TANH_CLAMP = 7.90531110763549805
A1, A3, A5, A7 = 4.89352455891786e-03, 6.37261928875436e-04, 1.48572235717979e-05, 5.12229709037114e-08
A9, A11, A13 = -8.60467152213735e-11, 2.00018790482477e-13, -2.76076847742355e-16
B0, B2, B4, B6 = 4.89352518554385e-03, 2.26843463243900e-03, 1.18534705686654e-04, 1.19825839466702e-06


@jitable
def rational_tanh(x):
    """Eigen's tanh approximation; below 0.0004 tanh(x) is x to float32's precision."""
    c = like(x, TANH_CLAMP)
    y = minimum(maximum(x, -c), c)
    y2 = y * y
    p = like(x, A13) * y2 + like(x, A11)
    p = (((p * y2 + like(x, A9)) * y2 + like(x, A7)) * y2 + like(x, A5)) * y2 + like(x, A3)
    p = (p * y2 + like(x, A1)) * y
    q = ((like(x, B6) * y2 + like(x, B4)) * y2 + like(x, B2)) * y2 + like(x, B0)
    return x if abs(x) < like(x, 0.0004) else p / q


def fast_tanh(x):
    """tanh for the recurrent cells: rational_tanh on float32, math.tanh on float64 (exact)."""
    return rational_tanh(x) if isinstance(x, np.float32) else math.tanh(x)


def fast_sigmoid(x):
    """sigmoid(x) = (1 + tanh(x / 2)) / 2 through rational_tanh on float32; sigmoid on float64."""
    if isinstance(x, np.float32):
        half = like(x, 0.5)
        return half * rational_tanh(half * x) + half
    return sigmoid(x)


# Compiled code picks by the argument's Numba type (njit and cuda.jit alike); Python (the step's
# twin, the CUDA simulator) by the value's type, above.
@overload(fast_tanh)
def _fast_tanh(x):
    if x == types.float32:
        return lambda x: rational_tanh(x)
    return lambda x: math.tanh(x)


@overload(fast_sigmoid)
def _fast_sigmoid(x):
    if x == types.float32:

        def rational(x):
            half = like(x, 0.5)
            return half * rational_tanh(half * x) + half

        return rational
    return lambda x: sigmoid(x)


@jitable
def tanh_grad(g, y):
    return g * (like(y, 1) - y * y)


@jitable
def exponential(x):
    return math.exp(x)


@jitable
def exponential_grad(g, y):
    return g * y


@jitable
def softplus(x):
    return maximum(x, like(x, 0)) + math.log1p(math.exp(-abs(x)))


@jitable
def softplus_grad(g, y):
    return g * -math.expm1(-y)


@jitable
def softsign(x):
    return x / (like(x, 1) + abs(x))


@jitable
def softsign_grad(g, y):
    return g * (like(y, 1) - abs(y)) * (like(y, 1) - abs(y))


@jitable
def silu(x):
    return x * sigmoid(x)


@jitable
def silu_grad(g, x):
    s = sigmoid(x)
    return g * s * (like(x, 1) + x * (like(x, 1) - s))


@jitable
def gelu(x, approximate=False):
    half, one = like(x, 0.5), like(x, 1)
    if approximate:
        return half * x * (one + math.tanh(like(x, SQRT_2_OVER_PI) * (x + like(x, 0.044715) * x * x * x)))
    return half * x * (one + math.erf(x * like(x, SQRT_HALF)))


@jitable
def gelu_grad(g, x, approximate=False):
    half, one = like(x, 0.5), like(x, 1)
    if approximate:
        t = math.tanh(like(x, SQRT_2_OVER_PI) * (x + like(x, 0.044715) * x * x * x))
        d = half * (one + t) + half * x * (one - t * t) * like(x, SQRT_2_OVER_PI) * (
            one + like(x, 3 * 0.044715) * x * x
        )
    else:
        d = half * (one + math.erf(x * like(x, SQRT_HALF))) + x * math.exp(like(x, -0.5) * x * x) * like(
            x, INV_SQRT_2PI
        )
    return g * d


@jitable
def mish(x):
    return x * math.tanh(softplus(x))


@jitable
def mish_grad(g, x):
    t = math.tanh(softplus(x))
    return g * (t + x * sigmoid(x) * (like(x, 1) - t * t))


# Keras 3's newer activations, at their default parameters: each with its gradient from the input


@jitable
def hard_silu(x):
    return x * hard_sigmoid(x)


@jitable
def hard_silu_grad(g, x):
    inner = like(x, 1 / 6) if (x > like(x, -3) and x < like(x, 3)) else like(x, 0)
    return g * (hard_sigmoid(x) + x * inner)


@jitable
def celu(x, alpha=1.0):
    zero = like(x, 0)
    return maximum(x, zero) + like(x, alpha) * math.expm1(minimum(x, zero) / like(x, alpha))


@jitable
def celu_grad(g, x, alpha=1.0):
    return g if x > like(x, 0) else g * math.exp(x / like(x, alpha))


@jitable
def hard_tanh(x):
    return minimum(maximum(x, like(x, -1)), like(x, 1))


@jitable
def hard_tanh_grad(g, x):
    return g if (x > like(x, -1) and x < like(x, 1)) else like(g, 0)


@jitable
def log_sigmoid(x):
    return -softplus(-x)


@jitable
def log_sigmoid_grad(g, x):
    return g * sigmoid(-x)


@jitable
def squareplus(x, smoothing=4.0):  # Keras's `b`
    return (x + math.sqrt(x * x + like(x, smoothing))) / like(x, 2)


@jitable
def squareplus_grad(g, x, smoothing=4.0):
    return g * (like(x, 1) + x / math.sqrt(x * x + like(x, smoothing))) / like(x, 2)


@jitable
def sparse_plus(x):
    if x <= like(x, -1):
        return like(x, 0)
    if x < like(x, 1):
        return (x + like(x, 1)) * (x + like(x, 1)) / like(x, 4)
    return x


@jitable
def sparse_plus_grad(g, x):
    if x <= like(x, -1):
        return like(g, 0)
    if x < like(x, 1):
        return g * (x + like(x, 1)) / like(x, 2)
    return g


@jitable
def sparse_sigmoid(x):
    return minimum(maximum((x + like(x, 1)) / like(x, 2), like(x, 0)), like(x, 1))


@jitable
def sparse_sigmoid_grad(g, x):
    return g / like(g, 2) if (x > like(x, -1) and x < like(x, 1)) else like(g, 0)


@jitable
def hard_shrink(x, threshold=0.5):
    return x if abs(x) > like(x, threshold) else like(x, 0)


@jitable
def hard_shrink_grad(g, x, threshold=0.5):
    return g if abs(x) > like(x, threshold) else like(g, 0)


@jitable
def soft_shrink(x, threshold=0.5):
    t = like(x, threshold)
    if x > t:
        return x - t
    if x < -t:
        return x + t
    return like(x, 0)


@jitable
def soft_shrink_grad(g, x, threshold=0.5):
    return g if abs(x) > like(x, threshold) else like(g, 0)


@jitable
def tanh_shrink(x):
    return x - math.tanh(x)


@jitable
def tanh_shrink_grad(g, x):
    t = math.tanh(x)
    return g * t * t


# ---------------------------------------------------------------- recurrent cells
# The gate maths of SimpleRNN, LSTM and GRU for one unit of one step, on pre-activations (the
# input projection plus the recurrent product, which the drivers compute as GEMMs). An RNN's
# activations are chosen per layer, so a driver passes their codes: RNN_ACTIVATIONS's index.
# hard_sigmoid_k2 is Keras 2's clip(0.2x + 0.5, 0, 1).

RNN_CELLS = ("simple", "lstm", "gru")
RNN_ACTIVATIONS = (
    "linear",
    "tanh",
    "sigmoid",
    "hard_sigmoid",
    "hard_sigmoid_k2",
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "selu",
    "exponential",
    "softplus",
    "softsign",
    "silu",
    "gelu",
    "mish",
)


@jitable
def rnn_act(code, x):
    """Activation RNN_ACTIVATIONS[code] of x (tanh and sigmoid first: nearly every layer's). Every
    argument is given: CUDA compiles a call by its arguments, and refuses one leaving a default.
    Where the code is a constant (rnn_rows.py's `_ts` loops) LLVM inlines this and the dispatch
    folds away."""
    if code == 1:
        return fast_tanh(x)
    if code == 2:
        return fast_sigmoid(x)
    if code == 0:
        return x
    if code == 3:
        return hard_sigmoid(x)
    if code == 4:
        return clip(like(x, 0.2) * x + like(x, 0.5), 0.0, 1.0)
    if code == 5:
        return relu(x)
    if code == 6:
        return relu6(x)
    if code == 7:
        return leaky_relu(x, 0.2)
    if code == 8:
        return elu(x, 1.0)
    if code == 9:
        return selu(x)
    if code == 10:
        return exponential(x)
    if code == 11:
        return softplus(x)
    if code == 12:
        return softsign(x)
    if code == 13:
        return silu(x)
    if code == 14:
        return gelu(x, False)
    return mish(x)


@jitable
def rnn_act_grad(code, x):
    """d rnn_act(code, x) / dx, from the pre-activation x."""
    one = like(x, 1)
    if code == 1:
        return tanh_grad(one, fast_tanh(x))
    if code == 2:
        return sigmoid_grad(one, fast_sigmoid(x))
    if code == 0:
        return one
    if code == 3:
        return hard_sigmoid_grad(one, hard_sigmoid(x))
    if code == 4:
        return like(x, 0.2) if (x > like(x, -2.5) and x < like(x, 2.5)) else like(x, 0)
    if code == 5:
        return relu_grad(one, relu(x))
    if code == 6:
        return relu6_grad(one, relu6(x))
    if code == 7:
        return leaky_relu_grad(one, leaky_relu(x, 0.2), 0.2)
    if code == 8:
        return elu_grad(one, elu(x, 1.0), 1.0)
    if code == 9:
        return selu_grad(one, selu(x))
    if code == 10:
        return exponential_grad(one, exponential(x))
    if code == 11:
        return softplus_grad(one, softplus(x))
    if code == 12:
        return softsign_grad(one, softsign(x))
    if code == 13:
        return silu_grad(one, x)
    if code == 14:
        return gelu_grad(one, x, False)
    return mish_grad(one, x)


@cell_jitable
def lstm_cell(zi, zf, zc, zo, c_prev, act, ract):
    """(c, h) of an LSTM unit from its gates' pre-activations (Keras's order i, f, c, o)."""
    i, f = rnn_act(ract, zi), rnn_act(ract, zf)
    c = f * c_prev + i * rnn_act(act, zc)
    return c, rnn_act(ract, zo) * rnn_act(act, c)


@cell_jitable
def lstm_cell_grad(zi, zf, zc, zo, c_prev, c, dh, dc, act, ract):
    """(d zi, d zf, d zc, d zo, d c_prev) of lstm_cell, given d h and d c of its outputs."""
    i, f, g, o = rnn_act(ract, zi), rnn_act(ract, zf), rnn_act(act, zc), rnn_act(ract, zo)
    dct = dc + dh * o * rnn_act_grad(act, c)
    return (
        dct * g * rnn_act_grad(ract, zi),
        dct * c_prev * rnn_act_grad(ract, zf),
        dct * i * rnn_act_grad(act, zc),
        dh * rnn_act(act, c) * rnn_act_grad(ract, zo),
        dct * f,
    )


@cell_jitable
def gru_update(zp, ah, h_prev, act, ract):
    """A GRU unit's new state z h_prev + (1 - z) act(ah), z = ract(zp)."""
    z = rnn_act(ract, zp)
    return z * h_prev + (like(z, 1) - z) * rnn_act(act, ah)


@cell_jitable
def gru_update_grad(zp, ah, h_prev, dh, act, ract):
    """(d zp, d ah, d h_prev through z h_prev) of gru_update."""
    z = rnn_act(ract, zp)
    hh = rnn_act(act, ah)
    return dh * (h_prev - hh) * rnn_act_grad(ract, zp), dh * (like(z, 1) - z) * rnn_act_grad(act, ah), dh * z


# ---------------------------------------------------------------- recurrent units
# One unit (sample b, unit j) of one time step, as both targets' drivers run it: the CPU's
# rnn_forward / rnn_backward in loops over b and j, CUDA's kernels a thread per (b, j). The arrays
# are those drivers' (ir/ops/recurrent.py says what the operands are); t is the step in
# processing order, k the input step it reads (T-1-t when go_backwards), st the gate slot (t, or
# 0 when one step's gates are kept). Nothing here reads another unit's values: each step's GEMMs,
# which do, come between these calls.

SIMPLE, LSTM, GRU = 0, 1, 2  # RNN_CELLS's order


@jitable
def rnn_recurrent_input(h, keep, he, b, j, dropped):
    """he = the state the recurrent kernel multiplies: h, times the recurrent dropout keep mask."""
    he[b, j] = h[b, j] * keep[b, j] if dropped else h[b, j]


@jitable
def gru_v1_gates(xp, rec, gates, he, rhe, b, j, k, st, ract):
    """A GRU with reset_after=False, before its candidate's GEMM: the z and r pre-activations
    (rec holds he·U for z and r) and r * he, which the candidate's recurrent kernel multiplies."""
    nh = he.shape[1]
    zp = xp[b, k, j] + rec[b, j]
    rp = xp[b, k, nh + j] + rec[b, nh + j]
    gates[b, st, j] = zp
    gates[b, st, nh + j] = rp
    rhe[b, j] = rnn_act(ract, rp) * he[b, j]


@jitable
def rnn_unit(xp, rec, rb, mask, gates, out, h, c, b, j, t, k, st, cell, act, ract, v1, has_rb, masked):
    """One unit's step: its gates' pre-activations (xp plus the recurrent product rec, kept in
    gates), the new state in h (and c), and out[b, t] = the state after the step. A masked step
    carries the state of the step before."""
    nh = h.shape[1]
    zero = like(xp[b, k, j], 0)
    live = not masked or mask[b, k] != zero
    hp = h[b, j]
    if cell == SIMPLE:
        a = xp[b, k, j] + rec[b, j]
        gates[b, st, j] = a
        hn = rnn_act(act, a)
    elif cell == LSTM:
        zi = xp[b, k, j] + rec[b, j]
        zf = xp[b, k, nh + j] + rec[b, nh + j]
        zc = xp[b, k, 2 * nh + j] + rec[b, 2 * nh + j]
        zo = xp[b, k, 3 * nh + j] + rec[b, 3 * nh + j]
        gates[b, st, j], gates[b, st, nh + j] = zi, zf
        gates[b, st, 2 * nh + j], gates[b, st, 3 * nh + j] = zc, zo
        cn, hn = lstm_cell(zi, zf, zc, zo, c[b, j], act, ract)
        if live:
            c[b, j] = cn
        out[b, t, nh + j] = c[b, j]
    elif v1:  # z and r came from gru_v1_gates
        zp = gates[b, st, j]
        ah = xp[b, k, 2 * nh + j] + rec[b, 2 * nh + j]
        gates[b, st, 2 * nh + j] = ah
        hn = gru_update(zp, ah, hp, act, ract)
    else:  # reset_after: r multiplies the candidate's recurrent product (and its bias)
        zp = xp[b, k, j] + rec[b, j] + (rb[j] if has_rb else zero)
        rp = xp[b, k, nh + j] + rec[b, nh + j] + (rb[nh + j] if has_rb else zero)
        rh = rec[b, 2 * nh + j] + (rb[2 * nh + j] if has_rb else zero)
        ah = xp[b, k, 2 * nh + j] + rnn_act(ract, rp) * rh
        gates[b, st, j], gates[b, st, nh + j] = zp, rp
        gates[b, st, 2 * nh + j], gates[b, st, 3 * nh + j] = ah, rh
        hn = gru_update(zp, ah, hp, act, ract)
    if live:
        h[b, j] = hn
    out[b, t, j] = h[b, j]


@jitable
def rnn_unit_grad(
    g, out, mask, keep, h0, c0, gates, dz, dzs, drec, rhes, hes, direct, dh, dc,
    b, j, t, k, cell, act, ract, v1, ra, masked, dropped, initial,
):  # fmt: skip
    """One unit's step back through time, before the recurrent GEMM of the step's gradient:
    given dh (d h after the step, from the step after it) and dc, writes the gates' gradient in
    dz[b, k] (d xp) and dzs[b] (what the recurrent kernel's transpose multiplies; a GRU with
    reset_after its candidate part times r, also kept per step in drec; without, its reset part
    comes after the candidate's GEMM, gru_v1_reset_grad), direct (d h_prev not through U), dc
    (d c_prev), and the step's he (and r * he) for the recurrent kernel's gradient."""
    nh = dh.shape[1]
    zero = like(out[b, t, j], 0)
    live = not masked or mask[b, k] != zero
    dhv = dh[b, j] + g[b, t, j]
    if t > 0:
        hp = out[b, t - 1, j]
    else:
        hp = h0[b, j] if initial else zero
    he = hp * keep[b, j] if dropped else hp
    hes[b, k, j] = he
    if not live:  # the step carried the state: its gradient passes on untouched
        for q in range(dzs.shape[1] // nh):
            dz[b, k, q * nh + j] = zero
            dzs[b, q * nh + j] = zero
            if ra:
                drec[b, k, q * nh + j] = zero
        if v1:
            rhes[b, k, j] = zero
        direct[b, j] = dhv
        if cell == LSTM:
            dc[b, j] = dc[b, j] + g[b, t, nh + j]
        return
    if cell == SIMPLE:
        da = dhv * rnn_act_grad(act, gates[b, t, j])
        dz[b, k, j] = da
        dzs[b, j] = da
        direct[b, j] = zero
    elif cell == LSTM:
        if t > 0:
            cp = out[b, t - 1, nh + j]
        else:
            cp = c0[b, j] if initial else zero
        dzi, dzf, dzc, dzo, dcp = lstm_cell_grad(
            gates[b, t, j],
            gates[b, t, nh + j],
            gates[b, t, 2 * nh + j],
            gates[b, t, 3 * nh + j],
            cp,
            out[b, t, nh + j],
            dhv,
            dc[b, j] + g[b, t, nh + j],
            act,
            ract,
        )
        dz[b, k, j], dz[b, k, nh + j], dz[b, k, 2 * nh + j], dz[b, k, 3 * nh + j] = dzi, dzf, dzc, dzo
        dzs[b, j], dzs[b, nh + j], dzs[b, 2 * nh + j], dzs[b, 3 * nh + j] = dzi, dzf, dzc, dzo
        dc[b, j] = dcp
        direct[b, j] = zero
    else:
        zp, rp, ah = gates[b, t, j], gates[b, t, nh + j], gates[b, t, 2 * nh + j]
        dzp, dah, dd = gru_update_grad(zp, ah, hp, dhv, act, ract)
        dz[b, k, j], dz[b, k, 2 * nh + j] = dzp, dah
        dzs[b, j] = dzp
        direct[b, j] = dd
        if ra:
            r = rnn_act(ract, rp)
            drp = dah * gates[b, t, 3 * nh + j] * rnn_act_grad(ract, rp)
            dz[b, k, nh + j] = drp
            dzs[b, nh + j], dzs[b, 2 * nh + j] = drp, dah * r
            drec[b, k, j], drec[b, k, nh + j], drec[b, k, 2 * nh + j] = dzp, drp, dah * r
        else:
            dzs[b, 2 * nh + j] = dah
            rhes[b, k, j] = rnn_act(ract, rp) * he


@jitable
def gru_v1_reset_grad(acc, gates, hes, mask, dz, dzs, b, j, t, k, ract, masked):
    """A GRU with reset_after=False, after its candidate's gradient GEMM (acc = d(r * he)): the
    reset gate's gradient, and acc = d he through the candidate (before z and r's GEMM adds to it)."""
    nh = acc.shape[1]
    if masked and mask[b, k] == like(acc[b, j], 0):
        acc[b, j] = like(acc[b, j], 0)
        return
    rp = gates[b, t, nh + j]
    drp = acc[b, j] * hes[b, k, j] * rnn_act_grad(ract, rp)
    dz[b, k, nh + j] = drp
    dzs[b, nh + j] = drp
    acc[b, j] = acc[b, j] * rnn_act(ract, rp)


@jitable
def rnn_carry_grad(acc, keep, direct, dh, b, j, dropped):
    """d h before the step: through the recurrent kernel (acc, times the keep mask) and direct."""
    dh[b, j] = (acc[b, j] * keep[b, j] if dropped else acc[b, j]) + direct[b, j]


# ---------------------------------------------------------------- rows: softmax and the losses
# x, out: 1-D rows (the class axis); sums in float64.


@jitable
def row_max(x):
    m = x[0]
    for j in range(1, x.shape[0]):
        m = maximum(m, x[j])
    return m


@jitable
def log_sum_exp(z):
    m = row_max(z)
    s = 0.0
    for j in range(z.shape[0]):
        s += math.exp(z[j] - m)
    return m + math.log(s)


@jitable
def softmax_row(x, out):
    m = row_max(x)
    s = 0.0
    for j in range(x.shape[0]):
        e = math.exp(x[j] - m)
        out[j] = e
        s += e
    inv = 1 / s
    for j in range(x.shape[0]):
        out[j] *= inv


@jitable
def softmax_grad_row(g, y, out):
    d = 0.0
    for j in range(g.shape[0]):
        d += g[j] * y[j]
    for j in range(g.shape[0]):
        out[j] = y[j] * (g[j] - d)


@jitable
def softmax_ce_row(z, t):
    """Cross-entropy of softmax(z) against the distribution t."""
    lse = log_sum_exp(z)
    acc = 0.0
    for j in range(z.shape[0]):
        acc += t[j] * (lse - z[j])
    return acc


@jitable
def softmax_ce_grad_row(z, t, g, out):
    lse = log_sum_exp(z)
    for j in range(z.shape[0]):
        out[j] = (math.exp(z[j] - lse) - t[j]) * g


@jitable
def sparse_softmax_ce_row(z, label):
    """An id outside the row is refused before the step (runtime/checks.py) and never read here."""
    if 0 <= label < z.shape[0]:
        return log_sum_exp(z) - z[int(label)]
    return log_sum_exp(z)


@jitable
def sparse_softmax_ce_grad_row(z, label, g, out):
    lse = log_sum_exp(z)
    for j in range(z.shape[0]):
        out[j] = math.exp(z[j] - lse) * g
    if 0 <= label < z.shape[0]:
        out[int(label)] -= g


@jitable
def pick(p, label):
    """p[label], or 0 for an id outside the row."""
    if 0 <= label < p.shape[0]:
        return p[int(label)]
    return like(p[0], 0)


@jitable
def unpick_row(g, label, out):
    for j in range(out.shape[0]):
        out[j] = 0
    if 0 <= label < out.shape[0]:
        out[int(label)] = g


# ---------------------------------------------------------------- weight constraints
# Keras's constraints by their code in the kernels: the kind's index here
CONSTRAINTS = ("non_neg", "max_norm", "unit_norm", "min_max_norm")


@jitable
def constrained(w, norm, kind, min_value, max_value, rate):
    """One weight under Keras's constraint `kind` (CONSTRAINTS), its column's L2 norm given:
    NonNeg max(w, 0); UnitNorm w / (eps + norm); MaxNorm and MinMaxNorm w * desired / (eps + norm)."""
    if kind == 0:
        return maximum(w, like(w, 0.0))
    eps = like(norm, 1e-7)  # Keras's backend.epsilon()
    if kind == 2:
        return w / (eps + norm)
    clipped = minimum(maximum(norm, like(norm, min_value)), like(norm, max_value))
    desired = clipped if kind == 1 else like(norm, rate) * clipped + like(norm, 1.0 - rate) * norm
    return w * (desired / (eps + norm))


@jitable
def constrain_column(w, a, c, kind, min_value, max_value, rate):
    """Constraint `kind` in place on column (a, :, c) of a weight viewed as (before, over, after):
    its L2 norm over `over` (float64 sums; none for NonNeg), then each weight by `constrained`.
    The CPU kernel loops over the columns, the CUDA kernel gives each a thread."""
    total = 0.0
    if kind != 0:
        for r in range(w.shape[1]):
            total += float(w[a, r, c]) ** 2
    norm = like(w[a, 0, c], math.sqrt(total))
    for r in range(w.shape[1]):
        w[a, r, c] = constrained(w[a, r, c], norm, kind, min_value, max_value, rate)
