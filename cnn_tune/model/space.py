"""The search space of the seed article, declared once, and the record each trial trains with.

The space is the :class:`Hyperparams` dataclass itself: every field carries its Optuna
distribution and a short label in its metadata (:func:`param`). Names, bounds, sampling
(:func:`suggest`), rebuilding from stored params (:meth:`Hyperparams.from_params`), the short
text of a trial line (:func:`short_text`) and the default contour pair all derive from it, so
a second search space is one new dataclass declared the same way.

The model is always built from a :class:`Hyperparams` record, never from a trial, so any
trial in the database can be rebuilt from its stored ``params`` alone (see ``retrain``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, TypeVar

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

# Bump when a parameter name, range or step changes: trials from different spaces must
# not be mixed in one study, so the version is part of the study's protocol.
SEARCH_SPACE_VERSION = 1

OPTIMIZERS = ("Adam", "Adadelta", "Adagrad")


@dataclass(frozen=True)
class Spec:
    """How one parameter is searched and shown."""

    distribution: BaseDistribution
    label: str  # short name in one-line trial summaries, e.g. ``lr``
    fmt: str = ""  # format spec for the short summary, e.g. ``.1e``
    contour: bool = False  # one of the two parameters `plot contour` draws by default


def param(default: Any, distribution: BaseDistribution, label: str, fmt: str = "", contour: bool = False) -> Any:
    """A dataclass field that is also a search dimension."""
    return field(default=default, metadata={"spec": Spec(distribution, label, fmt, contour)})


@dataclass(frozen=True)
class Hyperparams:
    """What one trial trains with. Field names are the Optuna parameter names; defaults are a
    known-good configuration (the article's)."""

    dropout_rate: float = param(0.2, FloatDistribution(0.0, 0.5, step=0.1), "drop", ".1f")  # Dropout2d after conv 2
    fc2_input_dim: int = param(128, IntDistribution(32, 128, step=32), "fc")  # hidden fully connected width
    dropout_rate2: float = param(0.1, FloatDistribution(0.0, 0.3, step=0.1), "drop2", ".1f")  # after the hidden fc
    optimizer: str = param("Adam", CategoricalDistribution(list(OPTIMIZERS)), "")
    lr: float = param(1e-3, FloatDistribution(1e-5, 1e-1, log=True), "lr", ".1e", contour=True)
    batch_size: int = param(128, IntDistribution(64, 256, step=64), "bs", contour=True)

    def __post_init__(self) -> None:
        check_values(type(self), self.as_dict())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> "Hyperparams":
        """Rebuild from a trial's stored ``params`` (or any mapping with these keys)."""
        return from_params(cls, params)


Space = TypeVar("Space")


def specs(space: type) -> dict[str, Spec]:
    """Parameter name → its :class:`Spec`, in declaration order (the order trials suggest them)."""
    return {f.name: f.metadata["spec"] for f in fields(space)}


def distributions(space: type) -> dict[str, BaseDistribution]:
    return {name: spec.distribution for name, spec in specs(space).items()}


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
            allowed = (", ".join(map(str, dist.choices)) if isinstance(dist, CategoricalDistribution)
                       else f"{dist.low}–{dist.high}")
            raise ValueError(f"{name} must be in {allowed}, not {values[name]!r}")


def from_params(space: type[Space], params: Mapping[str, Any]) -> Space:
    """An instance of ``space`` from stored params, each converted to its field's type."""
    dists = distributions(space)
    missing = sorted(set(dists) - set(params))
    if missing:
        raise ValueError(f"parameters missing: {', '.join(missing)}")
    kinds = {FloatDistribution: float, IntDistribution: int, CategoricalDistribution: lambda v: v}
    try:
        values = {name: kinds[type(dist)](params[name]) for name, dist in dists.items()}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"a parameter has the wrong type: {exc}") from None
    return space(**values)


def suggest(trial: optuna.Trial, space: type[Space] = Hyperparams) -> Space:  # type: ignore[assignment]
    """Sample one configuration of ``space`` (the seed article's ranges and names by default)."""
    return from_params(space, {name: _suggest(trial, name, dist) for name, dist in distributions(space).items()})


def _suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, list(dist.choices))
    raise TypeError(f"unsupported distribution for {name}: {type(dist).__name__}")


def short_text(params: Mapping[str, Any], space: type = Hyperparams) -> str:
    """The parameters in one short string, e.g. ``drop=0.2 fc=96 drop2=0.1 Adam lr=1.2e-03 bs=128``."""
    parts = []
    for name, spec in specs(space).items():
        if name in params:
            value = format(params[name], spec.fmt)
            parts.append(f"{spec.label}={value}" if spec.label else value)
    return " ".join(parts)
