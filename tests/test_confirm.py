"""`cnn-tune confirm`: the top trials trained again with new seeds — stored, resumable, shared."""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from pathlib import Path

import optuna
import pytest
from conftest import assert_one_line_error, default_sigint, write_mnist
from helpers import cli_env, cnn_tune, heartbeats_older_than, wait_for
from optuna.trial import TrialState

from cnn_tune.search.records import Confirmed, verdict


def _companion(url: str) -> list:
    return optuna.load_study(study_name="mnist-cnn.confirm", storage=url).get_trials()


def _done(url: str) -> list:
    """Complete confirm runs, as (original trial, repeat) keys."""
    try:
        trials = _companion(url)
    except KeyError:
        return []
    return [(t.user_attrs["confirm_of"], t.user_attrs["repeat"]) for t in trials if t.state == TrialState.COMPLETE]


def test_confirm_runs_stores_and_shows_its_results(cli, db_url):
    assert (
        cli(
            "optimize", "--trials", "4", "--epochs", "2", "--device", "cpu", "--seed", "0", "--pruner", "none"
        ).exit_code
        == 0
    )
    study = optuna.load_study(study_name="mnist-cnn", storage=db_url)
    before = {t.number: t.value for t in study.trials}
    top2 = sorted(study.trials, key=lambda t: t.value, reverse=True)[:2]

    result = cli("confirm", "--top", "2", "--seeds", "2", "--device", "cpu", "--format", "json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert {r["trial"] for r in shown["ranked"]} == {t.number for t in top2}
    assert all(r["n"] == 3 for r in shown["ranked"]) and "Welch" in shown["test"]
    assert shown["ranked"][0]["mean"] >= shown["ranked"][1]["mean"]

    study = optuna.load_study(study_name="mnist-cnn", storage=db_url)
    assert {t.number: t.value for t in study.trials} == before  # originals never change
    runs = [t for t in _companion(db_url) if t.state == TrialState.COMPLETE]
    assert sorted((t.user_attrs["confirm_of"], t.user_attrs["repeat"]) for t in runs) == sorted(
        (t.number, r) for t in top2 for r in (1, 2)
    )
    for t in top2:  # stored through Optuna's API, readable by plain Optuna
        stored = study.user_attrs[f"cnn_tune.confirm.{t.number}"]
        mine = [r for r in runs if r.user_attrs["confirm_of"] == t.number]
        assert stored["values"][0] == t.value and sorted(stored["values"][1:]) == sorted(r.value for r in mine)
        assert stored["seeds"][1:] == [r.user_attrs["seed"] for r in sorted(mine, key=lambda r: r.user_attrs["repeat"])]
        assert len(set(stored["seeds"])) == 3  # new seeds, recorded
        assert stored["mean"] == pytest.approx(sum(stored["values"]) / 3)
        assert all(r.params == t.params for r in mine)  # the same configuration
    companion = optuna.load_study(study_name="mnist-cnn.confirm", storage=db_url)
    assert companion.user_attrs["cnn_tune.protocol"] == study.user_attrs["cnn_tune.protocol"]  # same split, epochs

    leader = shown["leader"]
    assert json.loads(cli("best", "--by", "mean", "-f", "json").stdout)["number"] == leader
    rows = {r["number"]: r for r in json.loads(cli("trials", "-f", "json").stdout)}
    assert rows[leader]["confirmed_mean"] == pytest.approx(shown["ranked"][0]["mean"])
    assert rows[leader]["confirmed_n"] == 3
    assert "confirmed mean" in cli("trials").stdout
    report = cli("plot", "report")
    assert report.exit_code == 0
    assert "Confirmed configurations" in Path(report.stdout.strip()).read_text()

    again = cli("confirm", "--top", "2", "--seeds", "2", "--device", "cpu", "--format", "json")
    assert again.exit_code == 0 and json.loads(again.stdout)["ranked"] == shown["ranked"]  # nothing rerun
    assert len(_companion(db_url)) == 4


def test_retrain_takes_the_confirmed_leader(cli, db_url, tmp_path):
    assert (
        cli(
            "optimize", "--trials", "3", "--epochs", "1", "--device", "cpu", "--seed", "2", "--pruner", "none"
        ).exit_code
        == 0
    )
    assert cli("confirm", "--top", "3", "--seeds", "1", "--device", "cpu").exit_code == 0
    leader = json.loads(cli("best", "--by", "mean", "-f", "json").stdout)["number"]
    result = cli("retrain", "--device", "cpu", "--output", str(tmp_path / "l.pt"), "-f", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["trial"] == leader
    assert f"Trial {leader} is the confirmed leader" in result.stderr


def test_fewer_complete_trials_than_top_are_confirmed_and_said(cli):
    assert cli("optimize", "--trials", "2", "--epochs", "1", "--device", "cpu", "--pruner", "none").exit_code == 0
    result = cli("confirm", "--top", "5", "--seeds", "1", "--device", "cpu", "-f", "json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["ranked"]) == 2
    assert "2 complete trial(s), fewer than --top 5: confirming those" in result.stderr


@pytest.mark.parametrize("args, fragment", [(["--top", "0"], "--top"), (["--seeds", "0"], "--seeds")])
def test_bad_counts_are_usage_errors(cli, args, fragment):
    assert_one_line_error(cli("confirm", *args), 2, fragment)


def test_a_study_this_machine_cannot_reproduce_is_refused(cli, tmp_path):
    assert cli("optimize", "--trials", "1", "--epochs", "1", "--device", "cpu").exit_code == 0
    other = write_mnist(tmp_path / "other", seed=7)
    assert_one_line_error(
        cli("confirm", "--data-dir", str(other)), 1, "MNIST files", "differ from those study", "data fingerprint"
    )
    assert_one_line_error(cli("confirm", "--study", "nope"), 2, "no study 'nope'")


def test_no_complete_trial_to_confirm(cli, db_url):
    from conftest import api_study

    from cnn_tune.search.plan import make_protocol

    study = api_study(db_url, n=0)
    study.set_user_attr("cnn_tune.protocol", make_protocol(2, None, 400, "f" * 16).to_attr())
    assert_one_line_error(cli("confirm"), 1, "no complete trial to confirm", "cnn-tune optimize")


def test_welch_tells_a_real_gap_from_noise():
    far = verdict(
        [
            Confirmed(1, {}, [0.990, 0.991, 0.992, 0.990], [1, 2, 3, 4]),
            Confirmed(2, {}, [0.980, 0.981, 0.979, 0.980], [1, 2, 3, 4]),
        ]
    )
    assert far.leader == 1 and far.p_value < 0.05 and "distinguishable at the 5% level" in far.sentence
    near = verdict(
        [Confirmed(1, {}, [0.990, 0.985, 0.992], [1, 2, 3]), Confirmed(2, {}, [0.989, 0.986, 0.990], [1, 2, 3])]
    )
    assert near.p_value > 0.05 and "not distinguishable" in near.sentence
    assert Confirmed(1, {}, [0.5, 0.7], [1, 2]).ci95[1] <= 1.0


# --- real processes: Ctrl-C and resume, two processes sharing the runs ------------------------


def _study(tmp_path: Path, trials: int, epochs: int) -> tuple[Path, str]:
    data = write_mnist(tmp_path / "data", n_train=1200, n_test=20)
    url = f"sqlite:///{tmp_path / 'c.db'}"
    r = subprocess.run(
        cnn_tune(
            "optimize",
            "--trials",
            str(trials),
            "--epochs",
            str(epochs),
            "--device",
            "cpu",
            "--pruner",
            "none",
            "--seed",
            "3",
        ),
        env=cli_env(data, url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return data, url


@pytest.fixture()
def slow_study(tmp_path):
    """A study whose runs take about a second each (1,200 images, 3 epochs)."""
    return _study(tmp_path, trials=3, epochs=3)


def _mid_training(url: str) -> bool:
    """A confirm run is RUNNING with at least one epoch stored (False while its study is not there yet)."""
    try:
        return any(t.state == TrialState.RUNNING and t.intermediate_values for t in _companion(url))
    except KeyError:
        return False


@pytest.fixture()
def long_study(tmp_path):
    """One trial whose runs take seconds (12 epochs): a test that must catch a run mid-training
    has that long between seeing it and acting; with 3 epochs a loaded machine (CI, xdist) saw
    the run end in between."""
    return _study(tmp_path, trials=1, epochs=12)


def test_an_interrupted_confirm_resumes_without_redoing_finished_runs(slow_study):
    data, url = slow_study
    cmd = cnn_tune("confirm", "--top", "2", "--seeds", "3", "--device", "cpu")
    proc = subprocess.Popen(
        cmd,
        env=cli_env(data, url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        # two runs done and a third mid-training: the usual moment for a Ctrl-C
        wait_for(lambda: len(_done(url)) >= 2 and _mid_training(url), 240, proc, "two runs done and a third training")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    stopped = _companion(url)
    finished = {t.number: t.value for t in stopped if t.state == TrialState.COMPLETE}
    assert 2 <= len(finished) < 6
    # Nothing is left RUNNING, wherever the signal fell; the run it cut short (none if it fell
    # just as one finished) is stored FAIL and says why.
    assert all(t.state != TrialState.RUNNING for t in stopped)
    assert all(t.user_attrs.get("interrupted") for t in stopped if t.state == TrialState.FAIL)

    again = subprocess.run(cmd, env=cli_env(data, url), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    runs = _companion(url)
    complete = [t for t in runs if t.state == TrialState.COMPLETE]
    assert set(Counter(_done(url)).values()) == {1}  # no (trial, repeat) done twice
    assert {t.number: t.value for t in complete if t.number in finished} == finished  # not redone
    assert len(_done(url)) == 6 and all(t.state != TrialState.RUNNING for t in runs)


@pytest.fixture()
def shared_study(tmp_path):
    """Three trials whose runs take a few seconds each (6 epochs): six runs outlast the start of
    a second process by far, so both processes get runs however the machine schedules them."""
    return _study(tmp_path, trials=3, epochs=6)


def test_two_confirm_processes_share_the_runs_without_doing_one_twice(shared_study):
    data, url = shared_study
    cmd = cnn_tune("confirm", "--top", "3", "--seeds", "2", "--device", "cpu", "--threads", "1")
    procs = [
        subprocess.Popen(cmd, env=cli_env(data, url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err
    done = _done(url)
    assert sorted(done) == sorted((n, r) for n in {k for k, _ in done} for r in (1, 2)) and len(done) == 6
    ran = [sum(ln.startswith("trial") for ln in out.splitlines()) for out, _ in outs]
    assert sum(ran) == 6 and all(ran), ran  # both worked, together exactly once each


def test_a_killed_confirm_worker_has_its_run_redone(long_study):
    data, url = long_study
    beat = ["--heartbeat", "1", "--grace", "3", "--device", "cpu"]
    victim = subprocess.Popen(
        cnn_tune("confirm", "--top", "1", "--seeds", "2", *beat),
        env=cli_env(data, url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: _mid_training(url), 120, victim, "a run training")
    finally:
        victim.kill()  # SIGKILL: no handler runs, the run stays RUNNING
        victim.wait()
    killed = [t for t in _companion(url) if t.state == TrialState.RUNNING]
    assert len(killed) == 1
    wait_for(lambda: heartbeats_older_than(Path(url[len("sqlite:///") :]), 3), 60, what="a stale heartbeat")
    again = subprocess.run(
        cnn_tune("confirm", "--top", "1", "--seeds", "2", *beat),
        env=cli_env(data, url),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr
    runs = _companion(url)
    assert next(t for t in runs if t.number == killed[0].number).state == TrialState.FAIL
    assert sorted(_done(url)) == [(killed[0].user_attrs["confirm_of"], 1), (killed[0].user_attrs["confirm_of"], 2)]
