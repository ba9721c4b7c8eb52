"""What a final model scores: the :class:`Evaluation` that `retrain` and `evaluate` print, the
test set scored, and a checkpoint scored again or fetched from the study's artifact store
(`evaluate` needs only the checkpoint and its data set; `export` checks itself on the same images)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnn_tune.data.datasets import DatasetRef, Log
from cnn_tune.data.images import Images, make_split
from cnn_tune.data.load import FILES, load_dataset
from cnn_tune.errors import NothingToShow
from cnn_tune.model import checkpoint as ckpt
from cnn_tune.model.device import resolve_device
from cnn_tune.model.space import Space
from cnn_tune.model.training import Scores, score, to_inputs
from cnn_tune.storage.artifacts import fetch, kept_at
from cnn_tune.storage.engine import read_study
from cnn_tune.storage.inspection import final_model
from cnn_tune.storage.protocol import StudyProtocol
from cnn_tune.storage.studies import best_or_none


@dataclass
class Evaluation:
    """What `retrain` and `evaluate` print; JSON-ready through :meth:`as_dict`."""

    checkpoint: Path
    scores: Scores | None  # None: the data set has no test images (a folder without test/)
    n_test: int
    hyperparams: Space
    study: str
    trial: int
    epochs: int
    seed: int
    train_seconds: float | None = None  # retrain only
    eval_seconds: float = 0.0
    val_accuracy: float | None = None  # the trial's, for comparison
    notes: list[str] = field(default_factory=list)
    members: list[dict[str, Any]] = field(default_factory=list)  # [{trial, seed, hyperparams}], best first
    recipe: dict[str, Any] | None = None  # None: a checkpoint from before recipes (plain training)
    since_first_trial_s: float | None = None  # retrain only: study's first trial → finished model
    classes: tuple[str, ...] = ()  # label k's name
    dataset: str = "MNIST"  # what the images are, in a word
    kept_at: str | None = None  # retrain only: STORE/ID of the checkpoint in the study's artifact store

    @property
    def ci95(self) -> float | None:
        """Half-width of the 95% interval of the test accuracy (normal approximation on n images)."""
        return test_ci95(self.scores.accuracy, self.n_test) if self.scores is not None else None

    def as_dict(self) -> dict[str, Any]:
        s = self.scores
        return {
            "checkpoint": str(self.checkpoint),
            "study": self.study,
            "trial": self.trial,
            "epochs": self.epochs,
            "seed": self.seed,
            "hyperparams": self.hyperparams.as_dict(),
            "members": [m["trial"] for m in self.members] or [self.trial],
            "recipe": self.recipe,
            "dataset": self.dataset,
            "classes": list(self.classes),
            "test_accuracy": s and s.accuracy,
            "test_ci95": self.ci95,
            "test_loss": s and s.loss,
            "n_test": self.n_test,
            "per_class_accuracy": s and s.per_class,
            "confusion": s and s.confusion,
            "val_accuracy": self.val_accuracy,
            "train_seconds": self.train_seconds,
            "eval_seconds": self.eval_seconds,
            "since_first_trial_s": self.since_first_trial_s,
            "kept_at": self.kept_at,
        }


def test_ci95(accuracy: float, n: int) -> float:
    """1.96 standard errors of an accuracy measured on n images: ±0.11 points at 99.4% on 10,000."""
    return 1.96 * math.sqrt(max(accuracy * (1 - accuracy), 0.0) / n) if n else float("nan")


def score_test_set(model: torch.nn.Module, data: Images, device: torch.device) -> tuple[Scores, float]:
    """The test set's scores, and how long scoring took."""
    started = time.perf_counter()
    scores = score(model, to_inputs(data.test_images, device), data.test_labels.long().to(device), data.n_classes)
    return scores, time.perf_counter() - started


def kept_checkpoint(storage: str, study: str | None, folder: Path) -> tuple[Path, str]:
    """The study's final model (the trial `retrain` picks by default, else the latest retrained)
    fetched from its artifact store into ``folder`` and checked; and where it was kept."""
    opened = read_study(storage, study)
    best = best_or_none(opened)
    record = final_model(opened, best.number if best is not None else None)  # type: ignore[arg-type]
    if not record:
        raise NothingToShow(f"study {opened.study_name!r} has no final model yet", hint="run `cnn-tune retrain`")
    return fetch(record, folder / Path(record["checkpoint"]).name), kept_at(record) or ""


def checkpoint_data(loaded: ckpt.Checkpoint, data_dir: Path | None, log: Log) -> tuple[Images, DatasetRef | None]:
    """The images a checkpoint was made on (its protocol names them), and their reference."""
    protocol = loaded.meta["protocol"]
    ref = StudyProtocol.from_attr(protocol, str(loaded.meta["study"])).ref if isinstance(protocol, dict) else None
    return load_dataset(ref or DatasetRef(), data_dir, log, protocol.get("data_fingerprint")), ref


def checkpoint_images(loaded: ckpt.Checkpoint, data_dir: Path | None, log: Log) -> tuple[np.ndarray, str]:
    """Images to check an export of ``loaded`` on (N, 28, 28 uint8): its data set's test images,
    else the study's validation images; and which they are."""
    data, _ = checkpoint_data(loaded, data_dir, log)
    if data.n_test_images:
        return data.test_x, "test"
    protocol = StudyProtocol.from_attr(loaded.meta["protocol"], str(loaded.meta["study"]))
    split = make_split(data.n_train_images, protocol.train_limit, protocol.split_seed)
    return data.train_x[split.val.numpy()], "validation"


def score_checkpoint(path: Path, data_dir: Path | None, device_name: str, log: Log) -> Evaluation:
    """Score a checkpoint on the test set again; touches no study."""
    loaded = ckpt.load(path)
    device = torch.device(resolve_device(device_name))
    data, ref = checkpoint_data(loaded, data_dir, log)
    if not data.n_test_images:
        raise NothingToShow(
            f"{ref.source if ref else data.folder} has no test images: nothing to score {path} on",
            hint="add test/<class>/ images to the folder",
        )
    notes = []
    test_files = (FILES["test_images"], FILES["test_labels"])
    if any(loaded.meta["data_md5"].get(f) not in (None, data.md5.get(f)) for f in test_files):
        notes.append(f"the test files in {data.folder} differ from those the checkpoint was scored on")
    scores, seconds = score_test_set(loaded.model.to(device, memory_format=torch.channels_last), data, device)
    meta = loaded.meta
    return Evaluation(
        path,
        scores,
        data.n_test_images,
        loaded.hyperparams,
        meta["study"],
        meta["trial"],
        meta["epochs"],
        meta["seed"],
        None,
        seconds,
        meta["metrics"].get("val_accuracy"),
        notes,
        members=meta["members"],
        recipe=meta.get("recipe"),
        classes=tuple(meta["classes"]),
        dataset=data.ref.short,
    )
