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
    """Cells already formatted for people; ``right``: indexes of right-aligned columns."""

    headers: list[str]
    rows: list[list[str]]
    title: str | None = None
    right: frozenset[int] = frozenset()


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


def rich_table(table: Table) -> RichTable:
    out = RichTable(title=table.title, show_header=True, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for i, h in enumerate(table.headers):
        out.add_column(h, justify="right" if i in table.right else "left", no_wrap=True)
    for row in table.rows:
        out.add_row(*row)
    return out


def print_rich(view: View, console: Console) -> None:
    for block in view.blocks:
        if not isinstance(block, Table):
            console.print(block, highlight=False, markup=False)
            continue
        rendered = rich_table(block)
        # A table wider than the terminal is printed at its natural width (the terminal wraps
        # or `less -S` scrolls) rather than squeezed until values fold or are cut.
        natural = Measurement.get(console, console.options.update(max_width=10_000), rendered).maximum
        width = console.width
        console.width = max(width, natural)
        try:
            console.print(rendered)
        finally:
            console.width = width


def terminal() -> Console | None:
    """A console when stdout is a terminal (rich tables); None for pipes and files (plain)."""
    console = Console()
    return console if console.is_terminal else None


def show(view: View, fmt: str = "table", output: Path | None = None) -> None:
    """Write ``view`` to ``output`` (atomically), or to stdout: rich on a terminal for ``table``."""
    from cnn_tune.files import check_writable, write_atomic

    if output is not None:
        check_writable(output)
        write_atomic(output, text(view, fmt).encode())
        print(f"Wrote {output}", file=sys.stderr, flush=True)
        return
    console = terminal() if fmt == "table" else None
    if console is not None:
        print_rich(view, console)
    else:
        print(text(view, fmt), end="", flush=True)


def html_table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in table.rows)
    caption = f"<caption>{html.escape(table.title)}</caption>" if table.title else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def pairs_table(pairs: Iterable[tuple[str, str]], headers: tuple[str, str] = ("field", "value")) -> Table:
    return Table(list(headers), [[k, v] for k, v in pairs], right=frozenset({1}))


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
