"""A folder of the user's own images as a data set.

Layout: ``train/<class>/*`` and optionally ``test/<class>/*``, PNG or JPEG of any size, colour
or grayscale; 2 to 100 classes, named by their folders (sorted: label k is the k-th name).
Every image is converted once to 28×28 grayscale (:func:`to_pixels`, which `predict` uses
too) and the result is kept under the data folder as the four IDX files MNIST ships as:

- ``<data dir>/folders/<fingerprint>/``: the IDX files, ``classes.json``;
- ``<data dir>/folders/listings/<key>``: the fingerprint of the folder whose listing (each
  image's path, size and modification time) digests to ``key``, so a rerun starts at once.

Everything is checked before anything is written: a bad folder leaves no cache behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from cnn_tune.data.datasets import Log
from cnn_tune.data.idx import encode_idx
from cnn_tune.data.images import data_fingerprint
from cnn_tune.errors import DataError, ImageError
from cnn_tune.files import write_atomic

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MIN_CLASSES, MAX_CLASSES = 2, 100
MIN_TRAIN = 10  # as for IDX files (cnn_tune.data.read_folder): an 80/20 split needs a few of each
SIDE = 28  # the network's input is (1, 28, 28)
CACHE = "folders"
Tick = Callable[[int, int], None]  # (images converted so far, of how many)


def to_pixels(path: Path, invert: bool = False) -> np.ndarray:
    """Any PIL-readable picture → uint8 (28, 28) grayscale; ``invert`` for dark on light."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            gray = img.convert("L")
    except FileNotFoundError:
        raise ImageError(f"no image at {path}", hint="check the path") from None
    except IsADirectoryError:
        raise ImageError(f"{path} is a folder, not an image", hint="give image files") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ImageError(f"cannot decode {path} as an image ({reason})", hint="give PNG or JPEG files") from None
    if gray.size != (SIDE, SIDE):
        # BILINEAR in Pillow filters over the whole source footprint when shrinking (antialiased)
        gray = gray.resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(gray, dtype=np.uint8)  # (28, 28)
    return 255 - pixels if invert else pixels


@dataclass(frozen=True)
class Listing:
    """What a folder holds, checked: class names, (image, label) pairs per part, the listing's digest."""

    root: Path
    classes: tuple[str, ...]
    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]]
    ignored: int  # files that are not PNG or JPEG
    key: str


def _class_folders(part: Path) -> list[str]:
    return sorted(d.name for d in part.iterdir() if d.is_dir() and not d.name.startswith("."))


