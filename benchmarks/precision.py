"""bf16 autocast against fp32, paired: does the precision the search trains in change what it finds?

Not part of the test suite; run by hand on an otherwise idle machine with AVX512-BF16 or AMX:

    .venv/bin/python benchmarks/precision.py --storage sqlite:///path/to/a-study.db --seeds 0 1 2
    .venv/bin/python benchmarks/precision.py --table

Configurations: the warm start (the article's) and the top complete trials of a real study
(``--top``, by validation accuracy). Each configuration × seed is trained twice on the study's
own split (48,000 train / 12,000 validation, its epochs) — once in fp32, once with bf16
autocast, same seed, alternating which goes first — and both are scored on the validation set
(as the search scores) and on the 10,000 test images in fp32. The table gives the paired
differences (bf16 − fp32) per configuration and over all pairs, with a 95% interval
(Student's t).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import optuna
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epoch_time import cpu_model  # noqa: E402
from retrain import busy_seconds, own_seconds  # noqa: E402
from tables import printed_table, results_options  # noqa: E402

from cnn_tune.data.images import make_split
from cnn_tune.data.load import load_mnist
from cnn_tune.model.space import Hyperparams
from cnn_tune.model.training import Trainer, score, to_inputs
from cnn_tune.storage.protocol import SPLIT_SEED

RESULTS = Path(__file__).parent / "results" / "precision_cpu.json"
EPOCHS = 10  # the article's protocol


def configurations(storage: str | None, top: int) -> list[dict]:
    """The warm start, then the study's ``top`` best complete trials (distinct parameters)."""
    found = [{"name": "warm start", "params": Hyperparams().as_dict()}]
    if storage is None:
        return found
    study = optuna.load_study(study_name="mnist-cnn", storage=storage)
    complete = sorted((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: -t.value)
    for t in complete:
        if len(found) > top:
            break
        if all(t.params != f["params"] for f in found):
            found.append({"name": f"trial {t.number}", "params": t.params})
    return found


def train(trainer: Trainer, hp: Hyperparams, seed: int, test: tuple) -> dict:
    busy, own, started = busy_seconds(), own_seconds(), time.perf_counter()
    *_, (result, model) = trainer.fit_model(hp, EPOCHS, seed)  # the last epoch's result and model
    seconds = time.perf_counter() - started
    others = busy_seconds() - busy - (own_seconds() - own)
    out = {"val": result.val_accuracy, "test": score(model, *test).accuracy, "seconds": round(seconds, 1)}
    if others > 0.2 * seconds:
        out["disturbed"] = f"other processes used {others:.0f} CPU-s during {seconds:.0f} s"
    return out


def interval(diffs: list[float]) -> tuple[float, float, float]:
    """Mean and 95% interval (Student's t) of paired differences."""
    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return mean, float("nan"), float("nan")
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def table(result: dict) -> str:
    """Markdown: paired differences bf16 − fp32 in points, per configuration and over all."""
    pairs = [p for p in result["pairs"] if "disturbed" not in p["fp32"] and "disturbed" not in p["bf16"]]
    lines = [
        "| configuration | seeds | fp32 test (mean) | bf16 − fp32, test (points) | bf16 − fp32, validation (points) |",
        "|---|---|---|---|---|",
    ]
    names = list(dict.fromkeys(p["name"] for p in pairs))

    def cells(group: list[dict]) -> str:
        out = []
        for key in ("test", "val"):
            mean, low, high = interval([100 * (p["bf16"][key] - p["fp32"][key]) for p in group])
            out.append(f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]" if not math.isnan(low) else f"{mean:+.3f}")
        return " | ".join(out)

    for name in [*names, "all"]:
        group = pairs if name == "all" else [p for p in pairs if p["name"] == name]
        fp32 = 100 * sum(p["fp32"]["test"] for p in group) / len(group)
        label = f"**all {len(names)} configurations**" if name == "all" else name
        lines.append(f"| {label} | {len(group)} | {fp32:.2f}% | {cells(group)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", help="a study whose top trials join the warm start")
    parser.add_argument("--top", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    results_options(parser, RESULTS)
    args = parser.parse_args()
    if printed_table(args, table):
        return
    data = load_mnist(None, lambda _: None)
    split = make_split(len(data.train_labels), None, SPLIT_SEED)
    device = torch.device("cpu")
    trainers = {p: Trainer(data, split, device, p) for p in ("fp32", "bf16")}
    test = (to_inputs(data.test_images, device), data.test_labels.long())
    result = json.loads(args.json.read_text()) if args.json.exists() else {"pairs": []}
    result["machine"] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "python": platform.python_version(),
    }
    for config in configurations(args.storage, args.top):
        hp = Hyperparams.from_params(config["params"])
        for i, seed in enumerate(args.seeds):
            order = ("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32")
            pair = {
                "name": config["name"],
                "params": config["params"],
                "seed": seed,
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            }
            for precision in order:
                pair[precision] = train(trainers[precision], hp, seed, test)
            result["pairs"].append(pair)
            args.json.write_text(json.dumps(result, indent=1) + "\n")
            print(
                f"{config['name']} seed {seed}: fp32 test {100 * pair['fp32']['test']:.2f}% "
                f"bf16 test {100 * pair['bf16']['test']:.2f}%",
                flush=True,
            )
    print(table(result))


if __name__ == "__main__":
    main()
