"""Several workers on one study, with real processes: `--workers N`, independently started
commands, a worker killed mid-trial, Ctrl-C, and PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import api_study, assert_one_line_error, default_sigint, write_mnist
from helpers import cli_env, cnn_tune, heartbeats_older_than, stored_trials, wait_for
from optuna.trial import TrialState

from cnn_tune.search.samplers import JUDGED_AFTER_IMAGES

FAST = ["--epochs", "1", "--device", "cpu", "--pruner", "none"]


def _assert_exact(trials: list, n: int) -> None:
    assert len(trials) == n
    assert sorted(t.number for t in trials) == list(range(n))  # none lost, none duplicated
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == n, "two trials ran identical parameters"


@pytest.fixture()
def small(tmp_path) -> tuple[Path, str]:
    return write_mnist(tmp_path / "data", n_train=200, n_test=20), f"sqlite:///{tmp_path / 'w.db'}"


def test_workers_run_exactly_the_trials_asked_in_total(small):
    data, url = small
    r = subprocess.run(
        cnn_tune("optimize", "--trials", "6", "--workers", "4", "--seed", "5", *FAST),
        env=cli_env(data, url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    _assert_exact(stored_trials(url), 6)
    assert "by 4 workers" in r.stdout and "Starting 4 workers" in r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("trial")]
    # piped: one plain line per trial, every field (a terminal's view cuts them to its width)
    assert len(lines) == 6 and all(" best " in ln and " ep " in ln for ln in lines)
    assert "\x1b[" not in r.stdout + r.stderr
    with sqlite3.connect(url[len("sqlite:///") :]) as db:  # read-only check of the file's mode
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # cores shared out, no oversubscription: trials start on a quarter of the cores each; a worker
    # whose peers have already exited (no trial left for them) may start its next on theirs
    share, cores = max(1, (os.cpu_count() or 1) // 4), os.cpu_count() or 1
    threads = [t.user_attrs["threads"] for t in stored_trials(url)]
    assert min(threads) == share and max(threads) <= cores, threads


def test_threads_option(cli, db_url):
    assert cli("optimize", "--trials", "1", "--threads", "1", *FAST).exit_code == 0
    assert stored_trials(db_url)[0].user_attrs["threads"] == 1


def test_more_workers_than_trials_says_how_many_run(small):
    data, url = small
    r = subprocess.run(
        cnn_tune("optimize", "--trials", "2", "--workers", "5", *FAST),
        env=cli_env(data, url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "starting 2 worker(s)" in r.stderr
    assert len(stored_trials(url)) == 2


def test_separately_started_commands_share_one_sqlite_file(small):
    data, url = small
    procs = [
        subprocess.Popen(
            cnn_tune("optimize", "--trials", "2", "--seed", str(i), "--patience", "0", *FAST),
            env=cli_env(data, url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert len([ln for ln in out.splitlines() if ln.startswith("trial")]) == 2
    _assert_exact(stored_trials(url), 16)


# Each process waits for the file `go`, so that all of them ask for waiting trials at once.
_CLAIMER = """
import os, sys, time
import optuna
from cnn_tune.storage.engine import open_storage
url, go = sys.argv[1], sys.argv[2]
study = optuna.load_study(study_name="queue", storage=open_storage(url, write=True))
open(go + f".ready.{os.getpid()}", "w").close()  # the study is open: ready to claim
while not os.path.exists(go):
    time.sleep(0.005)
