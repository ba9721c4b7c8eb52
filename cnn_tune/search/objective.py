"""The Optuna objective: sample a configuration, train it, report every epoch, store what ran."""

from __future__ import annotations

import secrets
import time
from typing import Callable

import optuna
import torch

from cnn_tune.data.datasets import MNIST
from cnn_tune.model.network import build_model
from cnn_tune.model.results import EpochResult
from cnn_tune.model.size import n_params
from cnn_tune.model.space import ARTICLE, SPACES, Space, suggest
from cnn_tune.model.training import Trainer, inference_seconds
from cnn_tune.processes.interrupts import StopRequest
from cnn_tune.search.samplers import OVER_MAX_PARAMS, derive_seed
from cnn_tune.storage.protocol import CONFIRM_OF

EpochCallback = Callable[[int, EpochResult], None]
Pace = Callable[[], int]  # sets and returns the CPU threads for the next epoch
Keep = Callable[[optuna.Trial, Space, int, torch.nn.Module, float], None]  # trial, record, seed, network, value


class Objective:
    """Callable objective. Each trial records, as user attributes, what inspection and
    ``retrain`` need: the seed it trained with, device, per-epoch train loss, epochs run and
    wall time, the network's parameter count and inference time per image; per-epoch validation
    accuracy is its intermediate values. ``space`` and ``dataset`` (the study's) say what is
    searched; ``max_params`` stops a larger network before it trains, as an Optuna constraint
    so that the sampler learns where the bound lies."""

    # Long: one keyword per thing a worker hands over; the body only keeps them.
    def __init__(
        self,
        trainer: Trainer,
        epochs: int,
        seed: int | None,
        on_epoch: EpochCallback = lambda _n, _r: None,
        enqueued_only: bool = False,
        stop_request: StopRequest | None = None,
        pace: Pace = torch.get_num_threads,
        space: str = ARTICLE,
        dataset: str = MNIST,
        max_params: int | None = None,
        keep: Keep | None = None,
    ) -> None:
        self.trainer = trainer
        self.space, self.dataset, self.max_params = SPACES[space], dataset, max_params
        self.keep = keep  # where a complete trial's trained network goes (None: nowhere)
        # Ctrl-C cuts an epoch short, never a write
        self.stop_request = stop_request if stop_request is not None else StopRequest()
        self.enqueued_only = enqueued_only  # confirm: only trials enqueued with their params and seed
        self.epochs = epochs
        self.seed = seed
        self.on_epoch = on_epoch
        self.pace = pace  # --workers N: a worker whose peers have exited takes their cores (worker.CoreShare)
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
        hp = suggest(trial, self.space, self.dataset)
        self._check_size(trial, hp)
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
            trial.set_user_attr("stop_reason", self.stop_request.why())
            raise

    def _check_size(self, trial: optuna.Trial, hp: Space) -> None:
        """Record the network's size and speed; stop it here if it is over ``max_params``."""
        size = n_params(hp, self.trainer.n_classes)
        trial.set_user_attr("n_params", size)
        if self.max_params is not None:
            trial.set_constraint("params", size - self.max_params)  # ≤ 0: feasible
            if size > self.max_params:
                trial.set_user_attr(OVER_MAX_PARAMS, True)
                raise optuna.TrialPruned(f"{size} parameters, over --max-params {self.max_params}")
        model = build_model(hp, self.trainer.n_classes).to(self.trainer.device, memory_format=torch.channels_last)
        trial.set_user_attr("inference_us", round(1e6 * inference_seconds(model, self.trainer.device), 2))

    def _train(self, trial: optuna.Trial, hp: Space, seed: int) -> float:
        """Train epoch by epoch, storing each; the last epoch's validation accuracy is the value."""
        start = time.perf_counter()
        losses: list[float] = []
        result: EpochResult | None = None
        model: torch.nn.Module | None = None
        self.stop_request.check()  # Ctrl-C while Optuna was handing out this trial: stop it here
        epochs = self.trainer.fit_model(hp, self.epochs, seed, hp.style())
        most = torch.get_num_threads()
        while True:
            threads = self.pace()
            if threads > most:  # the other workers have exited: this one took their cores
                most = threads
                trial.set_user_attr("threads_max", threads)
            with self.stop_request.open():  # only the computation may be cut short, never a write
                done = next(epochs, None)
            if done is None:
                break
            result, model = done
            losses.append(result.train_loss)
            trial.report(result.val_accuracy, result.epoch)
            trial.set_user_attr("train_loss", losses)
            trial.set_user_attr("epochs_run", result.epoch)
            trial.set_user_attr("wall_time_s", round(time.perf_counter() - start, 3))
            self.on_epoch(trial.number, result)
            self.stop_request.check()  # Ctrl-C while the epoch was stored
            # A trial that has trained every epoch is complete: its value is final, so it is
            # never pruned after the last one.
            if result.epoch < self.epochs and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {result.epoch}")
        assert result is not None and model is not None  # epochs >= 1
        if self.keep is not None:  # trained every epoch: the network is worth keeping (model.kept)
            self.keep(trial, hp, seed, model, result.val_accuracy)
        return result.val_accuracy
