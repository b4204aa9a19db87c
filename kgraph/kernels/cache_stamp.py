"""Let Numba's cache of a kernel go stale when any kernel source changes, not only its own file.

Numba keeps a function's compiled code while the function's own file is unchanged (its source
stamp), but the code holds the compiled callees from other files too: a cpu.py kernel carries
rnn_rows.py's loops and maths.py's cell maths. Change rnn_rows.py alone, as a pull or an upgrade
over a used cache can, and cpu.py's cached kernels went on running the old loops. `install()`
adds the kernels' fingerprint (a hash of every file of this package) to the stamp of the
functions defined here, so their cache is stale after any change of a kernel."""

from __future__ import annotations

import os


def install() -> None:
    """Put, before each of Numba's cache locators, one that takes only this package's functions
    and stamps them with the fingerprint too (once: a second call finds them there); does nothing
    where this Numba's internals differ from those this was written against (0.61 to 0.68)."""
    try:
        from numba.core.caching import CacheImpl
    except ImportError:
        return
    locators = getattr(CacheImpl, "_locator_classes", None)
    if not isinstance(locators, list) or any(getattr(c, "kgraph_kernels", False) for c in locators):
        return
    CacheImpl._locator_classes = [_for_kernels(c) for c in locators] + locators


def _for_kernels(locator):
    here = os.path.dirname(os.path.abspath(__file__))

    class KernelsLocator(locator):
        kgraph_kernels = True

        @classmethod
        def from_function(cls, py_func, py_file):
            if os.path.dirname(os.path.abspath(py_file)) != here:
                return None
            return super().from_function(py_func, py_file)

        def get_source_stamp(self):
            from . import fingerprint

            return super().get_source_stamp(), fingerprint()

    KernelsLocator.__name__ = KernelsLocator.__qualname__ = f"Kernels{locator.__name__}"
    return KernelsLocator
