"""Every Optuna view of a single-objective study, as a file: self-contained HTML (plotly.js
embedded, opens with no network) or a static PNG/SVG/PDF through kaleido (which drives a
Chrome/Chromium it finds on the machine).

Each view checks first whether it can be drawn and says why not in one line — Optuna itself
would log a warning and return an empty figure.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from cnn_tune.cli.output import cell, html_table, pairs_table
from cnn_tune.cli.views import best_pairs, trials_table
from cnn_tune.errors import DependencyMissing, NothingToShow, UsageError
from cnn_tune.files import check_writable, write_atomic
from cnn_tune.model.space import ARTICLE, SPACES, contour_default
from cnn_tune.storage.inspection import best_record, counts_text, param_names, select_rows, state_counts
from cnn_tune.storage.protocol import PROTOCOL_ATTR
from cnn_tune.storage.studies import confirm_records
from cnn_tune.storage.urls import display_url, results_folder

FORMATS = (".html", ".png", ".svg", ".pdf")
EVALUATORS = {"ped-anova": "PED-ANOVA", "fanova": "fANOVA", "mdi": "mean decrease impurity"}
STATIC_SIZE = (1000, 600)  # pixels; large enough for parallel coordinates' six axes


@dataclass(frozen=True)
class Chart:
    title: str
    min_complete: int  # complete trials needed before the view means anything
    takes_params: bool


VIEWS: dict[str, Chart] = {
    "history": Chart("Optimization history", 1, False),
    "importance": Chart("Hyperparameter importance", 2, True),
    "contour": Chart("Contour", 2, True),
    "parallel": Chart("Parallel coordinates", 1, True),
    "slice": Chart("Slice", 1, True),
    "edf": Chart("Empirical distribution of the objective", 1, False),
    "intermediate": Chart("Learning curves (validation accuracy per epoch)", 0, False),
    "timeline": Chart("Timeline", 0, False),
    "rank": Chart("Rank", 2, True),
    "size": Chart("Validation accuracy against network size", 1, False),
}
KINDS = (*VIEWS, "report")


def make_evaluator(name: str) -> optuna.importance.BaseImportanceEvaluator:
    if name == "ped-anova":
        return optuna.importance.PedAnovaImportanceEvaluator()
    try:
        import sklearn  # noqa: F401 - fANOVA and MDI fit scikit-learn random forests
    except ImportError:
        raise DependencyMissing(f"the {name} evaluator needs scikit-learn", hint="pip install scikit-learn") from None
    if name == "fanova":
        return optuna.importance.FanovaImportanceEvaluator(seed=0)  # seeded: same study, same picture
    if name == "mdi":
        return optuna.importance.MeanDecreaseImpurityImportanceEvaluator(seed=0)
    raise UsageError(f"unknown importance evaluator {name!r}", hint=f"use one of: {', '.join(EVALUATORS)}")


def _study_params(study: optuna.Study) -> list[str]:
    # the trials' params are enough: no need to build whole table rows for the names
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return param_names(complete) or param_names(study.get_trials(deepcopy=False))


def check_params(study: optuna.Study, kind: str, params: list[str] | None) -> list[str] | None:
    """The parameters a view draws: ``params`` validated against the study, or the default."""
    view = VIEWS[kind]
    if params and not view.takes_params:
        raise UsageError(f"plot {kind} does not take --params", hint="drop --params")
    known = _study_params(study)
    if kind == "contour":
        space = (study.user_attrs.get(PROTOCOL_ATTR) or {}).get("space", ARTICLE)
        params = params or contour_default(SPACES.get(space, SPACES[ARTICLE]))
        if len(params) != 2:
            raise UsageError(
                f"a contour needs exactly two parameters, got {len(params)}",
                hint="pass e.g. --params batch_size --params lr",
            )
    unknown = [p for p in params or [] if p not in known]
    if unknown:
        raise UsageError(
            f"study {study.study_name!r} has no parameter {', '.join(map(repr, unknown))}",
            hint=f"it has: {', '.join(known) or 'none yet'}",
        )
    return params or None


def why_not(study: optuna.Study, kind: str, params: list[str] | None) -> str | None:
    """Why ``kind`` cannot be drawn from this study now, or None if it can."""
    view = VIEWS[kind]
    trials = study.get_trials(deepcopy=False)
    if not trials:
        return f"study {study.study_name!r} has no trials yet"
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if len(complete) < view.min_complete:
        return (
            f"the {kind} view needs at least {view.min_complete} complete trial(s); "
            f"study {study.study_name!r} has {len(complete)} ({counts_text(state_counts(trials))})"
        )
    if kind == "intermediate" and not any(t.intermediate_values for t in trials):
        return f"no trial of study {study.study_name!r} reported per-epoch values"
    if kind == "size" and not any("n_params" in t.user_attrs for t in complete):
        return f"no complete trial of study {study.study_name!r} recorded its size (cnn-tune records it since 0.8)"
    if kind in ("importance", "contour", "rank"):
        names = params or _study_params(study)
        varying = [p for p in names if len({repr(t.params.get(p)) for t in complete}) > 1]
        need = 2 if kind == "contour" else 1
        if len(varying) < need:
            return (
                f"the {kind} view needs complete trials whose parameters differ; "
                f"in study {study.study_name!r} {'only ' + ', '.join(varying) if varying else 'none'} vary"
            )
        if kind == "importance" and len({t.value for t in complete}) < 2:
            return (
                f"the importance view needs complete trials whose validation accuracies differ; all "
                f"{len(complete)} of study {study.study_name!r} scored {complete[0].value:.2%}"
            )
    return None


def figure(study: optuna.Study, kind: str, params: list[str] | None = None, evaluator: str = "ped-anova"):
    """The plotly figure of one view; NothingToShow if it cannot be drawn yet."""
    params = check_params(study, kind, params)
    reason = why_not(study, kind, params)
    if reason is not None:
        raise NothingToShow(reason, hint="run more trials with `cnn-tune optimize`")
    vis = optuna.visualization
    target_name = "validation accuracy"
    draw: dict[str, Callable[[], Any]] = {
        "history": lambda: vis.plot_optimization_history(study, target_name=target_name),
        "importance": lambda: vis.plot_param_importances(
            study, evaluator=make_evaluator(evaluator), params=params, target_name=target_name
        ),
        "contour": lambda: vis.plot_contour(study, params=params, target_name=target_name),
        "parallel": lambda: vis.plot_parallel_coordinate(study, params=params, target_name=target_name),
        "slice": lambda: vis.plot_slice(study, params=params, target_name=target_name),
        "edf": lambda: vis.plot_edf(study, target_name=target_name),
        "intermediate": lambda: vis.plot_intermediate_values(study),
        "timeline": lambda: vis.plot_timeline(study),
        "rank": lambda: vis.plot_rank(study, params=params, target_name=target_name),
        "size": lambda: size_figure(study),
    }
    fig = draw[kind]()
    title = VIEWS[kind].title + (f" ({EVALUATORS[evaluator]})" if kind == "importance" else "")
    fig.update_layout(title=f"{title} — study {study.study_name}")
    return fig


def unbeaten(points: list[tuple[int, float, int]]) -> set[int]:
    """Of (size, accuracy, trial) points, the trials that no other is as small and as accurate
    as, and strictly better on one of the two (the Pareto front)."""
    return {
        n for size, acc, n in points if not any(s <= size and a >= acc and (s < size or a > acc) for s, a, _ in points)
    }


def size_figure(study: optuna.Study):
    """Each complete trial's validation accuracy against its parameter count (log scale); the
    trials no other beats on both are joined by a line."""
    import plotly.graph_objects as go

    points = [
        (t.user_attrs["n_params"], t.value, t.number)
        for t in study.get_trials(deepcopy=False)
        if t.state == TrialState.COMPLETE and "n_params" in t.user_attrs
    ]
    front = sorted(p for p in points if p[2] in unbeaten(points))
    fig = go.Figure(
        go.Scatter(
            x=[p[0] for p in points],
            y=[p[1] for p in points],
            mode="markers",
            name="trial",
            text=[f"trial {p[2]}" for p in points],
            marker={"color": "#999"},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[p[0] for p in front],
            y=[p[1] for p in front],
            mode="lines+markers",
            name="no other trial is smaller and as accurate",
            text=[f"trial {p[2]}" for p in front],
        )
    )
    fig.update_layout(xaxis={"title": "parameters", "type": "log"}, yaxis={"title": "validation accuracy"})
    return fig


def output_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(
            f"cannot write {path.name!r}: unsupported extension {suffix or '(none)'}",
            hint=f"use one of: {', '.join(FORMATS)}",
        )
    return suffix


def default_path(url: str, study_name: str, kind: str, suffix: str = ".html") -> Path:
    return results_folder(url) / f"{study_name}-{kind}{suffix}"


RENDER_ATTEMPTS = 3


def render(fig, suffix: str) -> bytes:
    """The file's bytes. HTML embeds plotly.js (~4.8 MB) so it opens offline."""
    if suffix == ".html":
        return fig.to_html(include_plotlyjs=True, full_html=True).encode()
    try:
        import kaleido  # noqa: F401
    except ImportError:
        raise DependencyMissing("static images need kaleido", hint="pip install 'kaleido>=1'") from None
    for attempt in range(1, RENDER_ATTEMPTS + 1):
        try:
            return fig.to_image(format=suffix[1:], width=STATIC_SIZE[0], height=STATIC_SIZE[1])
        except RuntimeError as exc:  # choreographer.ChromeNotFoundError and kaleido's browser failures
            if "Chrome" in type(exc).__name__ or "Chrome" in str(exc) or "browser" in str(exc).lower():
                raise DependencyMissing(
                    f"{suffix[1:].upper()} images need Chrome or Chromium, which kaleido did not find",
                    hint="install it (Debian/Ubuntu: apt-get install -y chromium; or run kaleido_get_chrome), "
                    "or write .html",
                ) from None
            # Seen on a loaded 2-core machine: kaleido evaluated its script before Chromium had
            # loaded the page ("ReferenceError: kaleido_scopes is not defined", a JavascriptError,
            # itself a RuntimeError). Each to_image starts a fresh browser: try again.
            if type(exc).__name__ != "JavascriptError" or attempt == RENDER_ATTEMPTS:
                raise
    raise AssertionError("unreachable")  # the loop returns or raises


