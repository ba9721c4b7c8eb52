"""The command line: parse options, call one library function, render its result.

Library errors (:mod:`cnn_tune.errors`) and bad options are turned into one line on stderr
here, and nowhere else; ``--debug`` (or ``CNN_TUNE_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

from . import __version__
from .env import DATA_DIR_ENV, DEBUG_ENV, STORAGE_ENV, STUDY_ENV
from .errors import CnnTuneError
from .samplers import PRUNERS, SAMPLERS
from .plots import EVALUATORS, KINDS
from .study import DEFAULT_STORAGE, DEFAULT_STUDY, quiet_optuna

# Typer may bundle its own copy of click; take the exception classes from wherever it does.
_click_exceptions = importlib.import_module(typer.BadParameter.__module__)
_DEBUG = {"on": False}


def _debug_env() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


class OneLineErrors(TyperGroup):
    """Every failure is one line on stderr and an exit code: 2 usage, 1 runtime, 130 Ctrl-C."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args, "cnn-tune", complete_var, standalone_mode=False, **extra)
        except _click_exceptions.NoArgsIsHelpError:  # bare `cnn-tune`: help was printed already
            sys.exit(0)
        except _click_exceptions.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "cnn-tune"
            typer.echo(f"Error: {exc.format_message()} (see: {command} --help)", err=True)
            sys.exit(2)
        except _click_exceptions.ClickException as exc:
            typer.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except CnnTuneError as exc:
            if _DEBUG["on"]:
                raise
            typer.echo(f"Error: {exc.one_line()}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("Aborted.", err=True)
            sys.exit(130)
        except KeyboardInterrupt:
            typer.echo("Interrupted.", err=True)
            sys.exit(130)
        except Exception as exc:  # a bug: still one line unless --debug
            if _DEBUG["on"]:
                raise
            typer.echo(f"Error: unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback)",
                       err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    help="Tune a PyTorch CNN on MNIST with Optuna; every study lives in one database.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Device = Enum("Device", {n: n for n in ("auto", "cpu", "cuda")}, type=str)
Sampler = Enum("Sampler", {n: n for n in SAMPLERS}, type=str)
Pruner = Enum("Pruner", {n: n for n in PRUNERS}, type=str)

# Options shared by every command that opens a study.
StorageOpt = Annotated[str, typer.Option("--storage", envvar=STORAGE_ENV, metavar="URL",
                                         help="SQLAlchemy URL of the study database (relative SQLite paths are from the current folder).")]
StudyOpt = Annotated[str, typer.Option("--study", envvar=STUDY_ENV, metavar="NAME", help="Study name.")]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", envvar=DATA_DIR_ENV, metavar="DIR",
                                                    help="Folder with the MNIST IDX files (default: ~/.cache/cnn-tune).")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto = CUDA when available, else CPU.")]
Format = Enum("Format", {n: n for n in ("table", "json", "csv")}, type=str)
BestFormat = Enum("BestFormat", {n: n for n in ("table", "json")}, type=str)
State = Enum("State", {n: n for n in ("complete", "pruned", "fail", "running", "waiting")}, type=str)
Kind = Enum("Kind", {n: n for n in KINDS}, type=str)
Evaluator = Enum("Evaluator", {n: n for n in EVALUATORS}, type=str)
Precision = Enum("Precision", {n: n for n in ("auto", "fp32", "bf16")}, type=str)
PrecisionOpt = Annotated[Precision, typer.Option("--precision", help="auto = bf16 autocast where the hardware runs it "
                                                 "natively (CUDA, CPUs with AMX/AVX512-BF16), else fp32.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")]


def _set_debug(debug: bool, reset: bool = False) -> None:
    """The root callback resets (one process may run several commands, as tests do);
    a command's own --debug can only switch it on."""
    _DEBUG["on"] = debug or _debug_env() or (_DEBUG["on"] and not reset)
    quiet_optuna(_DEBUG["on"])


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cnn-tune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: DebugOpt = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    _set_debug(debug, reset=True)


@app.command()
def optimize(
    trials: Annotated[int, typer.Option("--trials", "-n", min=1, help="Trials to run in this invocation.")] = 20,
    timeout: Annotated[Optional[float], typer.Option("--timeout", min=1, metavar="SECONDS",
                                                     help="Stop starting new trials after this long.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1,
                                                  help="Epochs per trial. [default: 10, or the study's when resuming]")] = None,
    study: StudyOpt = DEFAULT_STUDY,
    storage: StorageOpt = DEFAULT_STORAGE,
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, help="Seed for sampler and training (reproducible runs).")] = None,
    train_limit: Annotated[Optional[int], typer.Option("--train-limit", min=10, metavar="N",
                                                       help="Use only N training images (80/20 split of those). [default: all 60000, or the study's]")] = None,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    sampler: Annotated[Sampler, typer.Option("--sampler", help="Optuna sampler.")] = Sampler.tpe,
    pruner: Annotated[Pruner, typer.Option("--pruner", help="Optuna pruner (median, as in the seed article).")] = Pruner.median,
    data_dir: DataDirOpt = None,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Worker processes on this machine sharing the study; "
                                         "--trials is their total.")] = 1,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, metavar="N",
                                                   help="CPU threads per worker. [default: the cores shared out among the workers]")] = None,
    max_trials: Annotated[Optional[int], typer.Option("--max-trials", min=1, metavar="N",
                                                      help="Study-wide cap for a fleet of independent workers: start no trial once the "
                                                           "study has N complete, pruned or running trials (failed ones do not count).")] = None,
    heartbeat: Annotated[int, typer.Option("--heartbeat", min=1, metavar="SECONDS",
                                           help="How often a running trial tells the database it is alive.")] = 10,
    grace: Annotated[int, typer.Option("--grace", min=1, metavar="SECONDS",
                                       help="A running trial silent this long is failed and re-queued (its worker died).")] = 60,
    debug: DebugOpt = False,
) -> None:
    """Create or resume a study and run trials on it.

    Several workers: `--workers N` here, or the same command in several terminals or on
    several machines sharing one --storage (cap the fleet with --max-trials).

    Example: cnn-tune optimize --trials 20 --workers 2 --storage sqlite:///studies/cnn_tune.db
    """
    from .console import PlainReporter, RichReporter, render_summary
    from .optimize import OptimizeSettings, run_optimize
    from .study import Heartbeat

    _set_debug(debug)
    console = Console()
    reporter = RichReporter(console) if console.is_terminal else PlainReporter()
    settings = OptimizeSettings(trials=trials, timeout=timeout, epochs=epochs, train_limit=train_limit, study=study,
                                storage=storage, seed=seed, device=device.value, sampler=sampler.value,
                                pruner=pruner.value, data_dir=data_dir, workers=workers, threads=threads, max_trials=max_trials, precision=precision.value,
                                heartbeat=Heartbeat(heartbeat, grace))
    try:
        result = run_optimize(settings, reporter)
    finally:
        reporter.close()
    render_summary(result, console if console.is_terminal else None)
    if result.interrupted:
        raise typer.Exit(130)


