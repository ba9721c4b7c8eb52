"""Reading a study back: the rows of `trials`, the record of `best`, the list of `studies`.

Everything here is read through ``study.get_trials(deepcopy=False)`` — one pass over the
storage — rather than ``trials_dataframe()``, whose pandas assembly dominates on studies of
thousands of trials (see README, "Reading large studies").
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Iterable

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:  # what a storage lists for each study (get_all_studies)
    from optuna.study._frozen import FrozenStudy

from cnn_tune.data.datasets import MNIST, DatasetRef
from cnn_tune.errors import NothingToShow, UsageError
from cnn_tune.storage.artifacts import kept_at
from cnn_tune.storage.patience import STOP_ATTR, stop_text
from cnn_tune.storage.protocol import PROTOCOL_ATTR
from cnn_tune.storage.studies import confirm_records, confirmed_leader, retrain_records
from cnn_tune.storage.urls import display_url

STATES = {
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "fail": TrialState.FAIL,
    "running": TrialState.RUNNING,
    "waiting": TrialState.WAITING,
}
SORT_KEYS = ("number", "value", "epochs", "duration", "started")
DEFAULT_TARGET = 0.989  # the seed article's best validation accuracy on MNIST: the figure tuners are compared by


def default_target(protocol: dict[str, Any]) -> float | None:
    """The accuracy whose first arrival `best`, `studies` and the report time when no --target
    is given: the seed article's 98.9% for an MNIST study (a study stored before data sets is
    one); none for another data set or another tool's study, where 98.9% means nothing."""
    return DEFAULT_TARGET if protocol and protocol.get("dataset", MNIST) == MNIST else None


@dataclass
class TrialRow:
    """One trial as every output format shows it. ``value`` is Optuna's (complete trials
    only); ``last_val_accuracy`` is the last epoch's, so a pruned trial shows where it stopped."""

    number: int
    state: str
    value: float | None
    last_val_accuracy: float | None
    epochs: int
    duration_s: float | None
    started: str | None  # ISO 8601, local time as Optuna stores it
    params: dict[str, Any] = field(default_factory=dict)
    test_accuracy: float | None = None  # set by `cnn-tune retrain`
    test_ci95: float | None = None  # ± of the test accuracy (95%, from the number of test images)
    model_after_s: float | None = None  # the study's first trial → the retrained model, in seconds
    checkpoint: str | None = None
    retry_of: int | None = None  # the trial whose dead worker this one re-runs (heartbeat)
    confirmed_mean: float | None = None  # set by `cnn-tune confirm`: over the original and new seeds
    confirmed_std: float | None = None
    confirmed_n: int | None = None
    model_kept_at: str | None = None  # STORE/ID of the final model in the study's artifact store
    n_params: int | None = None  # the network's trainable parameters (trials since 0.8)
    inference_us: float | None = None  # its fp32 forward pass per image, in µs, on the trial's device and threads

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "value": self.value,
            "last_val_accuracy": self.last_val_accuracy,
            "epochs": self.epochs,
            "duration_s": self.duration_s,
            "started": self.started,
            "params": dict(self.params),
            "test_accuracy": self.test_accuracy,
            "test_ci95": self.test_ci95,
            "model_after_s": self.model_after_s,
            "checkpoint": self.checkpoint,
            "retry_of": self.retry_of,
            "confirmed_mean": self.confirmed_mean,
            "confirmed_std": self.confirmed_std,
            "confirmed_n": self.confirmed_n,
            "n_params": self.n_params,
            "inference_us": self.inference_us,
            "model_kept_at": self.model_kept_at,
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") if moment is not None else None


def to_row(
    trial: FrozenTrial, retrained: dict[int, dict] | None = None, confirmed: dict[int, dict] | None = None
) -> TrialRow:
    steps = trial.intermediate_values
    last = steps[max(steps)] if steps else None
    record = (retrained or {}).get(trial.number, {})
    again = (confirmed or {}).get(trial.number, {})
    return TrialRow(
        number=trial.number,
        state=trial.state.name.lower(),
        value=trial.value if trial.state == TrialState.COMPLETE else None,
        last_val_accuracy=last if last is not None else trial.value,
        # studies written by other tools have no epochs_run: the last reported step stands in
        epochs=int(trial.user_attrs.get("epochs_run", max(steps) if steps else 0)),
        duration_s=trial.duration.total_seconds() if trial.duration is not None else None,
        started=_iso(trial.datetime_start),
        params=dict(trial.params),
        test_accuracy=record.get("test_accuracy"),
        test_ci95=record.get("test_ci95"),
        model_after_s=record.get("since_first_trial_s"),
        checkpoint=record.get("checkpoint"),
        retry_of=_retry_of(trial),
        confirmed_mean=again.get("mean"),
        confirmed_std=again.get("std"),
        confirmed_n=again.get("n"),
        model_kept_at=kept_at(record),
        n_params=trial.user_attrs.get("n_params"),
        inference_us=trial.user_attrs.get("inference_us"),
    )


