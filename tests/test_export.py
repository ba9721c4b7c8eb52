"""`export` (ONNX, TorchScript) checked against the checkpoint, `predict` on an ONNX model
without PyTorch, the final model kept in the study's artifact store, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLASSES, assert_one_line_error, quick, write_folder
from helpers import chromium, cli_env, cnn_tune, page_text

from cnn_tune.model.export import JIT_DEPRECATED

onnxruntime = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A study of the article's space on the synthetic digits (fast to train), one final model
    and a three-member ensemble of it."""
    from conftest import write_mnist
    from typer.testing import CliRunner

    from cnn_tune.cli.main import app

    root = tmp_path_factory.mktemp("export")
    data = write_mnist(root / "data", n_train=400, n_test=100)
    url = f"sqlite:///{root / 'studies' / 's.db'}"
    env = {"CNN_TUNE_DATA_DIR": str(data), "CNN_TUNE_STORAGE": url, "CNN_TUNE_DEBUG": "", "CNN_TUNE_WORKERS": "1"}
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, list(args), env=env)

    assert run(*quick("--trials", "3", "--space", "article", "--patience", "0", "--seed", "3")).exit_code == 0
    assert run("retrain", "--epochs", "2", "--output", str(root / "one.pt")).exit_code == 0
    assert run("retrain", "--epochs", "1", "--top", "3", "--output", str(root / "three.pt")).exit_code == 0
    return root, run, data, url


def _probabilities(checkpoint: Path, x: torch.Tensor) -> np.ndarray:
    from cnn_tune.model import checkpoint as ckpt

    with torch.inference_mode():
        return torch.softmax(ckpt.load(checkpoint).model(x), dim=1).numpy()


@pytest.mark.parametrize("members", ["one", "three"])
@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_exports_agree_with_their_checkpoint(made, members, kind):
    root, run, _, _ = made
    result = run("export", str(root / f"{members}.pt"), "--format", kind, "--overwrite")
    assert result.exit_code == 0, result.output
    assert "agree with the checkpoint's on all 100 test images" in result.stdout
    out = root / (f"{members}.onnx" if kind == "onnx" else f"{members}.torchscript.pt")
    x = torch.rand(7, 1, 28, 28)  # any batch size: the batch dimension is free
    expected = _probabilities(root / f"{members}.pt", x)
    if kind == "onnx":
        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        meta = json.loads(session.get_modelmeta().custom_metadata_map["cnn_tune"])
    else:
        extra = {"cnn_tune.json": ""}
        with warnings.catch_warnings():  # deprecated in torch 2.14, still what libtorch reads
            warnings.filterwarnings("ignore", message=JIT_DEPRECATED, category=FutureWarning)
            got = torch.jit.load(str(out), _extra_files=extra)(x).detach().numpy()
        meta = json.loads(extra["cnn_tune.json"])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert meta["classes"] == list("0123456789") and meta["study"] == "mnist-cnn"
    assert len(meta["members"]) == (3 if members == "three" else 1) and meta["test_accuracy"] is not None


def test_predict_with_onnx_matches_the_checkpoint_without_torch(made, tmp_path):
    root, run, data, url = made
    assert run("export", str(root / "one.pt"), "--overwrite").exit_code == 0
    images = [str(p) for p in sorted(Path(__file__).parent.parent.joinpath("docs", "digits").glob("*.png"))]
    from_pt = json.loads(run("predict", str(root / "one.pt"), *images, "--format", "json").stdout)
    from_onnx = json.loads(run("predict", str(root / "one.onnx"), *images, "--format", "json").stdout)
    assert [p["label"] for p in from_onnx] == [p["label"] for p in from_pt]
    assert all(abs(a["probability"] - b["probability"]) < 1e-4 for a, b in zip(from_onnx, from_pt))
    code = (
        "import sys\nfrom cnn_tune.cli.main import main\n"
        "sys.argv = ['cnn-tune', 'predict', sys.argv[1], sys.argv[2]]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "print('torch loaded' if 'torch' in sys.modules else 'no torch')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(root / "one.onnx"), images[0]],
        capture_output=True,
        text=True,
        env=cli_env(data, url),
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("no torch"), done.stdout


