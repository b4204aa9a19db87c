"""Checks of Python sources that several test modules share."""

import ast


def array_slice_assignments(source: str, shared: bool = False) -> list:
    """The lines of `source` that assign (or add) into a slice something other than a number:
    `a[i:j] = b`, `a[i, :] += b[k]`. Numba compiles the message of such an assignment's
    shape-mismatch error (string formatting: about 2 s) into the first function that has one.
    shared: `source` is a generated step's, whose loop kernels are the strings it passes to
    shared_kernel: theirs too (as "line of the call: line in the kernel")."""

    def is_slice_target(node):
        return isinstance(node, ast.Subscript) and any(
            isinstance(part, ast.Slice)
            for part in (node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice])
        )

    found = []
    for node in ast.walk(ast.parse(source)):
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
        )
        value = getattr(node, "value", None)
        number = isinstance(value, ast.Constant) or (
            isinstance(value, ast.UnaryOp) and isinstance(value.operand, ast.Constant)
        )
        if any(is_slice_target(t) for t in targets) and not number:
            found.append(node.lineno)
        if shared and isinstance(node, ast.Call) and getattr(node.func, "id", None) == "shared_kernel":
            kernel = node.args[0].value
            found += [f"{node.lineno}: {line}" for line in array_slice_assignments(kernel)]
    return found
