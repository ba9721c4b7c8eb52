"""Retrain recipes, measured by test accuracy and time: which final training to make the default.

Not part of the test suite; run by hand on an otherwise idle machine:

    .venv/bin/python benchmarks/retrain.py --seeds 0 1 2
    .venv/bin/python benchmarks/retrain.py --table      # the Markdown table, from the JSON only
    .venv/bin/python benchmarks/retrain.py --dataset fashion-mnist --seeds 0 1 --json \
        benchmarks/results/retrain_fashion_cpu.json --candidates "20 ep, cosine, shift 2" "20 ep, cosine, shift 2, flip"
    .venv/bin/python benchmarks/retrain.py --params '{"optimizer": "Adagrad", "lr": 0.008}' \
        --json benchmarks/results/retrain_adagrad_cpu.json     # another configuration

Every candidate trains the warm-start configuration (the article's: Adam, lr 1e-3, batch 128,
fc 128, dropout 0.2/0.1), or the one ``--params`` describes, on all 60,000 training images,
exactly as `cnn-tune retrain` does (cnn_tune.model.training.Trainer with a Style), and is scored in
fp32 on the 10,000 test images. The test set chooses the default here and only here: no study
ever sees it. Candidates run in a rotated order per seed so that drift of the machine hits all
alike. A run during which other processes used more than a fifth of a core is kept but marked
``disturbed``.

The ensemble candidate trains the same configuration with K seeds: in a study the top K
trials are near-identical configurations, so this is its cost and its gain without a study.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from statistics import median

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epoch_time import cpu_model  # noqa: E402
from tables import printed_table, results_options  # noqa: E402

from cnn_tune.data.load import load_builtin
from cnn_tune.model.device import resolve_precision
from cnn_tune.model.network import Ensemble
from cnn_tune.model.recipe import Recipe
from cnn_tune.model.space import Hyperparams
from cnn_tune.model.training import Style, Trainer, score, to_inputs

CONFIG = Hyperparams()  # the warm start: the article's configuration
CANDIDATES: dict[str, Recipe] = {
    "article (10 ep, constant lr)": Recipe(epochs=10),
    "20 ep, constant lr": Recipe(epochs=20),
    "20 ep, cosine": Recipe(epochs=20, schedule="cosine"),
    "20 ep, cosine, shift 2": Recipe(epochs=20, schedule="cosine", shift=2),
    "20 ep, constant lr, shift 2": Recipe(epochs=20, shift=2),
    "20 ep, cosine, shift 2, EMA": Recipe(epochs=20, schedule="cosine", shift=2, average="ema"),
    "15 ep, cosine, shift 2": Recipe(epochs=15, schedule="cosine", shift=2),
    "ensemble 3 × (10 ep, cosine, shift 2)": Recipe(epochs=10, schedule="cosine", shift=2, top=3),
    "20 ep, cosine, shift 2, flip": Recipe(epochs=20, schedule="cosine", shift=2, flip=True),
    "20 ep, cosine, flip": Recipe(epochs=20, schedule="cosine", flip=True),
}
RESULTS = Path(__file__).parent / "results" / "retrain_cpu.json"


def busy_seconds() -> float:
    """CPU seconds all processes on the machine have used (user + system), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    return (int(fields[0]) + int(fields[1]) + int(fields[2])) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(
    trainer: Trainer, config: Hyperparams, recipe: Recipe, seed: int, test: tuple[torch.Tensor, torch.Tensor, int]
) -> dict:
    """Train one candidate with one seed; its test accuracy, seconds and what else ran."""
    style = Style(schedule=recipe.schedule_for(config.optimizer), shift=recipe.shift, ema=recipe.ema, flip=recipe.flip)
    busy, own, started = busy_seconds(), own_seconds(), time.perf_counter()
    members = []
    for k in range(recipe.top):
        model = None
        for _, trained in trainer.fit_model(config, recipe.epochs, seed * 100 + k, style):
            model = trained
        members.append(model)
    seconds = time.perf_counter() - started
    scores = score(Ensemble(members), *test)
    others = (busy_seconds() - busy) - (own_seconds() - own)
    record = {
        "seed": seed,
        "seconds": round(seconds, 1),
        "test": scores.accuracy,
        "test_loss": round(scores.loss, 5),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if others > 0.2 * seconds:
        record["disturbed"] = f"other processes used {others:.0f} CPU-s during {seconds:.0f} s"
    return record


def table(result: dict) -> str:
    """Markdown: per candidate, test accuracy (median, lowest) and minutes. Accuracy counts every
    run (what another process does to the clock does not change what is learned); time only
    the runs on an otherwise idle machine, "—" where there were none."""
    lines = [
        "| retrain recipe | seeds | median test accuracy | lowest | highest | median time | vs article |",
        "|---|---|---|---|---|---|---|",
    ]
    base = None
    for name, runs in result["candidates"].items():
        if not runs:
            continue
        idle = [r["seconds"] for r in runs if "disturbed" not in r]
        seconds = median(idle) if idle else None
        base = base or seconds
        tests = [r["test"] for r in runs]
        shared = len(runs) - len(idle)
        seeds = ", ".join(str(r["seed"]) for r in runs) + (f" ({shared} timed on a shared machine)" if shared else "")
        timing = (
            f"{seconds:.0f} s | {seconds / base:.1f}x"
            if seconds is not None and base
            else f"{seconds:.0f} s | —"
            if seconds is not None
            else "— | —"
        )
        lines.append(
            f"| {name} | {seeds} | {100 * median(tests):.2f}% | {100 * min(tests):.2f}% "
            f"| {100 * max(tests):.2f}% | {timing} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--candidates", nargs="+", choices=list(CANDIDATES), default=list(CANDIDATES))
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="mnist")
    parser.add_argument(
        "--params",
        type=json.loads,
        default={},
        help="JSON: hyperparameters that differ from the warm start's, e.g. a study's winner",
    )
    results_options(parser, RESULTS)
    args = parser.parse_args()
    if printed_table(args, table):
        return
    config = Hyperparams.from_params({**asdict(CONFIG), **args.params})
    device = torch.device("cpu")
    precision = resolve_precision(args.precision, device.type)
    data = load_builtin(args.dataset, None, lambda message: None)
    trainer = Trainer.all_training_images(data, device, precision)
    test = (to_inputs(data.test_images, device), data.test_labels.long(), data.n_classes)
    result = json.loads(args.json.read_text()) if args.json.exists() else {"candidates": {}}
    if result["candidates"] and (
        result.get("machine", {}).get("config") != asdict(config) or result.get("dataset", "mnist") != args.dataset
    ):
        parser.error(f"{args.json} holds runs of another configuration or data set; name a new file with --json")
    result["dataset"] = args.dataset
    result["machine"] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "precision": precision,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "config": asdict(config),
    }
    for i, seed in enumerate(args.seeds):
        names = args.candidates[i % len(args.candidates) :] + args.candidates[: i % len(args.candidates)]
        for name in names:
            record = run(trainer, config, CANDIDATES[name], seed, test)
            result["candidates"].setdefault(name, []).append(record)
            args.json.write_text(json.dumps(result, indent=1) + "\n")  # after every run: a crash loses one
            print(
                f"seed {seed} {name}: {100 * record['test']:.2f}% in {record['seconds']:.0f} s"
                f"{' (' + record['disturbed'] + ')' if 'disturbed' in record else ''}",
                flush=True,
            )
    print(table(result))


if __name__ == "__main__":
    main()
