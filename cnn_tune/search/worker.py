"""The worker side of `optimize`: what one process does to run its share of a :class:`Plan`.

The same code runs in the `optimize` process itself (one worker) and in each worker process
(``--workers N``: :func:`process_main`, started by :mod:`cnn_tune.search.parallel`). A worker
tells what happens through typed events (:mod:`cnn_tune.search.events`) handed to a handle:
called directly in the first case, put on a queue to the parent in the second. Nothing here
prints. This module trains, so it imports torch: the parent of worker processes never imports it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import time
import traceback
from functools import partial
from typing import Callable

import optuna
import torch
from optuna.trial import TrialState

from cnn_tune.data.images import Images, make_split
from cnn_tune.data.load import read_folder
from cnn_tune.errors import CnnTuneError, WorkerCrashed
from cnn_tune.model.kept import keep_trial_model
from cnn_tune.model.space import WIDE
from cnn_tune.model.training import Trainer
from cnn_tune.processes.interrupts import PARENT_GONE, StopRequest, route_signals, routed_to
from cnn_tune.processes.lifeline import Lifeline
from cnn_tune.processes.streams import guard
from cnn_tune.search.events import (
    Capped,
    EpochDone,
    Event,
    EventHandler,
    Exited,
    Failed,
    Interrupted,
    Shared,
    TrialDone,
    UnfinishedTrial,
)
from cnn_tune.search.objective import Objective, Pace
from cnn_tune.search.records import Plan
from cnn_tune.storage.engine import open_storage
from cnn_tune.storage.faults import quiet_libraries, quiet_optuna, storage_cause, storage_failure
from cnn_tune.storage.patience import search_status

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)  # what --max-trials counts


def under_cap(study: optuna.Study, max_trials: int | None) -> bool:
    """True while the study has fewer than ``max_trials`` complete, pruned or running trials.
    Failed trials do not count: a crashed trial's retry takes its place."""
    return max_trials is None or len(study.get_trials(deepcopy=False, states=COUNTED)) < max_trials


class TrialBudget:
    """Whether a worker may start another trial: not stopped, before the deadline, under the
    study-wide cap, not on a plateau (``--patience``, judged from the stored trials of every
    process), and ``take()`` grants one of the invocation's trials (a local count, or
    a counter shared by all workers — so N workers run ``--trials`` in all, not N times as many)."""

    def __init__(
        self,
        plan: Plan,
        worker: int,
        handle: EventHandler,
        take: Callable[[], bool],
        stopped: Callable[[], bool] = lambda: False,
    ) -> None:
        self.plan, self.worker, self.handle, self.take, self.stopped = plan, worker, handle, take, stopped
        self.deadline = time.monotonic() + plan.timeout if plan.timeout else None

    def __call__(self, study: optuna.Study) -> bool:
        if self.stopped() or (self.deadline is not None and time.monotonic() >= self.deadline):
            return False
        if self.plan.enqueued_only and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return False
        if not under_cap(study, self.plan.max_trials):
            self.handle(Capped(self.worker))
            return False
        if self.plan.patience and search_status(study.get_trials(deepcopy=False), self.plan.protocol.n_val).plateaued(
            self.plan.patience
        ):
            return False  # the parent reads the same search_status from the study when all are done
        return self.take()


def local_counter(limit: int) -> Callable[[], bool]:
    taken = [0]

    def take() -> bool:
        if taken[0] >= limit:
            return False
        taken[0] += 1
        return True

    return take


WAIT_S = 1.0  # a worker's longest wait on a shared lock or the queue before it looks at its parent again
PARENT_CHECK_S = 2.0  # after a SIGTERM nobody announced: how long to look for the parent's death


def attach(storage: optuna.storages.BaseStorage, plan: Plan, worker: int) -> optuna.Study:
    """This worker's view of the (already created) study on a storage it has opened."""
    sampler, pruner = plan.search(worker)
    return optuna.load_study(study_name=plan.study, storage=storage, sampler=sampler, pruner=pruner)


