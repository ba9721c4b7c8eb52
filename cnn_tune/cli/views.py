"""What each command shows, as :class:`~cnn_tune.cli.output.View` values built with the one formatter.

Every function takes what the library returned (rows, records, results) and formats it; none
opens storage or prints. The HTML report (:mod:`cnn_tune.cli.plots`) reuses the same tables.
"""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial, TrialState

from cnn_tune.cli.output import Table, View, cell, flat, pairs_table, pct, secs
from cnn_tune.model.space import short_text
from cnn_tune.search.records import OptimizeResult  # torch-free: --help and `trials` stay light
from cnn_tune.search.samplers import OVER_MAX_PARAMS
from cnn_tune.storage.artifacts import kept_at
from cnn_tune.storage.inspection import DEFAULT_TARGET, StudySummary, TrialRow, param_names
from cnn_tune.storage.protocol import CONFIRM_OF
from cnn_tune.storage.urls import display_url

# --- trials ----------------------------------------------------------------------------------

TRIAL_COLUMNS = ["number", "state", "value", "last_val_accuracy", "epochs", "duration_s", "started"]
# filled in later by `retrain` (test accuracy, checkpoint), the heartbeat (retry_of) and `confirm`
LATER_COLUMNS = [
    "test_accuracy",
    "test_ci95",
    "model_after_s",
    "checkpoint",
    "retry_of",
    "confirmed_mean",
    "confirmed_std",
    "confirmed_n",
    "n_params",
    "inference_us",
    "model_kept_at",
]


def size_text(n: int | None) -> str:
    """A parameter count as people read it: ``242k``, ``1.2M``."""
    if n is None:
        return "—"
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e3 else str(n)


def latency_text(us: float | None) -> str:
    return "—" if us is None else f"{us:.0f}" if us >= 10 else f"{us:.1f}"


def test_text(accuracy: float | None, ci95: float | None) -> str:
    """``99.45% ± 0.13``: a test accuracy with the half-width of its 95% interval, in points."""
    if accuracy is None:
        return "—"
    return f"{pct(accuracy)} ± {100 * ci95:.2f}" if ci95 is not None else pct(accuracy)


def confirmed_text(mean: float | None, std: float | None, n: int | None) -> str:
    """``98.95% ± 0.05 (4)``: mean and standard deviation in points, over n runs."""
    if mean is None:
        return "—"
    return f"{pct(mean)} ± {100 * std:.2f} ({n})" if std is not None else f"{pct(mean)} ({n})"


def trials_table(rows: list[TrialRow], title: str | None = None) -> Table:
    names = param_names(rows)
    retrained = any(r.test_accuracy is not None for r in rows)
    confirmed = any(r.confirmed_mean is not None for r in rows)
    sized = any(r.n_params is not None for r in rows)
    headers = (
        ["#", "state", "val acc", "epochs", "seconds", *(["size", "µs/img"] if sized else []), *names]
        + (["test acc"] if retrained else [])
        + (["confirmed mean ± sd (runs)"] if confirmed else [])
    )
    body = []
    for r in rows:
        # a pruned or running trial shows the last epoch's accuracy: where it stopped
        line = [
            str(r.number),
            r.state,
            pct(r.value if r.value is not None else r.last_val_accuracy),
            str(r.epochs),
            secs(r.duration_s),
            *([size_text(r.n_params), latency_text(r.inference_us)] if sized else []),
            *[cell(r.params.get(n)) for n in names],
        ]
        line += [test_text(r.test_accuracy, r.test_ci95)] if retrained else []
        body.append(line + ([confirmed_text(r.confirmed_mean, r.confirmed_std, r.confirmed_n)] if confirmed else []))
    # On a terminal: number, state, accuracy and epochs always; then the test accuracy, the size,
    # the parameters in the order the space declares them, and the rest, while they fit.
    first = 5 + (2 if sized else 0)
    params = list(range(first, first + len(names)))
    later = list(range(first + len(names), len(headers)))
    optional = (*later[:1], *([5] if sized else []), *params, *later[1:], 4, *([6] if sized else []))
    return Table(
        headers,
        body,
        title,
        frozenset({0, 2, 3, 4, *([5, 6] if sized else [])}),
        essential=(0, 1, 2, 3),
        optional=optional,
    )


