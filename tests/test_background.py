"""A new step runs as its Python function while a child process compiles it (kgraph/runtime/background.py):
the same numbers as the compiled step, and the calls switch over once the child is done."""

import json
from pathlib import Path

import numpy as np
import pytest

from kgraph import models
from kgraph.runtime import background

EXAMPLE = "examples/digits_mlp.json"
pytestmark = pytest.mark.compiled_steps  # the suite's steps run uncompiled otherwise (tests/conftest.py)


def _model(optimizer="adam", name=None):
    """The example MLP (with dropout); a name of its own gives it a step no other test compiled."""
    config = json.loads(Path(EXAMPLE).read_text())
    if name is not None:
        config["config"]["name"] = name
    model = models.model_from_json(json.dumps(config), seed=3)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _data(n=96):
    rs = np.random.RandomState(0)
    return rs.standard_normal((n, 64)).astype(np.float32), rs.randint(0, 10, n)


class _NeverDone:
    def poll(self):
        return None


def test_python_step_computes_what_the_compiled_step_does(monkeypatch, tmp_path):
    """Adam with dropout for three batches: weights, losses and metrics bit for bit."""
    x, y = _data()
    with monkeypatch.context() as patch:
        patch.setenv("KGRAPH_BACKGROUND_COMPILE", "1")
        patch.setenv("KGRAPH_CACHE_DIR", str(tmp_path))  # a step not compiled in this process yet
        patch.setattr(background, "_start", lambda dispatcher, sig, ahead=(), claims=None: _NeverDone())
        python = _model(name="background_python")
        python_logs = python.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history
        python_predictions = python.predict(x, verbose=0)
        assert not python.executable._compiled  # every call ran the Python function
    compiled = _model(name="background_python")
    compiled_logs = compiled.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history
    assert ("train", "step") in compiled.executable._compiled
    assert python_logs == compiled_logs
    for a, b in zip(python.get_weights(), compiled.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(python_predictions, compiled.predict(x, verbose=0))


def test_a_cnns_python_step_on_numpy_forms_computes_what_it_does_on_compiled_kernels(monkeypatch, tmp_path):
    """A fresh install's first CNN steps run im2col, col2im, max pooling and its gradient in their
    NumPy forms (serial.NumPyUntilCompiled): Adam over three batches
    with batch normalization gives the weights, losses and predictions of the Python step on
    compiled kernels bit for bit, which are the compiled step's (the test above; the convolution
    blocks' drivers on NumPy forms: tests/test_kernels.py)."""
    from benchmarks.models import cnn_bn
    from kgraph.runtime import serial

    config = json.dumps(cnn_bn("background_numpy_forms", filters=(4, 6)))  # the second conv: col2im
    rs = np.random.RandomState(0)
    x, y = rs.rand(24, 28, 28, 1).astype(np.float32), rs.randint(0, 10, 24)

    def trained():
        model = models.model_from_json(config, seed=3)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        logs = model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0).history
        return model, logs, model.predict(x, verbose=0)

    numpy_ran = []
    with monkeypatch.context() as patch:
        patch.setenv("KGRAPH_BACKGROUND_COMPILE", "1")
        patch.setenv("KGRAPH_CACHE_DIR", str(tmp_path))
        patch.setattr(background, "_start", lambda dispatcher, sig, ahead=(), claims=None: _NeverDone())
        patch.setattr(
            serial.NumPyUntilCompiled,
            "__call__",
            lambda form, *a: numpy_ran.append(form.__name__) or form.numpy_form(*a),
        )
        python, python_logs, python_predictions = trained()
        assert not python.executable._compiled  # every call ran the Python function
    assert set(numpy_ran) == {"_im2col", "_pool2d_max", "_pool2d_grad_max", "_col2im"}, set(numpy_ran)
    monkeypatch.setenv("KGRAPH_COMPILE_STEPS", "0")  # the Python step on the compiled kernels
    compiled, compiled_logs, compiled_predictions = trained()
    assert python_logs == compiled_logs
    for a, b in zip(python.get_weights(), compiled.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(python_predictions, compiled_predictions)


def test_calls_switch_to_the_compiled_step_when_the_child_is_done(monkeypatch, tmp_path):
    monkeypatch.setenv("KGRAPH_BACKGROUND_COMPILE", "1")
    monkeypatch.setenv("KGRAPH_CACHE_DIR", str(tmp_path))  # a step no earlier test compiled
    # the child optimises (-O0 code that calls other functions cannot be cached: "dynamic globals")
    monkeypatch.setenv("NUMBA_OPT", "3")
    x, y = _data(32)
    model = _model(name="background_switch")
    exe = model.executable
    model.train_on_batch(x, y)  # in Python; the kernels compile here
    model.train_on_batch(x, y)  # in Python; the child starts
    assert ("train", "step") not in exe._compiled
    ((sig, child),) = exe.compiler._jobs.values()
    exe.compiler.wait()
    assert child.returncode == 0
    model.train_on_batch(x, y)
    assert ("train", "step") in exe._compiled
    assert sig in exe.function("train").overloads
    # another process's model of the same config would load it at its first call
    assert background.in_disk_cache(exe.function("train"), sig)


def test_without_background_compilation_the_first_call_compiles(monkeypatch):
    monkeypatch.setenv("KGRAPH_BACKGROUND_COMPILE", "0")
    x, y = _data(32)
    model = _model()
    model.train_on_batch(x, y)
    assert ("train", "step") in model.executable._compiled
    assert not model.executable.compiler._jobs


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).parent.parent)


