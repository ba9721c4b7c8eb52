"""Speed, side by side in one run: the seed article's loop vs cnn-tune, per epoch, against the
compute floor, and over a whole study. Run by hand (not part of the tests):

    .venv/bin/python benchmarks/speed.py --epochs 3 --json benchmarks/results/speed_cpu.json  # all three
    .venv/bin/python benchmarks/speed.py --quick --json /tmp/speed.json                      # faster

a. Per epoch (train + validation), one fixed configuration (Adam, lr 1e-3, batch 128,
   fc2_input_dim 128, dropout 0.2/0.1), same seed and images: the seed-style loop
   (torchvision Dataset + ToTensor + DataLoader, fp32, NCHW), cnn-tune's trainer in fp32, and
   cnn-tune's trainer at its automatic precision. All variants (b's floor too) alternate epoch
   by epoch, so machine noise hits all alike; validation accuracy of each is reported.
b. The compute floor: forward + backward + optimizer step on batches made in advance, already
   in the trainer's layout and precision, plus the validation forward passes — what an epoch
   costs with no data handling at all. Overhead = trainer epoch / floor − 1, warm epochs.
c. A whole study: the seed protocol (20 trials, TPE seeded, median pruner) with a seed-style
   objective (a fresh random 80/20 split and DataLoaders per trial, as in the article) vs
   `cnn-tune optimize` with the same seed, run as a user runs it (the whole command), with its
   defaults and with `--workers <cores>`: wall time of each and best validation accuracy.
   `--quick`: 6,000 training images and 5 epochs per trial instead of all images and 10.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import optuna
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset, random_split
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epoch_time import CONFIG, SeedLoop, cpu_model, seed_optimizer  # noqa: E402 - the seed loop lives there

from cnn_tune.data.images import make_split
from cnn_tune.data.load import default_data_dir, load_mnist
from cnn_tune.model.device import resolve_precision
from cnn_tune.model.network import build_model, build_optimizer
from cnn_tune.model.space import suggest
from cnn_tune.model.training import Trainer, autocast, eval_batch, to_inputs

FLOOR = "compute floor"


def per_epoch(data, split, root: Path, epochs: int, seed: int, precision: str) -> list[dict]:
    """Parts a and b: every variant trains one epoch in turn, so machine noise hits all alike."""
    seed_loop = SeedLoop(root, split, seed)
    variants = {"cnn-tune fp32": Trainer(data, split, torch.device("cpu"), "fp32").fit(CONFIG, epochs, seed)}
    if precision != "fp32":
        trainer = Trainer(data, split, torch.device("cpu"), precision)
        variants[f"cnn-tune {precision}"] = trainer.fit(CONFIG, epochs, seed)
    variants[FLOOR] = floor_epochs(data, split, precision, seed)
    rows = []
    for epoch in range(1, epochs + 1):
        row = {"epoch": epoch}
        start = time.perf_counter()
        row["seed loop"] = {"s": None, "val_acc": seed_loop.epoch()}
        row["seed loop"]["s"] = time.perf_counter() - start
        for name, fit in variants.items():
            start = time.perf_counter()
            result = next(fit)
            row[name] = {"s": time.perf_counter() - start, "val_acc": result.val_accuracy if result else None}
        rows.append(row)
        print(
            f"  epoch {epoch}: "
            + "  |  ".join(
                f"{k} {v['s']:5.1f}s" + (f" val {100 * v['val_acc']:.2f}%" if v["val_acc"] is not None else "")
                for k, v in row.items()
                if k != "epoch"
            ),
            flush=True,
        )
    return rows


def floor_epochs(data, split, precision: str, seed: int):
    """The compute floor, one epoch per next(): forward + backward + optimizer step on batches
    made in advance (already channels_last, no gather, no shuffling), plus the validation
    forward passes — an epoch's arithmetic with no data handling at all."""
    device = torch.device("cpu")
    x = to_inputs(data.train_images[split.train], device)
    y = data.train_labels[split.train].long()
    vx = to_inputs(data.train_images[split.val], device)
    batches = [
        (x[i : i + CONFIG.batch_size].contiguous(memory_format=torch.channels_last), y[i : i + CONFIG.batch_size])
        for i in range(0, len(y), CONFIG.batch_size)
    ]
    torch.manual_seed(seed)
    model = build_model(CONFIG).to(memory_format=torch.channels_last)
    optimizer = build_optimizer(CONFIG, model)
    size = eval_batch(device)
    while True:
        model.train()
        for xb, yb in batches:
            with autocast(device, precision):
                loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.inference_mode():
            for i in range(0, len(vx), size):
                with autocast(device, precision):
                    model(vx[i : i + size])
        yield None


