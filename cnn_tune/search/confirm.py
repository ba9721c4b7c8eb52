"""`cnn-tune confirm`: train the top trials again with new seeds, to tell a better
configuration from a lucky seed.

Each run is a trial of a companion study, ``STUDY.confirm``, enqueued with the original
trial's parameters and its own seed (user attrs ``confirm_of``, ``repeat``, ``seed``), so the
worker machinery of `optimize` runs them: several processes share them (Optuna hands each
waiting trial to one worker), an interrupted run is run again next time, a killed worker's
run is failed and re-queued by the heartbeat. Runs use the study's protocol — the same split,
epochs and data — and report validation accuracy; the test set is never touched, and the
original trials are never changed. The summary per trial (mean, standard deviation, 95%
interval) is stored on the study as the user attr ``cnn_tune.confirm.N``."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from cnn_tune.data.images import Images
from cnn_tune.data.load import check_same_data, load_dataset
from cnn_tune.errors import NothingToShow, ProtocolConflict
from cnn_tune.model.device import resolve_device, resolve_precision
from cnn_tune.search.parallel import Reporter, execute
from cnn_tune.search.plan import OptimizeOptions, check_options, make_plan, protocol_for
from cnn_tune.search.records import Confirmed, ConfirmResult, Verdict, verdict
from cnn_tune.search.samplers import derive_seed
from cnn_tune.storage.engine import check_existing, open_storage, prepare_storage
from cnn_tune.storage.faults import writes_to
from cnn_tune.storage.heartbeat import Heartbeat
from cnn_tune.storage.protocol import (
    CONFIRM_ATTR_PREFIX,
    CONFIRM_OF,
    CONFIRM_SUFFIX,
    CONFIRM_SUMMARY_ATTR,
    PROTOCOL_ATTR,
    StudyProtocol,
)
from cnn_tune.storage.studies import load_existing, stored_protocol
from cnn_tune.storage.urls import DEFAULT_STORAGE, check_study_name

LOCK_STALE_S = 120  # a lock older than this was left by a process that died while enqueueing


@dataclass(frozen=True)
class ConfirmOptions:
    """What `confirm` was asked: which study, how many top trials and new seeds, and how to run
    them."""

    study: str | None = None  # None: the database's only study, else mnist-cnn (study.default_name)
    storage: str = DEFAULT_STORAGE
    top: int = 3
    seeds: int = 3
    workers: int | str = "auto"  # or a number
    threads: int | None = None
    device: str = "auto"
    precision: str = "auto"
    data_dir: Path | None = None
    heartbeat: Heartbeat = field(default_factory=Heartbeat)


def companion_name(study: str) -> str:
    return study + CONFIRM_SUFFIX


def _top(study: optuna.Study, k: int) -> list[FrozenTrial]:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(complete, key=lambda t: t.value, reverse=True)[:k]


def _check_reproducible(name: str, protocol: StudyProtocol, data: Images) -> None:
    """Refuse a study whose protocol this machine's data cannot reproduce, naming the difference."""
    check_same_data(name, protocol.data_fingerprint, data)
    here = protocol_for(protocol.epochs, protocol.train_limit, data, protocol.space)
    diffs = protocol.differences(here)
    if diffs:
        raise ProtocolConflict(
            f"this machine cannot reproduce study {name!r}: " + "; ".join(diffs),
            hint="run confirm where the study's data and cnn-tune version are",
        )


def _runs_wanted(top: list[FrozenTrial], seeds: int) -> list[dict[str, Any]]:
    """Every (trial, repeat) run asked for, with its seed derived from the trial and the counter."""
    return [
        {
            "params": t.params,
            "user_attrs": {
                CONFIRM_OF: t.number,
                "repeat": r,
                "seed": derive_seed(int(t.user_attrs.get("seed", 0)), "confirm", r),
            },
        }
        for t in top
        for r in range(1, seeds + 1)
    ]


def _key(trial: FrozenTrial) -> tuple[int, int] | None:
    attrs = trial.user_attrs
    return (int(attrs[CONFIRM_OF]), int(attrs["repeat"])) if CONFIRM_OF in attrs and "repeat" in attrs else None


def _enqueue_missing(storage: optuna.storages.BaseStorage, companion: optuna.Study, wanted: list[dict]) -> int:
    """Enqueue the runs not done, running or waiting yet — under a lock (a lock study that only
    one process can create), so that two `confirm` processes never enqueue the same run twice.
    A failed run (Ctrl-C) counts as not done: it is enqueued again."""
    lock = companion.study_name + ".lock"
    deadline = time.monotonic() + 2 * LOCK_STALE_S
    while True:
        try:
            held = optuna.create_study(study_name=lock, storage=storage)
            held.set_user_attr("created", time.time())
            break
        except optuna.exceptions.DuplicatedStudyError:
            stale = _lock_age(storage, lock) > LOCK_STALE_S
            if stale or time.monotonic() > deadline:
                _release(storage, lock)
            else:
                time.sleep(0.2)
    try:
        have = {
            _key(t)
            for t in companion.get_trials(deepcopy=False)
            if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
        }
        missing = [w for w in wanted if (w["user_attrs"][CONFIRM_OF], w["user_attrs"]["repeat"]) not in have]
        for run in missing:
            companion.enqueue_trial(run["params"], user_attrs=run["user_attrs"])
        return len(missing)
    finally:
        _release(storage, lock)


