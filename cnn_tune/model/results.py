"""What training reports after each epoch: a plain record, torch-free, so the parent of
``optimize --workers N`` and the progress views read workers' epochs without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EpochResult:
    epoch: int  # 1-based, also the step reported to Optuna
    train_loss: float  # mean cross-entropy over the epoch's training images
    val_loss: float | None  # None when training without a validation set (retrain)
    val_accuracy: float | None  # fraction in [0, 1]
    seconds: float  # train + validation wall time of this epoch
