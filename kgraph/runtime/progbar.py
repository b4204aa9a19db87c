"""A progress bar that prints what Keras 3's `keras.utils.Progbar` prints.

The layout, number formats, ETA and per-step timing follow
`keras/src/utils/progbar.py`, so logs from a kgraph trainer read like logs
from `model.fit`. Two deliberate differences: when stdout is not a terminal
(a pipe, a log file, pytest's capture) verbose=1 prints only the final line
of each bar, in plain text, instead of a stream of `\\r` redraws; and the
seconds in `excluded` (what compiling or loading the steps took, which
ProgbarLogger reads from the executable) are left out of the elapsed time,
the ETA and the time per step, so that a first run's compile does not show
as minutes to go or a total out of line with its per-step time.
"""

import math
import sys
import time

import numpy as np

_BOLD, _GREEN, _GREY, _RESET = "\x1b[1m", "\x1b[32m", "\x1b[37m", "\x1b[0m"


def print_msg(message, line_break=True):
    """Writes to the current `sys.stdout` (looked up per call, for capture)."""
    message = f"{message}\n" if line_break else str(message)
    try:
        sys.stdout.write(message)
    except UnicodeEncodeError:
        # Same fallback as Keras: ASCII bar on terminals that lack "━".
        encoding = sys.stdout.encoding or "utf-8"
        message = message.replace("━", "=").encode(encoding, errors="ignore")
        sys.stdout.write(message.decode(encoding))
    sys.stdout.flush()


