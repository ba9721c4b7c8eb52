"""Opening storage: a fresh SQLite file opened by several processes at the same moment."""

from __future__ import annotations

import subprocess
import sys

import optuna


def test_simultaneous_first_opens_of_a_new_sqlite_file_all_succeed(tmp_path):
    # Optuna creates its schema on first open; two processes doing it at once collide
    # ("UNIQUE constraint failed: alembic_version…") unless the opener retries.
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code = (
        "import sys; from cnn_tune.storage.engine import open_storage, prepare_storage; "
        "open_storage(prepare_storage(sys.argv[1]))"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True) for _ in range(8)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [e.strip().splitlines()[-1:] for e in errors if e]
    assert optuna.study.get_all_study_names(url) == []


def test_no_command_shows_the_storage_password(tmp_path, postgres_database, cli, monkeypatch):
    """Every place that shows a storage URL masks its password: the summary, messages, errors,
    the report page (the server trusts local connections, so any password opens it)."""
    secret = "supersecret"
    url = f"postgresql+psycopg://postgres:{secret}@127.0.0.1:5432/{postgres_database}"
    monkeypatch.setenv("CNN_TUNE_STORAGE", url)
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "report.html"
    commands = [
        ["optimize", "--trials", "2", "--epochs", "1", "--device", "cpu", "--patience", "0"],
        ["studies"],
        ["trials"],
        ["best"],
        ["best", "--format", "json"],
        ["studies", "--format", "csv"],
        ["plot", "report", "--output", str(report)],
        ["retrain", "--output", str(tmp_path / "m.pt")],
        ["confirm", "--top", "1", "--seeds", "1", "--workers", "1"],
        ["trials", "--study", "no-such-study"],  # an error naming the database
        ["backup", str(tmp_path / "copy.db")],  # refused for a server: the message names it
        ["optimize", "--storage", f"postgresql+psycopg://postgres:{secret}@127.0.0.1:port/db", "--trials", "1"],
    ]
    outputs = {}
    for args in commands:
        result = cli(*args)
        assert secret not in result.output, (args, result.output)
        outputs[" ".join(args[:2])] = result
    assert outputs["optimize --trials"].exit_code == 0 and "postgres:***@" in outputs["optimize --trials"].stdout
    assert outputs["trials --study"].exit_code == 2 and "postgres:***@" in outputs["trials --study"].stderr
    assert outputs["optimize --storage"].exit_code == 2 and "***@" in outputs["optimize --storage"].stderr
    retrain = outputs["retrain --output"]  # a server study without --artifacts kept no network: trained again
    assert retrain.exit_code == 0 and "kept no trained network" in retrain.output, retrain.output
    assert outputs["confirm --top"].exit_code == 0, outputs["confirm --top"].output
    assert report.exists() and secret not in report.read_text() and "postgres:***@" in report.read_text()
