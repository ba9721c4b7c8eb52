"""What `retrain`, `evaluate`, `predict` and `confirm` show: the model's views, built with the one
formatter (:mod:`cnn_tune.cli.output`) like the study's in :mod:`cnn_tune.cli.views`. Each function
formats what the library returned; none opens storage or prints."""

from __future__ import annotations

from typing import Any

from cnn_tune.cli.output import Table, View, pct
from cnn_tune.cli.views import after, test_text
from cnn_tune.errors import UsageError
from cnn_tune.model.recipe import Recipe
from cnn_tune.model.space import short_text
from cnn_tune.search.records import ConfirmResult  # torch-free: `confirm`'s table stays light

# --- retrain / evaluate / predict ------------------------------------------------------------


def head_line(record: dict[str, Any], what: str, retrained: bool) -> str:
    """What was made, from what, how: ``Retrained trial 10 of study 'mnist-cnn': 20 epochs, … in 144.7s``."""
    recipe = record.get("recipe")
    trained = recipe_text(recipe, record["epochs"]) if recipe else f"{record['epochs']} epochs"  # epochs said once
    searched = bool(recipe and recipe.get("searched"))
    how = trained if searched else f"{trained}, seed {record['seed']}"  # a kept network's seed is its trial's
    if retrained and searched:
        return f"Final model from {what} of study {record['study']!r}: {how}"
    if retrained:
        return f"Retrained {what} of study {record['study']!r}: {how} in {record['train_seconds']:.1f}s"
    return f"Checkpoint of {what} of study {record['study']!r}: {how}"


def evaluation_view(record: dict[str, Any], retrained: bool) -> View:
    members = record.get("members") or [record["trial"]]
    what = f"trial {record['trial']}" if len(members) == 1 else f"an ensemble of trials {', '.join(map(str, members))}"
    lines = [head_line(record, what, retrained)]
    if record["test_accuracy"] is None:
        lines.append("No test set: the data set has no test images, so there is no test accuracy")
    else:
        lines.append(
            f"Test accuracy {test_text(record['test_accuracy'], record['test_ci95'])} (95% interval, "
            f"{record['n_test']} images), test loss {record['test_loss']:.4f} "
            f"(scored in {record['eval_seconds']:.1f}s)"
        )
    if record.get("val_accuracy") is not None:
        lines.append(f"Validation accuracy of the trial: {pct(record['val_accuracy'])}")
    if record.get("since_first_trial_s"):
        lines.append(f"Finished model {after(record['since_first_trial_s'])} after the study's first trial started")
    lines.append(f"Checkpoint: {record['checkpoint']}")
    if record.get("kept_at"):
        lines.append(f"Kept with the study: {record['kept_at']}")
    if record["confusion"] is None:
        return View(lines, record)
    names = record.get("classes") or [str(i) for i in range(len(record["confusion"]))]
    digits = names == [str(i) for i in range(10)]
    # a digit is its own label; another class's row names it once, and its column goes by number
    labels = [str(i) if digits else f"{i} {name}" for i, name in enumerate(names)]
    headers = ["true \\ predicted", *map(str, range(len(names))), "accuracy"]
    rows = [
        [labels[i], *map(str, counts), pct(record["per_class_accuracy"][i])]
        for i, counts in enumerate(record["confusion"])
    ]
    raw = [
        [i if digits else names[i], *counts, record["per_class_accuracy"][i]]
        for i, counts in enumerate(record["confusion"])
    ]
    first = "true_digit" if digits else "true_class"
    matrix = Table(
        headers,
        rows,
        "Confusion matrix (test set)",
        frozenset(range(1, len(names) + 2)),
        instead=confusion_summary(names, record["confusion"], record["per_class_accuracy"]),
    )
    return View([*lines, matrix], record, ([first, *(f"predicted_{d}" for d in range(len(names))), "accuracy"], raw))


MOST_CONFUSED = 5  # pairs listed where the matrix does not fit