def _retry_of(trial: FrozenTrial) -> int | None:
    with warnings.catch_warnings():  # "experimental" since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trial)


def param_names(rows: Iterable[TrialRow | FrozenTrial]) -> list[str]:
    """Parameter names in first-seen order (the order the objective suggests them), from rows
    or straight from Optuna's trials (both carry ``params``)."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row.params))
    return list(names)


def _maximize(study: optuna.Study) -> bool:
    return study.direction == StudyDirection.MAXIMIZE


def _sort_key(key: str):
    def get(row: TrialRow):
        value = (
            {
                "number": row.number,
                "value": row.value,
                "epochs": row.epochs,
                "duration": row.duration_s,
                "started": row.started,
            }.get(key)
            if key in SORT_KEYS
            else row.params.get(key)
        )
        # missing values last; mixed types (categorical params) compare as text
        return (value is None, value if isinstance(value, (int, float)) else str(value))

    return get


def select_rows(
    study: optuna.Study,
    states: list[str] | None = None,
    last: int | None = None,
    top: int | None = None,
    sort: str | None = None,
    reverse: bool = False,
) -> list[TrialRow]:
    """The rows of `cnn-tune trials`: filter by state, keep the ``last`` most recent, then the
    ``top`` best complete ones (best first), then sort if asked."""
    wanted = tuple(STATES[s] for s in states) if states else None
    trials = study.get_trials(deepcopy=False, states=wanted)
    retrained = retrain_records(study) if trials else {}
    confirmed = confirm_records(study) if trials else {}
    rows = [to_row(t, retrained, confirmed) for t in trials]
    if sort is not None and sort not in SORT_KEYS and sort not in param_names(rows):
        raise UsageError(f"cannot sort by {sort!r}", hint=f"use one of: {', '.join([*SORT_KEYS, *param_names(rows)])}")
    rows.sort(key=lambda r: r.number)
    if last is not None:
        rows = rows[-last:]
    if top is not None:
        complete = [r for r in rows if r.value is not None]
        rows = sorted(complete, key=lambda r: r.value, reverse=_maximize(study))[:top]
    if sort is not None:
        rows.sort(key=_sort_key(sort), reverse=reverse)
    elif reverse:
        rows.reverse()
    return rows


def require_best(study: optuna.Study) -> FrozenTrial:
    """The best complete trial; NothingToShow (naming what the study has) when there is none."""
    try:
        return study.best_trial
    except ValueError:
        counts = state_counts(study)
        raise NothingToShow(
            f"study {study.study_name!r} has no complete trial yet ({counts_text(counts)})",
            hint="run `cnn-tune optimize` to add trials",
        ) from None


def best_record(study: optuna.Study, url: str, by: str = "value", target: float | None = None) -> dict[str, Any]:
    """Everything `cnn-tune best` shows, JSON-ready. ``by="mean"``: the trial with the highest
    confirmed mean (`cnn-tune confirm`) instead of the highest single value. ``target`` None:
    the study's default (see default_target)."""
    if by == "mean":
        leader = confirmed_leader(study)
        if leader is None:
            raise NothingToShow(
                f"study {study.study_name!r} has no confirmed trials yet",
                hint="run `cnn-tune confirm` first, or drop --by mean",
            )
        best = next(t for t in study.get_trials(deepcopy=False) if t.number == leader)
    else:
        best = require_best(study)
    confirmed = confirm_records(study)
    record = to_row(best, retrain_records(study), confirmed).as_dict()
    protocol = study.user_attrs.get(PROTOCOL_ATTR) or {}
    target = target if target is not None else default_target(protocol)
    record.update(
        study=study.study_name,
        dataset=dataset_text(protocol),
        storage=display_url(url),
        direction=study.direction.name.lower(),
        completed=_iso(best.datetime_complete),
        device=best.user_attrs.get("device"),
        seed=best.user_attrs.get("seed"),
        ranked_by=by,
        stopped=stop_text(study.user_attrs.get(STOP_ATTR)),
        confirmed_ci95=confirmed.get(best.number, {}).get("ci95"),
        **time_to_target(study.get_trials(deepcopy=False), target, _maximize(study)),
    )
    return record


def state_counts(study_or_trials: optuna.Study | list[FrozenTrial]) -> dict[str, int]:
    trials = (
        study_or_trials.get_trials(deepcopy=False) if isinstance(study_or_trials, optuna.Study) else study_or_trials
    )
    counts = dict.fromkeys(STATES, 0)
    for t in trials:
        counts[t.state.name.lower()] += 1
    return counts


def counts_text(counts: dict[str, int]) -> str:
    """``3 complete, 2 pruned`` — the states a study's trials are in, for messages."""
    shown = [f"{n} {state}" for state, n in counts.items() if n]
    return ", ".join(shown) if shown else "no trials"


