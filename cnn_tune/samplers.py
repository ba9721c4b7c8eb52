"""Samplers and pruners by name, as offered on the command line."""

from __future__ import annotations

import hashlib
from importlib.util import find_spec

import optuna

from .errors import DependencyMissing, UsageError

SAMPLERS = ("tpe", "tpe-mv", "random", "qmc", "gp", "cmaes", "nsgaii")
PRUNERS = ("median", "leader", "hyperband", "halving", "none")
# Samplers whose Optuna implementation imports a package we do not depend on.
_SAMPLER_NEEDS = {"qmc": "scipy", "gp": "scipy", "cmaes": "cmaes"}


def derive_seed(seed: int, *parts: object) -> int:
    """A 31-bit seed that depends on ``seed`` and ``parts``: distinct parts, unrelated seeds."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") >> 1


def check_sampler(name: str) -> None:
    if name not in SAMPLERS:
        raise UsageError(f"unknown sampler {name!r}", hint=f"choose one of {', '.join(SAMPLERS)}")
    needed = _SAMPLER_NEEDS.get(name)
    if needed and find_spec(needed) is None:
        raise DependencyMissing(f"sampler {name!r} needs the package {needed}",
                                hint=f"pip install {needed}, or use --sampler tpe")


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    check_sampler(name)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if name == "tpe-mv":
        # Optuna 5's TPE already models the parameters jointly and lies for busy peers by default;
        # spelled out so that no future default changes it. What differs from `tpe`: 5 random
        # startup trials instead of 10.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=5, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "cmaes":  # CMA-ES handles the categorical `optimizer` with its independent sampler
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.NSGAIISampler(seed=seed)


def check_pruner(name: str) -> None:
    if name not in PRUNERS:
        raise UsageError(f"unknown pruner {name!r}", hint=f"choose one of {', '.join(PRUNERS)}")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    check_pruner(name)
    if name == "median":  # the seed article's choice
        return optuna.pruners.MedianPruner()
    if name == "leader":
        return LeaderPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


class LeaderPruner(optuna.pruners.BasePruner):
    """Median pruning, plus two rules that act from the first trial on, when the median pruner
    still waits for its startup trials:

    - a trial whose validation accuracy is below ``floor`` after any epoch is hopeless (a
      configuration near chance after a whole epoch on MNIST does not reach 98.9%);
    - a trial more than ``margin`` below the best complete trial's curve at the same epoch is
      stopped: the leader was already that much better at the same point.

    The final epoch is never pruned (the objective does not ask then)."""

    def __init__(self, floor: float = 0.5, margin: float = 0.02, median_startup: int = 5) -> None:
        self.floor = floor
        self.margin = margin
        self.median = optuna.pruners.MedianPruner(n_startup_trials=median_startup)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        value = trial.intermediate_values[step]
        if value < self.floor:
            return True
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if complete:
            leader = max(complete, key=lambda t: t.value)
            at = leader.intermediate_values.get(step)
            if at is not None and value < at - self.margin:
                return True
        return self.median.prune(study, trial)
