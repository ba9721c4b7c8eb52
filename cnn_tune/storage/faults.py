"""Faults of the study database turned into one line each (what happened, what to do), and the
library noise a command does not show: Optuna's per-trial logging, the warnings decided about
by name, a library thread's traceback when the main thread reports the same fault."""

from __future__ import annotations

import logging
import re
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

import optuna
import sqlalchemy
import sqlalchemy.event
import sqlalchemy.exc

from cnn_tune.errors import StorageError
from cnn_tune.storage.urls import display_url, parse_storage, sqlite_path


def _driver_text(exc: sqlalchemy.exc.SQLAlchemyError) -> str:
    """The driver's own message (``exc.orig``), without SQLAlchemy's SQL dump and links."""
    return str(getattr(exc, "orig", None) or exc).strip()


def _first_line(exc: sqlalchemy.exc.SQLAlchemyError) -> str:
    """The first line of the driver's message, without SQLAlchemy's "(Background on this error
    at: …)" link. A session whose connection was invalidated by a disconnect says only that it
    "can't reconnect until invalid transaction is rolled back" (no chained cause): that is a lost
    connection, said so."""
    if isinstance(exc, sqlalchemy.exc.PendingRollbackError) and "reconnect" in str(exc).lower():
        return "the connection was lost during a transaction"
    line = (_driver_text(exc).splitlines() or [type(exc).__name__])[0]
    return re.sub(r"\s*\(Background on this error at: [^)]*\)", "", line).strip()


_LAST_URL: list[str | None] = [None]


STORAGE_FAILURES = (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)

# The driver's words for a fault → what it is, and what to do. Checked in order, lower case.
_FAULTS = (
    (
        ("readonly", "read-only", "read only"),
        "the database is read-only",
        "make the database file and its folder writable, or choose another {option}",
    ),
    (
        ("disk is full", "database or disk is full", "no space left"),
        "the disk is full",
        "free space on the disk that holds {where} (or point {option} elsewhere) and run the same command "
        "again; finished trials are safe",
    ),
    (
        ("malformed", "file is not a database", "file is encrypted"),
        "the file is damaged",
        "restore {where} from a copy (`cnn-tune backup` makes one) or start a new {option}; "
        "`sqlite3 {where} .recover` may save its trials",
    ),
    (
        ("disk i/o error",),
        "the disk reported an I/O error",
        "check the disk that holds {where}; `cnn-tune backup` copies what can still be read",
    ),
    (
        (
            "server closed the connection",
            "terminating connection",
            "connection refused",
            "connection reset",
            "could not receive data",
            "consuming input failed",
            "ssl syscall",
            "lost connection",
            "gone away",
            "connection is closed",
            "broken pipe",
            "the connection is lost",
            "connection was lost",
        ),
        "the connection to the database server failed",
        "check that the server at {where} is up, then run the same command again; finished trials are safe",
    ),
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
    return _named(text, f"{action} {shown}", where, "--storage", "check --storage")


def file_failure(exc: OSError, folder: Path, action: str) -> StorageError:
    """One StorageError for a file the study keeps beside its database (an artifact) that could
    not be written: ``action`` (e.g. "keep trial 3's network in") and the folder, the cause, the fix."""
    return _named(
        str(exc).strip(), f"{action} {folder}", str(folder), "--artifacts", f"check that {folder} is a writable folder"
    )


def _named(text: str, what_failed: str, where: str, option: str, otherwise: str) -> StorageError:
    """The fault in the driver's or the OS's ``text``, named, with its fix; ``option`` is the one
    that chooses the place (``--storage`` for the database, ``--artifacts`` for its files);
    ``otherwise``: the hint for a fault not in the table."""
    lowered = text.lower()
    for needles, what, hint in _FAULTS:
        if any(n in lowered for n in needles):
            return StorageError(f"cannot {what_failed}: {what} ({text})", hint=hint.format(where=where, option=option))
    return StorageError(f"cannot {what_failed}: {text}", hint=otherwise)


@contextmanager
def writes_to(url: str):
    """Database errors while trials run (a read-only file, a full disk, a lost server) become
    one StorageError naming the storage, the cause and the fix."""
    try:
        yield
    except STORAGE_FAILURES as exc:
        raise storage_failure(exc, url, "write to") from None


def remember_opened(url: str) -> None:
    """Note the URL a storage is being opened at, for errors raised far from the open."""
    _LAST_URL[0] = url


def last_opened_url() -> str | None:
    """The URL of the storage this process opened last (for errors raised far from the open)."""
    return _LAST_URL[0]


# The library warnings cnn-tune has decided about, by category and message: nothing a user can
# act on. Any other warning (a deprecation in Optuna, torch, Typer or plotly) is shown, and
# the test suite turns the deprecations into errors.
DECIDED_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # cnn-tune relies on these "experimental" Optuna APIs: multivariate TPE, the GP sampler,
    # PED-ANOVA, the heartbeat and its retry callback, fail_stale_trials, metric names.
    (optuna.exceptions.ExperimentalWarning, ""),
    # torch.load(weights_only=True) notes a pickle protocol it may not read, just before it
    # refuses the file: cnn-tune then says in one line that the file is not its checkpoint.
    (UserWarning, "Detected pickle protocol"),
)


def ignore_decided_warnings() -> None:
    """Within a ``warnings.catch_warnings()`` block (or a process): hide the decided ones only."""
    for category, message in DECIDED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


@contextmanager
def quiet_libraries(debug: bool):
    """While a command runs, without --debug: the library warnings decided about
    (:data:`DECIDED_WARNINGS`) are not shown, and an exception in a library's thread (Optuna's
    heartbeat thread on a full disk) prints no traceback — the main thread meets the same
    fault and reports it in one line. Restored afterwards."""
    if debug:
        yield
        return
    previous = threading.excepthook
    threading.excepthook = _silent_thread_failure
    try:
        with warnings.catch_warnings():
            ignore_decided_warnings()
            yield
    finally:
        threading.excepthook = previous


def _silent_thread_failure(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is not None and issubclass(args.exc_type, STORAGE_FAILURES):
        return  # the heartbeat thread's write failed; the main thread meets and reports the fault
    name = args.thread.name if args.thread is not None else "a background thread"
    print(
        f"Error in {name}: {args.exc_type.__name__}: {args.exc_value} (run again with --debug for the traceback)",
        file=sys.stderr,
        flush=True,
    )


def quiet_optuna(debug: bool) -> None:
    """Optuna logs every trial (and a traceback per failure); we print our own lines."""
    optuna.logging.set_verbosity(optuna.logging.INFO if debug else optuna.logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if not debug:
        ignore_decided_warnings()
