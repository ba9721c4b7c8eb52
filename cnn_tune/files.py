"""Writing output files safely: checked before any work, written whole or not at all; downloaded
files checked against their pinned digests before anything is kept."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from cnn_tune.errors import ChecksumMismatch, MirrorError, OutputError


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
        raise OutputError(
            f"cannot write to the folder {folder}: permission denied", hint="pass --output PATH in a writable folder"
        )


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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Delete ``path`` and raise if its sha256 is not ``expected``."""
    actual = sha256_of(path)
    if actual != expected:
        path.unlink(missing_ok=True)
        raise ChecksumMismatch(
            f"mirror file {path} has sha256 {actual[:12]}…, expected {expected[:12]}…; deleted it",
            hint="run the command again to download it afresh",
        )


def write_checked(blobs: dict[str, bytes], raw_dir: Path, expected_md5: dict[str, str], origin: str, hint: str) -> None:
    """Write each IDX file's bytes to ``raw_dir`` once every one matches its md5; else write none."""
    for name, blob in blobs.items():
        md5 = hashlib.md5(blob).hexdigest()
        if md5 != expected_md5[name]:
            raise MirrorError(f"{name} {origin} has md5 {md5}, expected {expected_md5[name]}", hint=hint)
    for name, blob in blobs.items():
        write_atomic(raw_dir / name, blob)
