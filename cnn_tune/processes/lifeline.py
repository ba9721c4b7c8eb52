"""A spawned worker's tie to the process that started it.

When the parent of ``optimize --workers N`` dies without stopping its workers (``kill -9``, the
OOM killer, a scheduler's hard kill), nothing else would stop them: they would train on
unsupervised for hours, or hang at exit on a queue nobody reads. So each worker watches its
parent two ways:

- on Linux, ``prctl(PR_SET_PDEATHSIG, SIGTERM)``: the kernel sends SIGTERM as soon as the
  parent's thread that started the worker exits — with the process, when it is killed — which
  the worker's :class:`~cnn_tune.processes.interrupts.StopRequest` handles like Ctrl-C (it cannot tell this
  SIGTERM from a ``kill``: the sentinel below tells, a moment later);
- everywhere, a thread waiting on the parent's sentinel (a pipe multiprocessing keeps open in
  the parent, which reaches EOF when the parent is gone) that then signals the worker itself.

Either way the running trial is stored FAIL with the reason in its attributes, no new trial
starts, and the worker exits; should it hang anyway (a storage that never answers), the
watcher ends the process after :data:`EXIT_DEADLINE_S`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from typing import Callable

from cnn_tune.processes.interrupts import PARENT_GONE, StopRequest

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
EXIT_DEADLINE_S = 8.0  # after the parent is gone: stop the trial, store it, exit — or be ended
EXIT_CODE_ORPHANED = 3


def set_death_signal(signum: int = signal.SIGTERM) -> bool:
    """Ask the Linux kernel to send ``signum`` when the parent dies; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):  # no libc by that name, or no prctl in it
        return False


class Lifeline:
    """Started once, first thing in a worker process (:meth:`watch`)."""

    def __init__(self) -> None:
        self.gone = threading.Event()  # set once the parent is known to be gone

    def watch(self, stop_request: StopRequest, on_gone: Callable[[], None] = lambda: None) -> None:
        """From now on, the parent's death stops this process through ``stop_request``. ``on_gone``
        runs first, on the watcher thread: e.g. stop waiting to flush a queue nobody reads."""
        parent_pid = stop_request.parent
        set_death_signal(signal.SIGTERM)
        parent = multiprocessing.parent_process()
        # The parent may have died before prctl took effect: then no signal will ever come.
        already_gone = parent_pid is not None and os.getppid() != parent_pid
        if parent is None and not already_gone:
            return  # not a multiprocessing child: nothing to watch

        def wait() -> None:
            if not already_gone:
                multiprocessing.connection.wait([parent.sentinel])
            self.gone.set()
            on_gone()
            stop_request.request(signal.SIGTERM, PARENT_GONE)
            os.kill(os.getpid(), signal.SIGTERM)  # wakes the main thread; the stop_request already knows why
            time.sleep(EXIT_DEADLINE_S)
            os._exit(EXIT_CODE_ORPHANED)  # still here: stuck somewhere no signal reaches

        threading.Thread(target=wait, name="cnn-tune-lifeline", daemon=True).start()
