"""`optimize --patience N` and where a study stands: the rule on stored trials, the stop with
real worker processes, what is stored and shown, and the resumed command that runs nothing."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from types import SimpleNamespace

import optuna
import pytest
from conftest import write_mnist
from helpers import run_cli
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from cnn_tune.search.worker import TrialBudget, local_counter
from cnn_tune.storage.patience import STOP_ATTR, noise, search_status, stop_text

T0 = datetime(2026, 12, 3, 12, 0, 0)


def done(
    number: int, value: float | None, minute: int, state: TrialState = TrialState.COMPLETE, **attrs
) -> FrozenTrial:
    """A finished trial: ``value`` for a complete one, its last epoch's accuracy for a pruned one."""
    return FrozenTrial(
        number=number,
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        datetime_start=T0,
        datetime_complete=T0 + timedelta(minutes=minute),
        params={},
        distributions={},
        user_attrs=attrs,
        system_attrs={},
        intermediate_values={1: value} if value is not None else {},
        trial_id=number,
        values=None,
    )


def test_noise_is_two_binomial_standard_errors():
    assert noise(0.99, 12_000) == pytest.approx(2 * (0.99 * 0.01 / 12_000) ** 0.5)
    assert 100 * noise(0.99, 12_000) == pytest.approx(0.18, abs=0.005)  # the figure --help quotes
    assert 100 * noise(0.91, 12_000) == pytest.approx(0.52, abs=0.005)
    assert noise(1.0, 20) == noise(0.95, 20) > 0  # a perfect score can still be matched by chance


def test_only_a_gain_beyond_the_noise_restarts_the_count():
    n_val = 12_000  # noise at 91%: ±0.52 points
    trials = [
        done(0, 0.910, 1),
        done(1, 0.914, 2),  # the new best, but within the noise: no gain
        done(2, 0.80, 3, TrialState.PRUNED),  # pruned trials count too
        done(3, 0.905, 4),
    ]
    s = search_status(trials, n_val)
    assert (s.best, s.last_gain, s.without_gain, s.last) == (1, 0, 3, 3)
    assert s.plateaued(3) and not s.plateaued(4) and not s.plateaued(0)
    s = search_status([*trials, done(4, 0.925, 5)], n_val)  # 0.925 > 0.914 + 0.0052: a gain
    assert (s.best, s.last_gain, s.without_gain) == (4, 4, 0) and not s.plateaued(1)


def test_trials_count_in_the_order_they_finished_and_repeats_do_not():
    # trial 2 finished before trial 1 (another worker); confirm's repeats are not the search's
    trials = [done(0, 0.90, 1), done(1, 0.95, 9), done(2, 0.91, 2), done(3, 0.99, 10, confirm_of=0)]
    s = search_status(trials, 12_000)
    assert (s.best, s.last_gain, s.without_gain, s.since_best, s.last) == (1, 1, 0, 0, 1)


def test_nothing_counts_before_the_first_complete_trial():
    s = search_status([done(0, 0.5, 1, TrialState.PRUNED), done(1, 0.5, 2, TrialState.PRUNED)], 12_000)
    assert s.best is None and s.without_gain == 0 and not s.plateaued(1)
    assert s.since_text() == "No complete trial yet."


def test_standing_names_the_trials_within_the_noise_of_the_best():
    trials = [
        done(0, 0.90, 1),
        done(1, 0.95, 2),
        done(2, 0.948, 3),
        done(3, 0.60, 4, TrialState.PRUNED),
        done(4, 0.93, 5),
        done(5, 0.9499, 6),
    ]
    s = search_status(trials, 1_000)  # ±1.38 points at 95% on 1,000 images
    assert s.since_best == 4 and s.close == (2, 5)
    text = s.since_text()
    assert text.startswith("4 trials finished since the best; 2 came within ±1.38 points of it: #2, #5.")
    assert "cnn-tune confirm" in text
    assert search_status(trials[:2], 1_000).since_text() == "The best (#1) is the last trial to finish."


def _budget(patience: int, n_val: int) -> TrialBudget:
    plan = SimpleNamespace(
        timeout=None, enqueued_only=False, max_trials=None, patience=patience, protocol=SimpleNamespace(n_val=n_val)
    )
    return TrialBudget(plan, 0, lambda event: None, local_counter(100))


def _add(study: optuna.Study, value: float, pruned: bool = False) -> None:
    x = FloatDistribution(0, 1)
    if pruned:
        study.add_trial(
            create_trial(
                state=TrialState.PRUNED, intermediate_values={1: value}, params={"x": 0.5}, distributions={"x": x}
            )
        )
    else:
        study.add_trial(create_trial(value=value, params={"x": 0.5}, distributions={"x": x}))


