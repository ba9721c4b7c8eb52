"""The wide search space: what it searches on which data, the network it builds, the training
each trial gets (the same its final model gets), sizes, --max-params, pruning judged in images
seen, small data, and studies and checkpoints written by 0.7.1 working unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pytest
import torch
from conftest import assert_one_line_error, load, quick, write_folder
from optuna.trial import TrialState

from cnn_tune.model.augment import random_erasing
from cnn_tune.model.network import WideNet, build_model, count_params
from cnn_tune.model.recipe import RECIPES
from cnn_tune.model.size import n_params
from cnn_tune.model.space import (
    Hyperparams,
    Style,
    WideHyperparams,
    distributions,
    space_of,
    suggest,
    warm_start,
)
from cnn_tune.search.samplers import WARM_START_ATTR, HalvingPruner, NarrowingPruner
from cnn_tune.storage.protocol import PROTOCOL_ATTR

OLD = Path(__file__).parent / "data" / "v0.7.1"  # written by cnn-tune 0.7.1 (bed572f) on write_mnist()'s data:
# optimize --trials 3 --epochs 2 --seed 7 --patience 0, then retrain --epochs 2 --output v071.pt


# --- the space -------------------------------------------------------------------------------


def test_clothes_may_be_mirrored_digits_may_not():
    assert "flip" not in distributions(WideHyperparams, "mnist")
    assert "flip" in distributions(WideHyperparams, "fashion-mnist") and "flip" in distributions(
        WideHyperparams, "folder"
    )
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    hp = suggest(trial, WideHyperparams, "mnist")
    assert "flip" not in trial.params and hp.flip is False
    assert WideHyperparams.from_params(trial.params) == hp  # rebuilt without the unsearched flip
    assert space_of(trial.params) is WideHyperparams and space_of(Hyperparams().as_dict()) is Hyperparams


def test_warm_starts_suit_the_images():
    assert warm_start("article", "mnist") == Hyperparams().as_dict()
    digits, clothes = warm_start("wide", "mnist"), warm_start("wide", "fashion-mnist")
    assert digits["shift"] == 2 and "flip" not in digits
    assert clothes["flip"] is True and clothes["shift"] == 0
    assert WideHyperparams.from_params(clothes).batch_norm is True


def test_every_network_is_as_large_as_its_record_says():
    for hp in (
        Hyperparams(),
        Hyperparams(fc2_input_dim=32),
        WideHyperparams(),
        WideHyperparams(width=16, blocks=2, batch_norm=False, fc2_input_dim=256),
        WideHyperparams(width=48, blocks=3, fc2_input_dim=64),
    ):
        for classes in (3, 10, 100):
            assert n_params(hp, classes) == count_params(build_model(hp, classes)), (hp, classes)


def test_the_wide_network_pools_before_norm_and_relu():
    net = build_model(WideHyperparams(width=16, blocks=2), 3).eval()
    assert isinstance(net, WideNet)
    kinds = [type(m).__name__ for m in net.features]
    assert kinds == ["Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU"] * 2
    assert net(torch.rand(5, 1, 28, 28)).shape == (5, 3)
    plain = build_model(WideHyperparams(blocks=3, batch_norm=False), 10)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plain.modules())
    assert plain.fc1.in_features == 128 * 3 * 3  # 28 → 14 → 7 → 3


def test_a_wide_trial_trains_as_its_final_model_does():
    hp = WideHyperparams(schedule="warmup", shift=1, flip=True, erasing=0.5, label_smoothing=0.15)
    assert hp.style() == Style(schedule="warmup", shift=1, flip=True, erasing=0.5, label_smoothing=0.15)
    tuned = RECIPES["tuned"].for_member(hp.style(), hp.optimizer, "fashion-mnist")
    assert tuned.style() == hp.style()  # retrain's default for the wide space: exactly the trial's training
    assert RECIPES["tuned"].with_options(flip=False).for_member(hp.style(), "AdamW", "x").style().flip is False
    plain = RECIPES["article"].for_member(hp.style(), hp.optimizer, "fashion-mnist").style()
    assert plain == Style()  # the article's plain training, whatever the trial did
    best = RECIPES["best"].for_member(Hyperparams().style(), "Adam", "mnist").style()
    assert (best.schedule, best.shift) == ("cosine", 2)  # the article space's measured recipe, unchanged
    assert Hyperparams().style() == RECIPES["article"].for_member(Style(), "Adam", "mnist").style()


def test_warmup_rises_to_the_trials_lr_then_decays_to_zero():
    from cnn_tune.model.training import warmup_cosine

    factor = warmup_cosine(100)  # 10 steps of warmup, 90 of cosine
    rising = [factor(step) for step in range(10)]
    assert rising == sorted(rising) and rising[0] == pytest.approx(0.1) and rising[-1] == 1.0
    assert factor(10) == 1.0 and factor(55) == pytest.approx(0.5) and factor(99) < 0.001


def test_random_erasing_blanks_one_rectangle_where_asked():
    x = torch.ones(400, 1, 28, 28)
    none = random_erasing(x, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(none, x)
    out = random_erasing(x, 1.0, torch.Generator().manual_seed(0))
    blank = (out == 0).flatten(1).sum(1).float() / 784  # (B,) fraction erased
    assert (blank >= 0.005).all() and (blank <= 0.40).all()  # 2–33% asked; rounding to whole pixels
    half = random_erasing(x, 0.5, torch.Generator().manual_seed(1))
    hit = (half == 0).flatten(1).any(1).float().mean()
    assert 0.4 < hit < 0.6
    assert torch.equal(half, random_erasing(x, 0.5, torch.Generator().manual_seed(1)))  # seeded
    rows = (out[0, 0] == 0).any(1).nonzero().flatten()
    cols = (out[0, 0] == 0).any(0).nonzero().flatten()
    assert (out[0, 0, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] == 0).all()  # one rectangle


# --- pruning, judged in images seen ------------------------------------------------------------


def _study_with(curves: list[list[float]], warm: int | None = None) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for i, curve in enumerate(curves):
        trial = study.ask()
        if i == warm:
            trial.set_user_attr(WARM_START_ATTR, True)
        for epoch, value in enumerate(curve, 1):
            trial.report(value, epoch)
        study.tell(trial, curve[-1])
    return study


def _running(study: optuna.Study, curve: list[float], warm: bool = False) -> optuna.trial.FrozenTrial:
    trial = study.ask()
    if warm:
        trial.set_user_attr(WARM_START_ATTR, True)
    for epoch, value in enumerate(curve, 1):
        trial.report(value, epoch)
    return study.trials[-1]


def test_a_small_folder_is_judged_by_images_seen_not_epochs():
    # the same hopeless first epoch: after 48,000 images it is judged, after 800 it is not
    for n_train, pruned in ((48_000, True), (800, False)):
        study = _study_with([[0.9, 0.95]])
        trial = _running(study, [0.2])
        assert NarrowingPruner(n_val=200, floor=0.5, n_train=n_train).prune(study, trial) is pruned, n_train


def test_the_warm_start_is_never_pruned_by_the_floor():
    study = optuna.create_study(direction="maximize")
    pruner = NarrowingPruner(n_val=12_000, floor=0.5, n_train=48_000)
    assert pruner.prune(study, _running(study, [0.3], warm=True)) is False
    assert pruner.prune(study, _running(study, [0.3])) is True


def test_halving_keeps_the_top_half_at_each_rung_within_the_noise():
    pruner = HalvingPruner(n_train=48_000, n_val=12_000, epochs=20)
    # rungs at 96,000, 192,000 and 384,000 images: epochs 2, 4 and 8; 768,000 is past the first half
    assert [e for e in range(1, 21) if pruner.rung(e) is not None] == [2, 4, 8]
    assert HalvingPruner(n_train=800, n_val=200, epochs=20).rung(2) is None  # 16,000 images in all: no rung
    leaders = [[0.80, 0.85 + 0.01 * i] + [0.9] * 18 for i in range(6)]  # at epoch 2: 85% … 90%
    study = _study_with(leaders)
    # 7 at the rung: the top 7 // 2 = 3 go on (the third best: 88%), less the noise (1 SE of a
    # difference: ±0.42 points at 88%)
    assert pruner.prune(study, _running(study, [0.8, 0.87])) is True  # a point under the third best
    assert pruner.prune(study, _running(study, [0.8, 0.878])) is False  # 0.2 under: a coin toss, kept
    assert pruner.prune(study, _running(study, [0.8])) is False  # between rungs: nothing judged
    assert pruner.prune(study, _running(study, [0.8, 0.95, 0.5])) is False  # epoch 3: past the rung


# --- the real command ----------------------------------------------------------------------------


def test_small_data_ends_with_complete_trials_and_stops_on_patience(cli, db_url):
    result = cli(*quick("--train-limit", "400", "--trials", "40", "--patience", "4", "--seed", "3"))
    assert result.exit_code == 0, result.output
    study = load(db_url)
    states = [t.state for t in study.trials]
    assert TrialState.COMPLETE in states
    assert "Stopped by --patience 4" in result.stdout
    assert len(study.trials) < 40


def test_max_params_keeps_every_trained_network_under_the_bound(cli, db_url):
    bound = 150_000
    result = cli(*quick("--trials", "6", "--max-params", str(bound), "--seed", "5", "--dataset", "fashion-mnist"))
    assert result.exit_code == 0, result.output
    trials = load(db_url, "fashion-mnist-cnn").trials
    trained = [t for t in trials if t.intermediate_values]
    assert trained and all(t.user_attrs["n_params"] <= bound for t in trained)
    over = [t for t in trials if t.user_attrs["n_params"] > bound]
    assert all(t.state == TrialState.PRUNED and not t.intermediate_values for t in over)
    assert all(t.constraints == {"params": t.user_attrs["n_params"] - bound} for t in trials)


def test_max_params_below_every_network_says_so(cli, db_url):
    result = cli(*quick("--max-params", "1000"))
    assert result.exit_code == 0, result.output
    assert "No warm start: its network has" in result.stderr
    assert "No complete trial: every network was over --max-params" in result.stdout
    assert all(t.state == TrialState.PRUNED for t in load(db_url).trials)


def test_the_search_keeps_its_networks_and_retrain_hands_them_over(cli, db_url, tmp_path):
    from optuna.artifacts import get_all_artifact_meta

    from cnn_tune.model import checkpoint
    from cnn_tune.model.kept import MODEL_ATTR

    assert cli(*quick("--trials", "4", "--seed", "2", "--patience", "0")).exit_code == 0
    rows = json.loads(cli("trials", "--format", "json").stdout)
    assert all(r["n_params"] > 0 and r["inference_us"] > 0 for r in rows if r["state"] == "complete")
    study = load(db_url)
    protocol = study.user_attrs[PROTOCOL_ATTR]
    assert (protocol["space"], protocol["architecture"], protocol["epochs"]) == ("wide", "ConvNet-v3", 2)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    for t in complete:  # each complete trial kept its network, as an artifact of the trial
        assert [m.artifact_id for m in get_all_artifact_meta(t, storage=study._storage)] == [
            t.user_attrs[MODEL_ATTR]["artifact_id"]
        ]

    out = tmp_path / "searched.pt"
    result = cli("retrain", "--output", str(out), "--format", "json")  # the wide space's default: searched
    assert result.exit_code == 0, result.output
    done = json.loads(result.stdout)
    best = sorted(complete, key=lambda t: -t.value)[:3]
    assert done["members"] == [t.number for t in best] and done["recipe"]["searched"] is True
    handed = checkpoint.load(out).model.members
    for trial, net in zip(best, handed):  # the very networks the search trained, not new ones
        store = Path(trial.user_attrs[MODEL_ATTR]["artifact_store"]) / trial.user_attrs[MODEL_ATTR]["artifact_id"]
        kept = checkpoint.load(store).model.members[0]
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), kept.state_dict().values()))
    again = json.loads(cli("evaluate", str(out), "--format", "json").stdout)
    assert again["test_accuracy"] == done["test_accuracy"]  # a v3 checkpoint loads and scores the same
    assert "network size" in cli("best").stdout

    assert_one_line_error(
        cli("retrain", "--recipe", "searched", "--epochs", "3"), 2, "cannot change --recipe searched", "--recipe tuned"
    )
    trains = json.loads(cli("retrain", "--epochs", "1", "--output", str(tmp_path / "e.pt"), "-f", "json").stdout)
    assert trains["epochs"] == 1 and trains["recipe"]["tuned"] is True  # a training option asks for training
    tuned = json.loads(cli("retrain", "--recipe", "tuned", "--output", str(tmp_path / "t.pt"), "-f", "json").stdout)
    hp = WideHyperparams.from_params(study.best_trial.params)
    assert tuned["epochs"] == 2 and tuned["recipe"]["tuned"] is True  # the study's epochs, the trial's own recipe
    assert (tuned["recipe"]["schedule"], tuned["recipe"]["shift"]) == (hp.schedule, hp.shift)


def test_size_plot_marks_the_unbeaten_trials(cli, tmp_path):
    from cnn_tune.cli.plots import unbeaten

    assert unbeaten([(100, 0.9, 0), (200, 0.95, 1), (300, 0.94, 2), (100, 0.85, 3)]) == {0, 1}
    assert cli(*quick("--trials", "3", "--seed", "4")).exit_code == 0
    out = tmp_path / "size.html"
    assert cli("plot", "size", "--output", str(out)).exit_code == 0
    assert "no other trial is smaller and as accurate" in out.read_text()


# --- what 0.7.1 wrote ------------------------------------------------------------------------------


def test_a_study_of_0_7_1_resumes_in_its_own_space(cli, db_url):
    path = Path(db_url[len("sqlite:///") :])
    path.parent.mkdir(parents=True)
    shutil.copy(OLD / "v071.db", path)
    before = load(db_url).user_attrs[PROTOCOL_ATTR]
    assert "space" not in before
    result = cli("optimize", "--trials", "1", "--device", "cpu", "--patience", "0")
    assert result.exit_code == 0, result.output
    study = load(db_url)
    assert study.user_attrs[PROTOCOL_ATTR] == before  # nothing rewritten
    new = study.trials[-1]
    assert set(new.params) == set(Hyperparams().as_dict()) and new.user_attrs["epochs_run"] <= 2
    err = assert_one_line_error(cli("optimize", "--trials", "1", "--space", "wide"), 2, "searches the article space")
    assert "--study NAME" in err


def test_a_checkpoint_of_0_7_1_loads_and_scores_as_before(cli, tmp_path):
    from cnn_tune.model import checkpoint

    old = checkpoint.load(OLD / "v071.pt")
    assert isinstance(old.hyperparams, Hyperparams)
    result = cli("evaluate", str(OLD / "v071.pt"), "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["test_accuracy"] == old.meta["metrics"]["test_accuracy"] == 0.51


def test_a_folder_study_searches_flips(cli, tmp_path, db_url):
    folder = write_folder(tmp_path / "shapes")
    result = cli(*quick("--dataset", str(folder), "--seed", "1"))
    assert result.exit_code == 0, result.output
    assert all("flip" in t.params for t in load(db_url, "shapes-cnn").trials)


def test_the_spaces_name_the_data_sets_as_the_data_does():
    from cnn_tune.data import datasets
    from cnn_tune.model import space

    assert (space.MNIST, space.FASHION, space.FOLDER) == (datasets.MNIST, datasets.FASHION, datasets.FOLDER)


def test_batch_norm_statistics_are_sound_after_a_few_steps(tmp_path):
    """114 images at batch 128: one optimizer step an epoch. Without recomputing batch norm's
    running statistics the warm start scored chance (33%) in evaluation mode at 100% in training mode."""
    from cnn_tune.data.load import load_dataset, parse_dataset
    from cnn_tune.model.training import Trainer, to_inputs

    data = load_dataset(parse_dataset(str(write_folder(tmp_path / "shapes"))), tmp_path / "cache", lambda _: None)
    trainer = Trainer.all_training_images(data, torch.device("cpu"), "fp32")
    hp = WideHyperparams(**warm_start("wide", "folder"))
    model = None
    for _, trained in trainer.fit_model(hp, 20, 0, hp.style()):
        model = trained
    with torch.inference_mode():
        predicted = model.eval()(to_inputs(data.test_images, torch.device("cpu"))).argmax(1)
    assert (predicted == data.test_labels.long()).float().mean() > 0.9
