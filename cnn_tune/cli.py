"""The command line: parse options, call one library function, show its result.

Library errors (:mod:`cnn_tune.errors`) and bad options are turned into one line on stderr
here, and nowhere else; ``cnn-tune --debug …`` (or ``CNN_TUNE_DEBUG=1``) shows the traceback
instead. Heavy modules (torch) are imported inside the commands, so ``--help`` stays fast.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional, Sequence

import typer
from typer.core import TyperGroup

from . import __version__
from .choices import DEVICES, PRECISIONS
from .env import DATA_DIR_ENV, DEBUG_ENV, STORAGE_ENV, STUDY_ENV, WORKERS_ENV
from .errors import CnnTuneError
from .inspection import DEFAULT_TARGET, STATES
from .interrupts import exit_code
from .output import FORMATS, View
from .plots import EVALUATORS, KINDS
from .presets import DEFAULT_PRESET, PRESETS
from .recipe import AVERAGES, DEFAULT_RECIPE, MAX_SHIFT, MAX_TOP, RECIPES, SCHEDULES
from .samplers import PRUNERS, SAMPLERS
from .streams import guard
from .study import (
    DEFAULT_STORAGE,
    Heartbeat,
    close_all,
    quiet_libraries,
    quiet_optuna,
    storage_cause,
    storage_failure,
)

# Typer may bundle its own copy of click; take the exception classes from wherever it does.
_click_exceptions = importlib.import_module(typer.BadParameter.__module__)


def debug_requested(args: Sequence[str]) -> bool:
    """``--debug`` among the options before the command name, or ``CNN_TUNE_DEBUG`` set."""
    before_command = []
    for arg in args:
        if not arg.startswith("-"):
            break
        before_command.append(arg)
    return "--debug" in before_command or os.environ.get(DEBUG_ENV, "") not in ("", "0")


class OneLineErrors(TyperGroup):
    """Every failure is one line on stderr and an exit code: 2 usage, 1 runtime, 130 Ctrl-C."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        debug = debug_requested(args)
        try:
            with quiet_libraries(debug):
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
            if debug:
                raise
            typer.echo(f"Error: {exc.one_line()}", err=True)
            sys.exit(exc.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            typer.echo("Interrupted.", err=True)
            sys.exit(130)
        except Exception as exc:  # a storage fault deep in Optuna, or a bug: still one line unless --debug
            if debug:
                raise
            if storage_cause(exc) is not None:
                failure = storage_failure(exc)
                typer.echo(f"Error: {failure.one_line()}", err=True)
                sys.exit(failure.exit_code)
            typer.echo(f"Error: unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback)",
                       err=True)
            sys.exit(1)
        finally:
            close_all()
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(cls=OneLineErrors,
                  help="Tune a PyTorch CNN on MNIST, Fashion-MNIST or your images with Optuna; every study lives in "
                       "one database.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _choice(name: str, values) -> type[Enum]:
    """A Typer choice type made from one of the library's own tuples (or dict keys)."""
    return Enum(name, {v: v for v in values}, type=str)


Device = _choice("Device", DEVICES)
Precision = _choice("Precision", PRECISIONS)
Sampler = _choice("Sampler", SAMPLERS)
Pruner = _choice("Pruner", PRUNERS)
Preset = _choice("Preset", PRESETS)
Format = _choice("Format", FORMATS)
State = _choice("State", STATES)
Kind = _choice("Kind", KINDS)
Evaluator = _choice("Evaluator", EVALUATORS)
RecipeName = _choice("RecipeName", RECIPES)
Schedule = _choice("Schedule", SCHEDULES)
Average = _choice("Average", AVERAGES)

# Options shared by several commands, declared once.
StorageOpt = Annotated[str, typer.Option(
    "--storage", envvar=STORAGE_ENV, metavar="URL",
    help="SQLAlchemy URL of the study database (relative SQLite paths are from the current folder).")]
StudyOpt = Annotated[Optional[str], typer.Option(
    "--study", envvar=STUDY_ENV, metavar="NAME",
    help="Study name. \\[default: optimize: named after the data set (mnist-cnn); other commands: the "
         "database's only study, else mnist-cnn]", show_default=False)]
DataDirOpt = Annotated[Optional[Path], typer.Option(
    "--data-dir", envvar=DATA_DIR_ENV, metavar="DIR",
    help="Where MNIST and Fashion-MNIST are kept, and a folder's converted images (default: ~/.cache/cnn-tune).")]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto = CUDA when available, else CPU.")]
PrecisionOpt = Annotated[Precision, typer.Option(
    "--precision", help="auto = bf16 autocast where the hardware runs it natively (CUDA, CPUs with AMX/AVX512-BF16), "
                        "else fp32.")]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="table (plain text when piped), json or csv.")]
