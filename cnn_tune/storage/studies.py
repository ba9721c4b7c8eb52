"""Studies in an opened storage: found by name (with the names there when not), created or
resumed under one protocol, and the records cnn-tune keeps on them (``retrain``'s and
``confirm``'s, by trial number)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import optuna
from optuna.trial import FrozenTrial

if TYPE_CHECKING:  # what a storage lists for each study (get_all_studies)
    from optuna.study._frozen import FrozenStudy
from cnn_tune.errors import ProtocolConflict, StorageError, StudyNotFound
from cnn_tune.storage.protocol import (
    CONFIRM_ATTR_PREFIX,
    CONFIRM_SUFFIX,
    PROTOCOL_ATTR,
    RETRAIN_ATTR_PREFIX,
    StudyProtocol,
)
from cnn_tune.storage.urls import DEFAULT_STUDY, check_study_name, display_url

METRIC_NAME = "validation_accuracy"  # the objective's name, as the dashboard and Optuna's tools show it


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return sorted(s.study_name for s in storage.get_all_studies())


def default_name(storage: optuna.storages.BaseStorage) -> str:
    """The study a command without ``--study`` means: the database's only cnn-tune study (so
    `retrain` after `optimize --dataset fashion-mnist` finds it), else ``mnist-cnn``. Where
    that is not there either, the error lists the studies to choose from."""
    ours = [
        s.study_name
        for s in storage.get_all_studies()
        if PROTOCOL_ATTR in s.user_attrs and not s.study_name.endswith(CONFIRM_SUFFIX)
    ]
    return ours[0] if len(ours) == 1 else DEFAULT_STUDY


def load_existing(storage: optuna.storages.BaseStorage, url: str, name: str | None) -> optuna.Study:
    """The study called ``name`` (None: :func:`default_name`); if there is none, the error lists
    the ones that exist."""
    name = check_study_name(name) if name is not None else default_name(storage)
    study = find_study(storage, name)
    if study is not None:
        return study
    names = study_names(storage)
    there = f"it has: {', '.join(names[:10])}{' …' if len(names) > 10 else ''}" if names else "it has no studies yet"
    raise StudyNotFound(
        f"no study {name!r} in {display_url(url)}; {there}", hint="pass --study NAME (`cnn-tune studies` lists them)"
    )


def find_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return optuna.load_study(study_name=name, storage=storage)


def stored_protocol(study: optuna.Study) -> StudyProtocol:
    value = study.user_attrs.get(PROTOCOL_ATTR)
    if value is None:
        raise StorageError(
            f"study {study.study_name!r} was not created by cnn-tune (it has no protocol)",
            hint="use another --study name",
        )
    return StudyProtocol.from_attr(value, study.study_name)


def check_protocol(name: str, stored: StudyProtocol, protocol: StudyProtocol) -> None:
    diffs = stored.differences(protocol)
    if diffs:
        raise ProtocolConflict(
            f"study {name!r} was run with another protocol: " + "; ".join(diffs),
            hint="drop the conflicting options to resume it, or start a new one with --study NAME",
        )


def create_or_load(
    storage: optuna.storages.BaseStorage,
    name: str,
    protocol: StudyProtocol,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
) -> tuple[optuna.Study, bool]:
    """Open ``name`` with this run's sampler and pruner, creating it with ``protocol`` if new.
    True when this call created it: of several processes starting at once on a new study,
    exactly one (the database's unique study name decides), so one-time setup runs once."""
    try:
        study, created = (
            optuna.create_study(
                storage=storage, study_name=name, direction=protocol.direction, sampler=sampler, pruner=pruner
            ),
            True,
        )
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner), False
    if PROTOCOL_ATTR not in study.user_attrs:
        study.set_user_attr(PROTOCOL_ATTR, protocol.to_attr())
    if study.metric_names is None:  # named for optuna-dashboard, Optuna's plots and `optuna trials`
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC_NAME])
    check_protocol(name, stored_protocol(study), protocol)  # another process may have created it a moment before
    return study, created


def _by_trial(user_attrs: dict, prefix: str) -> dict[int, dict]:
    """Study user attrs named PREFIX + trial number, by trial number."""
    return {
        int(key[len(prefix) :]): value
        for key, value in user_attrs.items()
        if key.startswith(prefix) and key[len(prefix) :].isdigit()
    }


def retrain_records(study: optuna.Study | FrozenStudy) -> dict[int, dict]:
    """What `cnn-tune retrain` stored, by trial number (from a study, or a storage's record of one)."""
    return _by_trial(study.user_attrs, RETRAIN_ATTR_PREFIX)


def confirm_records(study: optuna.Study | FrozenStudy) -> dict[int, dict]:
    """What `cnn-tune confirm` stored (mean, std, 95% interval, runs), by trial number."""
    return _by_trial(study.user_attrs, CONFIRM_ATTR_PREFIX)


def confirmed_leader(study: optuna.Study) -> int | None:
    """The trial with the highest confirmed mean, once `cnn-tune confirm` has run."""
    found = confirm_records(study)
    return max(found, key=lambda n: found[n]["mean"]) if found else None


def record_retrain(study: optuna.Study, trial_number: int, record: dict) -> None:
    study.set_user_attr(f"{RETRAIN_ATTR_PREFIX}{trial_number}", record)


def best_or_none(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None
