"""Opening storage: a fresh SQLite file opened by several processes at the same moment."""

from __future__ import annotations

import subprocess
import sys

import optuna


def test_simultaneous_first_opens_of_a_new_sqlite_file_all_succeed(tmp_path):
    # Optuna creates its schema on first open; two processes doing it at once collide
    # ("UNIQUE constraint failed: alembic_version…") unless the opener retries.
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code = ("import sys; from cnn_tune.storage.engine import open_storage, prepare_storage; "
            "open_storage(prepare_storage(sys.argv[1]))")
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 8, [e.strip().splitlines()[-1:] for e in errors if e]
    assert optuna.study.get_all_study_names(url) == []
