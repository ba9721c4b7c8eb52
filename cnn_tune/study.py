"""The one module that opens storage — always through Optuna's API, never with SQL of its
own, so optuna-dashboard and ``optuna trials`` keep working on the same files."""

from __future__ import annotations

import gc
import logging
import os
import random
import re
import sys
import threading
import time
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import sqlalchemy
import sqlalchemy.event
import sqlalchemy.exc
from sqlalchemy.engine import URL, make_url

if TYPE_CHECKING:  # what a storage lists for each study (get_all_studies)
    from optuna.study._frozen import FrozenStudy

from .errors import DependencyMissing, ProtocolConflict, StorageError, StudyNameError, StudyNotFound, UsageError
from .protocol import CONFIRM_ATTR_PREFIX, CONFIRM_SUFFIX, PROTOCOL_ATTR, RETRAIN_ATTR_PREFIX, Protocol

DEFAULT_STORAGE = "sqlite:///studies/cnn_tune.db"
SERVER_CONNECT_TIMEOUT_S = 5  # PostgreSQL/MySQL: a server that does not answer fails this fast
DEFAULT_STUDY = "mnist-cnn"
METRIC_NAME = "validation_accuracy"  # the objective's name, as the dashboard and Optuna's tools show it
SCHEMA_RETRIES = 8  # first opens of a new database by several processes at once
SQLITE_BUSY_TIMEOUT_S = 30  # wait this long for another writer instead of failing with "database is locked"
_SQLITE_MAGIC = b"SQLite format 3\x00"
_DRIVER_EXTRA = {"postgresql": "pip install 'psycopg[binary]'", "mysql": "pip install pymysql"}


def check_study_name(name: str) -> str:
    """Study names become file names (plots, checkpoints): refuse what would be unsafe there."""
    if not name or not name.strip():
        raise StudyNameError("the study name is empty", hint="pass --study NAME")
    if "/" in name or "\\" in name or ".." in name or re.search(r"[\x00-\x1f\x7f]", name):
        raise StudyNameError(f"study name {name!r} contains '/', '\\', '..' or a control character",
                             hint="use letters, digits, '-', '_' and '.', e.g. --study mnist-cnn")
    if len(name) > 200:
        raise StudyNameError("the study name is longer than 200 characters", hint="pass a shorter --study NAME")
    return name


def parse_storage(url: str) -> URL:
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise UsageError(f"storage {url!r} is not a database URL",
                         hint="use e.g. sqlite:///studies/cnn_tune.db or postgresql+psycopg://user@host/db") from None
    return parsed


