"""The protocol of a study: everything that must be equal for two trials to be comparable.

It is stored on the study as one user attribute when the study is created; every later run
(resume, another worker, ``retrain``) reads it back instead of trusting its own flags.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any, Mapping

from cnn_tune.data.datasets import BUILTIN_CLASSES, MNIST, DatasetRef
from cnn_tune.errors import StorageError

DEFAULT_EPOCHS = 10  # the article's space: the seed article's 10 epochs per trial
# The wide space's trials train the recipe their final model gets, for as long: 20 epochs put its
# warm start at 93.96% test on Fashion-MNIST and 99.67% on MNIST in 2.5 minutes (2 threads), and
# 40 gained nothing measurable on the 2-block net (93.95% against 93.56%, one seed).
EPOCHS_BY_SPACE = {"article": DEFAULT_EPOCHS, "wide": 20}
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
class StudyProtocol:
    """What a study's trials share so that their validation accuracies compare: stored on the
    study when it is created, read back by every later run, `retrain` and `confirm`.
    ``n_train`` and ``n_val`` are the two parts of the 80/20 split (not every training image)."""

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
    # What the images are: a typed reference from the command line to every worker, stored as
    # the two keys ``dataset`` (mnist, fashion-mnist or folder) and ``dataset_source`` (a folder's
    # absolute path). Studies from before data sets other than MNIST lack both: MNIST.
    ref: DatasetRef = DatasetRef()
    classes: tuple[str, ...] | None = None  # a folder's class names, label order; None: the built-in set's
    space: str = "article"  # the search space (model.space.SPACES); studies from before 0.8 searched the article's

    def __post_init__(self) -> None:
        if self.classes is not None and not isinstance(self.classes, tuple):
            object.__setattr__(self, "classes", tuple(self.classes))  # JSON gives a list back

    @property
    def dataset(self) -> str:
        return self.ref.name

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.classes if self.classes is not None else BUILTIN_CLASSES[self.dataset]

    def to_attr(self) -> dict[str, Any]:
        """As stored on the study (JSON): the reference as its two keys, where they always were."""
        stored = asdict(self)
        ref = stored.pop("ref")
        at = list(stored).index("classes")
        items = list(stored.items())
        return dict(items[:at] + [("dataset", ref["name"]), ("dataset_source", ref["source"])] + items[at:])

    @classmethod
    def from_attr(cls, value: Any, study_name: str) -> "StudyProtocol":
        required = {f.name for f in fields(cls) if f.default is MISSING}
        if not isinstance(value, Mapping) or not required <= set(value):
            raise StorageError(
                f"study {study_name!r} has an unreadable cnn-tune protocol", hint="start a new study with --study NAME"
            )
        ref = DatasetRef(value.get("dataset", MNIST), value.get("dataset_source"))
        return cls(**{f.name: value[f.name] for f in fields(cls) if f.name in value}, ref=ref)

    def differences(self, other: "StudyProtocol") -> list[str]:
        """``field: stored → other`` for every field that differs. Where the images were read is
        not what they are: a folder moved elsewhere, same content (same fingerprint), is the
        same study, so of the data set only its kind is compared."""

        def value(protocol: StudyProtocol, name: str) -> Any:
            return protocol.dataset if name == "ref" else getattr(protocol, name)

        return [
            f"{'dataset' if f.name == 'ref' else f.name} {value(self, f.name)!r} (study) vs "
            f"{value(other, f.name)!r} (now)"
            for f in fields(self)
            if value(self, f.name) != value(other, f.name)
        ]
