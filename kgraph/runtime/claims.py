"""Which of a program and its compile child compiles each kernel of a new step's first call:
one of them, never both.

On an empty cache the first call compiles its kernels from the first while the child compiles
them from the last (background.py, kernel_trace.py). Where the two met, each compiled the kernel
the other had started: an LSTM's gradient loop, 3 s of compiling, twice. Now each kernel of the
child's list has a claim, a file that whichever comes first creates (O_EXCL: one of two creators
wins), and a second file once its compile is over. The child skips a kernel the program claimed;
the program waits for one the child claimed (until its compile is over, or the child has ended)
and then loads it from Numba's cache, compiling it only if it is not there. The child's side is
kernel_trace.compile_all.

A job's claims live in a directory of their own under the kgraph cache's `claims/`, removed when
the program is done with them or ends; one that a killed program left (SIGKILL, or SIGTERM, which
runs no Python exit handler) goes when a later job finds it an hour old."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
import weakref

POLL_SECONDS = 0.01
STALE_SECONDS = 3600  # longer than any child's compile (child.py bounds its CPU time: 900 s by default)


class Claims:
    """The claims of one compile job's kernels, in a directory of their own."""

    def __init__(self, directory: str):
        self.directory = os.path.abspath(directory)  # the same place after a chdir
        self.lock = threading.Lock()  # the program's threads: one takes a claim, or waits, at a time

    @classmethod
    def new(cls) -> Claims | None:
        """Claims in a new directory, removed when the object goes (or the program ends), after
        removing those that killed programs left; None where the cache has no room for one (claims
        only save work: both then compile where they meet, as before)."""
        from .cache import cache_dir

        try:
            root = cache_dir() / "claims"
            root.mkdir(exist_ok=True)
            remove_stale(root)
            claims = cls(tempfile.mkdtemp(prefix="job-", dir=root))
        except OSError:
            return None
        weakref.finalize(claims, shutil.rmtree, claims.directory, True)
        return claims

    def take(self, i: int) -> bool:
        """Claim kernel i: True for the first to ask, False for anyone after."""
        try:
            os.close(os.open(self._path(i), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            return False
        except OSError:  # the directory is gone: the program needs no claim any more (the child
            return True  # then compiles the rest of its list, loading what is in the cache)

    def done(self, i: int) -> None:
        """Kernel i's compile is over (compiled, or failed: the program then compiles it itself)."""
        try:
            os.close(os.open(self._path(i) + ".done", os.O_CREAT | os.O_WRONLY))
        except OSError:
            pass

    def is_done(self, i: int) -> bool:
        return os.path.exists(self._path(i) + ".done") or not os.path.isdir(self.directory)

    def _path(self, i: int) -> str:
        return os.path.join(self.directory, str(i))


def remove_stale(root) -> None:
    """Remove the claims directories under `root` that killed programs left (an hour old)."""
    before = time.time() - STALE_SECONDS
    for directory in root.glob("job-*"):
        try:
            if directory.stat().st_mtime < before:
                shutil.rmtree(directory, ignore_errors=True)
        except OSError:  # gone meanwhile
            pass


def in_program(claims: Claims, kernels: list, child) -> None:
    """While `child` (a Popen) compiles `kernels` ([(dispatcher, signature)], in the child's
    order) from the first: each kernel's compile in this program first takes its claim, or, if
    the child has it, waits for the child to finish it (or end), then compiles (Numba loads it
    from its cache, where the child put it). A kernel's hook goes once all its listed signatures
    have compiled."""
    for i, (kernel, sig) in enumerate(kernels):
        hook = vars(kernel).get("compile")
        if hook is None:
            kernel.compile = _hook(claims, kernel, {_arguments(sig): i}, child)
        elif getattr(hook, "claims", None) is claims:  # the kernel again, for other argument types
            hook.claimed[_arguments(sig)] = i
        # else another job's kernel still: this one's child may compile it too, as before claims


def _hook(claims: Claims, kernel, claimed: dict, child):
    def compile(sig):
        with claims.lock:  # a second thread calling the kernel waits here, rather than compiling it too
            i = claimed.pop(_arguments(sig), None)
            if i is not None and not claims.take(i):  # the child has it: wait for it instead
                while not claims.is_done(i) and child.poll() is None:
                    time.sleep(POLL_SECONDS)
            if not claimed:
                vars(kernel).pop("compile", None)  # Numba's own compile again
        return type(kernel).compile(kernel, sig)

    compile.claims, compile.claimed = claims, claimed
    return compile


def _arguments(sig) -> tuple:
    """The argument types of `sig`: a tuple of types, or a Signature (first-class function types
    compile with one)."""
    from numba.core.sigutils import normalize_signature  # (cache.py imports this module before Numba)

    return tuple(normalize_signature(sig)[0])
