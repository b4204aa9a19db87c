"""Hand-written Numba kernels: the per-op maths that generated steps call.
Rows are the leading dimensions flattened; the last axis is the class/feature axis.
All are error_model="numpy" (no zero-division checks, so loops vectorise) and cached."""
from __future__ import annotations

import math

import numpy as np
from numba import njit

jit = njit(cache=True, error_model="numpy", nogil=True)


@jit
def softmax_rows(x, out):
    for i in range(x.shape[0]):
        m = x[i, 0]
        for j in range(1, x.shape[1]):
            m = max(m, x[i, j])
        s = 0.0  # accumulate in float64
        for j in range(x.shape[1]):
            e = math.exp(x[i, j] - m)
            out[i, j] = e
            s += e
        inv = 1 / s
        for j in range(x.shape[1]):
            out[i, j] *= inv


@jit
def softmax_grad_rows(g, y, out):
    for i in range(g.shape[0]):
        d = 0.0
        for j in range(g.shape[1]):
            d += g[i, j] * y[i, j]
        for j in range(g.shape[1]):
            out[i, j] = y[i, j] * (g[i, j] - d)


@jit
def _log_sum_exp(z, i):
    m = z[i, 0]
    for j in range(1, z.shape[1]):
        m = max(m, z[i, j])
    s = 0.0
    for j in range(z.shape[1]):
        s += math.exp(z[i, j] - m)
    return m + math.log(s)


@jit
def softmax_ce_rows(z, t, out):
    for i in range(z.shape[0]):
        lse = _log_sum_exp(z, i)
        acc = 0.0
        for j in range(z.shape[1]):
            acc += t[i, j] * (lse - z[i, j])
        out[i] = acc


@jit
def softmax_ce_grad_rows(z, t, g, out):
    for i in range(z.shape[0]):
        lse = _log_sum_exp(z, i)
        for j in range(z.shape[1]):
            out[i, j] = (math.exp(z[i, j] - lse) - t[i, j]) * g[i]


@jit
def sparse_softmax_ce_rows(z, labels, out):
    for i in range(z.shape[0]):
        out[i] = _log_sum_exp(z, i) - z[i, labels[i]]


@jit
def sparse_softmax_ce_grad_rows(z, labels, g, out):
    for i in range(z.shape[0]):
        lse = _log_sum_exp(z, i)
        for j in range(z.shape[1]):
            out[i, j] = math.exp(z[i, j] - lse) * g[i]
        out[i, labels[i]] -= g[i]


@jit
def pick_rows(p, labels, out):
    for i in range(p.shape[0]):
        out[i] = p[i, labels[i]]


@jit
def unpick_rows(g, labels, out):
    out[:] = 0
    for i in range(out.shape[0]):
        out[i, labels[i]] = g[i]


@jit
def reduce_3d(x, out, mean):
    """out[a, c] = sum (or mean) over b of x[a, b, c]."""
    out[:] = 0
    for a in range(x.shape[0]):
        for b in range(x.shape[1]):
            for c in range(x.shape[2]):
                out[a, c] += x[a, b, c]
    if mean and x.shape[1] > 0:
        scale = 1 / x.shape[1]
        for a in range(out.shape[0]):
            for c in range(out.shape[1]):
                out[a, c] *= scale


@jit
def reduce_max_3d(x, out):
    """out[a, c] = max over b of x[a, b, c]."""
    out[:] = -np.inf
    for a in range(x.shape[0]):
        for b in range(x.shape[1]):
            for c in range(x.shape[2]):
                out[a, c] = max(out[a, c], x[a, b, c])


@jit
def broadcast_3d(g, out):
    """out[a, b, c] = g[a, c]."""
    for a in range(out.shape[0]):
        for b in range(out.shape[1]):
            for c in range(out.shape[2]):
                out[a, b, c] = g[a, c]


# ---------------------------------------------------------------- optimizers (Keras 3 formulas)
# One loop per update over flat (bucket) arrays. Each takes the shared scalars of ir/ops/optim.py:
# lr, step, gscale (a factor on the gradient) and weight_decay (w -= w*weight_decay*lr first).
# A slot the hyper-parameters switch off is passed as any array and never touched.

@jit
def sgd(w, g, m, lr, step, gscale, momentum, nesterov, weight_decay):
    f = w.dtype.type
    lr_, mu, gs, decay = f(lr), f(momentum), f(gscale), f(weight_decay * lr)
    for i in range(w.shape[0]):
        wi = w[i] - w[i] * decay
        gi = g[i] * gs
        if momentum:
            mi = mu * m[i] - lr_ * gi
            m[i] = mi
            w[i] = wi + ((mu * mi - lr_ * gi) if nesterov else mi)
        else:
            w[i] = wi - lr_ * gi


