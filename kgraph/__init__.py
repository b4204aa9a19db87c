"""kgraph: compiles a saved Keras model configuration into fused Numba kernels and trains it,
with Keras's API and no TensorFlow at run time.

    import kgraph
    model = kgraph.models.load_model("model.json")

The public modules load on first use (as `import keras` exposes keras.models, keras.optimizers,
...), so `import kgraph` stays cheap and `kgraph cache` never pays for Numba."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = ("models", "optimizers", "losses", "metrics", "callbacks", "distribute", "datasets", "saving", "data")
__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module  # later lookups skip this function
        return module
    raise AttributeError(f"module 'kgraph' has no attribute {name!r}; its public modules are {', '.join(_PUBLIC)}")


def __dir__():
    return sorted([*globals(), *_PUBLIC])
