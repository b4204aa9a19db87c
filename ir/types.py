"""Tensor types: a shape whose dimensions are ints or the symbolic batch "B", and a dtype."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BATCH = "B"  # the symbolic batch dimension
DTYPES = ("float32", "float64", "int32", "int64")
_SHORT = {"float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64"}


@dataclass(frozen=True)
class TensorType:
    shape: tuple
    dtype: str = "float32"

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"unsupported dtype {self.dtype!r}; supported: {', '.join(DTYPES)}")
        for d in self.shape:
            if d != BATCH and not (isinstance(d, (int, np.integer)) and d >= 0):
                raise ValueError(f"bad dimension {d!r} in shape {self.shape}")
        object.__setattr__(self, "shape", tuple(d if d == BATCH else int(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def has_batch(self) -> bool:
        return BATCH in self.shape

    def concrete(self, batch: int) -> tuple:
        """The shape with the batch dimension set to `batch`."""
        return tuple(batch if d == BATCH else d for d in self.shape)

    def per_batch_size(self) -> tuple:
        """(a, c): the element count is a*B + c (one of the two is zero)."""
        n = 1
        for d in self.shape:
            if d != BATCH:
                n *= d
        return (n, 0) if self.has_batch else (0, n)

    def numel(self, batch: int) -> int:
        return int(np.prod(self.concrete(batch), dtype=np.int64))

    def with_shape(self, shape) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def __str__(self) -> str:
        text = self.__dict__.get("_str")  # printed once: a large graph prints each type many times
        if text is None:
            text = f"{_SHORT[self.dtype]}[{','.join(str(d) for d in self.shape)}]"
            object.__setattr__(self, "_str", text)  # not a field: equality and hashing ignore it
        return text


def scalar(dtype: str = "float32") -> TensorType:
    return TensorType((), dtype)


def broadcast_shapes(a: tuple, b: tuple) -> tuple:
    """NumPy broadcasting over shapes that may hold the symbolic batch dimension."""
    out = []
    for i in range(max(len(a), len(b))):
        da = a[len(a) - 1 - i] if i < len(a) else 1
        db = b[len(b) - 1 - i] if i < len(b) else 1
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise ValueError(f"shapes {a} and {b} do not broadcast")
    return tuple(reversed(out))
