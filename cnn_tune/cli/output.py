"""The one formatter: how every command and the HTML report show numbers, tables, JSON and CSV.

A command builds a :class:`View` — lines and :class:`Table` cells for people, the same facts
as plain data for JSON and CSV — and :func:`show` writes it: a rich table on a terminal; plain
aligned text (no colour, no box art: what ``cut``/``awk`` expect), JSON or CSV when piped,
written to a file, or asked with ``--format``. Nothing here opens storage.
"""

from __future__ import annotations

import csv
import html
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Union

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table as RichTable

FORMATS = ("table", "json", "csv")


# --- values, as people read them -------------------------------------------------------------


def cell(value: Any) -> str:
    """0.3, not 0.30000000000000004 (Optuna's float steps); ``—`` for missing."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def csv_cell(value: Any) -> str:
    """Empty for missing; floats with repr precision so they parse back equal."""
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


# --- views -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """Cells already formatted for people; ``right``: indexes of right-aligned columns.

    How it fits a terminal (piped text, JSON and CSV always have every column): ``essential``
    columns are always shown (None: all of them), the others in ``optional`` order while they fit
    the width; ``wrap`` columns fold long text inside themselves; ``instead`` is shown in place
    of a table whose essential columns do not fit (the confusion matrix's summary)."""

    headers: list[str]
    rows: list[list[str]]
    title: str | None = None
    right: frozenset[int] = frozenset()
    essential: tuple[int, ...] | None = None
    optional: tuple[int, ...] = ()  # the order in which other columns join when there is room
    wrap: frozenset[int] = frozenset()
    instead: list[Any] | None = None


Block = Union[str, Table]


@dataclass
class View:
    """One command's output. ``blocks``: what people read (lines and tables); ``data``: the
    JSON document; ``csv``: header and raw rows for CSV (values, not formatted text)."""

    blocks: list[Block]
    data: Any = None
    csv: tuple[list[str], list[list[Any]]] | None = None


def text(view: View, fmt: str) -> str:
    """The view as text in ``fmt`` (``table`` is the plain, pipe-friendly form)."""
    if fmt == "json":
        return json.dumps(view.data, indent=2) + "\n"
    if fmt == "csv":
        headers, rows = view.csv or ([], [])
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(headers)
        writer.writerows([[csv_cell(v) for v in row] for row in rows])
        return out.getvalue()
    return "".join(plain_table(b) if isinstance(b, Table) else b + "\n" for b in view.blocks)


def plain_table(table: Table) -> str:
    """Columns separated by two spaces, no colour, no box art."""
    widths = [max([len(h), *(len(r[i]) for r in table.rows)]) for i, h in enumerate(table.headers)]
    lines = [("  ".join(c.ljust(w) for c, w in zip(row, widths))).rstrip() for row in [table.headers, *table.rows]]
    return "\n".join(lines) + "\n"


def rich_table(table: Table, columns: list[int] | None = None, fold: bool = False) -> RichTable:
    """The rich table of ``columns`` (all by default), in their order; ``fold``: the ``wrap``
    columns fold long text onto more lines."""
    out = RichTable(title=table.title, show_header=True, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    shown = columns if columns is not None else list(range(len(table.headers)))
    for i in shown:
        out.add_column(
            table.headers[i],
            justify="right" if i in table.right else "left",
            no_wrap=not (fold and i in table.wrap),
            overflow="fold",
        )
    for row in table.rows:
        out.add_row(*(row[i] for i in shown))
    return out


def _width(console: Console, rendered: RichTable) -> int:
    return Measurement.get(console, console.options.update(max_width=10_000), rendered).maximum


def fitting_columns(table: Table, console: Console) -> list[int]:
    """The essential columns, then each optional one that still fits the console's width."""
    if table.essential is None:
        return list(range(len(table.headers)))
    chosen = list(table.essential)
    for i in table.optional:
        trial = sorted([*chosen, i])
        if _width(console, rich_table(table, trial, fold=True)) <= console.width:
            chosen = trial
    return sorted(chosen)


def print_rich(view: View, console: Console, wide: bool = False) -> None:
    """The view on a terminal. A table shows the columns that fit the terminal, the rest named
    in a note (``--wide`` shows them all, at the table's natural width: the terminal wraps or
    ``less -S`` scrolls)."""
    for block in view.blocks:
        if not isinstance(block, Table):
            console.print(block, highlight=False, markup=False)
            continue
        if wide:
            rendered = rich_table(block)
            width = console.width
            console.width = max(width, _width(console, rendered))
            try:
                console.print(rendered)
            finally:
                console.width = width
            continue
        columns = fitting_columns(block, console)
        rendered = rich_table(block, columns, fold=True)
        if block.instead is not None and _width(console, rendered) > console.width:
            print_rich(View(block.instead), console)
            continue
        console.print(rendered, width=console.width)
        hidden = len(block.headers) - len(columns)
        if hidden:
            console.print(
                f"{hidden} more column{'s' if hidden != 1 else ''} with --wide (all with --format csv)",
                style="dim",
                highlight=False,
                markup=False,
            )


def terminal() -> Console | None:
    """A console when stdout is a terminal (rich tables); None for pipes and files (plain)."""
    console = Console()
    return console if console.is_terminal else None


def show(view: View, fmt: str = "table", output: Path | None = None, wide: bool = False) -> None:
    """Write ``view`` to ``output`` (atomically), or to stdout: rich on a terminal for ``table``
    (fitted to its width unless ``wide``)."""
    from cnn_tune.files import check_writable, write_atomic

    if output is not None:
        check_writable(output)
        write_atomic(output, text(view, fmt).encode())
        print(f"Wrote {output}", file=sys.stderr, flush=True)
        return
    console = terminal() if fmt == "table" else None
    if console is not None:
        print_rich(view, console, wide)
    else:
        print(text(view, fmt), end="", flush=True)


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    caption = f"<caption>{html.escape(table.title)}</caption>" if table.title else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def pairs_table(pairs: Iterable[tuple[str, str]], headers: tuple[str, str] = ("field", "value")) -> Table:
    """A record as label: value pairs, read left to right; a long value wraps inside its column."""
    return Table(list(headers), [[k, v] for k, v in pairs], wrap=frozenset({1}))


def flat(record: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """One CSV row of a record; a nested dict (``params``) becomes ``params_<name>`` columns,
    as in Optuna's ``trials_dataframe``; lists are left out."""
    headers, row = [], []
    for key, value in record.items():
        if isinstance(value, dict):
            headers += [f"{key}_{k}" for k in value]
            row += list(value.values())
        elif not isinstance(value, list):
            headers.append(key)
            row.append(value)
    return headers, [row]
