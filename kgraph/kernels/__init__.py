"""The kernel library the compiled steps call, owned by the runtime (a trainer written by
`kgraph compile -o DIR` runs with kgraph.runtime and this package alone).

- maths.py: the element and row maths, written once as plain Python functions that Numba
  compiles for the CPU (`njit`) and for CUDA (`cuda.jit`) alike;
- updates.py: one record per optimizer (its element update and its per-step scalars);
- cpu.py, cuda.py: what truly differs per target (GEMMs, images, pooling, reductions, lookups;
  on the CPU also the recurrent layers' time loops over maths.py's cell maths) and the thin loops
  that apply the row maths; rnn_rows.py: the CPU's recurrent loops over a step's units, as rows;
  blas.py: sgemm for the CPU; numpy_forms.py: NumPy code computing the same bits as some of
  cpu.py's kernels (copies, GEMMs, im2col, pooling), which a step's Python function runs instead
  (the last until they are compiled: runtime/serial.py); by_type.py: cpu.py's kernels compile per argument types, not per
  constant; cache_at_o0.py: lets Numba cache those at NUMBA_OPT=0 too;
  cache_lock.py: lets two processes save to Numba's cache at once; cache_stamp.py: makes a
  kernel's cached code stale when any kernel file changes, not only its own.

The code generators (kgraph/codegen) spell calls of these; nothing here imports them."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from . import cache_at_o0, cache_lock, cache_stamp

cache_at_o0.install()  # before any kernel compiles: at NUMBA_OPT=0 kernels calling kernels cache too
cache_lock.install()  # the compile child and its program save to the same cache at once
cache_stamp.install()  # a kernel's cached code goes stale when any kernel file changes


@functools.cache
def fingerprint() -> str:
    """A hash of this package's sources as this process first read them (the code it runs, even
    if the files change later). Generated files carry it, so a change of the kernels gives new
    file names and Numba's on-disk cache (which tracks a file, not what it calls) never serves
    code compiled against the old ones."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
