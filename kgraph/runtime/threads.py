"""How a compiled CPU step uses the cores: the step's GEMMs split by weight rows over Numba's
threads (kgraph/passes/split.py), or whole on BLAS's own threads, or everything on one thread;
never both thread pools at once.

Which is fastest depends on the model, the batch and how busy the machine is (threads wait for
each other: on a loaded machine one that lost its core stalls the step; OpenBLAS's threads cut a
GEMM with 9 rows badly), so each step kind and batch size times the candidates for a few calls,
keeps the fastest, and looks again now and then. Where the GEMM shapes make the choice clear
(very small or very large GEMMs) nothing is timed; timing other settings takes at most BUDGET of
the step time (a short run never looks); and a finished look's choice is remembered in the cache
(MEMORY), so that later runs of the same step start with it instead of looking again."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import numba
import scipy.linalg.cython_blas  # noqa: F401  (the BLAS Numba's np.dot calls: load it so its threads can be limited)
from threadpoolctl import ThreadpoolController

from .cache import THREAD_CHOICES, cache_dir
from .files import write_text
from .policy import plain

# From this many FLOPs in its largest GEMM a step runs its GEMMs whole on BLAS's threads, untimed;
# below SMALL_GEMM_FLOPS whole on one thread, untimed (a GEMM of a megaflop takes tens of microseconds
# on one core, about what waking and joining the other threads costs: a conservative bound, which the
# benchmarks may raise). Between the two the tuner times the settings, within its budget.
LARGE_GEMM_FLOPS = 2e8
SMALL_GEMM_FLOPS = 1e6
# Seconds of steps in a call while a setting is timed (fit and evaluate shorten their calls to it,
# model.StepsPerCall); a timed call costs at least this, or one step when that takes longer.
PROBE_CALL_SECONDS = 0.002
_blas = ThreadpoolController()


class PartsTuner:
    """Times the candidate thread settings of one step, a few calls each, then keeps the one with
    the lowest median. The kept option (at first the first) runs the calls; a look times each other
    option in a block of PROBES + 1 calls, and a block starts only when the seconds spent on other
    options' calls, the block's included, stay within BUDGET of all calls' seconds so far: a short
    run (an 8-step epoch) never looks; a long one ends its first look once its steps have taken
    about 1 / BUDGET times the look (some 0.5 s for two other options timed in calls of 2 ms). It
    keeps timing the kept one: when its recent mean grows past the others' (another process took
    a core: split parts stall), or after `reprobe` calls (twice as long after each look that did
    not change its mind), it looks again: at every option after a drift, at the close contenders
    (within CLOSE of the kept one) on schedule. An option more than twice as slow as another's
    best call (ten times, for its cold first call) stops being probed at once (a split step on a
    busy machine can take 100x longer). Idle threads of the pool used last may keep spinning for a
    while (ThreadPlan.use ends OpenBLAS's), so the drift check waits GRACE seconds of calls after
    each look. While it times, fit and evaluate make their calls short (`probing`), so that a block
    costs a few milliseconds.
    `kept`: an option remembered from an earlier run (ThreadPlan), kept without a first look."""

    PROBES = 5
    REPROBE = 2000
    MAX_REPROBE = 64000
    DRIFT = 1.5  # the kept option's recent mean over the others' probed medians that triggers a look
    CLOSE = 1.3  # a scheduled look times again the options whose median was within this of the kept one's
    GRACE = 0.3
    BUDGET = 0.05  # the largest share of the calls' seconds that timing other options may take

    def __init__(self, options, kept=None, budget=None):
        self.options = list(options)
        self.samples = {o: [] for o in self.options}
        self.budget = self.BUDGET if budget is None else budget
        self.reprobe = self.REPROBE
        self.recent = None  # moving mean of the kept option's calls
        self.settled = 0.0  # seconds of calls since the last look
        self.seconds = 0.0  # of every call
        self.probe_seconds = 0.0  # of the calls of options other than the kept one
        self.probe_calls = 0  # calls of options other than the kept one (tests count them)
        self.decided = 0  # looks finished
        if kept in self.options:
            self.best, self.looking, self.next_probe = kept, [], self.REPROBE
        else:
            self.best, self.looking, self.next_probe = self.options[0], list(self.options), -1

    def pick(self):
        if len(self.options) == 1:
            return self.best
        if self.next_probe == 0:  # a scheduled look
            best = self.samples[self.best]
            self._look(
                [
                    o
                    for o in self.options
                    if not best or not self.samples[o] or self._median(o) <= self.CLOSE * self._median(self.best)
                ]
            )
        option = self._next_timed()
        if option is not None:
            return option
        if self.next_probe > 0:
            self.next_probe -= 1
        return self.best

    def _next_timed(self):
        """The option the next call times, or None: the kept one first, then each other one in a
        block, once the budget affords the block (and to its end once started)."""
        pending = [o for o in self.looking if len(self.samples[o]) <= self.PROBES]  # the first is a warm-up
        if not pending:
            return None
        if self.best in pending:
            return self.best
        option = pending[0]  # one option at a time: switching thread pools costs while the other one spins
        if self.samples[option]:
            return option
        block = (self.PROBES + 1) * max(self._median(self.best), PROBE_CALL_SECONDS)
        return option if self.probe_seconds + block <= self.budget * (self.seconds + block) else None

    @property
    def probing(self) -> bool:
        """Whether the next call times an option rather than runs the kept one."""
        if len(self.options) == 1:
            return False
        return self.next_probe == 0 or self._next_timed() is not None

    def _median(self, option) -> float:
        return statistics.median(self.samples[option][1:])

    def _look(self, options) -> None:
        """Time `options` again (the others keep their samples)."""
        for o in options:
            self.samples[o] = []
        self.looking = [o for o in self.options if o in options]
        self.next_probe, self.recent, self.settled = -1, None, 0.0

    def record(self, option, seconds, steps=1) -> None:
        """A call of `option` ran `steps` steps at `seconds` a step."""
        if len(self.options) == 1:
            return
        self.seconds += seconds * steps
        if option != self.best:
            self.probe_seconds += seconds * steps
            self.probe_calls += 1
        samples = self.samples[option]
        if option not in self.looking or len(samples) > self.PROBES:  # a call of the kept option
            self.settled += seconds
            others = [self._median(o) for o in self.options if o != option and len(self.samples[o]) > self.PROBES]
            if self.settled < self.GRACE or not others:
                return
            self.recent = seconds if self.recent is None else 0.9 * self.recent + 0.1 * seconds
            if self.recent > self.DRIFT * min(others):
                self.reprobe = self.REPROBE
                self._look(self.options)
            return
        samples.append(seconds)
        fastest = min((min(s[1:]) for s in self.samples.values() if len(s) > 1), default=seconds)
        # far slower: dropped at once (its warm-up call, cold, only when ten times slower)
        if seconds > (2 if len(samples) > 1 else 10) * fastest:
            samples.extend([seconds] * (self.PROBES + 1 - len(samples)))
        self._decide()

    def _decide(self) -> None:
        if all(len(self.samples[o]) > self.PROBES for o in self.looking):
            timed = [o for o in self.options if len(self.samples[o]) > self.PROBES]
            best = min(timed, key=self._median)
            self.reprobe = min(2 * self.reprobe, self.MAX_REPROBE) if best == self.best else self.REPROBE
            self.best, self.next_probe, self.looking = best, self.reprobe, []
            self.decided += 1


class ThreadPlan:
    """The thread settings of one executable; max_threads caps the cores (replicas sharing the
    cores set 1). The settings hold for the whole process until `release` gives the user's back."""

    def __init__(self):
        self.max_threads = None
        self._tuners = {}
        self._decided = {}  # tuner key -> looks finished when last remembered
        self._blas_threads = None
        # before the first call that set them: (a threadpoolctl limiter that can restore BLAS's limits,
        # Numba's threads, BLAS's largest thread count)
        self._restore = None

    def cores(self) -> int:
        cores = os.cpu_count() or 1
        return min(cores, self.max_threads or cores)

    def options(self, m, batch) -> list:
        """The (parts, BLAS threads) settings worth timing for step manifest m at this batch size,
        in the order they are timed: whole on one thread, split over the cores, whole on BLAS's
        threads. One thread first: a program's first calls run cold (caches, threads asleep, fit's
        first call of one step), and a split step timed then looked slower than it is (784-128-10
        at batch 32: 300 to 500 us a step in the first calls, 210 later), so it lost in half the
        runs. BLAS's threads last: they spin for a while after their last call."""
        if plain():  # one setting, untimed (kgraph/runtime/policy.py)
            return [(1, 1)]
        cores, parts = self.cores(), m.parts
        if m.gemm_flops_per_sample * batch >= LARGE_GEMM_FLOPS:
            return [(1, cores)]
        if m.gemm_flops_per_sample * batch < SMALL_GEMM_FLOPS:
            return [(1, 1)]
        split = [(parts, 1)] if 1 < parts <= cores else []
        return [(1, 1)] + split + ([(1, cores)] if cores > 1 else [])

    def tuner(self, kind, m, batch) -> PartsTuner:
        key = (kind, batch, self.max_threads)
        if key not in self._tuners:
            options = self.options(m, batch)
            kept = remembered(self._memory_key(m, batch)) if len(options) > 1 else None
            self._tuners[key] = PartsTuner(options, kept=kept)
            self._decided[key] = 0
        return self._tuners[key]

    def _memory_key(self, m, batch):
        """What a remembered choice is filed under: the step's generated file (named by the hash
        of what it computes), its function, the batch size and the cores it may use."""
        module = getattr(m, "module", None)
        if not module:
            return None
        return f"{Path(module).name}:{getattr(m, 'function', '')}:{batch}:{self.cores()}"

    def pick(self, kind, m, batch, compiled=True, compiling=False) -> tuple:
        """The setting of the next call: the tuner's for a compiled step. Its Python function
        (while the step compiles, background.py) runs on one thread while a child compiles on
        another core, and its first call takes the first option."""
        if compiled:
            return self.tuner(kind, m, batch).pick()
        return (1, 1) if compiling else self.options(m, batch)[0]

    def record(self, kind, m, batch, option, seconds, steps=1) -> None:
        """A compiled call's seconds a step with `option` (over `steps` steps), for the tuner; a
        finished look's choice is remembered for the next run of this step."""
        tuner = self.tuner(kind, m, batch)
        tuner.record(option, seconds, steps)
        key = (kind, batch, self.max_threads)
        if tuner.decided != self._decided[key]:
            self._decided[key] = tuner.decided
            remember(self._memory_key(m, batch), tuner.best)

    def probing(self, kind, batch) -> bool:
        """Whether the next call of this step kind at this batch size times a thread setting
        (also before its first call, which starts the first look)."""
        tuner = self._tuners.get((kind, batch, self.max_threads))
        return tuner is None or tuner.probing

    def forget(self, kind) -> None:
        """Drop the timings of a step kind that was compiled again (its options may differ)."""
        self._tuners = {k: t for k, t in self._tuners.items() if k[0] != kind}
        self._decided = {k: n for k, n in self._decided.items() if k[0] != kind}

    def use(self, option, m) -> int:
        """Set Numba's and BLAS's threads for a call; returns the parts the step runs in."""
        parts, blas = option
        numba_threads = numba.get_num_threads()
        if m.parts > 1 and numba_threads != parts:  # per calling thread
            numba.set_num_threads(parts)
        if blas != self._blas_threads:  # a limit costs a library call: set it only when it changes
            if self._restore is None:
                before = max((lib["num_threads"] for lib in _blas.select(user_api="blas").info()), default=1)
                self._restore = (_blas.limit(limits=blas, user_api="blas"), numba_threads, before)
            else:
                _blas.limit(limits=blas, user_api="blas")
            if blas == 1 and (self._blas_threads or 1) > 1:
                stop_idle_blas_threads()
            self._blas_threads = blas
        return parts

    def release(self) -> None:
        """Give BLAS and Numba back the threads they had before the first call: fit, evaluate and
        predict end with it, so that the user's own NumPy has all its threads again. (A loop of
        train_on_batch keeps the step's setting: setting it costs tens of microseconds a call.)"""
        if self._restore is None:
            return
        limiter, numba_threads, before = self._restore
        limiter.restore_original_limits()
        numba.set_num_threads(numba_threads)
        # Setting BLAS's threads may start its pool, spinning: the next call that limits them ends it
        self._restore, self._blas_threads = None, before


MEMORY = THREAD_CHOICES  # in the cache folder: step file:function:batch:cores -> [parts, BLAS threads]


def remembered(key):
    """The setting a finished look chose for `key` in an earlier run, or None."""
    if key is None:
        return None
    try:
        choice = json.loads((cache_dir() / MEMORY).read_text()).get(key)
    except (OSError, ValueError, AttributeError):  # none yet, or unreadable: look again
        return None
    return tuple(choice) if isinstance(choice, list) and len(choice) == 2 else None


def remember(key, option) -> None:
    """File a look's choice for later runs (best effort: a cache that cannot be written is looked
    at again next run). Concurrent writers may drop each other's entries, which only costs a look."""
    if key is None:
        return
    path = cache_dir() / MEMORY
    try:
        memory = json.loads(path.read_text())
        memory = memory if isinstance(memory, dict) else {}
    except (OSError, ValueError):
        memory = {}
    memory[key] = list(option)
    try:
        write_text(path, json.dumps(memory, sort_keys=True))
    except OSError:
        pass


def stop_idle_blas_threads() -> None:
    """End OpenBLAS's thread pools (its next threaded call starts them again). Its idle threads
    spin for about 0.1 s after its last threaded call (2^28 cycles), and a step split over the
    cores that runs meanwhile takes twice as long (784-128-10 at batch 256: 2.6 ms a step instead
    of 1.2 for 80 ms after a look that timed BLAS's threads). blas_thread_shutdown_ is what
    OpenBLAS calls itself before a fork. Called once the limit is 1 (setting a limit starts the
    pool again), so no other thread is meant to run a threaded BLAS call then."""
    for lib in _blas.select(internal_api="openblas").lib_controllers:
        shutdown = getattr(getattr(lib, "dynlib", None), "blas_thread_shutdown_", None)
        if shutdown is not None:
            shutdown()
