"""Pruning rules replayed on whole learning curves: which trials would each rule have stopped,
what would that have saved, and would the winners have survived?

Input: studies run with ``--pruner none`` (every trial trains every epoch, so its whole curve
of validation accuracy is known), e.g. on Fashion-MNIST:

    cnn-tune optimize --dataset fashion-mnist --trials 20 --seed 300 --pruner none \\
        --storage sqlite:///curves.db
    .venv/bin/python benchmarks/pruner_replay.py sqlite:///curves.db --label "Fashion-MNIST, seed 300"
    .venv/bin/python benchmarks/pruner_replay.py --table     # the Markdown table, from the JSON only

Replay: trials in the order of their numbers; with W workers, trial i sees trials up to
i - W as finished (complete, or pruned where the rule stopped them) and those in between as
running peers. A rule's verdict after each epoch is the real pruner's (cnn_tune.search.samplers),
asked through a study that holds exactly what trial i would have seen. A trial the rule stops
keeps its curve up to there; only a trial it never stops can lead. Reported per rule: epochs
trained, trials stopped, the best final validation accuracy among trials left complete, and
how many of the curves' top-3 final values (the trials a search must not lose) were stopped.
This is a replay, not a rerun: the sampler would have proposed other trials after a different
history, so the figures say how a rule treats these curves, not what a search would find.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tables import printed_table, results_options  # noqa: E402

from cnn_tune.search.samplers import LeaderPruner, NarrowingPruner, hopeless_below, make_pruner
from cnn_tune.storage.protocol import PROTOCOL_ATTR

RULES = ("narrowing", "narrowing-0.4", "leader", "median", "none")
RESULTS = Path(__file__).parent / "results" / "pruner_replay_cpu.json"


class Narrowing04(NarrowingPruner):
    """``narrowing`` as cnn-tune 0.4 had it: its median rule allowed no noise."""

    prune = LeaderPruner.prune


def pruner(rule: str, epochs: int, n_val: int, classes: int) -> optuna.pruners.BasePruner:
    if rule == "narrowing-0.4":
        return Narrowing04(n_val, floor=hopeless_below(classes))
    return make_pruner(rule, epochs, n_val, classes)


def curves(url: str, study: str | None) -> tuple[list[list[float]], int, int, int]:
    """Every complete trial's validation accuracy per epoch, the study's epochs, validation
    images and class count."""
    names = [study] if study else [s.study_name for s in optuna.get_all_study_summaries(url)]
    loaded = optuna.load_study(study_name=names[0], storage=url)
    protocol = loaded.user_attrs[PROTOCOL_ATTR]
    classes = len(protocol.get("classes") or range(10))
    out = [
        [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
        for t in sorted(loaded.trials, key=lambda t: t.number)
        if t.state == TrialState.COMPLETE
    ]
    return out, protocol["epochs"], protocol["n_val"], classes


def _frozen(values: list[float], state: TrialState, number: int) -> optuna.trial.FrozenTrial:
    dist = {"x": FloatDistribution(0, 1)}
    trial = create_trial(
        params={"x": 0.5},
        distributions=dist,
        state=state,
        value=values[-1] if state == TrialState.COMPLETE else None,
        intermediate_values={k + 1: v for k, v in enumerate(values)},
    )
    trial.number = number
    return trial


def replay(rule: str, runs: list[list[float]], epochs: int, n_val: int, classes: int, workers: int) -> dict:
    """Which epoch ``rule`` stops each trial after (None: it runs to the end)."""
    stopped_after: list[int | None] = []
    for i, curve in enumerate(runs):
        stop = None
        for epoch in range(1, epochs):  # the last epoch is never pruned
            study = optuna.create_study(direction="maximize")
            for j in range(i):
                done = j <= i - workers
                seen = runs[j] if done else runs[j][:epoch]  # a peer in flight is at the same epoch
                if stopped_after[j] is not None:
                    seen = seen[: stopped_after[j]]
                # a peer still running is stored as PRUNED (Optuna adds no RUNNING trial): the
                # rules read both alike, as curves that cannot lead
                state = TrialState.COMPLETE if done and stopped_after[j] is None else TrialState.PRUNED
                study.add_trial(_frozen(seen, state, j))
            me = _frozen(curve[:epoch], TrialState.PRUNED, i)
            if pruner(rule, epochs, n_val, classes).prune(study, me):
                stop = epoch
                break
        stopped_after.append(stop)
    finals = [c[-1] for c in runs]
    top3 = sorted(range(len(runs)), key=lambda k: finals[k], reverse=True)[:3]
    kept = [k for k in range(len(runs)) if stopped_after[k] is None]
    return {
        "rule": rule,
        "epochs_trained": sum(s or epochs for s in stopped_after),
        "stopped": sum(s is not None for s in stopped_after),
        "best_final_kept": max(finals[k] for k in kept) if kept else None,
        "top3_stopped": [k for k in top3 if stopped_after[k] is not None],
        "stopped_after": stopped_after,
    }


def table(result: dict) -> str:
    """Markdown, one row per (curves, rule)."""
    lines = [
        "| curves | trials | rule | epochs trained | trials stopped | best final kept | top-3 trials stopped |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['label']} | {row['trials']} | {row['rule']} | {row['epochs_trained']} | {row['stopped']} "
            f"| {100 * row['best_final_kept']:.2f}% | {len(row['top3_stopped'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="*", help="storages of studies run with --pruner none")
    parser.add_argument("--study")
    parser.add_argument("--label", action="append", help="how the table names each storage (default: its file)")
    parser.add_argument("--workers", type=int, default=2)
    results_options(parser, RESULTS)
    args = parser.parse_args()
    if printed_table(args, table):
        return
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rows, kept = [], {}
    for k, url in enumerate(args.urls):
        runs, epochs, n_val, classes = curves(url, args.study)
        label = args.label[k] if args.label and k < len(args.label) else Path(url).name
        kept[label] = {"epochs": epochs, "n_val": n_val, "classes": classes, "curves": runs}  # to replay again
        rows += [
            {"label": label, "trials": len(runs), **replay(rule, runs, epochs, n_val, classes, args.workers)}
            for rule in RULES
        ]
    result = {"workers": args.workers, "rows": rows, "curves": kept}
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
