"""How a compiled CPU step uses the cores: the step's GEMMs split by weight rows over Numba's
threads (kgraph/passes/split.py), or whole on BLAS's own threads, or everything on one thread;
never both thread pools at once.

Which is fastest depends on the model, the batch and how busy the machine is (threads wait for
each other: on a loaded machine one that lost its core stalls the step; OpenBLAS's threads cut a
GEMM with 9 rows badly), so each step kind and batch size times the candidates for a few calls,
keeps the fastest, and looks again now and then. The choice is remembered in kgraph's cache
(thread_choices.json, per generated step, step kind, batch size and core count; written when a
fit, evaluate or predict ends, ThreadPlan.release), so that a later
program running the same compiled step starts from it and spends no call of its first epoch
looking; it still looks again on the usual schedule, and at once should the kept setting slow
down."""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import numba
import scipy.linalg.cython_blas  # noqa: F401  (the BLAS Numba's np.dot calls: load it so its threads can be limited)
from threadpoolctl import ThreadpoolController

from .cache import THREAD_CHOICES, cache_dir
from .files import atomic_write
from .policy import compile_steps, plain

# From this many FLOPs in its largest GEMM a step runs its GEMMs whole on BLAS's threads, untimed.
LARGE_GEMM_FLOPS = 2e8
_blas = ThreadpoolController()


class PartsTuner:
    """Times the candidate thread settings of one step, a few calls each, then keeps the one with
    the lowest median. It keeps timing the kept one: when its recent mean grows past the others'
    (another process took a core: split parts stall), or after `reprobe` calls (twice as long after
    each look that did not change its mind), it looks again: at every option after a drift, at the
    close contenders (within CLOSE of the kept one) on schedule. An option more than twice as slow as
    another's best call stops being probed at once (a split step on a busy machine can take 100x
    longer). Idle threads of the pool used last may keep spinning for a while (ThreadPlan.use ends
    OpenBLAS's), so the drift check waits GRACE seconds of calls after each look. While it looks, fit
    and evaluate make their calls short (`probing`), so that a look costs a few milliseconds of
    steps and ends within the first epoch."""

    PROBES = 5
    REPROBE = 2000
    MAX_REPROBE = 64000
    DRIFT = 1.5  # the kept option's recent mean over the others' probed medians that triggers a look
    CLOSE = 1.3  # a scheduled look times again the options whose median was within this of the kept one's
    GRACE = 0.3

    def __init__(self, options):
        self.options = list(options)
        self.samples = {o: [] for o in self.options}
        self.best = self.options[0]
        self.reprobe = self.REPROBE
        self.next_probe = 0
        self.recent = None  # moving mean of the kept option's calls
        self.settled = 0.0  # seconds of calls since the last look
        self.on_decide = None  # called with the tuner after each look (ThreadPlan remembers it)

    def resume(self, best, medians) -> None:
        """Start from a choice an earlier program made (its median seconds a call per option): no
        look now; the next on the usual schedule, or at once should the kept option drift."""
        for o in self.options:
            self.samples[o] = [medians[o]] * (self.PROBES + 1)  # the first stands for the warm-up
        self.best, self.next_probe = best, self.reprobe

    def medians(self) -> dict:
        return {o: self._median(o) for o in self.options}

    def pick(self) -> int:
        if len(self.options) == 1:
            return self.best
        if self.next_probe == 0:  # a scheduled look
            self._look(
                [
                    o
                    for o in self.options
                    if not self.samples[o] or self._median(o) <= self.CLOSE * self._median(self.best)
                ]
            )
        probing = [o for o in self.options if len(self.samples[o]) <= self.PROBES]  # the first is a warm-up
        if probing:  # one option at a time: switching thread pools costs while the other one spins
            return probing[0]
        self.next_probe -= 1
        return self.best

    @property
    def probing(self) -> bool:
        """Whether the next call times an option rather than runs the kept one."""
        if len(self.options) == 1:
            return False
        return self.next_probe == 0 or any(len(s) <= self.PROBES for s in self.samples.values())

    def _median(self, option) -> float:
        return statistics.median(self.samples[option][1:])

    def _look(self, options) -> None:
        """Time `options` again (the others keep their samples)."""
        for o in options:
            self.samples[o] = []
        self.next_probe, self.recent, self.settled = -1, None, 0.0

    def record(self, option, seconds) -> None:
        if len(self.options) == 1:
            return
        samples = self.samples[option]
        if len(samples) > self.PROBES:  # a call of the kept option
            self.settled += seconds
            if self.settled < self.GRACE:
                return
            self.recent = seconds if self.recent is None else 0.9 * self.recent + 0.1 * seconds
            if self.recent > self.DRIFT * min(self._median(o) for o in self.options if o != option):
                self.reprobe = self.REPROBE
                self._look(self.options)
            return
        samples.append(seconds)
        fastest = min((min(s[1:]) for s in self.samples.values() if len(s) > 1), default=seconds)
        if len(samples) > 1 and seconds > 2 * fastest:
            samples.extend([seconds] * (self.PROBES + 1 - len(samples)))
        self._decide()

    def _decide(self) -> None:
        if all(len(s) > self.PROBES for s in self.samples.values()):
            best = min(self.options, key=self._median)
            self.reprobe = min(2 * self.reprobe, self.MAX_REPROBE) if best == self.best else self.REPROBE
            self.best, self.next_probe = best, self.reprobe
            if self.on_decide is not None:
                self.on_decide(self)


