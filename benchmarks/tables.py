"""What the benchmarks that keep their runs in a results file share: ``--json FILE``, where
the runs are kept, and ``--table``, which prints the Markdown table from that file and runs
nothing (docs/performance.md and README.md hold these tables; tests/test_docs.py checks them)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable


def results_options(parser: argparse.ArgumentParser, default: Path) -> None:
    parser.add_argument("--json", type=Path, default=default)
    parser.add_argument("--table", action="store_true", help="print the table from the JSON file, run nothing")


def printed_table(args: argparse.Namespace, table: Callable[..., str], *extra: Any) -> bool:
    """With ``--table``: print the table of ``args.json`` and say so (the caller then stops)."""
    if args.table:
        print(table(json.loads(args.json.read_text()), *extra))
    return bool(args.table)
