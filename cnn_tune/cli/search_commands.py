"""``optimize`` and ``confirm``: options in, one library call, the summary out (live progress on
stderr meanwhile). Heavy modules are imported inside the commands, so ``--help`` stays fast."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from cnn_tune.cli.options import (
    ArtifactsOpt,
    DataDirOpt,
    Device,
    DeviceOpt,
    Format,
    FormatOpt,
    GraceOpt,
    HeartbeatOpt,
    Precision,
    PrecisionOpt,
    Preset,
    Pruner,
    Sampler,
    SpaceName,
    StorageOpt,
    StudyOpt,
    WideOpt,
    WorkersOpt,
    render,
)
from cnn_tune.processes.interrupts import exit_code
from cnn_tune.search.presets import DEFAULT_PRESET
from cnn_tune.storage.heartbeat import Heartbeat
from cnn_tune.storage.urls import DEFAULT_STORAGE


# Long: one parameter per option of `optimize`; the body itself is a dozen lines.
def optimize(
    trials: Annotated[int, typer.Option("--trials", "-n", min=1, help="Trials to run in this invocation.")] = 20,
    timeout: Annotated[
        Optional[float],
        typer.Option("--timeout", min=1, metavar="SECONDS", help="Stop starting new trials after this long."),
    ] = None,
    epochs: Annotated[
        Optional[int],
        typer.Option(
            "--epochs",
            min=1,
            help="Epochs per trial. \\[default: the space's (wide 20, article 10), or the study's when resuming]",
        ),
    ] = None,
    study: StudyOpt = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, help="Seed for sampler and training.")] = None,
    train_limit: Annotated[
        Optional[int],
        typer.Option(
            "--train-limit",
            min=10,
            metavar="N",
            help="Use only N training images (80/20 split of those). \\[default: all 60000, or the study's]",
        ),
    ] = None,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    preset: Annotated[
        Preset,
        typer.Option(
            "--preset",
            help="fast: the wide space, tpe-mv, the space's pruner and patience (halving and 5; for the "
            "article space narrowing and 8), --warm-start, --workers auto; article: the seed article's "
            "search (its space, tpe, median, one worker, no patience). Options given here override "
            "it.",
        ),
    ] = Preset(DEFAULT_PRESET),
    space: Annotated[
        Optional[SpaceName],
        typer.Option(
            "--space",
            help="wide: conv width and depth, batch norm, weight decay, label smoothing, lr schedule, "
            "augmentation, each trial trained as its final model will be; article: the seed "
            "article's six parameters. \\[default: the study's, or the preset's]",
            show_default=False,
        ),
    ] = None,
    artifacts: ArtifactsOpt = None,
    max_params: Annotated[
        Optional[int],
        typer.Option(
            "--max-params",
            min=1,
            metavar="N",
            help="No trial trains a network with more than N parameters (the sampler learns the bound).",
        ),
    ] = None,
    sampler: Annotated[
        Optional[Sampler],
        typer.Option("--sampler", help="Optuna sampler. \\[default: the preset's]", show_default=False),
    ] = None,
    pruner: Annotated[
        Optional[Pruner], typer.Option("--pruner", help="Optuna pruner. \\[default: the preset's]", show_default=False)
    ] = None,
    data_dir: DataDirOpt = None,
    workers: WorkersOpt = None,
    threads: Annotated[
        Optional[int],
        typer.Option("--threads", min=1, metavar="N", help="CPU threads per worker. \\[default: the cores shared out]"),
    ] = None,
    max_trials: Annotated[
        Optional[int],
        typer.Option(
            "--max-trials",
            min=1,
            metavar="N",
            help="Study-wide cap for a fleet of independent workers: start no trial once the study has N complete, "
            "pruned or running trials (failed ones do not count).",
        ),
    ] = None,
    heartbeat: HeartbeatOpt = 10,
    grace: GraceOpt = 60,
    dataset: Annotated[
        Optional[str],
        typer.Option(
            "--dataset",
            "-d",
            metavar="NAME|PATH",
            help="What to learn: MNIST, Fashion-MNIST, or a folder of your images (train/<class>/*, optionally "
            "test/<class>/*). \\[default: the study's, or mnist]",
            show_default=False,
        ),
    ] = None,
    patience: Annotated[
        Optional[int],
        typer.Option(
            "--patience",
            min=0,
            metavar="N",
            help="Start no new trial once N finished trials in a row (complete or pruned, all workers and "
            "processes) have not beaten the study's best by more than the noise: two binomial standard "
            "errors of the best's accuracy on the validation images (±0.18 points at 99% on 12,000). "
            "Running trials finish. 0: never stop early. \\[default: the preset's]",
            show_default=False,
        ),
    ] = None,
    warm_start: Annotated[
        Optional[bool],
        typer.Option(
            "--warm-start/--no-warm-start",
            help="A new study's first trial is the article's configuration (Adam, lr 1e-3, batch 128), "
            "so pruning has a strong reference from the start. \\[default: the preset's]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create or resume a study and run trials on it.

    How it searches comes from --preset: fast (the default: the wide space, each trial trained
    with the recipe its final model gets, successive halving by images seen) or article (the
    seed article's space, TPE + median pruner, one worker); options given override it.

    Several workers: `--workers N` here, or the same command in several terminals or on
    several machines sharing one --storage (cap the fleet with --max-trials).

    The data: --dataset mnist (the default), fashion-mnist, or a folder of your own images;
    the study records it, so no other command needs it again.

    Example: cnn-tune optimize --dataset fashion-mnist --trials 20 --workers 2
    """
    from cnn_tune.cli.output import terminal
    from cnn_tune.cli.progress import reporter
    from cnn_tune.cli.views import summary_view
    from cnn_tune.data.load import parse_dataset
    from cnn_tune.search.optimize import run_optimize
    from cnn_tune.search.plan import OptimizeOptions

    options = OptimizeOptions(
        trials=trials,
        timeout=timeout,
        epochs=epochs,
        train_limit=train_limit,
        study=study,
        storage=storage,
        seed=seed,
        device=device.value,
        precision=precision.value,
        preset=preset.value,
        sampler=sampler and sampler.value,
        pruner=pruner and pruner.value,
        data_dir=data_dir,
        workers=workers if workers in (None, "auto") else int(workers),
        threads=threads,
        max_trials=max_trials,
        heartbeat=Heartbeat(heartbeat, grace),
        warm_start=warm_start,
        dataset=parse_dataset(dataset) if dataset is not None else None,
        patience=patience,
        space=space and space.value,
        max_params=max_params,
        artifacts=artifacts,
    )
    report = reporter(terminal())
    try:
        result = run_optimize(options, report)
    finally:
        report.close()
    render(summary_view(result))
    if result.interrupted:
        raise typer.Exit(exit_code(result.stop_signal))


