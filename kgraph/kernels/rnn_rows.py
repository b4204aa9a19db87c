"""The CPU's loops over one sample's units for one time step, between the step's GEMMs (cpu.py's
rnn_forward / rnn_backward walk the steps and the samples). They do what maths.py's rnn_unit,
rnn_unit_grad, gru_v1_gates and gru_v1_reset_grad do per (b, j) for CUDA's threads, through the
same cell maths (lstm_cell, gru_update, their gradients, rnn_act), a row at a time:

- each function takes a sample's 1-D rows (xp[b, k], gates[b, st], out[b, t], ...), so its
  loop over the units reads and writes contiguous memory;
- each comes twice, from `_cell_loops_for`: `_ts` with Keras's default activations (tanh,
  recurrent sigmoid) as constants and `_any` with the codes as arguments. With constant codes
  rnn_act's dispatch folds away, the cells (inlined, maths.cell_jitable) become straight-line
  float32 arithmetic (maths.rational_tanh: no libm call) and LLVM vectorises the unit loop.

What stops that vectorising, found by measuring (each cost 3-7x): an array read under a per-unit
`if` (the dropout keep mask: `kept` has its own loop), too many arrays written in one loop (LLVM
gives up on checking that they don't overlap: lstm_grad_row copies dzs after its loop), and rows
indexed as views taken inside the same function as the loop (hence a function per row).
Gradients: see maths.rnn_unit_grad."""

from __future__ import annotations

from numba import njit

from . import maths as M
from .by_type import NO_C_WRAPPER

# Plain njit, not by_type's kernel_jit: these compile once per constant they are given, and
# cpu.py's recurrent loops give them the activation codes (a compiled step's constants) and, where
# a flag decides a unit loop's body, the flag as a constant (gru_row's has_rb).
jit = njit(cache=True, error_model="numpy", nogil=True, **NO_C_WRAPPER)

TANH, SIGMOID = M.RNN_ACTIVATIONS.index("tanh"), M.RNN_ACTIVATIONS.index("sigmoid")


@jit
def kept(prev, keepb, hesb, dropped):
    """hesb = the state the recurrent kernel multiplied: prev, times the keep mask when dropped.
    A loop of its own: a load under `if dropped` in a unit loop stopped it vectorising."""
    if dropped:
        for j in range(hesb.shape[0]):
            hesb[j] = prev[j] * keepb[j]
    else:
        for j in range(hesb.shape[0]):
            hesb[j] = prev[j]


