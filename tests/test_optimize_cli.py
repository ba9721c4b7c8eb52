"""`cnn-tune optimize` end to end: real CLI, real SQLite file, then the study reopened with Optuna."""

from __future__ import annotations

import os

import optuna
import pytest
from conftest import assert_one_line_error, load, quick, write_mnist
from helpers import cnn_tune
from optuna.trial import TrialState

from cnn_tune.model.network import build_model
from cnn_tune.model.space import Hyperparams
from cnn_tune.search.samplers import PRUNERS
from cnn_tune.storage.protocol import PROTOCOL_ATTR

SEED_PARAMS = {"dropout_rate", "fc2_input_dim", "dropout_rate2", "optimizer", "lr", "batch_size"}


def test_optimize_creates_a_study_plain_optuna_can_read(cli, db_url):
    result = cli(*quick("--trials", "3", "--seed", "1", "--pruner", "none", "--space", "article"))
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("trial")]
    assert len(lines) == 3 and all("COMPLETE" in ln for ln in lines)
    assert "Best trial #" in result.stdout
    assert "\x1b[" not in result.stdout  # no colour codes when not a terminal

    study = load(db_url)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    for t in trials:
        assert t.state == TrialState.COMPLETE
        assert set(t.params) == SEED_PARAMS
        assert sorted(t.intermediate_values) == [1, 2]  # one report per epoch
        assert t.value == t.intermediate_values[2]
        assert 0.0 <= t.value <= 1.0
        assert t.user_attrs["epochs_run"] == 2
        assert len(t.user_attrs["train_loss"]) == 2
        assert t.user_attrs["device"] == "cpu"
        assert t.user_attrs["wall_time_s"] > 0
        assert isinstance(t.user_attrs["seed"], int)
        # Rebuildable from the database alone: the stored params make the hyperparameter record.
        assert build_model(Hyperparams.from_params(t.params)).fc1.out_features == t.params["fc2_input_dim"]
    protocol = study.user_attrs[PROTOCOL_ATTR]
    assert protocol["epochs"] == 2 and protocol["train_limit"] is None
    assert protocol["n_train"] + protocol["n_val"] == 400 and protocol["n_val"] == 80
    assert protocol["direction"] == "maximize" and protocol["search_space_version"] == 1


def test_training_learns_the_synthetic_digits(cli, db_url):
    # A fixed good configuration (enqueued, so the sampler does not decide) must learn. With 4
    # epochs, unseeded, it once ended at 75% in CI; seeds 0-9 with 8 epochs and no pruner (which
    # could stop it early: this tests learning) all end above 90%.
    cli(*quick("--trials", "1", "--epochs", "8"))
    study = load(db_url)
    study.enqueue_trial(
        {
            "dropout_rate": 0.0,
            "fc2_input_dim": 64,
            "dropout_rate2": 0.0,
            "optimizer": "Adam",
            "lr": 3e-3,
            "batch_size": 64,
        }
    )
    result = cli("optimize", "--trials", "1", "--device", "cpu", "--pruner", "none", "--seed", "0")
    assert result.exit_code == 0, result.output
    assert load(db_url).trials[-1].value > 0.9


def test_resume_adds_trials_and_keeps_protocol(cli, db_url):
    assert cli(*quick("--train-limit", "300")).exit_code == 0
    result = cli("optimize", "--trials", "2", "--device", "cpu")  # no --epochs/--train-limit: the study's
    assert result.exit_code == 0, result.output
    assert "Resuming study 'mnist-cnn'" in result.stderr
    study = load(db_url)
    assert len(study.trials) == 4
    assert all(t.user_attrs["epochs_run"] <= 2 for t in study.trials)
    assert study.user_attrs[PROTOCOL_ATTR]["train_limit"] == 300


def test_resume_with_same_seed_does_not_replay_parameters(cli, db_url):
    for _ in range(2):
        assert cli(*quick("--seed", "7", "--sampler", "random")).exit_code == 0
    params = [tuple(sorted(t.params.items())) for t in load(db_url).trials]
    assert len(params) == 4 and len(set(params)) == 4