def _target(value: float) -> float:
    if not 0 < value < 1:
        raise typer.BadParameter(f"{value} is not between 0 and 1 (exclusive), e.g. 0.989 for 98.9%")
    return value


TargetOpt = Annotated[float, typer.Option(
    "--target", callback=_target, metavar="ACCURACY",
    help="Report when validation accuracy first reached this (wall time from the first trial).")]
def _workers(value: str | None) -> str | None:
    if value is None or value == "auto" or (value.isdigit() and int(value) >= 1):
        return value
    raise typer.BadParameter(f"{value!r} is neither a number of workers (at least 1) nor 'auto'")


WorkersOpt = Annotated[Optional[str], typer.Option(
    "--workers", "-w", callback=_workers, metavar="N|auto", envvar=WORKERS_ENV,
    help="Worker processes on this machine sharing the work; auto = one per core, as memory allows.")]
HeartbeatOpt = Annotated[int, typer.Option(
    "--heartbeat", min=1, metavar="SECONDS", help="How often a running trial tells the database it is alive.")]
GraceOpt = Annotated[int, typer.Option(
    "--grace", min=1, metavar="SECONDS", help="A running trial silent this long is failed and re-queued.")]
OutputOpt = Annotated[Optional[Path], typer.Option(
    "--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cnn-tune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    quiet_optuna(debug or debug_requested([]))


def _show(view: View, fmt: Format = Format.table, output: Path | None = None) -> None:
    from .output import show

    show(view, fmt.value, output)


# Long: one parameter per option of `optimize`; the body itself is a dozen lines.
@app.command()
def optimize(
    trials: Annotated[int, typer.Option("--trials", "-n", min=1, help="Trials to run in this invocation.")] = 20,
    timeout: Annotated[Optional[float], typer.Option(
        "--timeout", min=1, metavar="SECONDS", help="Stop starting new trials after this long.")] = None,
    epochs: Annotated[Optional[int], typer.Option(
        "--epochs", min=1, help="Epochs per trial. \\[default: 10, or the study's when resuming]")] = None,
    study: StudyOpt = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, help="Seed for sampler and training.")] = None,
    train_limit: Annotated[Optional[int], typer.Option(
        "--train-limit", min=10, metavar="N",
        help="Use only N training images (80/20 split of those). \\[default: all 60000, or the study's]")] = None,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    preset: Annotated[Preset, typer.Option(
        "--preset", help="fast: tpe-mv, narrowing, --warm-start, --workers auto (measured quicker); "
                         "article: tpe, median, one worker. Options given here override it.")] = Preset(DEFAULT_PRESET),
    sampler: Annotated[Optional[Sampler], typer.Option(
        "--sampler", help="Optuna sampler. \\[default: the preset's]", show_default=False)] = None,
    pruner: Annotated[Optional[Pruner], typer.Option(
        "--pruner", help="Optuna pruner. \\[default: the preset's]", show_default=False)] = None,
    data_dir: DataDirOpt = None,
    workers: WorkersOpt = None,
    threads: Annotated[Optional[int], typer.Option(
        "--threads", min=1, metavar="N", help="CPU threads per worker. \\[default: the cores shared out]")] = None,
    max_trials: Annotated[Optional[int], typer.Option(
        "--max-trials", min=1, metavar="N",
        help="Study-wide cap for a fleet of independent workers: start no trial once the study has N complete, "
             "pruned or running trials (failed ones do not count).")] = None,
    heartbeat: HeartbeatOpt = 10,
    grace: GraceOpt = 60,
    dataset: Annotated[Optional[str], typer.Option(
        "--dataset", "-d", metavar="NAME|PATH",
        help="What to learn: MNIST, Fashion-MNIST, or a folder of your images (train/<class>/*, optionally "
             "test/<class>/*). \\[default: the study's, or mnist]", show_default=False)] = None,
    patience: Annotated[Optional[int], typer.Option(
        "--patience", min=0, metavar="N",
        help="Start no new trial once N finished trials in a row (complete or pruned, all workers and "
             "processes) have not beaten the study's best by more than the noise: two binomial standard "
             "errors of the best's accuracy on the validation images (±0.18 points at 99% on 12,000). "
             "Running trials finish. 0: never stop early. \\[default: the preset's]", show_default=False)] = None,
    warm_start: Annotated[Optional[bool], typer.Option(
        "--warm-start/--no-warm-start",
        help="A new study's first trial is the article's configuration (Adam, lr 1e-3, batch 128), "
             "so pruning has a strong reference from the start. \\[default: the preset's]",
        show_default=False)] = None,
) -> None:
    """Create or resume a study and run trials on it.

    How it searches comes from --preset: fast (the default, measured quicker to 98.9%) or
    article (the seed article's TPE + median pruner, one worker); options given override it.

    Several workers: `--workers N` here, or the same command in several terminals or on
    several machines sharing one --storage (cap the fleet with --max-trials).

    The data: --dataset mnist (the default), fashion-mnist, or a folder of your own images;
    the study records it, so no other command needs it again.

    Example: cnn-tune optimize --dataset fashion-mnist --trials 20 --workers 2
    """
    from .optimize import run_optimize
    from .output import terminal
    from .plan import OptimizeOptions
    from .progress import reporter
    from .views import summary_view

    options = OptimizeOptions(
        trials=trials, timeout=timeout, epochs=epochs, train_limit=train_limit, study=study, storage=storage,
        seed=seed, device=device.value, precision=precision.value, preset=preset.value,
        sampler=sampler and sampler.value, pruner=pruner and pruner.value, data_dir=data_dir,
        workers=workers if workers in (None, "auto") else int(workers), threads=threads,
        max_trials=max_trials, heartbeat=Heartbeat(heartbeat, grace), warm_start=warm_start, dataset=dataset,
        patience=patience)
    report = reporter(terminal())
    try:
        result = run_optimize(options, report)
    finally:
        report.close()
    _show(summary_view(result))
    if result.interrupted:
        raise typer.Exit(exit_code(result.stop_signal))


