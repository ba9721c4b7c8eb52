"""`retrain` and `evaluate`: from a trial in the database to a tested model on disk.

`retrain` rebuilds a trial's hyperparameters from the study alone, trains them on all
training images (train + validation), scores the held-out test set, writes a checkpoint and
records the result on the study. `evaluate` needs only the checkpoint (and the test set).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from . import __version__
from . import checkpoint as ckpt
from . import study as studies
from .data import FILES, Mnist, load_mnist
from .errors import DataError, UsageError
from .files import check_writable
from .inspection import counts_text, state_counts
from .protocol import Protocol
from .space import Hyperparams
from .training import EpochResult, Scores, Trainer, resolve_device, resolve_precision, score, to_inputs

Log = Callable[[str], None]


@dataclass
class RetrainSettings:
    study: str = studies.DEFAULT_STUDY
    storage: str = studies.DEFAULT_STORAGE
    trial: int | None = None  # None: the best complete trial
    epochs: int | None = None  # None: the study's
    seed: int | None = None  # None: the trial's own training seed
    device: str = "auto"
    precision: str = "auto"
    output: Path | None = None  # None: <study>-trial<N>.pt beside the database
    overwrite: bool = False
    data_dir: Path | None = None


@dataclass
class Evaluation:
    """What `retrain` and `evaluate` print; JSON-ready through :meth:`as_dict`."""

    checkpoint: Path
    scores: Scores
    n_test: int
    hyperparams: Hyperparams
    study: str
    trial: int
    epochs: int
    seed: int
    train_seconds: float | None = None  # retrain only
    eval_seconds: float = 0.0
    val_accuracy: float | None = None  # the trial's, for comparison
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"checkpoint": str(self.checkpoint), "study": self.study, "trial": self.trial,
                "epochs": self.epochs, "seed": self.seed, "hyperparams": self.hyperparams.as_dict(),
                "test_accuracy": self.scores.accuracy, "test_loss": self.scores.loss, "n_test": self.n_test,
                "per_class_accuracy": self.scores.per_class, "confusion": self.scores.confusion,
                "val_accuracy": self.val_accuracy, "train_seconds": self.train_seconds,
                "eval_seconds": self.eval_seconds}


def pick_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """The trial to retrain: ``number``; else the confirmed leader once `cnn-tune confirm` has
    run (the best mean over several seeds); else the best complete one."""
    trials = study.get_trials(deepcopy=False)
    if number is None:
        if not any(t.state == TrialState.COMPLETE for t in trials):
            raise UsageError(f"study {study.study_name!r} has no complete trial to retrain "
                             f"({counts_text(state_counts(trials))})",
                             hint="run `cnn-tune optimize` first")
        leader = studies.confirmed_leader(study)
        return trials[leader] if leader is not None and trials[leader].number == leader else study.best_trial
    match = [t for t in trials if t.number == number]
    if not match:
        raise UsageError(f"study {study.study_name!r} has no trial {number} (trials 0–{len(trials) - 1})"
                         if trials else f"study {study.study_name!r} has no trials",
                         hint="`cnn-tune trials --state complete` lists the ones you can retrain")
    trial = match[0]
    if trial.state != TrialState.COMPLETE:
        where = f" after {trial.user_attrs.get('epochs_run', len(trial.intermediate_values))} epoch(s)" \
            if trial.state == TrialState.PRUNED else ""
        raise UsageError(f"trial {number} of study {study.study_name!r} is {trial.state.name.lower()}{where}, "
                         "not complete", hint="pick another with `cnn-tune trials --state complete`, or omit --trial "
                                              "for the best")
    return trial


def default_checkpoint(url: str, study_name: str, trial: int) -> Path:
    return studies.results_folder(url) / f"{study_name}-trial{trial}.pt"


def _versions() -> dict[str, str]:
    # str(): torch.__version__ is a TorchVersion, which a weights-only load would refuse
    return {"torch": str(torch.__version__), "optuna": str(optuna.__version__), "cnn_tune": __version__,
            "numpy": str(np.__version__)}


def retrain(settings: RetrainSettings, on_epoch: Callable[[EpochResult, int], None], log: Log) -> Evaluation:
    """Validate everything cheap first (study, trial, output path); then read data and train."""
    study = studies.read_study(settings.storage, settings.study)
    trial = pick_trial(study, settings.trial)
    confirmed = studies.confirm_records(study).get(trial.number)
    if settings.trial is None and confirmed is not None:
        log(f"Trial {trial.number} is the confirmed leader: mean validation accuracy {100 * confirmed['mean']:.2f}% "
            f"over {confirmed['n']} runs (`cnn-tune confirm`); pass --trial N for another")
    protocol = studies.stored_protocol(study)
    hp = Hyperparams.from_params(trial.params)
    epochs = settings.epochs or protocol.epochs
    seed = settings.seed if settings.seed is not None else int(trial.user_attrs.get("seed", 0))
    path = settings.output or default_checkpoint(settings.storage, study.study_name, trial.number)
    check_writable(path, overwrite=settings.overwrite)
    device = resolve_device(settings.device)
    precision = resolve_precision(settings.precision, device)

    data = load_mnist(settings.data_dir, log)
    if data.fingerprint != protocol.data_fingerprint:
        raise DataError(f"the MNIST files in {data.folder} differ from those study {study.study_name!r} was tuned on",
                        hint="point --data-dir at the study's data")
    trainer = Trainer.all_training_images(data, device, precision)
    log(f"Retraining trial {trial.number} of study {study.study_name!r} on all {trainer.n_train} training images "
        f"for {epochs} epochs (seed {seed}, device {device}, {precision})")
    started = time.perf_counter()
    model = None
    for result, trained in trainer.fit_model(hp, epochs, seed):
        on_epoch(result, epochs)
        model = trained
    train_seconds = time.perf_counter() - started
    scores, eval_seconds = _score(model, data, device)
    ran = Evaluation(path, scores, len(data.test_labels), hp, study.study_name, trial.number, epochs, seed,
                     train_seconds, eval_seconds, trial.value)
    meta = {**_meta(ran, protocol, data), "device": str(device), "precision": precision}
    ckpt.save(path, model, meta)
    studies.record_retrain(study, trial.number, {
        "test_accuracy": ran.scores.accuracy, "test_loss": ran.scores.loss, "checkpoint": str(path.resolve()),
        "epochs": epochs, "seed": seed, "created": meta["created"]})
    return ran


def _score(model: torch.nn.Module, data: Mnist, device: torch.device) -> tuple[Scores, float]:
    """The test set's scores, and how long scoring took."""
    started = time.perf_counter()
    scores = score(model, to_inputs(data.test_images, device), data.test_labels.long().to(device))
    return scores, time.perf_counter() - started