# Long: one parameter per option of `confirm`; the body itself is a dozen lines.
def confirm(
    top: Annotated[int, typer.Option("--top", min=1, metavar="K", help="Confirm the K best complete trials.")] = 3,
    seeds: Annotated[int, typer.Option("--seeds", min=1, metavar="S", help="New seeds (runs) per trial.")] = 3,
    study: StudyOpt = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    workers: WorkersOpt = "auto",
    threads: Annotated[
        Optional[int],
        typer.Option("--threads", min=1, metavar="N", help="CPU threads per worker. \\[default: the cores shared out]"),
    ] = None,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    data_dir: DataDirOpt = None,
    fmt: FormatOpt = Format.table,
    heartbeat: HeartbeatOpt = 10,
    grace: GraceOpt = 60,
    wide: WideOpt = False,
) -> None:
    """Train the top trials again with new seeds: real or lucky?

    Each of the --top K best configurations is trained --seeds S more times on the study's own
    split and protocol, with new recorded seeds; prints mean, standard deviation and 95%
    interval per configuration and Welch's t-test between the first two. Stored on the
    study; `best --by mean`, `trials` and `plot report` show it. Resumable; several
    processes (or --workers) share the runs.

    Example: cnn-tune confirm --top 3 --seeds 3 --workers 2
    """
    from cnn_tune.cli.model_views import confirm_view
    from cnn_tune.cli.output import terminal
    from cnn_tune.cli.progress import reporter
    from cnn_tune.search.confirm import ConfirmOptions, run_confirm

    options = ConfirmOptions(
        study=study,
        storage=storage,
        top=top,
        seeds=seeds,
        workers=workers if workers == "auto" else int(workers),
        threads=threads,
        device=device.value,
        precision=precision.value,
        data_dir=data_dir,
        heartbeat=Heartbeat(heartbeat, grace),
    )
    report = reporter(terminal() if fmt == Format.table else None, stderr_only=fmt != Format.table)
    try:
        result = run_confirm(options, report)
    finally:
        report.close()
    render(confirm_view(result), fmt, wide=wide)
    if result.runs is not None and result.runs.interrupted:
        raise typer.Exit(exit_code(result.runs.stop_signal))
