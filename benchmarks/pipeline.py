"""The model a user takes home, end to end: test accuracy of the final model against minutes
from the first command, per search strategy, each followed by the same `cnn-tune retrain`.

Not part of the test suite; run by hand on an otherwise idle machine (README's numbers come
from here):

    .venv/bin/python benchmarks/pipeline.py --seeds 200 201 202
    .venv/bin/python benchmarks/pipeline.py --seeds 200 --candidates seed-style
    .venv/bin/python benchmarks/pipeline.py --table      # the Markdown table, from the JSON only
    .venv/bin/python benchmarks/pipeline.py --dataset fashion-mnist --seeds 300 301 302
    .venv/bin/python benchmarks/pipeline.py --dataset fashion-mnist --table
    .venv/bin/python benchmarks/pipeline.py --dataset fashion-mnist --pair default seed-style \
        --json benchmarks/results/pipeline_article_fashion_cpu.json   # seed by seed, same CPU
    .venv/bin/python benchmarks/pipeline.py --dataset fashion-mnist --table --cpu 25/17 \
        --json benchmarks/results/pipeline_article_fashion_cpu.json   # one CPU's runs only

Candidates (alternating per seed, so drift of the machine hits all alike):

- ``default``: README's two commands as a user runs them — ``optimize --trials 20``, then
  ``retrain`` — each a fresh process on a fresh SQLite file;
- ``article-preset``: ``optimize --preset article --trials 20``, then the same ``retrain``;
- ``seed-style``: the article's own loop (benchmarks/speed.py's SeedObjective: a new 80/20
  split per trial, fp32, DataLoader, TPE + median pruner), its winner then retrained by the same
  ``retrain`` (its parameters stored as the one complete trial of a new cnn-tune study);
- ``default+patience``: the default with ``--patience N`` (``--patience``, 8 unless given; since
  0.7 ``default`` itself has patience 8, so ``default+patience --patience 0`` is the search
  without a stop that the ``default`` rows of earlier versions measured): the
  search stops once N trials in a row gained nothing beyond the validation noise;
- ``warm-start-only``: no search — ``optimize --trials 1`` trains the warm-start
  configuration once (its validation accuracy), then ``retrain``: the row a search must beat.
- ``article-space`` and ``warm-start-only-article`` (since 0.8, whose default searches the wide
  space): the same two on ``--space article`` — 0.7's default search and its warm start.
  Before 0.8, ``default`` was the article space's search: results of 0.8 and later live in
  their own files (``pipeline_wide_*.json``).

Per run: ``dataset`` (mnist, the default, or fashion-mnist), ``search_s`` and ``retrain_s``
(wall time of each command, data already cached),
``total_s``, the winner's validation accuracy ``val``, the final model's ``test`` accuracy
on the 10,000 test images (fp32 scoring, from `retrain`), ``winner_is_warm_start``, and
``exit_code`` for a run that failed (kept, never dropped) or ``disturbed`` when other processes
used the machine meanwhile. Runs of cnn-tune's own search also keep ``trials`` — every trial as
[number, state, value or last validation accuracy, epochs] in the order they finished — so a
stopping rule can be replayed on them (``patience`` and ``stopped`` for ``default+patience``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from statistics import median

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epoch_time import cpu_details, cpu_model  # noqa: E402
from retrain import busy_seconds, own_seconds  # noqa: E402
from tables import printed_table, results_options  # noqa: E402

from cnn_tune.storage.engine import open_storage
from cnn_tune.storage.studies import create_or_load

RESULTS = Path(__file__).parent / "results" / "pipeline_cpu.json"
SEARCH = {
    "default": [],
    "default+patience": [],
    "article-preset": ["--preset", "article"],
    "article-space": ["--space", "article"],
    "warm-start-only": [],
    "warm-start-only-article": ["--space", "article"],
    "seed-style": None,
}
NO_SEARCH = ("warm-start-only", "warm-start-only-article")  # optimize --trials 1: the warm start alone
PATIENCE = 8  # default+patience's N unless --patience says otherwise
CANDIDATES = list(SEARCH)
TRIALS = 20


def cnn_tune(*args: str, url: str, data_dir: Path) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run one command as a user would; its result, wall seconds, and CPU seconds that
    processes other than it (and its workers) used meanwhile."""
    busy, started = busy_seconds(), time.perf_counter()
    children = os.times()
    done = subprocess.run(
        [sys.executable, "-m", "cnn_tune", *args, "--storage", url, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    after = os.times()
    ours = (after.children_user - children.children_user) + (after.children_system - children.children_system)
    return done, wall, max(busy_seconds() - busy - ours, 0.0)


def study_name(dataset: str) -> str:
    from cnn_tune.data.datasets import DatasetRef, default_study_name

    return default_study_name(DatasetRef(dataset))


def seed_style_search(url: str, seed: int, data_dir: Path, dataset: str) -> tuple[float, float]:
    """The article's loop; its best trial becomes the one complete trial of a cnn-tune study
    (with the protocol `retrain` checks), so the same `retrain` trains it."""
    from speed import SeedObjective

    from cnn_tune.data.load import load_builtin
    from cnn_tune.model.space import Hyperparams, distributions
    from cnn_tune.search.plan import protocol_for

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    data = load_builtin(dataset, data_dir, lambda _: None)  # fetched if need be, before the clock starts
    busy, own, started = busy_seconds(), own_seconds(), time.perf_counter()
    loop = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=optuna.pruners.MedianPruner()
    )
    loop.optimize(SeedObjective(data_dir, None, 10, seed, dataset), n_trials=TRIALS)
    wall = time.perf_counter() - started
    others = max(busy_seconds() - busy - (own_seconds() - own), 0.0)
    protocol = protocol_for(10, None, data)
    storage = open_storage(url, None, write=True)
    study, _ = create_or_load(
        storage, study_name(dataset), protocol, optuna.samplers.RandomSampler(), optuna.pruners.NopPruner()
    )
    best = loop.best_trial
    study.add_trial(
        optuna.trial.create_trial(
            params=best.params,
            distributions=distributions(Hyperparams),
            value=best.value,
            user_attrs={"seed": seed + best.number, "cnn_tune.seed_style_trial": best.number},
        )
    )
    return wall, others


# Long: one run of one candidate — its search, its retrain, and the record of both, failures included.
def finish_order(study: optuna.Study) -> list[list]:
    """Every finished trial as [number, state, value (a pruned trial: its last validation
    accuracy), epochs], in the order they finished."""
    done = sorted(
        (t for t in study.trials if t.datetime_complete is not None), key=lambda t: (t.datetime_complete, t.number)
    )
    return [
        [
            t.number,
            t.state.name,
            t.value
            if t.value is not None
            else (t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None),
            len(t.intermediate_values),
        ]
        for t in done
    ]


def run(
    candidate: str,
    seed: int,
    data_dir: Path,
    keep: Path | None = None,
    dataset: str = "mnist",
    patience: int = PATIENCE,
) -> dict:
    record: dict = {
        "candidate": candidate,
        "seed": seed,
        "dataset": dataset,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **cpu_details(),
    }
    extra = ["--patience", str(patience)] if candidate == "default+patience" else []
    if extra:
        record["patience"] = patience
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/pipeline.db"
        if candidate == "seed-style":
            search_s, others = seed_style_search(url, seed, data_dir, dataset)
        else:
            trials = ["--trials", "1"] if candidate in NO_SEARCH else ["--trials", str(TRIALS)]
            which = ["--dataset", dataset] if dataset != "mnist" else []  # README's command, as typed, on MNIST
            done, search_s, others = cnn_tune(
                "optimize",
                *trials,
                "--seed",
                str(seed),
                *which,
                *(SEARCH[candidate] or []),
                *extra,
                url=url,
                data_dir=data_dir,
            )
            if done.returncode:
                return {
                    **record,
                    "search_s": round(search_s, 1),
                    "exit_code": done.returncode,
                    "error": done.stderr.strip().splitlines()[-3:],
                }
        done, retrain_s, more = cnn_tune(
            "retrain", "--format", "json", "--output", f"{tmp}/model.pt", url=url, data_dir=data_dir
        )
        record.update(
            search_s=round(search_s, 1), retrain_s=round(retrain_s, 1), total_s=round(search_s + retrain_s, 1)
        )
        if done.returncode:
            return {**record, "exit_code": done.returncode, "error": done.stderr.strip().splitlines()[-3:]}
        result = json.loads(done.stdout)
        study = optuna.load_study(study_name=study_name(dataset), storage=url)
        winner = next(t for t in study.trials if t.number == result["trial"])
        record.update(
            val=winner.value,
            test=result["test_accuracy"],
            test_ci95=result["test_ci95"],
            winner_trial=winner.number,
            winner_params=winner.params,
            winner_is_warm_start=bool(winner.user_attrs.get("cnn_tune.warm_start")),
            winner_n_params=winner.user_attrs.get("n_params"),
            recipe=result["recipe"],
            epochs_trained=sum(len(t.intermediate_values) for t in study.trials),
        )
        if candidate != "seed-style":
            record.update(trials=finish_order(study), stopped=study.user_attrs.get("cnn_tune.stop"))
        if keep is not None:  # e.g. for benchmarks/precision.py --storage
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(f"{tmp}/pipeline.db", keep / f"{dataset}-{candidate}-{seed}.db")
    if others + more > 0.1 * record["total_s"]:
        record["disturbed"] = f"other processes used {others + more:.0f} CPU-s during {record['total_s']:.0f} s"
    return record


def table(result: dict, dataset: str = "mnist", cpu: str | None = None) -> str:
    """Markdown: per candidate, medians over the undisturbed runs on ``dataset`` that exited 0
    (runs from before the field existed were on MNIST); with ``cpu`` (``FAMILY/MODEL``, e.g.
    ``25/17``) only the runs from that CPU, so no median mixes the minutes of two machines."""
    sized = any("winner_n_params" in r for r in result["runs"])  # files from before 0.8 keep their columns
    size = (" winner's parameters (median) |", "---|") if sized else ("", "")
    lines = [
        "| candidate | seeds | median search | median retrain | median total | median test accuracy | lowest "
        "| highest | median val | winner is the warm start |" + size[0],
        "|---|---|---|---|---|---|---|---|---|---|" + size[1],
    ]
    for candidate in CANDIDATES:
        runs = [
            r
            for r in result["runs"]
            if r["candidate"] == candidate
            and r.get("dataset", "mnist") == dataset
            and (cpu is None or cpu_key(r) == cpu)
        ]
        ok = [r for r in runs if "exit_code" not in r and "disturbed" not in r]
        if not ok:
            continue
        apart = len(runs) - len(ok)
        seeds = ", ".join(str(r["seed"]) for r in ok) + (f" (+{apart} failed or disturbed)" if apart else "")
        tests = [r["test"] for r in ok]
        lines.append(
            f"| {candidate} | {seeds} | {median([r['search_s'] for r in ok]) / 60:.1f} min "
            f"| {median([r['retrain_s'] for r in ok]) / 60:.1f} min "
            f"| {median([r['total_s'] for r in ok]) / 60:.1f} min | {100 * median(tests):.2f}% "
            f"| {100 * min(tests):.2f}% | {100 * max(tests):.2f}% "
            f"| {100 * median([r['val'] for r in ok]):.2f}% "
            f"| {sum(r['winner_is_warm_start'] for r in ok)}/{len(ok)} |" + (f" {size_text(ok)} |" if sized else "")
        )
    return "\n".join(lines)


def size_text(runs: list[dict]) -> str:
    sizes = [r["winner_n_params"] for r in runs if r.get("winner_n_params")]
    return f"{median(sizes) / 1000:.0f}k" if sizes else "—"


def cpu_key(run: dict) -> str:
    """``FAMILY/MODEL`` of the CPU a run came from (``None/None`` for runs from before 0.7)."""
    return f"{run.get('cpu_family')}/{run.get('model')}"


def cpu_label(run: dict) -> str:
    """The CPU a run came from, as the docs name it: ``AMD EPYC 25/1 (no AVX512-BF16, fp32)``
    (family/model); runs from before 0.7 did not record it."""
    if "avx512_bf16" not in run:
        return "not recorded"
    kind = "AVX512-BF16" if run["avx512_bf16"] else "no AVX512-BF16, fp32"
    return f"{run['cpu']} {cpu_key(run)} ({kind})"


def pair_table(result: dict, dataset: str, first: str, second: str) -> str:
    """Markdown, one row per seed where both candidates ran undisturbed and exited 0: their
    search minutes side by side on the same CPU, the ratio, and both final test accuracies.
    Minutes from different CPUs never meet in one ratio."""
    lines = [
        f"| seed | CPU | {first} search | {second} search | ratio | {first} test | {second} test |",
        "|---|---|---|---|---|---|---|",
    ]
    ok = [
        r
        for r in result["runs"]
        if r.get("dataset", "mnist") == dataset and "exit_code" not in r and "disturbed" not in r
    ]
    for seed in sorted({r["seed"] for r in ok}):
        a = next((r for r in ok if r["seed"] == seed and r["candidate"] == first), None)
        b = next((r for r in ok if r["seed"] == seed and r["candidate"] == second), None)
        if a is None or b is None or cpu_label(a) != cpu_label(b):
            continue
        lines.append(
            f"| {seed} | {cpu_label(a)} | {a['search_s'] / 60:.1f} min | {b['search_s'] / 60:.1f} min "
            f"| {a['search_s'] / b['search_s']:.2f} | {100 * a['test']:.2f}% | {100 * b['test']:.2f}% |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[200, 201, 202])
    parser.add_argument("--candidates", nargs="+", choices=CANDIDATES, default=CANDIDATES)
    parser.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cnn-tune"
    )
    results_options(parser, RESULTS)
    parser.add_argument("--keep", type=Path, help="copy each run's study database into this folder")
    parser.add_argument("--patience", type=int, default=PATIENCE, help="default+patience's --patience")
    parser.add_argument("--cpu", metavar="FAMILY/MODEL", help="--table: only the runs from this CPU, e.g. 25/17")
    parser.add_argument(
        "--pair",
        nargs=2,
        choices=CANDIDATES,
        metavar="CANDIDATE",
        help="print two candidates seed by seed from the JSON (same CPU per row), run nothing",
    )
    args = parser.parse_args()
    if args.pair:
        print(pair_table(json.loads(args.json.read_text()), args.dataset, *args.pair))
        return
    if printed_table(args, table, args.dataset, args.cpu):
        return
    result = json.loads(args.json.read_text()) if args.json.exists() else {"runs": []}
    # the file's machine is the one its first runs came from; each run names its own CPU
    result.setdefault("machine", {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()})
    for i, seed in enumerate(args.seeds):
        shift = i % len(args.candidates)
        for candidate in args.candidates[shift:] + args.candidates[:shift]:
            record = run(candidate, seed, args.data_dir, args.keep, args.dataset, args.patience)
            result["runs"].append(record)
            args.json.write_text(json.dumps(result, indent=1) + "\n")  # after every run: a crash loses one
            print(
                json.dumps(
                    {
                        k: record.get(k)
                        for k in (
                            "candidate",
                            "seed",
                            "search_s",
                            "retrain_s",
                            "total_s",
                            "val",
                            "test",
                            "exit_code",
                            "disturbed",
                        )
                    }
                ),
                flush=True,
            )
    print(table(result, args.dataset))


if __name__ == "__main__":
    main()
