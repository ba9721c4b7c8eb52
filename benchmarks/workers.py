"""Workers and storage: how trials per minute scale with `--workers`, and what the database
itself costs. Run by hand (not part of the tests); prints a table, writes JSON.

    .venv/bin/python benchmarks/workers.py --json benchmarks/results/workers_cpu.json

A. The seed protocol on a training subset (`--train-limit`, `--epochs`), `cnn-tune optimize
   --workers W` for each W, same seed, fresh SQLite file each: wall time, trials/min, best.
B. Pure storage overhead: a trivial objective (no training), 8 processes on one study,
   trials/s on SQLite (WAL, as cnn-tune opens it) and on PostgreSQL when a server answers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path


def scaling(workers: list[int], trials: int, train_limit: int, epochs: int, data_dir: str | None) -> list[dict]:
    rows = []
    for w in workers:
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            cmd = [
                sys.executable,
                "-m",
                "cnn_tune",
                "optimize",
                "--trials",
                str(trials),
                "--workers",
                str(w),
                "--train-limit",
                str(train_limit),
                "--epochs",
                str(epochs),
                "--pruner",
                "none",
                "--seed",
                "0",
                "--device",
                "cpu",
                "--storage",
                url,
            ]
            env = {**os.environ, **({"CNN_TUNE_DATA_DIR": data_dir} if data_dir else {})}
            start = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds = time.perf_counter() - start
            import optuna

            study = optuna.load_study(study_name="mnist-cnn", storage=url)
            done = [t for t in study.trials if t.state.name == "COMPLETE"]
            rows.append(
                {
                    "workers": w,
                    "trials": len(study.trials),
                    "complete": len(done),
                    "seconds": seconds,
                    "trials_per_min": 60 * len(study.trials) / seconds,
                    "best_val_accuracy": max(t.value for t in done) if done else None,
                }
            )
            print(
                f"  workers {w}: {len(study.trials)} trials in {seconds:6.1f}s = "
                f"{rows[-1]['trials_per_min']:.2f} trials/min, best {100 * rows[-1]['best_val_accuracy']:.2f}%",
                flush=True,
            )
    return rows


def _trivial_worker(url: str, name: str, n: int, barrier) -> None:
    import optuna

    from cnn_tune.storage.engine import open_storage
    from cnn_tune.storage.faults import quiet_optuna
    from cnn_tune.storage.heartbeat import Heartbeat

    quiet_optuna(False)
    storage = open_storage(url, Heartbeat(), write=True)
    study = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler())
    barrier.wait()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)


def storage_overhead(url: str, processes: int, per_process: int) -> dict:
    import optuna

    from cnn_tune.storage.engine import open_storage
    from cnn_tune.storage.faults import quiet_optuna

    quiet_optuna(False)
    name = f"bench-{uuid.uuid4().hex[:6]}"
    optuna.create_study(study_name=name, storage=open_storage(url, write=True))
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    procs = [ctx.Process(target=_trivial_worker, args=(url, name, per_process, barrier)) for _ in range(processes)]
    for p in procs:
        p.start()
    barrier.wait()  # time the trials, not the imports
    start = time.perf_counter()
    for p in procs:
        p.join()
    seconds = time.perf_counter() - start
    trials = optuna.load_study(study_name=name, storage=url).trials
    optuna.delete_study(study_name=name, storage=url)  # leave the server's database as it was
    numbers = sorted(t.number for t in trials)
    return {
        "storage": url.split(":")[0],
        "processes": processes,
        "trials": len(trials),
        "seconds": seconds,
        "trials_per_s": len(trials) / seconds,
        "numbers_exact": numbers == list(range(processes * per_process)),
        "failed_processes": sum(p.exitcode != 0 for p in procs),
    }


@contextmanager
def scratch_database(url: str):
    """SQLite: the URL as is (a temporary file). A server: a new database, dropped after."""
    if url.startswith("sqlite"):
        yield url
        return
    import psycopg

    name = f"cnn_tune_bench_{uuid.uuid4().hex[:8]}"
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(f"{plain}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{url}/{name}"
    finally:
        with psycopg.connect(f"{plain}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--train-limit", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--storage-processes", type=int, default=8)
    parser.add_argument("--storage-trials", type=int, default=50, help="trivial trials per process")
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432",
        help="server URL without a database: the benchmark creates one and drops it",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    print(
        f"A. --workers scaling: {args.trials} trials, --train-limit {args.train_limit}, {args.epochs} epochs, "
        f"{os.cpu_count()} cores",
        flush=True,
    )
    rows = scaling(args.workers, args.trials, args.train_limit, args.epochs, args.data_dir)
    print(
        f"B. storage overhead: trivial objective, {args.storage_processes} processes × {args.storage_trials} trials",
        flush=True,
    )
    storage_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        targets = [f"sqlite:///{tmp}/overhead.db", args.postgres]
        for url in targets:
            try:
                with scratch_database(url) as scratch:
                    row = storage_overhead(scratch, args.storage_processes, args.storage_trials)
            except Exception as exc:  # noqa: BLE001 - e.g. no PostgreSQL server here
                print(f"  {url.split(':')[0]}: skipped ({type(exc).__name__}: {str(exc).splitlines()[0][:100]})")
                continue
            storage_rows.append(row)
            print(
                f"  {row['storage']:<20} {row['trials']} trials in {row['seconds']:.1f}s = "
                f"{row['trials_per_s']:.1f} trials/s, numbers exact: {row['numbers_exact']}, "
                f"failed processes: {row['failed_processes']}",
                flush=True,
            )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "date": time.strftime("%Y-%m-%d"),
                    "machine": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(),
                    "scaling": rows,
                    "storage": storage_rows,
                    "settings": {k: v for k, v in vars(args).items() if k != "json"},
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