def test_stop_ends_the_children_still_compiling(monkeypatch, tmp_path):
    monkeypatch.setenv("KGRAPH_BACKGROUND_COMPILE", "1")
    monkeypatch.setenv("KGRAPH_CACHE_DIR", str(tmp_path))
    x, y = _data(32)
    model = _model(name="background_stop")
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)  # the child starts
    ((sig, child),) = model.executable.compiler._jobs.values()
    model.executable.compiler.stop()
    assert child.poll() is not None  # ended, not left to finish
    assert not background.in_disk_cache(model.executable.function("train"), sig)


PARENT = """
import os, signal, sys, time
from kgraph.runtime.background import spawn
child = spawn("import time; from kgraph.runtime.background import read_payload, watch_parent; "
              "read_payload(); watch_parent(); time.sleep(120)", b"payload")
print(child.pid, flush=True)
time.sleep(1)   # the child is watching now
how = sys.argv[1]
if how == "exception":
    raise RuntimeError("the program fails")
if how == "sigkill":
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("how", ["return", "exception", "sigkill"])
def test_a_compile_child_never_outlives_its_program(how, tmp_path):
    """However the program ends, its compiling child ends within seconds (a ~700-layer model's
    child once ran on for 23 minutes after its program had exited)."""
    import os
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    done = subprocess.run([sys.executable, str(script), how], capture_output=True, text=True, timeout=60)
    child = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        try:  # a zombie of ours would still answer: reap it if it is ours (it is not: init reaps)
            os.waitpid(child, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.1)
    os.kill(child, 9)
    pytest.fail(f"the child {child} outlived its parent ({how}) by 10 s")


def test_a_step_whose_compile_takes_minutes_says_so_when_it_starts(monkeypatch, tmp_path, capsys):
    """The notice names the step's size, an estimate, and how to compile it ahead of time."""
    monkeypatch.setenv("KGRAPH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KGRAPH_BACKGROUND_COMPILE", "1")
    monkeypatch.setattr(background, "LONG_COMPILE_SECONDS", 0.0)
    monkeypatch.setattr(background, "kernel_calls", lambda dispatcher, args: [])  # its kernels cached
    x, y = _data(32)
    model = _model(name="background_notice")
    model.train_on_batch(x, y)
    assert "lines of generated code" not in capsys.readouterr().err  # the first call starts no child
    model.train_on_batch(x, y)
    model.executable.compiler.stop()
    err = capsys.readouterr().err
    lines, seconds = background.compile_estimate(model.executable.function("train"))
    assert f"train_step is {lines:,} lines of generated code" in err
    assert "kgraph compile CONFIG" in err
    monkeypatch.setattr(background, "LONG_COMPILE_SECONDS", seconds + 1)  # a small step says nothing
    small = _model(name="background_quiet")
    small.train_on_batch(x, y)
    small.train_on_batch(x, y)
    small.executable.compiler.stop()
    assert "generated code" not in capsys.readouterr().err


