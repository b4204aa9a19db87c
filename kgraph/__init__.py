"""kgraph: compiles a saved Keras model configuration into fused Numba kernels and trains it,
with Keras's API and no TensorFlow at run time."""
__version__ = "0.1.0"
