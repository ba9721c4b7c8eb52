"""Options shared by several commands, declared once as ``Annotated`` aliases, with choices built
from the library's own tuples, and the one call that renders a view (table, JSON or CSV).
Torch-free, so ``--help`` stays fast."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from cnn_tune.cli.output import FORMATS, View
from cnn_tune.cli.plots import EVALUATORS, KINDS
from cnn_tune.data.datasets import DATA_DIR_ENV
from cnn_tune.model.choices import DEVICES, PRECISIONS
from cnn_tune.model.recipe import AVERAGES, RECIPES, SCHEDULES
from cnn_tune.model.space import SPACES
from cnn_tune.search.presets import PRESETS
from cnn_tune.search.samplers import PRUNERS, SAMPLERS
from cnn_tune.storage.artifacts import ARTIFACTS_ENV
from cnn_tune.storage.inspection import STATES
from cnn_tune.storage.urls import STORAGE_ENV, STUDY_ENV

DEBUG_ENV = "CNN_TUNE_DEBUG"  # 1: tracebacks instead of one-line errors
WORKERS_ENV = "CNN_TUNE_WORKERS"  # --workers of optimize and confirm


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
SpaceName = _choice("SpaceName", SPACES)
ExportFormat = _choice("ExportFormat", ("onnx", "torchscript"))  # model.export.FORMATS (torch-free here)

# Options shared by several commands, declared once.
StorageOpt = Annotated[
    str,
    typer.Option(
        "--storage",
        envvar=STORAGE_ENV,
        metavar="URL",
        help="SQLAlchemy URL of the study database (relative SQLite paths are from the current folder).",
    ),
]
StudyOpt = Annotated[
    Optional[str],
    typer.Option(
        "--study",
        envvar=STUDY_ENV,
        metavar="NAME",
        help="Study name. \\[default: optimize: named after the data set (mnist-cnn); other commands: the "
        "database's only study, else mnist-cnn]",
        show_default=False,
    ),
]
DataDirOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_ENV,
        metavar="DIR",
        help="Where MNIST and Fashion-MNIST are kept, and a folder's converted images (default: ~/.cache/cnn-tune).",
    ),
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto = CUDA when available, else CPU.")]
PrecisionOpt = Annotated[
    Precision,
    typer.Option(
        "--precision",
        help="auto = bf16 autocast where the hardware runs it natively (CUDA, CPUs with AMX/AVX512-BF16), else fp32.",
    ),
]
FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="table (plain text when piped), json or csv.")]
# `evaluate` and `export`: a checkpoint file, or none for the study's final model from its store
KeptCheckpointArg = Annotated[
    Optional[Path],
    typer.Argument(
        metavar="[CHECKPOINT]",
        help="A .pt file written by `cnn-tune retrain`. \\[default: the study's final model, from its artifact store]",
        show_default=False,
    ),
]


def _target(value: float | None) -> float | None:
    if value is not None and not 0 < value < 1:
        raise typer.BadParameter(f"{value} is not between 0 and 1 (exclusive), e.g. 0.989 for 98.9%")
    return value


TargetOpt = Annotated[
    Optional[float],
    typer.Option(
        "--target",
        callback=_target,
        metavar="ACCURACY",
        help="Report when validation accuracy first reached this (wall time from the first trial). "
        "\\[default: the seed article's 0.989 on MNIST studies; none on other data sets]",
    ),
]


def _workers(value: str | None) -> str | None:
    if value is None or value == "auto" or (value.isdigit() and int(value) >= 1):
        return value
    raise typer.BadParameter(f"{value!r} is neither a number of workers (at least 1) nor 'auto'")


WorkersOpt = Annotated[
    Optional[str],
    typer.Option(
        "--workers",
        "-w",
        callback=_workers,
        metavar="N|auto",
        envvar=WORKERS_ENV,
        help="Worker processes on this machine sharing the work; auto = one per core, as memory allows.",
    ),
]
HeartbeatOpt = Annotated[
    int,
    typer.Option(
        "--heartbeat", min=1, metavar="SECONDS", help="How often a running trial tells the database it is alive."
    ),
]
GraceOpt = Annotated[
    int,
    typer.Option("--grace", min=1, metavar="SECONDS", help="A running trial silent this long is failed and re-queued."),
]
OutputOpt = Annotated[
    Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.")
]
ArtifactsOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--artifacts",
        envvar=ARTIFACTS_ENV,
        metavar="DIR",
        help="The study's artifact store: where the search keeps the networks of its complete trials and retrain "
        "the final model. \\[default: artifacts/ beside a SQLite database; none for a server database]",
        show_default=False,
    ),
]
WideOpt = Annotated[
    bool,
    typer.Option(
        "--wide",
        help="On a terminal, every column, however wide (by default the columns that fit; piped output "
        "and --format csv always have them all).",
    ),
]


RankBy = _choice("RankBy", ("value", "mean"))


def render(view: View, fmt: Format = Format.table, output: Path | None = None, wide: bool = False) -> None:
    from cnn_tune.cli.output import show

    show(view, fmt.value, output, wide)
