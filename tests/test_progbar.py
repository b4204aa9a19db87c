import io
import re

import pytest

from kgraph.runtime import progbar as progbar_module
from kgraph.runtime.progbar import Progbar

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class FakeClock:
    """Stands in for the `time` module inside progbar, so timings are exact."""

    def __init__(self, now=1000.0):
        self.now = now

    def time(self):
        return self.now


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(progbar_module, "time", fake)
    return fake


def fake_tty(monkeypatch):
    # Patched inside the test body: pytest re-installs its own capture
    # stream between fixture setup and the test call.
    out = FakeTTY()
    monkeypatch.setattr("sys.stdout", out)
    return out


def run_steps(bar, clock, n, step_s, values_fn):
    for i in range(1, n + 1):
        clock.now += step_s
        bar.update(i, values_fn(i))


def test_non_tty_prints_only_final_plain_line(clock, capsys):
    bar = Progbar(57)
    run_steps(bar, clock, 57, 0.009, lambda i: [("accuracy", 0.5), ("loss", 1.25)])
    out = capsys.readouterr().out
    assert out == "57/57 " + "━" * 20 + " 1s 9ms/step - accuracy: 0.5000 - loss: 1.2500\n"


def test_values_are_step_weighted_means_unless_stateful(clock, capsys):
    bar = Progbar(4, stateful_metrics=["acc"])
    bar.update(1, [("loss", 1.0), ("acc", 0.1)])
    bar.update(3, [("loss", 4.0), ("acc", 0.2)])  # covers two steps
    bar.update(4, [("loss", 0.0), ("acc", 0.3)])
    out = capsys.readouterr().out
    # loss: (1*1 + 4*2 + 0*1) / 4 = 2.25; acc shown as last given.
    assert out.endswith(" - loss: 2.2500 - acc: 0.3000\n")


def test_small_values_use_scientific_format(clock, capsys):
    bar = Progbar(1)
    bar.update(1, [("loss", 2.5e-5), ("neg", -0.5)])
    assert capsys.readouterr().out.endswith(" - loss: 2.5000e-05 - neg: -0.5000\n")


def test_verbose_2_prints_one_summary_line(clock, capsys):
    bar = Progbar(57, verbose=2)
    run_steps(bar, clock, 57, 0.009, lambda i: [("loss", 0.5)])
    out = capsys.readouterr().out
    assert out == "57/57 - 1s - 9ms/step - loss: 0.5000\n"


def test_verbose_0_prints_nothing(clock, capsys):
    bar = Progbar(5, verbose=0)
    run_steps(bar, clock, 5, 0.1, lambda i: [("loss", 1.0)])
    assert capsys.readouterr().out == ""


def test_tty_redraws_with_carriage_return_colors_and_eta(clock, monkeypatch):
    tty = fake_tty(monkeypatch)
    bar = Progbar(20, interval=0.0)
    clock.now += 0.5
    bar.update(1, [("loss", 1.0)])
    clock.now += 0.002
    bar.update(10, [("loss", 1.0)])
    frames = tty.getvalue().split("\r")[1:]
    assert len(frames) == 2
    assert "\x1b[32m" + "━" * 10 + "\x1b[0m" in frames[1]  # done part, green
    assert "\x1b[37m" + "━" * 10 + "\x1b[0m" in frames[1]  # rest, grey
    # First step is excluded from the rate: 0.002 s over 9 steps -> 222us.
    # ETA = rate * 10 remaining steps, rounded down to whole seconds.
    assert ANSI.sub("", frames[1]) == ("10/20 " + "━" * 20 + " 0s 222us/step - loss: 1.0000")
    assert not tty.getvalue().endswith("\n")


def test_tty_final_line_pads_over_longer_previous_line(clock, monkeypatch):
    tty = fake_tty(monkeypatch)
    bar = Progbar(2, interval=0.0)
    clock.now += 0.001
    bar.update(1, [("a_long_metric_name", 1.0)])
    bar.update(2, finalize=True)
    first, last = [ANSI.sub("", f) for f in tty.getvalue().split("\r")[1:]]
    assert len(last.rstrip("\n")) >= len(first)
    assert last.endswith("\n")


def test_redraws_are_throttled_but_final_always_drawn(clock, monkeypatch):
    tty = fake_tty(monkeypatch)
    bar = Progbar(100)  # default interval 0.05 s
    for i in range(1, 101):
        clock.now += 0.01
        bar.update(i)
    frames = tty.getvalue().split("\r")[1:]
    # Drawn at step 1, then whenever >= 0.05 s passed since the last draw,
    # plus the final step: far fewer than 100 frames.
    assert 15 <= len(frames) <= 25
    assert ANSI.sub("", frames[-1]).startswith("100/100 ")


