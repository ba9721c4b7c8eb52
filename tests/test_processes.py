"""Processes that behave, with real processes: workers die with their parent, a hang-up stops
cleanly, a closed pipe is no crash, and the live view shows every worker within 80 columns."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import psutil
import pytest
from conftest import api_study, default_sigint, write_mnist
from helpers import cli_env, cnn_tune, stored_trials, wait_for, wait_training
from optuna.trial import TrialState

from cnn_tune.processes.interrupts import PARENT_GONE

LONG = ["--trials", "6", "--epochs", "30", "--pruner", "none", "--device", "cpu", "--seed", "0"]


def _gone(pids: list[int]) -> bool:
    """True when none of ``pids`` runs any more (a zombie has stopped running)."""
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


@pytest.fixture()
def small(tmp_path) -> tuple[Path, str]:
    return write_mnist(tmp_path / "data", n_train=1000), f"sqlite:///{tmp_path / 's.db'}"


# --- the parent dies without a word ----------------------------------------------------------


def test_workers_die_with_a_killed_parent_and_fail_their_trials(small):
    data, url = small
    parent = subprocess.Popen(
        cnn_tune("optimize", "--workers", "2", *LONG),
        env=cli_env(data, url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_training(url, parent, n=2)
        workers = [c.pid for c in psutil.Process(parent.pid).children(recursive=True)]
        assert len(workers) >= 2
        parent.kill()  # SIGKILL: no handler runs, nothing is forwarded
        parent.wait()
        wait_for(lambda: _gone(workers), 10, what=f"exit of the workers {workers} after their parent was killed")
    finally:
        parent.kill()
    trials = stored_trials(url)
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.user_attrs.get("stop_reason") for t in failed] == [PARENT_GONE, PARENT_GONE]
    again = subprocess.run(
        cnn_tune("optimize", "--trials", "1", "--epochs", "30", "--pruner", "none", "--device", "cpu"),
        env=cli_env(data, url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    assert stored_trials(url)[-1].state == TrialState.COMPLETE


def test_a_worker_whose_parent_is_gone_before_it_looks_stops_at_once():
    """The race the sentinel thread covers: the parent died before prctl could take effect."""
    code = """
import os, signal, sys, time
from cnn_tune.processes.interrupts import StopRequest, route_signals
from cnn_tune.processes.lifeline import Lifeline
stop_request = StopRequest(parent=os.getppid() + 100000)  # not our parent: as if it had died already
route_signals(stop_request)
Lifeline().watch(stop_request)
deadline = time.monotonic() + 5
while not stop_request.requested and time.monotonic() < deadline:  # a worker looks between batches and epochs
    time.sleep(0.05)
print(stop_request.reason)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert done.stdout.strip() == PARENT_GONE, done


# --- a hang-up -------------------------------------------------------------------------------


def _pty(columns: int = 80, rows: int = 24) -> tuple[int, int]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    return master, slave


class _Reader:
    """Reads a pty's master side on a thread (a full pty would block the writer) until it is
    closed or the other side hangs up."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.chunks: list[bytes] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every slave descriptor is closed
                return
            if not chunk:
                return
            self.chunks.append(chunk)

    def text(self) -> str:
        self.thread.join(timeout=10)
        return b"".join(self.chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_hang_up_stops_cleanly_with_129(small, tmp_path, workers):
    data, url = small
    master, slave = _pty()
    err = (tmp_path / "stderr").open("w")
    # a session and process group of its own on the terminal, as a login shell starts a job
    proc = subprocess.Popen(
        cnn_tune("optimize", "--workers", workers, *LONG),
        env=cli_env(data, url, TERM="xterm"),
        stdin=slave,
        stdout=slave,
        stderr=err,
        start_new_session=True,
        preexec_fn=default_sigint,
    )
    os.close(slave)
    reader = _Reader(master)
    try:
        wait_training(url, proc, n=int(workers))
        os.killpg(proc.pid, signal.SIGHUP)  # the terminal hangs up: every process in the group gets it
        os.close(master)  # and is gone: writing to it now fails with EIO
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
        err.close()
    stderr = (tmp_path / "stderr").read_text()
    assert code == 129, stderr
    assert "Traceback" not in stderr and "Exception" not in stderr, stderr
    trials = stored_trials(url)
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert stopped and all("SIGHUP" in t.user_attrs["stop_reason"] for t in stopped)
    reader.text()


def test_nohup_keeps_running_through_a_hang_up(small):
    """SIGHUP ignored (``nohup cnn-tune …``): the run is meant to outlive the terminal."""
    data, url = small
    # 20 epochs: with 3 a fast machine finished the trial between two polls of _wait_training
    proc = subprocess.Popen(
        cnn_tune("optimize", "--trials", "1", "--epochs", "20", "--device", "cpu"),
        env=cli_env(data, url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    try:
        wait_training(url, proc)
        os.killpg(proc.pid, signal.SIGHUP)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert [t.state for t in stored_trials(url)] == [TrialState.COMPLETE]


def test_a_pipe_closed_early_is_no_crash(tmp_path, small):
    data, url = small
    api_study(url, n=30)
    read, write = os.pipe()
    os.close(read)  # `cnn-tune trials | head -0`: nobody reads
    done = subprocess.run(
        cnn_tune("trials"), env=cli_env(data, url), stdout=write, stderr=subprocess.PIPE, text=True, timeout=120
    )
    os.close(write)
    assert "Traceback" not in done.stderr and "Exception" not in done.stderr, done.stderr
    assert done.returncode == 0


# --- the live view ---------------------------------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def test_the_live_view_shows_every_worker_within_80_columns(small):
    data, url = small
    master, slave = _pty(columns=80)
    proc = subprocess.Popen(
        cnn_tune(
            "optimize",
            "--trials",
            "4",
            "--workers",
            "2",
            "--epochs",
            "4",
            "--pruner",
            "none",
            "--device",
            "cpu",
            "--seed",
            "1",
        ),
        env=cli_env(data, url, TERM="xterm"),
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    reader = _Reader(master)
    try:
        code = proc.wait(timeout=300)
    finally:
        proc.kill()
    text = reader.text()
    os.close(master)
    assert code == 0, text
    screen = ANSI.sub("", text).replace("\r\n", "\n").replace("\r", "\n")
    lines = screen.split("\n")
    rows = [ln for ln in lines if re.search(r"worker [01]: trial \d+ · epoch \d/4 · val", ln)]
    assert {re.search(r"worker (\d)", ln).group(1) for ln in rows} == {"0", "1"}, screen
    assert any(re.search(r"\d/4 trials .* elapsed, .* left", ln) for ln in lines), screen
    finished = [ln for ln in lines if re.match(r"trial +\d+ +(COMPLETE|PRUNED|FAIL)", ln)]
    assert len(finished) == 4, screen
    too_wide = [ln for ln in lines if len(ln.rstrip()) > 80]
    assert not too_wide, too_wide
