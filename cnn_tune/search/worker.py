"""The worker side of `optimize`: what one process does to run its share of a :class:`Plan`.

The same code runs in the `optimize` process itself (one worker) and in each spawned process
(``--workers N``, see :mod:`cnn_tune.search.parallel`). A worker tells what happens through typed
:data:`Event` values handed to a sink: called directly in the first case, put on a queue to
the parent in the second. Nothing here prints.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Callable, Union

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from cnn_tune.data.images import Images, make_split
from cnn_tune.errors import CnnTuneError, WorkerCrashed
from cnn_tune.model.training import EpochResult, Trainer
from cnn_tune.processes.interrupts import Gate, gated
from cnn_tune.search.objective import Objective, Pace
from cnn_tune.search.records import Plan
from cnn_tune.search.samplers import derive_seed, make_pruner, make_sampler
from cnn_tune.storage.faults import storage_cause, storage_failure
from cnn_tune.storage.patience import standing


@dataclass(frozen=True)
class EpochDone:
    worker: int
    trial: int
    result: EpochResult


@dataclass(frozen=True)
class TrialDone:
    worker: int
    trial: FrozenTrial


@dataclass(frozen=True)
class Capped:
    """The study reached ``--max-trials``: this worker starts no more trials."""

    worker: int


@dataclass(frozen=True)
class Interrupted:
    worker: int
    trial: int | None  # the trial it was training, now stored as FAIL


@dataclass(frozen=True)
class Failed:
    worker: int
    error: CnnTuneError  # its own kind (StorageError, DataError, …); WorkerCrashed for a bug
    traceback: str  # the worker's traceback, for --debug
    fate: Fate | None = None  # a storage failure: what became of the trial it was training


@dataclass(frozen=True)
class Fate:
    trial: int
    closed: bool  # stored as FAIL; else left RUNNING (the heartbeat's grace will retry it)


def fates_text(fates: list[Fate]) -> str:
    """What became of every worker's open trial, for the one error line: ``trials 3 and 4 could
    not be closed: …``."""
    closed = sorted({f.trial for f in fates if f.closed})
    left_open = sorted({f.trial for f in fates if not f.closed})
    parts = []
    if closed:
        parts.append(f"{_trials_text(closed)} {'was' if len(closed) == 1 else 'were'} stored as failed")
    if left_open:
        them = "it" if len(left_open) == 1 else "them"
        parts.append(f"{_trials_text(left_open)} could not be closed: once the heartbeat is older than --grace, "
                     f"the next `cnn-tune optimize` on this study fails {them} and runs {them} again")
    return "; ".join(parts)


def _trials_text(numbers: list[int]) -> str:
    """``trial 3``, ``trials 3 and 4``, ``trials 3, 4 and 7``."""
    if len(numbers) == 1:
        return f"trial {numbers[0]}"
    return f"trials {', '.join(map(str, numbers[:-1]))} and {numbers[-1]}"


@dataclass(frozen=True)
class Exited:
    worker: int


Event = Union[EpochDone, TrialDone, Capped, Interrupted, Failed, Exited]
Sink = Callable[[Event], None]

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)  # what --max-trials counts


def under_cap(study: optuna.Study, max_trials: int | None) -> bool:
    """True while the study has fewer than ``max_trials`` complete, pruned or running trials.
    Failed trials do not count: a crashed trial's retry takes its place."""
    return max_trials is None or len(study.get_trials(deepcopy=False, states=COUNTED)) < max_trials


def sampler_seed(plan: Plan, worker: int) -> int | None:
    """A stored study keeps no sampler state: seeding each run identically would replay the
    earlier trials' parameters, and identical workers would propose identical ones. Mixing in
    the trials already there and the worker's index avoids both."""
    if plan.seed is None:
        return None
    return derive_seed(plan.seed, "sampler", plan.trials_before, *([worker] if worker else []))


def search(plan: Plan, worker: int) -> tuple[optuna.samplers.BaseSampler, optuna.pruners.BasePruner]:
    """This worker's sampler and pruner."""
    p = plan.protocol
    pruner = make_pruner(plan.pruner, p.epochs, p.n_val, len(p.class_names))
    return make_sampler(plan.sampler, sampler_seed(plan, worker)), pruner


def attach(storage: optuna.storages.BaseStorage, plan: Plan, worker: int) -> optuna.Study:
    """This worker's view of the (already created) study on a storage it has opened."""
    sampler, pruner = search(plan, worker)
    return optuna.load_study(study_name=plan.study, storage=storage, sampler=sampler, pruner=pruner)


