"""kgraph: compiles a saved Keras model configuration into fused Numba kernels and trains it,
with Keras's API and no TensorFlow at run time.

    import kgraph
    model = kgraph.models.load_model("model.json")

The public modules load on first use (as `import keras` exposes keras.models, keras.optimizers,
...), so `import kgraph` stays cheap and `kgraph cache` never pays for Numba."""

from __future__ import annotations

import importlib
import os

# Numba formats an error message, colour markup included, for every overload and constant it
# tries and rejects while typing, tens of thousands a model, and mostly throws them away: without
# the markup, typing and compiling a step take about 5% less. A user's own setting wins; Numba
# reads it when it is first imported.
os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")

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
