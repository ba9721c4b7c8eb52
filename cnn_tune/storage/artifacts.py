"""The final model kept with its study, in an Optuna artifact store (``optuna.artifacts``).

`retrain` uploads the checkpoint it wrote to a file store: by default the folder ``artifacts``
beside a SQLite database; for a server database a folder the user names (``--artifacts DIR``,
one that every machine of the study reaches). The retrain record names the artifact, its store
and the file's sha256, so any machine fetches the same model and checks it before loading it.
Optuna refuses to change a finished trial, so the artifact belongs to the study, named after its
trial (``mnist-cnn-trial10.pt``): optuna-dashboard lists it on the study's page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.artifacts.exceptions import ArtifactNotFound

from cnn_tune.errors import CheckpointError, UsageError
from cnn_tune.files import sha256_of
from cnn_tune.storage.urls import parse_storage, sqlite_path

ARTIFACTS_ENV = "CNN_TUNE_ARTIFACTS"  # default for --artifacts
KEPT = ("artifact_id", "artifact_store", "sha256")  # what a retrain record says of the kept model


def artifact_folder(url: str, asked: Path | None = None) -> Path | None:
    """Where the study's models are kept: as asked, else ``artifacts`` beside a SQLite database;
    None for a server database without a folder named (nothing every machine reaches is known)."""
    if asked is not None:
        return asked
    path = sqlite_path(parse_storage(url))
    return path.parent / "artifacts" if path is not None else None


def keep(owner: optuna.Study | optuna.Trial, file: Path, folder: Path) -> dict[str, Any]:
    """Upload ``file`` to the store in ``folder`` as an artifact of ``owner`` (a study, or a
    trial still running): what the record of it keeps (:data:`KEPT`)."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--artifacts {folder} is a file, not a folder", hint="name a folder")
    folder.mkdir(parents=True, exist_ok=True)
    artifact_id = upload_artifact(
        artifact_store=FileSystemArtifactStore(str(folder)), file_path=str(file), study_or_trial=owner
    )
    return {"artifact_id": artifact_id, "artifact_store": str(folder.resolve()), "sha256": sha256_of(file)}


def kept_at(record: dict[str, Any]) -> str | None:
    """Where a retrain record's model is kept: ``STORE/ID`` (None: it was not kept)."""
    if not all(record.get(k) for k in KEPT):
        return None
    return f"{record['artifact_store']}/{record['artifact_id']}"


def fetch(record: dict[str, Any], dest: Path) -> Path:
    """The kept model of a retrain record, downloaded to ``dest`` and checked against its sha256
    before anything loads it; a file that does not match is deleted."""
    where = kept_at(record)
    if where is None:
        raise CheckpointError(
            "this final model was not kept in an artifact store",
            hint="give the checkpoint file, or run `cnn-tune retrain` again to keep it",
        )
    try:
        download_artifact(
            artifact_store=FileSystemArtifactStore(record["artifact_store"]),
            file_path=str(dest),
            artifact_id=record["artifact_id"],
        )
    except (OSError, ArtifactNotFound) as exc:
        raise CheckpointError(
            f"the final model is not in its artifact store {where} ({type(exc).__name__})",
            hint="reach the store's folder from this machine, or give the checkpoint file",
        ) from None
    if sha256_of(dest) != record["sha256"]:
        dest.unlink(missing_ok=True)
        raise CheckpointError(
            f"the model fetched from {where} is not the one retrain kept (sha256 differs); deleted the copy",
            hint="run `cnn-tune retrain` again to keep a sound copy",
        )
    return dest
