"""`retrain`: from a trial in the database to a tested model on disk, kept with its study.

It rebuilds a trial's hyperparameters from the study alone, trains them on all training images
(train + validation) with a :class:`~cnn_tune.model.recipe.Recipe` (the trial's own training,
or more epochs, a cosine lr, shifted images; or the article's plain training), optionally for
the top K trials as an ensemble, scores the held-out test set
(:mod:`cnn_tune.model.evaluation`), writes a checkpoint, keeps it in the study's artifact store
and records the result on the study.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from cnn_tune.data.datasets import Log
from cnn_tune.data.images import Images
from cnn_tune.data.load import check_same_data, load_dataset
from cnn_tune.errors import UsageError
from cnn_tune.files import check_writable
from cnn_tune.model import checkpoint as ckpt
from cnn_tune.model.device import resolve_device, resolve_precision
from cnn_tune.model.evaluation import Evaluation, score_test_set
from cnn_tune.model.kept import kept_members, versions, with_kept_model
from cnn_tune.model.network import Ensemble
from cnn_tune.model.recipe import DEFAULT_RECIPES, RECIPES, TRAINING
from cnn_tune.model.results import EpochResult
from cnn_tune.model.space import SPACES
from cnn_tune.model.training import Trainer
from cnn_tune.storage.artifacts import artifact_folder, keep, kept_at
from cnn_tune.storage.engine import read_study
from cnn_tune.storage.faults import file_failure
from cnn_tune.storage.inspection import counts_text, state_counts
from cnn_tune.storage.protocol import StudyProtocol
from cnn_tune.storage.studies import (
    confirm_records,
    confirmed_leader,
    record_retrain,
    stored_protocol,
)
from cnn_tune.storage.urls import DEFAULT_STORAGE, results_folder


@dataclass
class RetrainSettings:
    """What `retrain` was asked: which study and trial, the recipe and what the user changed of it,
    where the checkpoint and the kept model go."""

    study: str | None = None  # None: the database's only study, else mnist-cnn (study.default_name)
    storage: str = DEFAULT_STORAGE
    trial: int | None = None  # None: the best complete trial (or the top K, see --top)
    recipe: str | None = None  # a name in RECIPES; None: the study's space's (DEFAULT_RECIPES)
    changes: dict[str, Any] = field(default_factory=dict)  # the recipe's fields the user set (--epochs, --top, …)
    seed: int | None = None  # None: each trial's own training seed
    device: str = "auto"
    precision: str = "auto"
    output: Path | None = None  # None: <study>-trial<N>.pt beside the database
    artifacts: Path | None = None  # the artifact store's folder; None: artifacts/ beside a SQLite database
    overwrite: bool = False
    data_dir: Path | None = None


def pick_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """The trial to retrain: ``number``; else the confirmed leader once `cnn-tune confirm` has
    run (the best mean over several seeds); else the best complete one."""
    trials = study.get_trials(deepcopy=False)
    if number is None:
        if not any(t.state == TrialState.COMPLETE for t in trials):
            raise UsageError(
                f"study {study.study_name!r} has no complete trial to retrain ({counts_text(state_counts(trials))})",
                hint="run `cnn-tune optimize` first",
            )
        leader = confirmed_leader(study)
        return trials[leader] if leader is not None and trials[leader].number == leader else study.best_trial
    match = [t for t in trials if t.number == number]
    if not match:
        raise UsageError(
            f"study {study.study_name!r} has no trial {number} (trials 0–{len(trials) - 1})"
            if trials
            else f"study {study.study_name!r} has no trials",
            hint="`cnn-tune trials --state complete` lists the ones you can retrain",
        )
    trial = match[0]
    if trial.state != TrialState.COMPLETE:
        where = (
            f" after {trial.user_attrs.get('epochs_run', len(trial.intermediate_values))} epoch(s)"
            if trial.state == TrialState.PRUNED
            else ""
        )
        raise UsageError(
            f"trial {number} of study {study.study_name!r} is {trial.state.name.lower()}{where}, not complete",
            hint="pick another with `cnn-tune trials --state complete`, or omit --trial for the best",
        )
    return trial


def pick_trials(study: optuna.Study, number: int | None, top: int) -> list[FrozenTrial]:
    """The trials to retrain, best first: :func:`pick_trial`'s one; for ``top`` > 1 the K
    best complete ones — by confirmed mean where `cnn-tune confirm` ranked them, then by value."""
    first = pick_trial(study, number)
    if top == 1:
        return [first]
    if number is not None:
        raise UsageError(
            "--trial and --top K > 1 cannot be combined",
            hint="--trial N retrains one trial; --top K retrains the K best",
        )
    ranked = ranked_complete(study)
    if len(ranked) < top:
        raise UsageError(
            f"--top {top} needs {top} complete trials; study {study.study_name!r} has {len(ranked)}",
            hint=f"use --top {len(ranked)}, or run `cnn-tune optimize` for more trials",
        )
    return ranked[:top]


def ranked_complete(study: optuna.Study) -> list[FrozenTrial]:
    """The complete trials, best first: by confirmed mean where `cnn-tune confirm` ranked them, then by value."""
    confirmed = confirm_records(study)
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    sign = 1 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1
    return sorted(
        complete, key=lambda t: (t.number not in confirmed, -sign * confirmed.get(t.number, {}).get("mean", t.value))
    )


def pick_kept(study: optuna.Study, kept: list[FrozenTrial], number: int | None, top: int) -> list[FrozenTrial]:
    """`--recipe searched`'s trials: the ``top`` best of ``kept`` (fewer where fewer kept their
    network), which holds trial ``number``'s alone when one was named."""
    if number is not None:
        pick_trial(study, number)  # refused as for any recipe if there is no such complete trial
    if not kept:
        which = f"trial {number}" if number is not None else f"no complete trial of study {study.study_name!r}"
        raise UsageError(
            f"{which} kept no trained network (studies before 0.8, the article's space and server "
            "databases searched without --artifacts keep none)",
            hint="use --recipe tuned to train one",
        )
    return kept[:top]


