"""``cnn-tune optimize``: resolve the options into a plan, open the study once, run the plan.

Order matters for what a failure leaves behind: everything cheap is checked first (names, URL,
options), then the data is read, and only then is a new SQLite file created. The storage is
opened once in this process; with ``--workers`` each worker process opens its own, once."""

from __future__ import annotations

import time
from dataclasses import replace

import optuna

from cnn_tune.data.images import Images
from cnn_tune.data.load import check_same_data, load_dataset
from cnn_tune.model.device import resolve_device, resolve_precision
from cnn_tune.model.size import n_params
from cnn_tune.model.space import SPACES, warm_start
from cnn_tune.search.parallel import Reporter, execute
from cnn_tune.search.plan import (
    Checked,
    OptimizeOptions,
    check_options,
    make_plan,
    never_set_up,
    resolve_dataset,
    resolve_length,
    resolve_patience,
    resolve_space,
)
from cnn_tune.search.records import OptimizeResult, Plan
from cnn_tune.search.samplers import WARM_START_ATTR
from cnn_tune.storage.engine import check_can_write, open_storage, prepare_storage, storage_exists
from cnn_tune.storage.faults import writes_to
from cnn_tune.storage.patience import search_status
from cnn_tune.storage.protocol import PROTOCOL_ATTR, StudyProtocol
from cnn_tune.storage.studies import best_or_none, check_protocol, create_or_load, find_study, stored_protocol
from cnn_tune.storage.urls import check_study_name


def _plateau(
    options: OptimizeOptions, checked: Checked, url: str, stored: StudyProtocol | None, study: optuna.Study | None
) -> OptimizeResult | None:
    """A resumed study that had already plateaued under this ``--patience`` runs nothing: the
    result says so (and how to search on) instead. Decided from the stored protocol and trials
    alone, before any data is read or fetched; options that conflict with the study are still
    refused as such first."""
    if study is None or stored is None:
        return None
    patience = resolve_patience(checked.search, resolve_space(options, checked.search, stored))
    if not patience:
        return None
    resolve_dataset(options, stored)
    resolve_length(options, stored, stored.space)
    where = search_status(study.get_trials(deepcopy=False), stored.n_val)
    if not where.plateaued(patience):
        return None
    return OptimizeResult(
        options.study,
        url,
        True,
        stored,
        best=best_or_none(study),
        patience=patience,
        status=where,
        plateaued=True,
        refused=True,
    )


def _stored(study: optuna.Study | None) -> tuple[StudyProtocol | None, int]:
    """The protocol a study was created with and its trial count; (None, 0) for a new study."""
    if study is None:
        return None, 0
    n_trials = len(study.get_trials(deepcopy=False))
    if never_set_up(PROTOCOL_ATTR in study.user_attrs, n_trials):
        return None, 0
    return stored_protocol(study), n_trials


def _read_data(options: OptimizeOptions, stored: StudyProtocol | None, reporter: Reporter) -> Images:
    """The images to search on: as asked, else the study's. A study's own data set reads its
    cached images by fingerprint (a folder changed since is ignored); other files under the
    same name get the answer retrain and confirm give."""
    dataset = resolve_dataset(options, stored)
    known = stored.data_fingerprint if stored is not None and dataset == stored.ref else None
    data = load_dataset(dataset, options.data_dir, reporter.info, known, reporter.images)
    if known is not None:
        check_same_data(options.study, known, data)
    return data


def _enqueue_warm_start(study: optuna.Study, plan: Plan, reporter: Reporter) -> None:
    """A known-good configuration first (the article's, or the wide space's defaults for the
    data): a strong reference for pruning from trial 1 on — unless it is over ``--max-params``."""
    p = plan.protocol
    params = warm_start(p.space, p.dataset)
    size = n_params(SPACES[p.space].from_params(params), len(p.class_names))  # type: ignore[attr-defined]
    if plan.max_params is not None and size > plan.max_params:
        reporter.info(f"No warm start: its network has {size} parameters, over --max-params {plan.max_params}")
        return
    study.enqueue_trial(params, user_attrs={WARM_START_ATTR: True})


def run_optimize(options: OptimizeOptions, reporter: Reporter) -> OptimizeResult:
    started = time.perf_counter()
    device = resolve_device(options.device)
    checked = check_options(options, device)  # search, study name, workers: resolved once
    options = replace(options, study=checked.study)  # everything below reads this
    check_study_name(options.study)
    url = prepare_storage(options.storage)
    check_can_write(url)
    precision = resolve_precision(options.precision, device)

    # The one open of this process. A SQLite file not there yet is created only after the data is read.
    storage = open_storage(url, options.heartbeat, write=True) if storage_exists(url) else None
    found = find_study(storage, options.study) if storage is not None else None
    stored, trials_before = _stored(found)
    refused = _plateau(options, checked, url, stored, found)
    if refused is not None:
        refused.seconds = time.perf_counter() - started
        return refused
    data = _read_data(options, stored, reporter)
    plan, notes = make_plan(options, checked, url, stored, trials_before, data, device, precision)
    if stored is not None:
        check_protocol(options.study, stored, plan.protocol)
    for note in notes:
        reporter.info(note)
    if storage is None:
        storage = open_storage(url, options.heartbeat, write=True)
    with writes_to(url):
        study, created = create_or_load(storage, plan.study, plan.protocol, *plan.search(0))
        # only the creator: processes started together on a new study would each see no trial yet
        if plan.warm_start and created:
            _enqueue_warm_start(study, plan, reporter)
    if plan.workers > 1:
        data = None  # each worker maps the files itself (shared pages): this process keeps no copy
    result = execute(plan, study, data, reporter)
    result.seconds = time.perf_counter() - started
    return result