def trials_view(rows: list[TrialRow], study_name: str) -> View:
    names = param_names(rows)
    csv_rows = [
        [d[c] for c in TRIAL_COLUMNS] + [r.params.get(n) for n in names] + [d[c] for c in LATER_COLUMNS]
        for r, d in ((r, r.as_dict()) for r in rows)
    ]
    return View(
        [trials_table(rows, f"study {study_name}: {len(rows)} trial(s)")],
        [r.as_dict() for r in rows],
        ([*TRIAL_COLUMNS, *(f"params_{n}" for n in names), *LATER_COLUMNS], csv_rows),
    )


# --- best ------------------------------------------------------------------------------------


# Long: the label: value pairs of `best` in the order they are read, one short line each.
def best_pairs(record: dict[str, Any]) -> list[tuple[str, str]]:
    pairs = [
        ("study", record["study"]),
        ("data", cell(record.get("dataset"))),
        ("trial", str(record["number"])),
        ("validation accuracy", pct(record["value"])),
        ("epochs run", str(record["epochs"])),
        ("duration (s)", secs(record["duration_s"])),
        ("started", cell(record["started"])),
        ("completed", cell(record["completed"])),
        ("device", cell(record["device"])),
        ("seed", cell(record["seed"])),
    ]
    if record.get("n_params") is not None:
        pairs += [
            ("network size", f"{record['n_params']:,} parameters"),
            ("inference", f"{latency_text(record.get('inference_us'))} µs per image (fp32, while searching)"),
        ]
    pairs += [(name, cell(value)) for name, value in record["params"].items()]
    if record["test_accuracy"] is not None:
        pairs += [
            (
                f"trial {record['number']}'s final model (test, 95%)",
                test_text(record["test_accuracy"], record.get("test_ci95")),
            ),
            ("final model after", after(record.get("model_after_s")) if record.get("model_after_s") else "—"),
            ("checkpoint", cell(record["checkpoint"])),
            ("kept with the study", record.get("model_kept_at") or "—"),
        ]
    else:
        pairs.append(("test accuracy", "— (run `cnn-tune retrain`)"))
    if record.get("confirmed_mean") is not None:
        ci = record.get("confirmed_ci95")
        pairs.append(
            (
                "confirmed mean ± sd (runs)",
                confirmed_text(record["confirmed_mean"], record["confirmed_std"], record["confirmed_n"]),
            )
        )
        if ci:
            pairs.append(("confirmed 95% interval", f"{pct(ci[0])} – {pct(ci[1])}"))
    if record.get("stopped"):
        pairs.append(("search", record["stopped"]))
    if record.get("ranked_by") == "mean":
        pairs.insert(3, ("ranked by", "confirmed mean (`cnn-tune confirm`)"))
    if "target" in record:  # wall time from the study's first trial
        pairs.append(("best found after", after(record["best_after_s"])))
    if record.get("target") is not None:  # no default target beyond MNIST: no line
        reached = after(record["target_after_s"])
        if record["target_trial"] is not None:
            reached += f" (trial {record['target_trial']})"
        pairs.append((f"first {target_label(record['target'])} after", reached))
    return pairs


def best_view(record: dict[str, Any]) -> View:
    return View([pairs_table(best_pairs(record))], record, flat(record))


# --- studies ---------------------------------------------------------------------------------


def after(seconds: float | None) -> str:
    """Wall time from the study's first trial, as people read it: 377 s, 10.2 min, 3.1 h."""
    if seconds is None:
        return "never"
    return (
        f"{seconds:.0f} s"
        if seconds < 600
        else f"{seconds / 60:.1f} min"
        if seconds < 3 * 3600
        else f"{seconds / 3600:.1f} h"
    )


