"""Samplers and pruners by name, as offered on the command line."""

from __future__ import annotations

import hashlib
from importlib.util import find_spec

import optuna

from .errors import DependencyMissing, UsageError

SAMPLERS = ("tpe", "random", "qmc", "gp", "cmaes", "nsgaii")
PRUNERS = ("median", "hyperband", "halving", "none")
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
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()
