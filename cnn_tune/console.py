"""Rendering for people (rich, on a terminal) and for pipes (plain lines)."""

from __future__ import annotations

import sys
from typing import Any

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from .optimize import OptimizeResult
from .protocol import Protocol
from .training import EpochResult


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def seconds(trial: FrozenTrial) -> float | None:
    return trial.duration.total_seconds() if trial.duration is not None else None


def fmt_value(value: Any) -> str:
    """Parameters as a person writes them: 0.3, not 0.30000000000000004 (Optuna's float steps)."""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def short_params(params: dict[str, Any]) -> str:
    """The key parameters in one short string, e.g. ``Adam lr=1.2e-03 bs=128 fc=96 drop=0.2/0.1``."""
    if not params:
        return ""
    parts = [str(params.get("optimizer", "?"))]
    if "lr" in params:
        parts.append(f"lr={params['lr']:.1e}")
    if "batch_size" in params:
        parts.append(f"bs={params['batch_size']}")
    if "fc2_input_dim" in params:
        parts.append(f"fc={params['fc2_input_dim']}")
    if "dropout_rate" in params:
        parts.append(f"drop={params['dropout_rate']:.1f}/{params.get('dropout_rate2', 0):.1f}")
    return " ".join(parts)


def trial_line(trial: FrozenTrial, best: FrozenTrial | None) -> str:
    secs = seconds(trial)
    epochs = trial.user_attrs.get("epochs_run", 0)
    best_text = f"best {pct(best.value)} (#{best.number})" if best is not None else "best —"
    return (f"trial {trial.number:>3}  {trial.state.name:<8}  val {pct(trial.value if trial.state == TrialState.COMPLETE else _last(trial))}"
            f"  {best_text}  {short_params(trial.params)}  {epochs} ep  {secs or 0:.1f}s")


def _last(trial: FrozenTrial) -> float | None:
    """Last reported validation accuracy (pruned and failed trials have no value)."""
    return trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None


def protocol_line(study_name: str, resumed: bool, protocol: Protocol, trials: int, device: str) -> str:
    verb = "Resuming" if resumed else "Creating"
    return (f"{verb} study {study_name!r}: {trials} trial(s) of {protocol.epochs} epochs on "
            f"{protocol.n_train} train / {protocol.n_val} validation images, device {device}")


class PlainReporter:
    """One line per event; progress notes on stderr so stdout holds only trial lines."""

    def __init__(self) -> None:
        self.out = sys.stdout

    def info(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    def start(self, study_name: str, resumed: bool, protocol: Protocol, trials: int, device: str) -> None:
        print(protocol_line(study_name, resumed, protocol, trials, device), file=sys.stderr, flush=True)

    def epoch(self, trial_number: int, result: EpochResult, epochs: int) -> None:
        pass

    def trial_done(self, trial: FrozenTrial, best: FrozenTrial | None) -> None:
        print(trial_line(trial, best), file=self.out, flush=True)

    def close(self) -> None:
        pass


class RichReporter:
    """A live bar over trials with the running trial's epoch, and a line per finished trial."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task = None

    def info(self, message: str) -> None:
        self.console.print(f"[dim]{message}[/dim]", highlight=False)

    def start(self, study_name: str, resumed: bool, protocol: Protocol, trials: int, device: str) -> None:
        self.console.print(protocol_line(study_name, resumed, protocol, trials, device), highlight=False)
        self.progress = Progress(SpinnerColumn(), TextColumn("trials"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=self.console)
        self.task = self.progress.add_task("trials", total=trials, status="starting")
        self.progress.start()

    def epoch(self, trial_number: int, result: EpochResult, epochs: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, status=f"trial {trial_number} · epoch {result.epoch}/{epochs} · "
                                                   f"val {pct(result.val_accuracy)} · {result.seconds:.1f}s/epoch")

    def trial_done(self, trial: FrozenTrial, best: FrozenTrial | None) -> None:
        style = {TrialState.COMPLETE: "green", TrialState.PRUNED: "yellow"}.get(trial.state, "red")
        line = trial_line(trial, best)
        if self.progress is not None:
            self.progress.console.print(f"[{style}]{line}[/{style}]", highlight=False)
            self.progress.advance(self.task)
        else:
            self.console.print(line, highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def summary_lines(result: OptimizeResult) -> list[str]:
    states = (f"{result.count(TrialState.COMPLETE)} complete, {result.count(TrialState.PRUNED)} pruned, "
              f"{result.count(TrialState.FAIL)} failed")
    head = "Interrupted" if result.interrupted else "Finished"
    by = f" by {result.workers} workers" if result.workers > 1 else ""
    lines = [f"{head}: {len(result.trials)} trial(s) this run{by} ({states}) in {result.seconds:.1f}s; "
             f"study {result.study_name!r} in {result.storage}"]
    if result.capped:
        lines[0] += "; stopped early: the study reached --max-trials"
    best = result.best
    if best is None:
        lines.append("No complete trial yet.")
    else:
        lines.append(f"Best trial #{best.number}: validation accuracy {pct(best.value)} "
                     f"after {best.user_attrs.get('epochs_run', '?')} epochs ({seconds(best) or 0:.1f}s)")
        lines += [f"  {k} = {fmt_value(v)}" for k, v in best.params.items()]
    if result.interrupted:
        lines.append("The study is saved; run the same command again to resume it.")
    return lines


def render_summary(result: OptimizeResult, console: Console | None) -> None:
    lines = summary_lines(result)
    if console is None:
        print("\n".join(lines), flush=True)
        return
    console.print(lines[0], highlight=False)
    console.print(f"[bold]{lines[1]}[/bold]", highlight=False)
    if result.best is not None:
        table = Table(show_header=True)
        table.add_column("parameter")
        table.add_column("value", justify="right")
        for key, value in result.best.params.items():
            table.add_row(key, fmt_value(value))
        console.print(table)
    if result.interrupted:
        console.print(lines[-1])


def epoch_line(result: EpochResult, epochs: int) -> str:
    val = f"  val {pct(result.val_accuracy)}" if result.val_accuracy is not None else ""
    return f"epoch {result.epoch:>3}/{epochs}  train loss {result.train_loss:.4f}{val}  {result.seconds:.1f}s"


class EpochProgress:
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
            self.progress = Progress(SpinnerColumn(), TextColumn("epochs"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=self.console)
            self.task = self.progress.add_task("epochs", total=epochs, status="")
            self.progress.start()
        self.progress.update(self.task, advance=1, status=f"train loss {result.train_loss:.4f}")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