def test_a_folder_model_exports_and_predicts_its_class_names(tmp_path, cli):
    folder = write_folder(tmp_path / "shapes")
    assert cli(*quick("--dataset", str(folder), "--space", "article", "--epochs", "3", "--seed", "1")).exit_code == 0
    assert cli("retrain", "--epochs", "3", "--output", str(tmp_path / "s.pt")).exit_code == 0
    result = cli("export", str(tmp_path / "s.pt"))
    assert result.exit_code == 0, result.output
    picture = next((folder / "test" / "disc").glob("*.png"))
    shown = json.loads(cli("predict", str(tmp_path / "s.onnx"), str(picture), "--format", "json").stdout)
    assert shown[0]["class"] in CLASSES and len(shown[0]["probabilities"]) == 3


def test_the_final_model_is_kept_with_its_study_and_checked_when_fetched(made, tmp_path):
    root, run, _, _ = made
    kept = json.loads(run("best", "--format", "json").stdout)["model_kept_at"]
    store, artifact = kept.rsplit("/", 1)
    assert Path(store) == (root / "studies" / "artifacts").resolve() and (Path(store) / artifact).is_file()
    fetched = run("evaluate", "--format", "json")
    assert fetched.exit_code == 0, fetched.output
    assert "sha256 checked" in fetched.stderr
    assert (
        json.loads(fetched.stdout)["test_accuracy"]
        == json.loads(run("best", "--format", "json").stdout)["test_accuracy"]
    )
    copy = (Path(store) / artifact).read_bytes()
    try:
        (Path(store) / artifact).write_bytes(copy[:-10] + b"0123456789")  # damaged in the store
        assert_one_line_error(run("evaluate"), 1, "sha256 differs", "cnn-tune retrain")
    finally:
        (Path(store) / artifact).write_bytes(copy)


def test_the_dashboard_lists_the_kept_model(made, tmp_path):
    pytest.importorskip("optuna_dashboard")
    browser = chromium()
    root, _, data, url = made
    dashboard = subprocess.Popen(
        cnn_tune("dashboard", "--port", "0"),
        env=cli_env(data, url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = dashboard.stderr.readline()
        base = line.split("Dashboard on ")[1].split()[0]
        page = page_text(browser, f"{base}studies/1", tmp_path / "profile")
    finally:
        dashboard.kill()
        dashboard.wait()
    assert "Study Artifacts" in page and "one.pt" in page and "three.pt" in page, page[-3000:]


class Runs:
    """Pickled, it runs a command when loaded by a plain unpickler (never by cnn-tune)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("what", ["text", "pickle", "folder-missing", "format", "foreign-onnx", "damaged-onnx"])
def test_bad_input_is_one_line_and_writes_nothing(made, tmp_path, what):
    root, run, _, _ = made
    if what == "text":
        (tmp_path / "x.pt").write_text("not a model")
        assert_one_line_error(run("export", str(tmp_path / "x.pt")), 1, "not a cnn-tune checkpoint")
    elif what == "pickle":
        torch.save({"format": Runs(tmp_path / "ran")}, tmp_path / "x.pt")  # a crafted pickle: code on load
        assert_one_line_error(run("export", str(tmp_path / "x.pt")), 1, "refused to load it")
        assert not (tmp_path / "ran").exists()
    elif what == "folder-missing":
        err = assert_one_line_error(
            run("export", str(root / "one.pt"), "-o", str(tmp_path / "no" / "m.onnx")), 1, "does not exist"
        )
        assert "no" in err and not (tmp_path / "no").exists()
    elif what == "format":
        assert_one_line_error(run("export", str(root / "one.pt"), "--format", "tflite"), 2, "tflite")
    elif what == "foreign-onnx":
        import onnx
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        )
        onnx.save(helper.make_model(graph), tmp_path / "other.onnx")
        assert_one_line_error(
            run("predict", str(tmp_path / "other.onnx"), str(tmp_path / "other.onnx")), 1, "not one cnn-tune exported"
        )
    else:
        (tmp_path / "bad.onnx").write_bytes(b"\x08\x07garbage" * 10)
        assert_one_line_error(
            run("predict", str(tmp_path / "bad.onnx"), str(tmp_path / "bad.onnx")), 1, "damaged or not an ONNX model"
        )
    assert not list(tmp_path.glob("*.part")) and not list(root.glob(".*.part"))


def test_without_the_onnx_extra_one_line_says_how_to_install_it(made, monkeypatch):
    root, run, _, _ = made
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    assert_one_line_error(run("export", str(root / "one.pt"), "--overwrite"), 1, "pip install", "[onnx]")
    assert_one_line_error(run("predict", str(root / "one.onnx"), str(root / "one.onnx")), 1, "[onnx]")