def _cell_loops_for(fixed_act, fixed_ract):
    """The loops with act and ract fixed to these codes, or (None) taken from the arguments, each
    named for its form (`lstm_grad_row_any`).
    Numba freezes a closure's variables as constants (and keys its cache on them). A `_row`
    function takes a sample's 1-D rows as its arguments: its unit loop vectorised so, and ran 7x
    slower when the same loop indexed views it had taken itself from the 3-D arrays."""
    fixed = fixed_act is not None
    fa, fr = (fixed_act, fixed_ract) if fixed else (0, 0)

    def simple_row(xb, rb, gb, hb, ob, act):
        a = fa if fixed else act
        for j in range(hb.shape[0]):
            z = xb[j] + rb[j]
            gb[j] = z
            hn = M.rnn_act(a, z)
            hb[j] = hn
            ob[j] = hn

    def lstm_row(xb, rb, gb, hb, cb, ob, act, ract):
        a, r = (fa, fr) if fixed else (act, ract)
        nh = hb.shape[0]
        for j in range(nh):
            zi, zf = xb[j] + rb[j], xb[nh + j] + rb[nh + j]
            zc, zo = xb[2 * nh + j] + rb[2 * nh + j], xb[3 * nh + j] + rb[3 * nh + j]
            gb[j], gb[nh + j], gb[2 * nh + j], gb[3 * nh + j] = zi, zf, zc, zo
            cn, hn = M.lstm_cell(zi, zf, zc, zo, cb[j], a, r)
            cb[j], hb[j] = cn, hn
            ob[j], ob[nh + j] = hn, cn

    def gru_row(xb, rr, rbias, gb, hb, ob, act, ract, has_rb):
        """reset_after=True: r multiplies the candidate's recurrent product (and its bias)."""
        a, r = (fa, fr) if fixed else (act, ract)
        nh = hb.shape[0]
        zero = hb.dtype.type(0)
        for j in range(nh):
            zp = xb[j] + rr[j] + (rbias[j] if has_rb else zero)
            rp = xb[nh + j] + rr[nh + j] + (rbias[nh + j] if has_rb else zero)
            rh = rr[2 * nh + j] + (rbias[2 * nh + j] if has_rb else zero)
            ah = xb[2 * nh + j] + M.rnn_act(r, rp) * rh
            gb[j], gb[nh + j], gb[2 * nh + j], gb[3 * nh + j] = zp, rp, ah, rh
            hn = M.gru_update(zp, ah, hb[j], a, r)
            hb[j] = hn
            ob[j] = hn

    def gru_v1_gates_row(xb, rr, gb, heb, rheb, ract):
        """reset_after=False, before the candidate's GEMM: z's and r's pre-activations and r * he."""
        r = fr if fixed else ract
        nh = heb.shape[0]
        for j in range(nh):
            zp, rp = xb[j] + rr[j], xb[nh + j] + rr[nh + j]
            gb[j], gb[nh + j] = zp, rp
            rheb[j] = M.rnn_act(r, rp) * heb[j]

    def gru_v1_row(xb, rr, gb, hb, ob, act, ract):
        a, r = (fa, fr) if fixed else (act, ract)
        nh = hb.shape[0]
        for j in range(nh):
            ah = xb[2 * nh + j] + rr[2 * nh + j]
            gb[2 * nh + j] = ah
            hn = M.gru_update(gb[j], ah, hb[j], a, r)
            hb[j] = hn
            ob[j] = hn

    # The backward rows of a live sample (a masked one: dead_grad_row). prev: its state before
    # the step (LSTM: h then c), keepb its recurrent dropout keep mask (read when dropped).

    def simple_grad_row(gtb, prev, keepb, gb, dzb, dzsb, hesb, dirb, dhb, act, dropped):
        a = fa if fixed else act
        kept(prev, keepb, hesb, dropped)
        for j in range(dhb.shape[0]):
            da = (dhb[j] + gtb[j]) * M.rnn_act_grad(a, gb[j])
            dzb[j] = da
            dzsb[j] = da
        dirb[:] = 0

    def lstm_grad_row(gtb, prev, keepb, gb, ob, dzb, dzsb, hesb, dirb, dhb, dcb, act, ract, dropped):
        """dzsb (a copy of dzb) and dirb (zeros) are written outside the unit loop: with them in
        it, it had too many arrays for LLVM's overlap checks and did not vectorise."""
        a, r = (fa, fr) if fixed else (act, ract)
        nh = dhb.shape[0]
        kept(prev, keepb, hesb, dropped)
        for j in range(nh):
            dzi, dzf, dzc, dzo, dcp = M.lstm_cell_grad(
                gb[j], gb[nh + j], gb[2 * nh + j], gb[3 * nh + j], prev[nh + j], ob[nh + j],
                dhb[j] + gtb[j], dcb[j] + gtb[nh + j], a, r,
            )  # fmt: skip
            dzb[j], dzb[nh + j], dzb[2 * nh + j], dzb[3 * nh + j] = dzi, dzf, dzc, dzo
            dcb[j] = dcp
        for j in range(dzb.shape[0]):  # not dzsb[:] = dzb: its shape-mismatch message took 2.4 s to compile
            dzsb[j] = dzb[j]
        dirb[:] = 0

    def gru_grad_row(gtb, prev, keepb, gb, dzb, dzsb, drecb, hesb, dirb, dhb, act, ract, dropped):
        """reset_after=True; drecb: the step's gradient of the recurrent product (d ah times r)."""
        a, r = (fa, fr) if fixed else (act, ract)
        nh = dhb.shape[0]
        kept(prev, keepb, hesb, dropped)
        for j in range(nh):
            hp = prev[j]
            zp, rp, ah = gb[j], gb[nh + j], gb[2 * nh + j]
            dzp, dah, dd = M.gru_update_grad(zp, ah, hp, dhb[j] + gtb[j], a, r)
            rv = M.rnn_act(r, rp)
            drp = dah * gb[3 * nh + j] * M.rnn_act_grad(r, rp)
            dzb[j], dzb[nh + j], dzb[2 * nh + j] = dzp, drp, dah
            dzsb[j], dzsb[nh + j], dzsb[2 * nh + j] = dzp, drp, dah * rv
            drecb[j], drecb[nh + j], drecb[2 * nh + j] = dzp, drp, dah * rv
            dirb[j] = dd

    def gru_v1_grad_row(gtb, prev, keepb, gb, dzb, dzsb, rhesb, hesb, dirb, dhb, act, ract, dropped):
        """reset_after=False: r's gradient comes after the candidate's GEMM (gru_v1_reset_grad_row)."""
        a, r = (fa, fr) if fixed else (act, ract)
        nh = dhb.shape[0]
        kept(prev, keepb, hesb, dropped)
        for j in range(nh):
            hp = prev[j]
            zp, rp, ah = gb[j], gb[nh + j], gb[2 * nh + j]
            dzp, dah, dd = M.gru_update_grad(zp, ah, hp, dhb[j] + gtb[j], a, r)
            dzb[j], dzb[2 * nh + j] = dzp, dah
            dzsb[j], dzsb[2 * nh + j] = dzp, dah
            rhesb[j] = M.rnn_act(r, rp) * hesb[j]
            dirb[j] = dd

    def gru_v1_reset_grad_row(accb, gb, hesb, dzb, dzsb, ract):
        """After the candidate's gradient GEMM (accb = d(r * he)): r's gradient, and accb = d he
        through the candidate."""
        r = fr if fixed else ract
        nh = accb.shape[0]
        for j in range(nh):
            rp = gb[nh + j]
            drp = accb[j] * hesb[j] * M.rnn_act_grad(r, rp)
            dzb[nh + j] = drp
            dzsb[nh + j] = drp
            accb[j] = accb[j] * M.rnn_act(r, rp)

    loops = (
        simple_row, lstm_row, gru_row, gru_v1_gates_row, gru_v1_row,
        simple_grad_row, lstm_grad_row, gru_grad_row, gru_v1_grad_row, gru_v1_reset_grad_row,
    )  # fmt: skip
    # Each form its own name before it compiles. Numba's symbol for a function is its qualified
    # name and a counter of the process that compiled it; the `_ts` and `_any` forms shared a name,
    # so two cached kernels compiled by different processes could define the same symbol, and
    # the process loading both ran the first one loaded for both (an LSTM with hard_sigmoid,
    # trained after a default LSTM, took the default loop's gradient).
    for loop in loops:
        loop.__name__ = loop.__qualname__ = f"{loop.__name__}_{'ts' if fixed else 'any'}"
    return tuple(jit(loop) for loop in loops)


