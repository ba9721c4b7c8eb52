"""``optimize --workers N``: N worker processes on one study, one display in the parent.

The parent has already checked everything, fetched the data and created the study; each
worker opens its own storage connection, reads the data from the same folder and runs
trials while it can claim one from a shared counter — so N workers run exactly ``--trials``
trials in all, not N times as many (Optuna's ``n_trials`` counts per process).

Workers report to the parent over a queue; Ctrl-C or SIGTERM in the parent is forwarded as
SIGTERM, which each worker handles like Ctrl-C: its running trial ends FAIL, it exits.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
import traceback
from dataclasses import dataclass

import torch

from . import optimize as opt
from .data import read_folder
from .errors import CnnTuneError, StorageError
from .study import quiet_optuna

JOIN_TIMEOUT_S = 60  # after a stop request, how long a worker may take to end its trial


@dataclass
class _Shared:
    claimed: "mp.sharedctypes.Synchronized"
    stop: "mp.synchronize.Event"
    events: "mp.queues.Queue"


def threads_per_worker(workers: int, asked: int | None = None) -> int:
    """CPU threads for each worker: as asked, else the cores shared out, at least one (no
    oversubscription: N workers × all cores each would slow every one of them)."""
    return asked if asked is not None else max(1, (os.cpu_count() or 1) // workers)


def _interrupt_once() -> None:
    """The first SIGINT or SIGTERM raises KeyboardInterrupt; later ones are ignored, so that
    a terminal's Ctrl-C plus the parent's forwarded SIGTERM cannot interrupt Optuna while it
    stores the interrupted trial's final state."""
    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _worker(index: int, settings: opt.OptimizeSettings, prepared: opt.Prepared, shared: _Shared) -> None:
    """Entry point of a worker process (spawned: no state inherited from the parent)."""
    quiet_optuna(False)
    torch.set_num_threads(threads_per_worker(settings.workers, settings.threads))
    events = shared.events
    deadline = time.monotonic() + settings.timeout if settings.timeout else None
    objective = None
    _interrupt_once()
    try:
        data = read_folder(prepared.data_folder)
        study = opt.load_worker_study(settings, prepared, index)
        objective = opt.make_objective(settings, prepared, data, lambda n, r: events.put(("epoch", index, n, r)))

        def claim() -> bool:
            if shared.stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                return False
            if not opt.under_cap(study, settings.max_trials):
                events.put(("capped", index))
                return False
            with shared.claimed.get_lock():
                if shared.claimed.value >= settings.trials:
                    return False
                shared.claimed.value += 1
            return True

        def done(study, trial) -> None:
            events.put(("trial", index, trial))

        with opt.studies.writes_to(prepared.url):
            opt.run_trials(study, objective, claim, done)
    except KeyboardInterrupt:
        current = objective.current if objective is not None else None
        events.put(("interrupted", index, current))
    except CnnTuneError as exc:
        events.put(("error", index, exc.one_line(), exc.exit_code))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        events.put(("error", index, f"worker {index}: unexpected {type(exc).__name__}: {exc}", 1,
                    traceback.format_exc()))
    finally:
        events.put(("exit", index))


def run_workers(settings: opt.OptimizeSettings, prepared: opt.Prepared, reporter: opt.Reporter,
                result: opt.OptimizeResult) -> None:
    ctx = mp.get_context("spawn")  # fork would copy torch's thread pools and open DB connections
    shared = _Shared(ctx.Value("i", 0), ctx.Event(), ctx.Queue())
    procs = [ctx.Process(target=_worker, args=(i, settings, prepared, shared), name=f"cnn-tune-worker-{i}",
                         daemon=True) for i in range(settings.workers)]
    reporter.info(f"Starting {settings.workers} workers, {threads_per_worker(settings.workers, settings.threads)} CPU thread(s) each")
    for p in procs:
        p.start()
    running = set(range(len(procs)))
    interrupted_trials: set[int] = set()
    error: tuple[str, int] | None = None
    study_for_best = None

    def stop_all() -> None:
        shared.stop.set()
        for p in procs:
            if p.is_alive():
                os.kill(p.pid, signal.SIGTERM)

    try:
        with opt.sigterm_as_interrupt():
            while running:
                try:
                    event = shared.events.get(timeout=0.5)
                except queue.Empty:
                    for i in list(running):
                        if not procs[i].is_alive():  # died without a word (killed, out of memory)
                            running.discard(i)
                    continue
                kind, index = event[0], event[1]
                if kind == "epoch":
                    reporter.epoch(event[2], event[3], prepared.protocol.epochs)
                elif kind == "trial":
                    result.trials.append(event[2])
                    if study_for_best is None:
                        study_for_best = opt.studies.find_study(opt.studies.open_storage(prepared.url), settings.study)
                    reporter.trial_done(event[2], opt.best_trial(study_for_best))
                elif kind == "capped":
                    result.capped = True
                elif kind == "interrupted":
                    result.interrupted = True
                    if event[2] is not None:
                        interrupted_trials.add(event[2])
                elif kind == "error":
                    if error is None:
                        error = (event[2], event[3])
                        stop_all()
                elif kind == "exit":
                    running.discard(index)
    except KeyboardInterrupt:
        result.interrupted = True
        stop_all()
        _drain(shared, procs, result, interrupted_trials)
    finally:
        for p in procs:
            p.join(JOIN_TIMEOUT_S)
            if p.is_alive():
                p.kill()
    if interrupted_trials:
        study = opt.studies.find_study(opt.studies.open_storage(prepared.url), settings.study)
        seen = {t.number for t in result.trials}
        result.trials += [t for t in study.get_trials(deepcopy=False)
                          if t.number in interrupted_trials and t.number not in seen]
    if error is not None:
        message, code = error
        raise _WorkerError(message, code)


def _drain(shared: _Shared, procs, result: opt.OptimizeResult, interrupted: set[int]) -> None:
    """After a stop request: collect what the workers still say until they have all exited."""
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        try:
            event = shared.events.get(timeout=0.2)
        except queue.Empty:
            continue
        except KeyboardInterrupt:  # a second Ctrl-C: stop waiting politely
            for p in procs:
                if p.is_alive():
                    p.kill()
            return
        if event[0] == "trial":
            result.trials.append(event[2])
        elif event[0] == "interrupted" and event[2] is not None:
            interrupted.add(event[2])


class _WorkerError(StorageError):
    """A worker's failure, re-raised in the parent with the worker's own message and exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