class SeedObjective:
    """The article's objective: a fresh random 80/20 split and DataLoaders per trial, fp32, NCHW."""

    def __init__(self, root: Path, limit: int | None, epochs: int, seed: int, dataset: str = "mnist") -> None:
        kind = datasets.FashionMNIST if dataset == "fashion-mnist" else datasets.MNIST
        full = kind(str(root), train=True, download=False, transform=transforms.ToTensor())
        # the same images cnn-tune's --train-limit takes (its split's seeded subset), re-split per trial
        split = make_split(len(full), limit, 0)
        self.data = Subset(full, split.train.tolist() + split.val.tolist()) if limit else full
        self.epochs = epochs
        self.seed = seed

    def __call__(self, trial: optuna.Trial) -> float:
        hp = suggest(trial)
        n_val = len(self.data) // 5
        train, val = random_split(
            self.data,
            [len(self.data) - n_val, n_val],
            generator=torch.Generator().manual_seed(self.seed + trial.number),
        )
        train_loader = DataLoader(train, batch_size=hp.batch_size, shuffle=True)
        val_loader = DataLoader(val, batch_size=hp.batch_size)
        torch.manual_seed(self.seed + trial.number)
        model = build_model(hp)
        optimizer = seed_optimizer(hp, model)
        accuracy = 0.0
        for epoch in range(1, self.epochs + 1):
            model.train()
            for x, y in train_loader:
                optimizer.zero_grad()
                F.cross_entropy(model(x), y).backward()
                optimizer.step()
            model.eval()
            correct = 0
            with torch.no_grad():
                for x, y in val_loader:
                    correct += (model(x).argmax(1) == y).sum().item()
            accuracy = correct / n_val
            trial.report(accuracy, epoch)
            if epoch < self.epochs and trial.should_prune():
                raise optuna.TrialPruned()
        return accuracy


TARGET = 0.989  # the article's best validation accuracy


def seconds_to_target(trials: list[optuna.trial.FrozenTrial], began: datetime, target: float = TARGET) -> float | None:
    """From ``began`` until a trial first finished at or above ``target`` (None: never)."""
    reached = [
        (t.datetime_complete - began).total_seconds()
        for t in trials
        if t.state.name == "COMPLETE" and t.value >= target
    ]
    return min(reached) if reached else None


def epochs_trained(trials: list[optuna.trial.FrozenTrial]) -> int:
    """Epochs the study trained in all (one reported value per epoch): with the wall time, it
    separates training speed from how much the pruner cut."""
    return sum(len(t.intermediate_values) for t in trials)


def reached(seconds: float | None) -> str:
    return f"{100 * TARGET:.1f}% after {seconds:.0f}s" if seconds is not None else f"{100 * TARGET:.1f}% never"


