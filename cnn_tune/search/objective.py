"""The Optuna objective: sample a configuration, train it, report every epoch, store what ran."""

from __future__ import annotations

import secrets
import time
from typing import Callable

import optuna
import torch

from cnn_tune.model.results import EpochResult
from cnn_tune.model.space import Hyperparams, suggest
from cnn_tune.model.training import Trainer
from cnn_tune.processes.interrupts import Gate
from cnn_tune.search.samplers import derive_seed
from cnn_tune.storage.protocol import CONFIRM_OF

EpochCallback = Callable[[int, EpochResult], None]
Pace = Callable[[], int]  # sets and returns the CPU threads for the next epoch


class Objective:
    """Callable objective. Each trial records, as user attributes, what inspection and
    ``retrain`` need: the seed it trained with, device, per-epoch train loss, epochs run and
    wall time; per-epoch validation accuracy is its intermediate values."""

    def __init__(self, trainer: Trainer, epochs: int, seed: int | None,
                 on_epoch: EpochCallback = lambda _n, _r: None, enqueued_only: bool = False,
                 gate: Gate | None = None, pace: Pace = torch.get_num_threads) -> None:
        self.trainer = trainer
        self.gate = gate if gate is not None else Gate()  # Ctrl-C cuts an epoch short, never a write
        self.enqueued_only = enqueued_only  # confirm: only trials enqueued with their params and seed
        self.epochs = epochs
        self.seed = seed
        self.on_epoch = on_epoch
        self.pace = pace  # --workers N: a worker whose peers have exited takes their cores (parallel.CoreShare)
        self.current: int | None = None  # number of the trial being trained
        self.interrupted: int | None = None  # number of the trial Ctrl-C stopped, for its report

    def trial_seed(self, trial: optuna.Trial) -> int:
        """A seed given with the trial (an enqueued confirm run, a heartbeat retry) is kept.
        Otherwise seeded runs are reproducible trial by trial; unseeded ones record theirs."""
        if "seed" in trial.user_attrs:
            return int(trial.user_attrs["seed"])
        return derive_seed(self.seed, "trial", trial.number) if self.seed is not None else secrets.randbits(31)

    def __call__(self, trial: optuna.Trial) -> float:
        self.current = trial.number
        if self.enqueued_only and CONFIRM_OF not in trial.user_attrs:
            # Another worker took the last waiting run between our check and Optuna's ask: this
            # trial is a fresh sample, not a run to confirm. Stop it before it trains.
            trial.set_user_attr("cnn_tune.spare", True)
            raise optuna.TrialPruned("no run left to confirm")
        hp = suggest(trial)
        seed = self.trial_seed(trial)
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("device", str(self.trainer.device))
        trial.set_user_attr("threads", self.pace())  # CPU threads it started with
        trial.set_user_attr("precision", self.trainer.precision)
        try:
            return self._train(trial, hp, seed)
        except KeyboardInterrupt:
            # Optuna marks the trial FAIL and re-raises; say why in the trial itself.
            self.interrupted = trial.number
            trial.set_user_attr("interrupted", True)
            trial.set_user_attr("stop_reason", self.gate.why())
            raise

    def _train(self, trial: optuna.Trial, hp: Hyperparams, seed: int) -> float:
        """Train epoch by epoch, storing each; the last epoch's validation accuracy is the value."""
        start = time.perf_counter()
        losses: list[float] = []
        result: EpochResult | None = None
        self.gate.check()  # Ctrl-C while Optuna was handing out this trial: stop it here
        epochs = self.trainer.fit(hp, self.epochs, seed)
        most = torch.get_num_threads()
        while True:
            threads = self.pace()
            if threads > most:  # the other workers have exited: this one took their cores
                most = threads
                trial.set_user_attr("threads_max", threads)
            with self.gate.open():  # only the computation may be cut short, never a write
                done = next(epochs, None)
            if done is None:
                break
            result = done
            losses.append(result.train_loss)
            trial.report(result.val_accuracy, result.epoch)
            trial.set_user_attr("train_loss", losses)
            trial.set_user_attr("epochs_run", result.epoch)
            trial.set_user_attr("wall_time_s", round(time.perf_counter() - start, 3))
            self.on_epoch(trial.number, result)
            self.gate.check()  # Ctrl-C while the epoch was stored
            # A trial that has trained every epoch is complete: its value is final, so it is
            # never pruned after the last one.
            if result.epoch < self.epochs and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {result.epoch}")
        assert result is not None  # epochs >= 1
        return result.val_accuracy
