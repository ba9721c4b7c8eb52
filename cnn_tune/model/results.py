"""What training reports after each epoch and what `predict` says of an image: plain records,
torch-free, so the parent of ``optimize --workers N`` and the progress views read workers' epochs
without importing torch, and `predict` on an ONNX model never imports it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class EpochResult:
    """One epoch of training: its losses, validation accuracy and wall time."""

    epoch: int  # 1-based, also the step reported to Optuna
    train_loss: float  # mean cross-entropy over the epoch's training images
    val_loss: float | None  # None when training without a validation set (retrain)
    val_accuracy: float | None  # fraction in [0, 1]
    seconds: float  # train + validation wall time of this epoch


@dataclass
class Prediction:
    """One image classified: the class (index and name), its probability and every class's."""

    image: Path
    label: int  # the class's index
    name: str  # the class's name (the digit itself for MNIST)
    probability: float
    probabilities: list[float]  # softmax over the classes, label order

    def as_dict(self) -> dict[str, Any]:
        digit = {"digit": self.label} if self.name == str(self.label) else {}  # as before other data sets
        return {
            "image": str(self.image),
            **digit,
            "label": self.label,
            "class": self.name,
            "probability": self.probability,
            "probabilities": self.probabilities,
        }