def make_objective(plan: Plan, data: Images, worker: int, sink: Sink, gate: Gate | None = None,
                   pace: Pace = torch.get_num_threads) -> Objective:
    """The study's split of ``data`` on the planned device and precision; epochs go to ``sink``;
    ``pace`` sets the threads before each epoch."""
    split = make_split(len(data.train_labels), plan.protocol.train_limit, plan.protocol.split_seed)
    trainer = Trainer(data, split, torch.device(plan.device), plan.precision)
    return Objective(trainer, plan.protocol.epochs, plan.seed,
                     on_epoch=lambda number, result: sink(EpochDone(worker, number, result)),
                     enqueued_only=plan.enqueued_only, gate=gate, pace=pace)


class Claims:
    """Whether a worker may start another trial: not stopped, before the deadline, under the
    study-wide cap, not on a plateau (``--patience``, judged from the stored trials of every
    process), and ``take()`` grants one of the invocation's trials (a local count, or
    a counter shared by all workers — so N workers run ``--trials`` in all, not N times as many)."""

    def __init__(self, plan: Plan, worker: int, sink: Sink, take: Callable[[], bool],
                 stopped: Callable[[], bool] = lambda: False) -> None:
        self.plan, self.worker, self.sink, self.take, self.stopped = plan, worker, sink, take, stopped
        self.deadline = time.monotonic() + plan.timeout if plan.timeout else None

    def __call__(self, study: optuna.Study) -> bool:
        if self.stopped() or (self.deadline is not None and time.monotonic() >= self.deadline):
            return False
        if self.plan.enqueued_only and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return False
        if not under_cap(study, self.plan.max_trials):
            self.sink(Capped(self.worker))
            return False
        if self.plan.patience and standing(study.get_trials(deepcopy=False),
                                           self.plan.protocol.n_val).plateaued(self.plan.patience):
            return False  # the parent reads the same standing from the study when all are done
        return self.take()


def local_counter(limit: int) -> Callable[[], bool]:
    taken = [0]

    def take() -> bool:
        if taken[0] >= limit:
            return False
        taken[0] += 1
        return True

    return take


def _fate(study: optuna.Study, number: int) -> Fate | None:
    """What became of the last trial this worker started, when the storage failed (None: it
    had finished before the failure)."""
    try:
        state = next(t.state for t in study.get_trials(deepcopy=False) if t.number == number)
    except Exception:  # noqa: BLE001 - the storage may not even be readable now
        state = TrialState.RUNNING
    if state in (TrialState.COMPLETE, TrialState.PRUNED):
        return None
    return Fate(number, closed=state == TrialState.FAIL)


def run(attach_study: Callable[[], tuple[optuna.Study, Images]], plan: Plan, worker: int, claims: Claims,
        sink: Sink, gate: Gate | None = None, pace: Pace = torch.get_num_threads) -> None:
    """Open what ``attach_study`` opens (the study and the data), then run trials while
    ``claims`` grants them. Every outcome becomes an event, ending with :class:`Exited`.
    Optuna fails stale trials of dead workers (heartbeat) before each trial and re-queues
    them. Ctrl-C or SIGTERM (see :mod:`cnn_tune.processes.interrupts`) ends the running trial as FAIL,
    starts no other, and is reported, not raised. A ``gate`` the caller installed earlier keeps a
    signal that came before this call."""
    objective, study, gate = None, None, gate if gate is not None else Gate()
    try:
        with gated(gate):
            study, data = attach_study()
            if plan.threads is not None:
                torch.set_num_threads(plan.threads)
            objective = make_objective(plan, data, worker, sink, gate, pace)
            done = lambda _study, trial: sink(TrialDone(worker, trial))  # noqa: E731 - Optuna's callback signature
            while not gate.requested and claims(study):
                study.optimize(objective, n_trials=1, callbacks=[done], gc_after_trial=False)
            gate.check()
    except KeyboardInterrupt:
        sink(Interrupted(worker, objective.interrupted if objective is not None else None))
    except CnnTuneError as exc:
        sink(Failed(worker, exc, traceback.format_exc()))
    except Exception as exc:  # noqa: BLE001 - a storage fault inside Optuna, a bug: reported, never a bare traceback
        if storage_cause(exc) is not None:
            failure = storage_failure(exc, plan.url, "write to")
            fate = _fate(study, objective.current) if objective is not None and objective.current is not None else None
            sink(Failed(worker, failure, traceback.format_exc(), fate))
            return
        sink(Failed(worker, WorkerCrashed(f"worker {worker}: unexpected {type(exc).__name__}: {exc}",
                                          hint="run again with --debug for the traceback"), traceback.format_exc()))
    finally:
        sink(Exited(worker))