def test_same_seed_in_a_new_study_reproduces_the_run(cli, db_url):
    for name in ("a", "b"):
        assert cli(*quick("--seed", "3", "--study", name)).exit_code == 0
    a, b = load(db_url, "a").trials, load(db_url, "b").trials
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.value for t in a] == [t.value for t in b]


@pytest.mark.parametrize("option", [["--epochs", "3"], ["--train-limit", "200"]])
def test_conflicting_protocol_is_refused(cli, db_url, option):
    assert cli(*quick()).exit_code == 0
    result = cli("optimize", "--trials", "1", *option)
    assert result.exit_code == 2
    assert "Error: study 'mnist-cnn' runs 2 epochs on all training images" in result.stderr
    assert len(load(db_url).trials) == 2  # nothing added


def test_other_data_gets_one_answer_from_every_command(cli, db_url, tmp_path):
    """Resuming, confirming and retraining on other images: the same error, exit code and line."""
    assert cli(*quick("--pruner", "none")).exit_code == 0  # two complete trials: confirm has work
    other = write_mnist(tmp_path / "other", seed=5)
    lines = set()
    for command in (
        ["optimize", "--trials", "1"],
        ["confirm", "--top", "1", "--seeds", "1"],
        ["retrain", "--output", str(tmp_path / "m.pt")],
    ):
        line = assert_one_line_error(
            cli(*command, "--data-dir", str(other)),
            1,
            "differ from those study 'mnist-cnn'",
            "point --data-dir at the study's data",
        )
        lines.add(line.split(" differ from ")[1])
    assert len(lines) == 1, lines
    assert len(load(db_url).trials) == 2 and not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("pruner", PRUNERS)
def test_every_pruner_runs(cli, db_url, pruner):
    result = cli(*quick("--pruner", pruner, "--trials", "3"))
    assert result.exit_code == 0, result.output
    assert f"{pruner} pruner" in result.stderr  # the plan the workers ran names the pruner asked for
    trials = load(db_url).trials
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    if pruner == "none":
        assert all(t.state == TrialState.COMPLETE for t in trials)


@pytest.mark.parametrize(
    "sampler,needs",
    [
        ("tpe", None),
        ("tpe-mv", None),
        ("random", None),
        ("nsgaii", None),
        ("qmc", "scipy"),
        ("gp", "scipy"),
        ("cmaes", "cmaes"),
    ],
)
def test_every_sampler_runs_or_names_its_missing_package(cli, db_url, tmp_path, sampler, needs):
    from importlib.util import find_spec

    result = cli(*quick("--sampler", sampler))
    if needs is None or find_spec(needs) is not None:
        assert result.exit_code == 0, result.output
        assert len(load(db_url).trials) == 2
    else:
        assert result.exit_code == 1
        assert f"needs the package {needs}" in result.stderr
        assert not (tmp_path / "studies" / "test.db").exists()


