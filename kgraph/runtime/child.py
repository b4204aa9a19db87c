"""The compile child's process, apart from what it compiles (background.py): starting one, handing
it its job, and ending it with its program.

A child never outlives its program: it holds the read end of a pipe whose write end only the
parent has, and exits when that pipe closes, which the operating system does however the parent
ends (a return, an exception, SIGKILL). Its CPU time and address space are bounded
(KGRAPH_COMPILE_SECONDS, default 900; KGRAPH_COMPILE_MEMORY_MB, default 8192)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .policy import plain

COMPILER = "from kgraph.runtime.background import main; main()"


def enabled() -> bool:
    """Whether new steps compile in a child while their Python functions run."""
    return os.environ.get("KGRAPH_BACKGROUND_COMPILE", "1") != "0" and not plain()


def spawn(code: str, payload: bytes) -> subprocess.Popen:
    """A child Python running `code`, given `payload` (read by read_payload()), whose stdin stays
    open for as long as this process lives: the child's watch_parent() ends it when it closes.
    Silent: a failure shows when the caller compiles the step itself."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    child.stdin.write(len(payload).to_bytes(8, "little") + payload)
    child.stdin.flush()
    return child


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
