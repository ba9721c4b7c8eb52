"""Data sets beyond MNIST: Fashion-MNIST's offline Debian source, and folders of the user's
own images, end to end through the real CLI (tiny images the tests write)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import optuna
import pytest
from conftest import CLASSES, FILES, assert_one_line_error, idx_bytes, synthetic_digits, write_folder
from typer.testing import CliRunner

from cnn_tune.cli.main import app
from cnn_tune.data import debian
from cnn_tune.data.load import load_builtin, read_folder
from cnn_tune.errors import ChecksumMismatch, DataError, MirrorError
from cnn_tune.files import sha256_of
from cnn_tune.search.samplers import hopeless_below
from cnn_tune.storage.protocol import PROTOCOL_ATTR, StudyProtocol

# --- Fashion-MNIST from the Debian archive --------------------------------------------------


def _ar(members: dict[str, bytes]) -> bytes:
    """An ``ar`` archive written by hand (independently of cnn_tune.data.debian, which reads it)."""
    out = b"!<arch>\n"
    for name, blob in members.items():
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(blob):<10}`\n".encode()
        out += header + blob + (b"\n" if len(blob) % 2 else b"")
    return out


def fake_deb(path: Path, arrays: dict[str, np.ndarray]) -> dict[str, str]:
    """A .deb shaped like Debian's dataset-fashion-mnist; returns the md5 of each IDX file."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w:xz") as tar:
        for name, array in arrays.items():
            blob = gzip.compress(idx_bytes(array))
            info = tarfile.TarInfo(f"./usr/share/datasets/fashion-mnist/{name}.gz")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    path.write_bytes(_ar({"debian-binary": b"2.0\n", "control.tar.xz": b"", "data.tar.xz": data.getvalue()}))
    return {name: hashlib.md5(idx_bytes(array)).hexdigest() for name, array in arrays.items()}


def _arrays() -> dict[str, np.ndarray]:
    (x, y), (tx, ty) = synthetic_digits(40, 3), synthetic_digits(10, 4)
    return dict(zip(FILES, (x, y, tx, ty)))


def test_the_debian_archive_becomes_the_four_idx_files(tmp_path):
    cache = tmp_path / "mirror"
    cache.mkdir()
    deb = cache / f"{debian.PACKAGE}.deb"
    md5 = fake_deb(deb, _arrays())
    log: list[str] = []
    debian.install_from_debian(tmp_path / "raw", cache, log.append, sha256_of(deb), md5)
    data = read_folder(tmp_path / "raw")
    assert data.train_images.shape == (40, 28, 28) and data.test_labels.shape == (10,)
    assert not cache.exists()  # the archive is not kept once unpacked
    assert any("sha256" in line for line in log)


def test_a_tampered_archive_is_deleted_and_nothing_written(tmp_path):
    cache = tmp_path / "mirror"
    cache.mkdir()
    deb = cache / f"{debian.PACKAGE}.deb"
    md5 = fake_deb(deb, _arrays())
    with pytest.raises(ChecksumMismatch, match="deleted it"):
        debian.install_from_debian(tmp_path / "raw", cache, lambda _: None, "0" * 64, md5)
    assert not deb.exists() and not (tmp_path / "raw").exists()
    fake_deb(deb, _arrays())  # right sha256, but the files are not Fashion-MNIST's
    with pytest.raises(MirrorError, match="md5"):
        debian.install_from_debian(tmp_path / "raw", cache, lambda _: None, sha256_of(deb))
    assert not (tmp_path / "raw").exists()


def test_fashion_mnist_names_every_source_it_tried(tmp_path, monkeypatch):
    def no_torchvision(root, log, name):
        raise DataError(f"torchvision's hosts for {name} did not answer")

    monkeypatch.setattr("cnn_tune.data.load.download_torchvision", no_torchvision)
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get here
    with pytest.raises(DataError) as info:
        load_builtin("fashion-mnist", tmp_path / "nothing")
    err = info.value.one_line()
    assert "Fashion-MNIST not found" in err and "torchvision's hosts for fashion-mnist" in err
    assert "no apt-get on this machine" in err and "FashionMNIST/raw" in err and "--data-dir" in err


def test_real_debian_archive_gives_canonical_fashion_mnist(tmp_path):
    """The real thing: apt-get download, pinned sha256, IDX files with Fashion-MNIST's md5s."""
    try:
        debian.install_from_debian(tmp_path / "raw", tmp_path / "mirror", lambda _: None)
    except MirrorError as exc:
        if "apt-get" in exc.message:
            pytest.skip(f"Debian's archive not reachable: {exc.message}")
        raise
    data = load_builtin("fashion-mnist", tmp_path)
    assert data.train_images.shape == (60000, 28, 28) and data.classes[9] == "Ankle boot"
    for name, md5 in debian.CANONICAL_MD5.items():
        assert data.md5[name] == md5


