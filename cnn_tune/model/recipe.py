"""How `retrain` turns a trial into the model a user takes home: named recipes, torch-free so
the CLI builds its choices without loading torch.

The search keeps the seed article's protocol (10 epochs, constant lr, no augmentation) because
that is what its validation accuracy compares. The final model need not: benchmarks/retrain.py
measured each ingredient by test accuracy and time over several seeds (docs/performance.md),
and ``best`` is what won per minute. ``article`` is the plain retrain — the trial's own
training, once more, on all 60,000 images — one flag away.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

from cnn_tune.errors import UsageError

SCHEDULES = ("auto", "constant", "cosine")
# Adagrad divides each step by the root of the sum of all squared gradients so far: its steps
# already shrink like 1/sqrt(t), and a cosine decay on top starves the retrain. Measured on a
# study's Adagrad winner (benchmarks/retrain.py --params, docs/performance.md): cosine lost
# about 0.1 point to a constant lr, where for Adam it gained 0.11. ``auto`` follows that.
SELF_DECAYING = frozenset({"Adagrad"})
AVERAGES = ("none", "ema")
EMA_DECAY = 0.999  # ≈ the last 1,000 steps (2 epochs at batch 128 on 60,000 images)
MAX_SHIFT = 4  # pixels; a 28×28 digit shifted further starts to lose strokes off the edge
# `best`'s shifts, by data set, measured with benchmarks/retrain.py (docs/performance.md): up to
# 2 pixels gained 0.13 points on MNIST's digits, and lost on Fashion-MNIST's clothes, which fill
# the frame (zero fill cuts a shifted sleeve or bag off). A folder of the user's images is
# resized to fill the frame too, so it is not shifted unless asked (--shift).
SHIFT_BY_DATASET = {"mnist": 2}
MAX_TOP = 10


@dataclass(frozen=True)
class Recipe:
    epochs: int | None  # None: the study's own (the article's 10)
    schedule: str = "constant"  # lr over the retrain: the trial's throughout, cosine decay to 0, or auto
    shift: int | None = 0  # random translation of each training image, up to this many pixels; None: the data's
    average: str = "none"  # "ema": hand over an exponential moving average of the weights
    top: int = 1  # an ensemble of the K best trials (by confirmed mean once `confirm` ran)
    flip: bool = False  # mirror training images left-right at random (clothes, not digits)

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, not {self.epochs}", hint="e.g. --epochs 20")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {self.schedule!r}", hint=f"use {' or '.join(SCHEDULES)}")
        if self.shift is not None and not 0 <= self.shift <= MAX_SHIFT:
            raise UsageError(f"--shift must be 0–{MAX_SHIFT} pixels, not {self.shift}", hint="e.g. --shift 2")
        if self.average not in AVERAGES:
            raise UsageError(f"unknown averaging {self.average!r}", hint=f"use {' or '.join(AVERAGES)}")
        if not 1 <= self.top <= MAX_TOP:
            raise UsageError(f"--top must be 1–{MAX_TOP}, not {self.top}", hint="e.g. --top 3")

    @property
    def ema(self) -> float | None:
        return EMA_DECAY if self.average == "ema" else None

    def schedule_for(self, optimizer: str) -> str:
        """The schedule one member trains with: ``auto`` is cosine, constant for an optimizer
        whose steps already decay."""
        if self.schedule != "auto":
            return self.schedule
        return "constant" if optimizer in SELF_DECAYING else "cosine"

    def resolved(self, optimizers: Iterable[str]) -> "Recipe":
        """This recipe with ``auto`` made concrete — unless the members' optimizers disagree,
        then it stays ``auto`` (each member's schedule follows from its stored optimizer)."""
        schedules = {self.schedule_for(optimizer) for optimizer in optimizers}
        return replace(self, schedule=schedules.pop()) if len(schedules) == 1 else self

    def for_data(self, dataset: str) -> "Recipe":
        """``shift`` None made concrete for the study's data set: :data:`SHIFT_BY_DATASET`."""
        if self.shift is not None:
            return self
        return replace(self, shift=SHIFT_BY_DATASET.get(dataset, 0))

    def with_options(self, **options: Any) -> "Recipe":
        """This recipe with the options the user gave (None: keep the recipe's)."""
        return replace(self, **{k: v for k, v in options.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self, epochs: int) -> str:
        """``20 epochs, cosine lr, shifts ≤2 px`` — what a retrain will do, in a few words."""
        lr = {"cosine": "cosine lr", "constant": "constant lr"}.get(
            self.schedule, f"cosine lr (constant for {', '.join(sorted(SELF_DECAYING))})")
        parts = [f"{epochs} epochs", lr]
        parts += [f"shifts ≤{self.shift} px"] if self.shift else []
        parts += ["shifts as suit the data"] if self.shift is None else []
        parts += ["flips"] if self.flip else []
        parts += ["EMA weights"] if self.average == "ema" else []
        parts += [f"ensemble of {self.top}"] if self.top > 1 else []
        return ", ".join(parts)


RECIPES: dict[str, Recipe] = {
    "best": Recipe(epochs=20, schedule="auto", shift=None),
    "article": Recipe(epochs=None),
}
DEFAULT_RECIPE = "best"
