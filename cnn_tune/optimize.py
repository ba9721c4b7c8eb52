"""``cnn-tune optimize``: create or resume a study and run trials on it."""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol as Interface

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from . import study as studies
from .data import VAL_FRACTION, Mnist, load_mnist, make_split
from .errors import ProtocolConflict, UsageError
from .model import ARCHITECTURE
from .objective import Objective
from .protocol import DEFAULT_EPOCHS, PROTOCOL_ATTR, SPLIT_SEED, Protocol
from .samplers import check_sampler, derive_seed, make_pruner, make_sampler
from .space import SEARCH_SPACE_VERSION
from .training import EpochResult, Trainer, resolve_device, resolve_precision


@dataclass
class OptimizeSettings:
    trials: int = 20
    timeout: float | None = None
    epochs: int | None = None  # None: the study's, or DEFAULT_EPOCHS for a new study
    train_limit: int | None = None  # None: the study's, or all images for a new study
    study: str = studies.DEFAULT_STUDY
    storage: str = studies.DEFAULT_STORAGE
    seed: int | None = None
    device: str = "auto"
    sampler: str = "tpe"
    pruner: str = "median"
    data_dir: Path | None = None
    workers: int = 1  # processes on this machine sharing the study
    threads: int | None = None  # CPU threads per worker; None: the cores shared out among workers
    precision: str = "auto"  # auto | fp32 | bf16 (autocast); see training.resolve_precision
    max_trials: int | None = None  # study-wide cap: stop when this many trials are complete/pruned/running
    heartbeat: studies.Heartbeat = field(default_factory=studies.Heartbeat)


class Reporter(Interface):
    def info(self, message: str) -> None: ...
    def start(self, study_name: str, resumed: bool, protocol: Protocol, trials: int, device: str) -> None: ...
    def epoch(self, trial_number: int, result: EpochResult, epochs: int) -> None: ...
    def trial_done(self, trial: FrozenTrial, best: FrozenTrial | None) -> None: ...


@dataclass
class OptimizeResult:
    study_name: str
    storage: str
    resumed: bool
    protocol: Protocol
    trials: list[FrozenTrial] = field(default_factory=list)  # finished in this run
    best: FrozenTrial | None = None  # of the whole study
    interrupted: bool = False
    seconds: float = 0.0
    workers: int = 1
    capped: bool = False  # stopped early because the study reached --max-trials

    def count(self, state: TrialState) -> int:
        return sum(t.state == state for t in self.trials)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM (``kill``, a batch scheduler, a container stop) ends the run like Ctrl-C:
    the running trial gets a final state instead of staying RUNNING forever."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)  # what --max-trials counts


def under_cap(study: optuna.Study, max_trials: int | None) -> bool:
    """True while the study has fewer than ``max_trials`` complete, pruned or running trials.
    Failed trials do not count: a crashed trial's retry takes its place."""
    return max_trials is None or len(study.get_trials(deepcopy=False, states=COUNTED)) < max_trials


@dataclass
class Prepared:
    """Everything checked and made before the first trial, shared by all workers."""

    url: str
    study_name: str
    resumed: bool
    protocol: Protocol
    data_folder: Path
    device: str
    trials_before: int  # trials in the study when this command started
    precision: str = "fp32"  # resolved: fp32 or bf16


def prepare(settings: OptimizeSettings, reporter: Reporter) -> tuple[Prepared, "Mnist", optuna.Study]:
    """Validate everything cheap first (names, URL, options), then load data, then write."""
    studies.check_study_name(settings.study)
    url = studies.prepare_storage(settings.storage)
    studies.check_can_write(url)
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)
    check_sampler(settings.sampler)
    settings.heartbeat.check()
    if settings.trials < 1:
        raise UsageError("--trials must be at least 1")
    if settings.workers < 1:
        raise UsageError("--workers must be at least 1", hint="e.g. --workers 2")
    if settings.epochs is not None and settings.epochs < 1:
        raise UsageError("--epochs must be at least 1")
    if settings.threads is not None and settings.threads < 1:
        raise UsageError("--threads must be at least 1")
    if settings.max_trials is not None and settings.max_trials < 1:
        raise UsageError("--max-trials must be at least 1")

    # A SQLite file is only created once all input has been checked and the data read.
    storage = studies.open_storage(url) if studies.storage_exists(url) else None
    existing = studies.find_study(storage, settings.study) if storage is not None else None
    trials_before = existing.get_trials(deepcopy=False) if existing is not None else []
    if existing is not None and PROTOCOL_ATTR not in existing.user_attrs and not trials_before:
        existing = None  # created but never given a protocol (e.g. killed in between): adopt it
    stored = studies.stored_protocol(existing) if existing is not None else None
    epochs = settings.epochs or (stored.epochs if stored else DEFAULT_EPOCHS)
    train_limit = settings.train_limit if settings.train_limit is not None else (stored.train_limit if stored else None)
    if stored and (epochs, train_limit) != (stored.epochs, stored.train_limit):
        raise ProtocolConflict(
            f"study {settings.study!r} runs {stored.epochs} epochs on "
            f"{stored.train_limit or 'all'} training images; you asked {epochs} on {train_limit or 'all'}",
            hint="drop --epochs/--train-limit to resume it, or start a new one with --study NAME")
    make_pruner(settings.pruner, epochs)  # validates the name before any data is read

    data = load_mnist(settings.data_dir, reporter.info)
    n_images = len(data.train_labels)
    if train_limit is not None and not 10 <= train_limit <= n_images:
        raise UsageError(f"--train-limit must be between 10 and {n_images} (the training images available)")
    split = make_split(n_images, train_limit, SPLIT_SEED)
    protocol = Protocol(
        epochs=epochs, train_limit=train_limit, split_seed=SPLIT_SEED, val_fraction=VAL_FRACTION,
        n_train=len(split.train), n_val=len(split.val), data_fingerprint=data.fingerprint,
        search_space_version=SEARCH_SPACE_VERSION, architecture=ARCHITECTURE,
    )
    if existing is not None:
        studies.check_protocol(existing, protocol)
    if settings.workers > settings.trials:
        reporter.info(f"--workers {settings.workers} is more than --trials {settings.trials}: "
                      f"starting {settings.trials} worker(s), one trial each")
        settings.workers = settings.trials

    storage = studies.open_storage(url, settings.heartbeat, write=True)
    with studies.writes_to(url):
        study = studies.create_or_load(storage, settings.study, protocol, make_sampler(settings.sampler, None),
                                       make_pruner(settings.pruner, epochs))
    prepared = Prepared(url, settings.study, existing is not None, protocol, data.folder, str(device),
                        len(trials_before), precision)
    return prepared, data, study


