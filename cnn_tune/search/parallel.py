"""Running a plan: in this process, or as ``--workers N`` worker processes on one study (events
to the parent either way; :func:`execute` collects them into the result).

The parent has already checked everything, read the data and created the study; each worker
opens its own storage connection (once), reads the data from the same folder and runs
:func:`cnn_tune.search.worker.run` with a trial counter shared by all of them.

Workers put their events on a queue; the parent hands each to its ``handle`` callback. When
the threads were shared out automatically, a worker whose peers have exited takes their cores
before its next epoch (:class:`cnn_tune.search.worker.CoreShare`). Ctrl-C
or SIGTERM in the parent is forwarded as SIGTERM, which each worker handles like Ctrl-C: its
running trial ends FAIL, it exits (see :mod:`cnn_tune.processes.interrupts`). A parent that dies
without a word (SIGKILL, the OOM killer) takes its workers with it (:mod:`cnn_tune.processes.lifeline`):
nothing a worker does waits forever on the parent (locks and queue writes have timeouts and
give up once it is gone).

With worker processes the parent never imports torch (nor :mod:`cnn_tune.search.worker`, which
trains): it only waits, and torch's import alone would cost it ~345 MB.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
from typing import Callable, Protocol

import optuna
from optuna.trial import FrozenTrial

from cnn_tune.data.images import Images
from cnn_tune.model.results import EpochResult
from cnn_tune.processes.interrupts import StopRequest, sigterm_as_interrupt
from cnn_tune.search.events import (
    Capped,
    EpochDone,
    Event,
    Exited,
    Failed,
    Interrupted,
    Shared,
    TrialDone,
    UnfinishedTrial,
    unfinished_text,
)
from cnn_tune.search.records import OptimizeResult, Plan
from cnn_tune.storage.faults import writes_to
from cnn_tune.storage.patience import STOP_ATTR, search_status
from cnn_tune.storage.studies import best_or_none

JOIN_TIMEOUT_S = 60  # after a stop request, how long a worker may take to end its trial


def _worker_entry(index: int, plan: Plan, shared: Shared, hup_ignored: bool) -> None:
    """A worker process's first call. The training code is imported here, in the worker (the
    fork server has it loaded already: a free import), so that the parent never loads torch."""
    from cnn_tune.search.worker import process_main

    process_main(index, plan, shared, hup_ignored)


def run_workers(plan: Plan, handle: Callable[[Event], None], info: Callable[[str], None]) -> bool:
    """Run ``plan`` in ``plan.workers`` processes; every event goes to ``handle``. The first
    :class:`Failed` stops the others. Returns when all have exited: True if KeyboardInterrupt
    (Ctrl-C, or SIGTERM turned into it by the caller) stopped them, which is not re-raised."""
    _give_back_memory()
    ctx = _context()
    hup_ignored = signal.getsignal(signal.SIGHUP) == signal.SIG_IGN  # nohup: the workers ignore it too
    _start_helpers(ctx)
    shared = Shared(ctx.Value("i", 0), ctx.Event(), ctx.Queue(), ctx.Value("i", plan.workers))
    procs = [
        ctx.Process(target=_worker_entry, args=(i, plan, shared, hup_ignored), name=f"cnn-tune-worker-{i}", daemon=True)
        for i in range(plan.workers)
    ]
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


def _supervise(procs: list, shared: Shared, handle: Callable[[Event], None]) -> bool:
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
PRELOAD = ["cnn_tune.search.forkserve"]


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
    their own signal handling (:func:`cnn_tune.processes.interrupts.route_signals`); the helpers exit
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


def _stop(shared: Shared, procs: list) -> None:
    shared.stop.set()
    for p in procs:
        if p.is_alive():
            os.kill(p.pid, signal.SIGTERM)


def _drain(shared: Shared, procs: list, handle: Callable[[Event], None]) -> None:
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


class Reporter(Protocol):
    """What the search tells the user while it runs (the live view on a terminal, lines when
    piped)."""

    def info(self, message: str) -> None: ...
    def images(self, done: int, total: int) -> None: ...
    def start(self, plan: Plan) -> None: ...
    def epoch(self, worker: int, trial_number: int, result: EpochResult, epochs: int) -> None: ...
    def trial_done(self, trial: FrozenTrial, best: FrozenTrial | None) -> None: ...


class Collector:
    """The parent's side of the worker events: the result and the reporter are kept up to date."""

    def __init__(self, plan: Plan, study: optuna.Study, reporter: Reporter, result: OptimizeResult) -> None:
        self.plan, self.study, self.reporter, self.result = plan, study, reporter, result
        self.interrupted_trials: set[int] = set()
        self.failure: Failed | None = None
        self.unfinished: list[UnfinishedTrial] = []  # every failed worker's open trial, not only the first's

    def __call__(self, event: Event) -> None:
        if isinstance(event, EpochDone):
            self.reporter.epoch(event.worker, event.trial, event.result, self.plan.protocol.epochs)
        elif isinstance(event, TrialDone):
            self.result.trials.append(event.trial)
            self.reporter.trial_done(event.trial, best_or_none(self.study))
        elif isinstance(event, Capped):
            self.result.capped = True
        elif isinstance(event, Interrupted):
            self.result.interrupted = True
            if event.trial is not None:
                self.interrupted_trials.add(event.trial)
        elif isinstance(event, Failed):
            self.failure = self.failure or event
            self.unfinished += [event.unfinished] if event.unfinished is not None else []
        elif not isinstance(event, Exited):
            raise TypeError(f"unknown worker event {event!r}")

    def finish(self) -> None:
        """Interrupted trials (stored as FAIL by Optuna) join the summary; a worker's failure is
        raised as its own kind, with the worker's traceback as its cause for --debug."""
        seen = {t.number for t in self.result.trials}
        missing = self.interrupted_trials - seen
        if missing:
            self.result.trials += [t for t in self.study.get_trials(deepcopy=False) if t.number in missing]
        if self.failure is not None:
            error = self.failure.error
            if self.unfinished:
                said = unfinished_text(self.unfinished)
                error.hint = f"{error.hint}; {said}" if error.hint else said
            raise error from RemoteTraceback(self.failure.traceback)


