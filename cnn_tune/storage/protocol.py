"""The protocol of a study: everything that must be equal for two trials to be comparable.

It is stored on the study as one user attribute when the study is created; every later run
(resume, another worker, ``retrain``) reads it back instead of trusting its own flags.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, Mapping

from cnn_tune.data.datasets import BUILTIN_CLASSES, MNIST, DatasetRef
from cnn_tune.errors import StorageError

DEFAULT_EPOCHS = 10
SPLIT_SEED = 0  # the 80/20 split is fixed for the life of a study
PROTOCOL_ATTR = "cnn_tune.protocol"
# Optuna refuses to change a finished trial, so what `retrain` learns about trial N is kept on
# the study under RETRAIN_ATTR_PREFIX + "N" (one key per trial: concurrent retrains never collide).
RETRAIN_ATTR_PREFIX = "cnn_tune.retrain."
# `confirm` runs live in a companion study named STUDY + CONFIRM_SUFFIX; each run's trial has the
# user attrs CONFIRM_OF (the original trial's number), "repeat" (1..S) and "seed". The summary per
# original trial is stored on the study itself under CONFIRM_ATTR_PREFIX + "N".
CONFIRM_SUFFIX = ".confirm"
CONFIRM_OF = "confirm_of"
CONFIRM_ATTR_PREFIX = "cnn_tune.confirm."
CONFIRM_SUMMARY_ATTR = "cnn_tune.confirm"  # leader, runner-up, and the test between them


@dataclass(frozen=True)
class Protocol:
    epochs: int  # epochs per trial (pruned trials stop earlier)
    train_limit: int | None  # None = all training images
    split_seed: int
    val_fraction: float
    n_train: int
    n_val: int
    data_fingerprint: str  # digest of the training IDX files' md5s
    search_space_version: int
    architecture: str
    objective: str = "val_accuracy"
    direction: str = "maximize"
    # What the images are (studies from before data sets other than MNIST lack these: MNIST).
    dataset: str = MNIST  # mnist, fashion-mnist or folder
    dataset_source: str | None = None  # a folder's absolute path; where it was read, not what it holds
    classes: tuple[str, ...] | None = None  # a folder's class names, label order; None: the built-in set's

    # Where the images were read is not what they are: a folder moved elsewhere, same content
    # (same fingerprint), is the same study.
    _INFORMATIONAL = frozenset({"dataset_source"})

    def __post_init__(self) -> None:
        if self.classes is not None and not isinstance(self.classes, tuple):
            object.__setattr__(self, "classes", tuple(self.classes))  # JSON gives a list back

    @property
    def ref(self) -> DatasetRef:
        return DatasetRef(self.dataset, self.dataset_source)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classes if self.classes is not None else BUILTIN_CLASSES[self.dataset]

    def to_attr(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_attr(cls, value: Any, study_name: str) -> "Protocol":
        required = {f.name for f in fields(cls) if f.default is MISSING}
        if not isinstance(value, Mapping) or not required <= set(value):
            raise StorageError(f"study {study_name!r} has an unreadable cnn-tune protocol",
                               hint="start a new study with --study NAME")
        return cls(**{f.name: value[f.name] for f in fields(cls) if f.name in value})

    def differences(self, other: "Protocol") -> list[str]:
        """``field: stored → other`` for every field that differs (where the data was read excepted)."""
        return [f"{f.name} {getattr(self, f.name)!r} (study) vs {getattr(other, f.name)!r} (now)"
                for f in fields(self)
                if f.name not in self._INFORMATIONAL and getattr(self, f.name) != getattr(other, f.name)]
