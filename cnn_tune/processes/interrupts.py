"""Ctrl-C, SIGTERM and SIGHUP in a process that trains trials on a storage, cooperatively.

Optuna creates a trial (RUNNING) before it calls the objective and stores its final state
after. A KeyboardInterrupt raised in between — while Optuna asks for a trial, or while an
epoch's value is being written — would leave a RUNNING trial behind until its heartbeat goes
stale, or cut a write in half. So a signal raises at once only while an epoch computes (the
stop_request is open); anywhere else it is remembered, and the trial that is starting or training
stops at its next :meth:`StopRequest.check` (stored FAIL, marked interrupted), and no trial starts
after it.

SIGHUP (the terminal closed, an ssh session dropped) is a stop like the others; the command
then exits 129 instead of 130 (:func:`exit_code`).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
REASONS = {
    signal.SIGINT: "interrupted (Ctrl-C)",
    signal.SIGTERM: "stopped (SIGTERM)",
    signal.SIGHUP: "hang-up (SIGHUP: the terminal went away)",
}
PARENT_GONE = "the optimize process that started this worker is gone"


def exit_code(signum: int | None) -> int:
    """A stopped command's exit status: 129 after a hang-up, 130 otherwise (Ctrl-C, SIGTERM)."""
    return 128 + signal.SIGHUP if signum == signal.SIGHUP else 130


class StopRequest:
    """Whether a stop was asked for, and why. ``parent`` (a worker's): the pid of the process
    that started it. ``explain`` (a worker's): given the signal, a better reason than its name
    when there is one — the kernel's parent-death signal is a plain SIGTERM, and comes as soon
    as the parent's *thread* that started the worker exits, before the parent's pid is gone, so
    only later can it be told apart (see :mod:`cnn_tune.processes.lifeline`)."""

    def __init__(self, parent: int | None = None, explain: Callable[[int], str | None] | None = None) -> None:
        self.requested = False
        self._open = False
        self._handled = False  # a signal was handled (a request may also come from a thread)
        self.parent = parent
        self.explain = explain
        self.signum: int | None = None  # the first stop signal
        self.reason: str | None = None

    def request(self, signum: int, reason: str | None = None) -> None:
        """Record the first stop; later ones only keep it (see :meth:`handler`)."""
        if self.requested:
            return
        self.signum = signum
        self.reason = reason
        self.requested = True

    def why(self) -> str:
        """Why the run stopped, in words, as stored on the trial it stopped (may wait a moment
        for ``explain``: call it once the trial is stopping, never in a signal handler)."""
        if self.reason is None and self.signum is not None and self.explain is not None:
            self.reason = self.explain(self.signum)
        return self.reason or REASONS.get(self.signum, "interrupted")

    def handler(self, signum, frame) -> None:  # noqa: ARG001 - signal handler signature
        # Later signals are ignored: a terminal's Ctrl-C reaches a spawned worker together
        # with the SIGTERM its parent forwards, and the second must not cut the first's cleanup.
        if self._handled:
            return
        self._handled = True
        self.request(signum)
        if self._open:
            raise KeyboardInterrupt

    def check(self) -> None:
        """Raise KeyboardInterrupt if a stop was asked for."""
        if self.requested:
            raise KeyboardInterrupt

    @contextmanager
    def open(self) -> Iterator[None]:
        """A stretch of pure computation that a signal may cut short at once."""
        self.check()
        self._open = True
        try:
            yield
        finally:
            self._open = False


def route_signals(stop_request: StopRequest) -> dict:
    """Send SIGINT, SIGTERM and SIGHUP to ``stop_request``; returns the handlers they had. Only the
    main thread can handle signals: elsewhere nothing changes and ``{}`` is returned."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, stop_request.handler) for sig in stop_signals()}


def stop_signals() -> tuple[int, ...]:
    """The signals that stop a run: SIGHUP only where it is not ignored — under ``nohup`` the
    user asked for the run to outlive the terminal."""
    ignored = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
    return tuple(s for s in STOP_SIGNALS if not (s == signal.SIGHUP and ignored))


@contextmanager
def routed_to(stop_request: StopRequest) -> Iterator[StopRequest]:
    """:func:`route_signals` while the block runs."""
    previous = route_signals(stop_request)
    try:
        yield stop_request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def sigterm_as_interrupt(stop_request: StopRequest):
    """SIGTERM (``kill``, a batch scheduler, a container stop) and SIGHUP (the terminal went
    away) stop the waiting parent of ``--workers N`` like Ctrl-C: it forwards the stop, so each
    worker's trial gets a final state. ``stop_request`` records which signal it was."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
        first = not stop_request.requested
        stop_request.request(signum)
        if first:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in stop_signals() if sig != signal.SIGINT}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