def test_kgraph_compile_without_output_compiles_the_steps_ahead_of_time(monkeypatch, tmp_path):
    """`kgraph compile CONFIG` leaves the compiled steps in the cache: a later model of the same
    config and settings calls them compiled from its first step, with nothing left to compile.
    (In a process of its own at Numba's default optimisation: at the suite's NUMBA_OPT=0, Numba
    cannot cache a step that calls BLAS.)"""
    import os
    import subprocess
    import sys

    from kgraph import cli

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_OPT"}
    env.update(KGRAPH_CACHE_DIR=str(tmp_path), KGRAPH_BACKGROUND_COMPILE="1")
    config = "examples/iris.json"
    done = subprocess.run(
        [sys.executable, "-m", "kgraph.cli", "compile", config], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert "train step:" in done.stdout and "now start compiled" in done.stdout
    monkeypatch.setenv("KGRAPH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KGRAPH_BACKGROUND_COMPILE", "1")
    model = models.model_from_json(Path(config).read_text())
    cli._compile(model, cli._parser().parse_args(["compile", config]))
    x, y = np.zeros((8, 4), np.float32), np.zeros(8, np.int64)
    model.train_on_batch(x, y)
    model.predict(x, verbose=0)
    assert model.executable.compiler.compiling() == []  # every step came from the cache


class _DoneAfter:
    """A child that is done after `polls` polls (then the step compiles at its next call)."""

    def __init__(self, polls):
        self.polls = polls

    def poll(self):
        self.polls -= 1
        return None if self.polls >= 0 else 0


def test_a_switch_to_the_compiled_step_mid_epoch_changes_no_number(monkeypatch, tmp_path):
    """Seeded runs give the same floats whenever the compiled step becomes ready: here it takes
    over in the middle of the first epoch, and the run matches one compiled from the start."""
    from kgraph.runtime.callbacks import Callback

    class Forms(Callback):  # which form ran each batch
        def __init__(self, exe):
            super().__init__()
            self.exe, self.seen = exe, []

        def on_train_batch_end(self, batch, logs=None):
            self.seen.append(("train", "step") in self.exe._compiled)

    x, y = _data()
    with monkeypatch.context() as patch:
        patch.setenv("KGRAPH_BACKGROUND_COMPILE", "1")
        patch.setenv("KGRAPH_CACHE_DIR", str(tmp_path))
        patch.setattr(background, "_start", lambda dispatcher, sig, ahead=(), claims=None: _DoneAfter(3))
        switched = _model(name="background_midway")
        forms = Forms(switched.executable)  # a batch hook: one step a call
        switched_logs = switched.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0, callbacks=[forms]).history
    first_epoch = forms.seen[:12]
    assert not first_epoch[0] and first_epoch[-1] and all(forms.seen[12:])  # switched within epoch 1
    compiled = _model(name="background_midway")
    compiled_logs = compiled.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0).history
    assert switched_logs == compiled_logs
    for a, b in zip(switched.get_weights(), compiled.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_long_compile_before_the_first_step_says_so_once(monkeypatch, capsys):
    """compile_notice prints one line when Numba is still compiling as its timer fires (a fake
    timer here, fired by hand: no timing), naming the step or the kernels; nothing when only
    cached code loads."""
    import threading

    import numba

    timers = []

    class Timer:
        def __init__(self, seconds, fire):
            self.daemon = False
            timers.append(fire)

        def start(self):
            pass

        def cancel(self):
            pass

    monkeypatch.setattr(threading, "Timer", Timer)
    with background.compile_notice("train", __name__):
        numba.njit(lambda a: a + 1)(1)  # a function of the step's module compiles
        timers[-1]()
    line = capsys.readouterr().err
    assert line.startswith("kgraph: compiling the training step with Numba; this happens once")
    assert line.count("\n") == 1
    with background.compile_notice("train", "kgraph_generated.step_0"):
        numba.njit(lambda a: a + 2)(1)  # a kernel it calls
        timers[-1]()
    assert capsys.readouterr().err.startswith("kgraph: compiling kgraph's kernels with Numba")
    with background.compile_notice("train", __name__):
        timers[-1]()  # compiled nothing
    assert capsys.readouterr().err == ""


def test_a_child_refuses_a_step_when_the_kernels_changed_since_the_parent_started(monkeypatch, tmp_path):
    """An upgrade mid-run: the child would link other kernel files than the step's parent and
    cache them under the step's name (later loads then fail to import them). It compiles nothing
    and exits, so the parent compiles the step itself."""
    import pickle

    from kgraph.kernels import fingerprint

    step = tmp_path / "step.py"
    step.write_text("def train_step():\n    raise AssertionError('compiled')\n")
    payload = pickle.dumps((str(step), "train_step", (), "0" * 12, [], None))
    monkeypatch.setattr(background, "wait_for_job", lambda: payload)
    monkeypatch.setattr(background, "watch_parent", lambda: None)
    with pytest.raises(SystemExit, match=f"changed since this program started \\(000000000000 -> {fingerprint()}\\)"):
        background.main()


def test_the_first_call_traces_the_kernels_it_compiles_without_running_them(monkeypatch, tmp_path):
    """kernel_trace: the kernels of a training step (its halves and update included) and the very
    signatures its Python function then compiles, first call first; the trace writes nothing."""
    from kgraph.runtime import kernel_trace

    monkeypatch.setenv("KGRAPH_CACHE_DIR", str(tmp_path))
    x, y = _data(32)
    model = _model(name="background_trace")
    exe = model.executable
    seen = {}

    def first_call(dispatcher, args):
        before = [a.copy() if isinstance(a, np.ndarray) else a for a in args]
        seen["calls"] = kernel_trace.kernel_calls(dispatcher, args)
        for a, b in zip(args, before):
            np.testing.assert_array_equal(a, b)
        return background.python_twin(dispatcher)

    monkeypatch.setattr(exe.compiler, "callable", first_call)
    model.train_on_batch(x, y)
    calls = seen["calls"]
    names = [k.py_func.__name__ for k, _ in calls]
    # the first GEMM calls the same sgemm from Python (cpu.matmul's python_form): nothing to compile
    assert names[0] == "kernel" and "matmul" not in names and "sparse_softmax_ce_grad_rows" in names
    assert any(k.py_func.__module__.startswith("kgraph_generated.kernel_") for k, _ in calls)  # fused loops, update
    assert len(set(calls)) == len(calls)
    for kernel, sig in calls:  # what the Python step compiled, no other signature
        assert sig in kernel.overloads, (kernel, sig)
    described = kernel_trace.describe(calls)
    assert [kernel_trace.resolve(*d[:3]) for d in described] == [k for k, _ in calls]


def _first_call_traced(monkeypatch, tmp_path, config, x, y) -> list:
    """The kernel trace of a new model's first training call (which then runs as Python), and a
    check that the Python step compiled each traced kernel for the very signature traced."""
    from kgraph.runtime import kernel_trace

    monkeypatch.setenv("KGRAPH_CACHE_DIR", str(tmp_path))
    model = models.model_from_json(json.dumps(config), seed=3)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    seen = {}

    def first_call(dispatcher, args):
        seen["calls"] = kernel_trace.kernel_calls(dispatcher, args)
        return background.python_twin(dispatcher)

    monkeypatch.setattr(model.executable.compiler, "callable", first_call)
    model.train_on_batch(x, y)
    for kernel, sig in seen["calls"]:  # those with a numpy_form it runs as that (serial.NumPyUntilCompiled)
        assert sig in kernel.overloads or getattr(kernel, "numpy_form", None), (kernel, sig)
    return seen["calls"]


def test_the_trace_runs_a_convolutions_drivers_as_python_and_records_what_they_call(monkeypatch, tmp_path):
    """A convolution step's drivers (the convolution block and its gradient) run as Python in the
    step's Python function (serial.python_form), calling compiled kernels: the trace records
    those (im2col, pooling, ...), with the signatures the Python step then compiles, and no
    driver; the Python step computes the compiled step's floats (tests/test_kernels.py)."""
    from benchmarks.models import cnn

    rs = np.random.RandomState(0)
    x, y = rs.rand(8, 28, 28, 1).astype(np.float32), rs.randint(0, 10, 8)
    calls = _first_call_traced(monkeypatch, tmp_path, cnn("background_trace_cnn"), x, y)
    names = [k.py_func.__name__ for k, _ in calls]
    assert names[:3] == ["_im2col", "_bias_relu", "_pool2d_max"] and "_pool2d_grad_max" in names, str(names)
    assert not {"conv_block", "pool2d_grad_kernel_grad", "part"} & set(names)


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "mask_zero"])
def test_the_trace_of_a_recurrent_step_names_its_cells_kernels_only(monkeypatch, tmp_path, masked):
    """The recurrent time loops are drivers too: an LSTM step's Python function calls the loops
    over samples of the LSTM's default activations only (not every cell's), which the trace
    records under the names the child finds them by (kernels made by a factory), a masked
    layer's too (over a zero stand-in mask every step would look masked)."""
    from benchmarks.models import lstm_text
    from kgraph.runtime import kernel_trace

    config = lstm_text(f"background_trace_lstm_{masked}", 50, 8, 6, 4)
    config["config"]["layers"][1]["config"]["mask_zero"] = masked
    rs = np.random.RandomState(0)
    x, y = rs.randint(1, 50, (4, 6)).astype(np.int32), rs.randint(0, 2, 4)
    calls = _first_call_traced(monkeypatch, tmp_path, config, x, y)
    described = kernel_trace.describe(calls)
    names = [d[2] for d in described]
    assert {"_lstm_step_rows_ts", "_lstm_grad_rows_ts", "_carry_rows"} <= set(names), names
    assert not {n for n in names if n.startswith(("rnn_", "_gru", "_simple", "_step_rows", "_grad_rows"))}
    assert [kernel_trace.resolve(*d[:3]) for d in described] == [k for k, _ in calls]