def _terminal() -> Console | None:
    """A console when stdout is a terminal (rich tables); None for pipes and files (plain)."""
    console = Console()
    return console if console.is_terminal else None


def _emit(rendered, console: Console | None, output: Optional[Path]) -> None:
    from .files import check_writable, write_atomic
    from .output import emit

    if output is None:
        emit(rendered, console)
        return
    check_writable(output)
    write_atomic(output, rendered.encode())
    typer.echo(f"Wrote {output}", err=True)


@app.command()
def best(
    study: StudyOpt = DEFAULT_STUDY,
    storage: StorageOpt = DEFAULT_STORAGE,
    fmt: Annotated[BestFormat, typer.Option("--format", "-f", help="table, or json for scripts.")] = BestFormat.table,
    debug: DebugOpt = False,
) -> None:
    """Show the best trial: validation accuracy, parameters, epochs, duration, and its test
    accuracy and checkpoint once `cnn-tune retrain` has made them.

    Example: cnn-tune best --format json
    """
    from .inspection import best_record
    from .output import render_best
    from .study import read_study

    _set_debug(debug)
    console = _terminal() if fmt == BestFormat.table else None
    _emit(render_best(best_record(read_study(storage, study), storage), fmt.value, console), console, None)


@app.command()
def trials(
    study: StudyOpt = DEFAULT_STUDY,
    storage: StorageOpt = DEFAULT_STORAGE,
    state: Annotated[Optional[list[State]], typer.Option("--state", "-s", help="Only trials in this state (repeatable).")] = None,
    last: Annotated[Optional[int], typer.Option("--last", min=1, metavar="N", help="Only the N most recent trials.")] = None,
    top: Annotated[Optional[int], typer.Option("--top", min=1, metavar="N", help="Only the N best complete trials, best first.")] = None,
    sort: Annotated[Optional[str], typer.Option("--sort", metavar="KEY",
                                                help="Sort by number, value, epochs, duration, started or a parameter name.")] = None,
    reverse: Annotated[bool, typer.Option("--reverse", "-r", help="Reverse the order.")] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table (plain text when piped), json or csv.")] = Format.table,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.")] = None,
    debug: DebugOpt = False,
) -> None:
    """List the trials of a study: state, validation accuracy (a pruned trial shows its last
    epoch's), epochs reached, duration and every parameter.

    Example: cnn-tune trials --state complete --top 5 --format csv --output top5.csv
    """
    from .inspection import select_rows
    from .output import render_trials
    from .study import read_study

    _set_debug(debug)
    opened = read_study(storage, study)
    rows = select_rows(opened, [s.value for s in state or []], last, top, sort, reverse)
    console = _terminal() if fmt == Format.table and output is None else None
    title = f"study {opened.study_name}: {len(rows)} trial(s)"
    _emit(render_trials(rows, fmt.value, console, title), console, output)


