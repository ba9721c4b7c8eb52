"""Ctrl-C and SIGTERM in a process that trains trials on a storage, cooperatively.

Optuna creates a trial (RUNNING) before it calls the objective and stores its final state
after. A KeyboardInterrupt raised in between — while Optuna asks for a trial, or while an
epoch's value is being written — would leave a RUNNING trial behind until its heartbeat goes
stale, or cut a write in half. So a signal raises at once only while an epoch computes (the
gate is open); anywhere else it is remembered, and the trial that is starting or training
stops at its next :meth:`Gate.check` (stored FAIL, marked interrupted), and no trial starts
after it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Gate:
    def __init__(self) -> None:
        self.requested = False
        self._open = False

    def handler(self, signum, frame) -> None:  # noqa: ARG001 - signal handler signature
        # Later signals are ignored: a terminal's Ctrl-C reaches a spawned worker together
        # with the SIGTERM its parent forwards, and the second must not cut the first's cleanup.
        if self.requested:
            return
        self.requested = True
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


def route_signals(gate: Gate) -> dict:
    """Send SIGINT and SIGTERM to ``gate``; returns the handlers they had. Only the main
    thread can handle signals: elsewhere nothing changes and ``{}`` is returned."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, gate.handler) for sig in (signal.SIGINT, signal.SIGTERM)}


@contextmanager
def gated(gate: Gate) -> Iterator[Gate]:
    """:func:`route_signals` while the block runs."""
    previous = route_signals(gate)
    try:
        yield gate
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