def test_add_advances_by_n(clock, capsys):
    bar = Progbar(6, verbose=2)
    bar.add(2, [("loss", 3.0)])
    bar.add(4, [("loss", 0.0)])
    assert capsys.readouterr().out.startswith("6/6 - ")
    assert bar._seen_so_far == 6


def test_unknown_target_shows_count(clock, monkeypatch):
    tty = fake_tty(monkeypatch)
    bar = Progbar(None, interval=0.0)
    clock.now += 0.003
    bar.update(3, [("loss", 2.0)], finalize=True)
    assert ANSI.sub("", tty.getvalue()) == "\r      3/Unknown 0s 1ms/step - loss: 2.0000\n"


def test_rate_units(clock, capsys):
    for step_s, unit in [(2.0, " 2s/step"), (0.02, " 20ms/step"), (2e-5, " 20us/step")]:
        bar = Progbar(3, verbose=2)
        run_steps(bar, clock, 3, step_s, lambda i: [])
        assert unit in capsys.readouterr().out


def test_stateful_and_stateless_are_exclusive():
    with pytest.raises(ValueError):
        Progbar(3, stateful_metrics=["a"], stateless_metrics=["b"])


def test_excluded_seconds_stay_out_of_the_eta_total_and_rate(clock, monkeypatch):
    """A first step that compiled for 30 s: the first frame shows no ETA or rate (nothing measured
    yet), the next ones the steps' own pace, and the final line's total and rate leave the 30 s out."""
    tty = fake_tty(monkeypatch)
    bar = Progbar(45, interval=0.0)
    clock.now += 30.01
    bar.excluded = 30.0
    bar.update(1, [("loss", 1.0)])
    clock.now += 0.44
    bar.update(45, [("loss", 1.0)], finalize=False)
    bar.update(45, [("loss", 1.0)])
    first, second, last = [ANSI.sub("", f) for f in tty.getvalue().split("\r")[1:]]
    assert first == " 1/45 " + "━" * 20 + " 0s - loss: 1.0000"  # not "1:49 2s/step"
    assert second.startswith("45/45 " + "━" * 20 + " 0s 10ms/step")  # 0.44 s over 44 steps
    assert last.startswith("45/45 " + "━" * 20 + " 0s 10ms/step") and last.endswith("\n")


def test_verbose_2_epoch_line_total_and_rate_leave_compilation_out(clock, capsys):
    bar = Progbar(10, verbose=2)
    clock.now += 12.0 + 10 * 0.2  # 12 s compiling, then 10 steps of 200 ms
    bar.excluded = 12.0
    bar.update(10, [("loss", 0.5)])
    assert capsys.readouterr().out == "10/10 - 2s - 200ms/step - loss: 0.5000\n"


def test_fit_leaves_the_first_calls_compile_out_of_its_progress(monkeypatch, capsys):
    """fit with a fake clock whose step's first call takes 40 s (as compiling on an empty cache
    does) and every other call 10 ms: the epoch lines show the steps' time, not the compile's."""
    import json
    from pathlib import Path
    from types import SimpleNamespace

    import numpy as np

    from kgraph import models
    from kgraph.runtime import executable

    monkeypatch.setenv("KGRAPH_PLAIN", "1")  # one step a call: each call is one step of the fake clock
    fake = FakeClock()
    monkeypatch.setattr(progbar_module, "time", fake)
    monkeypatch.setattr(executable, "time", SimpleNamespace(perf_counter=fake.time))
    real = executable.Executable.function

    def timed(self, kind, part="step"):
        if (kind, part) not in self._functions:
            fn, calls = real(self, kind, part), []

            def call(*args):
                fake.now += 0.01 if calls else 40.0
                calls.append(1)
                return fn(*args)

            self._functions[(kind, part)] = call
        return self._functions[(kind, part)]

    monkeypatch.setattr(executable.Executable, "function", timed)
    config = json.loads((Path(__file__).parent.parent / "examples" / "digits_mlp.json").read_text())
    model = models.model_from_json(json.dumps(config), seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = np.zeros((64, 64), np.float32), np.zeros(64, np.int64)
    model.fit(x, y, batch_size=8, epochs=2, verbose=2)
    lines = capsys.readouterr().out.splitlines()
    assert model.executable.setup_seconds >= 40.0
    # 70 ms over 8 steps (the first step's own time goes out with its compile), not 40 s
    assert lines[0] == "Epoch 1/2" and lines[1].startswith("8/8 - 0s - 9ms/step - loss: ")
    assert lines[2] == "Epoch 2/2" and lines[3].startswith("8/8 - 0s - 10ms/step - loss: ")
