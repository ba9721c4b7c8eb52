"""Every command's --help reads as paragraphs at any width: descriptions are hard-wrapped in
the source, and must be reflowed, not shown with the source's line breaks."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cnn_tune.cli.main import app

COMMANDS = [[]] + [[c.name or c.callback.__name__] for c in app.registered_commands]


def _description(text: str) -> list[list[str]]:
    """The paragraphs of the description: between the usage line and the first option box."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if "Usage:" in ln) + 1
    end = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("╭")), len(lines))
    paragraphs, current = [], []
    for line in lines[start:end]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(current)
            current = []
    return paragraphs + ([current] if current else [])


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0] if c else "cnn-tune")
def test_help_wraps_greedily(command, width):
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": str(width), "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    paragraphs = _description(result.stdout)
    assert paragraphs, result.stdout
    room = width - 2  # rich pads the description by one column on each side
    for paragraph in paragraphs:
        for line, following in zip(paragraph, paragraph[1:]):
            # a break is only where the next word did not fit: never mid-sentence in the source's place
            assert len(line) + 1 + len(following.split()[0]) > room, (line, following)
    assert max(len(ln) for ln in result.stdout.splitlines()) <= width
