"""Every view fits the terminal it is shown on: each command run in a real pseudo-terminal of 80
columns leaves no line longer than 80, on a study of the wide space (its fourteen parameters
are the widest table there is); at 120 columns the tables show more; piped, every column."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import write_mnist
from helpers import cli_env, cnn_tune, run_in_terminal
from PIL import Image


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Fashion-MNIST's class names (the longest built-in ones) on the synthetic images: a wide
    study of three trials, its final model, and `confirm`'s table."""
    root = tmp_path_factory.mktemp("screen")
    data = write_mnist(root / "data", n_train=300, n_test=60)
    url = f"sqlite:///{root / 'studies' / 'with-a-rather-long-study-name.db'}"
    env = cli_env(data, url, CNN_TUNE_WORKERS="1")
    return root, env


def _fits(lines: list[str], width: int) -> None:
    long = [ln for ln in lines if len(ln) > width]
    assert not long, "\n".join(long)


def test_every_view_fits_80_columns_and_120_shows_more(study):
    root, env = study
    code, lines = run_in_terminal(
        cnn_tune(
            "optimize", "--dataset", "fashion-mnist", "--trials", "3", "--epochs", "1", "--seed", "1", "--device", "cpu"
        ),
        env,
        80,
    )
    assert code == 0, "\n".join(lines)
    _fits(lines[next(i for i, ln in enumerate(lines) if ln.startswith("Finished")) :], 80)  # the summary
    image = root / "a-picture-with-a-long-name-of-a-shirt-or-perhaps-a-coat-from-the-catalogue.png"
    Image.new("L", (28, 28), 200).save(image)
    views = {
        "retrain": ["retrain", "--device", "cpu", "--output", str(root / "m.pt")],
        "confirm": ["confirm", "--top", "2", "--seeds", "1", "--workers", "1", "--device", "cpu"],
        "studies": ["studies"],
        "trials": ["trials"],
        "best": ["best"],
        "evaluate": ["evaluate", str(root / "m.pt"), "--device", "cpu"],
        "predict": ["predict", str(root / "m.pt"), str(image)],
    }
    screens = {}
    for name, args in views.items():
        code, lines = run_in_terminal(cnn_tune(*args), env, 80)
        assert code == 0, (name, "\n".join(lines))
        if name in ("retrain", "confirm"):  # after the live bar: what stays on the screen
            lines = [ln for ln in lines if ln and not ln.lstrip().startswith(("epochs", "⠋", "trial"))]
        _fits(lines, 80)
        screens[name] = lines
    assert any("more column" in ln and "--wide" in ln for ln in screens["studies"] + screens["trials"])
    assert any(ln.startswith("Per class") or "Confusion matrix" in ln for ln in screens["evaluate"])

    for name, first in (("studies", "study"), ("trials", "#")):
        narrow = _header(screens[name], first)
        code, wide = run_in_terminal(cnn_tune(name), env, 120)
        assert code == 0
        _fits(wide, 120)
        assert len(_header(wide, first)) > len(narrow), (narrow, _header(wide, first))

    # piped: every column, exactly as the formatter writes plain text
    piped = subprocess.run(cnn_tune("trials"), env=env, capture_output=True, text=True, timeout=120)
    rows = json.loads(
        subprocess.run(
            cnn_tune("trials", "--format", "json"), env=env, capture_output=True, text=True, timeout=120
        ).stdout
    )
    header = piped.stdout.splitlines()[0].split()
    assert all(name in header for name in rows[0]["params"]) and "size" in header


def _header(lines: list[str], first: str) -> list[str]:
    """The column names of the table whose first column is ``first`` (not its title line)."""
    line = next(
        ln for ln in lines if ln.split()[:1] == [first] and "trials" in ln or ln.split()[:2] == [first, "state"]
    )
    return line.split()
