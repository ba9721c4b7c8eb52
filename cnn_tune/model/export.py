"""`export`: a checkpoint as ONNX or TorchScript, checked against the checkpoint before it is kept.

Both take one input, a batch of images (N × 1 × 28 × 28, float in [0, 1], any N) and give the
class probabilities (N × C): a one-model checkpoint's softmax, an ensemble's mean of its members'.
What the model is — its class names, study, trial, data set, test accuracy, the cnn-tune version
— travels inside the file: ONNX metadata properties, a TorchScript extra file, both the same JSON
under :data:`META_KEY`.

**Verified at export**: the exported file is loaded back (onnxruntime; ``torch.jit.load``) and run
on the study's test images — its validation images where the data set has no test images —
beside the checkpoint itself, in fp32. Every predicted class must agree; the largest difference
of a probability is reported. A file that disagrees is deleted and the export fails: nothing that
was not checked is left under the output name.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnn_tune import __version__
from cnn_tune.data.datasets import Log
from cnn_tune.errors import DependencyMissing, ExportError
from cnn_tune.files import check_writable
from cnn_tune.model import checkpoint as ckpt
from cnn_tune.model.evaluation import checkpoint_images
from cnn_tune.model.portable import META_KEY, ONNX_EXTRA, OnnxModel
from cnn_tune.model.training import to_inputs

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
TORCHSCRIPT_META = "cnn_tune.json"  # the TorchScript extra file holding the metadata
BATCH = 1000  # images per forward pass while verifying
OPSET = 18


class Probabilities(nn.Module):
    """A checkpoint's model with probabilities out: (N, 1, 28, 28) → (N, C), rows summing to 1.
    The ensemble returns log mean probabilities (one member: its logits); softmax of either is
    the probabilities."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x).float(), dim=1)


@dataclass
class Exported:
    """What `export` prints; JSON-ready through :meth:`as_dict`."""

    checkpoint: Path
    output: Path
    format: str
    images: int  # how many images the verification ran
    images_from: str  # "test" or "validation"
    agree: int  # of those, how many got the same class from both
    max_difference: float  # the largest |p_export - p_checkpoint| over every image and class
    seconds: float
    meta: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint),
            "output": str(self.output),
            "format": self.format,
            "verified_on": self.images,
            "verified_images": self.images_from,
            "agree": self.agree,
            "max_probability_difference": self.max_difference,
            "seconds": self.seconds,
            "metadata": self.meta,
        }


def default_output(checkpoint: Path, fmt: str) -> Path:
    """``studies/mnist-cnn-trial10.pt`` → ``studies/mnist-cnn-trial10.onnx`` (or ``.torchscript.pt``)."""
    return checkpoint.with_name(checkpoint.name.removesuffix(".pt") + SUFFIXES[fmt])


def metadata(loaded: ckpt.Checkpoint) -> dict[str, Any]:
    """What an exported model says about itself (see :data:`META_KEY`)."""
    meta = loaded.meta
    protocol = meta.get("protocol") or {}
    return {
        "format": "cnn-tune-model",
        "format_version": 1,
        "cnn_tune": __version__,
        "classes": list(meta["classes"]),
        "study": meta["study"],
        "trial": meta["trial"],
        "members": [m["trial"] for m in meta["members"]],
        "dataset": protocol.get("dataset", "mnist"),
        "architecture": meta["architecture"],
        "test_accuracy": (meta.get("metrics") or {}).get("test_accuracy"),
        "input": "images N x 1 x 28 x 28, float32 in [0, 1] (white on black for digits)",
        "output": "class probabilities N x C, in the order of classes",
    }


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}", hint=f"use one of: {', '.join(FORMATS)}")
    if fmt == "onnx":
        needs_onnx()


def needs_onnx() -> None:
    """DependencyMissing naming the extra, when ONNX's packages are not installed."""
    import importlib

    missing = []
    for name in ("onnx", "onnxruntime", "onnxscript"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise DependencyMissing(f"ONNX needs {', '.join(missing)}, which are not installed", hint=ONNX_EXTRA)


def export(path: Path, fmt: str, output: Path | None, overwrite: bool, data_dir: Path | None, log: Log) -> Exported:
    """Write ``path``'s model as ``fmt`` to ``output`` (default: beside it), verified first."""
    check_format(fmt)
    target = output if output is not None else default_output(path, fmt)
    if output is not None and not target.parent.is_dir():
        raise ExportError(f"the folder {target.parent} does not exist", hint="create it, or pass another --output")
    check_writable(target, overwrite=overwrite)
    loaded = ckpt.load(path)
    images, which = checkpoint_images(loaded, data_dir, log)
    started = time.perf_counter()
    model = Probabilities(loaded.model.float()).eval()
    meta = metadata(loaded)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        (_write_onnx if fmt == "onnx" else _write_torchscript)(model, tmp, meta)
        agree, difference = _verify(model, tmp, fmt, images)
        if agree < len(images):
            raise ExportError(
                f"the {fmt} export of {path} disagrees with it on {len(images) - agree} of "
                f"{len(images)} {which} images (largest probability difference {difference:.2g}); "
                "nothing was written",
                hint="report this with the checkpoint attached",
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return Exported(path, target, fmt, len(images), which, agree, difference, time.perf_counter() - started, meta)


def _example() -> torch.Tensor:
    return torch.rand(2, 1, 28, 28)


def _write_onnx(model: nn.Module, path: Path, meta: dict[str, Any]) -> None:
    import onnx

    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(
        model,
        (_example(),),
        input_names=["images"],
        output_names=["probabilities"],
        dynamic_shapes={"x": {0: batch}},
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    proto = program.model_proto
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    proto.producer_name, proto.producer_version = "cnn-tune", __version__
    onnx.checker.check_model(proto)
    path.write_bytes(proto.SerializeToString())


# torch 2.14 marks torch.jit.trace, save and load deprecated (FutureWarning) in favour of
# torch.export; a traced TorchScript file is still what libtorch (C++) loads, which is why users
# ask for it. Only that warning is hidden, only around those calls.
JIT_DEPRECATED = r".*torch\.jit\.(trace|save|load).* is deprecated"


def _write_torchscript(model: nn.Module, path: Path, meta: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=JIT_DEPRECATED, category=FutureWarning)
        traced = torch.jit.trace(model, _example(), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_META: json.dumps(meta)})


@torch.inference_mode()
def _verify(model: nn.Module, path: Path, fmt: str, images: np.ndarray) -> tuple[int, float]:
    """How many of ``images`` (N, 28, 28 uint8) get the same class from the file and the model,
    and the largest probability difference."""
    if fmt == "onnx":
        runner = OnnxModel(path)
        run = lambda x: torch.from_numpy(runner.run(x.numpy()))  # noqa: E731 - one line, used once
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=JIT_DEPRECATED, category=FutureWarning)
            loaded = torch.jit.load(str(path), map_location="cpu").eval()
        run = lambda x: loaded(x)  # noqa: E731
    agree, difference = 0, 0.0
    for start in range(0, len(images), BATCH):
        x = to_inputs(torch.from_numpy(images[start : start + BATCH]), torch.device("cpu"))  # (B, 1, 28, 28)
        expected, got = model(x), run(x)
        agree += int((expected.argmax(1) == got.argmax(1)).sum())
        difference = max(difference, float((expected - got).abs().max()))
    return agree, difference