def display_url(url: str) -> str:
    """The URL with any password masked, for messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only used for display
        return url


def _driver_text(exc: sqlalchemy.exc.SQLAlchemyError) -> str:
    """The driver's own message (``exc.orig``), without SQLAlchemy's SQL dump and links."""
    return str(getattr(exc, "orig", None) or exc).strip()


def _first_line(exc: sqlalchemy.exc.SQLAlchemyError) -> str:
    return (_driver_text(exc).splitlines() or [type(exc).__name__])[0]


def sqlite_path(parsed: URL) -> Path | None:
    return Path(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database else None


def results_folder(url: str) -> Path:
    """Where plots and checkpoints go by default: beside the SQLite database (``studies/`` for
    the default one), or ``studies/`` when the study lives on a server."""
    path = sqlite_path(parse_storage(url))
    return path.parent if path is not None else Path("studies")


def _sqlite_file(parsed: URL) -> Path | None:
    """The SQLite file behind a URL (None for other databases); refuses in-memory ones and folders."""
    if parsed.get_backend_name() != "sqlite":
        return None
    path = sqlite_path(parsed)
    if path is None or str(path) == ":memory:" or str(path).startswith("file::memory:"):
        raise UsageError("an in-memory SQLite database would be lost when the command ends",
                         hint="give a file, e.g. sqlite:///studies/cnn_tune.db")
    if path.is_dir():
        raise UsageError(f"{path} is a folder, not a database file", hint=f"use sqlite:///{path}/cnn_tune.db")
    return path


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
            raise StorageError(f"{path} exists and is not a SQLite database; left it untouched",
                               hint="point --storage at another file")
        _refuse_foreign_sqlite(url, path)
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the folder {path.parent}: {exc.strerror}",
                               hint="choose a writable location for --storage") from None
    return url


def check_can_write(url: str) -> None:
    """Before trials: a SQLite file (and its folder, where WAL keeps its -wal and -shm files)
    must be writable, or the first write would fail after the data has been read."""
    path = sqlite_path(parse_storage(url))
    if path is None:
        return
    for target in ([path] if path.exists() else []) + [path.parent]:
        if target.exists() and not os.access(target, os.W_OK):
            raise StorageError(f"cannot write to {target}: it is read-only",
                               hint="make the database file and its folder writable, or choose another --storage")


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
        raise StorageError(f"{path} is a SQLite database of something else (tables: {shown}); left it untouched",
                           hint="point --storage at another file")


def storage_exists(url: str) -> bool:
    """False only for a SQLite file not yet there: opening it would create it."""
    path = sqlite_path(parse_storage(url))
    return path is None or path.exists()


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
            raise UsageError(f"--grace ({self.grace_s}s) must be longer than --heartbeat ({self.interval_s}s), "
                             "or live trials would be failed between two beats",
                             hint=f"e.g. --grace {max(2 * self.interval_s, 2)}")
        return self


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
                beat = {} if heartbeat is None else {
                    "heartbeat_interval": heartbeat.interval_s, "grace_period": heartbeat.grace_s,
                    "heartbeat_stale_trial_callback":
                        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=heartbeat.max_retry)}
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
_LAST_URL: list[str | None] = [None]


def open_storage(url: str, heartbeat: Heartbeat | None = None, write: bool = False) -> optuna.storages.RDBStorage:
    """Open ``url`` through Optuna. ``write``: this process will run trials (SQLite gets WAL)."""
    parsed = parse_storage(url)
    shown = display_url(url)
    try:
        _LAST_URL[0] = url
        storage = _new_rdb_storage(url, parsed, heartbeat, write)
        _OPENED.add(storage)
        if write and parsed.get_backend_name() == "sqlite":
            _use_wal(storage)  # before the next line: the journal mode cannot change inside a transaction
            _serialize_sqlite_writes(storage)
        return storage
    except (ImportError, sqlalchemy.exc.NoSuchModuleError) as exc:
        backend = parsed.get_backend_name()
        raise DependencyMissing(f"no database driver for {shown}: {exc}",
                                hint=_DRIVER_EXTRA.get(backend, "install the SQLAlchemy driver for it")) from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise storage_failure(exc, url, "open") from None
    except RuntimeError as exc:  # Optuna: schema written by another Optuna version
        if "optuna storage upgrade" in str(exc) or "schema" in str(exc):
            raise StorageError(f"the schema of {shown} is older than this Optuna's",
                               hint=f"run: optuna storage upgrade --storage {shown}") from None
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
    path = _sqlite_file(parse_storage(url))
    if path is not None and not path.exists():
        raise StudyNotFound(f"no study database at {path}",
                            hint="run `cnn-tune optimize` first, or pass --storage URL of an existing one")
    if path is not None and path.stat().st_size == 0:  # opening it would write Optuna's schema
        raise StudyNotFound(f"{path} is an empty file, not a study database",
                            hint="run `cnn-tune optimize` first, or pass --storage URL of an existing one")
    prepare_storage(url)  # a SQLite file that is not Optuna's is refused untouched
    return open_storage(url)


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    return sorted(s.study_name for s in storage.get_all_studies())


def default_name(storage: optuna.storages.BaseStorage) -> str:
    """The study a command without ``--study`` means: the database's only cnn-tune study (so
    `retrain` after `optimize --dataset fashion-mnist` finds it), else ``mnist-cnn``. Where
    that is not there either, the error lists the studies to choose from."""
    ours = [s.study_name for s in storage.get_all_studies()
            if PROTOCOL_ATTR in s.user_attrs and not s.study_name.endswith(CONFIRM_SUFFIX)]
    return ours[0] if len(ours) == 1 else DEFAULT_STUDY


def load_existing(storage: optuna.storages.BaseStorage, url: str, name: str | None) -> optuna.Study:
    """The study called ``name`` (None: :func:`default_name`); if there is none, the error lists
    the ones that exist."""
    name = check_study_name(name) if name is not None else default_name(storage)
    study = find_study(storage, name)
    if study is not None:
        return study
    names = study_names(storage)
    there = f"it has: {', '.join(names[:10])}{' …' if len(names) > 10 else ''}" if names else "it has no studies yet"
    raise StudyNotFound(f"no study {name!r} in {display_url(url)}; {there}",
                        hint="pass --study NAME (`cnn-tune studies` lists them)")


def read_study(url: str, name: str | None) -> optuna.Study:
    """Open an existing study for inspection (None: :func:`default_name`); creates nothing."""
    return load_existing(open_existing(url), url, name)


def find_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study | None:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return optuna.load_study(study_name=name, storage=storage)


def stored_protocol(study: optuna.Study) -> Protocol:
    value = study.user_attrs.get(PROTOCOL_ATTR)
    if value is None:
        raise StorageError(f"study {study.study_name!r} was not created by cnn-tune (it has no protocol)",
                           hint="use another --study name")
    return Protocol.from_attr(value, study.study_name)


def check_protocol(name: str, stored: Protocol, protocol: Protocol) -> None:
    diffs = stored.differences(protocol)
    if diffs:
        raise ProtocolConflict(f"study {name!r} was run with another protocol: " + "; ".join(diffs),
                               hint="drop the conflicting options to resume it, or start a new one with --study NAME")


def create_or_load(storage: optuna.storages.BaseStorage, name: str, protocol: Protocol,
                   sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner
                   ) -> tuple[optuna.Study, bool]:
    """Open ``name`` with this run's sampler and pruner, creating it with ``protocol`` if new.
    True when this call created it: of several processes starting at once on a new study,
    exactly one (the database's unique study name decides), so one-time setup runs once."""
    try:
        study, created = optuna.create_study(storage=storage, study_name=name, direction=protocol.direction,
                                             sampler=sampler, pruner=pruner), True
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner), False
    if PROTOCOL_ATTR not in study.user_attrs:
        study.set_user_attr(PROTOCOL_ATTR, protocol.to_attr())
    if study.metric_names is None:  # named for optuna-dashboard, Optuna's plots and `optuna trials`
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC_NAME])
    check_protocol(name, stored_protocol(study), protocol)  # another process may have created it a moment before
    return study, created