@app.command()
def studies(
    storage: StorageOpt = DEFAULT_STORAGE,
    fmt: Annotated[Format, typer.Option("--format", "-f", help="table (plain text when piped), json or csv.")] = Format.table,
    debug: DebugOpt = False,
) -> None:
    """List every study in the storage: direction, trials by state, best value, protocol.

    Example: cnn-tune studies --storage sqlite:///studies/cnn_tune.db
    """
    from .inspection import summarize_studies
    from .output import render_studies
    from .study import open_existing

    _set_debug(debug)
    console = _terminal() if fmt == Format.table else None
    _emit(render_studies(summarize_studies(open_existing(storage)), fmt.value, console), console, None)


@app.command()
def plot(
    kind: Annotated[Kind, typer.Argument(help="The view, or `report` for one HTML page with all of them.")],
    study: StudyOpt = DEFAULT_STUDY,
    storage: StorageOpt = DEFAULT_STORAGE,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="PATH",
                                                   help="File to write; .html, .png, .svg or .pdf. [default: STUDY-KIND.html beside the database]")] = None,
    params: Annotated[Optional[list[str]], typer.Option("--params", "-p", metavar="NAME",
                                                        help="Parameters to draw (repeatable); contour takes exactly two [default: batch_size, lr].")] = None,
    evaluator: Annotated[Evaluator, typer.Option("--evaluator", help="Importance evaluator: Optuna's default PED-ANOVA, "
                                                 "fANOVA (the article's) or mean decrease impurity.")] = Evaluator["ped-anova"],
    debug: DebugOpt = False,
) -> None:
    """Draw a view of a study to a file and print its path.

    Kinds: history, importance, contour, parallel, slice, edf, intermediate, timeline, rank,
    and report (all views, a summary and the best trial on one self-contained HTML page).
    HTML embeds plotly.js and opens offline; PNG/SVG/PDF need kaleido and Chrome/Chromium.

    Example: cnn-tune plot contour --params batch_size --params lr --output contour.png
    """
    from .plots import write_plot
    from .study import read_study

    _set_debug(debug)
    path = write_plot(read_study(storage, study), storage, kind.value, output, params, evaluator.value)
    typer.echo(str(path))


