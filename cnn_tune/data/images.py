"""The images in memory (uint8 arrays, shared by worker processes through memory-mapped IDX
files), their fingerprint, and the fixed, seeded train/validation split.

torch is imported only when tensors are asked for: the parent of ``optimize --workers N`` reads
the data (to check and fingerprint it) but never trains, and stays without torch's ~345 MB."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnn_tune.data.datasets import DIGITS, FOLDER, DatasetRef

if TYPE_CHECKING:
    import torch

VAL_FRACTION = 0.2


@dataclass(frozen=True)
class Images:
    """The whole data set on the CPU as uint8: images (N, 28, 28), labels (N,) in
    0..len(classes)-1. A folder without test images has (0, 28, 28) and (0,) test arrays. Held
    as numpy arrays (or tensors); ``train_images`` etc. are torch tensors over the same memory."""

    train_x: np.ndarray  # (N, 28, 28) uint8
    train_y: np.ndarray  # (N,) uint8
    test_x: np.ndarray  # (M, 28, 28) uint8
    test_y: np.ndarray  # (M,) uint8
    md5: dict[str, str]  # md5 of each uncompressed IDX file, by file name
    folder: Path  # the IDX files' folder (a worker process reads them from there)
    ref: DatasetRef = DatasetRef()
    classes: tuple[str, ...] = DIGITS  # label k's name

    @property
    def fingerprint(self) -> str:
        """One short digest of the training files (and of a folder's class names): trials on
        different data never mix. Built-in sets keep the digest they always had."""
        return data_fingerprint(self.md5, self.classes if self.ref.name == FOLDER else None)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_train_images(self) -> int:
        """Every training image (60,000 for MNIST): the study's split takes its train and
        validation parts from these (a protocol's ``n_train`` is the train part)."""
        return len(self.train_y)

    @property
    def n_test_images(self) -> int:
        return len(self.test_y)

    # Tensors sharing the arrays' memory (no copy): built on each access, which costs nothing.
    @property
    def train_images(self) -> "torch.Tensor":
        return _tensor(self.train_x)

    @property
    def train_labels(self) -> "torch.Tensor":
        return _tensor(self.train_y)

    @property
    def test_images(self) -> "torch.Tensor":
        return _tensor(self.test_x)

    @property
    def test_labels(self) -> "torch.Tensor":
        return _tensor(self.test_y)


def _tensor(values: "np.ndarray | torch.Tensor") -> "torch.Tensor":
    import torch

    return torch.as_tensor(values)


@dataclass(frozen=True)
class Split:
    """Index tensors into the training set; the same for every trial of a study."""

    train: "torch.Tensor"  # (n_train,) int64
    val: "torch.Tensor"  # (n_val,) int64


def split_sizes(n_images: int, limit: int | None) -> tuple[int, int]:
    """(n_train, n_val) of :func:`make_split`'s split, without making it (or importing torch)."""
    n = n_images if limit is None else min(limit, n_images)
    n_val = max(1, int(round(n * VAL_FRACTION)))
    return n - n_val, n_val


def make_split(n_images: int, limit: int | None, seed: int) -> Split:
    """A seeded 80/20 split of the first ``limit`` images of a seeded permutation of the
    training set. The same (n_images, limit, seed) always gives the same split."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_images, generator=gen)
    if limit is not None:
        perm = perm[:limit]
    _, n_val = split_sizes(n_images, limit)
    return Split(train=perm[n_val:].clone(), val=perm[:n_val].clone())


def data_fingerprint(md5: dict[str, str], classes: tuple[str, ...] | None = None) -> str:
    """One short digest of a data set's training files, by their md5s (and of a folder's class
    names, where the names are not fixed by the data set): trials on different data never mix."""
    joined = md5["train-images-idx3-ubyte"] + md5["train-labels-idx1-ubyte"]
    if classes is not None:
        joined += "\n".join(classes)
    return hashlib.md5(joined.encode()).hexdigest()[:16]