def test_a_study_that_keeps_improving_is_never_stopped(tmp_path):
    """Each complete trial beats the best by a point (beyond ±0.5), a pruned one between: a
    worker asking before every trial is granted each one, and the count never reaches 2."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    budget = _budget(patience=2, n_val=12_000)
    for i in range(10):
        assert budget(study), f"refused before trial {2 * i}"
        _add(study, 0.80 + 0.01 * i)
        _add(study, 0.50, pruned=True)
    assert search_status(study.get_trials(), 12_000).without_gain == 1


def test_a_flat_study_stops_a_worker_after_exactly_patience_trials(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", direction="maximize")
    budget = _budget(patience=3, n_val=12_000)
    _add(study, 0.91)
    for value in (0.912, 0.90, 0.913):  # all within ±0.52 points of the best so far
        assert budget(study)
        _add(study, value)
    assert not budget(study)
    assert _budget(patience=0, n_val=12_000)(study)  # 0: never stops


def test_two_workers_stop_on_a_plateau_and_a_second_run_says_so(tmp_path):
    """Two worker processes on tiny data (40 validation images: a gain must beat the best by
    about 15 points) stop long before --trials 50; the stop is stored and shown, and the same
    command again runs nothing."""
    data, url = write_mnist(tmp_path / "data", n_train=200, n_test=20), f"sqlite:///{tmp_path / 'p.db'}"
    args = (
        "optimize",
        "--trials",
        "50",
        "--workers",
        "2",
        "--patience",
        "4",
        "--epochs",
        "1",
        "--pruner",
        "none",
        "--device",
        "cpu",
        "--seed",
        "3",
    )
    r = run_cli(data, url, *args)
    assert r.returncode == 0, r.stderr
    trials = optuna.load_study(study_name="mnist-cnn", storage=url).get_trials()
    assert len(trials) < 30, len(trials)
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.state for t in trials]  # none left RUNNING
    stop = optuna.load_study(study_name="mnist-cnn", storage=url).user_attrs[STOP_ATTR]
    assert stop["rule"] == "patience" and stop["patience"] == 4 and stop["without_gain"] >= 4
    assert stop["after_trial"] in {t.number for t in trials}
    line = stop_text(stop)
    assert f"Stopped by --patience 4: {line[len('stopped: ') :]}." in r.stdout
    assert "patience 4" in r.stderr  # the start line

    best = run_cli(data, url, "best")
    assert best.returncode == 0 and line in best.stdout
    studies = json.loads(run_cli(data, url, "studies", "--format", "json").stdout)
    assert studies[0]["stopped"] == line

    # refused from the stored trials alone: with the data gone, nothing is read, fetched or created
    shutil.rmtree(data)
    again = run_cli(data, url, *args)
    assert again.returncode == 0, again.stderr
    assert "has plateaued" in again.stdout and "--patience 0" in again.stdout
    assert len(again.stdout.strip().splitlines()) == 1
    assert not data.exists() and "MNIST" not in again.stderr, again.stderr
    assert len(optuna.load_study(study_name="mnist-cnn", storage=url).get_trials()) == len(trials)
    write_mnist(data, n_train=200, n_test=20)

    # --patience 0 searches on; the record of the old plateau goes once it is no longer true
    on = run_cli(data, url, "optimize", "--trials", "1", "--patience", "0", "--epochs", "1", "--device", "cpu")
    assert on.returncode == 0, on.stderr
    after = optuna.load_study(study_name="mnist-cnn", storage=url)
    assert len(after.get_trials()) == len(trials) + 1
    assert after.user_attrs[STOP_ATTR] is None and "stopped" not in run_cli(data, url, "best").stdout


def test_the_summary_fits_80_columns_and_says_where_the_search_stands(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cnn_tune.cli.main import app

    data = write_mnist(tmp_path / "data", n_train=200, n_test=20)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CNN_TUNE_DATA_DIR", str(data))
    result = CliRunner().invoke(
        app,
        ["optimize", "--trials", "3", "--epochs", "1", "--device", "cpu", "--storage", "sqlite:///s.db", "--seed", "1"],
    )
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="mnist-cnn", storage="sqlite:///s.db")
    where = search_status(study.get_trials(), 40)
    assert where.since_text().splitlines()[0] in result.stdout
    # piped, a finished trial's line keeps every field; the data's path is the user's; the rest is short
    lines = [
        ln
        for ln in (result.stdout + result.stderr).splitlines()
        if not ln.startswith(("trial ", "Reading MNIST from "))
    ]
    assert lines and all(len(ln) <= 80 for ln in lines), [ln for ln in lines if len(ln) > 80]
