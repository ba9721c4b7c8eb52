"""The one place tests run cnn-tune in a real process and wait on what it does.

Every wait is on a condition with a deadline: it returns as soon as the condition holds, fails
with what it waited for when time runs out, and fails at once when the process it watches ends
first. No test sleeps to let something happen.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

import optuna
from optuna.trial import TrialState

T = TypeVar("T")
POLL_S = 0.05


def cli_env(data: Path, url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a cnn-tune process: the test's data and database, one-line errors,
    and no terminal size inherited from the test runner."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update({"CNN_TUNE_DATA_DIR": str(data), "CNN_TUNE_DEBUG": ""}, **extra)
    if url:
        env["CNN_TUNE_STORAGE"] = url
    return env


def cnn_tune(*args: str) -> list[str]:
    """The command line of ``cnn-tune ARGS`` in this interpreter."""
    return [sys.executable, "-m", "cnn_tune", *args]


def run_cli(data: Path, url: str, *args: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
    """Run ``cnn-tune ARGS`` to its end; its output as text."""
    return subprocess.run(cnn_tune(*args), env=cli_env(data, url, **extra), capture_output=True, text=True,
                          timeout=timeout)


def stored_trials(url: str, name: str = "mnist-cnn") -> list[optuna.trial.FrozenTrial]:
    """The study's trials, or [] while its database or the study itself is still being created
    (a SQLite file that is not there yet is not created by looking)."""
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return []
    try:
        return optuna.load_study(study_name=name, storage=url).get_trials()
    except Exception:  # noqa: BLE001 - not there yet, or the schema is being written
        return []


def wait_for(condition: Callable[[], T], timeout: float, proc: subprocess.Popen | None = None,
             what: str = "the condition") -> T:
    """``condition()``'s first truthy value; fails when ``proc`` ends first or after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out = proc.communicate()[1] if proc.stderr is not None else ""
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}: {out}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(POLL_S)


def wait_for_complete(url: str, n: int, proc: subprocess.Popen | None = None, timeout: float = 180,
                      name: str = "mnist-cnn") -> int:
    """Until study ``name`` has ``n`` complete trials; the count seen."""
    return wait_for(lambda: (c := sum(t.state == TrialState.COMPLETE for t in stored_trials(url, name))) >= n and c,
                    timeout, proc, f"{n} complete trial(s)")


def wait_training(url: str, proc: subprocess.Popen, n: int = 1, timeout: float = 180) -> None:
    """Until ``n`` trials are RUNNING with at least one epoch stored (mid-trial)."""
    wait_for(lambda: sum(t.state == TrialState.RUNNING and bool(t.intermediate_values)
                         for t in stored_trials(url)) >= n, timeout, proc, f"{n} trial(s) training")
