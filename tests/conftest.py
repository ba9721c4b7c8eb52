"""Shared fixtures: tiny synthetic MNIST in real IDX files, and the real CLI."""

from __future__ import annotations

import os
import signal
import struct
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image
from typer.testing import CliRunner

from cnn_tune.cli.main import app

# The default --workers is auto: on a 2-core machine every in-process test would spawn two
# worker processes (each importing torch) for a few tiny trials. The suite runs one worker
# unless a test asks for more; tests of the default itself remove this.
os.environ["CNN_TUNE_WORKERS"] = "1"

# Under pytest-xdist, one test per core runs at once: a process that also trains on every core
# (torch's default) oversubscribes them, and OpenMP's waiting threads burn what the other test
# needs. One thread per test process, and per process it starts (commands that share cores out
# among workers set their threads themselves).
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def default_sigint() -> None:
    """``preexec_fn`` for child processes that a test will Ctrl-C or hang up: a shell's
    background job (``cmd &``, as some CI runners start the suite) inherits SIGINT *ignored*
    (and under nohup, SIGHUP), and Python then installs no KeyboardInterrupt handler (cnn-tune
    respects an ignored SIGHUP), so the child would never see the signal. A terminal's Ctrl-C
    or hang-up reaches a foreground process with the default disposition; this restores it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


# --- no test leaves a process behind ---------------------------------------------------------

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
LEAK_GRACE_S = 15.0  # how long a test's processes may take to end after it (a worker's exit deadline is 8 s)


def pytest_configure(config) -> None:  # noqa: ARG001 - pytest's hook signature
    """Make this pytest process adopt its orphans: a worker whose parent a test killed is then
    our child, not init's, so the leak check below sees it (Linux only; elsewhere a no-op)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _allowed(proc) -> bool:
    """Processes the test framework itself keeps: multiprocessing's resource tracker (started
    once per pytest process by in-process `--workers` runs) and pytest-xdist's own."""
    try:
        cmdline = " ".join(proc.cmdline())
    except Exception:  # noqa: BLE001 - gone meanwhile
        return True
    return "resource_tracker" in cmdline or "execnet" in cmdline or "xdist" in cmdline


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not ours to reap (a grandchild's zombie: its parent will)
        pass


def _live_children(before: set[int]) -> list:
    """Children (and adopted orphans) started during the test and still running. Zombies —
    ours, or orphans we adopted that have ended, like a finished command's resource tracker —
    are reaped, whoever started them."""
    import psutil

    live = []
    for child in psutil.Process().children(recursive=True):
        try:
            zombie = child.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            continue
        if zombie:
            _reap(child.pid)
        elif child.pid not in before and not _allowed(child):
            live.append(child)
    return live


def pytest_unconfigure(config) -> None:
    """Leave nothing behind, not even a zombie: reap what ended after the last test (in each
    process that runs tests; pytest-xdist's controller waits for its workers itself)."""
    import time

    if config.getoption("numprocesses", None) and not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    deadline = time.monotonic() + 2
    while _live_children(set()) and time.monotonic() < deadline:  # adopted orphans about to end
        time.sleep(0.1)


@pytest.fixture(autouse=True)
def no_leftover_processes():
    """Fail a test that leaves a process of its own running (after killing it, so the next
    test starts clean)."""
    import time

    import psutil

    before = {c.pid for c in psutil.Process().children(recursive=True)}
    yield
    deadline = time.monotonic() + LEAK_GRACE_S
    while (left := _live_children(before)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        names = [f"{p.pid} {' '.join(p.cmdline())[:120]}" for p in left if psutil.pid_exists(p.pid)]
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        if names:
            pytest.fail(f"the test left {len(names)} process(es) running: {names}", pytrace=False)


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an IDX file by hand (independently of cnn_tune.data.idx, which is under test)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def synthetic_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable stand-ins for digits: class k is a bright 6×6 block at a class-specific place, on noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        row, col = 3 + (k // 5) * 13, 1 + (k % 5) * 5
        images[i, row : row + 6, col : col + 6] = 255
    return images, labels


def write_mnist(folder: Path, n_train: int = 400, n_test: int = 100, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    train = synthetic_digits(n_train, seed)
    test = synthetic_digits(n_test, seed + 1)
    for name, array in zip(FILES, (*train, *test)):
        (folder / name).write_bytes(idx_bytes(array))
    return folder


CLASSES = ("bar", "disc", "ring")  # write_folder's classes, sorted as cnn-tune reads folder names


def write_folder(root: Path, n_train: int = 90, n_test: int = 24, seed: int = 0, test: bool = True) -> Path:
    """Three learnable classes — a vertical bar, a filled disc, a ring — at sizes from 20 to 60
    pixels, PNG and JPEG, some in colour (what a user's folder looks like, small)."""
    rng = np.random.default_rng(seed)
    for part, n in (("train", n_train), ("test", n_test)) if test else (("train", n_train),):
        for k, name in enumerate(CLASSES):
            folder = root / part / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n // len(CLASSES)):
                size = int(rng.integers(20, 61))
                yy, xx = np.mgrid[:size, :size]
                r = np.hypot(yy - size / 2, xx - size / 2) / size
                shape = [np.abs(xx - size / 2) < size / 10, r < 0.3, (r > 0.25) & (r < 0.4)][k]
                pixels = rng.integers(0, 50, (size, size)).astype(np.uint8)
                pixels[shape] = 230
                img = Image.fromarray(pixels)
                if i % 3 == 0:
                    Image.merge("RGB", (img, img, img)).save(folder / f"{i}.jpg", quality=95)
                else:
                    img.save(folder / f"{i}.png")
    return root


@pytest.fixture()
def mnist_dir(tmp_path: Path) -> Path:
    return write_mnist(tmp_path / "data")


@pytest.fixture()
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'studies' / 'test.db'}"


@pytest.fixture()
def cli(mnist_dir: Path, db_url: str, monkeypatch: pytest.MonkeyPatch):
    """Run the real CLI in-process on the synthetic data and the tmp database."""
    monkeypatch.setenv("CNN_TUNE_DATA_DIR", str(mnist_dir))
    monkeypatch.setenv("CNN_TUNE_STORAGE", db_url)
    monkeypatch.delenv("CNN_TUNE_STUDY", raising=False)
    monkeypatch.delenv("CNN_TUNE_DEBUG", raising=False)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, list(args))

    return run


def quick(*extra: str) -> list[str]:
    """optimize arguments for a fast run on the synthetic data."""
    return ["optimize", "--trials", "2", "--epochs", "2", "--device", "cpu", *extra]


def load(db_url: str, name: str = "mnist-cnn") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=db_url)


def assert_one_line_error(result, code: int, *fragments: str) -> str:
    """Exit code as given; the error is one line, the last on stderr (progress notes such as
    "Reading MNIST from …" may precede it); no traceback; each fragment in it."""
    assert result.exit_code == code, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert [ln for ln in lines if ln.startswith("Error")] == lines[-1:], lines
    assert "Traceback" not in result.output
    err = lines[-1]
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def api_study(url: str, n: int, name: str = "mnist-cnn", running: int = 0) -> optuna.Study:
    """A study written directly through Optuna's API, for shapes slow to make with real
    training: many trials; a mix of complete, pruned (every 4th), failed (every 7th) and
    ``running`` trials left open at the end. Parameters come from cnn-tune's search space."""
    from cnn_tune.model.space import suggest

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=name,
        storage=url,
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=n),
        load_if_exists=True,
    )
    for i in range(n + running):
        trial = study.ask()
        hp = suggest(trial)
        score = 0.9 + 0.09 * (i % 10) / 10 + hp.lr  # distinct values, so "best" is well defined
        epochs = 2 if i % 4 == 1 else 3
        for epoch in range(1, epochs + 1):
            trial.report(score - 0.01 * (epochs - epoch), epoch)
        trial.set_user_attr("n_params", 200_000 + 1000 * i)  # as cnn-tune records since 0.8
        if i >= n:
            continue  # left RUNNING
        if i % 4 == 1:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif i % 7 == 6:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, score)
    return study


@pytest.fixture()
def postgres_database():
    """A PostgreSQL database of its own on the shared server (created, then dropped); its name."""
    import socket
    import uuid

    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=2).close()
    except OSError:
        pytest.skip("no PostgreSQL server answers on 127.0.0.1:5432")
    psycopg = pytest.importorskip("psycopg")
    name = f"cnn_tune_test_{uuid.uuid4().hex[:8]}"
    admin = "postgresql://postgres@127.0.0.1:5432/test"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