def test_kernels_missing_from_the_cache_go_to_the_child_from_the_last(monkeypatch, tmp_path):
    """An empty cache: the child starts with the first call, given the kernels to compile from
    the other end (here none counts as cached); the first call itself still runs in Python."""
    monkeypatch.setenv("KGRAPH_BACKGROUND_COMPILE", "1")
    monkeypatch.setenv("KGRAPH_CACHE_DIR", str(tmp_path))
    started = []
    monkeypatch.setattr(
        background, "_start", lambda d, sig, ahead=(), claims=None: started.append(list(ahead)) or _NeverDone()
    )
    monkeypatch.setattr(background, "in_disk_cache", lambda kernel, sig: False)
    x, y = _data(32)
    model = _model(name="background_ahead")
    model.train_on_batch(x, y)
    assert ("train", "step") not in model.executable._compiled
    (ahead,) = started
    # the update, traced last, comes first; the GEMMs and the outputs' copy into the stash run
    # in NumPy (python_form: the same sgemm, NumPy's copy), with nothing to compile
    names = [a[2] for a in ahead]
    assert names[0] == "kernel" and not {"matmul", "copy_flat"} & set(names), names
    model.train_on_batch(x, y)
    assert len(started) == 1  # the same child


def test_the_compile_child_starts_when_an_uncached_step_is_added_and_takes_its_job(monkeypatch, tmp_path):
    """A new Python needs about a second to import Numba and the kernels: the child that compiles
    a new step starts when the step is added (compile()), not at its first call, and that child
    is the one compiling it."""
    from kgraph.runtime import cache, child

    monkeypatch.setenv("KGRAPH_BACKGROUND_COMPILE", "1")
    monkeypatch.setenv("KGRAPH_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("NUMBA_OPT", "3")  # as test_calls_switch_...: the child's -O0 code would not cache
    cache.mark_kernels_compiled()  # so that compile() starts none for the kernels: the new step does
    child.stop_spare()
    x, y = _data(32)
    model = _model(name="background_ahead")
    spare = child._spare[0]
    assert spare.poll() is None  # importing while the model gets ready
    model.train_on_batch(x, y)  # in Python (the kernels are cached: the child waits for the next call)
    model.train_on_batch(x, y)  # in Python; the child compiles the step now
    ((sig, job),) = model.executable.compiler._jobs.values()
    assert job is spare and child._spare is None
    model.executable.compiler.wait()
    assert job.returncode == 0
    assert background.in_disk_cache(model.executable.function("train"), sig)


def test_a_child_started_ahead_exits_when_no_job_comes(monkeypatch, tmp_path):
    """A step that runs compiled at once (replicas' halves) or never runs leaves it no job."""
    import time

    from kgraph.runtime import child

    monkeypatch.setenv("KGRAPH_BACKGROUND_COMPILE", "1")
    monkeypatch.setenv("KGRAPH_SPARE_WAIT_SECONDS", "1")
    child.stop_spare()
    child.start_spare()
    spare = child._spare[0]
    deadline = time.monotonic() + 30
    while spare.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert spare.returncode == 0
    child.start_spare()  # gone: the next is a new one
    assert child._spare[0] is not spare
    child.stop_spare()


@pytest.mark.parametrize(
    "setting", ["KGRAPH_BACKGROUND_COMPILE=0", "KGRAPH_COMPILE_STEPS=0", "KGRAPH_PLAIN=1", "inspect"]
)
def test_no_child_starts_ahead_where_steps_do_not_compile_in_children(monkeypatch, setting):
    from kgraph.runtime import child, policy

    monkeypatch.setenv("KGRAPH_BACKGROUND_COMPILE", "1")
    if setting == "inspect":
        monkeypatch.setattr(policy, "runs_steps", False)
    else:
        monkeypatch.setenv(*setting.split("="))
    child.stop_spare()
    child.start_spare()
    assert child._spare is None


def test_replicas_and_cuda_models_start_no_child_ahead(monkeypatch, tmp_path):
    """Their steps compile in the program: replicas' halves run compiled from their first call."""
    from kgraph import distribute
    from kgraph.runtime import child

    monkeypatch.setenv("KGRAPH_BACKGROUND_COMPILE", "1")
    monkeypatch.setenv("KGRAPH_CACHE_DIR", str(tmp_path))  # no kernels stamp: compile() would start one
    child.stop_spare()
    with distribute.MirroredStrategy(["cpu:0", "cpu:1"]).scope():
        _model(name="background_replicas")
    assert child._spare is None


def test_a_child_started_ahead_with_other_settings_does_not_take_the_job(monkeypatch, tmp_path):
    """A spare started for another cache (or optimisation level) would compile the step into it."""
    from kgraph.runtime import child

    monkeypatch.setenv("KGRAPH_BACKGROUND_COMPILE", "1")
    monkeypatch.setenv("KGRAPH_CACHE_DIR", str(tmp_path / "before"))
    child.start_spare()
    spare = child._spare[0]
    monkeypatch.setenv("KGRAPH_CACHE_DIR", str(tmp_path / "after"))
    job = child.spawn(child.COMPILER, b"")  # an empty job: the child exits at once
    assert job is not spare and spare.poll() is not None
    assert job.wait(timeout=60) == 0


def test_the_compile_child_starts_first_on_a_cache_without_the_kernels(monkeypatch, tmp_path):
    """The kernels' stamp (kgraph/runtime/cache.py) says whether a step found them compiled in
    the cache Numba uses now; where it does not, `kgraph train` starts the compile child before it
    reads the model, and compile() before it builds the steps."""
    from kgraph import cli
    from kgraph.runtime import cache, child

    monkeypatch.setenv("KGRAPH_BACKGROUND_COMPILE", "1")
    monkeypatch.setenv("KGRAPH_CACHE_DIR", str(tmp_path))
    started = []
    monkeypatch.setattr(child, "start_spare", lambda: started.append("ahead"))
    monkeypatch.setattr("kgraph.runtime.executable.start_spare", lambda: None)  # a new step's
    monkeypatch.setattr(background, "_start", lambda dispatcher, sig, ahead=(), claims=None: _NeverDone())
    assert not cache.kernels_compiled()
    assert cli.main(["train", EXAMPLE, "--epochs", "1", "--verbose", "0"]) == 0
    assert len(started) == 2  # the CLI's, before it read the model, and compile()'s
    assert cache.kernels_compiled()  # the first step compiled them
    assert cli.main(["train", EXAMPLE, "--epochs", "1", "--verbose", "0"]) == 0
    assert len(started) == 2  # compiled: a child starts when a new step needs one
    (tmp_path / cache.KERNELS_STAMP).write_bytes(b"\xff\xfe")  # garbled: as none
    assert not cache.kernels_compiled()
    cache.mark_kernels_compiled()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "elsewhere"))
    assert not cache.kernels_compiled()
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    cache.mark_kernels_compiled()
    assert cache.kernels_compiled()
    monkeypatch.setattr(cache, "_numba_version", lambda: "99.0")  # another Numba: its cache is empty
    assert not cache.kernels_compiled()