print(*[study.ask().number for _ in range(5)])
"""


def test_processes_never_take_the_same_waiting_trial(tmp_path):
    """Enqueued trials (the warm start, confirm's runs, heartbeat retries) are handed out once.
    On SQLite, Optuna's check-then-mark of a WAITING trial was not atomic: without cnn-tune's
    BEGIN IMMEDIATE, 8 processes on 40 queued trials handed one trial to up to 7 of them."""
    from cnn_tune.storage.engine import open_storage

    url = f"sqlite:///{tmp_path / 'q.db'}"
    study = optuna.create_study(study_name="queue", storage=open_storage(url, write=True))
    for i in range(40):
        study.enqueue_trial({"x": i})
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLAIMER, url, str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    wait_for(lambda: len(list(tmp_path.glob("go.ready.*"))) == 8, 120, what="8 processes with the study open")
    go.touch()  # all 8 ask for waiting trials at once
    taken = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        taken += [int(n) for n in out.split()]
    assert len(taken) == 40 and sorted(taken) == list(range(40)), sorted(taken)  # each once, none new
    assert {t.state for t in stored_trials(url, "queue")} == {TrialState.RUNNING}


def test_core_share_gives_a_lone_worker_the_freed_cores():
    import multiprocessing as mp

    from cnn_tune.search.worker import CoreShare

    alive = mp.get_context("spawn").Value("i", 2)
    share = CoreShare(2, alive)
    assert share.threads() == 1
    alive.value = 1  # the other worker has exited
    assert share.threads() == 2
    assert CoreShare(2, mp.get_context("spawn").Value("i", 4)).threads() == 1  # never under one


HOPELESS = {
    "dropout_rate": 0.0,
    "fc2_input_dim": 32,
    "dropout_rate2": 0.0,
    "optimizer": "Adadelta",
    "lr": 1e-5,
    "batch_size": 256,
}  # near chance after an epoch: the leader pruner's floor stops it there
GOOD = {
    "dropout_rate": 0.0,
    "fc2_input_dim": 64,
    "dropout_rate2": 0.0,
    "optimizer": "Adam",
    "lr": 3e-3,
    "batch_size": 64,
}


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to share out")
@pytest.mark.parametrize("threads", [None, "1"])
def test_the_last_worker_takes_the_cores_of_the_one_that_left(tmp_path, threads):
    """Two workers, two trials: one is pruned as soon as it is judged and its worker exits (no
    trial left to claim); the other, 1 thread of 2 cores so far, trains its later epochs on
    both. Not when --threads was given: then the user decided."""
    from cnn_tune.data.load import read_folder
    from cnn_tune.search.plan import make_protocol
    from cnn_tune.storage.engine import open_storage
    from cnn_tune.storage.studies import create_or_load

    data = write_mnist(tmp_path / "data", n_train=6000, n_test=20)
    url = f"sqlite:///{tmp_path / 'h.db'}"
    mnist = read_folder(data)
    protocol = make_protocol(8, None, len(mnist.train_labels), mnist.fingerprint)  # as `optimize --epochs 8` makes it
    study, _ = create_or_load(
        open_storage(url, write=True),
        "mnist-cnn",
        protocol,
        optuna.samplers.RandomSampler(),
        optuna.pruners.NopPruner(),
    )
    study.enqueue_trial(HOPELESS)
    study.enqueue_trial(GOOD)
    args = [
        "--trials",
        "2",
        "--workers",
        "2",
        "--epochs",
        "8",
        "--device",
        "cpu",
        "--pruner",
        "leader",
        "--seed",
        "0",
        *(["--threads", threads] if threads else []),
    ]
    r = subprocess.run(cnn_tune("optimize", *args), env=cli_env(data, url), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    hopeless, good = sorted(stored_trials(url), key=lambda t: t.params["optimizer"] == "Adam")
    # judged once it has seen JUDGED_AFTER_IMAGES: epoch 5 of 8 on this 4,800-image split
    assert hopeless.state == TrialState.PRUNED and hopeless.user_attrs["epochs_run"] == -(-JUDGED_AFTER_IMAGES // 4800)
    assert good.state == TrialState.COMPLETE and good.user_attrs["threads"] == 1
    if threads:
        assert "threads_max" not in good.user_attrs
    else:
        assert good.user_attrs["threads_max"] == 2


def test_max_trials_caps_the_study(small):
    data, url = small
    env = cli_env(data, url)
    assert subprocess.run(cnn_tune("optimize", "--trials", "3", *FAST), env=env, timeout=300).returncode == 0
    r = subprocess.run(
        cnn_tune("optimize", "--trials", "5", "--max-trials", "4", *FAST),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "reached --max-trials" in r.stdout
    assert len(stored_trials(url)) == 4


def _running_with_epochs(url: str, db: Path):
    if not db.exists():
        return None
    try:
        return [t for t in stored_trials(url) if t.state == TrialState.RUNNING and t.intermediate_values]
    except Exception:  # noqa: BLE001 - database or study still being created
        return None


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_killed_worker_trial_is_failed_and_retried(tmp_path):
    data = write_mnist(tmp_path / "data", n_train=3000, n_test=20)
    db = tmp_path / "k.db"
    url = f"sqlite:///{db}"
    # 10 epochs: seconds between seeing the trial train and the kill, even on a loaded machine
    beat = ["--heartbeat", "1", "--grace", "3", "--epochs", "10", "--device", "cpu", "--pruner", "none", "--seed", "1"]
    victim = subprocess.Popen(
        cnn_tune("optimize", "--trials", "1", *beat),
        env=cli_env(data, url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        running = wait_for(lambda: _running_with_epochs(url, db), 120, victim)
    finally:
        victim.kill()  # SIGKILL: no handler runs, the trial stays RUNNING
        victim.wait()
    original = running[0]
    assert [t.state for t in stored_trials(url)] == [TrialState.RUNNING]

    wait_for(lambda: heartbeats_older_than(db, 3), 60, what="a stale heartbeat")  # older than --grace 3
    r = subprocess.run(
        cnn_tune("optimize", "--trials", "1", *beat),
        env=cli_env(data, url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    trials = stored_trials(url)
    assert trials[original.number].state == TrialState.FAIL
    retries = [
        t for t in trials if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == original.number
    ]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == original.params
    rows = json.loads(
        subprocess.run(
            cnn_tune("trials", "-f", "json"), env=cli_env(data, url), capture_output=True, text=True, timeout=120
        ).stdout
    )
    assert rows[retries[0].number]["retry_of"] == original.number


def test_ctrl_c_stops_every_worker(tmp_path):
    data = write_mnist(tmp_path / "data", n_train=3000, n_test=20)
    db = tmp_path / "c.db"
    url = f"sqlite:///{db}"
    parent = subprocess.Popen(
        cnn_tune(
            "optimize", "--trials", "6", "--workers", "2", "--epochs", "20", "--device", "cpu", "--pruner", "none"
        ),
        env=cli_env(data, url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        wait_for(lambda: _running_with_epochs(url, db), 180, parent)
        parent.send_signal(signal.SIGINT)  # to the parent only: it must stop its workers itself
        out, err = parent.communicate(timeout=120)
    finally:
        parent.kill()
    assert parent.returncode == 130, err
    assert "Interrupted" in out
    trials = stored_trials(url)
    assert trials and all(t.state != TrialState.RUNNING for t in trials)
    assert any(t.state == TrialState.FAIL and t.user_attrs.get("interrupted") for t in trials)


# --- PostgreSQL ---------------------------------------------------------------------------


def _server_answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


@pytest.fixture()
def postgres_url(postgres_database):
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{postgres_database}"


def test_postgresql_three_workers_exact_counts(small, postgres_url):
    data, _ = small
    r = subprocess.run(
        cnn_tune("optimize", "--trials", "6", "--workers", "3", "--seed", "2", *FAST),
        env=cli_env(data, postgres_url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    _assert_exact(stored_trials(postgres_url), 6)
    listed = subprocess.run(
        cnn_tune("studies", "-f", "json"), env=cli_env(data, postgres_url), capture_output=True, text=True, timeout=120
    )
    assert json.loads(listed.stdout)[0]["complete"] == 6


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--workers", "0"], "--workers"),
        (["--workers", "many"], "--workers"),
        (["--workers", "auto", "--threads", "999"], "--threads 999 is more than"),
        (["--heartbeat", "10", "--grace", "10"], "must be longer than --heartbeat"),
        (["--heartbeat", "10", "--grace", "5"], "must be longer than --heartbeat"),
        (["--max-trials", "0"], "--max-trials"),
        (["--preset", "quickest"], "'quickest' is not one of 'fast', 'article'"),
    ],
)
def test_bad_worker_options(cli, db_url, args, fragment):
    assert_one_line_error(cli("optimize", "--trials", "2", *args), 2, fragment)
    assert not Path(db_url[len("sqlite:///") :]).exists()


def test_read_only_database_is_one_line(cli, tmp_path):
    db = tmp_path / "ro.db"
    api_study(f"sqlite:///{db}", n=0)
    before = db.read_bytes()
    # SQLite's own read-only mode: the same refusal a read-only file or mount gives (root
    # ignores file permissions, so chmod cannot show it in CI)
    result = cli(
        "optimize",
        "--trials",
        "1",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--storage",
        f"sqlite:///file:{db}?mode=ro&uri=true",
    )
    assert_one_line_error(result, 1, "readonly database")
    assert db.read_bytes() == before


def test_server_that_does_not_answer_fails_fast_naming_the_host(cli):
    started = time.monotonic()
    result = cli("optimize", "--trials", "1", "--storage", "postgresql+psycopg://postgres@127.0.0.1:1/none")
    assert_one_line_error(result, 1, "127.0.0.1")
    assert time.monotonic() - started < 30


def test_schema_older_than_optuna_says_upgrade(cli, tmp_path):
    db = tmp_path / "old.db"
    api_study(f"sqlite:///{db}", n=1)
    with sqlite3.connect(db) as conn:  # the test ages the file; cnn-tune itself never writes SQL
        conn.execute("UPDATE alembic_version SET version_num = 'v2.6.0.a'")
    result = cli("trials", "--storage", f"sqlite:///{db}")
    assert_one_line_error(result, 1, "optuna storage upgrade")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only files")
def test_read_only_file_is_refused_before_any_work(cli, tmp_path):
    db = tmp_path / "ro.db"
    api_study(f"sqlite:///{db}", n=0)
    db.chmod(0o444)
    result = cli("optimize", "--trials", "1", "--storage", f"sqlite:///{db}")
    assert_one_line_error(result, 1, "read-only")
    assert "Reading MNIST" not in result.stderr


# --- a worker's failure keeps its kind; --debug shows the worker's traceback -----------------


def _fail_in_worker(monkeypatch, exc: Exception) -> None:
    def broken(*_args, **_kwargs):
        raise exc

    monkeypatch.setattr("cnn_tune.search.worker.make_objective", broken)


def test_a_worker_bug_is_one_line_and_debug_shows_its_traceback(cli, monkeypatch):
    _fail_in_worker(monkeypatch, RuntimeError("boom"))
    assert_one_line_error(
        cli("optimize", "--trials", "1", *FAST), 1, "worker 0: unexpected RuntimeError: boom", "--debug"
    )
    result = cli("--debug", "optimize", "--trials", "1", *FAST)
    assert type(result.exception).__name__ == "WorkerCrashed"
    cause = result.exception.__cause__
    assert "RuntimeError: boom" in str(cause) and "Traceback" in str(cause)  # the worker's own traceback


def test_a_worker_error_keeps_its_kind(cli, monkeypatch):
    from cnn_tune.errors import DataError

    _fail_in_worker(monkeypatch, DataError("the IDX files vanished", hint="put them back"))
    assert_one_line_error(cli("optimize", "--trials", "1", *FAST), 1, "the IDX files vanished — put them back")
    assert isinstance(cli("--debug", "optimize", "--trials", "1", *FAST).exception, DataError)


def test_errors_cross_a_process_boundary_whole():
    import pickle

    from cnn_tune.errors import ProtocolConflict

    again = pickle.loads(pickle.dumps(ProtocolConflict("differs", hint="use --study NEW")))
    assert type(again) is ProtocolConflict and again.one_line() == "differs — use --study NEW" and again.exit_code == 2


def test_workers_auto_starts_one_worker_per_core(small):
    from cnn_tune.search.plan import auto_workers, available_memory_gb

    data, url = small
    expected = min(3, auto_workers("cpu", None, os.cpu_count() or 1, available_memory_gb()))
    r = subprocess.run(
        cnn_tune("optimize", "--trials", "3", "--workers", "auto", *FAST),
        env=cli_env(data, url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert (f"Starting {expected} workers" in r.stderr) if expected > 1 else ("Starting" not in r.stderr)
    _assert_exact(stored_trials(url), 3)


def test_the_default_is_the_fast_preset_and_the_article_is_one_flag_away(small):
    """No CNN_TUNE_WORKERS (the suite sets it to 1): what a user gets from a bare command."""
    from cnn_tune.model.space import Hyperparams, warm_start
    from cnn_tune.search.plan import auto_workers, available_memory_gb

    data, url = small
    env = {k: v for k, v in cli_env(data, url).items() if k != "CNN_TUNE_WORKERS"}
    bare = ["--epochs", "1", "--device", "cpu"]  # one epoch: never pruned, whatever the pruner
    r = subprocess.run(
        cnn_tune("optimize", "--trials", "3", *bare), env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr
    assert "tpe-mv sampler, halving pruner, warm start" in r.stderr
    expected = min(3, auto_workers("cpu", None, os.cpu_count() or 1, available_memory_gb()))
    assert (f"Starting {expected} workers" in r.stderr) if expected > 1 else ("Starting" not in r.stderr)
    trials = stored_trials(url)
    _assert_exact(trials, 3)
    assert trials[0].params == warm_start("wide", "mnist") and trials[0].user_attrs["cnn_tune.warm_start"] is True

    r = subprocess.run(
        cnn_tune("optimize", "--trials", "2", "--study", "article", "--preset", "article", *bare),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "tpe sampler, median pruner" in r.stderr and "warm start" not in r.stderr and "Starting" not in r.stderr
    article = stored_trials(url, "article")
    assert not any("cnn_tune.warm_start" in t.user_attrs for t in article)
    assert all(set(t.params) == set(Hyperparams().as_dict()) for t in article)  # the seed article's space