def _lock_age(storage: optuna.storages.BaseStorage, lock: str) -> float:
    try:
        created = optuna.load_study(study_name=lock, storage=storage).user_attrs.get("created")
    except KeyError:
        return 0.0  # released meanwhile
    return time.time() - created if created is not None else 0.0


def _release(storage: optuna.storages.BaseStorage, lock: str) -> None:
    try:
        optuna.delete_study(study_name=lock, storage=storage)
    except KeyError:
        pass


def collect(companion: optuna.Study | None, top: list[FrozenTrial]) -> list[Confirmed]:
    """Each top trial's original accuracy plus its complete confirm runs (each repeat once),
    ranked by mean, best first."""
    runs: dict[tuple[int, int], FrozenTrial] = {}
    for t in companion.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if companion else []:
        key = _key(t)
        if key is not None and key not in runs:
            runs[key] = t
    out = []
    for t in top:
        mine = sorted(r for (n, r) in runs if n == t.number)
        values = [t.value] + [runs[(t.number, r)].value for r in mine]
        seeds = [int(t.user_attrs.get("seed", 0))] + [int(runs[(t.number, r)].user_attrs["seed"]) for r in mine]
        out.append(Confirmed(t.number, dict(t.params), values, seeds))
    return sorted(out, key=lambda c: c.mean, reverse=True)


def store(study: optuna.Study, ranked: list[Confirmed], judged: Verdict) -> None:
    for c in ranked:
        study.set_user_attr(f"{CONFIRM_ATTR_PREFIX}{c.trial}", c.as_attr())
    study.set_user_attr(
        CONFIRM_SUMMARY_ATTR,
        {
            "leader": judged.leader,
            "runner_up": judged.runner_up,
            "test": "Welch's t-test, two-sided",
            "p_value": judged.p_value,
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    )


# Long: the steps of one confirm run in order (check, open once, read data, enqueue, run, store),
# each a call; splitting it would only pass the same eight values around.
def run_confirm(options: ConfirmOptions, reporter: Reporter) -> ConfirmResult:
    if options.study is not None:
        check_study_name(options.study)
    options.heartbeat.check()
    url = prepare_storage(options.storage)
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device)
    check_existing(url)  # a missing database is an error, never a new empty file
    storage = open_storage(url, options.heartbeat, write=True)  # the one open of this command
    study = load_existing(storage, url, options.study)
    options = replace(options, study=study.study_name)  # --study omitted: the study it resolved to
    protocol = stored_protocol(study)
    top = _top(study, options.top)
    if not top:
        raise NothingToShow(
            f"study {options.study!r} has no complete trial to confirm", hint="run `cnn-tune optimize` first"
        )
    notes = (
        []
        if len(top) == options.top
        else [
            f"study {options.study!r} has {len(top)} complete trial(s), fewer than --top {options.top}: "
            f"confirming those"
        ]
    )
    data = load_dataset(protocol.ref, options.data_dir, reporter.info, protocol.data_fingerprint, reporter.images)
    _check_reproducible(options.study, protocol, data)

    with writes_to(url):
        companion = optuna.create_study(
            study_name=companion_name(options.study), storage=storage, direction="maximize", load_if_exists=True
        )
        if PROTOCOL_ATTR not in companion.user_attrs:
            companion.set_user_attr(PROTOCOL_ATTR, protocol.to_attr())
            companion.set_user_attr("cnn_tune.confirm_of_study", options.study)
        with warnings.catch_warnings():  # "experimental" since Optuna 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # a run whose worker died is failed and re-queued now, so that this process can redo it
            optuna.storages.fail_stale_trials(companion)
        _enqueue_missing(storage, companion, _runs_wanted(top, options.seeds))
        pending = len(companion.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    for note in notes:
        reporter.info(note)
    runs = None
    if pending:
        runs_of = OptimizeOptions(
            trials=pending,
            study=companion.study_name,
            storage=url,
            sampler="random",
            pruner="none",
            warm_start=False,
            patience=0,
            workers=options.workers,
            threads=options.threads,
            heartbeat=options.heartbeat,
        )
        plan, plan_notes = make_plan(
            runs_of,
            check_options(runs_of, device),
            url,
            protocol,
            len(companion.trials),
            data,
            device,
            precision,
            enqueued_only=True,
        )
        for note in plan_notes:
            reporter.info(note)
        runs = execute(
            plan,
            optuna.load_study(
                study_name=plan.study,
                storage=storage,
                sampler=optuna.samplers.RandomSampler(),
                pruner=optuna.pruners.NopPruner(),
            ),
            data,
            reporter,
        )
    ranked = collect(companion, top)
    judged = verdict(ranked)
    if runs is None or not runs.interrupted:
        with writes_to(url):
            store(study, ranked, judged)
    return ConfirmResult(options.study, ranked, judged, runs, notes)