def _by_trial(user_attrs: dict, prefix: str) -> dict[int, dict]:
    """Study user attrs named PREFIX + trial number, by trial number."""
    return {int(key[len(prefix):]): value for key, value in user_attrs.items()
            if key.startswith(prefix) and key[len(prefix):].isdigit()}


def retrain_records(study: optuna.Study | FrozenStudy) -> dict[int, dict]:
    """What `cnn-tune retrain` stored, by trial number (from a study, or a storage's record of one)."""
    return _by_trial(study.user_attrs, RETRAIN_ATTR_PREFIX)


def confirm_records(study: optuna.Study) -> dict[int, dict]:
    """What `cnn-tune confirm` stored (mean, std, 95% interval, runs), by trial number."""
    return _by_trial(study.user_attrs, CONFIRM_ATTR_PREFIX)


def confirmed_leader(study: optuna.Study) -> int | None:
    """The trial with the highest confirmed mean, once `cnn-tune confirm` has run."""
    found = confirm_records(study)
    return max(found, key=lambda n: found[n]["mean"]) if found else None


def record_retrain(study: optuna.Study, trial_number: int, record: dict) -> None:
    study.set_user_attr(f"{RETRAIN_ATTR_PREFIX}{trial_number}", record)


STORAGE_FAILURES = (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)