def final_text(record: dict[str, Any]) -> str:
    """The study's final model: ``99.45% ± 0.13 (#10) after 9.4 min`` — its test accuracy, the
    trial it was trained from and when it was done (from the study's first trial)."""
    if record.get("test_accuracy") is None:
        return "—"
    took = record.get("since_first_trial_s")
    trial = f" (#{record['trial']})" if record.get("trial") is not None else ""
    done = f" after {after(took)}" if took else ""
    return test_text(record["test_accuracy"], record.get("test_ci95")) + trial + done


def target_label(target: float) -> str:
    return f"≥ {100 * target:g}%"


# Long: the 17 columns of `studies`, one line per header and per cell once formatted, in the same order.
def studies_view(summaries: list[StudySummary], target: float | None) -> View:
    """``target`` None: each study's default, 98.9% on MNIST studies and none (—) elsewhere."""
    headers = [
        "study",
        "direction",
        "trials",
        "complete",
        "pruned",
        "fail",
        "running",
        "best",
        "best after",
        f"{target_label(target)} after" if target is not None else f"{target_label(DEFAULT_TARGET)} (MNIST) after",
        "final model (test)",
        "epochs",
        "train limit",
        "data",
        "started",
        "search",
        "final model at",
    ]
    body = [
        [
            s.name,
            s.direction,
            str(s.trials),
            str(s.counts["complete"]),
            str(s.counts["pruned"]),
            str(s.counts["fail"]),
            str(s.counts["running"]),
            # a study of another tool may optimize anything: only ours are accuracies
            (
                f"{(pct if s.epochs is not None else cell)(s.best_value)} (#{s.best_trial})"
                if s.best_trial is not None
                else "—"
            ),
            after(s.times.get("best_after_s")) if s.best_trial is not None else "—",
            after(s.times.get("target_after_s")) if s.times.get("target") is not None else "—",
            final_text(s.final),
            cell(s.epochs),
            "all" if s.epochs is not None and s.train_limit is None else cell(s.train_limit),
            cell(s.dataset),
            cell(s.started),
            s.stopped or "—",
            kept_at(s.final) or s.final.get("checkpoint") or "—",
        ]
        for s in summaries
    ]
    dicts = [s.as_dict() for s in summaries]
    keys = list(dicts[0]) if dicts else ["name"]
    # On a terminal: study, trials, best, the final model and where the search stands (the last
    # two wrap); then the rest while they fit, the data set first. At 80 columns the data set
    # would leave the two wrapped columns 8 and 10 characters: a study's name says its data.
    table = Table(
        headers,
        body,
        right=frozenset(range(2, 12)),
        essential=(0, 2, 7, 10, 15),
        optional=(13, 3, 4, 8, 9, 11, 12, 14, 5, 6, 1, 16),
        wrap=frozenset({10, 15, 16}),
    )
    return View([table], dicts, (keys, [[d[k] for k in keys] for d in dicts]))


# --- optimize --------------------------------------------------------------------------------


def last_value(trial: FrozenTrial) -> float | None:
    """Last reported validation accuracy (pruned and failed trials have no value)."""
    steps = trial.intermediate_values
    return steps[max(steps)] if steps else None


