"""kgraph's intermediate representation: typed nodes in a networkx graph, one op registry."""

from . import ops
from .dot import to_dot
from .graph import SOURCE_OPS, Graph, Node
from .interpret import interpret
from .ops import REGISTRY, OpDef, Pattern, Role, get_op, has_role
from .printer import format_graph, format_node
from .types import BATCH, TensorType, scalar
from .verify import VerifyError, verify

__all__ = [
    "ops",
    "Graph",
    "Node",
    "SOURCE_OPS",
    "TensorType",
    "BATCH",
    "scalar",
    "REGISTRY",
    "OpDef",
    "Pattern",
    "Role",
    "get_op",
    "has_role",
    "verify",
    "VerifyError",
    "interpret",
    "format_graph",
    "format_node",
    "to_dot",
]
