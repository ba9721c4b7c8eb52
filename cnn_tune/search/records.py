"""What the search hands over, torch-free so that the views rendering it do not load torch:
the frozen :class:`Plan` every worker runs (and each worker's sampler and pruner from it),
:class:`OptimizeResult`, and ``confirm``'s statistics
(:class:`Confirmed`, Welch's t-test, the :class:`Verdict`) with :class:`ConfirmResult`."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from cnn_tune.search.samplers import derive_seed, make_pruner, make_sampler
from cnn_tune.storage.heartbeat import Heartbeat
from cnn_tune.storage.patience import SearchStatus
from cnn_tune.storage.protocol import (
    StudyProtocol,
)


@dataclass
class OptimizeResult:
    """What `optimize` hands over: the trials finished in this run, the study's best, why it
    stopped and where the search stands."""

    study_name: str
    storage: str
    resumed: bool
    protocol: StudyProtocol
    trials: list[FrozenTrial] = field(default_factory=list)  # finished in this run
    best: FrozenTrial | None = None  # of the whole study
    interrupted: bool = False
    seconds: float = 0.0
    workers: int = 1
    capped: bool = False  # stopped early because the study reached --max-trials
    stop_signal: int | None = None  # what stopped it (SIGINT, SIGTERM, SIGHUP), when interrupted
    patience: int = 0
    status: SearchStatus | None = None  # where the whole study stands at the end
    plateaued: bool = False  # --patience stopped it: the study's last trials gained nothing beyond the noise
    refused: bool = False  # nothing run: the study had plateaued before this command (under --patience)

    def count(self, state: TrialState) -> int:
        return sum(t.state == state for t in self.trials)


@dataclass
class Confirmed:
    """One configuration's accuracies: the original run first, then the confirm runs."""

    trial: int
    params: dict[str, Any]
    values: list[float]
    seeds: list[int]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / self.n

    @property
    def std(self) -> float | None:
        if self.n < 2:
            return None
        return math.sqrt(sum((v - self.mean) ** 2 for v in self.values) / (self.n - 1))

    @property
    def ci95(self) -> tuple[float, float] | None:
        """Student's t interval for the mean (the runs' noise is assumed roughly normal)."""
        if self.std is None:
            return None
        from scipy import stats

        half = stats.t.ppf(0.975, self.n - 1) * self.std / math.sqrt(self.n)
        return max(0.0, self.mean - half), min(1.0, self.mean + half)  # an accuracy stays in [0, 1]

    def as_attr(self) -> dict[str, Any]:
        return {
            "values": self.values,
            "seeds": self.seeds,
            "n": self.n,
            "mean": self.mean,
            "std": self.std,
            "ci95": list(self.ci95) if self.ci95 else None,
            "params": self.params,
        }


@dataclass
class Verdict:
    """Whether `confirm`'s leader is told apart from the runner-up: Welch's p-value and the
    sentence saying so."""

    leader: int
    runner_up: int | None
    p_value: float | None  # Welch's t-test, two-sided
    sentence: str


@dataclass
class ConfirmResult:
    """What `confirm` hands over: the confirmed configurations ranked by mean, the verdict on the
    first two, the runs made now (None when all were done before) and notes."""

    study: str
    ranked: list[Confirmed]
    verdict: Verdict
    runs: OptimizeResult | None  # None when every run was already done
    notes: list[str]


def welch(a: Confirmed, b: Confirmed) -> float | None:
    """Two-sided p-value of Welch's t-test on two sets of accuracies (None if undefined)."""
    if a.n < 2 or b.n < 2 or (a.std == 0 and b.std == 0):
        return None
    from scipy import stats

    with warnings.catch_warnings():
        # accuracies of a few runs on the same images can agree to the last digit: scipy warns
        # of precision loss, and the p-value it still returns is what the verdict should see
        warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        return float(stats.ttest_ind(a.values, b.values, equal_var=False).pvalue)


def verdict(ranked: list[Confirmed]) -> Verdict:
    leader = ranked[0]
    if len(ranked) < 2:
        return Verdict(leader.trial, None, None, f"Only trial {leader.trial} was confirmed: nothing to compare.")
    second = ranked[1]
    p = welch(leader, second)
    gap = 100 * (leader.mean - second.mean)
    head = (
        f"Trial {leader.trial} leads trial {second.trial} by {gap:.2f} points of mean validation accuracy "
        f"({leader.n} and {second.n} runs)"
    )
    if p is None:
        return Verdict(leader.trial, second.trial, None, head + "; too few runs for Welch's t-test.")
    judged = (
        "distinguishable at the 5% level"
        if p < 0.05
        else "not distinguishable at the 5% level: the difference may be seed noise"
    )
    return Verdict(leader.trial, second.trial, p, f"{head}; Welch's t-test p = {p:.3f}: {judged}.")


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs to run its share of the trials; the same in every worker."""

    study: str
    url: str
    protocol: StudyProtocol
    resumed: bool
    trials_before: int  # trials in the study when this command started (seeds the sampler)
    trials: int  # to run in this invocation, all workers together
    workers: int
    threads: int | None  # per worker; None: torch's default (one worker, not asked)
    timeout: float | None
    seed: int | None
    sampler: str
    pruner: str
    max_trials: int | None
    heartbeat: Heartbeat
    device: str  # resolved: "cpu" or "cuda"
    precision: str  # resolved: "fp32" or "bf16"
    data_folder: Path
    warm_start: bool = False
    enqueued_only: bool = False  # run only trials waiting in the study (confirm's runs), never new ones
    cores: int | None = None  # threads were shared out of these cores: workers left take the freed ones
    patience: int = 0  # start no trial once this many in a row gained nothing beyond the noise (0: never)
    max_params: int | None = None  # a trial whose network has more parameters is stopped before it trains
    artifacts: Path | None = None  # the study's artifact store, where complete trials keep their networks

    def sampler_seed(self, worker: int) -> int | None:
        """A stored study keeps no sampler state: seeding each run identically would replay the
        earlier trials' parameters, and identical workers would propose identical ones. Mixing in
        the trials already there and the worker's index avoids both."""
        if self.seed is None:
            return None
        return derive_seed(self.seed, "sampler", self.trials_before, *([worker] if worker else []))

    def search(self, worker: int) -> tuple[optuna.samplers.BaseSampler, optuna.pruners.BasePruner]:
        """This worker's sampler and pruner."""
        p = self.protocol
        pruner = make_pruner(self.pruner, p.epochs, p.n_val, len(p.class_names), p.n_train)
        return make_sampler(self.sampler, self.sampler_seed(worker)), pruner
