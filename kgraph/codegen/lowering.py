"""How an elementwise op and an optimizer update become code: the one table both code generators
read. The maths itself lives in kgraph/kernels (maths.py for element and row functions,
updates.py for the optimizers); this module only spells the calls, looked up by the op's name:

- an elementwise op is an operator (+, -, *, /) or a call of the maths function of the same
  name, its attrs passed as the function's parameters of the same names (positionally: Numba's
  CUDA target drops keyword arguments of such calls; the IR line above the call shows them by
  name); activation gradients (`act_grad` with activation=NAME) call NAME_grad;
- an update op calls its record in kgraph.kernels.updates: the per-step scalars once per step,
  then the element function per weight, inside a loop each target writes its own way."""

from __future__ import annotations

import functools
import inspect

from ir.ops.optim import UPDATES as IR_UPDATES

from ..kernels import maths
from ..kernels.updates import UPDATES

OPERATORS = {
    "add": "{0} + {1}",
    "sub": "{0} - {1}",
    "mul": "{0} * {1}",
    "div": "{0} / {1}",
    "neg": "-{0}",
    "copy": "{0}",
}
PYTHON_MATH = {
    "exp": "math.exp",
    "expm1": "math.expm1",
    "log": "math.log",
    "log1p": "math.log1p",
    "sqrt": "math.sqrt",
    "abs": "abs",
}


def element_function(op: str, attrs: dict):
    """The maths.py function computing elementwise op `op` (None for operators)."""
    name = attrs["activation"] + "_grad" if op == "act_grad" else op
    fn = getattr(maths, name, None)
    if fn is None or not callable(fn):
        raise NotImplementedError(f"no element function kgraph.kernels.maths.{name} for elementwise op {op!r}")
    return fn


@functools.cache
def _parameters(fn) -> list:
    """fn's (name, Parameter)s, read once per function (inspect.signature is slow)."""
    return list(inspect.signature(fn).parameters.items())


def element_call(op: str, args: list, attrs: dict, lit) -> str:
    """The scalar expression of elementwise op `op` on operand expressions `args`; `lit(value)`
    names a constant of the step's dtype."""
    if op in OPERATORS:
        return OPERATORS[op].format(*args)
    if op in PYTHON_MATH:
        return f"{PYTHON_MATH[op]}({args[0]})"
    if op == "act_grad" and attrs["activation"] == "linear":
        return args[0]
    fn = element_function(op, attrs)
    hyper = []
    for name, param in _parameters(fn)[len(args) :]:
        value = attrs.get(name, param.default)
        if value is inspect.Parameter.empty:
            raise NotImplementedError(f"elementwise op {op!r} needs attr {name!r}")
        hyper.append(repr(value) if isinstance(value, bool) else lit(value))
    return f"E.{fn.__name__}({', '.join(list(args) + hyper)})"


def activation_call(activation: str, x: str, attrs: dict, lit) -> str:
    """A GEMM epilogue's activation of x."""
    return x if activation == "linear" else element_call(activation, [x], attrs, lit)


# ---------------------------------------------------------------- optimizer updates


def update_record(op: str):
    if op not in UPDATES:
        raise NotImplementedError(f"no update kernel in kgraph.kernels.updates for {op!r}")
    return UPDATES[op]


def hyper_parameters(op: str, hyper) -> dict:
    """The op's hyper-parameters with Keras's defaults (ir/ops/optim.py) filled in."""
    return {**IR_UPDATES[op].defaults, **dict(hyper)}


# the per-step scalars of Keras's use_ema, after an update (kgraph.kernels.updates.moving_average),
# and of its gradient_accumulation_steps (kgraph.kernels.updates.accumulation_scalars)
EMA_SCALARS = ["ema_momentum", "ema_complement", "ema_overwrite", "ema_start"]
ACCUMULATION_SCALARS = ["apply_update", "accumulated_steps"]


def uses_ema(hyper: dict) -> bool:
    """Whether the update keeps Keras's moving average of the weights (a slot after its own)."""
    return hyper.get("ema_momentum") is not None


def accumulates(hyper: dict) -> bool:
    """Whether the update sums the gradients of several steps and applies their mean (its last slot)."""
    return bool(hyper.get("gradient_accumulation_steps"))


def update_parameters(op: str, hyper: dict) -> list:
    """The generated kernel's array parameters: w, g and the slots this configuration has, named as
    the element function names them, in the update node's operand order."""
    record = update_record(op)
    present = set(IR_UPDATES[op].slots(hyper))
    slots = [p for slot, p in zip(record.slots, record.slot_params) if slot in present]
    return ["w", "g"] + slots + ["ema_average"] * uses_ema(hyper) + ["gradient_sum"] * accumulates(hyper)