RankBy = _choice("RankBy", ("value", "mean"))


@app.command()
def best(study: StudyOpt = None, storage: StorageOpt = DEFAULT_STORAGE,
         fmt: FormatOpt = Format.table,
         by: Annotated[RankBy, typer.Option(
             "--by", help="value: the best single run; mean: the best confirmed mean (`cnn-tune confirm`).")] = (
             RankBy.value),
         target: TargetOpt = DEFAULT_TARGET) -> None:
    """Show the best trial, its parameters and test accuracy.

    Validation accuracy, epochs, duration, seed and parameters; the test accuracy and checkpoint
    appear once `cnn-tune retrain` has made them.

    Example: cnn-tune best --format json
    """
    from .inspection import best_record
    from .study import read_study
    from .views import best_view

    _show(best_view(best_record(read_study(storage, study), storage, by.value, target)), fmt)


@app.command()
def trials(
    study: StudyOpt = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    state: Annotated[Optional[list[State]], typer.Option(
        "--state", "-s", help="Only trials in this state (repeatable).")] = None,
    last: Annotated[Optional[int], typer.Option(
        "--last", min=1, metavar="N", help="Only the N most recent trials.")] = None,
    top: Annotated[Optional[int], typer.Option(
        "--top", min=1, metavar="N", help="Only the N best complete trials, best first.")] = None,
    sort: Annotated[Optional[str], typer.Option(
        "--sort", metavar="KEY", help="Sort by number, value, epochs, duration, started or a parameter name.")] = None,
    reverse: Annotated[bool, typer.Option("--reverse", "-r", help="Reverse the order.")] = False,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
) -> None:
    """List a study's trials: state, accuracy, epochs, parameters.

    A pruned trial shows its last epoch's validation accuracy; --format csv or json for scripts.

    Example: cnn-tune trials --state complete --top 5 --format csv --output top5.csv
    """
    from .inspection import select_rows
    from .study import read_study
    from .views import trials_view

    opened = read_study(storage, study)
    rows = select_rows(opened, [s.value for s in state or []], last, top, sort, reverse)
    _show(trials_view(rows, opened.study_name), fmt, output)


