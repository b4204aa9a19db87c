"""The op registry: each op is declared once with its shape rule, NumPy reference,
vector-Jacobian rule (written in IR ops) and fusion role."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable, Optional


class Pattern(Enum):
    SOURCE = "source"  # inputs, parameters, state, constants
    ELEMWISE = "elementwise"  # out[i] = f(in[i], ...) with NumPy broadcasting
    REDUCE = "reduction"  # sums over some axes
    GEMM = "gemm"  # matrix products: an elementwise epilogue may fuse into them
    VIEW = "view"  # reshape: no data moves, the output aliases the input
    OPAQUE = "opaque"  # anything else with its own kernel
    UPDATE = "update"  # writes its first operand in place (optimizer steps)


class Role(Enum):
    """What an op may be in a fusion rule. The passes match these, never op names, so a new op
    joins a rule by declaring the role where it is registered."""

    GEMM = "gemm"  # x @ w: may take a bias add and an activation as its epilogue
    BIAS_ADD = "bias_add"  # may be a GEMM's bias add (the GEMM first, a [N] vector second)
    ACTIVATION = "activation"  # f(x) a GEMM epilogue computes: its name is a key of ACTIVATIONS
    ACTIVATION_GRAD = "activation_grad"  # g * f'(v): may also write the bias gradient (its column sum)
    COLUMN_SUM = "column_sum"  # a sum over the leading axes: may be a bias gradient
    COLUMN_MEAN = "column_mean"  # a mean over the leading axes: the loop it reads may write it
    CHAIN = "chain"  # elementwise: may join a chain computed in one loop
    BROADCAST = "broadcast"  # its first operand repeated to another's shape: a loop may read it as is
    SOFTMAX = "softmax"  # a cross-entropy of its output reads its input as logits
    SIGMOID = "sigmoid"  # a binary cross-entropy of its output reads its input as logits
    OPTIMIZER_UPDATE = "optimizer_update"  # one parameter's update: all of them run in one loop


@dataclass
class OpDef:
    name: str
    pattern: Pattern
    infer: Callable  # (list[TensorType], attrs) -> TensorType
    forward: Callable  # NumPy reference: (*arrays, **attrs) -> array
    vjp: Optional[Callable] = None  # (graph, g, out, *inputs, **attrs) -> tuple of grad ids or None
    doc: str = ""
    roles: frozenset = frozenset()  # the Roles it may take in a fusion rule


REGISTRY: dict[str, OpDef] = {}


def register(op: OpDef) -> OpDef:
    if op.name in REGISTRY:
        raise ValueError(f"op {op.name!r} registered twice")
    REGISTRY[op.name] = op
    return op


def get_op(name: str) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown IR op {name!r}; known ops: {', '.join(sorted(REGISTRY))}") from None


def has_role(op: str, role: Role) -> bool:
    """Whether op (a name) declares `role`."""
    return role in get_op(op).roles
