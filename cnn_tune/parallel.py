"""``optimize --workers N``: N spawned worker processes on one study, their events to the parent.

The parent has already checked everything, read the data and created the study; each worker
opens its own storage connection (once), reads the data from the same folder and runs
:func:`cnn_tune.worker.run` with a trial counter shared by all of them.

Workers put their events on a queue; the parent hands each to its ``handle`` callback. When
the threads were shared out automatically, a worker whose peers have exited takes their cores
before its next epoch (:class:`CoreShare`). Ctrl-C
or SIGTERM in the parent is forwarded as SIGTERM, which each worker handles like Ctrl-C: its
running trial ends FAIL, it exits (see :mod:`cnn_tune.interrupts`). A parent that dies
without a word (SIGKILL, the OOM killer) takes its workers with it (:mod:`cnn_tune.lifeline`):
nothing a worker does waits forever on the parent (locks and queue writes have timeouts and
give up once it is gone).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
from dataclasses import dataclass
from typing import Callable

import torch

from .data import read_folder
from .interrupts import PARENT_GONE, Gate, route_signals
from .lifeline import Lifeline
from .plan import Plan
from .streams import guard
from .study import open_storage, quiet_libraries, quiet_optuna
from .worker import Claims, Event, Exited, Failed, attach, run

JOIN_TIMEOUT_S = 60  # after a stop request, how long a worker may take to end its trial
WAIT_S = 1.0  # a worker's longest wait on a shared lock or the queue before it looks at its parent again
PARENT_CHECK_S = 2.0  # after a SIGTERM nobody announced: how long to look for the parent's death


@dataclass
class _Shared:
    claimed: "mp.sharedctypes.Synchronized"
    stop: "mp.synchronize.Event"
    events: "mp.queues.Queue"
    alive: "mp.sharedctypes.Synchronized"  # workers not yet done with their trials


class CoreShare:
    """A worker's CPU threads when they were shared out of ``cores`` (``Plan.cores``): its share
    of the cores among the workers still running trials. Once the trials are all claimed, the
    workers exit one by one and the last trial often runs alone: without this it trained on
    its one thread with the other cores idle."""

    def __init__(self, cores: int, alive: "mp.sharedctypes.Synchronized") -> None:
        self.cores, self.alive = cores, alive

    def threads(self) -> int:
        return max(1, self.cores // max(1, self.alive.value))

    def __call__(self) -> int:
        """Before an epoch: take the threads now due (torch's setting is per process)."""
        threads = self.threads()
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        return threads


def _locked(value: "mp.sharedctypes.Synchronized", lifeline: Lifeline, change: Callable[[int], int | None]) -> bool:
    """Apply ``change`` to a shared counter under its lock (None: leave it); False if the
    parent went away while waiting for the lock."""
    lock = value.get_lock()
    while not lock.acquire(timeout=WAIT_S):
        if lifeline.gone.is_set():
            return False
    try:
        new = change(value.value)
        if new is None:
            return False
        value.value = new
        return True
    finally:
        lock.release()


def _worker_main(index: int, plan: Plan, shared: _Shared, hup_ignored: bool) -> None:
    """A worker process; it takes the parent's stance on SIGHUP, which the fork server ignores."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN if hup_ignored else signal.SIG_DFL)
    guard()  # a terminal that hangs up must not turn the worker's clean stop into a crash
    quiet_optuna(False)
    lifeline = Lifeline()

    def explain(signum: int) -> str | None:
        # a SIGTERM the parent did not send (it sets `stop` first) may be the kernel's parent-death signal
        if signum == signal.SIGTERM and not shared.stop.is_set() and lifeline.gone.wait(PARENT_CHECK_S):
            return PARENT_GONE
        return None

    gate = Gate(parent=os.getppid(), explain=explain)  # Ctrl-C, SIGTERM, a hang-up, the parent's death: stop
    route_signals(gate)  # for the life of this process: nothing to restore
    # once the parent is gone nobody reads the queue: exit without waiting to flush it
    lifeline.watch(gate, on_gone=shared.events.cancel_join_thread)

    def take() -> bool:
        return _locked(shared.claimed, lifeline, lambda n: n + 1 if n < plan.trials else None)

    def sink(event: Event) -> None:
        while not lifeline.gone.is_set():
            try:
                shared.events.put(event, timeout=WAIT_S)
                return
            except queue.Full:
                continue

    def attach_study():
        data = read_folder(plan.data_folder, plan.protocol.ref, plan.protocol.class_names)
        return attach(open_storage(plan.url, plan.heartbeat, write=True), plan, index), data

    pace = CoreShare(plan.cores, shared.alive) if plan.cores else torch.get_num_threads
    try:
        with quiet_libraries(debug=False):  # failures travel to the parent whole, tracebacks included
            run(attach_study, plan, index, Claims(plan, index, sink, take, shared.stop.is_set), sink, gate, pace)
    finally:  # its cores are free: the others take them before their next epoch
        _locked(shared.alive, lifeline, lambda n: n - 1)


def run_workers(plan: Plan, handle: Callable[[Event], None], info: Callable[[str], None]) -> bool:
    """Run ``plan`` in ``plan.workers`` processes; every event goes to ``handle``. The first
    :class:`Failed` stops the others. Returns when all have exited: True if KeyboardInterrupt
    (Ctrl-C, or SIGTERM turned into it by the caller) stopped them, which is not re-raised."""
    _give_back_memory()
    ctx = _context()
    hup_ignored = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN  # nohup: the workers ignore it too
    _start_helpers(ctx)
    shared = _Shared(ctx.Value("i", 0), ctx.Event(), ctx.Queue(), ctx.Value("i", plan.workers))
    procs = [ctx.Process(target=_worker_main, args=(i, plan, shared, hup_ignored), name=f"cnn-tune-worker-{i}",
                         daemon=True) for i in range(plan.workers)]
    info(f"Starting {plan.workers} workers, {plan.threads} CPU thread(s) each")
    try:
        for p in procs:
            p.start()
        return _supervise(procs, shared, handle)
    finally:
        _stop_forkserver(ctx)


def _give_back_memory() -> None:
    """The parent only waits from here on: collect what reading the data left behind and hand
    the freed heap back to the system (glibc keeps it otherwise), so it does not sit beside
    the workers' memory for the whole run."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def _supervise(procs: list, shared: _Shared, handle: Callable[[Event], None]) -> bool:
    running = set(range(len(procs)))
    try:
        while running:
            try:
                event = shared.events.get(timeout=0.5)
            except queue.Empty:
                running -= {i for i in running if not procs[i].is_alive()}  # died without a word (OOM, kill)
                continue
            handle(event)
            if isinstance(event, Failed) and not shared.stop.is_set():
                _stop(shared, procs)
            elif isinstance(event, Exited):
                running.discard(event.worker)
    except KeyboardInterrupt:
        _stop(shared, procs)
        _drain(shared, procs, handle)
        return True
    finally:
        for p in procs:
            p.join(JOIN_TIMEOUT_S)
            if p.is_alive():
                p.kill()
    return False


# The workers' start method. forkserver: one helper process imports torch and this module once
# (~290 MB of torch's own heap, private to every process that imports it: operator tables,
# library initialisers), and each worker is forked from it, sharing those pages; spawn made
# every worker import torch anew. The helper holds no storage connection, no thread pool and
# no data, so a fork of it inherits nothing of the parent's (fork of the parent would).
PRELOAD = ["cnn_tune.forkserve"]


def _context() -> mp.context.BaseContext:
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        return ctx
    return mp.get_context("spawn")


def _start_helpers(ctx: mp.context.BaseContext) -> None:
    """Start multiprocessing's helper processes — the resource tracker (the helper our
    semaphores register with) and, for forkserver, the fork server — ignoring SIGHUP. They sit
    in our process group: a hang-up would kill them, and a resource tracker started in its
    place prints a KeyError traceback for every semaphore it never saw. The workers restore
    their own signal handling (:func:`cnn_tune.interrupts.route_signals`); the helpers exit
    on their own once the parent has closed their pipes."""
    from multiprocessing import forkserver, resource_tracker

    def start() -> None:
        resource_tracker.ensure_running()
        if ctx.get_start_method() == "forkserver":
            forkserver.ensure_running()

    try:
        previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals cannot be changed here
        start()
        return
    try:
        start()
    finally:
        signal.signal(signal.SIGHUP, previous)


def _stop_forkserver(ctx: mp.context.BaseContext) -> None:
    """The fork server outlives its last worker unless stopped: no process of ours may outlive
    the command (an in-process caller, a test, would keep it)."""
    if ctx.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    stop = getattr(forkserver._forkserver, "_stop", None)  # noqa: SLF001 - the stdlib's own way to end it
    if stop is not None:
        stop()


def _stop(shared: _Shared, procs: list) -> None:
    shared.stop.set()
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGTERM)


def _drain(shared: _Shared, procs: list, handle: Callable[[Event], None]) -> None:
    """After a stop request: pass on what the workers still say until they have all exited."""
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        try:
            handle(shared.events.get(timeout=0.2))
        except queue.Empty:
            continue
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting politely
            for p in procs:
                if p.is_alive():
                    p.kill()
            return
