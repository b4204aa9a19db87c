"""Ops of convolutional and embedding layers: patches (im2col and its adjoint col2im), pooling,
axis shuffles (transpose, pad/crop, repeat), the embedding lookup, batch normalization with moving
statistics, and the in-place moving average of those statistics. Images are NHWC; a convolution
is im2col + matmul in the IR, so the patch buffer is a node the memory planner sees."""

from __future__ import annotations

import numpy as np

from ..types import BATCH, TensorType
from .registry import OpDef, Pattern, register


def conv_out(size, k, stride, dilation, lo, hi) -> int:
    """Output length of a window sweep over `size` padded by (lo, hi)."""
    return (size + lo + hi - dilation * (k - 1) - 1) // stride + 1


def _nhwc(t, what):
    if t.rank != 4 or t.shape[0] != BATCH:
        raise ValueError(f"{what} takes a [B,H,W,C] tensor, got {t}")
    return t.shape[1:]


# ---------------------------------------------------------------- im2col / col2im


def _im2col_type(types, attrs):
    (kh, kw), (sh, sw), (dh, dw), (pt, pb, pl, pr) = attrs["kernel"], attrs["strides"], attrs["dilation"], attrs["pads"]
    h, w, c = _nhwc(types[0], "im2col")
    oh, ow = conv_out(h, kh, sh, dh, pt, pb), conv_out(w, kw, sw, dw, pl, pr)
    if oh <= 0 or ow <= 0:
        raise ValueError(f"im2col: a {kh}x{kw} window does not fit in {types[0]}")
    return TensorType((BATCH, oh, ow, kh * kw * c), types[0].dtype)


def _window_slices(oh, ow, kernel, strides, dilation):
    """(i, j, rows, cols): for each kernel tap, the padded-input slices its outputs read."""
    (kh, kw), (sh, sw), (dh, dw) = kernel, strides, dilation
    for i in range(kh):
        for j in range(kw):
            yield i, j, slice(i * dh, i * dh + sh * (oh - 1) + 1, sh), slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)


def _im2col(x, kernel, strides, dilation, pads):
    pt, pb, pl, pr = pads
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    b, h, w, c = x.shape
    oh, ow = (
        conv_out(h, kernel[0], strides[0], dilation[0], pt, pb),
        conv_out(w, kernel[1], strides[1], dilation[1], pl, pr),
    )
    cols = np.empty((b, oh, ow, kernel[0], kernel[1], c), x.dtype)
    for i, j, rs, cs in _window_slices(oh, ow, kernel, strides, dilation):
        cols[:, :, :, i, j] = xp[:, rs, cs]
    return cols.reshape(b, oh, ow, -1)