@jit
def adam(w, g, m, v, v_hat, lr, step, gscale, beta_1, beta_2, epsilon, amsgrad, weight_decay):
    f = w.dtype.type
    alpha = f(lr * math.sqrt(1 - beta_2 ** step) / (1 - beta_1 ** step))
    b1, b2, eps, gs, decay = f(1 - beta_1), f(1 - beta_2), f(epsilon), f(gscale), f(weight_decay * lr)
    for i in range(w.shape[0]):
        wi = w[i] - w[i] * decay
        gi = g[i] * gs
        mi = m[i] + (gi - m[i]) * b1
        vi = v[i] + (gi * gi - v[i]) * b2
        m[i] = mi
        v[i] = vi
        if amsgrad:
            vi = max(v_hat[i], vi)
            v_hat[i] = vi
        w[i] = wi - alpha * mi / (math.sqrt(vi) + eps)


@jit
def rmsprop(w, g, v, ag, mom, lr, step, gscale, rho, momentum, epsilon, centered, weight_decay):
    f = w.dtype.type
    lr_, r, r1, mu, eps = f(lr), f(rho), f(1 - rho), f(momentum), f(epsilon)
    gs, decay = f(gscale), f(weight_decay * lr)
    for i in range(w.shape[0]):
        wi = w[i] - w[i] * decay
        gi = g[i] * gs
        vi = r * v[i] + r1 * gi * gi
        v[i] = vi
        denominator = vi + eps
        if centered:
            a = r * ag[i] + r1 * gi
            ag[i] = a
            denominator = vi - a * a + eps
        increment = lr_ * gi / math.sqrt(denominator)
        if momentum > 0:
            mi = mu * mom[i] + increment
            mom[i] = mi
            w[i] = wi - mi
        else:
            w[i] = wi - increment


@jit
def adagrad(w, g, acc, lr, step, gscale, epsilon, weight_decay):
    f = w.dtype.type
    lr_, eps, gs, decay = f(lr), f(epsilon), f(gscale), f(weight_decay * lr)
    for i in range(w.shape[0]):
        wi = w[i] - w[i] * decay
        gi = g[i] * gs
        a = acc[i] + gi * gi
        acc[i] = a
        w[i] = wi - lr_ * gi / math.sqrt(a + eps)


@jit
def adadelta(w, g, acc_g, acc_dx, lr, step, gscale, rho, epsilon, weight_decay):
    f = w.dtype.type
    lr_, r, r1, eps, gs, decay = f(lr), f(rho), f(1 - rho), f(epsilon), f(gscale), f(weight_decay * lr)
    for i in range(w.shape[0]):
        wi = w[i] - w[i] * decay
        gi = g[i] * gs
        ag = r * acc_g[i] + r1 * gi * gi
        acc_g[i] = ag
        delta = -(math.sqrt(acc_dx[i] + eps) * gi) / math.sqrt(ag + eps)
        acc_dx[i] = r * acc_dx[i] + r1 * delta * delta
        w[i] = wi + lr_ * delta


@jit
def adamax(w, g, m, u, lr, step, gscale, beta_1, beta_2, epsilon, weight_decay):
    f = w.dtype.type
    lr_, b1, b2, eps = f(lr), f(1 - beta_1), f(beta_2), f(epsilon)
    correction, gs, decay = f(1 - beta_1 ** step), f(gscale), f(weight_decay * lr)
    for i in range(w.shape[0]):
        wi = w[i] - w[i] * decay
        gi = g[i] * gs
        mi = m[i] + (gi - m[i]) * b1
        m[i] = mi
        ui = max(b2 * u[i], abs(gi))
        u[i] = ui
        w[i] = wi - lr_ * mi / (correction * (ui + eps))


@jit
def _nadam_momentum_product(beta_1, t):
    """ir.ops.optim.nadam_momentum_product, written again: the kernels import nothing of the IR, so a
    compiled trainer runs with the runtime alone."""
    p = 1.0
    for s in range(1, min(int(t), 1000) + 1):
        p *= 1 - 0.5 * 0.96 ** s
    return p * beta_1 ** t


@jit
def nadam(w, g, m, v, lr, step, gscale, beta_1, beta_2, epsilon, weight_decay):
    f = w.dtype.type
    u_t, u_next = beta_1 * (1 - 0.5 * 0.96 ** step), beta_1 * (1 - 0.5 * 0.96 ** (step + 1))
    u_product = _nadam_momentum_product(beta_1, step)
    c_m, c_g = f(u_next / (1 - u_product * u_next)), f((1 - u_t) / (1 - u_product))
    b1, b2, v_correction = f(1 - beta_1), f(1 - beta_2), f(1 - beta_2 ** step)
    lr_, eps, gs, decay = f(lr), f(epsilon), f(gscale), f(weight_decay * lr)
    for i in range(w.shape[0]):
        wi = w[i] - w[i] * decay
        gi = g[i] * gs
        mi = m[i] + (gi - m[i]) * b1
        vi = v[i] + (gi * gi - v[i]) * b2
        m[i] = mi
        v[i] = vi
        w[i] = wi - (c_m * mi + c_g * gi) * lr_ / (math.sqrt(vi / v_correction) + eps)
