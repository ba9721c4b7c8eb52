"""The networks the search kept. A trial of the wide space trains exactly as its final model
would, so when it has trained every epoch its network is worth keeping: it is written as a
one-member checkpoint into the study's artifact store, as an artifact of the trial (uploaded
while the trial runs: Optuna refuses to change a finished one), and the trial's user attribute
``cnn_tune.model`` records its id, store and sha256. `retrain --recipe searched` then hands over
the best of them as an ensemble without training anything more (:func:`kept_members`).
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import FrozenTrial

from cnn_tune import __version__
from cnn_tune.errors import UsageError
from cnn_tune.model import checkpoint as ckpt
from cnn_tune.model.space import Space
from cnn_tune.storage.artifacts import fetch, keep
from cnn_tune.storage.faults import file_failure
from cnn_tune.storage.protocol import StudyProtocol

MODEL_ATTR = "cnn_tune.model"  # a trial's kept network: {artifact_id, artifact_store, sha256}


def versions() -> dict[str, str]:
    """The library versions a checkpoint records."""
    # str(): torch.__version__ is a TorchVersion, which a weights-only load would refuse
    return {
        "torch": str(torch.__version__),
        "optuna": str(optuna.__version__),
        "cnn_tune": __version__,
        "numpy": str(np.__version__),
    }


def keep_trial_model(
    trial: optuna.Trial,
    hp: Space,
    seed: int,
    model: torch.nn.Module,
    value: float,
    protocol: StudyProtocol,
    data_md5: dict[str, str],
    classes: tuple[str, ...],
    folder: Path,
) -> None:
    """Keep the network ``trial`` trained (all its epochs, validation accuracy ``value``)."""
    meta: dict[str, Any] = {
        "hyperparams": hp.as_dict(),
        "protocol": protocol.to_attr(),
        "metrics": {
            "test_accuracy": None,
            "test_loss": None,
            "per_class_accuracy": None,
            "confusion": None,
            "train_seconds": None,
            "val_accuracy": value,
        },
        "data_md5": dict(data_md5),
        "versions": versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "study": trial.study.study_name,
        "trial": trial.number,
        "epochs": protocol.epochs,
        "seed": seed,
        "recipe": {"searched": True, "top": 1},
        "trained_on": f"the study's {protocol.n_train} training images",
    }
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".kept-") as tmp:
            path = Path(tmp) / f"{trial.study.study_name}-trial{trial.number}-searched.pt"
            ckpt.save(path, [ckpt.Member(trial.number, seed, hp, model)], meta, classes)
            record = keep(trial, path, folder)
    except OSError as exc:  # a full disk while the checkpoint is written: one line, nothing kept
        raise file_failure(exc, folder, f"keep trial {trial.number}'s network in") from None
    trial.set_user_attr(MODEL_ATTR, record)


def with_kept_model(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if isinstance(t.user_attrs.get(MODEL_ATTR), dict)]


def kept_members(trials: list[FrozenTrial], folder: Path) -> list[ckpt.Member]:
    """The kept networks of ``trials``, fetched into ``folder`` and checked (sha256) before each
    is loaded."""
    members = []
    for trial in trials:
        record = trial.user_attrs.get(MODEL_ATTR)
        if not isinstance(record, dict):
            raise UsageError(
                f"trial {trial.number} kept no network (a study made before 0.8, a server database "
                "searched without --artifacts, or the article's space)",
                hint="retrain it with --recipe tuned",
            )
        loaded = ckpt.load(fetch(record, folder / f"trial{trial.number}.pt"))
        members.append(ckpt.Member(trial.number, loaded.meta["seed"], loaded.hyperparams, loaded.model.members[0]))
    return members
