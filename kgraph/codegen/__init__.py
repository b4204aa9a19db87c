"""Code generation: Python source of Numba kernels from a compiled graph and its memory plan."""
from .cpu import generate as generate_cpu

__all__ = ["generate_cpu"]
