"""The ``cnn-tune`` program (console script and ``python -m cnn_tune``): every command registered
in the order ``--help`` lists them, their docstrings reflowed for the terminal, then run."""

from __future__ import annotations

import inspect

from cnn_tune.cli.app import app
from cnn_tune.cli.model_commands import evaluate, export, predict, retrain
from cnn_tune.cli.search_commands import confirm, optimize
from cnn_tune.cli.study_commands import backup, best, dashboard, plot, studies, trials
from cnn_tune.processes.streams import guard

# The commands, in the order `cnn-tune --help` lists them.
for _callback in (
    optimize,
    best,
    trials,
    studies,
    plot,
    retrain,
    evaluate,
    predict,
    export,
    confirm,
    backup,
    dashboard,
):
    app.command()(_callback)


def reflow(doc: str) -> str:
    """A docstring's paragraphs as single lines, so the help formatter wraps them to the
    terminal: docstrings are hard-wrapped for the source, and rich keeps single line breaks."""
    return "\n\n".join(
        " ".join(line.strip() for line in paragraph.splitlines()) for paragraph in inspect.cleandoc(doc).split("\n\n")
    )


for _command in app.registered_commands:
    _command.help = reflow(_command.help or inspect.getdoc(_command.callback) or "")


def main() -> None:
    guard()  # a terminal that hangs up, or a pipe closed early, must not turn output into a crash
    app()
