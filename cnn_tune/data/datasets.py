"""Which images a study learns: a built-in data set by name, or a folder of the user's.

Torch-free, so the CLI and the protocol name the data without loading torch. ``--dataset`` is
parsed into a :class:`DatasetRef` by :func:`cnn_tune.data.load.parse_dataset`; the loading
itself is :mod:`cnn_tune.data.load` (built-in sets) and :mod:`cnn_tune.data.folder` (folders)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

Log = Callable[[str], None]  # where a command's progress notes go, a line at a time

MNIST = "mnist"
FASHION = "fashion-mnist"
FOLDER = "folder"  # the user's own images: train/<class>/*, optionally test/<class>/*
BUILTIN = (MNIST, FASHION)
DIGITS = tuple("0123456789")
# Fashion-MNIST's labels 0-9, as its authors name them
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
BUILTIN_CLASSES = {MNIST: DIGITS, FASHION: FASHION_CLASSES}
TITLES = {MNIST: "MNIST", FASHION: "Fashion-MNIST"}


@dataclass(frozen=True)
class DatasetRef:
    """A data set as a study records it: ``name`` (mnist, fashion-mnist or folder) and, for a
    folder, its absolute path."""

    name: str = MNIST
    source: str | None = None

    @property
    def title(self) -> str:
        return TITLES.get(self.name) or f"the images in {self.source}"

    @property
    def short(self) -> str:
        """``MNIST``, ``Fashion-MNIST`` or a folder's own name: for one-line summaries."""
        return TITLES.get(self.name) or Path(self.source or "").name

    def text(self) -> str:
        """``mnist``, ``fashion-mnist`` or ``folder /abs/path``: how messages name it."""
        return self.name if self.source is None else f"{self.name} {self.source}"


def default_study_name(ref: DatasetRef) -> str:
    """``mnist-cnn``, ``fashion-mnist-cnn``, or ``<folder name>-cnn``."""
    stem = ref.name if ref.source is None else Path(ref.source).name
    return f"{stem}-cnn"


DATA_DIR_ENV = "CNN_TUNE_DATA_DIR"  # default for --data-dir