def _is_dynamic_display():
    """True when `\\r` redraws will render: a TTY, or a Jupyter kernel."""
    isatty = getattr(sys.stdout, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


def _format_value(value):
    return f" {value:.4f}" if abs(value) > 1e-3 else f" {value:.4e}"


def _format_time(time_per_unit, unit_name):
    if time_per_unit >= 1 or time_per_unit == 0:
        return f" {time_per_unit:.0f}s/{unit_name}"
    if time_per_unit >= 1e-3:
        return f" {time_per_unit * 1e3:.0f}ms/{unit_name}"
    return f" {time_per_unit * 1e6:.0f}us/{unit_name}"


def _format_eta(eta):
    if eta > 3600:
        return "%d:%02d:%02d" % (eta // 3600, (eta % 3600) // 60, eta % 60)
    if eta > 60:
        return "%d:%02d" % (eta // 60, eta % 60)
    return "%ds" % eta


class Progbar:
    """Displays a progress bar.

    Args:
        target: total number of steps expected, None if unknown.
        width: bar width in characters.
        verbose: 0 (silent), 1 (live bar), 2 (one line when finished).
        interval: minimum seconds between two redraws at verbose=1.
        stateful_metrics: names shown as given; all others are averaged
            over the steps seen so far. Don't combine with
            `stateless_metrics`.
        stateless_metrics: names that are averaged; all others are shown
            as given (what ProgbarLogger uses, since fit's logs are
            already running means).
        unit_name: what a step is called in the rate, e.g. "step".
    """

    def __init__(
        self,
        target,
        width=20,
        verbose=1,
        interval=0.05,
        stateful_metrics=None,
        stateless_metrics=None,
        unit_name="step",
    ):
        if stateful_metrics is not None and stateless_metrics is not None:
            raise ValueError("Only one of `stateful_metrics` or `stateless_metrics` can be provided.")
        self.target = target
        self.width = width
        self.verbose = verbose
        self.interval = interval
        self.unit_name = unit_name
        if stateless_metrics is not None:
            self.stateful_metrics = None
            self.stateless_metrics = set(stateless_metrics)
        else:
            self.stateful_metrics = set(stateful_metrics or ())
            self.stateless_metrics = None

        self._dynamic_display = _is_dynamic_display()
        self._seen_so_far = 0
        self._values = {}  # name -> [weighted sum, weight]; dicts keep order
        self._start = time.time()
        self._last_update = 0
        self._time_after_first_step = None
        self._excluded_at_first_step = 0.0
        self.excluded = 0.0  # seconds since the start to leave out (compiling); set by the caller
        self._prev_total_width = 0

    def update(self, current, values=None, finalize=None):
        """Updates the bar to step `current`.

        Args:
            current: index of the current step (1-based count of steps done).
            values: list of `(name, value_for_last_step)` pairs.
            finalize: whether this is the last update; defaults to
                `current >= target`.
        """
        if finalize is None:
            finalize = self.target is not None and current >= self.target
        self._accumulate(current, values or [])

        now = time.time()
        time_per_unit = self._estimate_step_duration(current, now)
        if self.verbose == 1:
            if now - self._last_update < self.interval and not finalize:
                return
            self._print_live(current, now, time_per_unit, finalize)
        elif self.verbose == 2 and finalize and self._has_target():
            line = f"{self._count(current)} - {self._elapsed(now):.0f}s"
            if time_per_unit is not None:
                line += " -" + _format_time(time_per_unit, self.unit_name)
            print_msg(line + self._metrics_text())
        self._last_update = now

    def add(self, n, values=None):
        """Advances the bar by `n` steps."""
        self.update(self._seen_so_far + n, values)

    def _has_target(self):
        return self.target is not None and self.target > 0

    def _is_stateless(self, name):
        if self.stateful_metrics is not None:
            return name not in self.stateful_metrics
        return name in self.stateless_metrics

    def _accumulate(self, current, values):
        for name, value in values:
            if not self._is_stateless(name):
                self._values[name] = [value, 1]
                continue
            # Weight by the steps since the last update, at least 1 so a
            # repeated `current` still counts.
            weight = max(current - self._seen_so_far, 1)
            if name in self._values:
                self._values[name][0] += value * weight
                self._values[name][1] += weight
            else:
                self._values[name] = [value * weight, weight]
        self._seen_so_far = current

    def _metrics_text(self):
        text = ""
        for name, (total, count) in self._values.items():
            mean = float(np.mean(total)) / max(1, count)
            text += f" - {name}:" + _format_value(mean)
        return text

    def _count(self, current):
        numdigits = int(math.log10(self.target)) + 1
        return f"%{numdigits}d/%d" % (current, self.target)

    def _style(self, text, code):
        return f"{code}{text}{_RESET}" if self._dynamic_display and text else text

    def _print_live(self, current, now, time_per_unit, finalize):
        if not self._dynamic_display and not finalize:
            return  # a log file gets the finished line only

        if self._has_target():
            done = int(self.width * current / self.target)
            bar = self._style(self._count(current), _BOLD) + " "
            bar += self._style("━" * done, _GREEN)
            bar += self._style("━" * (self.width - done), _GREY)
            plain_width = len(self._count(current)) + 1 + self.width
        else:
            bar = "%7d/Unknown" % current
            plain_width = len(bar)

        if self._has_target() and not finalize and time_per_unit is not None:
            clock = _format_eta(time_per_unit * (self.target - current))
        else:
            clock = f"{self._elapsed(now):.0f}s"
        rate = "" if time_per_unit is None else _format_time(time_per_unit, self.unit_name)
        info = rate + self._metrics_text()
        total_width = plain_width + 1 + len(clock) + len(info)

        message = bar + " " + self._style(clock, _BOLD) + info
        if self._dynamic_display:
            # Blank out leftovers of a longer previous line.
            pad = max(self._prev_total_width - total_width, 0)
            message = "\r" + message + " " * pad
        self._prev_total_width = total_width
        print_msg(message, line_break=finalize)

    def _elapsed(self, now):
        return max(now - self._start - self.excluded, 0.0)

    def _estimate_step_duration(self, current, now):
        """Seconds per step, ignoring the (usually slow) first step and the excluded seconds;
        None when the first step was all excluded (its time says nothing of the next ones)."""
        if not current:
            return 0
        if self._time_after_first_step is not None and current > 1:
            excluded = self.excluded - self._excluded_at_first_step
            time_per_unit = max(now - self._time_after_first_step - excluded, 0.0) / (current - 1)
        elif self.excluded and current == 1:
            time_per_unit = None
        else:
            time_per_unit = self._elapsed(now) / current
        if current == 1:
            self._time_after_first_step, self._excluded_at_first_step = now, self.excluded
        return time_per_unit
