"""Optuna's RDB heartbeat settings (``--heartbeat``, ``--grace``), checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what a storage lists for each study (get_all_studies)
    pass
from cnn_tune.errors import UsageError


@dataclass(frozen=True)
class Heartbeat:
    """Optuna's RDB heartbeat: a RUNNING trial whose worker has not beaten for ``grace_s`` is
    failed by the next live worker (before its next trial) and re-queued with the same
    parameters, at most ``max_retry`` times."""

    interval_s: int = 10
    grace_s: int = 60
    max_retry: int = 2

    def check(self) -> "Heartbeat":
        if self.interval_s < 1:
            raise UsageError("--heartbeat must be at least 1 second", hint="e.g. --heartbeat 10")
        if self.grace_s <= self.interval_s:
            raise UsageError(
                f"--grace ({self.grace_s}s) must be longer than --heartbeat ({self.interval_s}s), "
                "or live trials would be failed between two beats",
                hint=f"e.g. --grace {max(2 * self.interval_s, 2)}",
            )
        return self
