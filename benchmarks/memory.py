"""Memory of `optimize --workers N`: peak PSS of the command and its worker processes, summed.

PSS (proportional set size, /proc/PID/smaps_rollup) charges each shared page to the processes
that map it in equal parts, so the sum over the tree is what the command really holds:
torch's libraries and memory-mapped images count once, a private copy in every process
counts every time. Not part of the test suite; run by hand:

    .venv/bin/python benchmarks/memory.py                        # MNIST, 2 workers
    .venv/bin/python benchmarks/memory.py --dataset /path/folder   # a folder of images
    .venv/bin/python benchmarks/memory.py --source /tmp/old-checkout --label before
    .venv/bin/python benchmarks/memory.py --table     # the Markdown table, from the JSON only

``--source`` runs another checkout's cnn_tune (e.g. ``git worktree add /tmp/old cc06517``) on
the same data, for a before/after pair. Results are appended to benchmarks/results/memory_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from epoch_time import cpu_model  # noqa: E402
from tables import printed_table, results_options  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "memory_cpu.json"


def pss_kb(pid: int) -> int:
    """The process's PSS in kB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it (children of children too)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def role(pid: int) -> str:
    """What a process of the tree is, from its command line."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    for word, name in (
        ("forkserver", "fork server"),
        ("resource_tracker", "resource tracker"),
        ("-m cnn_tune", "command"),
    ):
        if word in cmdline:
            return name
    return "worker"


def measure(cmd: list[str], env: dict[str, str], cwd: Path, every_s: float = 0.2) -> dict:
    """Run ``cmd``; sample the PSS of its process tree until it exits. Peak of the sum, and
    each process's own peak (the resource tracker included: it is ours too)."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_sum, peaks, roles, at_peak = 0, {}, {}, {}
    while proc.poll() is None:
        sizes = {p: pss_kb(p) for p in tree(proc.pid)}
        for p in sizes:
            roles.setdefault(p, role(p))
        if sum(sizes.values()) > peak_sum:
            peak_sum, at_peak = sum(sizes.values()), {f"{roles[p]} {p}": round(kb / 1024, 1) for p, kb in sizes.items()}
        for p, kb in sizes.items():
            peaks[p] = max(peaks.get(p, 0), kb)
        time.sleep(every_s)
    stderr = proc.stderr.read() if proc.stderr else ""
    return {
        "exit_code": proc.returncode,
        "peak_pss_sum_mb": round(peak_sum / 1024, 1),
        "peak_pss_each_mb": sorted((round(kb / 1024, 1) for kb in peaks.values()), reverse=True),
        "at_peak_mb": at_peak,  # each process (role and pid) when the sum peaked
        "stderr_tail": stderr.strip().splitlines()[-2:],
    }


def table(result: dict) -> str:
    """Markdown, one row per run, in the order they ran."""
    lines = ["| cnn-tune | data | workers | peak PSS, all processes | each process's peak |", "|---|---|---|---|---|"]
    for r in result["runs"]:
        each = ", ".join(f"{mb:.0f}" for mb in r["peak_pss_each_mb"])
        lines.append(f"| {r['label']} | {r['dataset']} | {r['workers']} | {r['peak_pss_sum_mb']:.0f} MB | {each} MB |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--source", type=Path, help="a checkout whose cnn_tune to run instead of this one")
    parser.add_argument("--label", default="this checkout")
    results_options(parser, RESULTS)
    args = parser.parse_args()
    if printed_table(args, table):
        return
    root = (args.source or Path(__file__).resolve().parent.parent).resolve()  # `-m` imports from the cwd first
    env = {**os.environ, "PYTHONPATH": str(root)}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "cnn_tune",
            "optimize",
            "--trials",
            str(args.trials),
            "--epochs",
            str(args.epochs),
            "--workers",
            str(args.workers),
            "--pruner",
            "none",
            "--seed",
            "0",
            "--device",
            "cpu",
            "--storage",
            f"sqlite:///{tmp}/m.db",
        ]
        if args.dataset != "mnist":  # a checkout from before --dataset knows only MNIST
            cmd += ["--dataset", args.dataset]
        record = {
            "label": args.label,
            "dataset": args.dataset,
            "workers": args.workers,
            "trials": args.trials,
            "epochs": args.epochs,
            "cpu": cpu_model(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **measure(cmd, env, root),
        }
    print(json.dumps(record), flush=True)
    results = json.loads(args.json.read_text()) if args.json.exists() else {"runs": []}
    results["runs"].append(record)
    args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
