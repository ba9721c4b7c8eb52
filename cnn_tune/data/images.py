"""The images in memory (uint8 tensors, shared by worker processes through memory-mapped IDX
files), their fingerprint, and the fixed, seeded train/validation split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from cnn_tune.data.datasets import DIGITS, FOLDER, DatasetRef

VAL_FRACTION = 0.2


@dataclass(frozen=True)
class Images:
    """The whole data set on the CPU as uint8: images (N, 28, 28), labels (N,) in
    0..len(classes)-1. A folder without test images has (0, 28, 28) and (0,) test tensors."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
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


@dataclass(frozen=True)
class Split:
    """Index tensors into the training set; the same for every trial of a study."""

    train: torch.Tensor  # (n_train,) int64
    val: torch.Tensor  # (n_val,) int64


def make_split(n_images: int, limit: int | None, seed: int) -> Split:
    """A seeded 80/20 split of the first ``limit`` images of a seeded permutation of the
    training set. The same (n_images, limit, seed) always gives the same split."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_images, generator=gen)
    if limit is not None:
        perm = perm[:limit]
    n_val = max(1, int(round(len(perm) * VAL_FRACTION)))
    return Split(train=perm[n_val:].clone(), val=perm[:n_val].clone())


def data_fingerprint(md5: dict[str, str], classes: tuple[str, ...] | None = None) -> str:
    """One short digest of a data set's training files, by their md5s (and of a folder's class
    names, where the names are not fixed by the data set): trials on different data never mix."""
    joined = md5["train-images-idx3-ubyte"] + md5["train-labels-idx1-ubyte"]
    if classes is not None:
        joined += "\n".join(classes)
    return hashlib.md5(joined.encode()).hexdigest()[:16]
