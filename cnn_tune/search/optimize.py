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
from cnn_tune.model.space import Hyperparams
from cnn_tune.search.parallel import Reporter, execute
from cnn_tune.search.plan import OptimizeOptions, adoptable, check_options, make_plan, resolve_dataset, study_name
from cnn_tune.search.records import OptimizeResult, Plan
from cnn_tune.storage.engine import check_can_write, open_storage, prepare_storage, storage_exists
from cnn_tune.storage.faults import writes_to
from cnn_tune.storage.patience import standing
from cnn_tune.storage.protocol import PROTOCOL_ATTR, Protocol
from cnn_tune.storage.studies import best_or_none, check_protocol, create_or_load, find_study, stored_protocol
from cnn_tune.storage.urls import check_study_name


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
    return stored_protocol(study), n_trials


def _read_data(options: OptimizeOptions, stored: Protocol | None, reporter: Reporter) -> Images:
    """The images to search on: as asked, else the study's. A study's own data set reads its
    cached images by fingerprint (a folder changed since is ignored); other files under the
    same name get the answer retrain and confirm give."""
    dataset = resolve_dataset(options, stored)
    known = stored.data_fingerprint if stored is not None and dataset == stored.ref else None
    data = load_dataset(dataset, options.data_dir, reporter.info, known, reporter.images)
    if known is not None:
        check_same_data(options.study, known, data)
    return data


def run_optimize(options: OptimizeOptions, reporter: Reporter) -> OptimizeResult:
    started = time.perf_counter()
    chosen = check_options(options)  # sampler, pruner, warm start, workers, patience: resolved once
    options = replace(options, study=study_name(options))  # resolved once: everything below reads this
    check_study_name(options.study)
    url = prepare_storage(options.storage)
    check_can_write(url)
    device = resolve_device(options.device)
    precision = resolve_precision(options.precision, device)

    # The one open of this process. A SQLite file not there yet is created only after the data is read.
    storage = open_storage(url, options.heartbeat, write=True) if storage_exists(url) else None
    found = find_study(storage, options.study) if storage is not None else None
    stored, trials_before = _stored(found)
    data = _read_data(options, stored, reporter)
    plan, notes = make_plan(options, chosen, url, stored, trials_before, data, device, precision)
    if stored is not None:
        check_protocol(options.study, stored, plan.protocol)
        refused = _plateau(plan, found)
        if refused is not None:
            refused.seconds = time.perf_counter() - started
            return refused
    for note in notes:
        reporter.info(note)
    if storage is None:
        storage = open_storage(url, options.heartbeat, write=True)
    with writes_to(url):
        study, created = create_or_load(storage, plan.study, plan.protocol, *plan.search(0))
        # only the creator: processes started together on a new study would each see no trial yet
        if plan.warm_start and created:
            # the article's configuration first: a strong reference for pruning from trial 1 on
            study.enqueue_trial(Hyperparams().as_dict(), user_attrs={"cnn_tune.warm_start": True})
    if plan.workers > 1:
        data = None  # each worker maps the files itself (shared pages): this process keeps no copy
    result = execute(plan, study, data, reporter)
    result.seconds = time.perf_counter() - started
    return result