def _float64_sum_parts():
    """kernels/cpu.py sum_parts and a signature no other test compiles (float64), as the trace
    records it."""
    import numba

    from kgraph.kernels import cpu as K

    args = (np.ones((3, 4)), np.zeros(4), 1)
    return K.sum_parts, tuple(numba.typeof(a) for a in args), args


def test_a_kernel_the_program_claimed_first_is_not_compiled_by_the_child(tmp_path):
    """claims.py: one of the two creates a kernel's claim; the child skips a kernel the program
    claimed, compiles the others and marks each done."""
    from kgraph.runtime import claims, kernel_trace

    kernel_claims = claims.Claims(str(tmp_path))
    assert kernel_claims.take(0) and not kernel_claims.take(0)  # the program's, then the child's try
    kernel, sig, _ = _float64_sum_parts()
    described = kernel_trace.describe([(kernel, sig), (kernel, sig)])
    compiled = []
    original = kernel_trace.resolve
    try:
        kernel_trace.resolve = lambda *where: compiled.append(where) or original(*where)
        kernel_trace.compile_all(described, kernel_claims)
    finally:
        kernel_trace.resolve = original
    assert len(compiled) == 1 and kernel_claims.is_done(1) and not kernel_claims.is_done(0)
    assert not kernel_claims.take(1)


