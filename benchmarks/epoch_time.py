"""Seconds per epoch: a seed-article-style loop vs cnn-tune's trainer, side by side in one run.

Not part of the test suite; run by hand:

    .venv/bin/python benchmarks/epoch_time.py --epochs 2 --json benchmarks/results/epoch_time.json

The seed loop is the article's shape: torchvision's MNIST Dataset with ToTensor (PIL per
sample), random_split 80/20, DataLoader(shuffle=True), fp32, default memory layout. Both
train the same configuration (Adam, lr 1e-3, batch 128, fc2_input_dim 128, dropout 0.2/0.1)
with the same seed on the same 48k/12k images, and report validation accuracy as well, so a
speed-up is never bought with accuracy. The two alternate epoch by epoch so that machine noise
hits both alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from cnn_tune.data.images import make_split
from cnn_tune.data.load import default_data_dir, load_mnist
from cnn_tune.model.network import OPTIMIZER_CLASSES, build_model
from cnn_tune.model.space import Hyperparams
from cnn_tune.model.training import Trainer

CONFIG = Hyperparams(dropout_rate=0.2, fc2_input_dim=128, dropout_rate2=0.1, optimizer="Adam", lr=1e-3, batch_size=128)


def seed_optimizer(hp: Hyperparams, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The article's optimizer: ``getattr(optim, name)(model.parameters(), lr=lr)`` — torch's
    defaults, not cnn-tune's fused choice (see ``cnn_tune.model.network.build_optimizer``)."""
    return OPTIMIZER_CLASSES[hp.optimizer](model.parameters(), lr=hp.lr)


class SeedLoop:
    """The article's training loop, written here for comparison only."""

    def __init__(self, root: Path, split, seed: int) -> None:
        full = datasets.MNIST(str(root), train=True, download=False, transform=transforms.ToTensor())
        # Same indices as cnn-tune's split, so both see the same images.
        self.train = DataLoader(
            Subset(full, split.train.tolist()),
            batch_size=CONFIG.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )
        self.val = DataLoader(Subset(full, split.val.tolist()), batch_size=CONFIG.batch_size)
        torch.manual_seed(seed)
        self.model = build_model(CONFIG)
        self.optimizer = seed_optimizer(CONFIG, self.model)

    def epoch(self) -> float:
        self.model.train()
        for x, y in self.train:
            self.optimizer.zero_grad()
            loss = F.cross_entropy(self.model(x), y)
            loss.backward()
            self.optimizer.step()
        self.model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in self.val:
                correct += (self.model(x).argmax(1) == y).sum().item()
        return correct / len(self.val.dataset)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_details() -> dict:
    """Which CPU a figure came from: model name, family/model numbers and whether it has
    AVX512-BF16 (the precision the product picks by default depends on it)."""
    fields: dict = {"cpu": cpu_model()}
    try:
        info = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return fields
    for line in info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("cpu family", "model"):
            fields[key.strip().replace(" ", "_")] = value.strip()
        elif key.strip() == "flags":
            fields["avx512_bf16"] = "avx512_bf16" in value.split()
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    root = default_data_dir()
    data = load_mnist(root, print)
    split = make_split(len(data.train_labels), None, 0)
    seed_loop = SeedLoop(root, split, args.seed)
    ours = Trainer(data, split, torch.device("cpu")).fit(CONFIG, args.epochs, args.seed)

    rows = []
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        seed_acc = seed_loop.epoch()
        seed_s = time.perf_counter() - start
        start = time.perf_counter()
        result = next(ours)
        ours_s = time.perf_counter() - start
        rows.append(
            {
                "epoch": epoch,
                "seed_s": seed_s,
                "seed_val_acc": seed_acc,
                "cnn_tune_s": ours_s,
                "cnn_tune_val_acc": result.val_accuracy,
            }
        )
        print(
            f"epoch {epoch}: seed loop {seed_s:6.1f}s  val {100 * seed_acc:.2f}%   |   "
            f"cnn-tune {ours_s:6.1f}s  val {100 * result.val_accuracy:.2f}%   |   ratio {seed_s / ours_s:.2f}x"
        )
    seed_total = sum(r["seed_s"] for r in rows)
    ours_total = sum(r["cnn_tune_s"] for r in rows)
    print(
        f"mean s/epoch: seed loop {seed_total / len(rows):.1f}, cnn-tune {ours_total / len(rows):.1f}, "
        f"speed-up {seed_total / ours_total:.2f}x"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%d"),
                    "machine": cpu_model(),
                    "cpu_threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                    "config": CONFIG.as_dict(),
                    "epochs": rows,
                    "speedup": seed_total / ours_total,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
