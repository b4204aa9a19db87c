"""All IR ops. Importing this package registers them."""

from . import elementwise, fused, nn, optim, recurrent, tensor  # noqa: F401  (registration side effects)
from .elementwise import ACTIVATIONS, activation_name, unbroadcast
from .registry import REGISTRY, OpDef, Pattern, Role, get_op, has_role, register


def _source_type(types, attrs):
    raise TypeError("a source node's type is given when it is created")


for _op in ("input", "label", "sample_weight", "param", "state", "scalar", "rng", "const"):
    register(OpDef(_op, Pattern.SOURCE, _source_type, None, None))

__all__ = [
    "REGISTRY",
    "OpDef",
    "Pattern",
    "Role",
    "get_op",
    "has_role",
    "register",
    "ACTIVATIONS",
    "activation_name",
    "unbroadcast",
]