@app.command()
def studies(storage: StorageOpt = DEFAULT_STORAGE, fmt: FormatOpt = Format.table,
            target: TargetOpt = DEFAULT_TARGET) -> None:
    """List every study in the database with its counts and best.

    Direction, trials by state, best value and the protocol (epochs, train limit) of each.

    Example: cnn-tune studies --storage sqlite:///studies/cnn_tune.db
    """
    from .inspection import summarize_studies
    from .study import open_existing
    from .views import studies_view

    _show(studies_view(summarize_studies(open_existing(storage), target), target), fmt)


@app.command()
def plot(
    kind: Annotated[Kind, typer.Argument(help="The view, or `report` for one HTML page with all of them.")],
    study: StudyOpt = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", metavar="PATH",
        help="File to write; .html, .png, .svg or .pdf. \\[default: STUDY-KIND.html beside the database]")] = None,
    params: Annotated[Optional[list[str]], typer.Option(
        "--params", "-p", metavar="NAME",
        help="Parameters to draw (repeatable); contour takes exactly two \\[default: batch_size, lr].")] = None,
    evaluator: Annotated[Evaluator, typer.Option(
        "--evaluator", help="Importance evaluator: Optuna's default PED-ANOVA, fANOVA (the article's) or "
                            "mean decrease impurity.")] = Evaluator["ped-anova"],
    target: TargetOpt = DEFAULT_TARGET,
) -> None:
    """Draw a view of a study, or the whole report, to a file.

    Kinds: history, importance, contour, parallel, slice, edf, intermediate, timeline, rank,
    and report (all views, a summary and the best trial on one self-contained HTML page).
    HTML embeds plotly.js and opens offline; PNG/SVG/PDF need kaleido and Chrome/Chromium.

    Example: cnn-tune plot contour --params batch_size --params lr --output contour.png
    """
    from .plots import write_plot
    from .study import read_study

    typer.echo(str(write_plot(read_study(storage, study), storage, kind.value, output, params, evaluator.value,
                              target)))