def sampler_seed(settings: OptimizeSettings, prepared: Prepared, worker: int) -> int | None:
    """A stored study keeps no sampler state: seeding each run identically would replay the
    earlier trials' parameters, and identical workers would propose identical ones. Mixing in
    the trials already there and the worker's index avoids both."""
    if settings.seed is None:
        return None
    return derive_seed(settings.seed, "sampler", prepared.trials_before, *([worker] if worker else []))


def load_worker_study(settings: OptimizeSettings, prepared: Prepared, worker: int) -> optuna.Study:
    """This worker's view of the study: its own storage connection, sampler seed and pruner."""
    storage = studies.open_storage(prepared.url, settings.heartbeat, write=True)
    with studies.writes_to(prepared.url):
        return studies.create_or_load(storage, settings.study, prepared.protocol,
                                      make_sampler(settings.sampler, sampler_seed(settings, prepared, worker)),
                                      make_pruner(settings.pruner, prepared.protocol.epochs))


def make_objective(settings: OptimizeSettings, prepared: Prepared, data: "Mnist", on_epoch) -> Objective:
    """The objective a worker runs: the study's split of ``data`` on the chosen device and precision."""
    split = make_split(len(data.train_labels), prepared.protocol.train_limit, SPLIT_SEED)
    trainer = Trainer(data, split, resolve_device(prepared.device), prepared.precision)
    return Objective(trainer, prepared.protocol.epochs, settings.seed, on_epoch=on_epoch)


def run_trials(study: optuna.Study, objective: Objective, claim, on_trial_done) -> None:
    """Run one trial per successful ``claim()``; Optuna fails stale trials of dead workers
    (heartbeat) before each one and re-queues them."""
    while claim():
        study.optimize(objective, n_trials=1, callbacks=[on_trial_done], gc_after_trial=False)


def run_optimize(settings: OptimizeSettings, reporter: Reporter) -> OptimizeResult:
    started = time.perf_counter()
    prepared, data, study = prepare(settings, reporter)
    result = OptimizeResult(settings.study, prepared.url, prepared.resumed, prepared.protocol,
                            workers=settings.workers)
    reporter.start(settings.study, result.resumed, prepared.protocol, settings.trials,
                   f"{prepared.device}, {prepared.precision}")
    if settings.workers > 1:
        from .parallel import run_workers

        del data  # each worker reads its own copy
        run_workers(settings, prepared, reporter, result)
    else:
        _run_here(settings, prepared, data, reporter, result)
    with studies.writes_to(prepared.url):
        result.best = best_trial(study)
    result.seconds = time.perf_counter() - started
    return result


def _run_here(settings: OptimizeSettings, prepared: Prepared, data, reporter: Reporter,
              result: OptimizeResult) -> None:
    """One worker, in this process."""
    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    study = load_worker_study(settings, prepared, 0)
    epochs = prepared.protocol.epochs
    objective = make_objective(settings, prepared, data, lambda n, r: reporter.epoch(n, r, epochs))
    deadline = time.monotonic() + settings.timeout if settings.timeout else None

    def claim() -> bool:
        if len(result.trials) >= settings.trials or (deadline is not None and time.monotonic() >= deadline):
            return False
        if not under_cap(study, settings.max_trials):
            result.capped = True
            return False
        return True

    def on_trial_done(study: optuna.Study, trial: FrozenTrial) -> None:
        result.trials.append(trial)
        reporter.trial_done(trial, best_trial(study))

    try:
        with sigterm_as_interrupt(), studies.writes_to(prepared.url):
            run_trials(study, objective, claim, on_trial_done)
    except KeyboardInterrupt:
        result.interrupted = True
        # Optuna has already stored the running trial as FAIL; pick it up for the summary.
        if objective.current is not None and objective.current not in {t.number for t in result.trials}:
            result.trials += [t for t in study.get_trials(deepcopy=False) if t.number == objective.current]
