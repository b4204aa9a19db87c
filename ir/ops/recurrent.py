"""Recurrent layers' time loop: SimpleRNN, LSTM and GRU over a whole sequence.

The input projection x·W + b of every step is one matmul before the loop (the frontend emits it),
so `rnn_sequence` takes it precomputed: xp [B,T,G] with G = H (simple), 4H (lstm, gates i f c o)
or 3H (gru, gates z r h, Keras's order). Operands, in order:

    xp [B,T,G], recurrent kernel U [H,G],
    recurrent bias [G]      if attr recurrent_bias (GRU with reset_after and a bias),
    mask [B,T] (1 or 0)     if attr masked,
    keep [B,H]              if attr recurrent_dropout: h of the step before, times keep, is what
                            the recurrent kernel multiplies (Keras's recurrent_dropout mask),
    h0 [B,H] (, c0 [B,H])   if attr initial (else zeros).

The output holds every step's state in processing order (step t reads input T-1-t when
go_backwards): [B,T,H], or [B,T,2H] for an LSTM (h then c). A masked step carries the state of
the step before, as Keras does; Keras's zero_output_for_mask is a multiply the frontend adds.

`rnn_sequence_grad` is the backward pass through time: operands (g, out, *the forward's
operands), attr wrt (which forward operand's gradient it returns). Its NumPy reference computes
them all; a kernel computes them in one sweep for all its siblings. The input weights' gradient
comes from the projection's matmul VJP, one GEMM over all steps.
"""

from __future__ import annotations

import numpy as np

from ..types import TensorType
from .elementwise import ACTIVATIONS, NOT_IN_CELLS
from .registry import OpDef, Pattern, register

CELLS = {"simple": 1, "lstm": 4, "gru": 3}  # gates per unit


def _hard_sigmoid_k2(x):
    return np.clip(0.2 * x + 0.5, 0, 1).astype(x.dtype)


def act(name, x):
    """Activation `name` of x: the IR's ACTIVATIONS, and Keras 2's hard_sigmoid clip(0.2x + 0.5)."""
    if name == "hard_sigmoid_k2":
        return _hard_sigmoid_k2(x)
    return ACTIVATIONS[name][0](x).astype(x.dtype)


def act_grad(name, x):
    """d act(x) / dx."""
    if name == "hard_sigmoid_k2":
        return ((x > -2.5) & (x < 2.5)).astype(x.dtype) * x.dtype.type(0.2)
    fwd, grad, from_output = ACTIVATIONS[name]
    return grad(fwd(x)).astype(x.dtype) if from_output else grad(x).astype(x.dtype)


ACTIVATION_NAMES = (*(a for a in ACTIVATIONS if a not in NOT_IN_CELLS), "hard_sigmoid_k2")


FLAGS = ("recurrent_bias", "masked", "recurrent_dropout", "initial")


def operands(args, cell, recurrent_bias=False, masked=False, recurrent_dropout=False, initial=False):
    """(xp, U, rbias, mask, keep, h0, c0) from the op's operand list, None where absent."""
    args = list(args)
    xp, u = args[0], args[1]
    rest = args[2:]
    rb = rest.pop(0) if recurrent_bias else None
    mask = rest.pop(0) if masked else None
    keep = rest.pop(0) if recurrent_dropout else None
    h0 = rest.pop(0) if initial else None
    c0 = rest.pop(0) if initial and cell == "lstm" else None
    return xp, u, rb, mask, keep, h0, c0


def _flags(attrs):
    return {k: attrs.get(k, False) for k in FLAGS}


def _check(types, attrs):
    cell = attrs["cell"]
    if cell not in CELLS:
        raise ValueError(f"rnn_sequence: cell {cell!r} is not one of {', '.join(CELLS)}")
    for key in ("activation", "recurrent_activation"):
        if attrs.get(key, "tanh") not in ACTIVATION_NAMES:
            raise ValueError(f"rnn_sequence: unknown {key} {attrs[key]!r}")
    xp, u, rb, mask, keep, h0, c0 = operands(types, cell, **_flags(attrs))
    h = u.shape[0] if u.rank == 2 else -1
    if xp.rank != 3 or u.rank != 2 or u.shape[1] != CELLS[cell] * h or xp.shape[2] != u.shape[1]:
        raise ValueError(
            f"rnn_sequence ({cell}): projection {xp} and recurrent kernel {u} do not fit "
            f"(need [B,T,{CELLS[cell]}H] and [H,{CELLS[cell]}H])"
        )
    if rb is not None and rb.shape != (u.shape[1],):
        raise ValueError(f"rnn_sequence: recurrent bias {rb} is not [{u.shape[1]}]")
    if mask is not None and mask.shape != xp.shape[:2]:
        raise ValueError(f"rnn_sequence: mask {mask} is not [B,T] of {xp}")
    for s in (keep, h0, c0):
        if s is not None and s.shape != (xp.shape[0], h):
            raise ValueError(f"rnn_sequence: state-shaped operand {s} is not [B,{h}]")
    return h, xp


