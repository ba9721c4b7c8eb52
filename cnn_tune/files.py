"""Writing output files safely: checked before any work, written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import OutputError


def check_writable(path: Path, overwrite: bool = True, option: str = "--output PATH") -> None:
    """Fail before the work, not after: ``path`` must not be a folder, its folder must exist
    or be creatable and be writable; an existing file is refused unless ``overwrite``."""
    if path.is_dir():
        raise OutputError(f"{path} is a folder", hint="give a file name")
    if path.exists() and not overwrite:
        raise OutputError(f"{path} exists; left it untouched", hint=f"pass --overwrite or another {option}")
    folder = path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to the folder {folder}: permission denied",
                          hint="pass --output PATH in a writable folder")


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file under ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