@dataclass
class StudySummary:
    """One line of `studies`: a study's counts, best, final model, protocol and search state."""

    name: str
    direction: str
    trials: int
    counts: dict[str, int]
    best_value: float | None
    best_trial: int | None
    epochs: int | None  # from the cnn-tune protocol; None for studies of other tools
    train_limit: int | None
    started: str | None
    times: dict[str, Any] = field(default_factory=dict)  # see time_to_target
    final: dict[str, Any] = field(default_factory=dict)  # the latest `retrain`: test accuracy, ±, time
    dataset: str | None = None  # MNIST, Fashion-MNIST or a folder's name; None for studies of other tools
    stopped: str | None = None  # why --patience stopped the search, if it did

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "direction": self.direction,
            "trials": self.trials,
            **self.counts,
            "best_value": self.best_value,
            "best_trial": self.best_trial,
            "epochs": self.epochs,
            "train_limit": self.train_limit,
            "dataset": self.dataset,
            "started": self.started,
            **self.times,
            "test_accuracy": self.final.get("test_accuracy"),
            "test_ci95": self.final.get("test_ci95"),
            "model_after_s": self.final.get("since_first_trial_s"),
            "stopped": self.stopped,
            "final_trial": self.final.get("trial"),
            "final_checkpoint": self.final.get("checkpoint"),
            "final_kept_at": kept_at(self.final),
        }


def time_to_target(trials: list[FrozenTrial], target: float | None, maximize: bool = True) -> dict[str, Any]:
    """The figures users compare tuners by, in wall time from the study's first trial start:
    when the best trial finished, and when a complete trial first reached ``target`` (never
    asked when ``target`` is None)."""
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    done = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE and t.values and t.datetime_complete),
        key=lambda t: t.datetime_complete,
    )
    out: dict[str, Any] = {"best_after_s": None, "target": target, "target_after_s": None, "target_trial": None}
    if not starts or not done:
        return out
    first = min(starts)
    best = (max if maximize else min)(done, key=lambda t: t.values[0])
    out["best_after_s"] = (best.datetime_complete - first).total_seconds()
    if target is None:
        return out
    hit = next((t for t in done if (t.values[0] >= target if maximize else t.values[0] <= target)), None)
    if hit is not None:
        out["target_after_s"] = (hit.datetime_complete - first).total_seconds()
        out["target_trial"] = hit.number
    return out


def summarize_studies(storage: optuna.storages.BaseStorage, target: float | None = None) -> list[StudySummary]:
    """One summary per study; ``target`` None: each study's own default (see default_target)."""
    out = []
    for frozen in sorted(storage.get_all_studies(), key=lambda s: s.study_name):
        trials = storage.get_all_trials(storage.get_study_id_from_name(frozen.study_name), deepcopy=False)
        protocol = frozen.user_attrs.get(PROTOCOL_ATTR) or {}
        directions = frozen.directions
        complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
        best = None
        if complete and len(directions) == 1:
            pick = max if directions[0] == StudyDirection.MAXIMIZE else min
            best = pick(complete, key=lambda t: t.values[0])
        starts = [t.datetime_start for t in trials if t.datetime_start is not None]
        out.append(
            StudySummary(
                name=frozen.study_name,
                direction="/".join(d.name.lower() for d in directions),
                trials=len(trials),
                counts=state_counts(trials),
                best_value=best.values[0] if best else None,
                best_trial=best.number if best else None,
                epochs=protocol.get("epochs"),
                train_limit=protocol.get("train_limit"),
                started=_iso(min(starts)) if starts else None,
                times=time_to_target(
                    trials,
                    target if target is not None else default_target(protocol),
                    directions[0] != StudyDirection.MINIMIZE,
                ),
                final=final_model(frozen, best.number if best else None),
                dataset=dataset_text(protocol),
                stopped=stop_text(frozen.user_attrs.get(STOP_ATTR)),
            )
        )
    return out


def dataset_text(protocol: dict[str, Any]) -> str | None:
    """What a stored protocol says the images are, in a word (studies before data sets: MNIST)."""
    if not protocol:
        return None
    return DatasetRef(protocol.get("dataset", MNIST), protocol.get("dataset_source")).short


def final_model(frozen: FrozenStudy, best: int | None) -> dict[str, Any]:
    """The study's final model: the `retrain` record of the trial `retrain` picks by default
    (the confirmed leader, else the best trial), else the most recent record of any trial — a
    later `retrain --trial N` of another trial does not hide the best's. ``trial`` names it
    ({} if the study was never retrained)."""
    records = {n: r for n, r in retrain_records(frozen).items() if isinstance(r, dict)}
    confirmed = _by_mean(frozen)
    for pick in (confirmed, best):
        if pick in records:
            return {**records[pick], "trial": pick}
    if not records:
        return {}
    latest = max(records, key=lambda n: str(records[n].get("created", "")))
    return {**records[latest], "trial": latest}


def _by_mean(frozen: FrozenStudy) -> int | None:
    """The confirmed leader of a study as a storage lists it (None before `cnn-tune confirm`)."""
    found = {n: r for n, r in confirm_records(frozen).items() if isinstance(r, dict) and "mean" in r}
    return max(found, key=lambda n: found[n]["mean"]) if found else None