def write_plot(
    study: optuna.Study,
    url: str,
    kind: str,
    output: Path | None,
    params: list[str] | None,
    evaluator: str,
    target: float | None = None,
) -> Path:
    """Draw one view (or the report) of ``study`` into ``output``; returns the path written."""
    path = output if output is not None else default_path(url, study.study_name, kind)
    suffix = output_format(path)
    if kind == "report" and suffix != ".html":
        raise UsageError("the report is an HTML page", hint="use --output NAME.html")
    if kind == "report" and params:
        raise UsageError("plot report does not take --params", hint="drop --params")
    check_writable(path)
    if kind == "report":
        data = report_html(study, url, evaluator, target).encode()
    else:
        data = render(figure(study, kind, params, evaluator), suffix)
    write_atomic(path, data)
    return path


def confirmed_figure(study: optuna.Study):
    """Mean validation accuracy of each confirmed trial with its 95% interval as error bars,
    and every run as a dot; None before `cnn-tune confirm`."""
    import plotly.graph_objects as go

    records = confirm_records(study)
    if not records:
        return None
    ranked = sorted(records.items(), key=lambda item: item[1]["mean"], reverse=True)
    names = [f"trial {n}" for n, _ in ranked]
    means = [r["mean"] for _, r in ranked]
    up = [(r["ci95"][1] - r["mean"]) if r.get("ci95") else 0 for _, r in ranked]
    fig = go.Figure(go.Bar(x=names, y=means, name="mean", error_y={"type": "data", "array": up, "visible": True}))
    for name, (_, r) in zip(names, ranked):
        fig.add_trace(
            go.Scatter(
                x=[name] * len(r["values"]),
                y=r["values"],
                mode="markers",
                showlegend=False,
                marker={"color": "black", "size": 6},
                name=f"{name} runs",
            )
        )
    low = min(v for _, r in ranked for v in r["values"])
    fig.update_layout(
        title=f"Confirmed: mean validation accuracy and 95% interval — study {study.study_name}",
        yaxis={"title": "validation accuracy", "range": [low - 0.003, 1.0]},
        xaxis={"title": ""},
    )
    return fig