@pytest.mark.parametrize("child_state", ["compiling", "ended"])
def test_the_program_waits_for_a_kernel_the_child_claimed_first(tmp_path, child_state):
    """The program's compile of a kernel the child claimed waits until the child marks it done,
    then loads it; if the child has ended, it compiles at once. Either way the hook goes once the
    kernel's listed signature has compiled."""
    import threading
    import time

    from kgraph.runtime import claims

    import numba

    kernel = numba.njit(lambda a: a.sum())  # compiled by no one yet
    args = (np.ones(3),)
    sig = (numba.typeof(args[0]),)
    kernel_claims = claims.Claims(str(tmp_path))
    assert kernel_claims.take(0)  # the child's

    class Child:
        def poll(self):
            return None if child_state == "compiling" else 1

    claims.in_program(kernel_claims, [(kernel, sig)], Child())
    assert "compile" in vars(kernel)
    done = threading.Timer(0.3, kernel_claims.done, (0,))
    done.start()
    start = time.perf_counter()
    kernel(*args)  # the program's first call of it
    waited = time.perf_counter() - start
    done.join()
    assert (waited >= 0.3) == (child_state == "compiling"), waited
    assert "compile" not in vars(kernel) and sig in kernel.overloads


def test_claims_live_in_the_cache_and_a_killed_programs_go_an_hour_later(monkeypatch, tmp_path):
    """A job's claims directory is under the kgraph cache's claims/ and goes with its Claims; one a
    killed program left goes when a later job finds it STALE_SECONDS old, a recent one stays."""
    import os
    import time

    from kgraph.runtime import claims

    monkeypatch.setenv("KGRAPH_CACHE_DIR", str(tmp_path))
    old, recent = tmp_path / "claims" / "job-old", tmp_path / "claims" / "job-recent"
    for left in (old, recent):
        left.mkdir(parents=True)
        (left / "3").touch()
    an_hour_ago = time.time() - claims.STALE_SECONDS - 60
    os.utime(old, (an_hour_ago, an_hour_ago))
    job = claims.Claims.new()
    directory = Path(job.directory)
    assert directory.parent == tmp_path / "claims" and directory.is_dir()
    assert not old.exists() and recent.exists()
    del job
    assert not directory.exists()


