"""What passes between a worker and its parent, torch-free: the events a worker reports and the
state the parent shares with its worker processes.

The parent of ``optimize --workers N`` imports this, never the training code: torch's import
alone costs a process ~345 MB of its own memory (:mod:`cnn_tune.model.device`), and the parent
only waits.
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from typing import Callable, Union

from optuna.trial import FrozenTrial

from cnn_tune.errors import CnnTuneError
from cnn_tune.model.results import EpochResult


@dataclass(frozen=True)
class EpochDone:
    """A worker finished an epoch of a trial."""

    worker: int
    trial: int
    result: EpochResult


@dataclass(frozen=True)
class TrialDone:
    """A worker's trial finished (complete, pruned or failed), as Optuna stored it."""

    worker: int
    trial: FrozenTrial


@dataclass(frozen=True)
class Capped:
    """The study reached ``--max-trials``: this worker starts no more trials."""

    worker: int


@dataclass(frozen=True)
class Interrupted:
    """A stop request (Ctrl-C, SIGTERM, a hang-up) ended a worker's running trial."""

    worker: int
    trial: int | None  # the trial it was training, now stored as FAIL


@dataclass(frozen=True)
class Failed:
    """A worker stopped on an error, carried to the parent whole (its kind, message and hint)."""

    worker: int
    error: CnnTuneError  # its own kind (StorageError, DataError, …); WorkerCrashed for a bug
    traceback: str  # the worker's traceback, for --debug
    unfinished: UnfinishedTrial | None = None  # a storage failure: what became of the trial it was training


@dataclass(frozen=True)
class UnfinishedTrial:
    """What became of a worker's running trial when the storage failed: stored as FAIL, or left
    RUNNING."""

    trial: int
    closed: bool  # stored as FAIL; else left RUNNING (the heartbeat's grace will retry it)


def unfinished_text(trials: list[UnfinishedTrial]) -> str:
    """What became of every worker's open trial, for the one error line: ``trials 3 and 4 could
    not be closed: …``."""
    closed = sorted({f.trial for f in trials if f.closed})
    left_open = sorted({f.trial for f in trials if not f.closed})
    parts = []
    if closed:
        parts.append(f"{_trials_text(closed)} {'was' if len(closed) == 1 else 'were'} stored as failed")
    if left_open:
        them = "it" if len(left_open) == 1 else "them"
        parts.append(
            f"{_trials_text(left_open)} could not be closed: once the heartbeat is older than --grace, "
            f"the next `cnn-tune optimize` on this study fails {them} and runs {them} again"
        )
    return "; ".join(parts)


def _trials_text(numbers: list[int]) -> str:
    """``trial 3``, ``trials 3 and 4``, ``trials 3, 4 and 7``."""
    if len(numbers) == 1:
        return f"trial {numbers[0]}"
    return f"trials {', '.join(map(str, numbers[:-1]))} and {numbers[-1]}"


@dataclass(frozen=True)
class Exited:
    """A worker is done: it starts no more trials and exits."""

    worker: int


Event = Union[EpochDone, TrialDone, Capped, Interrupted, Failed, Exited]
EventHandler = Callable[[Event], None]


@dataclass
class Shared:
    """What the parent shares with its worker processes (multiprocessing objects)."""

    claimed: "mp.sharedctypes.Synchronized"
    stop: "mp.synchronize.Event"
    events: "mp.queues.Queue"
    alive: "mp.sharedctypes.Synchronized"  # workers not yet done with their trials