def confirmed_section(study: optuna.Study) -> list[str]:
    fig = confirmed_figure(study)
    if fig is None:
        return []
    rows = select_rows(study)
    confirmed = [r for r in rows if r.confirmed_mean is not None]
    confirmed.sort(key=lambda r: r.confirmed_mean, reverse=True)
    return [
        "<h2>Confirmed configurations (cnn-tune confirm)</h2>",
        fig.to_html(include_plotlyjs=False, full_html=False),
        html_table(trials_table(confirmed)),
    ]


def report_html(study: optuna.Study, url: str, evaluator: str = "ped-anova", target: float | None = None) -> str:
    """One page: summary, best trial, every view that can be drawn (and why the others
    cannot), and the trials table. plotly.js is embedded once, in the head."""
    from plotly.offline import get_plotlyjs

    counts = state_counts(study)
    if not sum(counts.values()):
        raise NothingToShow(f"study {study.study_name!r} has no trials yet", hint="run `cnn-tune optimize` first")
    protocol = study.user_attrs.get(PROTOCOL_ATTR) or {}
    parts = [
        f"<h1>cnn-tune study {html.escape(study.study_name)}</h1>",
        f"<p>Storage {html.escape(display_url(url))} · report made "
        f"{datetime.now().isoformat(timespec='seconds')} · {counts_text(counts)}</p>",
    ]
    if protocol:
        parts.append(
            "<h2>Protocol</h2>"
            + html_table(pairs_table([(k, cell(v)) for k, v in protocol.items()], ("setting", "value")))
        )
    try:
        best = best_record(study, url, target=target)
    except NothingToShow as exc:
        parts.append(f"<p>{html.escape(exc.message)}</p>")
    else:
        parts.append("<h2>Best trial</h2>" + html_table(pairs_table(best_pairs(best))))
    parts += confirmed_section(study)
    for kind in VIEWS:
        parts.append(f"<h2>{html.escape(VIEWS[kind].title)}</h2>")
        try:
            fig = figure(study, kind, None, evaluator)
        except NothingToShow as exc:
            parts.append(f"<p class='why'>Not drawn: {html.escape(exc.message)}.</p>")
            continue
        parts.append(fig.to_html(include_plotlyjs=False, full_html=False))
    parts.append("<h2>Trials</h2>" + html_table(trials_table(select_rows(study))))
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}.why{color:#a60}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>cnn-tune: {html.escape(study.study_name)}"
        f"</title><style>{style}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
        f"<body>{''.join(parts)}</body></html>"
    )