# --- the user's own images --------------------------------------------------------------------


@pytest.fixture()
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_TUNE_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CNN_TUNE_STORAGE", f"sqlite:///{tmp_path / 'studies' / 's.db'}")
    monkeypatch.delenv("CNN_TUNE_STUDY", raising=False)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args))


def test_a_folder_of_images_runs_end_to_end(run, tmp_path):
    folder = write_folder(tmp_path / "shapes")
    r = run(
        "optimize",
        "--dataset",
        str(folder),
        "--trials",
        "2",
        "--epochs",
        "4",
        "--device",
        "cpu",
        "--seed",
        "1",
        "--pruner",
        "none",
    )
    assert r.exit_code == 0, r.output
    assert "images of shapes" in r.stderr and "Converting the 114 images" in r.stderr
    study = optuna.load_study(study_name="shapes-cnn", storage=f"sqlite:///{tmp_path / 'studies' / 's.db'}")
    protocol = StudyProtocol.from_attr(study.user_attrs[PROTOCOL_ATTR], "shapes-cnn")
    assert protocol.dataset == "folder" and protocol.ref.source == str(folder.resolve())
    assert protocol.classes == CLASSES and protocol.architecture == "ConvNet-v3"  # the wide space's network
    assert "shapes" in run("studies").stdout

    again = run(
        "optimize", "--dataset", str(folder), "--trials", "1", "--epochs", "4", "--device", "cpu", "--seed", "2"
    )
    assert again.exit_code == 0, again.output
    assert "Converting" not in again.stderr  # cached: a rerun starts at once

    r = run(
        "retrain",
        "--recipe",
        "best",
        "--epochs",
        "20",
        "--device",
        "cpu",
        "--format",
        "json",
        "--output",
        str(tmp_path / "m.pt"),
    )
    assert r.exit_code == 0, r.output
    done = json.loads(r.stdout)
    assert done["classes"] == list(CLASSES) and done["n_test"] == 24 and len(done["confusion"]) == 3
    assert done["recipe"]["shift"] == 0  # `best` shifts digits only (docs/performance.md)
    assert done["test_accuracy"] > 0.5  # three easy shapes; chance is a third

    r = run("evaluate", str(tmp_path / "m.pt"), "--format", "json")
    assert r.exit_code == 0 and json.loads(r.stdout)["test_accuracy"] == done["test_accuracy"]

    images = sorted((folder / "test").rglob("*.*"))
    r = run("predict", str(tmp_path / "m.pt"), *map(str, images), "--format", "json")
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert {g["class"] for g in got} <= set(CLASSES) and "digit" not in got[0]
    assert sum(g["class"] == Path(g["image"]).parent.name for g in got) > len(got) / 2
    table = run("predict", str(tmp_path / "m.pt"), str(images[0])).stdout
    assert table.splitlines()[0].split()[:2] == ["image", "class"]


def test_without_test_images_retrain_reports_no_test_accuracy(run, tmp_path):
    folder = write_folder(tmp_path / "notest", test=False)
    assert (
        run(
            "optimize",
            "--dataset",
            str(folder),
            "--trials",
            "1",
            "--epochs",
            "2",
            "--device",
            "cpu",
            "--pruner",
            "none",
        ).exit_code
        == 0
    )
    r = run("retrain", "--device", "cpu", "--format", "json", "--output", str(tmp_path / "m.pt"))
    assert r.exit_code == 0, r.output
    done = json.loads(r.stdout)
    assert done["test_accuracy"] is None and done["n_test"] == 0 and done["val_accuracy"] is not None
    assert "No test set" in r.stderr
    table = run("retrain", "--device", "cpu", "--output", str(tmp_path / "n.pt")).stdout
    assert "No test set" in table
    assert_one_line_error(run("evaluate", str(tmp_path / "m.pt")), 1, "has no test images", "test/<class>/")


def _no_train(root: Path) -> None:
    (root / "pictures").mkdir(parents=True)


def _one_class(root: Path) -> None:
    write_folder(root)
    for name in CLASSES[1:]:
        for f in (root / "train" / name).iterdir():
            f.unlink()
        (root / "train" / name).rmdir()


def _empty_class(root: Path) -> None:
    write_folder(root)
    (root / "train" / "zebra").mkdir()
    (root / "train" / "zebra" / "notes.txt").write_text("no image here")


