"""Every `cnn-tune …` command shown in README.md and docs/*.md runs, on tiny data.

Commands are taken from fenced blocks (``$ cnn-tune …`` or a bare ``cnn-tune …`` line), in
order, one temporary folder per page, with the exit code the page shows (``[exit N]`` or
``$ echo $?``; 0 otherwise). A few cannot run here; they are listed in NOT_RUN with the reason.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import write_folder, write_mnist
from helpers import cnn_tune
from typer.testing import CliRunner

from cnn_tune.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = {  # fragment of a command → why it is not run by this test
    "--train-limit 6000": "needs 6,000 real MNIST images; the tests' data has 400",
    "cnn-tune dashboard": "serves until Ctrl-C; tests/test_bad_day.py runs it in headless Chromium",
}
NOT_RUN_BLOCKS = {  # fragment anywhere in a fenced block → why none of its commands run
    "db.example.org": "needs a PostgreSQL server on another machine",
}
STATIC = (".png", ".svg", ".pdf")
PROSE_ONLY = ("design.md", "performance.md")  # pages that show no command to run


@dataclass
class Command:
    page: str
    line: int
    text: str  # as shown, without the prompt and trailing comment
    exit_code: int
    skip: str | None = None


def commands(page: Path) -> list[Command]:
    found: list[Command] = []
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", page.read_text(), flags=re.S | re.M)
    for block in blocks:
        lines = block.splitlines()
        reason = next((why for frag, why in NOT_RUN_BLOCKS.items() if frag in block), None)
        for i, line in enumerate(lines):
            shown = line[2:] if line.startswith("$ ") else line
            if not shown.startswith("cnn-tune "):
                continue
            text = shlex.split(shown, comments=True)
            code = 0
            for after in lines[i + 1 :]:
                if after.startswith("$ ") and not after.startswith("$ echo $?"):
                    break
                match = re.fullmatch(r"\[exit (\d+)\]|(\d+)", after.strip())
                if match:
                    code = int(match.group(1) or match.group(2))
            joined = shlex.join(text)
            skip = reason or next((why for frag, why in NOT_RUN.items() if frag in joined), None)
            found.append(Command(page.name, i, joined, code, skip))
    return found


def _static_images_possible() -> bool:
    return any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome"))


@pytest.fixture()
def page_dir(tmp_path, monkeypatch):
    """A folder like a user's: README.md, docs/digits, a non-SQLite notes.db, my-images/ (three
    classes of small PNG and JPEG images), and a small
    study made by `optimize` with a checkpoint made by `retrain`, on 400 synthetic images."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "docs" / "digits", work / "docs" / "digits")
    shutil.copy(ROOT / "README.md", work / "README.md")
    (work / "notes.db").write_text("my notes, not a database\n")
    write_folder(work / "my-images", n_train=300, n_test=30)  # the pages' folder of a user's own images
    data = write_mnist(tmp_path / "data")
    for name in ("CNN_TUNE_STORAGE", "CNN_TUNE_STUDY", "CNN_TUNE_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CNN_TUNE_DATA_DIR", str(data))
    monkeypatch.chdir(work)
    runner = CliRunner()
    # --pruner none: on 400 synthetic images the default narrowing pruner may stop trials the
    # pages need complete (a contour needs two)
    for setup in (
        ["optimize", "--trials", "3", "--epochs", "1", "--seed", "0", "--pruner", "none"],
        ["retrain", "--output", str(tmp_path / "setup.pt")],
    ):
        result = runner.invoke(app, setup)
        assert result.exit_code == 0, result.output
    return work, tmp_path / "setup.pt", runner


def _args(command: str, work: Path, checkpoint: Path) -> list[list[str]]:
    """One argument list per command of a shell line (`&&` chains; a pipe's tail is dropped)."""
    out, segments = [], [[]]
    for word in shlex.split(command):
        if word == "&&":
            segments.append([])
        else:
            segments[-1].append(word)
    for segment in segments:
        words = segment[: segment.index("|")] if "|" in segment else segment
        words = [w for w in words if w != "&"][1:]  # `cmd &` runs in the foreground here
        expanded = [w for word in words for w in (sorted(glob.glob(word)) if any(c in word for c in "*[") else [word])]
        named = len(expanded) > 1 and expanded[1].endswith(".pt")  # `evaluate` alone: the study's kept model
        if expanded[:1] in (["evaluate"], ["predict"], ["export"]) and named and not (work / expanded[1]).exists():
            target = work / expanded[1]  # the page's checkpoint, from a study we do not have here
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(checkpoint, target)
        out.append(expanded)
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_on_the_page_runs(page, page_dir):
    work, checkpoint, runner = page_dir
    shown = commands(page)
    ran: set[str] = set()
    for cmd in shown:
        if cmd.skip or cmd.text in ran:  # a command shown twice (a list, then its output) runs once
            continue
        ran.add(cmd.text)
        if any(cmd.text.endswith(s) or f"{s} " in cmd.text for s in STATIC) and not _static_images_possible():
            continue  # PNG/SVG/PDF need Chromium (`.ci/run` installs it)
        for args in _args(cmd.text, work, checkpoint):
            if "--workers" in args:  # worker processes are spawned: run the real program
                r = subprocess.run(cnn_tune(*args), capture_output=True, text=True, timeout=600, env=os.environ.copy())
                code, output = r.returncode, r.stdout + r.stderr
            else:
                result = runner.invoke(app, args)
                code, output = result.exit_code, result.output
            assert code == cmd.exit_code, f"{cmd.page}:{cmd.line}: `{cmd.text}` exited {code}\n{output[-2000:]}"
            assert "Traceback" not in output, f"{cmd.page}:{cmd.line}: `{cmd.text}`\n{output[-2000:]}"
    # a page either shows commands that ran, or is one of the pages that show none
    assert bool(ran) == (page.name not in PROSE_ONLY), (page.name, sorted(ran)[:3])


