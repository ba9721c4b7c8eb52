"""Fashion-MNIST offline: Debian's archive ``dataset-fashion-mnist``, which ships the four IDX
files gzipped under ``usr/share/datasets/fashion-mnist/``.

It is fetched with ``apt-get download`` (no root needed; the machine's own apt sources and
proxy apply), checked against a pinned sha256, and unpacked in Python — a ``.deb`` is an ``ar``
archive whose ``data.tar.*`` holds the files — without installing anything. The four
uncompressed files are checked against Fashion-MNIST's published md5s before any is written.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from cnn_tune.data.datasets import Log
from cnn_tune.errors import MirrorError
from cnn_tune.files import verify_sha256, write_atomic, write_checked

PACKAGE = "dataset-fashion-mnist"
VERSION = "0.0~git20200523.55506a9-1"
SHA256 = "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0"
MEMBER_DIR = "usr/share/datasets/fashion-mnist/"
# md5 of each uncompressed IDX file as published with Fashion-MNIST (and checked by torchvision)
CANONICAL_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
APT_TIMEOUT_S = 600


def ar_members(path: Path) -> dict[str, bytes]:
    """The members of an ``ar`` archive (a ``.deb``): a global header ``!<arch>\\n``, then per
    member a 60-byte header (name, …, decimal size at bytes 48-58, ``\\x60\\n``) and its data,
    padded to an even length."""
    raw = path.read_bytes()
    if not raw.startswith(b"!<arch>\n"):
        raise MirrorError(f"{path} is not a Debian archive (no ar header)", hint="delete it and run again")
    members, pos = {}, 8
    while pos + 60 <= len(raw):
        header = raw[pos : pos + 60]
        if header[58:60] != b"`\n":
            raise MirrorError(f"{path} is a damaged Debian archive", hint="delete it and run again")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip() or 0)
        members[name] = raw[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
    return members


def idx_from_deb(path: Path) -> dict[str, bytes]:
    """The four uncompressed IDX files inside the ``.deb`` at ``path``, by file name."""
    import io

    data = next((blob for name, blob in ar_members(path).items() if name.startswith("data.tar")), None)
    if data is None:
        raise MirrorError(f"{path} holds no data.tar member", hint="delete it and run again")
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
            for member in tar.getmembers():
                name = member.name.removeprefix("./")
                if member.isfile() and name.startswith(MEMBER_DIR) and name.endswith(".gz"):
                    stem = name[len(MEMBER_DIR) : -3]
                    if stem in CANONICAL_MD5:
                        found[stem] = gzip.decompress(tar.extractfile(member).read())  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise MirrorError(f"cannot unpack {path}: {exc}", hint="delete it and run again") from None
    missing = sorted(set(CANONICAL_MD5) - set(found))
    if missing:
        raise MirrorError(
            f"{path} lacks {', '.join(missing)} under {MEMBER_DIR}",
            hint="it is not the Fashion-MNIST archive; supply the IDX files by hand",
        )
    return found


def download_deb(dest: Path, log: Log) -> None:
    """``apt-get download`` the pinned version into a temporary folder, then move it to ``dest``."""
    if shutil.which("apt-get") is None:
        raise MirrorError("apt-get download: there is no apt-get on this machine")
    spec = f"{PACKAGE}={VERSION}"
    log(f"Fetching Fashion-MNIST with: apt-get download {spec}")
    with tempfile.TemporaryDirectory(prefix="cnn-tune-deb-") as tmp:
        try:
            done = subprocess.run(
                ["apt-get", "download", "-q", spec],
                cwd=tmp,
                capture_output=True,
                text=True,
                timeout=APT_TIMEOUT_S,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MirrorError(f"apt-get download {spec} failed: {exc}") from None
        debs = sorted(Path(tmp).glob("*.deb"))
        if done.returncode != 0 or not debs:
            lines = [ln for ln in (done.stderr or done.stdout).splitlines() if ln.startswith("E:")] or [
                ln for ln in (done.stderr or done.stdout).splitlines() if ln.strip()
            ]
            raise MirrorError(
                f"apt-get download {spec} failed: {lines[-1].strip() if lines else f'exit {done.returncode}'}"
            )
        write_atomic(dest, debs[0].read_bytes())


def install_from_debian(
    raw_dir: Path, cache_dir: Path, log: Log, sha256: str = SHA256, expected_md5: dict[str, str] = CANONICAL_MD5
) -> None:
    """Make the four IDX files in ``raw_dir`` from the Debian archive, keeping the ``.deb`` in
    ``cache_dir`` only until they are written."""
    deb = cache_dir / f"{PACKAGE}.deb"
    if not deb.exists():
        download_deb(deb, log)
    log(f"Verifying sha256 of {deb}")
    verify_sha256(deb, sha256)
    log("Unpacking the IDX files (checking Fashion-MNIST's md5s)")
    write_checked(
        idx_from_deb(deb),
        raw_dir,
        expected_md5,
        "from the Debian archive",
        "the archive is not canonical Fashion-MNIST; supply the IDX files by hand",
    )
    deb.unlink(missing_ok=True)
    try:
        cache_dir.rmdir()
    except OSError:  # not empty: something of the user's is there
        pass