def choose_recipe(
    study: optuna.Study, space: str, settings: RetrainSettings, log: Log
) -> tuple[str, list[FrozenTrial]]:
    """The recipe asked, else the space's default — except that the wide space's `searched` gives
    way to `tuned` where it cannot apply: a training option was given (``--epochs 30`` asks for
    training), or the study kept no network to hand over (made before 0.8, or a server database
    searched without ``--artifacts``). With `searched`, also the complete trials that kept their
    network, best first (trial ``--trial``'s alone when it is given), read once here."""
    name = settings.recipe or DEFAULT_RECIPES[space]
    if not RECIPES[name].searched:
        return name, []
    kept = [t for t in with_kept_model(ranked_complete(study)) if settings.trial in (None, t.number)]
    if settings.recipe is not None:
        return name, kept
    if not kept:
        log(
            f"Study {study.study_name!r} kept no trained network to hand over: training "
            f"{'the winner' if settings.trial is None else f'trial {settings.trial}'} again (--recipe tuned)"
        )
        return "tuned", []
    return ("tuned", []) if any(n in settings.changes for n in TRAINING) else (name, kept)


def default_checkpoint(url: str, study_name: str, trials: list[int]) -> Path:
    more = f"-top{len(trials)}" if len(trials) > 1 else ""
    return results_folder(url) / f"{study_name}-trial{trials[0]}{more}.pt"


