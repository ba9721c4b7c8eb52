"""The one place tests run cnn-tune in a real process and wait on what it does.

Every wait is on a condition with a deadline: it returns as soon as the condition holds, fails
with what it waited for when time runs out, and fails at once when the process it watches ends
first. No test sleeps to let something happen.
"""

from __future__ import annotations

import os
import re
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
    return subprocess.run(
        cnn_tune(*args), env=cli_env(data, url, **extra), capture_output=True, text=True, timeout=timeout
    )


def stored_trials(url: str, name: str = "mnist-cnn") -> list[optuna.trial.FrozenTrial]:
    """The study's trials, or [] while its database or the study itself is still being created
    (a SQLite file that is not there yet is not created by looking)."""
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        return []
    try:
        return optuna.load_study(study_name=name, storage=url).get_trials()
    except Exception:  # noqa: BLE001 - not there yet, or the schema is being written
        return []


def wait_for(
    condition: Callable[[], T], timeout: float, proc: subprocess.Popen | None = None, what: str = "the condition"
) -> T:
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


def wait_for_complete(
    url: str, n: int, proc: subprocess.Popen | None = None, timeout: float = 180, name: str = "mnist-cnn"
) -> int:
    """Until study ``name`` has ``n`` complete trials; the count seen."""
    return wait_for(
        lambda: (c := sum(t.state == TrialState.COMPLETE for t in stored_trials(url, name))) >= n and c,
        timeout,
        proc,
        f"{n} complete trial(s)",
    )


def wait_training(url: str, proc: subprocess.Popen, n: int = 1, timeout: float = 180) -> None:
    """Until ``n`` trials are RUNNING with at least one epoch stored (mid-trial)."""
    wait_for(
        lambda: sum(t.state == TrialState.RUNNING and bool(t.intermediate_values) for t in stored_trials(url)) >= n,
        timeout,
        proc,
        f"{n} trial(s) training",
    )


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]")


def run_in_terminal(
    args: list[str], env: dict[str, str], columns: int, rows: int = 60, timeout: float = 300
) -> tuple[int, list[str]]:
    """Run ``args`` with stdin, stdout and stderr on a pseudo-terminal of ``columns`` × ``rows``
    (what a user's terminal window is); its exit code and the lines it left, colour and cursor
    codes removed, each line as the terminal shows it after carriage returns."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    proc = subprocess.Popen(
        args, stdin=slave, stdout=slave, stderr=slave, env={**env, "TERM": "xterm-256color"}, close_fds=True
    )
    os.close(slave)
    out = bytearray()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], POLL_S)
            if not ready:
                if proc.poll() is not None:  # ended, and nothing more to read
                    break
                continue
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: the terminal's other side closed, the command is done
                break
            if not chunk:
                break
            out += chunk
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    text = ANSI.sub("", out.decode(errors="replace"))
    return code, [line.split("\r")[-1] for line in text.replace("\r\n", "\n").split("\n")]


def chromium() -> str:
    """The headless browser's path; the test is skipped where there is none."""
    import shutil

    import pytest

    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium on this machine (`.ci/run` installs it: apt-get install -y chromium)")


def page_text(browser: str, url: str, profile: Path) -> str:
    """The text of ``url`` as a real headless browser renders it (scripts run), tags removed."""
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = re.sub(r"<style.*?</style>|<script.*?</script>", " ", done.stdout, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


def heartbeats_older_than(db: Path, seconds: float) -> bool:
    """Every running trial's last heartbeat in the SQLite file ``db`` is stale to Optuna's check
    with ``--grace seconds`` (read-only). Optuna compares SQLite's CURRENT_TIMESTAMP, whole
    seconds, with a heartbeat stored in whole seconds: a heartbeat 3.1 s old by the precise clock
    can still be 3 s (not stale) to it — CI saw a confirm run left unredone that way — so this
    waits for ``seconds`` + 1 by the database's precise clock."""
    import sqlite3

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (age,) = conn.execute(
            "SELECT (julianday('now') - julianday(MAX(heartbeat))) * 86400 FROM trial_heartbeats"
        ).fetchone()
    return age is not None and age > seconds + 1
