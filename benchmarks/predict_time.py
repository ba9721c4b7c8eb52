"""A one-image `cnn-tune predict` from a fresh process: an exported ``.onnx`` (onnxruntime, no
torch) against its ``.pt`` checkpoint, wall time of the whole command.

Not part of the test suite; run by hand on an otherwise idle machine, with a checkpoint and its
export (``cnn-tune export CHECKPOINT``):

    .venv/bin/python benchmarks/predict_time.py studies/mnist-cnn-trial0.pt docs/digits/test0000-label7.png
    .venv/bin/python benchmarks/predict_time.py --table

The two alternate, ``--rounds`` times each, after one unrecorded run of each (the files in the
page cache); the record keeps the CPU and every run's seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epoch_time import cpu_details  # noqa: E402
from tables import printed_table, results_options  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "predict_time_cpu.json"


def seconds(model: Path, image: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "cnn_tune", "predict", str(model), str(image)], capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(done.stderr)
    return time.perf_counter() - started


def table(result: dict) -> str:
    pt, onnx = (result["runs"][kind] for kind in ("pt", "onnx"))
    return "\n".join(
        [
            "| model | runs | median | fastest | slowest |",
            "|---|---|---|---|---|",
            *(
                f"| `.{kind}` | {len(runs)} | {median(runs):.2f} s | {min(runs):.2f} s | {max(runs):.2f} s |"
                for kind, runs in (("pt", pt), ("onnx", onnx))
            ),
            f"| ratio `.pt` / `.onnx` (medians) | | {median(pt) / median(onnx):.1f}x | | |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, nargs="?")
    parser.add_argument("image", type=Path, nargs="?")
    parser.add_argument("--rounds", type=int, default=10)
    results_options(parser, RESULTS)
    args = parser.parse_args()
    if printed_table(args, table):
        return
    models = {"pt": args.checkpoint, "onnx": args.checkpoint.with_suffix(".onnx")}
    for model in models.values():
        seconds(model, args.image)  # unrecorded: caches warm
    runs: dict[str, list[float]] = {"pt": [], "onnx": []}
    for _ in range(args.rounds):
        for kind, model in models.items():
            runs[kind].append(round(seconds(model, args.image), 3))
    result = {"machine": cpu_details(), "runs": runs}
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