def trial_line(trial: FrozenTrial, best: FrozenTrial | None, width: int | None = None) -> str:
    """One finished trial on one line. ``width`` (a terminal's): fields are dropped, least
    useful first (the best so far, the time, then parameters from the last), until the line
    fits — whole fields, never a cut in the middle of one. Piped output has every field."""
    seconds = trial.duration.total_seconds() if trial.duration is not None else 0.0
    value = trial.value if trial.state == TrialState.COMPLETE else last_value(trial)
    ran = f"{trial.user_attrs.get('epochs_run', 0)} ep  {seconds:.1f}s"
    if CONFIRM_OF in trial.user_attrs:  # a `confirm` run: which trial it repeats, and with which seed
        head = [
            f"trial {trial.user_attrs[CONFIRM_OF]:>3}",
            f"run {trial.user_attrs.get('repeat', '?')}",
            f"{trial.state.name:<8}",
            f"val {pct(value)}",
        ]
        return fit(head, [f"seed {trial.user_attrs.get('seed')}", ran], [1, 0], width)
    best_text = f"best {pct(best.value)} (#{best.number})" if best is not None else "best —"
    params = short_text(trial.params)
    head = [f"trial {trial.number:>3}", f"{trial.state.name:<8}", f"val {pct(value)}"]
    # the rest in display order; dropped in the order of `drop` (indices into it) until it fits
    rest = [best_text, params, ran]
    line = fit(head, rest, [0, 2], width)
    while width is not None and len(line) > width and rest[1]:
        rest[1] = rest[1].rsplit(" ", 1)[0] if " " in rest[1] else ""  # the last parameter goes
        line = fit(head, rest, [0, 2], width)
    return line


def fit(head: list[str], rest: list[str], drop: list[int], width: int | None) -> str:
    """``head`` and ``rest`` joined by two spaces, dropping the fields of ``rest`` at the
    indices in ``drop``, in that order, while the line is wider than ``width``."""
    rest = list(rest)
    line = "  ".join(f for f in [*head, *rest] if f)
    for index in drop:
        if width is None or len(line) <= width:
            break
        rest[index] = ""
        line = "  ".join(f for f in [*head, *rest] if f)
    return line


def no_complete_text(trials: list[FrozenTrial]) -> str:
    """Why a search ended without a complete trial, and what to change."""
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    if not trials or len(pruned) < len(trials):
        return "No complete trial yet."
    if all(t.user_attrs.get(OVER_MAX_PARAMS) for t in pruned):
        return "No complete trial: every network was over --max-params; raise it, or run more trials."
    longest = max(t.user_attrs.get("epochs_run", 0) for t in pruned)
    return (
        f"No complete trial: all {len(pruned)} were pruned (the longest after {longest} epoch(s)). "
        "Give the trials more --epochs or images (--train-limit), or run with --pruner none."
    )


def summary_view(result: OptimizeResult) -> View:
    """Short lines (80 columns hold them): what ran, where it is stored, why it stopped, the
    best, and where the search stands."""
    where = f"Study {result.study_name!r} in {display_url(result.storage)}"
    status = result.status
    if result.refused and status is not None:
        return View(
            [
                f"{where} has plateaued ({status.stop_text()}): nothing run; to search on anyway, "
                f"--patience 0 or a patience above {status.without_gain}."
            ]
        )
    states = (
        f"{result.count(TrialState.COMPLETE)} complete, {result.count(TrialState.PRUNED)} pruned, "
        f"{result.count(TrialState.FAIL)} failed"
    )
    head = "Interrupted" if result.interrupted else "Finished"
    by = f" by {result.workers} workers" if result.workers > 1 else ""
    blocks: list = [f"{head}: {len(result.trials)} trial(s){by} in {result.seconds:.1f}s ({states})", where]
    if result.capped:
        blocks.append("Stopped early: the study reached --max-trials.")
    if result.plateaued and status is not None:
        blocks.append(f"Stopped by --patience {result.patience}: {status.stop_text()}.")
    best = result.best
    if best is None:
        blocks.append(no_complete_text(result.trials))
    else:
        seconds = best.duration.total_seconds() if best.duration is not None else 0.0
        blocks.append(
            f"Best trial #{best.number}: validation accuracy {pct(best.value)} "
            f"after {best.user_attrs.get('epochs_run', '?')} epochs ({seconds:.1f}s)"
        )
        if status is not None:
            blocks.append(status.since_text())
        blocks.append(pairs_table([(k, cell(v)) for k, v in best.params.items()], ("parameter", "value")))
    if result.interrupted:
        blocks.append("The study is saved; run the same command again to resume it.")
    return View(blocks)
