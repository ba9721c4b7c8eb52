"""``cnn-tune optimize``: resolve the options into a plan, open the study once, run the plan.

Order matters for what a failure leaves behind: everything cheap is checked first (names, URL,
options), then the data is read, and only then is a new SQLite file created. The storage is
opened once in this process; with ``--workers`` each worker process opens its own, once.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Protocol as Interface

import optuna
from optuna.trial import FrozenTrial, TrialState

from . import study as studies
from .data import Images, load_dataset
from .interrupts import Gate, stop_signals
from .patience import STOP_ATTR, Standing, standing
from .plan import OptimizeOptions, Plan, adoptable, check_options, make_plan, resolve_dataset, study_name
from .protocol import PROTOCOL_ATTR, Protocol
from .space import Hyperparams
from .training import EpochResult, resolve_device, resolve_precision
from .worker import (
    Capped,
    Claims,
    EpochDone,
    Event,
    Exited,
    Failed,
    Fate,
    Interrupted,
    TrialDone,
    fates_text,
    local_counter,
    run,
    search,
)


class Reporter(Interface):
    def info(self, message: str) -> None: ...
    def images(self, done: int, total: int) -> None: ...
    def start(self, plan: Plan) -> None: ...
    def epoch(self, worker: int, trial_number: int, result: EpochResult, epochs: int) -> None: ...
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
    stop_signal: int | None = None  # what stopped it (SIGINT, SIGTERM, SIGHUP), when interrupted
    patience: int = 0
    standing: Standing | None = None  # where the whole study stands at the end
    plateaued: bool = False  # --patience stopped it: the study's last trials gained nothing beyond the noise
    refused: bool = False  # nothing run: the study had plateaued before this command (under --patience)

    def count(self, state: TrialState) -> int:
        return sum(t.state == state for t in self.trials)


def best_or_none(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


@contextmanager
def sigterm_as_interrupt(gate: Gate):
    """SIGTERM (``kill``, a batch scheduler, a container stop) and SIGHUP (the terminal went
    away) stop the waiting parent of ``--workers N`` like Ctrl-C: it forwards the stop, so each
    worker's trial gets a final state. ``gate`` records which signal it was."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
        first = not gate.requested
        gate.request(signum)
        if first:
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in stop_signals() if sig != signal.SIGINT}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Collector:
    """The parent's side of the worker events: the result and the reporter are kept up to date."""

    def __init__(self, plan: Plan, study: optuna.Study, reporter: Reporter, result: OptimizeResult) -> None:
        self.plan, self.study, self.reporter, self.result = plan, study, reporter, result
        self.interrupted_trials: set[int] = set()
        self.failure: Failed | None = None
        self.fates: list[Fate] = []  # every failed worker's open trial, not only the first's

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
            self.fates += [event.fate] if event.fate is not None else []
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
            if self.fates:
                error.hint = f"{error.hint}; {fates_text(self.fates)}" if error.hint else fates_text(self.fates)
            raise error from RemoteTraceback(self.failure.traceback)


class RemoteTraceback(Exception):
    """A worker's traceback, shown under --debug as the cause of the error it raised."""

    def __str__(self) -> str:
        return "\n\n" + str(self.args[0]) if self.args else ""


def _plateau(plan: Plan, study: optuna.Study | None) -> OptimizeResult | None:
    """A resumed study that had already plateaued under this ``--patience`` runs nothing: the
    result says so (and how to search on) instead."""
    if not plan.patience or study is None:
        return None
    where = standing(study.get_trials(deepcopy=False), plan.protocol.n_val)
    if not where.plateaued(plan.patience):
        return None
    return OptimizeResult(plan.study, plan.url, True, plan.protocol, best=best_or_none(study), workers=plan.workers,
                          patience=plan.patience, standing=where, plateaued=True, refused=True)


def _stored(study: optuna.Study | None) -> tuple[Protocol | None, int]:
    """The protocol a study was created with and its trial count; (None, 0) for a new study."""
    if study is None:
        return None, 0
    n_trials = len(study.get_trials(deepcopy=False))
    if adoptable(PROTOCOL_ATTR in study.user_attrs, n_trials):
        return None, 0
    return studies.stored_protocol(study), n_trials


