"""The compile child's process, apart from what it compiles (background.py): starting one (ahead of
its job where a step will compile: start_spare), handing it its job, and ending it with its program.

A child never outlives its program: it holds the read end of a pipe whose write end only the
parent has, and exits when that pipe closes, which the operating system does however the parent
ends (a return, an exception, SIGKILL). Its CPU time and address space are bounded
(KGRAPH_COMPILE_SECONDS, default 900; KGRAPH_COMPILE_MEMORY_MB, default 8192)."""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
from pathlib import Path

from .policy import plain

COMPILER = "from kgraph.runtime.background import main; main()"


def enabled() -> bool:
    """Whether new steps compile in a child while their Python functions run."""
    return os.environ.get("KGRAPH_BACKGROUND_COMPILE", "1") != "0" and not plain()


def spawn(code: str, payload: bytes) -> subprocess.Popen:
    """A child Python running `code`, given `payload` (read by read_payload()), whose stdin stays
    open for as long as this process lives: the child's watch_parent() ends it when it closes.
    Silent: a failure shows when the caller compiles the step itself. The compile child started
    ahead (start_spare) takes the job if it still waits for one."""
    child = _take_spare() if code == COMPILER else None
    if child is None:
        child = subprocess.Popen([sys.executable, "-c", code], env=_child_env(), **_QUIET)
    child.stdin.write(len(payload).to_bytes(8, "little") + payload)
    child.stdin.flush()
    return child


_QUIET = {"stdin": subprocess.PIPE, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


def _child_env() -> dict:
    package_root = str(Path(__file__).resolve().parents[2])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))


# The compile child started before its job is known (start_spare), with the settings it has (what
# decides what it compiles and where: its NUMBA_, KGRAPH_ and PYTHON variables, HOME, the working
# folder). A new Python needs about a second to import Numba and kgraph's kernels, which an empty
# cache's first step would otherwise spend compiling kernels alone. It waits for its job on stdin
# for SPARE_WAIT_SECONDS (KGRAPH_SPARE_WAIT_SECONDS), then exits: a step that runs compiled at
# once (replicas' halves), or never runs (save, inspect), leaves it no job.
SPARE_WAIT_SECONDS = 60
_spare = None
_spare_lock = threading.Lock()


def start_spare() -> None:
    """Start the compile child ahead of a step that will compile (kgraph train or compile() on a
    cache without the kernels; a step added that is not in the cache), unless one waits already,
    steps do not compile in children, or the program runs no step (policy.runs_steps)."""
    global _spare
    if not spares_start():
        return
    env = _child_env()
    with _spare_lock:
        if _spare is not None and (_spare[1] != _settings(env) or _spare[0].poll() is not None):
            _end(_spare[0])  # started for other settings (a cache elsewhere), or gone
            _spare = None
        if _spare is None:
            _spare = (subprocess.Popen([sys.executable, "-c", COMPILER], env=env, **_QUIET), _settings(env))


def spares_start() -> bool:
    """Whether start_spare starts one: new steps compile in children, and this program runs steps."""
    from . import policy

    return enabled() and policy.compile_steps() and policy.runs_steps


def start_spare_for_new_kernels() -> None:
    """start_spare, where no step has yet found this kgraph's kernels compiled in the cache Numba
    uses now (cache.kernels_compiled): a model's first step will compile them."""
    from .cache import kernels_compiled

    if spares_start() and not kernels_compiled():
        start_spare()


def stop_spare() -> None:
    """End the child started ahead, if it still has no job."""
    global _spare
    with _spare_lock:
        spare, _spare = _spare, None
    if spare is not None:
        _end(spare[0])


atexit.register(stop_spare)  # one still waiting ends with this program, and is waited for


def _take_spare():
    """The child started ahead, if it is alive and has this process's settings (it is then no
    longer the spare)."""
    global _spare
    with _spare_lock:
        spare, _spare = _spare, None
    if spare is not None and spare[1] == _settings(_child_env()) and spare[0].poll() is None:
        return spare[0]
    if spare is not None:
        _end(spare[0])
    return None


def _settings(env: dict) -> dict:
    chosen = {k: v for k, v in env.items() if k.startswith(("NUMBA_", "KGRAPH_", "PYTHON")) or k == "HOME"}
    return {**chosen, "": os.getcwd()}  # relative cache folders are the working folder's


def _end(child) -> None:
    child.kill()
    child.wait()
    close(child)


def wait_for_job() -> bytes:
    """In a child started ahead: its job, or b"" once SPARE_WAIT_SECONDS pass without one (or its
    program ends)."""
    seconds = float(os.environ.get("KGRAPH_SPARE_WAIT_SECONDS", SPARE_WAIT_SECONDS))
    timer = threading.Timer(seconds, os._exit, (0,))
    timer.daemon = True
    timer.start()
    payload = read_payload()
    timer.cancel()
    return payload


def close(child) -> None:
    stdin = getattr(child, "stdin", None)
    if stdin is not None and not stdin.closed:
        stdin.close()


def read_payload() -> bytes:
    """In the child: the bytes spawn() sent."""
    size = int.from_bytes(sys.stdin.buffer.read(8), "little")
    return sys.stdin.buffer.read(size)


def watch_parent() -> None:
    """In the child: exit at once when the parent's end of stdin closes (the parent ended, however
    it ended), and bound this process's CPU time and memory."""
    import threading

    def wait_for_eof():
        # the raw descriptor, not sys.stdin's buffer: a daemon thread holding the buffer's lock
        # aborts the interpreter's shutdown when the compile is done
        while os.read(sys.stdin.fileno(), 4096):
            pass
        os._exit(3)

    threading.Thread(target=wait_for_eof, daemon=True).start()
    try:
        import resource
    except ImportError:  # not POSIX: no limits, the pipe still ends the child
        return
    seconds = int(os.environ.get("KGRAPH_COMPILE_SECONDS", "900"))
    memory = int(os.environ.get("KGRAPH_COMPILE_MEMORY_MB", "8192")) << 20
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
