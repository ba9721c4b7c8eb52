"""stdout and stderr that survive the terminal or the pipe going away.

After a hang-up (terminal closed, ssh dropped) a write to the terminal fails with EIO; after
``cnn-tune trials | head -1`` a write to the pipe fails with EPIPE. Either would turn a clean
stop into a crash — a traceback that itself cannot be shown, and an exit status that lies.
:func:`guard` wraps both streams: the first such failure points the file descriptor at
/dev/null (so later writes, flushes at exit and rich's refresh thread all succeed silently)
and the output that had nowhere to go is dropped.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any, TextIO

GONE = (errno.EIO, errno.EPIPE, errno.ECONNRESET, errno.ENXIO)


def silence(stream: Any) -> None:
    """Point ``stream``'s file descriptor at /dev/null (the terminal or reader is gone)."""
    try:
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
    except (OSError, ValueError, AttributeError):  # no descriptor (a test's capture): nothing to redirect
        pass


class Guarded:
    """A text stream whose writes and flushes drop, not raise, once the other end is gone."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.gone = False

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, buffer …: the stream's own
        return getattr(self._stream, name)

    def _dropped(self, exc: OSError) -> None:
        if exc.errno not in GONE:
            raise exc
        self.gone = True
        silence(self._stream)

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            self._dropped(exc)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            self._dropped(exc)
            try:  # what was buffered now goes to /dev/null
                self._stream.flush()
            except OSError:
                pass


def guard() -> None:
    """Wrap sys.stdout and sys.stderr (once) in :class:`Guarded`."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, Guarded):
            setattr(sys, name, Guarded(stream))