@app.command()
def retrain(
    trial: Annotated[Optional[int], typer.Option("--trial", min=0, metavar="N", help="Trial to retrain. [default: the best complete one]")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Epochs. [default: the study's]")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, help="Training seed. [default: the trial's own]")] = None,
    study: StudyOpt = DEFAULT_STUDY,
    storage: StorageOpt = DEFAULT_STORAGE,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="PATH",
                                                   help="Checkpoint file. [default: STUDY-trialN.pt beside the database]")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing checkpoint file.")] = False,
    fmt: Annotated[BestFormat, typer.Option("--format", "-f", help="table, or json for scripts.")] = BestFormat.table,
    data_dir: DataDirOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Train a trial's hyperparameters (default: the best) on all 60,000 training images, score
    the 10,000 test images, save a checkpoint and record the test accuracy on the study.

    Example: cnn-tune retrain --trial 3 --output best.pt
    """
    from .console import EpochProgress
    from .output import render_evaluation
    from .retrain import RetrainSettings, retrain as run_retrain

    _set_debug(debug)
    console = _terminal()
    progress = EpochProgress(console)
    settings = RetrainSettings(study=study, storage=storage, trial=trial, epochs=epochs, seed=seed, device=device.value,
                               precision=precision.value, output=output, overwrite=overwrite, data_dir=data_dir)
    try:
        result = run_retrain(settings, progress.epoch, progress.info)
    finally:
        progress.close()
    render_evaluation(result.as_dict(), True, fmt.value, console if fmt == BestFormat.table else None)


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="A .pt file written by `cnn-tune retrain`.")],
    device: DeviceOpt = Device.auto,
    fmt: Annotated[BestFormat, typer.Option("--format", "-f", help="table, or json for scripts.")] = BestFormat.table,
    data_dir: DataDirOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Score a saved checkpoint on the MNIST test set again (touches no study).

    Example: cnn-tune evaluate studies/mnist-cnn-trial3.pt
    """
    from .console import EpochProgress
    from .output import render_evaluation
    from .retrain import evaluate as run_evaluate

    _set_debug(debug)
    console = _terminal()
    result = run_evaluate(checkpoint, data_dir, device.value, EpochProgress(console).info)
    for note in result.notes:
        typer.echo(f"Note: {note}", err=True)
    render_evaluation(result.as_dict(), False, fmt.value, console if fmt == BestFormat.table else None)


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="A .pt file written by `cnn-tune retrain`.")],
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="PNG/JPEG files of single digits.")],
    invert: Annotated[bool, typer.Option("--invert", help="For dark digits on a light background (MNIST is white on black).")] = False,
    fmt: Annotated[BestFormat, typer.Option("--format", "-f", help="table, or json for scripts.")] = BestFormat.table,
    debug: DebugOpt = False,
) -> None:
    """Classify image files with a saved checkpoint: digit and probability per file.

    Images are read as grayscale and resized to 28×28. MNIST digits are white on black;
    for a dark digit on white paper pass --invert.

    Example: cnn-tune predict studies/mnist-cnn-trial3.pt seven.png --invert
    """
    from .output import render_predictions
    from .retrain import predict as run_predict

    _set_debug(debug)
    console = _terminal() if fmt == BestFormat.table else None
    render_predictions([p.as_dict() for p in run_predict(checkpoint, images, invert)], fmt.value, console)


def main() -> None:
    app()
