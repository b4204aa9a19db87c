"""Small real datasets bundled with kgraph, loaded like `keras.datasets.*`."""

from kgraph.datasets import digits

__all__ = ["digits"]