# Long: checks everything cheap (study, trials, output path, data) before training, then trains
# each member, scores, saves and records; each step is a few lines.
def retrain(
    settings: RetrainSettings,
    on_epoch: Callable[[EpochResult, int], None],
    log: Log,
    tick: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Validate everything cheap first (study, trials, output path); then read data and train."""
    study = read_study(settings.storage, settings.study)
    chosen = pick_trials(study, settings.trial, settings.changes.get("top", 1))
    protocol = stored_protocol(study)
    name, kept = choose_recipe(study, protocol.space, settings, log)
    asked = RECIPES[name].with_options(**settings.changes)
    if asked.searched:
        given = [f"--{name}" for name in TRAINING if name in settings.changes]
        if given:
            raise UsageError(
                f"{', '.join(given)} cannot change --recipe searched: its networks are not trained again",
                hint="use --recipe tuned to train the trial again with them",
            )
        chosen = pick_kept(study, kept, settings.trial, asked.top)
        asked = replace(asked, top=len(chosen))
    hyperparams = [SPACES[protocol.space].from_params(t.params) for t in chosen]  # type: ignore[attr-defined]
    own = [asked.for_member(hp.style(), hp.optimizer, protocol.dataset) for hp in hyperparams]
    recipe = asked.common(own)  # what the members share; where they differ, the asked value (auto, each one's)
    leader = chosen[0]
    confirmed = confirm_records(study).get(leader.number)
    if settings.trial is None and confirmed is not None:
        log(
            f"Trial {leader.number} is the confirmed leader: mean validation accuracy "
            f"{100 * confirmed['mean']:.2f}% over {confirmed['n']} runs (`cnn-tune confirm`); "
            "pass --trial N for another"
        )
    epochs = recipe.epochs or protocol.epochs
    seeds = [
        settings.seed + i if settings.seed is not None else int(t.user_attrs.get("seed", 0))
        for i, t in enumerate(chosen)
    ]
    path = settings.output or default_checkpoint(settings.storage, study.study_name, [t.number for t in chosen])
    check_writable(path, overwrite=settings.overwrite)
    device = torch.device(resolve_device(settings.device))
    precision = resolve_precision(settings.precision, device.type)

    data = load_dataset(protocol.ref, settings.data_dir, log, protocol.data_fingerprint, tick)
    check_same_data(study.study_name, protocol.data_fingerprint, data)
    which = (
        f"trial {leader.number}"
        if len(chosen) == 1
        else f"the top {len(chosen)} trials ({', '.join(str(t.number) for t in chosen)})"
    )
    started = time.perf_counter()
    if asked.searched:
        log(f"Taking {which} of study {study.study_name!r}: {recipe.text(epochs)}")
        with tempfile.TemporaryDirectory() as fetched:  # each checked against its sha256 before it is loaded
            members = kept_members(chosen, Path(fetched))
        seeds = [m.seed for m in members]
    else:
        trainer = Trainer.all_training_images(data, device, precision)
        log(
            f"Retraining {which} of study {study.study_name!r} on all {trainer.n_train} training images: "
            f"{recipe.text(epochs)} (seed {', '.join(map(str, seeds))}, device {device}, {precision})"
        )
        members = []
        for k, (trial, seed, hp, mine) in enumerate(zip(chosen, seeds, hyperparams, own)):
            model = None
            for result, trained in trainer.fit_model(hp, epochs, seed, mine.style()):
                on_epoch(replace(result, epoch=k * epochs + result.epoch), epochs * len(chosen))  # one bar for all K
                model = trained
            members.append(ckpt.Member(trial.number, seed, hp, model))
    train_seconds = time.perf_counter() - started
    if data.n_test_images:
        scores, eval_seconds = score_test_set(Ensemble([m.model for m in members]), data, device)
    else:
        scores, eval_seconds = None, 0.0
        log(
            f"No test set: {data.folder if data.ref.source is None else data.ref.source} has no test images, so "
            "there is no test accuracy; add test/<class>/ images to score the model"
        )
    ran = Evaluation(
        path,
        scores,
        data.n_test_images,
        members[0].hyperparams,
        study.study_name,
        leader.number,
        epochs,
        seeds[0],
        train_seconds,
        eval_seconds,
        leader.value,
        members=[m.as_meta() for m in members],
        recipe=recipe.as_dict(),
        since_first_trial_s=_since_first_trial(study),
        classes=data.classes,
        dataset=data.ref.short,
    )
    meta = {**_meta(ran, protocol, data), "device": str(device), "precision": precision}
    ckpt.save(path, members, meta, data.classes)
    folder = artifact_folder(settings.storage, settings.artifacts)
    try:
        kept = keep(study, path, folder) if folder is not None else {}
    except OSError as exc:  # a full disk, a read-only folder: one line, as for the database
        raise file_failure(exc, folder, f"keep {path.name} in") from None
    if folder is None:
        log(
            "The final model is not kept with the study (a server database): pass --artifacts DIR, a folder every "
            "machine of the study reaches, to keep it there"
        )
    record_retrain(
        study,
        leader.number,
        {
            "test_accuracy": scores and scores.accuracy,
            "test_ci95": ran.ci95,
            "test_loss": scores and scores.loss,
            "checkpoint": str(path.resolve()),
            "epochs": epochs,
            "seed": seeds[0],
            "members": [m.trial for m in members],
            "recipe": recipe.as_dict(),
            "train_seconds": train_seconds,
            "since_first_trial_s": ran.since_first_trial_s,
            "created": meta["created"],
            **kept,
        },
    )
    ran.kept_at = kept_at(kept)
    return ran


def _since_first_trial(study: optuna.Study) -> float | None:
    """Seconds from the start of the study's first trial to now (the finished model)."""
    starts = [t.datetime_start for t in study.get_trials(deepcopy=False) if t.datetime_start is not None]
    # Optuna stores naive local times (datetime.now()); compare with the same clock
    return (datetime.now() - min(starts)).total_seconds() if starts else None


def _meta(ran: Evaluation, protocol: StudyProtocol, data: Images) -> dict[str, Any]:
    """What a checkpoint records beside its weights: enough to rebuild and re-score it alone."""
    s = ran.scores
    return {
        "hyperparams": ran.hyperparams.as_dict(),
        "protocol": protocol.to_attr(),
        "metrics": {
            "test_accuracy": s and s.accuracy,
            "test_loss": s and s.loss,
            "per_class_accuracy": s and s.per_class,
            "confusion": s and s.confusion,
            "train_seconds": ran.train_seconds,
            "val_accuracy": ran.val_accuracy,
        },
        "data_md5": dict(data.md5),
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "study": ran.study,
        "trial": ran.trial,
        "epochs": ran.epochs,
        "seed": ran.seed,
        "recipe": ran.recipe,
        "since_first_trial_s": ran.since_first_trial_s,
    }