class RemoteTraceback(Exception):
    """A worker's traceback, shown under --debug as the cause of the error it raised."""

    def __str__(self) -> str:
        return "\n\n" + str(self.args[0]) if self.args else ""


def record_stop(study: optuna.Study, plan: Plan, result: OptimizeResult) -> None:
    """Where the study stands; a plateau under ``--patience`` is stored on the study (why, after
    which trial) for `studies`, `best` and the report. A run that went on past an old plateau
    (``--patience 0``) clears the stale record."""
    result.status = search_status(study.get_trials(deepcopy=False), plan.protocol.n_val)
    if result.interrupted or plan.enqueued_only:
        return
    result.plateaued = result.status.plateaued(plan.patience)
    if result.plateaued:
        study.set_user_attr(STOP_ATTR, result.status.record(plan.patience))
    elif result.trials and study.user_attrs.get(STOP_ATTR):
        study.set_user_attr(STOP_ATTR, None)


def execute(plan: Plan, study: optuna.Study, data: Images | None, reporter: Reporter) -> OptimizeResult:
    """Run ``plan`` on ``study`` (already open): here, or in ``plan.workers`` processes."""
    started = time.perf_counter()
    result = OptimizeResult(
        plan.study, plan.url, plan.resumed, plan.protocol, workers=plan.workers, patience=plan.patience
    )
    reporter.start(plan)
    collect = Collector(plan, study, reporter, result)
    stop_request = StopRequest()
    if plan.workers > 1:
        del data  # each worker reads its own (memory-mapped) copy
        with sigterm_as_interrupt(stop_request):  # the parent only waits: SIGTERM or SIGHUP stops it as Ctrl-C does
            result.interrupted = run_workers(plan, collect, reporter.info) or result.interrupted
    else:  # run() routes Ctrl-C, SIGTERM and SIGHUP itself (cnn_tune.processes.interrupts)
        from cnn_tune.search.worker import TrialBudget, local_counter, run  # this process trains: now it needs torch

        budget = TrialBudget(plan, 0, collect, local_counter(plan.trials))
        run(lambda: (study, data), plan, 0, budget, collect, stop_request)
    result.stop_signal = stop_request.signum if stop_request.signum is not None else signal.SIGINT
    collect.finish()
    with writes_to(plan.url):
        result.best = best_or_none(study)
        record_stop(study, plan, result)
    result.seconds = time.perf_counter() - started
    return result
