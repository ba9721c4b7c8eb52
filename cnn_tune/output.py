"""Output for people and for pipes: a rich table on a terminal; plain aligned text, JSON or
CSV otherwise. Nothing here opens storage: it renders what the library returns."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterable

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from .inspection import StudySummary, TrialRow, param_names

FORMATS = ("table", "json", "csv")


def cell(value: Any) -> str:
    """How a value reads in a table: 0.3, not 0.30000000000000004 (Optuna's float steps)."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def plain_table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns separated by two spaces, no colour, no box art: what `cut`/`awk` expect."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines) + "\n"


def rich_table(headers: list[str], rows: list[list[str]], title: str | None = None,
               right: Iterable[int] = ()) -> Table:
    table = Table(title=title, show_header=True, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    right = set(right)
    for i, h in enumerate(headers):
        table.add_column(h, justify="right" if i in right else "left", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


def emit(text_or_table: str | Table, console: Console | None) -> None:
    if isinstance(text_or_table, Table):
        assert console is not None
        # A table wider than the terminal is printed at its natural width (the terminal wraps
        # or `less -S` scrolls) rather than squeezed until values fold or are cut.
        natural = Measurement.get(console, console.options.update(max_width=10_000), text_or_table).maximum
        width = console.width
        console.width = max(width, natural)
        try:
            console.print(text_or_table)
        finally:
            console.width = width
    else:
        print(text_or_table, end="", flush=True)


# --- trials ----------------------------------------------------------------------------------

TRIAL_COLUMNS = ["number", "state", "value", "last_val_accuracy", "epochs", "duration_s", "started"]
RETRAIN_COLUMNS = ["test_accuracy", "checkpoint", "retry_of"]


def trial_headers(rows: list[TrialRow]) -> tuple[list[str], list[str]]:
    names = param_names(rows)
    retrained = any(r.test_accuracy is not None for r in rows)
    people = ["#", "state", "val acc", "epochs", "seconds", *names] + (["test acc"] if retrained else [])
    return people, names


def trials_text_rows(rows: list[TrialRow]) -> tuple[list[str], list[list[str]]]:
    headers, names = trial_headers(rows)
    retrained = "test acc" in headers
    body = []
    for r in rows:
        # a pruned or running trial shows the last epoch's accuracy: where it stopped
        line = [str(r.number), r.state, pct(r.value if r.value is not None else r.last_val_accuracy),
                str(r.epochs), secs(r.duration_s), *[cell(r.params.get(n)) for n in names]]
        body.append(line + ([pct(r.test_accuracy)] if retrained else []))
    return headers, body


def trials_json(rows: list[TrialRow]) -> str:
    return json.dumps([r.as_dict() for r in rows], indent=2) + "\n"


def trials_csv(rows: list[TrialRow]) -> str:
    """Flat columns; parameters as ``params_<name>`` like Optuna's ``trials_dataframe``."""
    names = param_names(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*TRIAL_COLUMNS, *(f"params_{n}" for n in names), *RETRAIN_COLUMNS])
    for r in rows:
        d = r.as_dict()
        writer.writerow([_csv(d[c]) for c in TRIAL_COLUMNS] + [_csv(r.params.get(n)) for n in names]
                        + [_csv(d[c]) for c in RETRAIN_COLUMNS])
    return out.getvalue()


def _csv(value: Any) -> str:
    """Empty for missing; floats with repr precision so they parse back equal."""
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def render_trials(rows: list[TrialRow], fmt: str, console: Console | None, title: str) -> str | Table:
    """``console`` is given only for a terminal: then the table is a rich one."""
    if fmt == "json":
        return trials_json(rows)
    if fmt == "csv":
        return trials_csv(rows)
    headers, body = trials_text_rows(rows)
    if console is not None:
        return rich_table(headers, body, title=title, right=[0, 2, 3, 4])
    return plain_table(headers, body)


# --- best ------------------------------------------------------------------------------------

def best_pairs(record: dict[str, Any]) -> list[tuple[str, str]]:
    pairs = [("study", record["study"]), ("trial", str(record["number"])),
             ("validation accuracy", pct(record["value"])), ("epochs run", str(record["epochs"])),
             ("duration (s)", secs(record["duration_s"])), ("started", cell(record["started"])),
             ("completed", cell(record["completed"])), ("device", cell(record["device"])),
             ("seed", cell(record["seed"]))]
    pairs += [(name, cell(value)) for name, value in record["params"].items()]
    if record["test_accuracy"] is not None:
        pairs += [("test accuracy", pct(record["test_accuracy"])), ("checkpoint", cell(record["checkpoint"]))]
    else:
        pairs.append(("test accuracy", "— (run `cnn-tune retrain`)"))
    return pairs


def render_best(record: dict[str, Any], fmt: str, console: Console | None) -> str | Table:
    if fmt == "json":
        return json.dumps(record, indent=2) + "\n"
    pairs = best_pairs(record)
    if console is not None:
        return rich_table(["", "best trial"], [list(p) for p in pairs], right=[1])
    return plain_table(["field", "value"], [list(p) for p in pairs])


# --- studies ---------------------------------------------------------------------------------

def render_studies(summaries: list[StudySummary], fmt: str, console: Console | None) -> str | Table:
    if fmt == "json":
        return json.dumps([s.as_dict() for s in summaries], indent=2) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        dicts = [s.as_dict() for s in summaries]
        keys = list(dicts[0]) if dicts else ["name"]
        writer.writerow(keys)
        writer.writerows([[_csv(d[k]) for k in keys] for d in dicts])
        return out.getvalue()
    headers = ["study", "direction", "trials", "complete", "pruned", "fail", "running", "best", "epochs",
               "train limit", "started"]
    body = [[s.name, s.direction, str(s.trials), str(s.counts["complete"]), str(s.counts["pruned"]),
             str(s.counts["fail"]), str(s.counts["running"]),
             # a study of another tool may optimize anything: only ours are accuracies
             (f"{(pct if s.epochs is not None else cell)(s.best_value)} (#{s.best_trial})"
              if s.best_trial is not None else "—"),
             cell(s.epochs), "all" if s.epochs is not None and s.train_limit is None else cell(s.train_limit),
             cell(s.started)] for s in summaries]
    if console is not None:
        return rich_table(headers, body, right=[2, 3, 4, 5, 6, 7, 8])
    return plain_table(headers, body)


# --- retrain / evaluate / predict ------------------------------------------------------------

def evaluation_lines(record: dict[str, Any], retrained: bool) -> list[str]:
    head = (f"Retrained trial {record['trial']} of study {record['study']!r}: {record['epochs']} epochs "
            f"(seed {record['seed']}) in {record['train_seconds']:.1f}s" if retrained else
            f"Checkpoint of trial {record['trial']} of study {record['study']!r} ({record['epochs']} epochs, seed {record['seed']})")
    lines = [head,
             f"Test accuracy {pct(record['test_accuracy'])} on {record['n_test']} images, "
             f"test loss {record['test_loss']:.4f} (scored in {record['eval_seconds']:.1f}s)"]
    if record.get("val_accuracy") is not None:
        lines.append(f"Validation accuracy of the trial: {pct(record['val_accuracy'])}")
    lines.append(f"Checkpoint: {record['checkpoint']}")
    return lines


def confusion_rows(record: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = ["true \\ predicted", *map(str, range(10)), "accuracy"]
    rows = [[str(i), *map(str, counts), pct(record["per_class_accuracy"][i])]
            for i, counts in enumerate(record["confusion"])]
    return headers, rows


def render_evaluation(record: dict[str, Any], retrained: bool, fmt: str, console: Console | None) -> None:
    if fmt == "json":
        print(json.dumps(record, indent=2), flush=True)
        return
    lines = evaluation_lines(record, retrained)
    headers, rows = confusion_rows(record)
    if console is None:
        print("\n".join(lines), flush=True)
        print(plain_table(headers, rows), end="", flush=True)
        return
    console.print(f"[bold]{lines[0]}[/bold]", highlight=False)
    for line in lines[1:]:
        console.print(line, highlight=False)
    console.print(rich_table(headers, rows, title="Confusion matrix (test set)", right=range(1, 12)))


def render_predictions(records: list[dict[str, Any]], fmt: str, console: Console | None) -> None:
    if fmt == "json":
        print(json.dumps(records, indent=2), flush=True)
        return
    headers = ["image", "digit", "probability"]
    rows = [[r["image"], str(r["digit"]), pct(r["probability"])] for r in records]
    emit(rich_table(headers, rows, right=[1, 2]) if console is not None else plain_table(headers, rows), console)