def _images(part: Path, classes: list[str], label: dict[str, int]) -> tuple[list[tuple[Path, int]], int]:
    found, ignored = [], 0
    for name in classes:
        for path in sorted((part / name).rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                found.append((path, label[name]))
            else:
                ignored += 1
    return found, ignored


def scan(root: Path) -> Listing:
    """List and check ``root``; each problem is one :class:`DataError` naming the folder or file."""
    train_dir, test_dir = root / "train", root / "test"
    if not root.is_dir():
        raise DataError(f"the image folder {root} is not there", hint="pass --dataset with an existing folder")
    if not train_dir.is_dir():
        raise DataError(
            f"{root} has no train/ folder",
            hint=f"put the training images in {train_dir}/<class>/, one folder per class",
        )
    classes = _class_folders(train_dir)
    if not MIN_CLASSES <= len(classes) <= MAX_CLASSES:
        few = len(classes) < MIN_CLASSES
        raise DataError(
            f"{train_dir} holds {len(classes)} class folder(s); cnn-tune takes {MIN_CLASSES} to {MAX_CLASSES}",
            hint="one folder per class: train/cat/, train/dog/, …" if few else "merge classes into at most 100 folders",
        )
    label = {name: k for k, name in enumerate(classes)}
    train, ignored = _images(train_dir, classes, label)
    counts = {name: 0 for name in classes}
    for _, k in train:
        counts[classes[k]] += 1
    empty = [name for name, n in counts.items() if n == 0]
    if empty:
        raise DataError(
            f"class folder {train_dir / empty[0]} holds no PNG or JPEG image",
            hint="add images to it or remove the folder",
        )
    if len(train) < MIN_TRAIN:
        raise DataError(
            f"{train_dir} holds {len(train)} images; cnn-tune needs at least {MIN_TRAIN}", hint="add training images"
        )
    test: list[tuple[Path, int]] = []
    if test_dir.is_dir():
        test_classes = _class_folders(test_dir)
        unknown = [name for name in test_classes if name not in label]
        if unknown:
            raise DataError(
                f"{test_dir} has classes that train/ lacks: {', '.join(unknown[:5])}",
                hint="rename or remove them, or add train/<class>/ images for them",
            )
        test, more = _images(test_dir, test_classes, label)
        ignored += more
    digest = hashlib.sha256("\n".join(classes).encode())
    for path, _ in train + test:
        stat = path.stat()
        digest.update(f"\n{path.relative_to(root)}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
    return Listing(root, tuple(classes), train, test, ignored, digest.hexdigest()[:32])


def decode(listing: Listing, log: Log, tick: Tick | None = None) -> dict[str, np.ndarray]:
    """Every image of the listing as uint8 (N, 28, 28) with its labels (N,), train and test.
    A file that does not decode stops it, named."""
    pairs = listing.train + listing.test
    log(f"Converting the {len(pairs)} images of {listing.root} to 28×28 grayscale (once: they are cached)")
    pixels = np.empty((len(pairs), SIDE, SIDE), dtype=np.uint8)
    for i, (path, _) in enumerate(pairs):
        try:
            pixels[i] = to_pixels(path)
        except ImageError as exc:
            raise DataError(exc.message, hint="remove or replace that file") from None
        if tick is not None and ((i + 1) % 64 == 0 or i + 1 == len(pairs)):
            tick(i + 1, len(pairs))
    labels = np.array([k for _, k in pairs], dtype=np.uint8)
    n = len(listing.train)
    return {
        "train-images-idx3-ubyte": pixels[:n],
        "train-labels-idx1-ubyte": labels[:n],
        "t10k-images-idx3-ubyte": pixels[n:],
        "t10k-labels-idx1-ubyte": labels[n:],
    }


def _store(cache: Path, fingerprint: str, blobs: dict[str, bytes], classes: tuple[str, ...]) -> Path:
    """Write the IDX files and class names into ``cache/<fingerprint>`` whole: built in a
    temporary folder beside it, then renamed into place (another process may win: same content)."""
    target = cache / fingerprint
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{fingerprint}."))
    try:
        for name, blob in blobs.items():
            (tmp / name).write_bytes(blob)
        (tmp / "classes.json").write_text(json.dumps(list(classes)) + "\n")
        os.chmod(tmp, 0o755)
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not target.is_dir():
            raise
    return target


def cached_classes(folder: Path) -> tuple[str, ...]:
    try:
        classes = json.loads((folder / "classes.json").read_text())
    except (OSError, ValueError) as exc:
        raise DataError(
            f"cannot read the class names cached in {folder}: {exc}",
            hint=f"delete {folder}; it is made again from the image folder",
        ) from None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{folder}/classes.json is not a list of names", hint=f"delete {folder}")
    return tuple(classes)


def prepare_folder(
    root: Path, data_dir: Path, log: Log, fingerprint: str | None = None, tick: Tick | None = None
) -> tuple[Path, tuple[str, ...]]:
    """The folder of IDX files that holds ``root``'s images converted, and the class names:
    converted now unless cached. A study's ``fingerprint`` reads its cached copy first, so it
    keeps training on what it was tuned on even if the folder has moved or changed since."""
    cache = data_dir / CACHE
    if fingerprint is not None and (cache / fingerprint).is_dir():
        log(f"Reading the images of {root} as cached in {cache / fingerprint}")
        return cache / fingerprint, cached_classes(cache / fingerprint)
    if fingerprint is not None and not root.is_dir():
        raise DataError(
            f"the image folder {root} is not there, and no copy of its images (fingerprint "
            f"{fingerprint}) is cached in {cache}",
            hint="restore the folder, or pass --data-dir where its cache lives",
        )
    listing = scan(root)
    if listing.ignored:
        log(f"Ignored {listing.ignored} file(s) in {root} that are not PNG or JPEG")
    index = cache / "listings" / listing.key
    known = index.read_text().strip() if index.is_file() else None
    if known and (cache / known).is_dir():
        log(f"Reading the images of {root} as cached in {cache / known}")
        return cache / known, cached_classes(cache / known)
    blobs = {name: encode_idx(array) for name, array in decode(listing, log, tick).items()}
    fingerprint = data_fingerprint(
        {name: hashlib.md5(blob).hexdigest() for name, blob in blobs.items()}, listing.classes
    )
    target = _store(cache, fingerprint, blobs, listing.classes)
    write_atomic(index, (target.name + "\n").encode())
    log(
        f"Cached {len(listing.train)} training and {len(listing.test)} test images of "
        f"{len(listing.classes)} classes in {target}"
    )
    return target, listing.classes
