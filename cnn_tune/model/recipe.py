"""How a configuration is trained beyond its network and optimizer (:class:`Style`), and how
`retrain` turns a trial into the model a user takes home (named :class:`Recipe` values).
Torch-free, so the CLI builds its choices without loading torch.

Recipes:

- ``searched``: no training at all — the networks the search itself trained for its complete
  trials (kept with the study, :mod:`cnn_tune.model.kept`), the best ``top`` of them (3 by
  default) as one ensemble. Each trained on the study's train split with its own recipe, for the
  study's epochs: what the search ranked is what is handed over.
- ``tuned``: the trial's own training again, as the search ran it — for a trial of the wide
  space its schedule, augmentation and label smoothing (the search ranked exactly that); for a
  trial of the article's space the article's plain training. The study's epochs.
- ``best``: what benchmarks/retrain.py measured best per minute for the article's space
  (docs/performance.md): 20 epochs, a cosine lr (constant for Adagrad) and, on MNIST, shifts.
- ``article``: the article's plain training — constant lr, no augmentation, the study's epochs.

A study's default is its space's (:data:`DEFAULT_RECIPES`): ``best`` for the article's space,
where the search kept the article's protocol and the final model need not; ``searched`` for the
wide space, where the search already trained its candidates as their final models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from cnn_tune.errors import UsageError
from cnn_tune.model.space import TRAINED_SCHEDULES, Style

SCHEDULES = ("auto", *TRAINED_SCHEDULES)  # auto: cosine, or constant for an optimizer whose steps decay
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
    """A retrain's recipe. ``None`` in a training field: the base's value — the trial's own
    (``tuned``), else the data set's (shifts) or the article's plain training."""

    epochs: int | None  # None: the study's own
    schedule: str | None = "constant"  # the trial's throughout, cosine decay to 0, or auto; None: the trial's
    shift: int | None = 0  # random translation of each training image, up to this many pixels
    average: str = "none"  # "ema": hand over an exponential moving average of the weights
    top: int = 1  # an ensemble of the K best trials (by confirmed mean once `confirm` ran)
    flip: bool | None = False  # mirror training images left-right at random (clothes, not digits)
    erasing: float | None = 0.0  # random erasing's probability
    label_smoothing: float | None = 0.0
    tuned: bool = False  # the base is the trial's own training (its Style), not the article's plain one
    searched: bool = False  # no training: the networks the search kept, as they are

    def __post_init__(self) -> None:
        if self.epochs is not None and self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, not {self.epochs}", hint="e.g. --epochs 20")
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {self.schedule!r}", hint=f"use {', '.join(SCHEDULES)}")
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
            return self.schedule or "constant"
        return "constant" if optimizer in SELF_DECAYING else "cosine"

    def for_member(self, own: Style, optimizer: str, dataset: str) -> "Recipe":
        """Every field made concrete for one member: ``None`` is the trial's own (``own``, its
        Style) for a ``tuned`` recipe, else the data set's shift or the plain training's."""
        base = own if self.tuned else Style(shift=SHIFT_BY_DATASET.get(dataset, 0))
        return replace(
            self,
            schedule=base.schedule if self.schedule is None else self.schedule_for(optimizer),
            **{
                name: getattr(base, name) if getattr(self, name) is None else getattr(self, name)
                for name in ("shift", "flip", "erasing", "label_smoothing")
            },
        )

    def style(self) -> Style:
        """The :class:`Style` of a recipe made concrete by :meth:`for_member`."""
        return Style(
            schedule=self.schedule_for(""),
            shift=self.shift or 0,
            ema=self.ema,
            flip=bool(self.flip),
            erasing=self.erasing or 0.0,
            label_smoothing=self.label_smoothing or 0.0,
        )

    def common(self, members: Iterable["Recipe"]) -> "Recipe":
        """One record of this recipe for K members' concrete ones (:meth:`for_member`): a field
        they disagree on keeps this recipe's value (``auto``; None: each member's own)."""
        members = list(members)
        return replace(
            members[0],
            **{f.name: getattr(self, f.name) for f in fields(Recipe) if len({getattr(m, f.name) for m in members}) > 1},
        )

    def with_options(self, **options: Any) -> "Recipe":
        """This recipe with the options the user gave (None: keep the recipe's)."""
        return replace(self, **{k: v for k, v in options.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def text(self, epochs: int) -> str:
        """``20 epochs, cosine lr, shifts ≤2 px`` — what a retrain will do, in a few words."""
        if self.searched:
            networks = f"the {self.top} best networks" if self.top > 1 else "the network"
            return f"{networks} the search trained ({epochs} epochs each on the train split), not retrained"
        lr = {
            "cosine": "cosine lr",
            "constant": "constant lr",
            "warmup": "warmup then cosine lr",
            None: "each trial's lr schedule",
        }.get(self.schedule, f"cosine lr (constant for {', '.join(sorted(SELF_DECAYING))})")
        parts = [f"{epochs} epochs", lr]
        parts += [f"shifts ≤{self.shift} px"] if self.shift else []
        parts += ["shifts as suit the data"] if self.shift is None and not self.tuned else []
        parts += ["flips"] if self.flip else []
        parts += [f"erasing {self.erasing:.0%}"] if self.erasing else []
        parts += [f"label smoothing {self.label_smoothing:g}"] if self.label_smoothing else []
        mixed = self.tuned and None in (self.shift, self.flip, self.erasing)
        parts += ["each trial's own augmentation"] if mixed else []
        parts += ["EMA weights"] if self.average == "ema" else []
        parts += [f"ensemble of {self.top}"] if self.top > 1 else []
        return ", ".join(parts)


TRAINING = ("epochs", "schedule", "shift", "average", "flip")  # what `searched` has nothing to apply to
TUNED = Recipe(epochs=None, schedule=None, shift=None, flip=None, erasing=None, label_smoothing=None, tuned=True)
RECIPES: dict[str, Recipe] = {
    "searched": replace(TUNED, searched=True, top=3),  # the networks `tuned` training made in the search
    "tuned": TUNED,
    "best": Recipe(epochs=20, schedule="auto", shift=None),
    "article": Recipe(epochs=None),
}
DEFAULT_RECIPES = {"article": "best", "wide": "searched"}  # by search space
DEFAULT_RECIPE = DEFAULT_RECIPES["article"]