def _col2im_type(types, attrs):
    """The image size is an attribute: a transposed convolution's output_padding makes several
    sizes whose windows are the same patches. It must be one that im2col maps back to them."""
    t = types[0]
    (kh, kw), (sh, sw), (dh, dw) = attrs["kernel"], attrs["strides"], attrs["dilation"]
    (pt, pb, pl, pr), (h, w) = attrs["pads"], attrs["size"]
    if t.rank != 4 or t.shape[0] != BATCH or t.shape[3] % (kh * kw):
        raise ValueError(f"col2im: {t} is not a [B,OH,OW,{kh}*{kw}*C] patch tensor")
    if (conv_out(h, kh, sh, dh, pt, pb), conv_out(w, kw, sw, dw, pl, pr)) != t.shape[1:3]:
        raise ValueError(
            f"col2im: a {h}x{w} image padded by {attrs['pads']} does not have the "
            f"{t.shape[1]}x{t.shape[2]} windows of {t}"
        )
    return TensorType((BATCH, h, w, t.shape[3] // (kh * kw)), t.dtype)


def _col2im(g, kernel, strides, dilation, pads, size):
    """Sum each patch back where im2col read it: the adjoint of im2col."""
    pt, pb, pl, pr = pads
    b, oh, ow, _ = g.shape
    g6 = g.reshape(b, oh, ow, kernel[0], kernel[1], -1)
    out = np.zeros((b, size[0] + pt + pb, size[1] + pl + pr, g6.shape[-1]), g.dtype)
    for i, j, rs, cs in _window_slices(oh, ow, kernel, strides, dilation):
        out[:, rs, cs] += g6[:, :, :, i, j]
    return out[:, pt : pt + size[0], pl : pl + size[1]]


register(
    OpDef(
        "im2col",
        Pattern.OPAQUE,
        _im2col_type,
        _im2col,
        lambda b, g, out, x, **a: (b.col2im(g, **a, size=b.type(x).shape[1:3]),),
        doc="[B,H,W,C] -> [B,OH,OW,KH*KW*C]: every output position's (zero-padded) input window",
    )
)
register(
    OpDef(
        "col2im",
        Pattern.OPAQUE,
        _col2im_type,
        _col2im,
        lambda b, g, out, x, size, **a: (b.im2col(g, **a),),
        doc="[B,OH,OW,KH*KW*C] -> [B,H,W,C]: windows summed back into the image (im2col's adjoint)",
    )
)

# ---------------------------------------------------------------- pooling


def _pool_type(types, attrs):
    (kh, kw), (sh, sw), (pt, pb, pl, pr) = attrs["pool"], attrs["strides"], attrs["pads"]
    h, w, c = _nhwc(types[0], "pool2d")
    return TensorType((BATCH, conv_out(h, kh, sh, 1, pt, pb), conv_out(w, kw, sw, 1, pl, pr), c), types[0].dtype)


def _pool_windows(x, pool, strides, pads, fill):
    pt, pb, pl, pr = pads
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=fill)
    oh = conv_out(x.shape[1], pool[0], strides[0], 1, pt, pb)
    ow = conv_out(x.shape[2], pool[1], strides[1], 1, pl, pr)
    return xp, [(rs, cs) for _, _, rs, cs in _window_slices(oh, ow, pool, strides, (1, 1))]


def _pool_count(x, pool, strides, pads):
    """How many real (unpadded) inputs each average-pool window holds."""
    ones, wins = _pool_windows(np.ones((1, *x.shape[1:3], 1), x.dtype), pool, strides, pads, 0)
    return sum(ones[:, rs, cs] for rs, cs in wins)


def _pool2d(x, mode, pool, strides, pads):
    if mode == "max":
        xp, wins = _pool_windows(x, pool, strides, pads, -np.inf)
        return np.max([xp[:, rs, cs] for rs, cs in wins], axis=0)
    xp, wins = _pool_windows(x, pool, strides, pads, 0)
    return (sum(xp[:, rs, cs] for rs, cs in wins) / _pool_count(x, pool, strides, pads)).astype(x.dtype)


def _pool2d_grad(g, x, y, mode, pool, strides, pads, relu=False):
    """Max: g goes to the first maximum of each window (as TensorFlow routes it). Avg: spread evenly.
    relu: x is a ReLU's output and the result goes on through its gradient, (x > 0) times it
    (passes/fusion.py fuse_pool_relu_grad: one pass instead of two)."""
    xp, wins = _pool_windows(x, pool, strides, pads, -np.inf)
    gp = np.zeros(xp.shape, g.dtype)
    if mode == "max":
        done = np.zeros(y.shape, bool)
        for rs, cs in wins:
            hit = (xp[:, rs, cs] == y) & ~done
            gp[:, rs, cs] += g * hit
            done |= hit
    else:
        share = g / _pool_count(x, pool, strides, pads)
        for rs, cs in wins:
            gp[:, rs, cs] += share
    pt, pl = pads[0], pads[2]
    gx = gp[:, pt : pt + x.shape[1], pl : pl + x.shape[2]]
    return (gx * (x > 0)).astype(g.dtype) if relu else gx


register(
    OpDef(
        "pool2d",
        Pattern.OPAQUE,
        _pool_type,
        _pool2d,
        lambda b, g, out, x, **a: (b.pool2d_grad(g, x, out, **a),),
        doc="max or average over each window; padding never counts (Keras's 'same')",
    )
)
register(
    OpDef(
        "pool2d_grad",
        Pattern.OPAQUE,
        lambda types, attrs: types[1],
        _pool2d_grad,
        None,
        doc="the VJP of pool2d, from its input x and output y",
    )
)

# ---------------------------------------------------------------- axis shuffles


def _transpose_type(types, attrs):
    t, perm = types[0], attrs["perm"]
    if sorted(perm) != list(range(t.rank)):
        raise ValueError(f"transpose: {perm} is not a permutation of the axes of {t}")
    return t.with_shape(t.shape[p] for p in perm)


register(
    OpDef(
        "transpose",
        Pattern.OPAQUE,
        _transpose_type,
        lambda x, perm: np.transpose(x, perm).copy(),
        lambda b, g, out, x, perm: (b.transpose(g, perm=tuple(int(p) for p in np.argsort(perm))),),
    )
)


def _pad_type(sign):
    def infer(types, attrs):
        t = types[0]
        if len(attrs["pads"]) != t.rank or any(p != (0, 0) for d, p in zip(t.shape, attrs["pads"]) if d == BATCH):
            raise ValueError(f"pads {attrs['pads']} do not fit {t}")
        return t.with_shape(d if d == BATCH else d + sign * (lo + hi) for d, (lo, hi) in zip(t.shape, attrs["pads"]))

    return infer


register(
    OpDef(
        "pad",
        Pattern.OPAQUE,
        _pad_type(1),
        lambda x, pads: np.pad(x, pads),
        lambda b, g, out, x, pads: (b.crop(g, pads=pads),),
        doc="zeros around each axis: pads=((lo, hi), ...)",
    )
)
register(
    OpDef(
        "crop",
        Pattern.OPAQUE,
        _pad_type(-1),
        lambda x, pads: x[tuple(slice(lo, d - hi) for d, (lo, hi) in zip(x.shape, pads))].copy(),
        lambda b, g, out, x, pads: (b.pad(g, pads=pads),),
        doc="cuts (lo, hi) off each axis: pad's inverse",
    )
)


def _repeat_type(types, attrs):
    t, axis = types[0], attrs["axis"]
    if t.shape[axis] == BATCH:
        raise ValueError("cannot repeat along the batch axis")
    return t.with_shape(d * attrs["n"] if i == axis else d for i, d in enumerate(t.shape))


def _repeat_vjp(b, g, out, x, axis, n):
    shape = b.type(x).shape
    split = b.reshape(g, shape=(*shape[: axis + 1], n, *shape[axis + 1 :]))
    return (b.reduce_sum(split, axes=(axis + 1,)),)


register(
    OpDef(
        "repeat",
        Pattern.OPAQUE,
        _repeat_type,
        lambda x, axis, n: np.repeat(x, n, axis=axis),
        _repeat_vjp,
        doc="each entry along `axis` n times in a row (np.repeat)",
    )
)

# ---------------------------------------------------------------- embedding lookup


def _ids(ids):
    return ids.astype(np.int64)  # float ids are truncated, as Keras casts them


register(
    OpDef(
        "gather",
        Pattern.OPAQUE,
        lambda types, attrs: types[1].with_shape((*types[1].shape, types[0].shape[1])),
        lambda table, ids: table[_ids(ids)],
        lambda b, g, out, table, ids: (b.scatter_add(g, ids, rows=b.type(table).shape[0]), None),
        doc="table[ids]: one row of the table per id",
    )
)


def _scatter_add(g, ids, rows):
    out = np.zeros((rows, g.shape[-1]), g.dtype)
    np.add.at(out, _ids(ids).ravel(), g.reshape(-1, g.shape[-1]))
    return out


register(
    OpDef(
        "scatter_add",
        Pattern.OPAQUE,
        lambda types, attrs: TensorType((attrs["rows"], types[0].shape[-1]), types[0].dtype),
        _scatter_add,
        None,
        doc="rows of g summed into a zero table at their ids: the VJP of gather",
    )
)

# ---------------------------------------------------------------- moving statistics


def _moving_average(m, x, momentum):
    m *= m.dtype.type(momentum)
    m += x * m.dtype.type(1.0 - momentum)
    return m


register(
    OpDef(
        "moving_average",
        Pattern.UPDATE,
        lambda types, attrs: types[0],
        _moving_average,
        None,
        doc="m = m*momentum + x*(1 - momentum), in place: batch-norm's moving statistics",
    )
)

# ---------------------------------------------------------------- batch normalization at inference


def scale_and_shift(b, mean, var, gamma, beta, epsilon):
    """TensorFlow's normalization factors in IR ops: inv = gamma / sqrt(var + epsilon) and
    shift = beta - mean * inv (gamma and beta may be None: no scale, no center)."""
    dtype = b.type(var).dtype
    inv = b.div(b.const(1.0, dtype), b.sqrt(b.add(var, b.const(epsilon, dtype))))
    if gamma is not None:
        inv = b.mul(inv, gamma)
    shift = b.neg(b.mul(mean, inv)) if beta is None else b.sub(beta, b.mul(mean, inv))
    return inv, shift


def normalize(b, x, mean, var, gamma, beta, epsilon, name=None):
    """x * inv + shift, TensorFlow's formula; the statistics already broadcast against x."""
    inv, shift = scale_and_shift(b, mean, var, gamma, beta, epsilon)
    return b.add(b.mul(x, inv), shift, name=name)


def per_channel(b, v, x, axis):
    """A [C] vector shaped to broadcast against x along `axis`."""
    t = b.type(x)
    if v is None or axis == t.rank - 1:
        return v
    return b.reshape(v, shape=tuple(d if i == axis else 1 for i, d in enumerate(t.shape)))


def batch_norm_operands(operands, scale=True, center=True):
    """(x, mean, variance[, gamma][, beta]) -> (x, mean, variance, gamma or None, beta or None)."""
    x, mean, var, *rest = operands
    gamma = rest.pop(0) if scale else None
    beta = rest.pop(0) if center else None
    return x, mean, var, gamma, beta


def _batch_norm_type(types, attrs):
    scale, center, axis = attrs.get("scale", True), attrs.get("center", True), attrs["axis"]
    if len(types) != 3 + scale + center:
        raise ValueError(
            f"batch_norm takes x, mean, variance{', gamma' * scale}{', beta' * center}: got {len(types)} operands"
        )
    x = types[0]
    if not 0 < axis < x.rank:
        raise ValueError(f"batch_norm: axis {axis} is not a non-batch axis of {x}")
    for t in types[1:]:
        if t.shape != (x.shape[axis],) or t.dtype != x.dtype:
            raise ValueError(f"batch_norm: statistic {t} does not match axis {axis} of {x}")
    return x


def _batch_norm(*operands, axis, epsilon, scale=True, center=True, batch_statistics=False):
    x, mean, var, gamma, beta = batch_norm_operands(operands, scale, center)
    inv = x.dtype.type(1) / np.sqrt(var + x.dtype.type(epsilon))
    if gamma is not None:
        inv = inv * gamma
    shift = -(mean * inv) if beta is None else beta - mean * inv
    shape = [-1 if i == axis else 1 for i in range(x.ndim)]
    return (x * inv.reshape(shape) + shift.reshape(shape)).astype(x.dtype)


def _batch_norm_vjp(b, g, out, *operands, axis, epsilon, scale=True, center=True, batch_statistics=False):
    """y = (x - mean) * inv + beta, inv = gamma * r, r = (var + eps)^-1/2; dr/dvar = -r^3 / 2.
    With batch_statistics, mean and var are x's own (the mean and biased variance over every axis
    but `axis`), and the gradient of x is the total one, through them too."""
    x, mean, var, gamma, beta = batch_norm_operands(operands, scale, center)
    dtype = b.type(x).dtype
    others = tuple(i for i in range(b.type(x).rank) if i != axis)
    r = b.div(b.const(1.0, dtype), b.sqrt(b.add(var, b.const(epsilon, dtype))))
    inv = r if gamma is None else b.mul(r, gamma)
    g_sum = b.reduce_sum(g, axes=others)
    if batch_statistics:
        return _batch_statistics_vjp(b, g, x, mean, r, inv, g_sum, others, axis, scale, center)
    g_centered = b.reduce_sum(b.mul(g, b.sub(x, per_channel(b, mean, x, axis))), axes=others)
    g_var = b.mul(b.mul(g_centered, inv), b.mul(b.square(r), b.const(-0.5, dtype)))
    grads = [b.mul(g, per_channel(b, inv, x, axis)), b.neg(b.mul(g_sum, inv)), g_var]
    return tuple(grads + ([b.mul(g_centered, r)] if scale else []) + ([g_sum] if center else []))


def _batch_statistics_vjp(b, g, x, mean, r, inv, g_sum, others, axis, scale, center):
    """Training's batch norm: with xhat = (x - mean) * r and N the values a channel averages,
    dx = inv * (g - sum(g) / N - xhat * sum(g * xhat) / N), dgamma = sum(g * xhat),
    dbeta = sum(g); mean and var get none (their share is in dx). Three passes over the batch
    where differentiating the statistics' ops one by one took a dozen."""
    xhat = b.mul(b.sub(x, per_channel(b, mean, x, axis)), per_channel(b, r, x, axis))
    g_xhat = b.reduce_sum(b.mul(g, xhat), axes=others)
    n = b.count(x, axes=others)
    centered = b.sub(g, per_channel(b, b.div(g_sum, n), x, axis))
    dx = b.mul(b.sub(centered, b.mul(xhat, per_channel(b, b.div(g_xhat, n), x, axis))), per_channel(b, inv, x, axis))
    return (dx, None, None) + ((g_xhat,) if scale else ()) + ((g_sum,) if center else ())


register(
    OpDef(
        "batch_norm",
        Pattern.OPAQUE,
        _batch_norm_type,
        _batch_norm,
        _batch_norm_vjp,
        doc="(x - mean) * gamma / sqrt(variance + epsilon) + beta along `axis`, from given (moving) "
        "statistics; operands x, mean, variance[, gamma if scale][, beta if center]. The "
        "pipelines fold it into the GEMM before it or lower it to elementwise ops. "
        "batch_statistics: mean and variance are x's own over the other axes (training), and the "
        "gradient flows through them (the pipeline lowers such a node after autodiff)",
    )
)