def _meta(ran: Evaluation, protocol: Protocol, data: Mnist) -> dict[str, Any]:
    """What a checkpoint records beside its weights: enough to rebuild and re-score it alone."""
    s = ran.scores
    return {"hyperparams": ran.hyperparams.as_dict(), "protocol": protocol.to_attr(),
            "metrics": {"test_accuracy": s.accuracy, "test_loss": s.loss, "per_class_accuracy": s.per_class,
                        "confusion": s.confusion, "train_seconds": ran.train_seconds,
                        "val_accuracy": ran.val_accuracy},
            "data_md5": dict(data.md5), "versions": _versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "study": ran.study, "trial": ran.trial, "epochs": ran.epochs, "seed": ran.seed}


def score_checkpoint(path: Path, data_dir: Path | None, device_name: str, log: Log) -> Evaluation:
    """Score a checkpoint on the test set again; touches no study."""
    loaded = ckpt.load(path)
    device = resolve_device(device_name)
    data = load_mnist(data_dir, log)
    notes = []
    test_files = (FILES["test_images"], FILES["test_labels"])
    if any(loaded.meta["data_md5"].get(f) not in (None, data.md5.get(f)) for f in test_files):
        notes.append(f"the test files in {data.folder} differ from those the checkpoint was scored on")
    scores, seconds = _score(loaded.model.to(device, memory_format=torch.channels_last), data, device)
    meta = loaded.meta
    return Evaluation(path, scores, len(data.test_labels), loaded.hyperparams, meta["study"], meta["trial"],
                      meta["epochs"], meta["seed"], None, seconds, meta["metrics"].get("val_accuracy"), notes)