def _rnn_type(types, attrs):
    h, xp = _check(types, attrs)
    return TensorType((xp.shape[0], xp.shape[1], 2 * h if attrs["cell"] == "lstm" else h), xp.dtype)


def _step_inputs(xp, mask, go_backwards):
    """(index of the input step, its mask as [B,1] or None) in processing order."""
    t_len = xp.shape[1]
    for t in range(t_len):
        k = t_len - 1 - t if go_backwards else t
        yield k, None if mask is None else mask[:, k : k + 1].astype(xp.dtype)


def _forward_steps(
    xp,
    u,
    rb,
    mask,
    keep,
    h0,
    c0,
    cell,
    activation="tanh",
    recurrent_activation="sigmoid",
    go_backwards=False,
    reset_after=True,
):
    """Runs the loop; yields per step the values its backward needs."""
    b = xp.shape[0]
    hn = u.shape[0]
    dt = xp.dtype
    h = np.zeros((b, hn), dt) if h0 is None else h0.astype(dt)
    c = np.zeros((b, hn), dt) if c0 is None else c0.astype(dt)
    for k, m in _step_inputs(xp, mask, go_backwards):
        x = xp[:, k]
        he = h if keep is None else h * keep  # what the recurrent kernel multiplies
        cache = {"hp": h, "he": he, "cp": c, "m": m}
        if cell == "simple":
            a = x + he @ u
            hn_ = act(activation, a)
            cn_ = c
            cache.update(a=a)
        elif cell == "lstm":
            z = x + he @ u
            zi, zf, zc, zo = np.split(z, 4, axis=1)
            i, f = act(recurrent_activation, zi), act(recurrent_activation, zf)
            gg, o = act(activation, zc), act(recurrent_activation, zo)
            cn_ = f * c + i * gg
            hn_ = o * act(activation, cn_)
            cache.update(z=z, i=i, f=f, g=gg, o=o, c=cn_)
        else:
            xz, xr, xh = np.split(x, 3, axis=1)
            uz, ur, uh = np.split(u, 3, axis=1)
            if reset_after:
                rp = he @ u + (0 if rb is None else rb)
                rz, rr, rh = np.split(rp, 3, axis=1)
                zp, rpre = xz + rz, xr + rr
                r = act(recurrent_activation, rpre)
                ah = xh + r * rh
                cache.update(rh=rh)
            else:
                zp, rpre = xz + he @ uz, xr + he @ ur
                r = act(recurrent_activation, rpre)
                ah = xh + (r * he) @ uh
            zg = act(recurrent_activation, zp)
            hh = act(activation, ah)
            hn_ = zg * h + (1 - zg) * hh
            cn_ = c
            cache.update(zp=zp, rpre=rpre, z=zg, r=r, ah=ah, hh=hh)
        if m is not None:  # a masked step carries the state
            hn_ = m * hn_ + (1 - m) * h
            cn_ = m * cn_ + (1 - m) * c
        h, c = hn_.astype(dt), cn_.astype(dt)
        cache.update(h=h, c=c)
        yield cache


def _rnn(*args, cell, activation="tanh", recurrent_activation="sigmoid", go_backwards=False, reset_after=True, **flags):
    xp, u, rb, mask, keep, h0, c0 = operands(args, cell, **flags)
    steps = list(
        _forward_steps(xp, u, rb, mask, keep, h0, c0, cell, activation, recurrent_activation, go_backwards, reset_after)
    )
    hs = np.stack([s["h"] for s in steps], axis=1)
    if cell == "lstm":
        return np.concatenate([hs, np.stack([s["c"] for s in steps], axis=1)], axis=2)
    return hs


