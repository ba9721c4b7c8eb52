"""The one module that opens storage — always through Optuna's API, never with SQL of its
own, so optuna-dashboard and ``optuna trials`` keep working on the same files. SQLite files are
checked before they are opened or created; a writer gets WAL and ``BEGIN IMMEDIATE``."""

from __future__ import annotations

import gc
import os
import random
import time
import warnings
import weakref
from pathlib import Path

import optuna
import sqlalchemy
import sqlalchemy.event
import sqlalchemy.exc
from sqlalchemy.engine import URL

from cnn_tune.errors import DependencyMissing, StorageError, StudyNotFound
from cnn_tune.storage.faults import _driver_text, remember_opened, storage_failure
from cnn_tune.storage.heartbeat import Heartbeat
from cnn_tune.storage.studies import load_existing
from cnn_tune.storage.urls import (
    _SQLITE_MAGIC,
    SERVER_CONNECT_TIMEOUT_S,
    SQLITE_BUSY_TIMEOUT_S,
    _sqlite_file,
    display_url,
    parse_storage,
    sqlite_path,
)

SCHEMA_RETRIES = 8  # first opens of a new database by several processes at once
_DRIVER_EXTRA = {"postgresql": "pip install 'psycopg[binary]'", "mysql": "pip install pymysql"}


def _engine_kwargs(parsed: URL, write: bool = False) -> dict:
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        # A writer's connection leaves transactions to us (see _serialize_sqlite_writes): the
        # driver itself would begin one only at the first INSERT/UPDATE, after the SELECT that
        # decided what to write.
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S, **({"isolation_level": None} if write else {})}}
    if backend in ("postgresql", "mysql", "mariadb"):
        # Fail in seconds, not minutes, when the server does not answer.
        return {"pool_pre_ping": True, "connect_args": {"connect_timeout": SERVER_CONNECT_TIMEOUT_S}}
    return {}


def _schema_race(exc: sqlalchemy.exc.SQLAlchemyError) -> bool:
    """Errors of two processes creating Optuna's schema in one new database at once; the
    loser's retry finds the schema made and goes on."""
    text = _driver_text(exc).lower()
    return isinstance(exc, sqlalchemy.exc.IntegrityError) or "already exists" in text or "locked" in text


def _new_rdb_storage(url: str, parsed: URL, heartbeat: Heartbeat | None, write: bool) -> optuna.storages.RDBStorage:
    for attempt in range(SCHEMA_RETRIES):
        try:
            with warnings.catch_warnings():  # the heartbeat callback is "experimental" since Optuna 2.8
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                beat = (
                    {}
                    if heartbeat is None
                    else {
                        "heartbeat_interval": heartbeat.interval_s,
                        "grace_period": heartbeat.grace_s,
                        "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                            max_retry=heartbeat.max_retry
                        ),
                    }
                )
                return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(parsed, write), **beat)
        except sqlalchemy.exc.SQLAlchemyError as exc:
            if attempt == SCHEMA_RETRIES - 1 or not _schema_race(exc):
                raise
            time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))  # jitter: do not collide again
    raise AssertionError("unreachable")


def _use_wal(storage: optuna.storages.RDBStorage) -> None:
    """SQLite's write-ahead log: readers never block the writer nor it them, and commits are
    cheaper — what several workers on one file need. The mode is stored in the file, so the
    first process that manages it sets it for all; if the file is busy, another has."""
    try:
        with storage.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    except sqlalchemy.exc.OperationalError:
        pass


