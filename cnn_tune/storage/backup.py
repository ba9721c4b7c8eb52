"""`cnn-tune backup`: a consistent copy of a live SQLite study database.

SQLite's online backup API (through Python's ``sqlite3``) copies the file page by page as one
consistent snapshot while workers keep writing; the copy is written beside the destination,
reopened with Optuna to check that every study loads, and only then renamed into place.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

import optuna

from cnn_tune.errors import StorageError, UsageError
from cnn_tune.files import check_writable
from cnn_tune.storage.engine import check_existing, open_storage
from cnn_tune.storage.faults import STORAGE_FAILURES, storage_failure
from cnn_tune.storage.urls import SQLITE_BUSY_TIMEOUT_S, display_url, parse_storage, sqlite_path

SERVER_DUMP = {
    "postgresql": "pg_dump -Fc DBNAME > cnn_tune.dump",
    "mysql": "mysqldump DBNAME > cnn_tune.sql",
    "mariadb": "mysqldump DBNAME > cnn_tune.sql",
}


@dataclass(frozen=True)
class Backup:
    source: str
    dest: Path
    studies: dict[str, int]  # study name → trials in the copy
    bytes: int


def backup(url: str, dest: Path, overwrite: bool = False) -> Backup:
    parsed = parse_storage(url)
    backend = parsed.get_backend_name()
    if backend != "sqlite":
        tool = SERVER_DUMP.get(backend, "the database's own dump tool")
        raise UsageError(
            f"backup copies SQLite files; {display_url(url)} is a {backend} server",
            hint=f"use the server's tool, e.g. {tool}",
        )
    source = sqlite_path(parsed)
    check_existing(url)  # refuses a missing, empty or foreign file before anything is written (opens nothing)
    dest = Path(dest)
    if source is not None and dest.resolve() == source.resolve():
        raise UsageError("the backup would overwrite the database itself", hint="give another DEST")
    check_writable(dest, overwrite=overwrite, option="DEST")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _copy(source, tmp)
        counts = _verify(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return Backup(display_url(url), dest, counts, dest.stat().st_size)


def _copy(source: Path, target: Path) -> None:
    """One consistent snapshot, even while other processes write (they wait at most briefly)."""
    try:
        with sqlite3.connect(source, timeout=SQLITE_BUSY_TIMEOUT_S) as src, sqlite3.connect(target) as dst:
            src.backup(dst, pages=256)  # in steps: writers are blocked only during each step
        dst.close()
        src.close()
    except sqlite3.Error as exc:
        raise storage_failure(exc, f"sqlite:///{source}", "back up") from None


def _verify(copy: Path) -> dict[str, int]:
    """Every study of the copy loads with Optuna; returns their trial counts."""
    storage = open_storage(f"sqlite:///{copy}")
    try:
        names = [s.study_name for s in storage.get_all_studies()]
        return {n: len(optuna.load_study(study_name=n, storage=storage).get_trials(deepcopy=False)) for n in names}
    except STORAGE_FAILURES as exc:
        raise StorageError(
            f"the copy in {copy} does not load with Optuna ({exc})",
            hint="the source may be damaged; run the backup again",
        ) from None
    finally:
        storage.engine.dispose()