def _bptt(
    gout, args, cell, activation="tanh", recurrent_activation="sigmoid", go_backwards=False, reset_after=True, **flags
):
    """Every gradient: [d xp, d U, d rbias, None (mask), None (keep), d h0, d c0] for the operands present."""
    xp, u, rb, mask, keep, h0, c0 = operands(args, cell, **flags)
    kp = 1 if keep is None else keep
    steps = list(
        _forward_steps(xp, u, rb, mask, keep, h0, c0, cell, activation, recurrent_activation, go_backwards, reset_after)
    )
    b, t_len, g = xp.shape
    hn = u.shape[0]
    dt = xp.dtype
    dxp, du = np.zeros_like(xp), np.zeros_like(u)
    drb = np.zeros(g, dt)
    dh, dc = np.zeros((b, hn), dt), np.zeros((b, hn), dt)
    order = [k for k, _ in _step_inputs(xp, mask, go_backwards)]
    ra, fa = recurrent_activation, activation
    for t in reversed(range(t_len)):
        s, k = steps[t], order[t]
        dh = dh + gout[:, t, :hn]
        if cell == "lstm":
            dc = dc + gout[:, t, hn:]
        m = np.ones((b, 1), dt) if s["m"] is None else s["m"]
        hp, he = s["hp"], s["he"]
        if cell == "simple":
            da = dh * act_grad(fa, s["a"]) * m
            dxp[:, k] = da
            du += he.T @ da
            dhp = (da @ u.T) * kp
            dcp = dc
        elif cell == "lstm":
            zi, zf, zc, zo = np.split(s["z"], 4, axis=1)
            dh_m, dc_m = dh * m, dc * m
            ac = act(fa, s["c"])
            do = dh_m * ac
            dct = dc_m + dh_m * s["o"] * act_grad(fa, s["c"])
            dz = np.concatenate(
                [
                    dct * s["g"] * act_grad(ra, zi),
                    dct * s["cp"] * act_grad(ra, zf),
                    dct * s["i"] * act_grad(fa, zc),
                    do * act_grad(ra, zo),
                ],
                axis=1,
            )
            dxp[:, k] = dz
            du += he.T @ dz
            dhp = (dz @ u.T) * kp
            dcp = dct * s["f"] + (1 - m) * dc
        else:
            dh_m = dh * m
            dzg = dh_m * (hp - s["hh"])
            dah = dh_m * (1 - s["z"]) * act_grad(fa, s["ah"])
            dzp = dzg * act_grad(ra, s["zp"])
            uz, ur, uh = np.split(u, 3, axis=1)
            if reset_after:
                dr = dah * s["rh"]
                drp = dr * act_grad(ra, s["rpre"])
                drec = np.concatenate([dzp, drp, dah * s["r"]], axis=1)
                du += he.T @ drec
                drb += drec.sum(axis=0)
                dhp = (drec @ u.T) * kp
            else:
                drh = dah @ uh.T
                drp = drh * he * act_grad(ra, s["rpre"])
                du += np.concatenate([he.T @ dzp, he.T @ drp, (s["r"] * he).T @ dah], axis=1)
                dhp = (drh * s["r"] + dzp @ uz.T + drp @ ur.T) * kp
            dxp[:, k] = np.concatenate([dzp, drp, dah], axis=1)
            dhp = dhp + dh_m * s["z"]
            dcp = dc
        dh = dhp + (1 - m) * dh
        dc = dcp
    grads = [dxp, du]
    if flags.get("recurrent_bias"):
        grads.append(drb)
    grads += [None] * (bool(flags.get("masked")) + bool(flags.get("recurrent_dropout")))
    if flags.get("initial"):
        grads += [dh, dc] if cell == "lstm" else [dh]
    return grads


def _rnn_vjp(b, g, out, *operands_, **attrs):
    """No gradient for the step mask and the dropout keep mask (0/1 data)."""
    first = 2 + bool(attrs.get("recurrent_bias"))
    data = range(first, first + bool(attrs.get("masked")) + bool(attrs.get("recurrent_dropout")))
    return tuple(
        None if k in data else b.rnn_sequence_grad(g, out, *operands_, wrt=k, **attrs) for k in range(len(operands_))
    )


def _grad_type(types, attrs):
    g, out, *fwd = types
    if g != _rnn_type(fwd, attrs) or out != g:
        raise ValueError(f"rnn_sequence_grad: cotangent {g} and output {out} do not match the forward's")
    wrt = attrs["wrt"]
    if not 0 <= wrt < len(fwd):
        raise ValueError(f"rnn_sequence_grad: wrt={wrt} is not an operand index")
    return fwd[wrt]


def _rnn_grad(g, out, *args, wrt, **attrs):
    grad = _bptt(g, args, **attrs)[wrt]
    if grad is None:
        raise ValueError("rnn_sequence_grad: the mask has no gradient")
    return grad.astype(args[wrt].dtype)


register(
    OpDef(
        "rnn_sequence",
        Pattern.OPAQUE,
        _rnn_type,
        _rnn,
        _rnn_vjp,
        doc="a SimpleRNN / LSTM / GRU time loop over the precomputed input projection; "
        "every step's state (LSTM: h then c)",
    )
)
register(
    OpDef(
        "rnn_sequence_grad",
        Pattern.OPAQUE,
        _grad_type,
        _rnn_grad,
        None,
        doc="the backward pass through time of rnn_sequence: the gradient of operand `wrt`",
    )
)


# ---------------------------------------------------------------- time reversal


def _reverse_type(types, attrs):
    t = types[0]
    if t.rank < 2:
        raise ValueError(f"reverse_time: {t} has no time axis")
    return t


register(
    OpDef(
        "reverse_time",
        Pattern.OPAQUE,
        _reverse_type,
        lambda x: x[:, ::-1].copy(),
        lambda b, g, out, x: (b.reverse_time(g),),
        doc="axis 1 reversed: a backward RNN's sequence put back in input order",
    )
)
