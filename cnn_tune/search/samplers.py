"""Samplers and pruners by name, as offered on the command line."""

from __future__ import annotations

import hashlib
import math
import statistics
from importlib.util import find_spec

import optuna
from optuna.trial import TrialState

from cnn_tune.errors import DependencyMissing, UsageError

SAMPLERS = ("tpe", "tpe-mv", "random", "qmc", "gp", "cmaes", "nsgaii")
PRUNERS = ("median", "leader", "narrowing", "hyperband", "halving", "none")
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
        raise DependencyMissing(
            f"sampler {name!r} needs the package {needed}", hint=f"pip install {needed}, or use --sampler tpe"
        )


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


def hopeless_below(n_classes: int) -> float:
    """The leader pruners' floor: a trial below it after an epoch has learned next to nothing.
    On MNIST's 10 classes it is 50%, 4/9 of the way from chance (10%) to perfect; other class
    counts keep that distance from their own chance level (63% for 3 classes, 45% for 100), so
    a two-class task is not judged by a ten-class yardstick."""
    chance = 1 / max(n_classes, 2)
    return chance + (1 - chance) * 4 / 9


# What a pruning rule may judge, in images seen (epochs × the training images of the split), so
# that 1,000 images and 60,000 are judged alike. Before this many, the leader rules judge nothing:
# 24,000 is half an epoch of MNIST's 48,000-image split, so full data sets are judged after epoch 1
# as before 0.8; 320 images × 2 epochs (3 optimizer steps an epoch) are never judged.
JUDGED_AFTER_IMAGES = 24_000
# Successive halving's first rung: two epochs of the 48,000-image split. Later rungs are ETA times
# further; a rung past the first half of a trial's training is not judged (it is nearly done).
# ETA 2 with one standard error of allowance, replayed on a Fashion-MNIST study's curves (seed
# 500, docs/performance.md): 70 epochs instead of 126, the same final model; ETA 3 with two
# standard errors saved nothing (108).
RUNG_IMAGES = 96_000
ETA = 2
RUNG_NOISE_SES = 1.0
WARM_START_ATTR = "cnn_tune.warm_start"  # the user attribute of the enqueued warm-start trial
OVER_MAX_PARAMS = "cnn_tune.over_max_params"  # user attr of a trial stopped before training for its size


def make_pruner(
    name: str, epochs: int, n_val: int, n_classes: int = 10, n_train: int = 48_000
) -> optuna.pruners.BasePruner:
    """The pruner ``name`` for a study of ``epochs`` epochs on ``n_train`` training images, scored
    on ``n_val`` validation images of ``n_classes`` classes."""
    check_pruner(name)
    if name == "median":  # the seed article's choice
        return optuna.pruners.MedianPruner()
    if name == "leader":
        return LeaderPruner(floor=hopeless_below(n_classes), n_train=n_train)
    if name == "narrowing":
        return NarrowingPruner(n_val, floor=hopeless_below(n_classes), n_train=n_train)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    if name == "halving":
        return HalvingPruner(n_train, n_val, epochs)
    return optuna.pruners.NopPruner()


