"""Where a study is stored, before anything is opened: storage URLs (checked, shown without a
password), study names, SQLite file paths and the results folder beside them, and the
environment variables that name them. Opens nothing."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy
import sqlalchemy.event
import sqlalchemy.exc
from sqlalchemy.engine import URL, make_url

if TYPE_CHECKING:  # what a storage lists for each study (get_all_studies)
    pass
from cnn_tune.errors import StudyNameError, UsageError

DEFAULT_STORAGE = "sqlite:///studies/cnn_tune.db"
SERVER_CONNECT_TIMEOUT_S = 5  # PostgreSQL/MySQL: a server that does not answer fails this fast
DEFAULT_STUDY = "mnist-cnn"
SQLITE_BUSY_TIMEOUT_S = 30  # wait this long for another writer instead of failing with "database is locked"
_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_study_name(name: str) -> str:
    """Study names become file names (plots, checkpoints): refuse what would be unsafe there."""
    if not name or not name.strip():
        raise StudyNameError("the study name is empty", hint="pass --study NAME")
    if "/" in name or "\\" in name or ".." in name or re.search(r"[\x00-\x1f\x7f]", name):
        raise StudyNameError(
            f"study name {name!r} contains '/', '\\', '..' or a control character",
            hint="use letters, digits, '-', '_' and '.', e.g. --study mnist-cnn",
        )
    if len(name) > 200:
        raise StudyNameError("the study name is longer than 200 characters", hint="pass a shorter --study NAME")
    return name


def parse_storage(url: str) -> URL:
    try:
        parsed = make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError):
        raise UsageError(
            f"storage {display_url(url)!r} is not a database URL",
            hint="use e.g. sqlite:///studies/cnn_tune.db or postgresql+psycopg://user@host/db",
        ) from None
    return parsed


def display_url(url: str) -> str:
    """The URL with any password masked (``root:***@``): every message, summary and page that
    shows a storage URL shows it through this."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: mask what looks like user:password@
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


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
        raise UsageError(
            "an in-memory SQLite database would be lost when the command ends",
            hint="give a file, e.g. sqlite:///studies/cnn_tune.db",
        )
    if path.is_dir():
        raise UsageError(f"{path} is a folder, not a database file", hint=f"use sqlite:///{path}/cnn_tune.db")
    return path


STORAGE_ENV = "CNN_TUNE_STORAGE"  # default for --storage
STUDY_ENV = "CNN_TUNE_STUDY"  # default for --study