def make_objective(
    plan: Plan,
    data: Images,
    worker: int,
    handle: EventHandler,
    stop_request: StopRequest | None = None,
    pace: Pace = torch.get_num_threads,
) -> Objective:
    """The study's split of ``data`` on the planned device and precision; epochs go to ``handle``;
    ``pace`` sets the threads before each epoch."""
    split = make_split(data.n_train_images, plan.protocol.train_limit, plan.protocol.split_seed)
    trainer = Trainer(data, split, torch.device(plan.device), plan.precision)
    keep = (
        partial(
            keep_trial_model, protocol=plan.protocol, data_md5=data.md5, classes=data.classes, folder=plan.artifacts
        )
        if plan.artifacts is not None and plan.protocol.space == WIDE and not plan.enqueued_only
        else None
    )
    return Objective(
        trainer,
        plan.protocol.epochs,
        plan.seed,
        on_epoch=lambda number, result: handle(EpochDone(worker, number, result)),
        enqueued_only=plan.enqueued_only,
        stop_request=stop_request,
        pace=pace,
        space=plan.protocol.space,
        dataset=plan.protocol.dataset,
        max_params=plan.max_params,
        keep=keep,
    )


def _unfinished(study: optuna.Study, number: int) -> UnfinishedTrial | None:
    """What became of the last trial this worker started, when the storage failed (None: it
    had finished before the failure)."""
    try:
        state = next(t.state for t in study.get_trials(deepcopy=False) if t.number == number)
    except Exception:  # noqa: BLE001 - the storage may not even be readable now
        state = TrialState.RUNNING
    if state in (TrialState.COMPLETE, TrialState.PRUNED):
        return None
    return UnfinishedTrial(number, closed=state == TrialState.FAIL)


def run(
    attach_study: Callable[[], tuple[optuna.Study, Images]],
    plan: Plan,
    worker: int,
    budget: TrialBudget,
    handle: EventHandler,
    stop_request: StopRequest | None = None,
    pace: Pace = torch.get_num_threads,
) -> None:
    """Open what ``attach_study`` opens (the study and the data), then run trials while
    ``budget`` grants them. Every outcome becomes an event, ending with :class:`Exited`.
    Optuna fails stale trials of dead workers (heartbeat) before each trial and re-queues
    them. Ctrl-C or SIGTERM (see :mod:`cnn_tune.processes.interrupts`) ends the running trial as FAIL,
    starts no other, and is reported, not raised. A ``stop_request`` the caller installed earlier keeps a
    signal that came before this call."""
    objective, study, stop_request = None, None, stop_request if stop_request is not None else StopRequest()
    try:
        with routed_to(stop_request):
            study, data = attach_study()
            if plan.threads is not None:
                torch.set_num_threads(plan.threads)
            objective = make_objective(plan, data, worker, handle, stop_request, pace)
            done = lambda _study, trial: handle(TrialDone(worker, trial))  # noqa: E731 - Optuna's callback signature
            while not stop_request.requested and budget(study):
                study.optimize(objective, n_trials=1, callbacks=[done], gc_after_trial=False)
            stop_request.check()
    except KeyboardInterrupt:
        handle(Interrupted(worker, objective.interrupted if objective is not None else None))
    except CnnTuneError as exc:
        handle(Failed(worker, exc, traceback.format_exc()))
    except Exception as exc:  # noqa: BLE001 - a storage fault inside Optuna, a bug: reported, never a bare traceback
        if storage_cause(exc) is not None:
            failure = storage_failure(exc, plan.url, "write to")
            current = objective.current if objective is not None else None
            unfinished = _unfinished(study, current) if current is not None else None
            handle(Failed(worker, failure, traceback.format_exc(), unfinished))
            return
        handle(
            Failed(
                worker,
                WorkerCrashed(
                    f"worker {worker}: unexpected {type(exc).__name__}: {exc}",
                    hint="run again with --debug for the traceback",
                ),
                traceback.format_exc(),
            )
        )
    finally:
        handle(Exited(worker))


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


def process_main(index: int, plan: Plan, shared: Shared, hup_ignored: bool) -> None:
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

    stop_request = StopRequest(parent=os.getppid(), explain=explain)  # Ctrl-C, SIGTERM, hang-up, parent gone
    route_signals(stop_request)  # for the life of this process: nothing to restore
    # once the parent is gone nobody reads the queue: exit without waiting to flush it
    lifeline.watch(stop_request, on_gone=shared.events.cancel_join_thread)

    def take() -> bool:
        return _locked(shared.claimed, lifeline, lambda n: n + 1 if n < plan.trials else None)

    def handle(event: Event) -> None:
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
            run(
                attach_study,
                plan,
                index,
                TrialBudget(plan, index, handle, take, shared.stop.is_set),
                handle,
                stop_request,
                pace,
            )
    finally:  # its cores are free: the others take them before their next epoch
        _locked(shared.alive, lifeline, lambda n: n - 1)