def _unreadable(root: Path) -> None:
    write_folder(root)
    (root / "train" / "disc" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")


def _test_class_unknown(root: Path) -> None:
    write_folder(root)
    (root / "test" / "bar").rename(root / "test" / "pole")


@pytest.mark.parametrize(
    "make, fragments",
    [
        (_no_train, ("has no train/ folder", "one folder per class")),
        (_one_class, ("holds 1 class folder(s)", "2 to 100")),
        (_empty_class, ("zebra holds no PNG or JPEG image",)),
        (_unreadable, ("cannot decode", "broken.png", "remove or replace")),
        (_test_class_unknown, ("classes that train/ lacks: pole",)),
    ],
    ids=["no-train", "one-class", "empty-class", "unreadable-image", "unknown-test-class"],
)
def test_a_bad_folder_is_one_line_and_writes_nothing(run, tmp_path, make, fragments):
    make(tmp_path / "bad")
    r = run("optimize", "--dataset", str(tmp_path / "bad"), "--trials", "1", "--device", "cpu")
    assert_one_line_error(r, 1, *fragments)
    assert not (tmp_path / "studies" / "s.db").exists()  # no study database
    assert not (tmp_path / "cache").exists()  # no converted images


def test_a_missing_dataset_is_a_usage_error(run, tmp_path):
    assert_one_line_error(
        run("optimize", "--dataset", str(tmp_path / "nope")), 2, "neither mnist nor fashion-mnist", "train/<class>/"
    )
    (tmp_path / "f.png").write_bytes(b"")
    assert_one_line_error(run("optimize", "--dataset", str(tmp_path / "f.png")), 2, "is a file, not a folder")
    assert not (tmp_path / "studies" / "s.db").exists()


def test_a_study_is_never_resumed_on_another_data_set(run, tmp_path):
    folder = write_folder(tmp_path / "shapes")
    assert (
        run(
            "optimize",
            "--dataset",
            str(folder),
            "--trials",
            "1",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--pruner",
            "none",
        ).exit_code
        == 0
    )
    r = run("optimize", "--study", "shapes-cnn", "--dataset", "mnist", "--trials", "1", "--device", "cpu")
    assert_one_line_error(r, 2, f"was tuned on folder {folder.resolve()}; you asked for mnist", "drop --dataset")
    other = write_folder(tmp_path / "other", seed=5)  # same classes, other images: another fingerprint
    r = run("optimize", "--study", "shapes-cnn", "--dataset", str(other), "--trials", "1", "--device", "cpu")
    assert_one_line_error(r, 2, "data_fingerprint")
    assert "shapes-cnn" in run("best").stdout  # the database's only study
    assert (
        run(
            "optimize", "--dataset", str(other), "--trials", "1", "--epochs", "1", "--device", "cpu", "--pruner", "none"
        ).exit_code
        == 0
    )  # a second study, other-cnn
    assert_one_line_error(run("best"), 2, "no study 'mnist-cnn'", "other-cnn, shapes-cnn", "--study NAME")


def test_a_moved_folder_is_found_in_the_cache_by_its_fingerprint(run, tmp_path):
    folder = write_folder(tmp_path / "shapes")
    assert (
        run(
            "optimize",
            "--dataset",
            str(folder),
            "--trials",
            "1",
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--pruner",
            "none",
        ).exit_code
        == 0
    )
    folder.rename(tmp_path / "elsewhere")
    r = run("retrain", "--device", "cpu", "--output", str(tmp_path / "m.pt"))
    assert r.exit_code == 0, r.output
    assert "as cached in" in r.stderr


def test_a_study_from_before_data_sets_is_mnist():
    old = {
        "epochs": 10,
        "train_limit": None,
        "split_seed": 0,
        "val_fraction": 0.2,
        "n_train": 48000,
        "n_val": 12000,
        "data_fingerprint": "f" * 16,
        "search_space_version": 1,
        "architecture": "ConvNet-v1",
        "objective": "val_accuracy",
        "direction": "maximize",
    }
    protocol = StudyProtocol.from_attr(old, "old")
    assert protocol.dataset == "mnist" and protocol.class_names == tuple("0123456789")
    moved = StudyProtocol.from_attr({**old, "dataset_source": "/elsewhere"}, "old")
    assert moved.ref.source == "/elsewhere" and protocol.differences(moved) == []  # where it was read is not what


def test_the_hopeless_floor_keeps_its_distance_from_chance():
    assert hopeless_below(10) == pytest.approx(0.5)  # MNIST's, as before
    assert hopeless_below(2) > hopeless_below(3) > hopeless_below(10) > hopeless_below(100) > 0.01


def test_the_best_recipe_shifts_digits_only():
    from cnn_tune.model.recipe import RECIPES
    from cnn_tune.model.space import Style

    best = RECIPES["best"]

    def shift(recipe, dataset: str) -> int:
        return recipe.for_member(Style(), "Adam", dataset).shift

    assert shift(best, "mnist") == 2
    assert shift(best, "fashion-mnist") == 0 and shift(best, "folder") == 0
    assert shift(best.with_options(shift=3), "fashion-mnist") == 3  # --shift decides where given
