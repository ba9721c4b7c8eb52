"""How long reading a large study takes: `cnn-tune trials` vs Optuna's `trials_dataframe()`.
Run by hand; builds a study of N trials through Optuna's API first (slow: one commit each).

    .venv/bin/python benchmarks/read_trials.py --trials 2000 --json benchmarks/results/read_trials.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import api_study  # noqa: E402 - the tests' study builder: cnn-tune's params, mixed states


def timed(fn, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/big.db"
        start = time.perf_counter()
        api_study(url, n=args.trials)
        print(f"built {args.trials} trials in {time.perf_counter() - start:.1f}s", flush=True)
        cli = [sys.executable, "-m", "cnn_tune", "trials", "--storage", url]

        def command(*extra: str):
            return lambda: subprocess.run(cli + list(extra), check=True, capture_output=True)

        results = {
            "cnn-tune trials (table, whole command)": timed(command(), args.repeats),
            "cnn-tune trials -f csv (whole command)": timed(command("-f", "csv"), args.repeats),
            "cnn-tune trials -f json (whole command)": timed(command("-f", "json"), args.repeats),
            "python: load_study + trials_dataframe() (whole process)": timed(
                lambda: subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        "import optuna; optuna.load_study(study_name='mnist-cnn', "
                        f"storage='{url}').trials_dataframe().to_csv()",
                    ],
                    check=True,
                    capture_output=True,
                ),
                args.repeats,
            ),
            "python: bare interpreter + import optuna (floor)": timed(
                lambda: subprocess.run([sys.executable, "-c", "import optuna"], check=True, capture_output=True),
                args.repeats,
            ),
        }
    for name, seconds in results.items():
        print(f"  {seconds:6.2f}s  {name}")
    if args.json:
        args.json.write_text(
            json.dumps({"date": time.strftime("%Y-%m-%d"), "trials": args.trials, "median_seconds": results}, indent=2)
            + "\n"
        )


if __name__ == "__main__":
    main()