def update_scalars(op: str, hyper: dict) -> list:
    """The generated kernel's per-step scalar parameters other than Keras's generic ones."""
    ema, accumulation = EMA_SCALARS * uses_ema(hyper), ACCUMULATION_SCALARS * accumulates(hyper)
    return update_record(op).scalar_params + ema + accumulation


def update_statements(op: str, hyper: dict) -> list:
    """The lines updating element i: Keras's weight decay and the gradient scale around the
    element function (a slot this configuration lacks is passed as 0 and its result dropped),
    only on the steps that apply the summed gradients when they accumulate, then the moving
    average when the optimizer keeps one."""
    record = update_record(op)
    present = set(IR_UPDATES[op].slots(hyper))
    gradient = "(g[i] + gradient_sum[i]) / accumulated_steps" if accumulates(hyper) else "g[i]"
    results, args = ["w[i]"], ["w[i] - w[i] * decay", f"{gradient} * gscale"]
    for slot, param in zip(record.slots, record.slot_params):
        results.append(f"{param}[i]" if slot in present else "_")
        args.append(f"{param}[i]" if slot in present else "zero")
    lines = [f"{', '.join(results)} = U.{record.name}({', '.join(args + record.scalar_params)})"]
    if accumulates(hyper):
        lines = [
            "if apply_update:",
            f"    {lines[0]}",
            "    gradient_sum[i] = 0",
            "else:",
            "    gradient_sum[i] += g[i]",
        ]
    if uses_ema(hyper):  # from the weights before the step where tf-keras's average starts (ema_start)
        average = "w_before if ema_start else ema_average[i]"
        lines = ["w_before = w[i]", *lines]
        lines.append(f"w[i], ema_average[i] = U.moving_average(w[i], {average}, {', '.join(EMA_SCALARS[:3])})")
    return lines


def update_casts(scalars: list, statements: list, cast: str) -> list:
    """A generated update kernel's first lines: its scalars cast to the weights' type by `cast`
    (`f`, `float32`), and the 0 a slot this configuration lacks reads."""
    lines = [f"    {', '.join(scalars)} = {', '.join(f'{cast}({s})' for s in scalars)}"]
    if any("zero" in line for line in statements):
        lines.append(f"    zero = {cast}(0)   # a slot this configuration has not")
    return lines


def scalars_calls(op: str, hyper: dict) -> list:
    """[(names, call)]: the calls computing the kernel's per-step scalars (update_scalars) from lr,
    step and the hyper-parameters (keyword arguments)."""
    record = update_record(op)
    names = list(inspect.signature(record.scalars).parameters)[2:]
    keywords = ", ".join(f"{k}={hyper[k]!r}" for k in names)
    # the optimizer's own step count: updates, which are every n-th step when gradients accumulate
    steps = int(hyper.get("gradient_accumulation_steps") or 0)
    update = f"(step - 1) // {steps} + 1" if steps else "step"
    calls = [(record.scalar_params, f"U.{record.scalars.__name__}(lr, {update}, {keywords})")]
    if uses_ema(hyper):
        ema = f"{hyper['ema_momentum']!r}, {int(hyper.get('ema_overwrite_frequency') or 0)}"
        calls.append((EMA_SCALARS, f"U.moving_average_scalars({update}, {ema}, {bool(hyper.get('ema_from_weights'))})"))
    if steps:
        calls.append((ACCUMULATION_SCALARS, f"U.accumulation_scalars(step, {steps})"))
    return calls


def decay_expression(hyper: dict) -> str:
    """Keras's weight decay of this step: weight_decay * lr (w -= w * decay before the update)."""
    wd = float(hyper.get("weight_decay", 0.0) or 0.0)
    return f"{wd!r} * lr" if wd else "0.0"


# ---------------------------------------------------------------- recurrent layers


def rnn_codes(attrs: dict) -> tuple:
    """(cell, activation, recurrent activation) of an rnn_sequence node as the codes the kernels'
    cell maths takes (kgraph.kernels.maths.RNN_CELLS and RNN_ACTIVATIONS)."""
    codes = []
    for key in ("activation", "recurrent_activation"):
        name = attrs.get(key, "tanh" if key == "activation" else "sigmoid")
        if name not in maths.RNN_ACTIVATIONS:
            raise NotImplementedError(f"no recurrent cell kernel for {key} {name!r}")
        codes.append(maths.RNN_ACTIVATIONS.index(name))
    return (maths.RNN_CELLS.index(attrs["cell"]), *codes)
