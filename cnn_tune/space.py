"""The search space of the seed article, and the hyperparameter record it produces.

The model is always built from a :class:`Hyperparams` record, never from a trial, so any
trial in the database can be rebuilt from its stored ``params`` alone (see ``retrain``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping

import optuna

# Bump when a parameter name, range or step changes: trials from different spaces must
# not be mixed in one study, so the version is part of the study's protocol.
SEARCH_SPACE_VERSION = 1

OPTIMIZERS = ("Adam", "Adadelta", "Adagrad")


@dataclass(frozen=True)
class Hyperparams:
    """What one trial trains with. Field names are the Optuna parameter names."""

    dropout_rate: float = 0.2  # Dropout2d after the second conv block
    fc2_input_dim: int = 128  # width of the hidden fully connected layer
    dropout_rate2: float = 0.1  # Dropout after the hidden fully connected layer
    optimizer: str = "Adam"
    lr: float = 1e-3
    batch_size: int = 128

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}")
        if not 0.0 <= self.dropout_rate < 1.0 or not 0.0 <= self.dropout_rate2 < 1.0:
            raise ValueError("dropout rates must be in [0, 1)")
        if self.fc2_input_dim < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("fc2_input_dim, batch_size and lr must be positive")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "Hyperparams":
        """Rebuild from a trial's stored ``params`` (or any mapping with these keys)."""
        names = {f.name for f in fields(cls)}
        missing = names - set(params)
        if missing:
            raise ValueError(f"parameters missing: {', '.join(sorted(missing))}")
        return cls(
            dropout_rate=float(params["dropout_rate"]),
            fc2_input_dim=int(params["fc2_input_dim"]),
            dropout_rate2=float(params["dropout_rate2"]),
            optimizer=str(params["optimizer"]),
            lr=float(params["lr"]),
            batch_size=int(params["batch_size"]),
        )


def suggest(trial: optuna.Trial) -> Hyperparams:
    """Sample one configuration: the seed article's ranges and names, unchanged."""
    return Hyperparams(
        dropout_rate=trial.suggest_float("dropout_rate", 0.0, 0.5, step=0.1),
        fc2_input_dim=trial.suggest_int("fc2_input_dim", 32, 128, step=32),
        dropout_rate2=trial.suggest_float("dropout_rate2", 0.0, 0.3, step=0.1),
        optimizer=trial.suggest_categorical("optimizer", list(OPTIMIZERS)),
        lr=trial.suggest_float("lr", 1e-5, 1e-1, log=True),
        batch_size=trial.suggest_int("batch_size", 64, 256, step=64),
    )
