"""A bad day, for real: a disk that fills up, a damaged file, a database server that goes away;
and the tools for it: `backup` of a live database, `dashboard` in a real browser."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading

import optuna
import pytest
import sqlalchemy
import sqlalchemy.exc
from conftest import api_study, assert_one_line_error, write_mnist
from helpers import chromium, cli_env, cnn_tune, page_text, wait_for_complete
from optuna.trial import TrialState

FAST = ["--epochs", "1", "--device", "cpu", "--train-limit", "200"]


def _one_error_line(stderr: str, *fragments: str) -> str:
    """No traceback from any thread; exactly one error line, the last; each fragment in it."""
    assert "Traceback" not in stderr and "Exception in thread" not in stderr, stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and stderr.strip().splitlines()[-1] == errors[0], stderr
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


def _complete(url: str) -> list:
    return [
        t for t in optuna.load_study(study_name="mnist-cnn", storage=url).get_trials() if t.state == TrialState.COMPLETE
    ]


# --- a disk that fills up --------------------------------------------------------------------


@pytest.fixture()
def tiny_disk(tmp_path):
    """A 600 KB tmpfs: room for a few trials, then SQLite's 'database or disk is full'."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_full_disk_is_one_line_and_keeps_finished_trials(tmp_path, tiny_disk, workers):
    data = write_mnist(tmp_path / "data")
    db = tiny_disk / "s.db"
    url = f"sqlite:///{db}"
    # the article's space: its trials keep no network file, so the database is what fills the disk
    r = subprocess.run(
        cnn_tune(
            "optimize",
            "--trials",
            "200",
            "--pruner",
            "none",
            "--space",
            "article",
            "--patience",
            "0",
            "--workers",
            workers,
            *FAST,
        ),
        env=cli_env(data, url),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 1, r.stderr
    line = _one_error_line(r.stderr, "the disk is full", str(db), "free space", "finished trials are safe")
    finished = [ln for ln in r.stdout.splitlines() if ln.startswith("trial")]
    # the copy in RAM of a full disk still opens: every trial reported finished is there, complete
    shutil.copytree(tiny_disk, tmp_path / "copy")
    copy = f"sqlite:///{tmp_path / 'copy' / 's.db'}"
    complete = _complete(copy)
    assert len(complete) >= len(finished) >= 1 and all(t.value is not None for t in complete)
    trials = optuna.load_study(study_name="mnist-cnn", storage=copy).get_trials()
    open_ones = sorted(t.number for t in trials if t.state == TrialState.RUNNING)
    # every trial left open is named (not only the first worker's): the heartbeat will retry them
    if len(open_ones) == 1:
        assert f"trial {open_ones[0]} could not be closed" in line
    elif open_ones:
        assert f"trials {', '.join(map(str, open_ones[:-1]))} and {open_ones[-1]} could not be closed" in line
    listed = subprocess.run(
        cnn_tune("trials", "-f", "json"), env=cli_env(data, url), capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0, listed.stderr  # reading a full disk works


def test_a_full_artifact_store_is_one_line_and_leaves_no_partial_file(tmp_path, tiny_disk):
    """A wide trial keeps its network (a few hundred KB and up) in the artifact store: on a full
    disk that is one line naming the store, the trial failed (not left running), nothing half
    written in the store."""
    data = write_mnist(tmp_path / "data")
    url = f"sqlite:///{tmp_path / 's.db'}"
    store = tiny_disk / "store"
    r = subprocess.run(
        cnn_tune("optimize", "--trials", "2", "--pruner", "none", "--patience", "0", "--artifacts", str(store), *FAST),
        env=cli_env(data, url),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 1, r.stderr
    _one_error_line(r.stderr, "the disk is full", str(store), "free space", "--artifacts")
    trials = optuna.load_study(study_name="mnist-cnn", storage=url).get_trials()
    assert trials and all(t.state == TrialState.FAIL for t in trials)
    assert [p for p in store.rglob("*")] == []


# --- a damaged file --------------------------------------------------------------------------


def test_a_damaged_database_is_named_and_explained(tmp_path, cli):
    db = tmp_path / "damaged.db"
    url = f"sqlite:///{db}"
    api_study(url, n=40)
    raw = bytearray(db.read_bytes())
    for page in (3, 5, 8):  # overwrite whole pages in the middle of the file
        raw[page * 4096 : (page + 1) * 4096] = os.urandom(4096)
    db.write_bytes(bytes(raw))
    for command in (["trials"], ["best"], ["studies"], ["optimize", "--trials", "1", *FAST]):
        result = cli(*command, "--storage", url)
        assert_one_line_error(result, 1, "the file is damaged", str(db), "cnn-tune backup", ".recover")


# --- a database server that goes away --------------------------------------------------------


class Proxy:
    """A TCP relay from a free local port to PostgreSQL's; ``close()`` cuts every connection
    and stops listening — the server itself is never touched."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        for s in self.sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def test_a_server_that_goes_away_mid_study_is_one_line(tmp_path, postgres_database):
    data = write_mnist(tmp_path / "data", n_train=2000)
    direct = f"postgresql+psycopg://postgres@127.0.0.1:5432/{postgres_database}"
    proxy = Proxy(("127.0.0.1", 5432))
    via_proxy = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{postgres_database}"
    proc = subprocess.Popen(
        cnn_tune(
            "optimize",
            "--trials",
            "500",
            "--pruner",
            "none",
            "--patience",
            "0",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--train-limit",
            "1000",
        ),
        env=cli_env(data, via_proxy),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_complete(direct, 2, proc)
        proxy.close()  # mid-study: the next write finds the connection gone
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proxy.close()
    assert proc.returncode == 1, err
    _one_error_line(
        err, "connection to the database server failed", f"127.0.0.1:{proxy.port}", "run the same command again"
    )
    # the two trials seen complete before the cut, and every trial it reported, are stored complete
    # (the cut can fall between a trial's commit and its line: the line is then never printed)
    reported = {int(ln.split()[1]) for ln in out.splitlines() if ln.startswith("trial")}
    stored = {t.number for t in _complete(direct)}
    assert len(stored) >= 2 and reported <= stored


def test_a_session_left_on_a_lost_connection_is_the_same_one_line(postgres_database):
    """After a disconnect, a session that was not rolled back raises SQLAlchemy's "can't reconnect
    until invalid transaction is rolled back", with no cause chained (CI saw it once when a write
    raced the cut): the same lost-connection line, not SQLAlchemy's words."""
    from sqlalchemy.orm import Session

    from cnn_tune.storage.faults import storage_failure

    proxy = Proxy(("127.0.0.1", 5432))
    url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{postgres_database}"
    engine = sqlalchemy.create_engine(url)
    session = Session(engine)
    try:
        session.execute(sqlalchemy.text("SELECT 1"))
        proxy.close()
        with pytest.raises(sqlalchemy.exc.OperationalError):  # the disconnect invalidates the connection
            session.execute(sqlalchemy.text("SELECT 1"))
        with pytest.raises(sqlalchemy.exc.PendingRollbackError) as pending:
            session.execute(sqlalchemy.text("SELECT 1"))
    finally:
        session.close()
        engine.dispose()
        proxy.close()
    message = storage_failure(pending.value, url, "write to").one_line()
    assert "connection to the database server failed" in message, message
    assert f"127.0.0.1:{proxy.port}" in message and "run the same command again" in message, message
    assert "sqlalche.me" not in message and "rollback" not in message, message


# --- backup ----------------------------------------------------------------------------------


def test_backup_copies_a_study_while_two_workers_write(tmp_path, cli):
    data = write_mnist(tmp_path / "data", n_train=2000)
    db = tmp_path / "live.db"
    url = f"sqlite:///{db}"
    proc = subprocess.Popen(
        cnn_tune(
            "optimize",
            "--trials",
            "40",
            "--workers",
            "2",
            "--pruner",
            "none",
            "--patience",
            "0",
            "--epochs",
            "2",
            "--device",
            "cpu",
        ),
        env=cli_env(data, url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_complete(url, 2, proc)
        before = len(_complete(url))
        result = cli("backup", str(tmp_path / "copies" / "b.db"), "--storage", url)
        running = proc.poll() is None
        after = len(_complete(url))
        proc.terminate()  # the study is not the point here: stop it cleanly, as a user would
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert running, "the workers finished before the backup: the test did not test a live copy"
    assert proc.returncode in (0, 130) and "Traceback" not in err, err
    assert result.exit_code == 0, result.output
    assert re.search(r"Copied sqlite:///.*live\.db to .*b\.db: 1 study\(ies\), \d+ trial\(s\)", result.stdout)
    copied = _complete(f"sqlite:///{tmp_path / 'copies' / 'b.db'}")
    assert before <= len(copied) <= after
    assert not list((tmp_path / "copies").glob(".*part"))  # no half-written copy left


def test_backup_refuses_what_it_cannot_copy(tmp_path, cli):
    url = f"sqlite:///{tmp_path / 's.db'}"
    api_study(url, n=2)
    (tmp_path / "taken.db").write_text("mine")
    assert_one_line_error(cli("backup", str(tmp_path / "taken.db"), "--storage", url), 1, "exists", "--overwrite")
    assert (tmp_path / "taken.db").read_text() == "mine"
    assert_one_line_error(
        cli("backup", str(tmp_path / "x.db"), "--storage", "postgresql+psycopg://u@h/db"), 2, "pg_dump"
    )
    assert_one_line_error(
        cli("backup", str(tmp_path / "x.db"), "--storage", f"sqlite:///{tmp_path / 'none.db'}"), 2, "no study database"
    )
    assert_one_line_error(cli("backup", str(tmp_path / "s.db"), "--storage", url), 2, "overwrite the database itself")


# --- the dashboard, in a real browser --------------------------------------------------------


def test_dashboard_shows_the_study_a_worker_is_writing(tmp_path):
    pytest.importorskip("optuna_dashboard")
    browser = chromium()
    data = write_mnist(tmp_path / "data", n_train=2000)
    url = f"sqlite:///{tmp_path / 'live.db'}"
    env = cli_env(data, url)
    worker = subprocess.Popen(
        cnn_tune(
            "optimize", "--trials", "200", "--pruner", "none", "--patience", "0", "--epochs", "1", "--device", "cpu"
        ),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    dashboard = None
    try:
        wait_for_complete(url, 2, worker)
        dashboard = subprocess.Popen(
            cnn_tune("dashboard", "--port", "0"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_default_sigint,
        )
        first = dashboard.stderr.readline()
        match = re.search(r"Dashboard on (http://\S+) ", first)
        assert match, first
        base = match.group(1)
        study_page = page_text(browser, f"{base}studies/1", tmp_path / "b1")
        n_before = len(optuna.load_study(study_name="mnist-cnn", storage=url).trials)
        trials_page = page_text(browser, f"{base}studies/1/trials", tmp_path / "b2")
        n_after = len(optuna.load_study(study_name="mnist-cnn", storage=url).trials)
        assert worker.poll() is None, "the worker stopped: the dashboard was not tested against a live study"
        dashboard.send_signal(2)  # Ctrl-C
        _, err = dashboard.communicate(timeout=30)
    finally:
        worker.kill()
        if dashboard is not None:
            dashboard.kill()
    assert "mnist-cnn" in study_page and "validation_accuracy" in study_page, study_page[:2000]
    shown = re.search(r"(\d+) Trials", trials_page)
    assert shown and n_before - 2 <= int(shown.group(1)) <= n_after + 2, trials_page[:2000]
    assert dashboard.returncode == 0 and "Dashboard stopped." in err and "Traceback" not in err


def _default_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_dashboard_without_the_package_says_how_to_install_it(cli, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 's.db'}"
    api_study(url, n=1)
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # as if not installed
    assert_one_line_error(cli("dashboard", "--storage", url), 1, "pip install -e '.[dashboard]'")


def test_new_and_resumed_studies_name_their_metric(cli, db_url):
    assert cli("optimize", "--trials", "1", *FAST).exit_code == 0
    assert optuna.load_study(study_name="mnist-cnn", storage=db_url).metric_names == ["validation_accuracy"]
    # a study from before metric names: Optuna keeps them as a study system attribute
    storage = optuna.storages.RDBStorage(db_url)
    storage.set_study_system_attr(storage.get_study_id_from_name("mnist-cnn"), "study:metric_names", None)
    assert optuna.load_study(study_name="mnist-cnn", storage=db_url).metric_names is None
    assert cli("optimize", "--trials", "1").exit_code == 0
    assert optuna.load_study(study_name="mnist-cnn", storage=db_url).metric_names == ["validation_accuracy"]


@pytest.mark.parametrize(
    "driver_text, what, fix",
    [
        ("database or disk is full", "the disk is full", "free space on the disk that holds"),
        ("disk I/O error", "the disk reported an I/O error", "check the disk that holds"),
        ("database disk image is malformed", "the file is damaged", ".recover"),
        ("file is not a database", "the file is damaged", "cnn-tune backup"),
        ("attempt to write a readonly database", "the database is read-only", "writable"),
    ],
)
def test_each_sqlite_fault_is_named_with_its_fix(driver_text, what, fix):
    import sqlite3

    import sqlalchemy

    from cnn_tune.storage.faults import storage_failure

    wrapped = sqlalchemy.exc.OperationalError("COMMIT", {}, sqlite3.OperationalError(driver_text))
    inside_optuna = optuna.exceptions.StorageInternalError("An exception is raised during the commit.")
    inside_optuna.__cause__ = wrapped
    for exc in (wrapped, inside_optuna):
        error = storage_failure(exc, "sqlite:///studies/s.db", "write to")
        assert error.message == f"cannot write to sqlite:///studies/s.db: {what} ({driver_text})"
        assert fix in error.hint and error.exit_code == 1


def test_a_server_fault_names_the_server():
    import sqlalchemy

    from cnn_tune.storage.faults import storage_failure

    exc = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    error = storage_failure(exc, "postgresql+psycopg://tuner:secret@db.example.org/cnn", "write to")
    assert "the connection to the database server failed" in error.message and "secret" not in error.one_line()
    assert "db.example.org" in error.hint
