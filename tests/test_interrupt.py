"""Ctrl-C on a real process: the running trial gets a final state, exit 130, the study resumes."""

from __future__ import annotations

import os
import signal
import subprocess

import optuna
import pytest
from conftest import default_sigint, write_mnist
from helpers import cnn_tune, wait_training
from optuna.trial import TrialState


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_ends_the_running_trial_and_exits_130(tmp_path, sig):
    data = write_mnist(tmp_path / "data", n_train=1000)
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    env = {**os.environ, "CNN_TUNE_DATA_DIR": str(data), "CNN_TUNE_STORAGE": url}
    cmd = cnn_tune("optimize", "--trials", "5", "--epochs", "20", "--device", "cpu", "--pruner", "none", "--seed", "0")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_sigint
    )
    try:
        wait_training(url, proc, timeout=120)  # a trial mid-training
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in out + err
    assert "Interrupted:" in out and "run the same command again to resume" in out

    trials = optuna.load_study(study_name="mnist-cnn", storage=url).get_trials()
    assert all(t.state != TrialState.RUNNING for t in trials)
    interrupted = trials[-1]
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["interrupted"] is True

    again = subprocess.run(cmd[:5] + ["1", *cmd[6:]], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "Resuming study 'mnist-cnn'" in again.stderr
    after = optuna.load_study(study_name="mnist-cnn", storage=url).get_trials()
    assert len(after) == len(trials) + 1 and after[-1].state == TrialState.COMPLETE


# --- the signal at the awkward moments: inside Optuna, outside any epoch --------------------

# The default pruner stops a trial under 50% after an epoch, which an unseeded 2-epoch trial on the
# synthetic digits sometimes is (seen: PRUNED where these tests expect COMPLETE); they test the signal.
NO_PRUNING = ("--pruner", "none")


class _SignalWhileAsking(optuna.samplers.RandomSampler):
    """A real sampler that sends this process SIGINT while Optuna hands out trial ``at``: the
    trial already exists (RUNNING) and the objective has not started."""

    def __init__(self, at: int) -> None:
        super().__init__(seed=0)
        self.at = at

    def before_trial(self, study, trial) -> None:
        super().before_trial(study, trial)
        if trial.number == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_while_optuna_hands_out_a_trial_leaves_nothing_running(cli, db_url, monkeypatch):
    from conftest import load, quick

    import cnn_tune.search.records

    # the plan builds each worker's sampler (Plan.search)
    monkeypatch.setattr(cnn_tune.search.records, "make_sampler", lambda name, seed: _SignalWhileAsking(at=1))
    result = cli(*quick("--trials", "3", *NO_PRUNING))
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    trials = load(db_url).get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL]  # no trial after the signal
    assert trials[1].user_attrs["interrupted"] is True and not trials[1].intermediate_values


def test_ctrl_c_as_a_trial_is_stored_keeps_it_and_starts_no_other(cli, db_url, monkeypatch):
    from conftest import load, quick

    import cnn_tune.search.worker

    real_done = cnn_tune.search.worker.TrialDone

    def done_then_signal(worker, trial):  # Optuna's callback: the trial's state is already stored
        os.kill(os.getpid(), signal.SIGINT)
        return real_done(worker, trial)

    monkeypatch.setattr(cnn_tune.search.worker, "TrialDone", done_then_signal)
    result = cli(*quick("--trials", "3", *NO_PRUNING))
    assert result.exit_code == 130, result.output
    assert [t.state for t in load(db_url).get_trials()] == [TrialState.COMPLETE]
