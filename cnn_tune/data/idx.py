"""Reading and writing the raw IDX files MNIST ships as (the format torchvision keeps in ``MNIST/raw``).

An IDX file is a big-endian header — two zero bytes, a type code (0x08 = uint8), the number
of dimensions — then one uint32 per dimension, then the data. MNIST images are
``(N, 28, 28)`` uint8, labels ``(N,)`` uint8."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np

from cnn_tune.errors import DataError

_UINT8 = 0x08


def parse_idx(raw: bytes | np.ndarray, name: str) -> np.ndarray:
    """Decode the bytes of one IDX file (or a uint8 array over them: a view of it comes back);
    ``name`` is used in error messages only."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{name} is not an IDX file (bad magic number)", hint="delete it so it is fetched again")
    dtype_code, ndim = int(raw[2]), int(raw[3])
    if dtype_code != _UINT8 or ndim not in (1, 3):
        raise DataError(
            f"{name} is not an MNIST IDX file (type 0x{dtype_code:02x}, {ndim} dimensions)",
            hint="delete it so it is fetched again",
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name} is truncated (header cut short)", hint="delete it so it is fetched again")
    shape = struct.unpack(f">{ndim}I", bytes(raw[4:header]))
    expected = header + int(np.prod(shape, dtype=np.int64))
    if len(raw) != expected:
        raise DataError(
            f"{name} is truncated or corrupt: {len(raw)} bytes, its header promises {expected}",
            hint="delete it so it is fetched again",
        )
    if isinstance(raw, np.ndarray):
        return raw[header:].reshape(shape)
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path: Path) -> tuple[np.ndarray, str]:
    """Read an IDX file (or its ``.gz``); return the array and the md5 of the uncompressed bytes.

    A plain file is memory-mapped copy-on-write rather than read: its pages are the page
    cache's, so every process that maps it (the workers of ``--workers N``) shares one copy of
    the images instead of holding its own (a write would copy only the page written)."""
    try:
        if path.suffix == ".gz":
            raw: bytes | np.ndarray = gzip.decompress(path.read_bytes())
        elif path.stat().st_size == 0:
            raw = b""
        else:
            raw = np.memmap(path, dtype=np.uint8, mode="c")
    except (OSError, EOFError, gzip.BadGzipFile, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}", hint="delete it so it is fetched again") from None
    return parse_idx(raw, str(path)), hashlib.md5(raw).hexdigest()


def encode_idx(array: np.ndarray) -> bytes:
    if array.dtype != np.uint8 or array.ndim not in (1, 3):
        raise ValueError("IDX writer takes uint8 arrays of 1 or 3 dimensions")
    header = struct.pack(">BBBB", 0, 0, _UINT8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array).tobytes()
