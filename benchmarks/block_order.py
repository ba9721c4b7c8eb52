"""Training throughput of one conv block order against the other: conv → batch norm → ReLU → max
pool (the usual order) or conv → max pool → batch norm → ReLU (the wide space's, WideNet): ReLU
commutes with max pooling, and the norm and ReLU then run on a quarter of the values.

Not part of the test suite; run by hand on an otherwise idle machine:

    .venv/bin/python benchmarks/block_order.py --json benchmarks/results/block_order_cpu.json
    .venv/bin/python benchmarks/block_order.py --table

Each order trains the same 32/64/128-channel network (bf16 autocast where the CPU has it,
channels_last, batch 128, AdamW) on random images for a warm-up and then ``--images`` images,
alternating the orders ``--rounds`` times so that drift of a shared machine hits both alike; one
thread and two. The record keeps the CPU (``cpu_details``) and images per second of every round.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from statistics import median

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epoch_time import cpu_details  # noqa: E402
from tables import printed_table, results_options  # noqa: E402

from cnn_tune.model.device import resolve_precision  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "block_order_cpu.json"
ORDERS = ("conv-norm-relu-pool", "conv-pool-norm-relu")


def network(order: str, widths: tuple[int, ...] = (32, 64, 128)) -> nn.Module:
    layers: list[nn.Module] = []
    channels, size = 1, 28
    for out in widths:
        conv, pool, norm = nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(out)
        layers += (
            [conv, norm, nn.ReLU(inplace=True), pool]
            if order == ORDERS[0]
            else [conv, pool, norm, nn.ReLU(inplace=True)]
        )
        channels, size = out, size // 2
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * size * size, 128), nn.ReLU(), nn.Linear(128, 10))


def images_per_second(order: str, images: int, precision: str) -> float:
    torch.manual_seed(0)
    model = network(order).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.rand(4096, 1, 28, 28), torch.randint(0, 10, (4096,))

    def run(n: int) -> None:
        for start in range(0, n, 128):
            i = start % 4096
            with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
                loss = F.cross_entropy(model(x[i : i + 128]), y[i : i + 128])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    run(1024)  # warm-up: oneDNN picks its kernels
    started = time.perf_counter()
    run(images)
    return images / (time.perf_counter() - started)


def table(result: dict) -> str:
    lines = ["| threads | order | median images/s | rounds | ratio to the usual order |", "|---|---|---|---|---|"]
    for threads in sorted({r["threads"] for r in result["runs"]}):
        speed = {
            o: median(r["images_per_s"] for r in result["runs"] if r["threads"] == threads and r["order"] == o)
            for o in ORDERS
        }
        rounds = sum(r["threads"] == threads and r["order"] == ORDERS[0] for r in result["runs"])
        for order in ORDERS:
            ratio = speed[order] / speed[ORDERS[0]]
            lines.append(f"| {threads} | {order} | {speed[order]:.0f} | {rounds} | {ratio:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--rounds", type=int, default=3)
    results_options(parser, RESULTS)
    args = parser.parse_args()
    if printed_table(args, table):
        return
    precision = resolve_precision("auto", "cpu")
    result = {"machine": cpu_details(), "precision": precision, "runs": []}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for _ in range(args.rounds):
            for order in ORDERS:
                result["runs"].append(
                    {
                        "threads": threads,
                        "order": order,
                        "images_per_s": round(images_per_second(order, args.images, precision), 1),
                    }
                )
                print(json.dumps(result["runs"][-1]), flush=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