# Long: one parameter per option of `retrain`; the body itself is a dozen lines.
@app.command()
def retrain(
    trial: Annotated[Optional[int], typer.Option(
        "--trial", min=0, metavar="N", help="Trial to retrain. \\[default: the best complete one]")] = None,
    recipe: Annotated[RecipeName, typer.Option(
        "--recipe", help="best: what won per minute in benchmarks/retrain.py; article: the trial's own training "
                         "again (the study's epochs, constant lr).")] = RecipeName(DEFAULT_RECIPE),
    epochs: Annotated[Optional[int], typer.Option(
        "--epochs", min=1, help="Epochs. \\[default: the recipe's]")] = None,
    schedule: Annotated[Optional[Schedule], typer.Option(
        "--schedule", help="Learning rate: the trial's throughout (constant), cosine decay from it to 0, or "
                           "auto: cosine, but constant for Adagrad, whose steps already shrink. "
                           "\\[default: the recipe's]")] = None,
    shift: Annotated[Optional[int], typer.Option(
        "--shift", min=0, max=MAX_SHIFT, metavar="PX",
        help="Shift each training image at random by up to PX pixels; 0: no augmentation. "
             "\\[default: the recipe's]")] = None,
    flip: Annotated[Optional[bool], typer.Option(
        "--flip/--no-flip", help="Mirror training images left-right at random (clothes, not digits). "
                                 "\\[default: the recipe's]", show_default=False)] = None,
    average: Annotated[Optional[Average], typer.Option(
        "--average", help="ema: keep an exponential moving average of the weights. \\[default: the recipe's]")] = None,
    top: Annotated[Optional[int], typer.Option(
        "--top", min=1, max=MAX_TOP, metavar="K",
        help="Retrain the K best trials into one checkpoint that averages their probabilities. \\[default: 1]")] = None,
    seed: Annotated[Optional[int], typer.Option(
        "--seed", min=0, help="Training seed. \\[default: each trial's own]")] = None,
    study: StudyOpt = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", metavar="PATH",
        help="Checkpoint file. \\[default: STUDY-trialN.pt beside the database]")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing checkpoint file.")] = False,
    fmt: FormatOpt = Format.table,
    data_dir: DataDirOpt = None,
) -> None:
    """Train the best trial into the final model and score the test set.

    Trains the trial's hyperparameters (default: the best trial's) on all the study's training
    images with a recipe — by default 20 epochs, a cosine learning rate (constant for Adagrad)
    and, for MNIST, images shifted by up to 2 pixels — then scores the test images, writes a
    checkpoint and records the test accuracy on the study. --recipe article retrains exactly as
    the trial trained; any option below overrides one part of the recipe.

    Example: cnn-tune retrain --trial 3 --output best.pt
    """
    from .output import terminal
    from .progress import EpochProgress
    from .recipe import RECIPES
    from .retrain import RetrainSettings
    from .retrain import retrain as run_retrain
    from .views import evaluation_view

    chosen = RECIPES[recipe.value].with_options(epochs=epochs, schedule=schedule and schedule.value, shift=shift,
                                                average=average and average.value, top=top, flip=flip)
    settings = RetrainSettings(study=study, storage=storage, trial=trial, recipe=chosen, seed=seed,
                               device=device.value, precision=precision.value, output=output, overwrite=overwrite,
                               data_dir=data_dir)
    progress = EpochProgress(terminal())
    try:
        result = run_retrain(settings, progress.epoch, progress.info, progress.images)
    finally:
        progress.close()
    _show(evaluation_view(result.as_dict(), True), fmt)


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="A .pt file written by `cnn-tune retrain`.")],
    device: DeviceOpt = Device.auto,
    fmt: FormatOpt = Format.table,
    data_dir: DataDirOpt = None,
) -> None:
    """Score a saved checkpoint on the test set again.

    Touches no study: the checkpoint holds everything needed.

    Example: cnn-tune evaluate studies/mnist-cnn-trial3.pt
    """
    from .output import terminal
    from .progress import EpochProgress
    from .retrain import score_checkpoint
    from .views import evaluation_view

    result = score_checkpoint(checkpoint, data_dir, device.value, EpochProgress(terminal()).info)
    for note in result.notes:
        typer.echo(f"Note: {note}", err=True)
    _show(evaluation_view(result.as_dict(), False), fmt)


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Argument(metavar="CHECKPOINT", help="A .pt file written by `cnn-tune retrain`.")],
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="PNG/JPEG files, one object each.")],
    invert: Annotated[bool, typer.Option(
        "--invert", help="Invert the images first (a dark digit on white paper for an MNIST model).")] = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Classify images with a saved checkpoint.

    Prints the class (the digit, for MNIST) and its probability for each file.

    Images are read as grayscale and resized to 28×28, as the training images were. MNIST
    digits are white on black; for a dark digit on white paper pass --invert.

    Example: cnn-tune predict studies/mnist-cnn-trial3.pt seven.png --invert
    """
    from .predict import predict as run_predict
    from .views import predictions_view

    _show(predictions_view([p.as_dict() for p in run_predict(checkpoint, images, invert)]), fmt)


# Long: one parameter per option of `confirm`; the body itself is a dozen lines.
@app.command()
def confirm(
    top: Annotated[int, typer.Option("--top", min=1, metavar="K", help="Confirm the K best complete trials.")] = 3,
    seeds: Annotated[int, typer.Option("--seeds", min=1, metavar="S", help="New seeds (runs) per trial.")] = 3,
    study: StudyOpt = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    workers: WorkersOpt = "auto",
    threads: Annotated[Optional[int], typer.Option(
        "--threads", min=1, metavar="N", help="CPU threads per worker. \\[default: the cores shared out]")] = None,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    data_dir: DataDirOpt = None,
    fmt: FormatOpt = Format.table,
    heartbeat: HeartbeatOpt = 10,
    grace: GraceOpt = 60,
) -> None:
    """Train the top trials again with new seeds: real or lucky?

    Each of the --top K best configurations is trained --seeds S more times on the study's own
    split and protocol, with new recorded seeds; prints mean, standard deviation and 95%
    interval per configuration and Welch's t-test between the first two. Stored on the
    study; `best --by mean`, `trials` and `plot report` show it. Resumable; several
    processes (or --workers) share the runs.

    Example: cnn-tune confirm --top 3 --seeds 3 --workers 2
    """
    from .confirm import ConfirmOptions, run_confirm
    from .output import terminal
    from .progress import reporter
    from .views import confirm_view

    options = ConfirmOptions(study=study, storage=storage, top=top, seeds=seeds,
                             workers=workers if workers == "auto" else int(workers), threads=threads,
                             device=device.value, precision=precision.value, data_dir=data_dir,
                             heartbeat=Heartbeat(heartbeat, grace))
    report = reporter(terminal() if fmt == Format.table else None, stderr_only=fmt != Format.table)
    try:
        result = run_confirm(options, report)
    finally:
        report.close()
    _show(confirm_view(result), fmt)
    if result.runs is not None and result.runs.interrupted:
        raise typer.Exit(exit_code(result.runs.stop_signal))


@app.command()
def backup(
    dest: Annotated[Path, typer.Argument(metavar="DEST", help="The copy to write, e.g. backups/cnn_tune.db.")],
    storage: StorageOpt = DEFAULT_STORAGE,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing DEST.")] = False,
) -> None:
    """Copy a SQLite study database safely while workers write.

    The copy is checked by reopening every study in it with Optuna before it is renamed into
    place. For PostgreSQL or MySQL use the server's own dump tool (pg_dump, mysqldump).

    Example: cnn-tune backup backups/cnn_tune-$(date +%F).db
    """
    from .backup import backup as run_backup

    done = run_backup(storage, dest, overwrite)
    trials = sum(done.studies.values())
    typer.echo(f"Copied {done.source} to {done.dest}: {len(done.studies)} study(ies), {trials} trial(s), "
               f"{done.bytes / 1e6:.1f} MB; every study reopened with Optuna")


@app.command()
def dashboard(
    storage: StorageOpt = DEFAULT_STORAGE,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(
        "--port", min=0, max=65535, help="Port to listen on; 0 picks a free one.")] = 8080,
) -> None:
    """Serve optuna-dashboard on the study database.

    A live view in the browser while workers run; it never blocks their writes (WAL).

    Needs the dashboard extra: pip install -e '.[dashboard]'. Ctrl-C stops it.

    Example: cnn-tune dashboard --port 8080
    """
    from .dashboard import serve

    serve(storage, host, port, lambda url: typer.echo(f"Dashboard on {url} (Ctrl-C stops it)", err=True))
    typer.echo("Dashboard stopped.", err=True)


def reflow(doc: str) -> str:
    """A docstring's paragraphs as single lines, so the help formatter wraps them to the
    terminal: docstrings are hard-wrapped for the source, and rich keeps single line breaks."""
    return "\n\n".join(" ".join(line.strip() for line in paragraph.splitlines())
                       for paragraph in inspect.cleandoc(doc).split("\n\n"))


for _command in app.registered_commands:
    _command.help = reflow(_command.help or inspect.getdoc(_command.callback) or "")


def main() -> None:
    guard()  # a terminal that hangs up, or a pipe closed early, must not turn output into a crash
    app()
