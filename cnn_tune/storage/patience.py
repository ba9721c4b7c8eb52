"""Where a study stands, and ``--patience``: is the search still buying anything?

A trial *gains* when its validation accuracy beats the best so far by more than the noise of
that best: two binomial standard errors of its accuracy on the study's validation images
(``2·sqrt(p(1-p)/n)``: ±0.18 points at 99% on 12,000 images, ±0.52 at 91%). Anything smaller
is what another seed of the same configuration could give. ``--patience N`` starts no new trial
once N finished trials in a row (complete or pruned, in the order they finished, whichever
process ran them) have not gained. Torch-free: the CLI, the views and every worker read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from optuna.trial import FrozenTrial, TrialState

from cnn_tune.storage.protocol import CONFIRM_OF

STOP_ATTR = "cnn_tune.stop"  # study user attribute: why and after which trial the search stopped
NOISE_SES = 2  # standard errors: a gain must exceed this many to count


def noise(accuracy: float, n_val: int) -> float:
    """Two binomial standard errors of ``accuracy`` measured on ``n_val`` images (a fraction).
    An accuracy of 0 or 1 is taken as one image away from it: its own formula would say a
    perfect score on 20 images cannot be matched by chance, which it can."""
    n = max(n_val, 1)
    p = min(max(accuracy, 1 / n), 1 - 1 / n) if n > 1 else 0.5
    return NOISE_SES * math.sqrt(p * (1 - p) / n)


@dataclass(frozen=True)
class SearchStatus:
    """A study's search so far, from its finished trials alone (stored, so any process agrees)."""

    best: int | None  # the best complete trial's number
    best_value: float | None
    noise: float | None  # of the best's accuracy, as a fraction
    since_best: int  # trials finished after the best one
    close: tuple[int, ...]  # complete trials finished after the best, within the noise of it
    last_gain: int | None  # the trial that last beat the best so far by more than its noise
    without_gain: int  # finished trials in a row since then that did not
    last: int | None  # the last finished trial

    def plateaued(self, patience: int) -> bool:
        return patience > 0 and self.last_gain is not None and self.without_gain >= patience

    def noise_text(self) -> str:
        return _points(self.noise)

    def stop_text(self) -> str:
        """``8 trials without a gain beyond ±0.18 points since trial 0``."""
        return _without_gain(self.without_gain, self.noise, self.last_gain)

    def since_text(self) -> str:
        """Where the search stands, in plain words: one line, and a second naming the next
        command when trials came within the noise of the best."""
        if self.best is None:
            return "No complete trial yet."
        n = self.since_best
        if n == 0:
            return f"The best (#{self.best}) is the last trial to finish."
        head = f"{n} trial{'s' if n != 1 else ''} finished since the best"
        if not self.close:
            return f"{head}; none came within {self.noise_text()} of it."
        listed = ", ".join(f"#{t}" for t in self.close[:3]) + (
            f" and {len(self.close) - 3} more" if len(self.close) > 3 else ""
        )
        return (
            f"{head}; {len(self.close)} came within {self.noise_text()} of it: {listed}.\n"
            "`cnn-tune confirm` reruns them with new seeds to tell them apart."
        )

    def record(self, patience: int) -> dict[str, Any]:
        """What is stored on the study when ``--patience`` stops it."""
        return {
            "rule": "patience",
            "patience": patience,
            "without_gain": self.without_gain,
            "noise": self.noise,
            "since_trial": self.last_gain,
            "after_trial": self.last,
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def finished(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Complete and pruned trials of the search (not `confirm`'s repeats), in the order they finished."""
    done = [
        t
        for t in trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        and CONFIRM_OF not in t.user_attrs
        and t.datetime_complete is not None
    ]
    return sorted(done, key=lambda t: (t.datetime_complete, t.number))


def search_status(trials: Iterable[FrozenTrial], n_val: int) -> SearchStatus:
    """Walk the finished trials in order: a trial that beats the best so far by more than the
    best's noise is a gain and restarts the count; any other (pruned ones included) adds one.
    Trials before the first complete one count for nothing: there is nothing to beat yet."""
    order = finished(trials)
    best: FrozenTrial | None = None
    last_gain, without = None, 0
    for trial in order:
        value = trial.value if trial.state == TrialState.COMPLETE else None
        if value is not None and (best is None or value > best.value + noise(best.value, n_val)):
            last_gain, without = trial.number, 0
        elif best is not None:
            without += 1
        if value is not None and (best is None or value > best.value):
            best = trial
    if best is None:
        return SearchStatus(None, None, None, 0, (), None, 0, order[-1].number if order else None)
    margin = noise(best.value, n_val)
    after = order[[t.number for t in order].index(best.number) + 1 :]
    close = tuple(t.number for t in after if t.state == TrialState.COMPLETE and t.value >= best.value - margin)
    return SearchStatus(best.number, best.value, margin, len(after), close, last_gain, without, order[-1].number)


def stop_text(record: dict[str, Any] | None) -> str | None:
    """A stored stop record as people read it (None: the search was never stopped by patience)."""
    if not record:
        return None
    return "stopped: " + _without_gain(record.get("without_gain", 0), record.get("noise"), record.get("since_trial"))


def _without_gain(n: int, margin: float | None, since: int | None) -> str:
    return f"{n} trial{'s' if n != 1 else ''} without a gain beyond {_points(margin)} since trial {since}"


def _points(margin: float | None) -> str:
    """A noise margin (a fraction) in accuracy points: ``±0.18 points``."""
    return f"±{100 * (margin or 0.0):.2f} points"