def run_optimize(options: OptimizeOptions, reporter: Reporter) -> OptimizeResult:
    started = time.perf_counter()
    check_options(options)
    options = replace(options, study=study_name(options))  # resolved once: everything below reads this
    studies.check_study_name(options.study)
    url = studies.prepare_storage(options.storage)
    studies.check_can_write(url)
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device)

    # The one open of this process. A SQLite file not there yet is created only after the data is read.
    storage = studies.open_storage(url, options.heartbeat, write=True) if studies.storage_exists(url) else None
    found = studies.find_study(storage, options.study) if storage is not None else None
    stored, trials_before = _stored(found)
    dataset = resolve_dataset(options, stored)
    # a study's own data set reads its cached images by fingerprint (a folder changed since is ignored)
    known = stored.data_fingerprint if stored is not None and dataset == stored.ref else None
    data = load_dataset(dataset, options.data_dir, reporter.info, known, reporter.images)
    plan, notes = make_plan(options, url, stored, trials_before, data, device.type, precision)
    if stored is not None:
        studies.check_protocol(options.study, stored, plan.protocol)
        refused = _plateau(plan, found)
        if refused is not None:
            refused.seconds = time.perf_counter() - started
            return refused
    for note in notes:
        reporter.info(note)
    if storage is None:
        storage = studies.open_storage(url, options.heartbeat, write=True)
    with studies.writes_to(url):
        study, created = studies.create_or_load(storage, plan.study, plan.protocol, *search(plan, 0))
        # only the creator: processes started together on a new study would each see no trial yet
        if plan.warm_start and created:
            # the article's configuration first: a strong reference for pruning from trial 1 on
            study.enqueue_trial(Hyperparams().as_dict(), user_attrs={"cnn_tune.warm_start": True})
    if plan.workers > 1:
        data = None  # each worker maps the files itself (shared pages): this process keeps no copy
    result = execute(plan, study, data, reporter)
    result.seconds = time.perf_counter() - started
    return result


def record_stop(study: optuna.Study, plan: Plan, result: OptimizeResult) -> None:
    """Where the study stands; a plateau under ``--patience`` is stored on the study (why, after
    which trial) for `studies`, `best` and the report. A run that went on past an old plateau
    (``--patience 0``) clears the stale record."""
    result.standing = standing(study.get_trials(deepcopy=False), plan.protocol.n_val)
    if result.interrupted or plan.enqueued_only:
        return
    result.plateaued = result.standing.plateaued(plan.patience)
    if result.plateaued:
        study.set_user_attr(STOP_ATTR, result.standing.record(plan.patience))
    elif result.trials and study.user_attrs.get(STOP_ATTR):
        study.set_user_attr(STOP_ATTR, None)


def execute(plan: Plan, study: optuna.Study, data: Images | None, reporter: Reporter) -> OptimizeResult:
    """Run ``plan`` on ``study`` (already open): here, or in ``plan.workers`` processes."""
    started = time.perf_counter()
    result = OptimizeResult(plan.study, plan.url, plan.resumed, plan.protocol, workers=plan.workers,
                            patience=plan.patience)
    reporter.start(plan)
    collect = Collector(plan, study, reporter, result)
    gate = Gate()
    if plan.workers > 1:
        from .parallel import run_workers

        del data  # each worker reads its own (memory-mapped) copy
        with sigterm_as_interrupt(gate):  # the parent only waits: SIGTERM or SIGHUP stops it as Ctrl-C does
            result.interrupted = run_workers(plan, collect, reporter.info) or result.interrupted
    else:  # run() routes Ctrl-C, SIGTERM and SIGHUP itself (cnn_tune.interrupts)
        run(lambda: (study, data), plan, 0, Claims(plan, 0, collect, local_counter(plan.trials)), collect, gate)
    result.stop_signal = gate.signum if gate.signum is not None else signal.SIGINT
    collect.finish()
    with studies.writes_to(plan.url):
        result.best = best_or_none(study)
        record_stop(study, plan, result)
    result.seconds = time.perf_counter() - started
    return result