def _leader(complete: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial:
    return max(complete, key=lambda t: t.value)


class LeaderPruner(optuna.pruners.BasePruner):
    """Median pruning, plus two rules that act from the first trial on, when the median pruner
    still waits for its startup trials:

    - a trial whose validation accuracy is below ``floor`` after any epoch is hopeless (a
      configuration near chance after a whole epoch on MNIST does not reach 98.9%);
    - a trial more than ``margin`` below the best complete trial's curve at the same epoch is
      stopped: the leader was already that much better at the same point.

    The final epoch is never pruned (the objective does not ask then). Subclasses change what
    is compared (:meth:`current`), with what (:meth:`reference`), and by how much the trial may
    trail (:meth:`gap`)."""

    def __init__(
        self, floor: float = 0.5, margin: float = 0.02, median_startup: int = 5, n_train: int = 48_000
    ) -> None:
        self.floor = floor
        self.margin = margin
        self.median = optuna.pruners.MedianPruner(n_startup_trials=median_startup)
        self.n_train = n_train  # images an epoch: a trial is judged once it has seen JUDGED_AFTER_IMAGES

    def judged(self, trial: optuna.trial.FrozenTrial) -> int | None:
        """The epoch to judge ``trial`` at: its last, once it has seen enough images (None: not yet)."""
        step = trial.last_step
        return step if step is not None and step * self.n_train >= JUDGED_AFTER_IMAGES else None

    def hopeless(self, trial: optuna.trial.FrozenTrial, step: int) -> bool:
        """Below the floor — never said of the warm start, the known-good configuration every
        other trial is measured against (on a few hundred images it may start slowly)."""
        return trial.intermediate_values[step] < self.floor and not trial.user_attrs.get(WARM_START_ATTR)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = self.judged(trial)
        if step is None:
            return False
        if self.hopeless(trial, step):
            return True
        reference = self.reference(study, trial, step)
        if reference is not None and self.current(trial, step) < reference - self.gap(step, reference):
            return True
        return self.median.prune(study, trial)

    def current(self, trial: optuna.trial.FrozenTrial, step: int) -> float:
        """What is compared with the reference: the last epoch's validation accuracy."""
        return trial.intermediate_values[step]

    def reference(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, step: int) -> float | None:
        """The best complete trial's validation accuracy after ``step`` epochs (None: none yet)."""
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return _leader(complete).intermediate_values.get(step) if complete else None

    def gap(self, step: int, reference: float) -> float:  # step and reference: the subclass's gap uses them
        return self.margin


class NarrowingPruner(LeaderPruner):
    """:class:`LeaderPruner` with a gap that narrows as the curves settle, curves compared by
    their best epoch so far, and a reference from the first epoch of the study on.

    - After epoch k the trial's best validation accuracy so far is compared with the leader's
      best so far (the best complete trial's; its envelope). A good configuration's curve dips
      now and then (seen: 98.96%, 98.54%, 98.99% at epochs 8-10, the study's winner): its
      best epoch, not its last, says what it can reach.
    - The gap after epoch k is ``margin / k`` (2, 1, 0.67, 0.5 … points), never under
      ``sigmas`` standard errors of the difference of two accuracies measured on the study's
      ``n_val`` validation images: 0.40 points at 98.9% on 12,000 images, 1.35 at 97.5% on
      2,400. A fixed 2 points let trials 2 points behind the leader run to the end (seen: a
      96.8% trial trained all 10 epochs while the leader stood at 98.98%).
    - Before any trial is complete, the best any other trial (running or pruned) reached by
      the same epoch is the reference: ``--workers`` starts trials together, and the one beside
      the warm start used to train all its epochs at whatever accuracy (seen: 84% after 10
      epochs, beside the warm start's 97% after one)."""

    def __init__(
        self,
        n_val: int,
        floor: float = 0.5,
        margin: float = 0.02,
        median_startup: int = 5,
        sigmas: float = 3.0,
        n_train: int = 48_000,
    ) -> None:
        super().__init__(floor, margin, median_startup, n_train)
        self.median_startup = median_startup
        self.n_val = max(1, n_val)
        self.sigmas = sigmas

    def current(self, trial: optuna.trial.FrozenTrial, step: int) -> float:
        return _best_by(trial, step)

    def reference(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, step: int) -> float | None:
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED))
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if complete:
            return _best_by(_leader(complete), step)
        peers = [_best_by(t, step) for t in trials if t.number != trial.number and t.intermediate_values]
        return max((p for p in peers if p is not None), default=None)

    def noise(self, accuracy: float) -> float:
        """``sigmas`` standard errors of the difference of two accuracies near ``accuracy``
        measured on the study's validation images."""
        return self.sigmas * math.sqrt(2 * accuracy * (1 - accuracy) / self.n_val)

    def gap(self, step: int, reference: float) -> float:
        return max(self.margin / step, self.noise(reference))

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        """The leader's rules; then the median rule with the same noise allowance. Without it
        the median of the trials that survived pruning — good ones all — was a bar set by
        noise: on Fashion-MNIST a trial 0.4 points under it after epoch 1 (85.1% against
        85.5%, within 1.4 points of noise on 12,000 images) was stopped, and its curve
        ended level with the study's best (91.11% against 91.12%; benchmarks/pruner_replay.py)."""
        step = self.judged(trial)
        if step is None:
            return False
        if self.hopeless(trial, step):
            return True
        current = self.current(trial, step)
        reference = self.reference(study, trial, step)
        if reference is not None and current < reference - self.gap(step, reference):
            return True
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(complete) < self.median_startup:
            return False
        middle = statistics.median(v for v in (_best_by(t, step) for t in complete) if v is not None)
        return current < middle - self.noise(middle)


def _best_by(trial: optuna.trial.FrozenTrial, step: int) -> float | None:
    """The best validation accuracy ``trial`` reported up to epoch ``step`` (None: none yet)."""
    return max((v for s, v in trial.intermediate_values.items() if s <= step), default=None)


class HalvingPruner(optuna.pruners.BasePruner):
    """Successive halving (asynchronous, as ASHA) with rungs in images seen: a trial is judged
    when it first passes ``RUNG_IMAGES`` × ETA^r images, against every trial that passed the same
    rung (any state), and goes on only if its best validation accuracy so far is among the top
    1/ETA of theirs — less the noise of two accuracies measured on the study's ``n_val``
    validation images (one standard error of their difference: ±0.39 points at 90% on 12,000),
    so that a configuration level with the bar is not stopped by a coin toss. On 48,000 training
    images over 20 epochs the rungs fall after epochs 2, 4 and 8: half the trials stop at each;
    the few that lead train every epoch. A rung past the first half of the training is not
    judged, and a study whose trials see fewer than ``2 × RUNG_IMAGES`` images prunes nothing:
    small data is cheap to train."""

    def __init__(
        self,
        n_train: int,
        n_val: int,
        epochs: int,
        rung_images: int = RUNG_IMAGES,
        eta: int = ETA,
        sigmas: float = RUNG_NOISE_SES,
    ) -> None:
        self.n_train, self.n_val, self.epochs = max(1, n_train), max(1, n_val), epochs
        self.rung_images, self.eta, self.sigmas = rung_images, eta, sigmas

    def rung(self, epoch: int) -> int | None:
        """The rung a trial passes with ``epoch`` (the first epoch at or past it), or None."""
        total = self.epochs * self.n_train
        passed = None
        r = 0
        while self.rung_images * self.eta**r * self.eta <= total:  # the next rung's images still fit the training
            threshold = self.rung_images * self.eta**r
            if (epoch - 1) * self.n_train < threshold <= epoch * self.n_train:
                passed = r
            r += 1
        return passed

    def noise(self, accuracy: float) -> float:
        return self.sigmas * math.sqrt(2 * max(accuracy * (1 - accuracy), 0.0) / self.n_val)

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or step >= self.epochs or self.rung(step) is None:
            return False
        others = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED))
        values = [_best_by(t, step) for t in others if t.number != trial.number and step in t.intermediate_values]
        mine = _best_by(trial, step)
        ranked = sorted([mine, *values], reverse=True)
        bar = ranked[max(1, len(ranked) // self.eta) - 1]  # the lowest of the top 1/ETA (the best, below 2·ETA)
        return mine < bar - self.noise(bar)