(
    simple_row_ts, lstm_row_ts, gru_row_ts, gru_v1_gates_row_ts, gru_v1_row_ts,
    simple_grad_row_ts, lstm_grad_row_ts, gru_grad_row_ts, gru_v1_grad_row_ts, gru_v1_reset_grad_row_ts,
) = _cell_loops_for(TANH, SIGMOID)  # fmt: skip
(
    simple_row_any, lstm_row_any, gru_row_any, gru_v1_gates_row_any, gru_v1_row_any,
    simple_grad_row_any, lstm_grad_row_any, gru_grad_row_any, gru_v1_grad_row_any, gru_v1_reset_grad_row_any,
) = _cell_loops_for(None, None)  # fmt: skip


@jit
def dead_grad_row(gtb, prev, keepb, hesb, dirb, dhb, dcb, lstm, dropped):
    """A masked sample's step back: it carried its state, so its gradient passes on untouched
    (its gates' gradients are zero, which the caller writes). he is still kept: du's GEMM reads
    every step's."""
    nh = dhb.shape[0]
    kept(prev, keepb, hesb, dropped)
    for j in range(nh):
        dirb[j] = dhb[j] + gtb[j]
    if lstm:
        for j in range(nh):
            dcb[j] = dcb[j] + gtb[nh + j]


@jit
def carry_grad_row(accb, keepb, dirb, dhb, dropped):
    """d h before the step: through the recurrent kernel (accb, times the keep mask) and direct."""
    if dropped:
        for j in range(dhb.shape[0]):
            dhb[j] = accb[j] * keepb[j] + dirb[j]
    else:
        for j in range(dhb.shape[0]):
            dhb[j] = accb[j] + dirb[j]
