"""The op registry: each op is declared once with its shape rule, NumPy reference,
vector-Jacobian rule (written in IR ops) and fusion role."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable, Optional


class Pattern(Enum):
    SOURCE = "source"          # inputs, parameters, state, constants
    ELEMWISE = "elementwise"   # out[i] = f(in[i], ...) with NumPy broadcasting
    REDUCE = "reduction"       # sums over some axes
    GEMM = "gemm"              # matrix products: an elementwise epilogue may fuse into them
    VIEW = "view"              # reshape: no data moves, the output aliases the input
    OPAQUE = "opaque"          # anything else with its own kernel
    UPDATE = "update"          # writes its first operand in place (optimizer steps)


@dataclass
class OpDef:
    name: str
    pattern: Pattern
    infer: Callable            # (list[TensorType], attrs) -> TensorType
    forward: Callable          # NumPy reference: (*arrays, **attrs) -> array
    vjp: Optional[Callable] = None  # (graph, g, out, *inputs, **attrs) -> tuple of grad ids or None
    doc: str = ""


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
