"""Faults from outside the program: stop signals (SIGINT, SIGTERM) and the fault-injection hook the tests kill
runs with.

Signals. `StopRequests` (a context manager around a training loop) turns the first SIGINT or SIGTERM into a
request that the loop honours at its next safe point (`check()`, after a batch or after a checkpoint), by raising
`Interrupted`; so a signal never lands in the middle of a checkpoint or summary write. A second signal raises at
once. `terminate_as_interrupt()` makes SIGTERM raise `Interrupted` like Ctrl-C does, for a command's whole life.
`Interrupted` is a KeyboardInterrupt, so code that handles Ctrl-C handles SIGTERM the same way.

Fault injection (tests). `TP_KERAS_KILL_AT=<point>[:<n>[:<signal>]]` sends this process `signal` (default KILL,
i.e. SIGKILL: no clean-up at all; TERM or INT to test the handlers) the n-th time (default 1) it reaches the kill
point `point` (see KILL_POINTS). Unset, the hook costs one dictionary lookup.
"""
from __future__ import annotations

import collections
import os
import signal
import threading

KILL_ENV = "TP_KERAS_KILL_AT"
KILL_POINTS = {
    "train_batch": "before the n-th training batch (counted over the whole run in this process)",
    "feedback_batch": "before the n-th feedback-only batch (feedback pre-training and extra feedback passes)",
    "checkpoint_rename": "during the n-th checkpoint write: the temporary file is complete, not yet renamed",
    "after_checkpoint": "right after the n-th checkpoint, its metrics line and its summary are written",
    "summary_rename": "during the n-th summary.json write: the temporary file is complete, not yet renamed",
}
_SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}
_reached: collections.Counter = collections.Counter()


class KillSpecError(ValueError):
    """A malformed TP_KERAS_KILL_AT (one line)."""


def kill_spec() -> tuple[str, int, int] | None:
    """(point, n, signal number) of TP_KERAS_KILL_AT, or None when unset; KillSpecError when malformed."""
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return None
    point, _, rest = spec.partition(":")
    count, _, name = rest.partition(":")
    if point not in KILL_POINTS or (count and not count.isdigit()) or (name and name not in _SIGNALS):
        raise KillSpecError(f"{KILL_ENV}={spec}: expected <point>[:<n>[:KILL|TERM|INT]] with point one of "
                         f"{', '.join(KILL_POINTS)}")
    return point, int(count or 1), _SIGNALS[name or "KILL"]


def kill_point(point: str) -> None:
    """The fault-injection hook: signals this process if TP_KERAS_KILL_AT names `point` and this is its n-th
    visit."""
    spec = kill_spec()
    if spec is None or spec[0] != point:
        return
    _reached[point] += 1
    if _reached[point] == spec[1]:
        os.kill(os.getpid(), spec[2])


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM. `signal_name` is 'SIGINT' or 'SIGTERM'; `str(err)` is one line."""

    def __init__(self, signal_name: str, message: str | None = None):
        super().__init__(message or f"interrupted by {signal_name}")
        self.signal_name = signal_name

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by the signal: 128 + its number (130, 143)."""
        return 128 + int(getattr(signal, self.signal_name, signal.SIGINT))


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_interrupted(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def terminate_as_interrupt():
    """From now on SIGTERM raises Interrupted('SIGTERM') (as SIGINT raises KeyboardInterrupt); returns the
    previous handler (to restore with signal.signal), or None outside the main thread, where nothing changes.
    Commands call it first thing, so a scheduler's SIGTERM ends them with their one-line message."""
    if not _in_main_thread():
        return None
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    return signal.SIG_DFL if previous is None else previous


class StopRequests:
    """Within `with StopRequests() as stop:`, the first SIGINT/SIGTERM only records a request; `stop.check()`
    raises Interrupted if one came. A second signal raises at once. Outside the main thread (where Python cannot
    install handlers) signals keep their usual effect."""

    def __init__(self):
        self.signal_name = None
        self._previous = {}

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            raise Interrupted(name)
        self.signal_name = name

    def check(self) -> None:
        if self.signal_name is not None:
            raise Interrupted(self.signal_name)

    def __enter__(self) -> "StopRequests":
        if _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()
