"""Which pruner: the seed protocol (20 trials, seeded TPE, 10 epochs, all of MNIST) once per
pruner, same seed, one after another on the same machine. Run by hand; prints a table and
writes JSON.

    .venv/bin/python benchmarks/pruners.py --json benchmarks/results/pruners_cpu.json

For each pruner: wall time of the whole study, best validation accuracy, trials pruned,
epochs trained in all, and the time from the study's start until a trial first reached
`--target` (the article's 98.9%).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import seconds_to_target  # noqa: E402 - one definition of "first reached the target"


def run(pruner: str, url: str, args: argparse.Namespace) -> dict:
    study_name = f"pruner-{pruner}"
    cmd = [
        sys.executable,
        "-m",
        "cnn_tune",
        "optimize",
        "--trials",
        str(args.trials),
        "--seed",
        str(args.seed),
        "--pruner",
        pruner,
        "--storage",
        url,
        "--study",
        study_name,
        "--device",
        args.device,
        *(["--train-limit", str(args.train_limit)] if args.train_limit else []),
        *(["--epochs", str(args.epochs)] if args.epochs else []),
    ]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    trials = optuna.load_study(study_name=study_name, storage=url).trials
    t0 = min(t.datetime_start for t in trials)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    return {
        "pruner": pruner,
        "wall_s": wall,
        "best": max(t.value for t in complete) if complete else None,
        "complete": len(complete),
        "pruned": sum(t.state.name == "PRUNED" for t in trials),
        "epochs_trained": sum(t.user_attrs.get("epochs_run", 0) for t in trials),
        "seconds_to_target": seconds_to_target(trials, t0, args.target),
        "trials_to_target": next(
            (t.number + 1 for t in trials if t.state.name == "COMPLETE" and t.value >= args.target), None
        ),
        "precision": trials[0].user_attrs.get("precision"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pruners", nargs="+", default=["median", "halving", "hyperband"])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target", type=float, default=0.989)
    parser.add_argument("--train-limit", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/pruners.db"
        for pruner in args.pruners:
            row = run(pruner, url, args)
            rows.append(row)
            to = (
                f"{row['seconds_to_target']:.0f}s (trial {row['trials_to_target']})"
                if row["seconds_to_target"]
                else "never"
            )
            print(
                f"{pruner:<10} wall {row['wall_s']:7.1f}s  best {100 * row['best']:.2f}%  pruned {row['pruned']:>2}  "
                f"epochs {row['epochs_trained']:>3}  to {100 * args.target:.1f}%: {to}",
                flush=True,
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%d"),
                    "cores": os.cpu_count(),
                    "settings": {k: v for k, v in vars(args).items() if k != "json"},
                    "rows": rows,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