# The driver's words for a fault → what it is, and what to do. Checked in order, lower case.
_FAULTS = (
    (("readonly", "read-only", "read only"), "the database is read-only",
     "make the database file and its folder writable, or choose another --storage"),
    (("disk is full", "database or disk is full", "no space left"), "the disk is full",
     "free space on the disk that holds {where} (or point --storage elsewhere) and run the same command "
     "again; finished trials are safe"),
    (("malformed", "file is not a database", "file is encrypted"), "the file is damaged",
     "restore {where} from a copy (`cnn-tune backup` makes one) or start a new --storage; "
     "`sqlite3 {where} .recover` may save its trials"),
    (("disk i/o error",), "the disk reported an I/O error",
     "check the disk that holds {where}; `cnn-tune backup` copies what can still be read"),
    (("server closed the connection", "terminating connection", "connection refused", "connection reset",
      "could not receive data", "consuming input failed", "ssl syscall", "lost connection", "gone away",
      "connection is closed", "broken pipe", "the connection is lost"), "the connection to the database server failed",
     "check that the server at {where} is up, then run the same command again; finished trials are safe"),
)


def storage_cause(exc: BaseException) -> BaseException | None:
    """The storage failure behind ``exc``, following its chain (Optuna wraps failed commits in
    StorageInternalError, and a failure while it stores a trial's end can surface as its own
    AssertionError with the storage failure as its context); None if there is none."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sqlalchemy.exc.SQLAlchemyError):
            return current
        if isinstance(current, optuna.exceptions.StorageInternalError):
            inner = storage_cause(current.__cause__) if current.__cause__ is not None else None
            return inner or current
        current = current.__cause__ or current.__context__
    return None


def storage_failure(exc: BaseException, url: str | None = None, action: str = "use") -> StorageError:
    """One StorageError for a failed read or write: the storage, the cause, the fix."""
    cause = storage_cause(exc) or exc
    text = _first_line(cause) if isinstance(cause, sqlalchemy.exc.SQLAlchemyError) else str(cause).strip()
    url = url or last_opened_url()
    shown = display_url(url) if url else "the study database"
    path = sqlite_path(parse_storage(url)) if url else None
    where = str(path) if path is not None else shown
    lowered = text.lower()
    for needles, what, hint in _FAULTS:
        if any(n in lowered for n in needles):
            return StorageError(f"cannot {action} {shown}: {what} ({text})", hint=hint.format(where=where))
    return StorageError(f"cannot {action} {shown}: {text}", hint="check --storage")


@contextmanager
def writes_to(url: str):
    """Database errors while trials run (a read-only file, a full disk, a lost server) become
    one StorageError naming the storage, the cause and the fix."""
    try:
        yield
    except STORAGE_FAILURES as exc:
        raise storage_failure(exc, url, "write to") from None


def last_opened_url() -> str | None:
    """The URL of the storage this process opened last (for errors raised far from the open)."""
    return _LAST_URL[0]


@contextmanager
def quiet_libraries(debug: bool):
    """While a command runs, without --debug: library warnings users cannot act on (torch's
    pickle notes, Optuna's experimental features) are not shown, and an exception in a
    library's thread (Optuna's heartbeat thread on a full disk) prints no traceback — the
    main thread meets the same fault and reports it in one line. Restored afterwards."""
    if debug:
        yield
        return
    previous = threading.excepthook
    threading.excepthook = _silent_thread_failure
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        threading.excepthook = previous


def _silent_thread_failure(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is not None and issubclass(args.exc_type, STORAGE_FAILURES):
        return  # the heartbeat thread's write failed; the main thread meets and reports the fault
    name = args.thread.name if args.thread is not None else "a background thread"
    print(f"Error in {name}: {args.exc_type.__name__}: {args.exc_value} (run again with --debug for the traceback)",
          file=sys.stderr, flush=True)


def quiet_optuna(debug: bool) -> None:
    """Optuna logs every trial (and a traceback per failure); we print our own lines."""
    optuna.logging.set_verbosity(optuna.logging.INFO if debug else optuna.logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if not debug:
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
