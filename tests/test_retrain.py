"""`retrain`, `evaluate`, `predict` on a study made in tmp_path from tiny synthetic digits."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from conftest import api_study, assert_one_line_error, synthetic_digits, write_mnist
from helpers import cnn_tune
from PIL import Image
from typer.testing import CliRunner

from cnn_tune.cli.main import app
from cnn_tune.storage.backup import backup
from cnn_tune.storage.protocol import RETRAIN_ATTR_PREFIX

GOOD = {
    "dropout_rate": 0.0,
    "fc2_input_dim": 64,
    "dropout_rate2": 0.0,
    "optimizer": "Adam",
    "lr": 3e-3,
    "batch_size": 64,
}


class Env:
    """The real CLI against one data folder and one study database (module-scoped)."""

    def __init__(self, root: Path, data: Path | None = None) -> None:
        self.root = root
        self.data = data or write_mnist(root / "data", n_train=600, n_test=200)
        self.db = root / "studies" / "s.db"
        self.url = f"sqlite:///{self.db}"
        self.runner = CliRunner()

    def copy(self, root: Path) -> Env:
        """The same data, and a copy of the study database under ``root``: a test that retrains or
        adds trials changes its own copy, never what the other tests read, in any order."""
        other = Env(root, self.data)
        # cnn-tune's own backup, not a file copy: the last writes may still sit in the -wal file
        # (the runner's process keeps the database open), which a copy of s.db alone would lose
        backup(self.url, other.db)
        other.retrained = self.retrained
        return other

    def __call__(self, *args: str, **env: str):
        base = {
            "CNN_TUNE_DATA_DIR": str(self.data),
            "CNN_TUNE_STORAGE": self.url,
            "CNN_TUNE_STUDY": "mnist-cnn",
            "CNN_TUNE_DEBUG": "",
        }
        return self.runner.invoke(app, list(args), env={**base, **env})


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    """A study whose trial 0 is a good configuration (enqueued) and trial 1 is pruned-looking
    junk; trial 0 retrained once into ``best.pt``."""
    e = Env(tmp_path_factory.mktemp("retrain"))
    assert (
        e(
            "optimize",
            "--trials",
            "1",
            "--epochs",
            "3",
            "--device",
            "cpu",
            "--seed",
            "0",
            "--space",
            "article",
            "--no-warm-start",
        ).exit_code
        == 0
    )  # trial 0: a random configuration, not the article's
    study = optuna.load_study(study_name="mnist-cnn", storage=e.url)
    study.enqueue_trial(GOOD)
    assert e("optimize", "--trials", "1", "--device", "cpu", "--seed", "0").exit_code == 0
    result = e(
        "retrain",
        "--trial",
        "1",
        "--recipe",
        "article",
        "--output",
        str(e.root / "best.pt"),
        "--format",
        "json",
        "--device",
        "cpu",
    )
    assert result.exit_code == 0, result.output
    e.retrained = json.loads(result.stdout)
    return e


def test_retrain_reports_and_saves_everything(env):
    r = env.retrained
    assert r["trial"] == 1 and r["epochs"] == 3 and r["n_test"] == 200
    assert r["hyperparams"] == GOOD
    assert r["test_accuracy"] > 0.9  # the synthetic digits are easy; a good config learns them
    assert sum(map(sum, r["confusion"])) == 200
    assert r["test_accuracy"] == sum(r["confusion"][i][i] for i in range(10)) / 200
    seed = optuna.load_study(study_name="mnist-cnn", storage=env.url).trials[1].user_attrs["seed"]
    assert r["seed"] == seed  # the trial's own training seed by default

    assert r["recipe"] == {
        "epochs": None,
        "schedule": "constant",
        "shift": 0,
        "average": "none",
        "top": 1,
        "flip": False,
        "erasing": 0.0,
        "label_smoothing": 0.0,
        "tuned": False,
        "searched": False,
    }
    assert r["members"] == [1] and r["test_ci95"] == pytest.approx(
        1.96 * (r["test_accuracy"] * (1 - r["test_accuracy"]) / 200) ** 0.5
    )
    payload = torch.load(env.root / "best.pt", weights_only=True)
    assert payload["format"] == "cnn-tune-checkpoint" and payload["architecture"] == "ConvNet-v1"
    assert payload["hyperparams"] == GOOD and payload["trial"] == 1 and payload["study"] == "mnist-cnn"
    assert [(m["trial"], m["hyperparams"]) for m in payload["members"]] == [(1, GOOD)]
    assert payload["metrics"]["test_accuracy"] == r["test_accuracy"]
    assert set(payload["data_md5"]) == {
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    }
    assert payload["protocol"]["epochs"] == 3 and payload["versions"]["torch"] == str(torch.__version__)


def test_the_study_remembers_the_retrain(env):
    study = optuna.load_study(study_name="mnist-cnn", storage=env.url)
    record = study.user_attrs[f"{RETRAIN_ATTR_PREFIX}1"]
    assert record["test_accuracy"] == env.retrained["test_accuracy"]
    assert Path(record["checkpoint"]) == (env.root / "best.pt").resolve()
    best = json.loads(env("best", "-f", "json").stdout)
    assert best["number"] == 1  # the enqueued good configuration beats the 3-epoch random trial 0
    assert best["test_accuracy"] == record["test_accuracy"] and best["checkpoint"] == record["checkpoint"]
    rows = {r["number"]: r for r in json.loads(env("trials", "-f", "json").stdout)}
    assert rows[1]["test_accuracy"] == record["test_accuracy"] and rows[1]["checkpoint"] == record["checkpoint"]
    assert rows[0]["test_accuracy"] is None


def test_evaluate_reproduces_the_test_accuracy_exactly(env):
    result = env("evaluate", str(env.root / "best.pt"), "--format", "json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    again = json.loads(result.stdout)
    assert again["test_accuracy"] == env.retrained["test_accuracy"]
    assert again["confusion"] == env.retrained["confusion"]
    assert again["test_loss"] == pytest.approx(env.retrained["test_loss"], rel=1e-9)
    table = env("evaluate", str(env.root / "best.pt"), "--device", "cpu")
    assert f"Test accuracy {100 * env.retrained['test_accuracy']:.2f}%" in table.stdout
    assert "true \\ predicted" in table.stdout and "\x1b[" not in table.stdout


def _weights(path: Path) -> list[torch.Tensor]:
    return [t for m in torch.load(path, weights_only=True)["members"] for t in m["state_dict"].values()]


def test_retrain_is_seeded(env, tmp_path):
    """The same trial retrained again gives the same weights, bit for bit; another seed other ones."""
    mine = env.copy(tmp_path)
    for name, seed in (("again.pt", []), ("other.pt", ["--seed", "12345"])):
        result = mine(
            "retrain",
            "--trial",
            "1",
            "--recipe",
            "article",
            "--output",
            str(tmp_path / name),
            *seed,
            "-f",
            "json",
            "--device",
            "cpu",
        )
        assert result.exit_code == 0, result.output
    first = _weights(env.root / "best.pt")
    assert all(torch.equal(a, b) for a, b in zip(first, _weights(tmp_path / "again.pt")))
    assert not all(torch.equal(a, b) for a, b in zip(first, _weights(tmp_path / "other.pt")))


def test_predict_classifies_test_images(env, tmp_path):
    images, labels = synthetic_digits(12, seed=1)  # the test split's generator (write_mnist seed + 1)
    paths = []
    for i, (img, label) in enumerate(zip(images, labels)):
        Image.fromarray(img).save(tmp_path / f"{i}-{label}.png")
        Image.fromarray(255 - img).convert("RGB").save(tmp_path / f"{i}-{label}-paper.jpg", quality=95)
        paths.append(tmp_path / f"{i}-{label}.png")
    result = env("predict", str(env.root / "best.pt"), *map(str, paths), "--format", "json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert [g["image"] for g in got] == [str(p) for p in paths]
    correct = sum(g["digit"] == int(Path(g["image"]).stem.split("-")[1]) for g in got)
    assert correct >= 10
    for g in got:
        assert abs(sum(g["probabilities"]) - 1) < 1e-4 and g["probability"] == max(g["probabilities"])

    papers = sorted(tmp_path.glob("*-paper.jpg"), key=lambda p: int(p.name.split("-")[0]))
    inverted = json.loads(env("predict", str(env.root / "best.pt"), *map(str, papers), "--invert", "-f", "json").stdout)
    assert sum(g["digit"] == int(Path(g["image"]).name.split("-")[1]) for g in inverted) >= 10

    table = env("predict", str(env.root / "best.pt"), str(paths[0]))
    assert table.exit_code == 0 and str(paths[0]) in table.stdout and "%" in table.stdout


def test_predict_resizes_other_sizes(env, tmp_path):
    img, label = synthetic_digits(1, seed=1)
    Image.fromarray(img[0]).save(tmp_path / "small.png")
    # twice as large, each pixel a 2×2 block: resized back to 28×28 it is the original image again
    Image.fromarray(img[0]).resize((56, 56), Image.Resampling.NEAREST).save(tmp_path / "big.png")
    result = env(
        "predict", str(env.root / "best.pt"), str(tmp_path / "small.png"), str(tmp_path / "big.png"), "-f", "json"
    )
    assert result.exit_code == 0, result.output
    small, big = json.loads(result.stdout)
    assert big["label"] == small["label"] == int(label[0])
    from cnn_tune.data.folder import to_pixels

    # resized, the large image is the small one again but for the filter's blur (mean 8 levels of
    # 255 on this noisy image); its 28×28 centre, cut out instead, differs by 29
    seen = to_pixels(tmp_path / "big.png", False).astype(int)
    assert seen.shape == (28, 28) and abs(seen - img[0].astype(int)).mean() < 15


# --- bad input: one line, non-zero exit, nothing overwritten --------------------------------


def test_no_complete_trials(tmp_path):
    e = Env(tmp_path)
    study = api_study(e.url, n=0)
    trial = study.ask()
    trial.report(0.5, 1)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert_one_line_error(e("retrain"), 2, "no complete trial to retrain", "1 pruned", "cnn-tune optimize")
    assert not list(tmp_path.rglob("*.pt"))


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--trial", "99"], "has no trial 99"),
        (["--trial", "0", "--epochs", "0"], "--epochs"),
        (["--trial", "-1"], "--trial"),
    ],
)
def test_bad_trial_options(env, args, fragment):
    assert_one_line_error(env("retrain", *args), 2, fragment)


def test_trial_that_is_not_complete(env):
    study = optuna.load_study(study_name="mnist-cnn", storage=env.url)
    pruned = [t.number for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    if not pruned:
        trial = study.ask()
        trial.report(0.1, 1)
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        pruned = [trial.number]
    assert_one_line_error(
        env("retrain", "--trial", str(pruned[0])), 2, f"trial {pruned[0]}", "is pruned", "--state complete"
    )
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    assert_one_line_error(env("retrain", "--trial", str(failed.number)), 2, "is fail")
    running = study.ask()  # left RUNNING, as a worker's trial in flight
    assert_one_line_error(env("retrain", "--trial", str(running.number)), 2, "is running")


def test_existing_output_is_not_overwritten(env, tmp_path):
    out = tmp_path / "taken.pt"
    out.write_bytes(b"keep me")
    assert_one_line_error(env("retrain", "--trial", "1", "-o", str(out)), 1, "exists", "--overwrite")
    assert out.read_bytes() == b"keep me"


def test_retrain_refuses_other_data(env, tmp_path):
    other = write_mnist(tmp_path / "other", n_train=600, n_test=200, seed=7)
    result = env("retrain", "--trial", "1", "-o", str(tmp_path / "x.pt"), CNN_TUNE_DATA_DIR=str(other))
    assert_one_line_error(result, 1, "differ from those study 'mnist-cnn' was tuned on")
    assert not (tmp_path / "x.pt").exists()


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _bad_checkpoints(env: Env, folder: Path) -> dict[str, Path]:
    good = (env.root / "best.pt").read_bytes()
    files = {"truncated": good[: len(good) // 2], "text": b"hello, not a checkpoint\n"}
    names = (
        "truncated",
        "text",
        "tensor",
        "arch",
        "shapes",
        "code",
        "empty",
        "no-members",
        "mixed",
        "member",
        "member-shapes",
    )
    out = {name: folder / f"{name}.pt" for name in names}
    for name, data in files.items():
        out[name].write_bytes(data)
    torch.save(torch.zeros(3), out["tensor"])
    payload = torch.load(env.root / "best.pt", weights_only=True)
    member = payload["members"][0]
    torch.save(
        {**payload, "architecture": "ResNet-18", "members": [{**member, "architecture": "ResNet-18"}]}, out["arch"]
    )
    wide = {**member, "hyperparams": {**member["hyperparams"], "fc2_input_dim": 128}}
    torch.save({**payload, "members": [wide]}, out["shapes"])
    torch.save({**payload, "members": [member, {**wide, "state_dict": member["state_dict"]}]}, out["member-shapes"])
    torch.save({**payload, "members": []}, out["empty"])
    torch.save({k: v for k, v in payload.items() if k != "members"}, out["no-members"])
    torch.save({**payload, "members": [member, {**member, "architecture": "ConvNet-v2"}]}, out["mixed"])
    torch.save({**payload, "members": [member, {k: v for k, v in member.items() if k != "state_dict"}]}, out["member"])
    with out["code"].open("wb") as fh:  # a torch.save-shaped zip whose pickle would run a command
        torch.save({"format": "cnn-tune-checkpoint", "evil": _RunsCode(folder / "pwned")}, fh, pickle_module=pickle)
    return out


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("truncated", "damaged or not a checkpoint"),
        ("text", "damaged or not a checkpoint"),
        ("tensor", "not a cnn-tune checkpoint"),
        ("arch", "'ResNet-18' network"),
        ("shapes", "weights do not fit"),
        ("code", "refused to load it"),
        ("empty", "holds no model (its list of members is empty)"),
        ("no-members", "holds no model (its list of members is missing)"),
        ("mixed", "mixes network architectures (ConvNet-v1, ConvNet-v2)"),
        ("member", "member 1: lacks or has malformed fields: state_dict"),
        ("member-shapes", "(member 1): the weights do not fit"),
    ],
)
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_bad_checkpoints_are_refused(env, tmp_path, name, fragment, command):
    path = _bad_checkpoints(env, tmp_path)[name]
    img = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(img)
    args = [command, str(path)] + ([str(img)] if command == "predict" else [])
    assert_one_line_error(env(*args), 1, fragment)
    assert not (tmp_path / "pwned").exists()


def test_missing_checkpoint(env, tmp_path):
    assert_one_line_error(env("evaluate", str(tmp_path / "none.pt")), 1, "no checkpoint at", "cnn-tune retrain")


@pytest.mark.parametrize("content", [b"not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_undecodable_image(env, tmp_path, content):
    bad = tmp_path / "bad.png"
    bad.write_bytes(content)
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(good)
    result = env("predict", str(env.root / "best.pt"), str(good), str(bad))
    assert_one_line_error(result, 1, "cannot decode", "bad.png")
    assert result.stdout == ""  # nothing printed for the good one either: all are read first


def test_missing_image(env, tmp_path):
    assert_one_line_error(env("predict", str(env.root / "best.pt"), str(tmp_path / "none.png")), 1, "no image at")


def test_a_refused_checkpoint_prints_only_our_line(env, tmp_path):
    """In a real process (pytest would swallow warnings in-process): torch's pickle-protocol
    UserWarning must not reach the user before our one line."""
    import subprocess

    path = tmp_path / "protocol4.pt"
    with path.open("wb") as fh:  # pickle protocol 4: torch warns about it before refusing the file
        torch.save(
            {"format": "cnn-tune-checkpoint", "evil": _RunsCode(tmp_path / "pwned")},
            fh,
            pickle_module=pickle,
            pickle_protocol=4,
        )
    r = subprocess.run(
        cnn_tune("evaluate", str(path)),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CNN_TUNE_DEBUG": "", "PYTHONWARNINGS": "default"},
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [ln for ln in r.stderr.strip().splitlines() if ln.startswith("Error:")]
    assert len(r.stderr.strip().splitlines()) == 1 and "not a cnn-tune checkpoint" in r.stderr, r.stderr
    assert not (tmp_path / "pwned").exists()


# --- recipes and ensembles -------------------------------------------------------------------


def test_the_default_recipe_trains_longer_with_cosine_lr_and_shifts(env, tmp_path):
    env = env.copy(tmp_path / "study")
    out = tmp_path / "default.pt"
    result = env("retrain", "--trial", "1", "-o", str(out), "-f", "json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert r["recipe"] == {
        "epochs": 20,
        "schedule": "cosine",
        "shift": 2,
        "average": "none",
        "top": 1,
        "flip": False,
        "erasing": 0.0,
        "label_smoothing": 0.0,
        "tuned": False,
        "searched": False,
    }
    assert r["epochs"] == 20 and r["since_first_trial_s"] > 0
    assert r["test_accuracy"] > 0.9
    table = env("evaluate", str(out), "--device", "cpu")
    assert "20 epochs, cosine lr, shifts ≤2 px" in table.stdout
    assert f"Test accuracy {100 * r['test_accuracy']:.2f}% ± {100 * r['test_ci95']:.2f}" in table.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["--recipe", "article", "--epochs", "2"],
            {"epochs": 2, "schedule": "constant", "shift": 0, "average": "none"},
        ),
        (["--recipe", "article", "--schedule", "cosine"], {"epochs": None, "schedule": "cosine"}),
        (["--recipe", "article", "--shift", "1"], {"shift": 1, "schedule": "constant"}),
        (["--epochs", "2", "--average", "ema"], {"epochs": 2, "average": "ema", "schedule": "cosine", "shift": 2}),
    ],
)
def test_each_option_overrides_one_part_of_the_recipe(env, tmp_path, args, expected):
    env = env.copy(tmp_path / "study")
    out = tmp_path / "x.pt"
    result = env("retrain", "--trial", "1", *args, "-o", str(out), "-f", "json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert {k: r["recipe"][k] for k in expected} == expected
    assert r["epochs"] == (expected.get("epochs") or 3)  # None: the study's 3
    assert torch.load(out, weights_only=True)["recipe"] == r["recipe"]
    again = json.loads(env("evaluate", str(out), "-f", "json", "--device", "cpu").stdout)
    assert again["test_accuracy"] == r["test_accuracy"]  # the EMA's weights are the ones saved


def test_an_ensemble_of_the_top_trials(env, tmp_path):
    env = env.copy(tmp_path / "study")
    study = optuna.load_study(study_name="mnist-cnn", storage=env.url)
    study.enqueue_trial({**GOOD, "lr": 1e-3, "fc2_input_dim": 32})  # a second complete trial
    assert env("optimize", "--trials", "1", "--device", "cpu", "--pruner", "none").exit_code == 0
    out = tmp_path / "top2.pt"
    result = env("retrain", "--top", "2", "--epochs", "2", "-o", str(out), "-f", "json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    study = optuna.load_study(study_name="mnist-cnn", storage=env.url)
    ranked = sorted((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: -t.value)
    assert r["members"] == [t.number for t in ranked[:2]] and r["trial"] == ranked[0].number
    payload = torch.load(out, weights_only=True)
    assert [m["trial"] for m in payload["members"]] == r["members"]
    assert [m["hyperparams"] for m in payload["members"]] == [t.params for t in ranked[:2]]
    again = json.loads(env("evaluate", str(out), "-f", "json", "--device", "cpu").stdout)
    assert again["test_accuracy"] == r["test_accuracy"] and again["members"] == r["members"]
    assert "an ensemble of trials" in env("evaluate", str(out), "--device", "cpu").stdout
    # predict averages the members' probabilities
    from cnn_tune.model import checkpoint
    from cnn_tune.model.training import to_inputs

    images, _ = synthetic_digits(3, seed=1)
    for i, img in enumerate(images):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
    got = json.loads(env("predict", str(out), *(str(tmp_path / f"{i}.png") for i in range(3)), "-f", "json").stdout)
    loaded = checkpoint.load(out)
    x = to_inputs(torch.from_numpy(images), torch.device("cpu"))
    with torch.no_grad():
        mean = torch.stack([m(x).softmax(1) for m in loaded.model.members]).mean(0)
    assert [g["digit"] for g in got] == mean.argmax(1).tolist()
    np.testing.assert_allclose([g["probabilities"] for g in got], mean.numpy(), atol=1e-5)


def test_a_checkpoint_of_format_1_still_loads(env, tmp_path):
    """Checkpoints written before ensembles: one network, its weights at the top."""
    payload = torch.load(env.root / "best.pt", weights_only=True)
    member = payload.pop("members")[0]
    old = {
        **{k: v for k, v in payload.items() if k != "recipe"},
        "format_version": 1,
        "state_dict": member["state_dict"],
    }
    torch.save(old, tmp_path / "old.pt")
    result = env("evaluate", str(tmp_path / "old.pt"), "-f", "json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    r = json.loads(result.stdout)
    assert r["test_accuracy"] == env.retrained["test_accuracy"] and r["members"] == [1] and r["recipe"] is None
    assert env("predict", str(tmp_path / "old.pt"), str(_a_digit(tmp_path))).exit_code == 0


def _a_digit(folder: Path) -> Path:
    img, _ = synthetic_digits(1, seed=1)
    Image.fromarray(img[0]).save(folder / "digit.png")
    return folder / "digit.png"


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (["--shift", "9"], 2, "--shift"),
        (["--top", "0"], 2, "--top"),
        (["--top", "11"], 2, "--top"),
        (["--top", "9"], 2, "--top 9 needs 9 complete trials"),
        (["--top", "2", "--trial", "1"], 2, "--trial and --top K > 1 cannot be combined"),
        (["--schedule", "linear"], 2, "--schedule"),
        (["--average", "swa"], 2, "--average"),
        (["--recipe", "fast"], 2, "--recipe"),
    ],
)
def test_bad_recipe_options(env, tmp_path, args, code, fragment):
    assert_one_line_error(env("retrain", *args, "-o", str(tmp_path / "x.pt")), code, fragment)
    assert not (tmp_path / "x.pt").exists()


def test_recipe_values_are_checked_in_the_library():
    from cnn_tune.errors import UsageError
    from cnn_tune.model.recipe import Recipe

    for bad in (
        {"epochs": 0},
        {"epochs": 1, "shift": -1},
        {"epochs": 1, "schedule": "step"},
        {"epochs": 1, "average": "swa"},
        {"epochs": 1, "top": 0},
    ):
        with pytest.raises(UsageError):
            Recipe(**bad)


def test_the_default_schedule_keeps_adagrad_constant(tmp_path):
    """`auto` (the default recipe's schedule): cosine for Adam, constant for Adagrad, whose steps
    already shrink. Recorded resolved, and trained as recorded: the default retrain of an
    Adagrad trial is bit-for-bit the `--schedule constant` one, not the cosine one."""
    e = Env(tmp_path)
    quick = ("--epochs", "1", "--device", "cpu", "--pruner", "none")
    assert e("optimize", "--trials", "1", "--no-warm-start", "--space", "article", *quick).exit_code == 0  # random
    study = optuna.load_study(study_name="mnist-cnn", storage=e.url)
    study.enqueue_trial({**GOOD, "optimizer": "Adagrad", "lr": 1e-2})  # trial 1
    study.enqueue_trial(GOOD)  # trial 2: Adam
    assert e("optimize", "--trials", "2", *quick).exit_code == 0

    def retrain(name: str, *args: str) -> dict:
        result = e(
            "retrain", *args, "--epochs", "2", "-o", str(tmp_path / f"{name}.pt"), "-f", "json", "--device", "cpu"
        )
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    auto = retrain("auto", "--trial", "1")
    constant = retrain("constant", "--trial", "1", "--schedule", "constant")
    cosine = retrain("cosine", "--trial", "1", "--schedule", "cosine")
    assert auto["recipe"]["schedule"] == "constant" and cosine["recipe"]["schedule"] == "cosine"
    assert auto["test_loss"] == constant["test_loss"] != cosine["test_loss"]
    assert retrain("adam", "--trial", "2")["recipe"]["schedule"] == "cosine"
    mixed = retrain("all", "--top", "3")  # Adagrad and Adam: the recipe stays auto, each member its own
    assert mixed["recipe"]["schedule"] == "auto"
    shown = e("evaluate", str(tmp_path / "all.pt"), "--device", "cpu").stdout
    assert "2 epochs, cosine lr (constant for Adagrad), shifts ≤2 px" in shown


def test_auto_schedule_in_the_library():
    from cnn_tune.model.recipe import RECIPES, Recipe
    from cnn_tune.model.space import Style

    auto = RECIPES["best"]
    assert auto.schedule == "auto" and auto.schedule_for("Adagrad") == "constant"
    assert auto.schedule_for("Adam") == auto.schedule_for("Adadelta") == "cosine"
    adam, adagrad = (auto.for_member(Style(), optimizer, "mnist") for optimizer in ("Adam", "Adagrad"))
    assert (adam.schedule, adagrad.schedule) == ("cosine", "constant")
    assert auto.common([adam, adam]).schedule == "cosine"
    assert auto.common([adam, adagrad]).schedule == "auto"  # each member its own, as the recipe says
    assert Recipe(epochs=1, schedule="cosine").for_member(Style(), "Adagrad", "mnist").schedule == "cosine"  # kept
