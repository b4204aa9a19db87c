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
