"""Every bad input the core issue names: one line on stderr, non-zero exit, nothing lost."""

from __future__ import annotations

import optuna
import pytest
from conftest import FILES, assert_one_line_error, load, quick

from cnn_tune.errors import CnnTuneError


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--trials", "0"], "--trials"),
        (["--trials", "-3"], "--trials"),
        (["--epochs", "0"], "--epochs"),
        (["--sampler", "annealing"], "--sampler"),
        (["--pruner", "patience"], "--pruner"),
        (["--device", "tpu"], "--device"),
        (["--train-limit", "5"], "--train-limit"),
    ],
)
def test_bad_options_are_usage_errors(cli, tmp_path, args, fragment):
    result = cli("optimize", *args)
    assert_one_line_error(result, 2, fragment, "cnn-tune optimize --help")
    assert not (tmp_path / "studies").exists()  # nothing written


def test_train_limit_above_the_data_is_refused(cli, tmp_path):
    assert_one_line_error(cli(*quick("--train-limit", "5000")), 2, "--train-limit must be between 10 and 400")
    assert not (tmp_path / "studies" / "test.db").exists()


def test_storage_that_is_not_a_url(cli, tmp_path):
    assert_one_line_error(cli(*quick("--storage", "studies/cnn_tune.db")), 2, "is not a database URL", "sqlite:///")


def test_in_memory_sqlite_is_refused(cli):
    assert_one_line_error(cli(*quick("--storage", "sqlite://")), 2, "in-memory")


def test_file_that_is_not_sqlite_is_left_untouched(cli, tmp_path):
    target = tmp_path / "notes.db"
    target.write_text("my thesis, do not overwrite\n")
    assert_one_line_error(cli(*quick("--storage", f"sqlite:///{target}")), 1, "is not a SQLite database")
    assert target.read_text() == "my thesis, do not overwrite\n"


def test_sqlite_database_of_another_program_is_left_untouched(cli, tmp_path):
    import sqlite3

    target = tmp_path / "app.db"
    with sqlite3.connect(target) as con:
        con.execute("create table invoices (id integer)")
    before = target.read_bytes()
    assert_one_line_error(cli(*quick("--storage", f"sqlite:///{target}")), 1, "database of something else", "invoices")
    assert target.read_bytes() == before


def test_corrupt_sqlite_file(cli, tmp_path):
    target = tmp_path / "broken.db"
    target.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    assert_one_line_error(cli(*quick("--storage", f"sqlite:///{target}")), 1, str(target))


def test_storage_folder_that_cannot_be_created(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(cli(*quick("--storage", f"sqlite:///{blocker}/sub/x.db")), 1, "cannot create the folder")


def test_unknown_database_driver(cli):
    assert_one_line_error(cli(*quick("--storage", "nosuchdb://host/db")), 1, "nosuchdb")


@pytest.mark.parametrize("name", ["a/b", "..", "x..y", "tab\there", "nul\x00", "", "back\\slash"])
def test_unsafe_study_names_are_refused(cli, tmp_path, name):
    err = assert_one_line_error(cli(*quick("--study", name)), 2, "study name", "--study")
    assert "empty" in err if name == "" else "contains '/', '\\', '..' or a control character" in err
    assert not (tmp_path / "studies" / "test.db").exists()


def test_study_not_created_by_cnn_tune(cli, db_url):
    from cnn_tune.storage.engine import prepare_storage

    prepare_storage(db_url)
    foreign = optuna.create_study(study_name="mnist-cnn", storage=db_url)
    foreign.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert_one_line_error(cli(*quick()), 1, "was not created by cnn-tune")
    assert len(load(db_url).trials) == 1


@pytest.mark.parametrize(
    "damage,fragment",
    [
        (lambda b: b[:-100], "truncated or corrupt"),
        (lambda b: b[:10], "truncated"),
        (lambda b: b"\x01\x02" + b[2:], "bad magic number"),
        (lambda b: b[:2] + b"\x0d" + b[3:], "not an MNIST IDX file"),
    ],
)
@pytest.mark.parametrize("victim", FILES)
def test_damaged_idx_files_are_named(cli, mnist_dir, tmp_path, victim, damage, fragment):
    path = mnist_dir / victim
    path.write_bytes(damage(path.read_bytes()))
    err = assert_one_line_error(cli(*quick()), 1, fragment, str(path))
    assert "delete it" in err
    assert not (tmp_path / "studies" / "test.db").exists()


def test_labels_that_do_not_match_images(cli, mnist_dir):
    labels = mnist_dir / "t10k-labels-idx1-ubyte"
    raw = labels.read_bytes()
    labels.write_bytes(raw[:4] + (50).to_bytes(4, "big") + raw[8 : 8 + 50])
    assert_one_line_error(cli(*quick()), 1, "50 labels for 100 images")


def test_missing_cuda_is_a_usage_error(cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert_one_line_error(cli(*quick()[:-2], "--device", "cuda"), 2, "no CUDA device", "--device cpu")


def test_debug_shows_the_traceback(cli, tmp_path):
    target = tmp_path / "notes.db"
    target.write_text("not sqlite")
    result = cli("--debug", *quick("--storage", f"sqlite:///{target}"))
    assert result.exit_code != 0
    # the library's own error propagates (the runner saw no sys.exit); without --debug it is one line
    assert isinstance(result.exception, CnnTuneError) and not isinstance(result.exception, SystemExit)
    plain = cli(*quick("--storage", f"sqlite:///{target}"))
    assert isinstance(plain.exception, SystemExit) and plain.stderr.startswith("Error: ")


def test_mirror_checksum_mismatch_deletes_the_file(cli, tmp_path, monkeypatch):
    # An empty data folder with a damaged mirror file already fetched into it.
    root = tmp_path / "cache"
    (root / "mirror").mkdir(parents=True)
    bad = root / "mirror" / "mnist.pkl.gz"
    bad.write_bytes(b"not the mirror")
    monkeypatch.setattr("cnn_tune.data.load.reachable", lambda url, timeout=0: False)
    result = cli(*quick("--data-dir", str(root)))
    assert_one_line_error(result, 1, "has sha256", "deleted it", "run the command again")
    assert not bad.exists()