def _serialize_sqlite_writes(storage: optuna.storages.RDBStorage) -> None:
    """Every transaction of this writer takes SQLite's write lock when it begins.

    Optuna hands out a waiting trial (an enqueued warm start, a confirm run, a heartbeat
    retry) by reading that it is WAITING and then marking it RUNNING, in one transaction
    ``FOR UPDATE`` — which SQLite ignores. Python's sqlite3 driver also runs the read outside
    any transaction. So several processes read WAITING at once and all ran the same trial
    (8 processes, 40 queued trials: up to 7 ran one trial; the second to finish failed with
    "Cannot tell a COMPLETE trial"). ``BEGIN IMMEDIATE`` makes read-then-write atomic: the
    others wait (``timeout``), then read RUNNING and take the next one. PostgreSQL and MySQL
    lock the row themselves."""

    @sqlalchemy.event.listens_for(storage.engine, "begin")
    def _begin(conn: sqlalchemy.engine.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


# Every storage this process opened, so that a command closes them when it ends (see close_all).
_OPENED: weakref.WeakSet[optuna.storages.RDBStorage] = weakref.WeakSet()


def open_storage(url: str, heartbeat: Heartbeat | None = None, write: bool = False) -> optuna.storages.RDBStorage:
    """Open ``url`` through Optuna. ``write``: this process will run trials (SQLite gets WAL)."""
    parsed = parse_storage(url)
    shown = display_url(url)
    try:
        remember_opened(url)
        storage = _new_rdb_storage(url, parsed, heartbeat, write)
        _OPENED.add(storage)
        if write and parsed.get_backend_name() == "sqlite":
            _use_wal(storage)  # before the next line: the journal mode cannot change inside a transaction
            _serialize_sqlite_writes(storage)
        return storage
    except (ImportError, sqlalchemy.exc.NoSuchModuleError) as exc:
        backend = parsed.get_backend_name()
        raise DependencyMissing(
            f"no database driver for {shown}: {exc}",
            hint=_DRIVER_EXTRA.get(backend, "install the SQLAlchemy driver for it"),
        ) from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise storage_failure(exc, url, "open") from None
    except RuntimeError as exc:  # Optuna: schema written by another Optuna version
        if "optuna storage upgrade" in str(exc) or "schema" in str(exc):
            raise StorageError(
                f"the schema of {shown} is older than this Optuna's",
                hint=f"run: optuna storage upgrade --storage {shown}",
            ) from None
        raise


def close_all() -> None:
    """Close every storage this process opened. A command's connections must not outlive it:
    in a process that runs several commands (tests, a notebook), a SQLite connection left
    open while another process rewrites the WAL was seen to read the file as "malformed"."""
    for storage in list(_OPENED):
        try:
            storage.remove_session()
            storage.engine.dispose()
        except sqlalchemy.exc.SQLAlchemyError:  # closing is best effort: the command is over
            pass
    _OPENED.clear()
    # Sessions of finished threads (Optuna's heartbeat thread) still hold a checked-out
    # connection until collected; dispose() cannot reach those.
    gc.collect()


def open_existing(url: str) -> optuna.storages.RDBStorage:
    """Open a storage for reading: a SQLite file that is not there is an error, never a new
    empty database (reading must not leave files behind)."""
    check_existing(url)
    return open_storage(url)


def check_existing(url: str) -> None:
    """Without opening it: a SQLite file that is not there, is empty, or is not Optuna's is
    refused (PostgreSQL and MySQL pass: their server answers when opened)."""
    path = _sqlite_file(parse_storage(url))
    if path is not None and not path.exists():
        raise StudyNotFound(
            f"no study database at {path}",
            hint="run `cnn-tune optimize` first, or pass --storage URL of an existing one",
        )
    if path is not None and path.stat().st_size == 0:  # opening it would write Optuna's schema
        raise StudyNotFound(
            f"{path} is an empty file, not a study database",
            hint="run `cnn-tune optimize` first, or pass --storage URL of an existing one",
        )
    prepare_storage(url)  # a SQLite file that is not Optuna's is refused untouched


def read_study(url: str, name: str | None) -> optuna.Study:
    """Open an existing study for inspection (None: :func:`default_name`); creates nothing."""
    return load_existing(open_existing(url), url, name)


def prepare_storage(url: str) -> str:
    """Validate a storage URL before anything is written. For SQLite: refuse in-memory
    databases, folders, and files that are not ours to write; create the parent folder."""
    path = _sqlite_file(parse_storage(url))
    if path is None:
        return url
    if path.exists():
        with path.open("rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
        if head and head != _SQLITE_MAGIC:
            raise StorageError(
                f"{path} exists and is not a SQLite database; left it untouched", hint="point --storage at another file"
            )
        _refuse_foreign_sqlite(url, path)
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the folder {path.parent}: {exc.strerror}",
                hint="choose a writable location for --storage",
            ) from None
    return url


def check_can_write(url: str) -> None:
    """Before trials: a SQLite file (and its folder, where WAL keeps its -wal and -shm files)
    must be writable, or the first write would fail after the data has been read."""
    path = sqlite_path(parse_storage(url))
    if path is None:
        return
    for target in ([path] if path.exists() else []) + [path.parent]:
        if target.exists() and not os.access(target, os.W_OK):
            raise StorageError(
                f"cannot write to {target}: it is read-only",
                hint="make the database file and its folder writable, or choose another --storage",
            )


def _refuse_foreign_sqlite(url: str, path: Path) -> None:
    """Opening a SQLite file with Optuna adds its tables; never do that to another program's
    database. Only the table names are read (no SQL of ours touches Optuna's tables)."""
    engine = sqlalchemy.create_engine(url)
    try:
        tables = set(sqlalchemy.inspect(engine).get_table_names())
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise storage_failure(exc, url, "read") from None
    finally:
        engine.dispose()
    if tables and "studies" not in tables:
        shown = ", ".join(sorted(tables)[:5])
        raise StorageError(
            f"{path} is a SQLite database of something else (tables: {shown}); left it untouched",
            hint="point --storage at another file",
        )


def storage_exists(url: str) -> bool:
    """False only for a SQLite file not yet there: opening it would create it."""
    path = sqlite_path(parse_storage(url))
    return path is None or path.exists()
