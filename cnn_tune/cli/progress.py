"""Live progress: on a terminal, a bar over the study's epochs with the time left and one row
per worker; one line per event when piped (notes on stderr)."""

from __future__ import annotations

import sys

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from cnn_tune.cli.output import pct
from cnn_tune.cli.views import trial_line
from cnn_tune.model.results import EpochResult
from cnn_tune.search.records import Plan


def start_line(plan: Plan) -> str:
    """What is about to run, on short lines (each fits 80 columns for a study name of ordinary
    length): what and how long, on which images and device, how it searches."""
    p = plan.protocol
    images = (
        f"  {p.n_train} train / {p.n_val} validation images of {p.ref.short}; device {plan.device}, {plan.precision}"
    )
    if plan.enqueued_only:
        return f"Confirming in study {plan.study!r}: {plan.trials} run(s) of {p.epochs} epochs\n{images}"
    verb = "Resuming" if plan.resumed else "Creating"
    warm = ", warm start" if plan.warm_start and not plan.resumed else ""
    patience = f", patience {plan.patience}" if plan.patience else ""
    return (
        f"{verb} study {plan.study!r}: {plan.trials} trial(s) of {p.epochs} epochs\n{images}\n"
        f"  {plan.sampler} sampler, {plan.pruner} pruner{warm}{patience}"
    )


def _bar(console: Console, unit: str, total: int) -> tuple[Progress, object]:
    progress = Progress(
        SpinnerColumn(),
        TextColumn(unit),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
    )
    task = progress.add_task(unit, total=total, status="")
    progress.start()
    return progress, task


class ImagesBar:
    """A bar over a folder's images while they are converted (once per folder: then cached)."""

    console: Console | None = None
    _images: tuple[Progress, object] | None = None

    def images(self, done: int, total: int) -> None:
        if self.console is None:
            return
        if self._images is None:
            self._images = _bar(self.console, "images", total)
        progress, task = self._images
        progress.update(task, completed=done)
        if done >= total:
            progress.stop()
            self._images = None


class PlainReporter(ImagesBar):
    """One line per event; progress notes on stderr so stdout holds only trial lines (or
    nothing but the result, when ``stderr_only``: a JSON or CSV document follows on stdout)."""

    def __init__(self, stderr_only: bool = False) -> None:
        self.stderr_only = stderr_only

    def info(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def start(self, plan: Plan) -> None:
        self.info(start_line(plan))

    def epoch(self, worker: int, trial_number: int, result: EpochResult, epochs: int) -> None:
        pass

    def trial_done(self, trial: FrozenTrial, best: FrozenTrial | None) -> None:
        print(trial_line(trial, best), file=sys.stderr if self.stderr_only else sys.stdout, flush=True)

    def close(self) -> None:
        pass


# How far back rich looks to estimate the speed behind "time left": several trials' worth of
# epochs, so that a pruned trial's skipped epochs (counted as done) and the next trial's first
# epoch even out instead of making the estimate jump.
SPEED_WINDOW_S = 600


class RichReporter(ImagesBar):
    """A live bar over the study's epochs (a pruned trial's skipped epochs count as done, so the
    time left, from the epochs measured so far, includes pruning), a row per worker with its
    trial, epoch, validation accuracy and seconds per epoch, and a line per finished trial
    above them, cut to the terminal's width."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.live: Live | None = None
        self.bar: Progress | None = None
        self.task = None
        self.rows: dict[int, str] = {}  # worker → its row
        self.seen: dict[int, int] = {}  # trial → epochs counted on the bar
        self.epochs = 0
        self.trials = 0
        self.done = 0
        self.workers = 1

    def info(self, message: str) -> None:
        self.console.print(f"[dim]{message}[/dim]", highlight=False)

    def start(self, plan: Plan) -> None:
        self.console.print(start_line(plan), highlight=False, markup=False)
        self.epochs, self.trials, self.workers = plan.protocol.epochs, plan.trials, plan.workers
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            TimeElapsedColumn(),
            TextColumn("elapsed,"),
            TimeRemainingColumn(),
            TextColumn("left"),
            console=self.console,
            speed_estimate_period=SPEED_WINDOW_S,
        )
        self.task = self.bar.add_task(self._description(), total=plan.trials * plan.protocol.epochs)
        self.live = Live(self, console=self.console, refresh_per_second=4, transient=True)
        self.live.start()

    def _description(self) -> str:
        return f"{self.done}/{self.trials} trials"

    def __rich__(self) -> Group:
        assert self.bar is not None
        rows = [Text(self.rows[w], no_wrap=True, overflow="ellipsis") for w in sorted(self.rows)]
        return Group(self.bar, *rows)

    def epoch(self, worker: int, trial_number: int, result: EpochResult, epochs: int) -> None:
        if self.bar is None:
            return
        who = f"worker {worker}: " if self.workers > 1 else ""
        self.rows[worker] = (
            f"  {who}trial {trial_number} · epoch {result.epoch}/{epochs} · "
            f"val {pct(result.val_accuracy)} · {result.seconds:.1f} s/epoch"
        )
        counted = self.seen.get(trial_number, 0)
        self.seen[trial_number] = max(counted, result.epoch)
        self.bar.advance(self.task, self.seen[trial_number] - counted)

    def trial_done(self, trial: FrozenTrial, best: FrozenTrial | None) -> None:
        style = {TrialState.COMPLETE: "green", TrialState.PRUNED: "yellow"}.get(trial.state, "red")
        line = trial_line(trial, best, self.console.width)
        if self.bar is None:
            self.console.print(line, highlight=False, markup=False)
            return
        # a trial stopped early: the epochs it skipped are done, as far as the study's end goes
        counted = self.seen.pop(trial.number, 0)
        self.done += 1
        self.bar.update(self.task, advance=max(self.epochs - counted, 0), description=self._description())
        self.console.print(Text(line, style=style, no_wrap=True, overflow="ellipsis"))

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
            self.bar = None


def reporter(console: Console | None, stderr_only: bool = False) -> PlainReporter | RichReporter:
    """Rich on a terminal; else plain lines (all on stderr when stdout carries a document)."""
    return RichReporter(console) if console is not None else PlainReporter(stderr_only)


def epoch_line(result: EpochResult, epochs: int) -> str:
    val = f"  val {pct(result.val_accuracy)}" if result.val_accuracy is not None else ""
    return f"epoch {result.epoch:>3}/{epochs}  train loss {result.train_loss:.4f}{val}  {result.seconds:.1f}s"


class EpochProgress(ImagesBar):
    """`retrain`'s display: a rich bar over epochs on a terminal, one stderr line per epoch otherwise."""

    def __init__(self, console: Console | None) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task = None

    def info(self, message: str) -> None:
        if self.console is not None:
            self.console.print(f"[dim]{message}[/dim]", highlight=False)
        else:
            print(message, file=sys.stderr, flush=True)

    def epoch(self, result: EpochResult, epochs: int) -> None:
        if self.console is None:
            print(epoch_line(result, epochs), file=sys.stderr, flush=True)
            return
        if self.progress is None:
            self.progress, self.task = _bar(self.console, "epochs", epochs)
        self.progress.update(self.task, advance=1, status=f"train loss {result.train_loss:.4f}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
