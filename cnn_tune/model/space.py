"""The search spaces, each declared once as a dataclass, and the record each trial trains with.

A space is a frozen dataclass whose fields carry their Optuna distribution and a short label in
their metadata (:func:`param`). Names, bounds, sampling (:func:`suggest`), rebuilding from stored
params (:func:`from_params`), the short text of a trial line (:func:`short_text`) and the default
contour pair all derive from it. A field without a distribution (:func:`fixed`) is part of the
record but not searched; a field searched only for some data sets (``only_for``) keeps its
default elsewhere (clothes may be mirrored, digits may not).

Two spaces:

- ``article`` (:class:`Hyperparams`): the seed article's — two dropout rates, hidden width,
  optimizer, lr, batch size — trained with a constant lr and no augmentation.
- ``wide`` (:class:`WideHyperparams`): what moves test accuracy on these images (the issue's
  probes and docs/performance.md): conv width and depth, batch norm, weight decay, label
  smoothing, the lr schedule and augmentation. A trial trains with exactly the recipe `retrain`
  uses for it, so the search ranks what the user takes home.

The model is always built from such a record, never from a trial, so any trial in the database
can be rebuilt from its stored ``params`` alone (see ``retrain``). Torch-free.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, TypeVar

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

ARTICLE, WIDE = "article", "wide"
# Bump a space's version when a parameter name, range or step changes: trials from different
# versions must not be mixed in one study, so the version is part of the study's protocol.
SEARCH_SPACE_VERSION = 1  # the article's
VERSIONS = {ARTICLE: SEARCH_SPACE_VERSION, WIDE: 1}

OPTIMIZERS = ("Adam", "Adadelta", "Adagrad")
# The data sets' names (cnn_tune.data.datasets; a test keeps them equal): this module imports no
# other of cnn_tune, so that everything built on the spaces stays within the house's ten layers.
MNIST, FASHION, FOLDER = "mnist", "fashion-mnist", "folder"
TRAINED_SCHEDULES = ("constant", "cosine", "warmup")  # what a Style trains with


@dataclass(frozen=True)
class Style:
    """How a configuration is trained beyond its network and optimizer."""

    schedule: str = "constant"  # "cosine": the lr decays from the trial's to 0 over all steps; "warmup": rises first
    shift: int = 0  # translate each training image by up to this many pixels (zero fill)
    ema: float | None = None  # keep an exponential moving average of the weights with this decay
    flip: bool = False  # mirror each training image left-right with probability 1/2
    erasing: float = 0.0  # blank one random rectangle of an image with this probability (random erasing)
    label_smoothing: float = 0.0  # the cross-entropy's target: 1 - ε on the class, ε spread over all

    def __post_init__(self) -> None:
        if self.schedule not in TRAINED_SCHEDULES:  # a recipe's "auto" is resolved per optimizer first
            raise ValueError(f"a Style trains with a {', '.join(TRAINED_SCHEDULES)} lr, not {self.schedule!r}")


@dataclass(frozen=True)
class Spec:
    """How one parameter is searched and shown."""

    distribution: BaseDistribution
    label: str  # short name in one-line trial summaries, e.g. ``lr``
    fmt: str = ""  # format spec for the short summary, e.g. ``.1e``
    contour: bool = False  # one of the two parameters `plot contour` draws by default
    only_for: frozenset[str] | None = None  # data sets whose trials search it (None: all); elsewhere the default


def param(
    default: Any,
    distribution: BaseDistribution,
    label: str,
    fmt: str = "",
    contour: bool = False,
    only_for: frozenset[str] | None = None,
) -> Any:
    """A dataclass field that is also a search dimension."""
    return field(default=default, metadata={"spec": Spec(distribution, label, fmt, contour, only_for)})


def fixed(default: Any) -> Any:
    """A dataclass field that every trial of the space trains with unchanged (not searched)."""
    return field(default=default)


class Space:
    """What every space's record can say about itself."""

    def __post_init__(self) -> None:
        check_values(type(self), self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    def style(self) -> Style:
        """How the record trains beyond the network and optimizer: the article's plain training."""
        return Style()


@dataclass(frozen=True)
class Hyperparams(Space):
    """What one trial of the article's space trains with. Field names are the Optuna parameter
    names; defaults are a known-good configuration (the article's)."""

    dropout_rate: float = param(0.2, FloatDistribution(0.0, 0.5, step=0.1), "drop", ".1f")  # Dropout2d after conv 2
    fc2_input_dim: int = param(128, IntDistribution(32, 128, step=32), "fc")  # hidden fully connected width
    dropout_rate2: float = param(0.1, FloatDistribution(0.0, 0.3, step=0.1), "drop2", ".1f")  # after the hidden fc
    optimizer: str = param("Adam", CategoricalDistribution(list(OPTIMIZERS)), "")
    lr: float = param(1e-3, FloatDistribution(1e-5, 1e-1, log=True), "lr", ".1e", contour=True)
    batch_size: int = param(128, IntDistribution(64, 256, step=64), "bs", contour=True)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "Hyperparams":
        """Rebuild from a trial's stored ``params`` (or any mapping with these keys)."""
        return from_params(cls, params)


MIRRORED = frozenset({FASHION, FOLDER})  # digits mirrored are other symbols; clothes and a user's images may not be


@dataclass(frozen=True)
class WideHyperparams(Space):
    """What one trial of the wide space trains with: the network (conv blocks of 3×3 conv → max
    pool → batch norm → ReLU, the first ``width`` channels wide, each next one twice as wide), AdamW
    and a cosine or constant lr, and the augmentation and regularisation of its training. The
    defaults are the warm start: measured at 93.96% test on Fashion-MNIST after 20 epochs."""

    width: int = param(32, IntDistribution(16, 48, step=8), "w", contour=True)  # channels of the first block
    blocks: int = param(3, IntDistribution(2, 3), "blocks")  # conv blocks; each halves the image (28 → 14 → 7 → 3)
    batch_norm: bool = param(True, CategoricalDistribution([True, False]), "bn")
    dropout_rate: float = param(0.2, FloatDistribution(0.0, 0.5, step=0.1), "drop", ".1f")  # after the conv blocks
    fc2_input_dim: int = param(128, IntDistribution(64, 256, step=64), "fc")  # hidden fully connected width
    dropout_rate2: float = param(0.1, FloatDistribution(0.0, 0.3, step=0.1), "drop2", ".1f")  # after the hidden fc
    lr: float = param(2e-3, FloatDistribution(5e-4, 1e-2, log=True), "lr", ".1e", contour=True)
    weight_decay: float = param(0.05, FloatDistribution(1e-3, 0.3, log=True), "wd", ".0e")  # AdamW's, decoupled
    label_smoothing: float = param(0.1, FloatDistribution(0.0, 0.2, step=0.05), "ls", ".2f")
    # A constant lr was a choice until measured: it passed the early rungs and could not anneal
    # (92.08% against the warm start's 93.63%, its 20 epochs the study's longest trial).
    schedule: str = param("cosine", CategoricalDistribution(["cosine", "warmup"]), "")
    shift: int = param(0, IntDistribution(0, 2), "shift")  # random translation, pixels
    flip: bool = param(False, CategoricalDistribution([True, False]), "flip", only_for=MIRRORED)
    erasing: float = param(0.25, FloatDistribution(0.0, 0.5, step=0.25), "erase", ".2f")  # random erasing's probability
    optimizer: str = fixed("AdamW")
    batch_size: int = fixed(128)  # batch size moves throughput, not accuracy (Google's tuning playbook)

    def style(self) -> Style:
        return Style(
            schedule=self.schedule,
            shift=self.shift,
            flip=self.flip,
            erasing=self.erasing,
            label_smoothing=self.label_smoothing,
        )

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "WideHyperparams":
        return from_params(cls, params)


SPACES: dict[str, type[Space]] = {ARTICLE: Hyperparams, WIDE: WideHyperparams}
# The warm start per space and data set: the defaults, with what suits the images. Digits are
# shifted by up to 2 pixels (measured +0.13 points on MNIST); clothes are mirrored, not shifted.
WARM_STARTS: dict[str, dict[str, dict[str, Any]]] = {
    WIDE: {MNIST: {"shift": 2}, FASHION: {"flip": True}, FOLDER: {"flip": True}}
}

S = TypeVar("S")


def warm_start(space: str, dataset: str) -> dict[str, Any]:
    """The warm-start trial's params for ``space`` on ``dataset`` (only the searched ones)."""
    record = SPACES[space](**WARM_STARTS.get(space, {}).get(dataset, {}))
    return {name: value for name, value in record.as_dict().items() if name in distributions(SPACES[space], dataset)}


def specs(space: type, dataset: str | None = None) -> dict[str, Spec]:
    """Parameter name → its :class:`Spec`, in declaration order (the order trials suggest them);
    with ``dataset``, only those searched on it."""
    found = {f.name: f.metadata["spec"] for f in fields(space) if "spec" in f.metadata}
    return {
        name: spec
        for name, spec in found.items()
        if dataset is None or spec.only_for is None or dataset in spec.only_for
    }


def distributions(space: type, dataset: str | None = None) -> dict[str, BaseDistribution]:
    return {name: spec.distribution for name, spec in specs(space, dataset).items()}


def contour_default(space: type = Hyperparams) -> list[str]:
    return [name for name, spec in specs(space).items() if spec.contour]


def _contains(dist: BaseDistribution, value: Any) -> bool:
    if isinstance(dist, CategoricalDistribution):
        return value in dist.choices
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    slack = 1e-9 * max(1.0, abs(dist.high))  # float steps: 0.30000000000000004 is 0.3
    return dist.low - slack <= value <= dist.high + slack


def check_values(space: type, values: Mapping[str, Any]) -> None:
    """ValueError naming the first parameter outside its declared distribution."""
    for name, dist in distributions(space).items():
        if not _contains(dist, values[name]):
            allowed = (
                ", ".join(map(str, dist.choices))
                if isinstance(dist, CategoricalDistribution)
                else f"{dist.low}–{dist.high}"
            )
            raise ValueError(f"{name} must be in {allowed}, not {values[name]!r}")


def from_params(space: type[S], params: Mapping[str, Any]) -> S:
    """An instance of ``space`` from stored params, each converted to its field's type. Every
    parameter searched on all data sets must be there; one searched on some only takes its
    default where it is absent."""
    every = specs(space)
    missing = sorted(name for name, spec in every.items() if spec.only_for is None and name not in params)
    if missing:
        raise ValueError(f"parameters missing: {', '.join(missing)}")
    kinds = {FloatDistribution: float, IntDistribution: int, CategoricalDistribution: lambda v: v}
    try:
        values = {name: kinds[type(spec.distribution)](params[name]) for name, spec in every.items() if name in params}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a parameter has the wrong type: {exc}") from None
    return space(**values)


def suggest(trial: optuna.Trial, space: type[S] = Hyperparams, dataset: str | None = None) -> S:  # type: ignore[assignment]
    """Sample one configuration of ``space`` (the seed article's ranges and names by default),
    searching only the parameters that apply to ``dataset``."""
    return from_params(
        space, {name: _suggest(trial, name, dist) for name, dist in distributions(space, dataset).items()}
    )


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    raise TypeError(f"unsupported distribution for {name}: {type(dist).__name__}")


def space_of(params: Mapping[str, Any]) -> type[Space]:
    """The space whose every always-searched parameter is in ``params`` (the wide space's
    include names the article's lacks): how a stored trial's params are read without its study."""
    wide = [name for name, spec in specs(WideHyperparams).items() if spec.only_for is None]
    return WideHyperparams if all(name in params for name in wide) else Hyperparams


def short_text(params: Mapping[str, Any], space: type | None = None) -> str:
    """The parameters in one short string, e.g. ``drop=0.2 fc=96 drop2=0.1 Adam lr=1.2e-03 bs=128``."""
    parts = []
    for name, spec in specs(space or space_of(params)).items():
        if name in params:
            value = format(params[name], spec.fmt)
            parts.append(f"{spec.label}={value}" if spec.label else value)
    return " ".join(parts)
