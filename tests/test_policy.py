"""The runtime's policies around a call of the compiled step (kgraph/runtime/policy.py), each on
its own, and KGRAPH_PLAIN=1, which turns every one off."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numba
import numpy as np
import pytest

from kgraph import models
from kgraph.kernels import cpu as K
from kgraph.runtime import background, policy
from kgraph.runtime.threads import LARGE_GEMM_FLOPS, ThreadPlan

EXAMPLE = Path(__file__).parent.parent / "examples" / "digits_mlp.json"
SMALL = SimpleNamespace(parts=2, gemm_flops_per_sample=1e3)  # what the thread plan reads of a manifest
LARGE = SimpleNamespace(parts=2, gemm_flops_per_sample=LARGE_GEMM_FLOPS)


@pytest.fixture(autouse=True)
def _in_repo_root(monkeypatch):
    monkeypatch.chdir(Path(__file__).parent.parent)


@pytest.mark.parametrize("value, plain", [(None, False), ("", False), ("0", False), ("1", True), ("yes", True)])
def test_the_switch(monkeypatch, value, plain):
    if value is None:
        monkeypatch.delenv("KGRAPH_PLAIN", raising=False)
    else:
        monkeypatch.setenv("KGRAPH_PLAIN", value)
    assert policy.plain() is plain


def test_background_compilation_is_off_on_the_plain_path(monkeypatch):
    monkeypatch.setenv("KGRAPH_BACKGROUND_COMPILE", "1")
    assert background.enabled()
    monkeypatch.setenv("KGRAPH_PLAIN", "1")
    assert not background.enabled()
    dispatcher = object()  # never typed: the plain path does not look at the arguments
    assert background.StepCompiler().callable(dispatcher, [np.zeros(3)]) is dispatcher


def test_the_thread_plan_picks_the_tuners_setting_or_one_thread_while_compiling(monkeypatch):
    monkeypatch.delenv("KGRAPH_PLAIN", raising=False)
    plan = ThreadPlan()
    options = plan.options(SMALL, 8)
    assert plan.pick("train", SMALL, 8, compiled=False, compiling=False) == options[0]
    assert plan.pick("train", SMALL, 8, compiled=False, compiling=True) == (1, 1)
    tuner = plan.tuner("train", SMALL, 8)
    picked = plan.pick("train", SMALL, 8)
    plan.record("train", SMALL, 8, picked, 1e-3)
    assert picked == options[0] and tuner.samples[picked] == [1e-3]


def test_the_plain_thread_plan_is_one_thread_untimed(monkeypatch):
    monkeypatch.setenv("KGRAPH_PLAIN", "1")
    plan = ThreadPlan()
    assert plan.options(SMALL, 8) == [(1, 1)] and plan.options(LARGE, 1024) == [(1, 1)]
    assert plan.pick("train", SMALL, 8) == (1, 1) and not plan.probing("train", 8)
    plan.record("train", SMALL, 8, (1, 1), 1.0)
    assert plan.tuner("train", SMALL, 8).samples == {(1, 1): []}


def test_gc_freeze_once_per_new_step_and_never_on_the_plain_path(monkeypatch):
    frozen = []
    monkeypatch.setattr(policy.gc, "freeze", lambda: frozen.append(1))
    monkeypatch.delenv("KGRAPH_PLAIN", raising=False)
    exe = SimpleNamespace(_functions={("train", "step"): None})
    assert policy.freeze_compiled_objects(exe) and frozen == [1]
    assert not policy.freeze_compiled_objects(exe) and frozen == [1]  # nothing new since
    exe._functions[("test", "step")] = None
    assert policy.freeze_compiled_objects(exe) and frozen == [1, 1]
    assert policy.freeze_compiled_objects(SimpleNamespace()) and frozen == [1, 1, 1]  # CudaExecutable: no CPU functions
    monkeypatch.setenv("KGRAPH_PLAIN", "1")
    exe._functions[("predict", "step")] = None
    assert not policy.freeze_compiled_objects(exe) and frozen == [1, 1, 1]


def test_fit_freezes_only_once_its_steps_have_run_a_while(monkeypatch):
    """The collection before the freeze costs tens of milliseconds: a short fit does not pay it;
    one whose steps have run FREEZE_AFTER_SECONDS freezes once."""
    from kgraph.runtime import model as runtime_model

    frozen = []
    monkeypatch.setattr(runtime_model, "freeze_compiled_objects", lambda exe: frozen.append(exe) or True)
    model = models.model_from_json(EXAMPLE.read_text(), seed=0)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    rs = np.random.RandomState(0)
    x, y = rs.rand(64, 64).astype(np.float32), rs.randint(0, 10, 64)
    model.train_on_batch(x[:8], y[:8])  # the kernels compile here, on an empty cache (seconds)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert frozen == []
    monkeypatch.setattr(runtime_model, "FREEZE_AFTER_SECONDS", 0.0)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert frozen == [model.executable] * 2  # then at each epoch's start, for steps loaded since


DENORMALS = (
    "import numpy as np, json\n"
    "import kgraph.models as m\n"
    "tiny = np.float32(1e-39)\n"
    f"m.load_model({str(EXAMPLE)!r})\n"
    "print(json.dumps(float(tiny * np.float32(1.0))))\n"
)


def test_denormals_stay_on_the_plain_path():
    """(tests/test_runtime.py checks that they are flushed otherwise.)"""
    import os

    r = subprocess.run(
        [sys.executable, "-c", DENORMALS],
        capture_output=True,
        text=True,
        env=dict(os.environ, KGRAPH_PLAIN="1"),
        check=False,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) > 0


def _fit(**compile_args):
    config = json.loads(EXAMPLE.read_text())
    config["config"]["name"] = "plain_path"  # a step of its own: not compiled by another test here
    model = models.model_from_json(json.dumps(config), seed=3)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], **compile_args)
    rs = np.random.RandomState(0)
    x, y = rs.standard_normal((200, 64)).astype(np.float32), rs.randint(0, 10, 200)
    history = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
    return model, history.history


def test_the_plain_path_runs_the_compiled_step_one_step_a_call(monkeypatch, tmp_path, calls):
    """KGRAPH_PLAIN=1 with background compilation asked for: the first call already runs the
    compiled step (no child, no Python twin), one step a call even with steps_per_execution, and
    fit learns what the default path learns."""
    monkeypatch.setenv("KGRAPH_BACKGROUND_COMPILE", "1")
    monkeypatch.setenv("KGRAPH_CACHE_DIR", str(tmp_path))  # a step not in any cache yet
    monkeypatch.setenv("KGRAPH_PLAIN", "1")
    plain, plain_logs = _fit(steps_per_execution=4)
    exe = plain.executable
    assert ("train", "step") in exe._compiled and not exe.compiler._jobs
    assert calls == [1] * 14  # 2 epochs of 7 batches
    assert next(iter(exe.threads._tuners.values())).options == [(1, 1)]
    monkeypatch.setenv("KGRAPH_PLAIN", "0")
    monkeypatch.setenv("KGRAPH_BACKGROUND_COMPILE", "0")
    calls.clear()
    default, default_logs = _fit(steps_per_execution=4)
    assert max(calls) == 4
    for k in plain_logs:
        np.testing.assert_allclose(plain_logs[k], default_logs[k], rtol=1e-5)
    for a, b in zip(plain.get_weights(), default.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@numba.njit
def _typable(x):
    return x * 2


def _plain_python(x):
    return x


@numba.njit
def _python_only(x):
    return _plain_python(x)  # Python runs it; Numba cannot type a call of a function it does not compile


def test_uncompiled_steps_run_in_python_and_raise_what_numbas_typing_would(monkeypatch):
    """KGRAPH_COMPILE_STEPS=0 (off on the plain path): a step runs as its Python function, which
    Numba types on its first call (kgraph/runtime/typecheck.py), compiling nothing."""
    from numba.core.errors import TypingError

    from kgraph.runtime.typecheck import checked_twin

    monkeypatch.delenv("KGRAPH_PLAIN", raising=False)
    monkeypatch.setenv("KGRAPH_COMPILE_STEPS", "0")
    assert not policy.compile_steps()
    monkeypatch.setenv("KGRAPH_PLAIN", "1")
    assert policy.compile_steps()
    x = np.arange(3.0)
    np.testing.assert_array_equal(checked_twin(_typable)(x), 2 * x)
    assert not _typable.overloads  # typed, never compiled
    with pytest.raises(TypingError):
        checked_twin(_python_only)(x)


def test_type_checks_hold_numbas_compiler_lock(monkeypatch):
    """Replicas' threads type their steps at once (runtime/replicas.py); Numba's typing context is
    not thread-safe (CI: "generator already executing" in its registries' refresh), and its own
    compiles take its global compiler lock, so the type check takes it too."""
    from numba.core import compiler
    from numba.core.compiler_lock import global_compiler_lock

    from kgraph.runtime import typecheck

    held, compile_extra = [], compiler.compile_extra

    def checking(*args, **kwargs):
        held.append(global_compiler_lock.is_locked())
        return compile_extra(*args, **kwargs)

    monkeypatch.setattr(compiler, "compile_extra", checking)
    typecheck.type_check(_typable, (np.arange(3.0),))
    assert held == [True]


@numba.njit
def _sums_columns(x, partial, out):
    K.column_sum(x, partial, out, False)  # one argument short: column_sum(x, out, partial, mean, parts)


@numba.njit
def _sums_columns_in_two_parts(x, partial, out):
    K.column_sum(x, out, partial, False, 2)


def test_a_driver_is_typed_by_its_signature_and_run_as_python():
    """The type check types a call of a driver (kernels/cpu.py `driver`) against a stand-in that
    binds its arguments and types its own lines, without compiling it (the serial copy it was
    typed against compiled every kernel it calls: a recurrent driver's every cell took half a
    minute of the suite), and the Python step runs its body, whose calls of compiled kernels
    Numba types as they run."""
    from numba.core.errors import TypingError

    from kgraph.runtime.typecheck import checked_twin

    x, partial, out = (
        np.arange(12.0, dtype=np.float32).reshape(4, 3),
        np.zeros((2, 3), np.float32),
        np.zeros(3, np.float32),
    )
    compiled = dict(K.column_sum.overloads)
    checked_twin(_sums_columns_in_two_parts)(x, partial, out)
    np.testing.assert_array_equal(out, x.sum(axis=0))
    assert dict(K.column_sum.overloads) == compiled
    with pytest.raises(TypingError, match=r"column_sum\(\): missing a required argument: 'parts'"):
        checked_twin(_sums_columns)(x, partial, out)
    # the driver's own lines are typed: it reshapes its kernel gradient, which Numba refuses for a
    # strided view (NumPy would copy), as the compiled step would have
    image, pooled = np.zeros((2, 4, 4, 3), np.float32), np.zeros((2, 2, 2, 3), np.float32)
    args = [pooled, image, pooled, image.copy(), np.zeros((32, 3), np.float32), np.zeros((1, 6), np.float32)]
    args += [np.zeros(3, np.float32), np.zeros((32, 6), np.float32), np.zeros((6, 3), np.float32)]
    args += [np.zeros((1, 6, 3), np.float32)]
    checked_twin(_pools_and_sums_kernel_gradient)(*args)  # typed (and run) as the step would
    args[8] = np.zeros((6, 6), np.float32)[:, ::2]
    with pytest.raises(TypingError, match="reshape"):
        checked_twin(_pools_and_sums_a_strided_kernel_gradient)(*args)  # (a twin types its first call)


@numba.njit
def _pools_and_sums_kernel_gradient(g, x, y, gx, rows, scratch, bias, patches, dkernel, partials):
    K.pool2d_grad_kernel_grad(g, x, y, gx, rows, scratch, bias, patches, dkernel, partials, True, 2, 2, 2, 2, 0, 0, False, False, 2)  # fmt: skip


@numba.njit
def _pools_and_sums_a_strided_kernel_gradient(g, x, y, gx, rows, scratch, bias, patches, dkernel, partials):
    K.pool2d_grad_kernel_grad(g, x, y, gx, rows, scratch, bias, patches, dkernel, partials, True, 2, 2, 2, 2, 0, 0, False, False, 2)  # fmt: skip