def test_two_threads_calling_a_kernel_the_child_claimed_both_wait_for_it(tmp_path):
    """The program's threads: the second caller of a kernel whose claim the child holds waits
    behind the first, rather than compiling it too or finding the hook gone."""
    import threading

    import numba

    from kgraph.runtime import claims

    kernel = numba.njit(lambda a: a.sum() + 1)  # compiled by no one yet
    args = (np.ones(3),)
    kernel_claims = claims.Claims(str(tmp_path))
    assert kernel_claims.take(0)  # the child's

    class Child:
        def poll(self):
            return None

    claims.in_program(kernel_claims, [(kernel, (numba.typeof(args[0]),))], Child())
    results, errors = [], []

    def call():
        try:
            results.append(kernel(*args))
        except Exception as e:  # noqa: BLE001 - what the test looks for
            errors.append(e)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    done = threading.Timer(0.3, kernel_claims.done, (0,))
    done.start()
    for thread in threads + [done]:
        thread.join()
    assert not errors and results == [4.0, 4.0] and len(kernel.overloads) == 1
    assert "compile" not in vars(kernel)


def test_a_cache_without_room_for_claims_compiles_as_before(monkeypatch, tmp_path):
    """Claims only save work: where the cache's claims/ cannot be made, a job has none."""
    from kgraph.runtime import claims

    monkeypatch.setenv("KGRAPH_CACHE_DIR", str(tmp_path))
    (tmp_path / "claims").write_text("a file where the directory would be")
    assert claims.Claims.new() is None