def whole_study(root: Path, limit: int | None, epochs: int, trials: int, seed: int, workers: int) -> dict:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    began = datetime.now()  # Optuna stores naive local times
    start = time.perf_counter()
    seed_study = optuna.create_study(
        direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed), pruner=optuna.pruners.MedianPruner()
    )
    seed_study.optimize(SeedObjective(root, limit, epochs, seed), n_trials=trials)
    seed_s = time.perf_counter() - start
    result = {
        "trials": trials,
        "epochs": epochs,
        "train_limit": limit,
        "seed_style_s": seed_s,
        "seed_style_best": seed_study.best_value,
        "seed_style_pruned": sum(t.state.name == "PRUNED" for t in seed_study.trials),
        "seed_style_epochs": epochs_trained(seed_study.trials),
        "seed_style_s_to_target": seconds_to_target(seed_study.trials, began),
        "target": TARGET,
        "cnn_tune": [],
    }
    print(
        f"  seed-style objective   {trials} trials ({result['seed_style_epochs']} epochs) in {seed_s:.1f}s, "
        f"best {100 * seed_study.best_value:.2f}%, "
        f"{reached(result['seed_style_s_to_target'])}",
        flush=True,
    )
    # cnn-tune as a user runs it: the whole command (start-up and data loading included), once
    # with its defaults and once with one worker per core (--workers) where there are several.
    for extra in ([], ["--workers", str(workers)]) if workers > 1 else ([],):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/speed.db"
            cmd = [
                sys.executable,
                "-m",
                "cnn_tune",
                "optimize",
                "--trials",
                str(trials),
                "--seed",
                str(seed),
                "--epochs",
                str(epochs),
                "--storage",
                url,
                "--data-dir",
                str(root),
                *(["--train-limit", str(limit)] if limit else []),
                *extra,
            ]
            began = datetime.now()
            start = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ours_s = time.perf_counter() - start
            ours = optuna.load_study(study_name="mnist-cnn", storage=url)
            run = {
                "command": " ".join(["cnn-tune optimize", *extra]),
                "s": ours_s,
                "best": ours.best_value,
                "pruned": sum(t.state.name == "PRUNED" for t in ours.trials),
                "epochs": epochs_trained(ours.trials),
                "precision": ours.trials[0].user_attrs.get("precision"),
                "ratio": seed_s / ours_s,
                "s_to_target": seconds_to_target(ours.trials, began),
            }
        result["cnn_tune"].append(run)
        print(
            f"  {run['command']:<22} {trials} trials ({run['epochs']} epochs) in {ours_s:.1f}s, "
            f"best {100 * run['best']:.2f}% "
            f"({run['precision']}), {reached(run['s_to_target'])}: {run['ratio']:.2f}x less wall time",
            flush=True,
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs for part a")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="part c on 6,000 images and 5 epochs")
    parser.add_argument("--skip-study", action="store_true", help="parts a and b only")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    root = default_data_dir()
    data = load_mnist(root, print)
    split = make_split(len(data.train_labels), None, 0)
    precision = resolve_precision("auto", "cpu")
    print(f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, auto precision: {precision}")

    print(f"a. per epoch, {len(split.train)} train / {len(split.val)} validation images")
    rows = per_epoch(data, split, root, args.epochs, args.seed, precision)
    names = [k for k in rows[0] if k != "epoch"]
    mean = {n: sum(r[n]["s"] for r in rows) / len(rows) for n in names}
    for n in names[1:-1]:
        print(
            f"  {n}: {mean['seed loop'] / mean[n]:.2f}x faster than the seed loop "
            f"({mean[n]:.1f} vs {mean['seed loop']:.1f} s/epoch)"
        )
    # b: warm epochs only where there are some (every loop's first epoch pays oneDNN's one-time
    # kernel creation), the floor taken from the same alternation as the trainer it bounds
    warm = rows[1:] or rows
    ours = sum(r[f"cnn-tune {precision}"]["s"] for r in warm) / len(warm)
    floor = sum(r[FLOOR]["s"] for r in warm) / len(warm)
    print(
        f"b. compute floor {floor:.1f}s vs trainer {ours:.1f}s per epoch ({precision}, mean of epochs "
        f"{warm[0]['epoch']}–{warm[-1]['epoch']}): overhead {100 * (ours / floor - 1):.1f}%"
    )

    study = None
    if not args.skip_study:
        limit, epochs = (6000, 5) if args.quick else (None, 10)
        print(f"c. whole study: 20 trials, {epochs} epochs, {limit or 'all'} training images")
        study = whole_study(root, limit, epochs, 20, args.seed, os.cpu_count() or 1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%d"),
                    "machine": cpu_model(),
                    "cores": os.cpu_count(),
                    "torch": str(torch.__version__),
                    "auto_precision": precision,
                    "config": CONFIG.as_dict(),
                    "per_epoch": rows,
                    "mean_s_per_epoch": mean,
                    "floor_s": floor,
                    "overhead": ours / floor - 1,
                    "study": study,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