def test_timeout_stops_starting_trials(cli, db_url):
    result = cli("optimize", "--trials", "50", "--epochs", "1", "--timeout", "1", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert 1 <= len(load(db_url).trials) < 50


def test_study_name_and_storage_from_environment(cli, tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("CNN_TUNE_STORAGE", url)
    monkeypatch.setenv("CNN_TUNE_STUDY", "from-env")
    assert cli(*quick("--trials", "1")).exit_code == 0
    assert optuna.study.get_all_study_names(url) == ["from-env"]


def test_sqlite_folder_is_created(cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'a' / 'b' / 'c.db'}"
    assert cli(*quick("--trials", "1", "--storage", url)).exit_code == 0
    assert (tmp_path / "a" / "b" / "c.db").is_file()


def test_version_and_help_have_examples(cli):
    from typer.main import get_command

    from cnn_tune.cli.main import app

    assert cli("--version").stdout.startswith("cnn-tune ")
    for name in get_command(app).commands:
        assert f"Example: cnn-tune {name}" in " ".join(cli(name, "--help").stdout.split()), name


def test_every_command_summary_is_one_line_on_80_columns():
    import subprocess

    from typer.main import get_command

    from cnn_tune.cli.main import app

    done = subprocess.run(
        cnn_tune("--help"), capture_output=True, text=True, env={**os.environ, "COLUMNS": "80", "TERM": "xterm"}
    )
    lines = done.stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if "Commands" in ln)
    rows = [ln for ln in lines[start + 1 :] if ln.startswith("│")]
    assert max(len(ln) for ln in lines) <= 80
    names = list(get_command(app).commands)
    assert [ln.split()[1] for ln in rows] == names, rows  # one row per command: no summary wraps


def test_python_dash_m_runs_the_cli():
    import subprocess

    done = subprocess.run(cnn_tune("--version"), capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("cnn-tune ")


def test_trials_that_ran_every_epoch_are_never_pruned(cli, db_url):
    # With --epochs 1 the pruner would only ever see the final epoch.
    assert (
        cli(
            "optimize", "--trials", "8", "--epochs", "1", "--device", "cpu", "--pruner", "halving", "--patience", "0"
        ).exit_code
        == 0
    )
    assert [t.state for t in load(db_url).trials] == [TrialState.COMPLETE] * 8


def test_pruned_trials_record_where_they_stopped(cli, db_url):
    assert (
        cli(
            "optimize",
            "--trials",
            "12",
            "--epochs",
            "3",
            "--device",
            "cpu",
            "--seed",
            "2",
            "--pruner",
            "median",
            "--patience",
            "0",
            "--space",
            "article",
        ).exit_code
        == 0
    )
    pruned = [t for t in load(db_url).trials if t.state == TrialState.PRUNED]
    assert pruned, "the median pruner prunes some of 12 trials"
    for t in pruned:
        assert t.user_attrs["epochs_run"] == max(t.intermediate_values) < 3
        assert len(t.user_attrs["train_loss"]) == t.user_attrs["epochs_run"]


def test_terminal_output_has_live_progress_and_a_table(cli, db_url, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich treats the captured stream as a terminal
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    result = cli(*quick("--seed", "4", "--pruner", "none"))  # trial 1 reaches its last epoch
    assert result.exit_code == 0, result.output
    assert "\x1b[" in result.stdout  # styled, unlike piped output
    assert "trial 1 · epoch 2/2" in result.stdout  # the live bar showed the running trial's epoch
    assert "Best trial #" in result.stdout and "─" in result.stdout and "fc2_input_dim" in result.stdout
    assert len(load(db_url).trials) == 2


@pytest.mark.parametrize("space", ["wide", "article"])
def test_warm_start_runs_the_spaces_known_good_configuration_first(cli, db_url, space):
    from cnn_tune.model.space import Hyperparams, warm_start

    assert warm_start("article", "mnist") == Hyperparams().as_dict()  # the article's configuration
    assert cli(*quick("--warm-start", "--seed", "1", "--space", space)).exit_code == 0
    first = load(db_url).trials[0]
    assert first.params == warm_start(space, "mnist") and first.user_attrs["cnn_tune.warm_start"] is True
    assert cli(*quick("--warm-start", "--seed", "1")).exit_code == 0  # resuming: not enqueued again
    assert sum(t.params == warm_start(space, "mnist") for t in load(db_url).trials) == 1


def test_leader_pruner_stops_hopeless_trials_from_the_first_one():
    from optuna.trial import create_trial

    from cnn_tune.search.samplers import LeaderPruner

    study = optuna.create_study(direction="maximize")
    pruner = LeaderPruner(floor=0.5, margin=0.02)
    running = study.ask()
    running.report(0.11, 1)  # near chance after a whole epoch: hopeless, even as the first trial
    assert pruner.prune(study, study.trials[0])
    study.tell(running, state=TrialState.PRUNED)
    study.add_trial(
        create_trial(value=0.99, intermediate_values={1: 0.97, 2: 0.98, 3: 0.99}, params={}, distributions={})
    )
    behind, close = study.ask(), study.ask()
    behind.report(0.94, 1)  # more than 2 points behind the leader at epoch 1
    close.report(0.96, 1)  # within 2 points: may still catch up
    frozen = {t.number: t for t in study.get_trials()}
    assert pruner.prune(study, frozen[behind.number]) and not pruner.prune(study, frozen[close.number])


def _asked(study: optuna.Study, values: dict[int, float]) -> optuna.trial.FrozenTrial:
    """A running trial that has reported ``values`` (epoch → validation accuracy), as a pruner sees it."""
    trial = study.ask()
    for step, value in values.items():
        trial.report(value, step)
    return next(t for t in study.get_trials() if t.number == trial.number)


def test_narrowing_pruner_compares_with_running_peers_before_any_trial_is_complete():
    from cnn_tune.search.samplers import LeaderPruner, NarrowingPruner

    study = optuna.create_study(direction="maximize")
    warm = _asked(study, {1: 0.97})  # the warm start, one epoch in
    beside = _asked(study, {1: 0.84})  # the trial started beside it: 13 points behind
    close = _asked(study, {1: 0.955})  # within 2 points after one epoch: may catch up
    pruner = NarrowingPruner(n_val=12000)
    assert pruner.prune(study, beside) and not pruner.prune(study, close) and not pruner.prune(study, warm)
    assert not LeaderPruner().prune(study, beside)  # leader waits for a complete trial


def test_narrowing_pruner_gap_shrinks_with_epochs_down_to_the_noise():
    from optuna.trial import create_trial

    from cnn_tune.search.samplers import LeaderPruner, NarrowingPruner

    study = optuna.create_study(direction="maximize")
    study.add_trial(
        create_trial(
            value=0.990, intermediate_values={1: 0.975, 2: 0.98, 5: 0.989, 9: 0.99}, params={}, distributions={}
        )
    )
    study.add_trial(
        create_trial(value=0.985, intermediate_values={1: 0.99, 2: 0.99, 5: 0.99, 9: 0.99}, params={}, distributions={})
    )  # not the leader: its curve is not the reference
    pruner = NarrowingPruner(n_val=12000)
    assert pruner.gap(1, 0.975) == pytest.approx(0.02) and pruner.gap(2, 0.98) == pytest.approx(0.01)
    assert pruner.gap(9, 0.989) == pytest.approx(3 * (2 * 0.989 * 0.011 / 12000) ** 0.5)  # 0.40 points
    # each trial's best epoch so far against the leader's best so far (0.98 by epoch 2, 0.989 by 5)
    assert pruner.prune(study, _asked(study, {1: 0.966, 2: 0.968}))  # 1.2 points behind after 2 epochs
    assert not pruner.prune(study, _asked(study, {1: 0.97, 2: 0.972}))  # 0.8 behind: within 1 point
    assert pruner.prune(study, _asked(study, {5: 0.984}))  # 0.5 behind after 5: more than the noise
    assert not pruner.prune(study, _asked(study, {5: 0.986}))  # 0.3 behind: inside it
    assert not pruner.prune(study, _asked(study, {8: 0.9896, 9: 0.9854}))  # a dip after a good epoch
    assert LeaderPruner(margin=0.004).prune(study, _asked(study, {8: 0.9896, 9: 0.9854}))  # the last epoch alone
    small = NarrowingPruner(n_val=2400)  # the screening protocol: a coarser measure, a wider gap
    assert not small.prune(study, _asked(study, {5: 0.98}))


def test_narrowing_pruners_median_rule_allows_the_noise():
    """Fashion-MNIST after one epoch: five complete trials near 85.5%, so their median is a
    bar set by survivors. A trial 0.4 points under it (85.1%, the curve that ended level with
    the study's best) is within the noise of 12,000 images and runs on; 3 points under is stopped."""
    from optuna.trial import create_trial

    from cnn_tune.search.samplers import NarrowingPruner, hopeless_below

    study = optuna.create_study(direction="maximize")
    for first in (0.832, 0.857, 0.860, 0.854, 0.855):
        study.add_trial(create_trial(value=0.91, intermediate_values={1: first, 10: 0.91}, params={}, distributions={}))
    pruner = NarrowingPruner(n_val=12000, floor=hopeless_below(10))
    assert not pruner.prune(study, _asked(study, {1: 0.851}))
    assert pruner.prune(study, _asked(study, {1: 0.825}))
    assert optuna.pruners.MedianPruner(n_startup_trials=5).prune(study, _asked(study, {1: 0.851}))  # no allowance
