"""Runtime details that keep long runs fast: denormals flushed, threads chosen per GEMM size and by timing."""

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parent.parent / "examples" / "digits_mlp.json"


def _manifest(**fields):
    """What the thread plan reads of a step's manifest (kgraph.runtime.abi.Manifest)."""
    from types import SimpleNamespace

    return SimpleNamespace(**{"parts": 1, "gemm_flops_per_sample": 0, "split_by_samples": False, **fields})


def test_denormals_are_flushed_once_a_model_exists():
    code = (
        "import numpy as np, json, sys\n"
        "import kgraph.models as m\n"
        "tiny = np.float32(1e-39)\n"
        "before = float(tiny * np.float32(1.0))\n"
        f"m.load_model({str(EXAMPLE)!r})\n"
        "after = float(tiny * np.float32(1.0))\n"
        "print(json.dumps([before, after]))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    before, after = json.loads(r.stdout.strip().splitlines()[-1])
    assert before > 0 and after == 0.0


def test_thread_settings_worth_timing():
    """Large GEMMs run on BLAS's threads, or split by samples (a CNN's) are timed against them in
    parts; smaller steps time split parts (when compiled in parts), BLAS's threads and one thread;
    replicas sharing the cores get one thread each."""
    import numba
    from threadpoolctl import threadpool_info

    from kgraph.runtime.threads import LARGE_GEMM_FLOPS, ThreadPlan

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    cores = os.cpu_count()
    plan = ThreadPlan()
    small, large = (
        _manifest(gemm_flops_per_sample=1e5, parts=2),
        _manifest(gemm_flops_per_sample=LARGE_GEMM_FLOPS, parts=2),
    )
    assert plan.options(large, 1) == [(1, cores)]
    conv = _manifest(gemm_flops_per_sample=LARGE_GEMM_FLOPS, parts=2, split_by_samples=True)
    assert plan.options(conv, 1) == ([(2, 1)] if cores >= 2 else []) + [(1, cores)]
    if cores >= 2:
        assert plan.options(small, 1) == [(1, 1), (2, 1), (1, cores)]
        assert plan.use((2, 1), small) == 2
        assert blas_threads() == {1} and numba.get_num_threads() == 2
    assert plan.use((1, cores), small) == 1
    assert blas_threads() == {cores} and numba.get_num_threads() == 1
    plan.max_threads = 1
    assert plan.options(small, 1) == [(1, 1)] and plan.options(large, 1) == [(1, 1)] == plan.options(conv, 1)
    plan.use((1, 1), small)
    assert blas_threads() == {1}
    plan.release()
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


def test_parts_tuner_keeps_the_faster_option_and_probes_again():
    from kgraph.runtime.threads import PartsTuner

    def run(tuner, cost, calls):
        picks = []
        for _ in range(calls):
            picks.append(tuner.pick())
            tuner.record(picks[-1], cost[picks[-1]])
        return picks

    tuner = PartsTuner([2, 1])
    assert tuner.probing
    picks = run(tuner, {2: 1.0, 1: 1.5}, 2 * (PartsTuner.PROBES + 1))
    assert picks == [2] * (PartsTuner.PROBES + 1) + [1] * (PartsTuner.PROBES + 1)  # one option at a time
    assert not tuner.probing  # fit's calls may grow long now
    assert run(tuner, {2: 1.0, 1: 1.5}, 10) == [2] * 10
    run(tuner, {2: 5.0, 1: 1.5}, tuner.next_probe + 2 * (PartsTuner.PROBES + 1))  # busy machine: parts wait
    assert tuner.pick() == 1
    # far slower: dropped once a faster call is known, and looked at again less and less often
    tuner = PartsTuner([1, 2])
    picks = run(tuner, {2: 100.0, 1: 1.0}, 14)
    assert picks.count(2) == 2 and picks[-6:] == [1] * 6  # its warm-up and one timed call
    first = tuner.next_probe
    run(tuner, {2: 100.0, 1: 1.0}, first + 12)
    assert tuner.next_probe > first
    # a scheduled look times only the close contenders again: a far slower one keeps its old samples
    tuner = PartsTuner([2, 1])
    run(tuner, {2: 1.0, 1: 3.0}, 12)
    run(tuner, {2: 1.0, 1: 3.0}, tuner.next_probe)
    assert tuner.probing  # the scheduled look is next
    assert 1 not in run(tuner, {2: 1.0, 1: 3.0}, 20)
    # the kept option slows down for good (another process took a core): it looks again soon
    tuner = PartsTuner([2, 1])
    run(tuner, {2: 1.0, 1: 1.5}, 12)
    assert run(tuner, {2: 3.0, 1: 1.5}, 40)[-5:] == [1] * 5
    assert PartsTuner([1]).pick() == 1 and not PartsTuner([1]).probing


def test_blas_threads_ended_after_their_option_start_again(monkeypatch):
    """Leaving BLAS's threads for one thread ends OpenBLAS's pools (their idle threads would spin
    on the cores a split step needs); its next threaded GEMM starts them again, right."""
    import numpy as np
    from threadpoolctl import threadpool_info, threadpool_limits

    from kgraph.runtime import threads

    ended = []
    stop = threads.stop_idle_blas_threads
    monkeypatch.setattr(threads, "stop_idle_blas_threads", lambda: (ended.append(1), stop()))
    a = np.random.default_rng(0).standard_normal((300, 400)).astype(np.float32)
    expected = a.astype(np.float64) @ a.T.astype(np.float64)
    with threadpool_limits(2, user_api="blas"):  # the user's setting
        plan, m = threads.ThreadPlan(), _manifest(parts=2)
        plan.use((1, 2), m)
        np.testing.assert_allclose(a @ a.T, expected, rtol=1e-4, atol=1e-3)
        plan.use((2, 1), m)
        assert ended == [1]
        plan.use((1, 1), m)  # already one thread: nothing to end
        assert ended == [1]
        plan.use((1, 2), m)
        assert {i["num_threads"] for i in threadpool_info() if i["internal_api"] == "openblas"} == {2}
        np.testing.assert_allclose(a @ a.T, expected, rtol=1e-4, atol=1e-3)
        plan.use((1, 1), m)
        assert ended == [1, 1]
        # giving the user's two threads back may start the pool again: the next limit of one ends it
        plan.release()
        plan.use((1, 1), m)
        assert ended == [1, 1, 1]
        plan.release()


def test_fit_evaluate_and_predict_give_blas_and_numba_their_threads_back(monkeypatch):
    """The step limits BLAS's threads for the whole process while it runs; the user's NumPy gets
    them back after the loop."""
    import numba
    import pytest
    from threadpoolctl import threadpool_info, threadpool_limits

    from kgraph import models
    from kgraph.datasets import digits
    from kgraph.runtime.threads import ThreadPlan

    if os.cpu_count() < 2:
        pytest.skip("one core: nothing to limit")
    monkeypatch.setattr(ThreadPlan, "options", lambda self, m, batch: [(1, 1)])  # a one-thread step

    def threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}, numba.get_num_threads()

    (x, y), _ = digits.load_data()
    model = models.load_model(EXAMPLE, seed=1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with threadpool_limits(2, user_api="blas"):
        before = threads()
        assert before[0] == {2}
        model.fit(x[:200], y[:200], batch_size=32, epochs=1, verbose=0)
        assert threads() == before
        model.train_on_batch(x[:32], y[:32])
        assert threads()[0] == {1}  # a loop of single steps keeps the step's setting
        model.evaluate(x[:200], y[:200], verbose=0)
        assert threads() == before
        model.train_on_batch(x[:32], y[:32])
        model.predict(x[:64], verbose=0)
        assert threads() == before


def test_a_thread_choice_is_remembered_for_the_next_program(monkeypatch, tmp_path):
    """A look's outcome goes to the cache (per generated step, kind, batch and cores): a new plan
    for the same step starts from it without looking, and still looks on drift. Steps that never
    compile remember nothing; a damaged file is ignored."""
    from kgraph.runtime import threads

    monkeypatch.setenv("KGRAPH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KGRAPH_COMPILE_STEPS", "1")
    monkeypatch.setattr(threads.ThreadPlan, "cores", lambda self: 2)
    m = _manifest(parts=2, module=str(tmp_path / "model_train_0123.py"))
    cost = {(1, 1): 3.0, (2, 1): 1.0, (1, 2): 2.0}

    def run(plan, calls, batch=32):
        picks = []
        for _ in range(calls):
            picks.append(plan.pick("train", m, batch))
            plan.record("train", m, batch, picks[-1], cost[picks[-1]])
        return picks

    first = threads.ThreadPlan()
    assert first.probing("train", 32)
    run(first, 3 * (threads.PartsTuner.PROBES + 1))
    assert first.tuner("train", m, 32).best == (2, 1)
    assert threads.load_choices() == {}  # written when the loop ends, not in it
    first.release()
    (key,) = threads.load_choices()
    assert key.startswith("model_train_0123.py|train|32|2 of")
    later = threads.ThreadPlan()
    later.tuner("train", m, 32)
    assert not later.probing("train", 32)
    assert run(later, 5) == [(2, 1)] * 5  # no call of its first epoch spent looking
    assert threads.ThreadPlan().probing("train", 64)  # another batch size: its own look
    cost[(2, 1)] = 10.0  # the kept setting slows down for good: it looks again, and remembers
    assert (1, 2) in run(later, 40)
    later.release()
    assert threads.load_choices()[key]["best"] == "1,2"
    # damaged, or for other options: ignored
    (tmp_path / threads.CHOICES_FILE).write_text('{"%s": {"best": "9,9", "medians": 3}}' % key)
    assert threads.ThreadPlan().tuner("train", m, 32).probing
    (tmp_path / threads.CHOICES_FILE).write_text("not json")
    assert threads.ThreadPlan().tuner("train", m, 32).probing
    # never compiled (the suite's Python steps): nothing read or written
    (tmp_path / threads.CHOICES_FILE).unlink()
    monkeypatch.setenv("KGRAPH_COMPILE_STEPS", "0")
    plan = threads.ThreadPlan()
    run(plan, 3 * (threads.PartsTuner.PROBES + 1))
    plan.release()
    assert not (tmp_path / threads.CHOICES_FILE).exists()


def test_no_call_is_timed_for_the_thread_choice_while_a_step_compiles_in_a_child(monkeypatch):
    """A compile child takes a core (another step compiling meanwhile): a call timed then says
    little of its setting, and the choice is remembered for later programs, so none is recorded."""
    import numpy as np

    from kgraph import models
    from kgraph.runtime.threads import ThreadPlan

    recorded = []
    monkeypatch.setattr(ThreadPlan, "record", lambda self, kind, m, batch, option, s: recorded.append(option))
    model = models.load_model(EXAMPLE, seed=1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = np.zeros((32, 64), np.float32), np.zeros(32, np.int32)
    monkeypatch.setattr(model.executable.compiler, "busy", lambda: True)
    model.train_on_batch(x, y)
    assert recorded == []
    monkeypatch.setattr(model.executable.compiler, "busy", lambda: False)
    model.train_on_batch(x, y)
    assert len(recorded) == 1
