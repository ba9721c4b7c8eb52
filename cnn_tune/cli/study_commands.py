"""``best``, ``trials``, ``studies``, ``plot`` (and the report), ``backup`` and ``dashboard``: read
a study without changing it and render what it holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cnn_tune.cli.options import (
    ArtifactsOpt,
    Evaluator,
    Format,
    FormatOpt,
    Kind,
    OutputOpt,
    RankBy,
    State,
    StorageOpt,
    StudyOpt,
    TargetOpt,
    WideOpt,
    render,
)
from cnn_tune.storage.urls import DEFAULT_STORAGE


def best(
    study: StudyOpt = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    fmt: FormatOpt = Format.table,
    by: Annotated[
        RankBy,
        typer.Option("--by", help="value: the best single run; mean: the best confirmed mean (`cnn-tune confirm`)."),
    ] = (RankBy.value),
    target: TargetOpt = None,
    wide: WideOpt = False,
) -> None:
    """Show the best trial, its parameters and test accuracy.

    Validation accuracy, epochs, duration, seed and parameters; the test accuracy and checkpoint
    appear once `cnn-tune retrain` has made them.

    Example: cnn-tune best --format json
    """
    from cnn_tune.cli.views import best_view
    from cnn_tune.storage.engine import read_study
    from cnn_tune.storage.inspection import best_record

    render(best_view(best_record(read_study(storage, study), storage, by.value, target)), fmt, wide=wide)


def trials(
    study: StudyOpt = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    state: Annotated[
        Optional[list[State]], typer.Option("--state", "-s", help="Only trials in this state (repeatable).")
    ] = None,
    last: Annotated[
        Optional[int], typer.Option("--last", min=1, metavar="N", help="Only the N most recent trials.")
    ] = None,
    top: Annotated[
        Optional[int], typer.Option("--top", min=1, metavar="N", help="Only the N best complete trials, best first.")
    ] = None,
    sort: Annotated[
        Optional[str],
        typer.Option(
            "--sort", metavar="KEY", help="Sort by number, value, epochs, duration, started or a parameter name."
        ),
    ] = None,
    reverse: Annotated[bool, typer.Option("--reverse", "-r", help="Reverse the order.")] = False,
    fmt: FormatOpt = Format.table,
    output: OutputOpt = None,
    wide: WideOpt = False,
) -> None:
    """List a study's trials: state, accuracy, epochs, parameters.

    A pruned trial shows its last epoch's validation accuracy; --format csv or json for scripts.

    Example: cnn-tune trials --state complete --top 5 --format csv --output top5.csv
    """
    from cnn_tune.cli.views import trials_view
    from cnn_tune.storage.engine import read_study
    from cnn_tune.storage.inspection import select_rows

    opened = read_study(storage, study)
    rows = select_rows(opened, [s.value for s in state or []], last, top, sort, reverse)
    render(trials_view(rows, opened.study_name), fmt, output, wide)


def studies(
    storage: StorageOpt = DEFAULT_STORAGE,
    fmt: FormatOpt = Format.table,
    target: TargetOpt = None,
    wide: WideOpt = False,
) -> None:
    """List every study in the database with its counts and best.

    Direction, trials by state, best value and the protocol (epochs, train limit) of each.

    Example: cnn-tune studies --storage sqlite:///studies/cnn_tune.db
    """
    from cnn_tune.cli.views import studies_view
    from cnn_tune.storage.engine import open_existing
    from cnn_tune.storage.inspection import summarize_studies

    render(studies_view(summarize_studies(open_existing(storage), target), target), fmt, wide=wide)


def plot(
    kind: Annotated[Kind, typer.Argument(help="The view, or `report` for one HTML page with all of them.")],
    study: StudyOpt = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            metavar="PATH",
            help="File to write; .html, .png, .svg or .pdf. \\[default: STUDY-KIND.html beside the database]",
        ),
    ] = None,
    params: Annotated[
        Optional[list[str]],
        typer.Option(
            "--params",
            "-p",
            metavar="NAME",
            help="Parameters to draw (repeatable); contour takes exactly two \\[default: lr and batch_size, or "
            "width in the wide space].",
        ),
    ] = None,
    evaluator: Annotated[
        Evaluator,
        typer.Option(
            "--evaluator",
            help="Importance evaluator: Optuna's default PED-ANOVA, fANOVA (the article's) or mean decrease impurity.",
        ),
    ] = Evaluator["ped-anova"],
    target: TargetOpt = None,
) -> None:
    """Draw a view of a study, or the whole report, to a file.

    Kinds: history, importance, contour, parallel, slice, edf, intermediate, timeline, rank,
    size (validation accuracy against parameters, the trials no other beats on both joined),
    and report (all views, a summary and the best trial on one self-contained HTML page).
    HTML embeds plotly.js and opens offline; PNG/SVG/PDF need kaleido and Chrome/Chromium.

    Example: cnn-tune plot contour --params batch_size --params lr --output contour.png
    """
    from cnn_tune.cli.plots import write_plot
    from cnn_tune.storage.engine import read_study

    typer.echo(
        str(write_plot(read_study(storage, study), storage, kind.value, output, params, evaluator.value, target))
    )


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
    from cnn_tune.storage.backup import backup as run_backup

    done = run_backup(storage, dest, overwrite)
    trials = sum(done.studies.values())
    typer.echo(
        f"Copied {done.source} to {done.dest}: {len(done.studies)} study(ies), {trials} trial(s), "
        f"{done.bytes / 1e6:.1f} MB; every study reopened with Optuna"
    )


def dashboard(
    storage: StorageOpt = DEFAULT_STORAGE,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to listen on; 0 picks a free one.")
    ] = 8080,
    artifacts: ArtifactsOpt = None,
) -> None:
    """Serve optuna-dashboard on the study database.

    A live view in the browser while workers run; it never blocks their writes (WAL).

    Needs the dashboard extra: pip install -e '.[dashboard]'. Ctrl-C stops it.

    Example: cnn-tune dashboard --port 8080
    """
    from cnn_tune.storage.dashboard import serve

    serve(storage, host, port, lambda url: typer.echo(f"Dashboard on {url} (Ctrl-C stops it)", err=True), artifacts)
    typer.echo("Dashboard stopped.", err=True)