def test_pages_show_commands_and_readme_stays_short():
    assert (ROOT / "README.md").stat().st_size <= 12 * 1024
    counted = {p.name: len(commands(p)) for p in PAGES}
    assert counted["README.md"] >= 10 and counted["errors.md"] >= 10, counted
    skipped = [c for p in PAGES for c in commands(p) if c.skip]
    assert len(skipped) <= 10, [c.text for c in skipped]  # NOT_RUN stays the exception


def test_the_search_tables_are_generated_from_the_benchmark_file():
    """docs/performance.md's search tables are what benchmarks/search.py --table prints from
    benchmarks/results/search_cpu.json: no figure typed by hand."""
    import json

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import search
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    result = json.loads((ROOT / "benchmarks" / "results" / "search_cpu.json").read_text())
    performance = (ROOT / "docs" / "performance.md").read_text()
    for mode in ("screen", "full"):
        found = search.campaigns(result, mode)
        assert len(found) >= 2  # the 0.2 defaults' campaign and the 0.3 one
        for campaign in found:
            assert search.table(result, mode, campaign) in performance, (mode, campaign)


def _benchmark(name: str):
    """A script of benchmarks/, imported as a module (benchmarks/ is no package)."""
    import importlib

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


@pytest.mark.parametrize(
    "script, results, in_readme, dataset",
    [
        ("retrain", "retrain_cpu.json", False, None),
        ("retrain", "retrain_adagrad_cpu.json", False, None),
        ("retrain", "retrain_fashion_cpu.json", False, None),
        ("precision", "precision_cpu.json", False, None),
        ("memory", "memory_cpu.json", False, None),
        ("pruner_replay", "pruner_replay_cpu.json", False, None),
        ("pipeline", "pipeline_cpu.json", False, "mnist"),
        ("pipeline", "pipeline_cpu.json", False, "fashion-mnist"),
        ("predict_time", "predict_time_cpu.json", False, None),
        ("block_order", "block_order_cpu.json", False, None),
        ("pipeline", "pipeline_patience_cpu.json", False, "mnist"),
        ("pipeline", "pipeline_patience_cpu.json", False, "fashion-mnist"),
    ],
)
def test_the_model_tables_are_generated_from_the_benchmark_files(script, results, in_readme, dataset):
    """The retrain recipes, the bf16 A/B and the end-to-end table are what each script's
    --table prints from its JSON file: no figure typed by hand."""
    import json

    path = ROOT / "benchmarks" / "results" / results
    if not path.exists():
        pytest.fail(f"{path.name} is missing: run benchmarks/{script}.py")
    loaded = json.loads(path.read_text())
    table = _benchmark(script).table(*([loaded, dataset] if dataset else [loaded]))
    assert table in (ROOT / "docs" / "performance.md").read_text()
    if in_readme:
        assert table in (ROOT / "README.md").read_text()


@pytest.mark.parametrize(
    "results, dataset, cpus, readme_cpu",
    [
        # the Fashion-MNIST runs against the article's loop (0.7)
        ("pipeline_article_fashion_cpu.json", "fashion-mnist", {"25/1", "25/17"}, None),
        # 0.8's end-to-end runs: an fp32 AMD EPYC and a bf16 Intel Xeon, the issue's machine
        ("pipeline_wide_cpu.json", "mnist", {"6/167"}, "6/167"),
        ("pipeline_wide_cpu.json", "fashion-mnist", {"25/1", "6/167"}, "6/167"),
    ],
)
def test_the_end_to_end_tables_keep_each_cpu_apart(results, dataset, cpus, readme_cpu):
    """Runs from several CPUs live in one JSON file: docs/performance.md holds one table per CPU,
    what pipeline.py --table --cpu prints, so no median mixes two machines' minutes; README holds
    the table of the issue's machine."""
    import json

    loaded = json.loads((ROOT / "benchmarks" / "results" / results).read_text())
    pipeline = _benchmark("pipeline")
    performance = (ROOT / "docs" / "performance.md").read_text()
    found = {pipeline.cpu_key(r) for r in loaded["runs"] if r.get("dataset", "mnist") == dataset}
    assert cpus <= found, found
    for cpu in sorted(found):
        assert pipeline.table(loaded, dataset, cpu) in performance, cpu
    if readme_cpu:
        assert pipeline.table(loaded, dataset, readme_cpu) in (ROOT / "README.md").read_text()


@pytest.mark.parametrize(
    "results, dataset, first, second",
    [
        ("pipeline_article_fashion_cpu.json", "fashion-mnist", "default", "seed-style"),
        *[
            ("pipeline_wide_cpu.json", dataset, first, second)
            for dataset in ("mnist", "fashion-mnist")
            for first, second in (
                ("default", "warm-start-only"),
                ("default", "article-space"),
                ("article-space", "warm-start-only-article"),
            )
        ],
    ],
)
def test_the_candidates_are_printed_seed_by_seed(results, dataset, first, second):
    """Claims that rest on pairs of candidates (0.7's default against the article's loop; 0.8's
    default against its own warm start and against 0.7's default, and 0.7's search against its
    warm start) are read seed by seed on one CPU: docs/performance.md holds what
    pipeline.py --pair prints."""
    import json

    loaded = json.loads((ROOT / "benchmarks" / "results" / results).read_text())
    pair = _benchmark("pipeline").pair_table(loaded, dataset, first, second)
    assert pair.count("\n") >= 2 and pair in (ROOT / "docs" / "performance.md").read_text()