class ThreadPlan:
    """The thread settings of one executable; max_threads caps the cores (replicas sharing the
    cores set 1). The settings hold for the whole process until `release` gives the user's back."""

    def __init__(self):
        self.max_threads = None
        self._tuners = {}
        self._blas_threads = None
        self._decided = {}  # the choices made since the last release, written to the cache there
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
        runs. BLAS's threads last: they spin for a while after their last call. A step with large
        GEMMs runs them on BLAS's threads untimed, unless they are split by samples (a CNN's): its
        memory-bound kernels then run in parts too, which whole on BLAS's threads run on one."""
        if plain():  # one setting, untimed (kgraph/runtime/policy.py)
            return [(1, 1)]
        cores, parts = self.cores(), m.parts
        split = [(parts, 1)] if 1 < parts <= cores else []
        if m.gemm_flops_per_sample * batch >= LARGE_GEMM_FLOPS:
            return (split if m.split_by_samples else []) + [(1, cores)]
        return [(1, 1)] + split + ([(1, cores)] if cores > 1 else [])

    def tuner(self, kind, m, batch) -> PartsTuner:
        key = (kind, batch, self.max_threads)
        if key not in self._tuners:
            options = self.options(m, batch)
            remembered = self._remembered_key(kind, m, batch) if len(options) > 1 else None
            tuner = self._tuners[key] = PartsTuner(options)
            if remembered is not None:
                _resume(tuner, load_choices().get(remembered))
                tuner.on_decide = lambda t: self._decided.__setitem__(remembered, t)
        return self._tuners[key]

    def _remembered_key(self, kind, m, batch) -> str | None:
        """The key of this step's choice in thread_choices.json: its generated file (named by the
        graph's hash), kind, batch size and cores. None for steps that never compile (their
        Python functions' timings say nothing of the compiled step's)."""
        module = getattr(m, "module", None)
        if module is None or plain() or not compile_steps():
            return None
        return f"{Path(module).name}|{kind}|{batch}|{self.cores()} of {os.cpu_count()}"

    def pick(self, kind, m, batch, compiled=True, compiling=False) -> tuple:
        """The setting of the next call: the tuner's for a compiled step, its kept one while a
        compile child takes a core (`compiling`: no call is timed then, Executable.run). A step's
        Python function (while the step compiles, background.py) runs on one thread while a child
        compiles on another core, and its first call takes the first option."""
        if compiled:
            tuner = self.tuner(kind, m, batch)
            return tuner.best if compiling else tuner.pick()
        return (1, 1) if compiling else self.options(m, batch)[0]

    def record(self, kind, m, batch, option, seconds) -> None:
        """A compiled call's seconds a step with `option`, for the tuner."""
        self.tuner(kind, m, batch).record(option, seconds)

    def probing(self, kind, batch) -> bool:
        """Whether the next call of this step kind at this batch size times a thread setting
        (also before its first call, which starts the first look)."""
        tuner = self._tuners.get((kind, batch, self.max_threads))
        return tuner is None or tuner.probing

    def forget(self, kind) -> None:
        """Drop the timings of a step kind that was compiled again (its options may differ)."""
        self._tuners = {k: t for k, t in self._tuners.items() if k[0] != kind}

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
        train_on_batch keeps the step's setting: setting it costs tens of microseconds a call.)
        The choices made since are written to the cache here, not in the loop (a write syncs)."""
        decided, self._decided = self._decided, {}
        if decided:
            remember_choices(decided)
        if self._restore is None:
            return
        limiter, numba_threads, before = self._restore
        limiter.restore_original_limits()
        numba.set_num_threads(numba_threads)
        # Setting BLAS's threads may start its pool, spinning: the next call that limits them ends it
        self._restore, self._blas_threads = None, before


CHOICES_FILE = THREAD_CHOICES
MAX_CHOICES = 1000  # the most recent are kept


def load_choices() -> dict:
    """The thread settings earlier programs chose: {key: {"best": "parts,blas", "medians": {...}}}."""
    try:
        choices = json.loads((cache_dir() / CHOICES_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return choices if isinstance(choices, dict) else {}


def remember_choices(decided: dict) -> None:
    """Write looks' outcomes, {key: tuner} (atomically: programs running at once each leave a
    whole file)."""
    choices = load_choices()
    for key, tuner in decided.items():
        choices.pop(key, None)
        choices[key] = {"best": _name(tuner.best), "medians": {_name(o): t for o, t in tuner.medians().items()}}
    for old in list(choices)[: max(len(choices) - MAX_CHOICES, 0)]:
        del choices[old]
    try:
        with atomic_write(cache_dir() / CHOICES_FILE) as tmp:
            Path(tmp).write_text(json.dumps(choices, indent=1))
    except OSError:  # a read-only cache: the next program looks again
        pass


def _resume(tuner: PartsTuner, choice) -> None:
    """Start `tuner` from a remembered choice, if it is one for its options (a file edited by
    hand, or written for other options, is ignored: the tuner looks as it would have)."""
    try:
        medians = {_option(o): float(t) for o, t in choice["medians"].items()}
        best = _option(choice["best"])
    except (TypeError, KeyError, AttributeError, ValueError):
        return
    if set(medians) == set(tuner.options) and best in medians and all(t > 0 for t in medians.values()):
        tuner.resume(best, medians)


def _name(option) -> str:
    return ",".join(map(str, option))


def _option(name: str) -> tuple:
    return tuple(int(v) for v in name.split(","))


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