def confusion_summary(names: list[str], confusion: list[list[int]], accuracy: list[float | None]) -> list:
    """What a terminal too narrow for the C × C matrix shows instead: each class's accuracy and
    what it is most often taken for, the most confused pairs, and where the whole matrix is."""
    rows, pairs = [], []
    for i, counts in enumerate(confusion):
        wrong = [(n, j) for j, n in enumerate(counts) if j != i and n]
        worst = max(wrong, default=None)
        rows.append([names[i], pct(accuracy[i]), f"{names[worst[1]]} ({worst[0]})" if worst else "—"])
        pairs += [(n, i, j) for n, j in wrong]
    pairs.sort(reverse=True)
    listed = "; ".join(f"{names[i]} taken for {names[j]} {n} times" for n, i, j in pairs[:MOST_CONFUSED])
    return [
        Table(
            ["true class", "accuracy", "most often taken for (times)"],
            rows,
            "Per class (test set)",
            frozenset({1}),
            wrap=frozenset({0, 2}),
        ),
        f"Most confused: {listed or 'none'}.",
        "The whole confusion matrix: --wide, or --format csv.",
    ]


def recipe_text(recipe: dict[str, Any], epochs: int) -> str:
    """What a stored recipe did; a record this version cannot read is shown as it is."""
    try:
        return Recipe(**recipe).text(epochs)
    except (TypeError, UsageError):
        return f"{epochs} epochs, recipe {recipe}"


def predictions_view(records: list[dict[str, Any]]) -> View:
    """``digit`` for a digit model (as always); ``class`` with the class's name for any other."""
    digits = all(r["class"] == str(r["label"]) for r in records)
    column = "digit" if digits else "class"
    rows = [[r["image"], r["class"], pct(r["probability"])] for r in records]
    return View(
        [
            Table(
                ["image", column, "probability"],
                rows,
                right=frozenset({2} if not digits else {1, 2}),
                wrap=frozenset({0, 1}),
            )
        ],
        records,
        (
            ["image", column, "probability"],
            [[r["image"], r["label"] if digits else r["class"], r["probability"]] for r in records],
        ),
    )


# --- confirm ---------------------------------------------------------------------------------


def confirm_view(result: ConfirmResult) -> View:
    headers = ["rank", "trial", "runs", "mean", "sd (points)", "95% interval", "original", "params"]
    rows, data = [], []
    for rank, c in enumerate(result.ranked, 1):
        ci = c.ci95
        rows.append(
            [
                str(rank),
                str(c.trial),
                str(c.n),
                pct(c.mean),
                "—" if c.std is None else f"{100 * c.std:.2f}",
                f"{pct(ci[0])} – {pct(ci[1])}" if ci else "—",
                pct(c.values[0]),
                short_text(c.params),
            ]
        )
        data.append({"rank": rank, "trial": c.trial, **c.as_attr()})
    v = result.verdict
    blocks: list = [
        f"Confirmed {len(result.ranked)} configuration(s) of study {result.study!r}: validation accuracy "
        "over the original run and new seeds, ranked by mean",
        Table(
            headers,
            rows,
            right=frozenset({0, 1, 2, 3, 4, 6}),
            essential=(0, 1, 2, 3, 5),
            optional=(4, 6, 7),
            wrap=frozenset({7}),
        ),
        v.sentence,
    ]
    if result.runs is not None and result.runs.interrupted:
        blocks.append("Interrupted: run the same command again to finish the remaining runs.")
    csv_rows = [[d["rank"], d["trial"], d["n"], d["mean"], d["std"], *(d["ci95"] or [None, None])] for d in data]
    return View(
        blocks,
        {
            "study": result.study,
            "ranked": data,
            "leader": v.leader,
            "runner_up": v.runner_up,
            "test": "Welch's t-test, two-sided",
            "p_value": v.p_value,
            "sentence": v.sentence,
        },
        (["rank", "trial", "runs", "mean", "std", "ci95_low", "ci95_high"], csv_rows),
    )
