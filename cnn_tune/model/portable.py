"""An exported ONNX model run without PyTorch: onnxruntime and numpy only, so that `predict`
on a ``.onnx`` file starts in a fraction of the time a ``.pt`` needs (importing torch alone costs
seconds and ~0.5 GB). Written by :mod:`cnn_tune.model.export`; read here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cnn_tune.data.folder import to_pixels
from cnn_tune.errors import CheckpointError, DependencyMissing
from cnn_tune.model.results import Prediction

META_KEY = "cnn_tune"  # the metadata property (ONNX) or extra file stem (TorchScript) that makes a file ours
ONNX_EXTRA = "pip install 'cnn-tune[onnx]' (from a clone: pip install -e '.[onnx]')"


class OnnxModel:
    """An ONNX file written by `cnn-tune export`, loaded in onnxruntime: its metadata checked
    (class names at least two, one output per class) before it is used."""

    def __init__(self, path: Path) -> None:
        try:
            import onnxruntime
        except ImportError:
            raise DependencyMissing("ONNX models need onnxruntime, which is not installed", hint=ONNX_EXTRA) from None
        if not path.is_file():
            raise CheckpointError(
                f"no model at {path}" if not path.exists() else f"{path} is a folder, not a model",
                hint="give the .onnx file `cnn-tune export` wrote",
            )
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: a bad file is reported below, in one line
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - any failure to load means a damaged or foreign file
            first = (str(exc).strip().splitlines() or [""])[0]
            raise CheckpointError(
                f"{path} is damaged or not an ONNX model ({first[:160]})",
                hint="export it again with `cnn-tune export CHECKPOINT`",
            ) from None
        self.meta = _metadata(path, self.session.get_modelmeta().custom_metadata_map)
        self.classes: list[str] = self.meta["classes"]
        self.input = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (N, C) of images ``x`` (N, 1, 28, 28) float in [0, 1]."""
        return self.session.run(None, {self.input: x.astype(np.float32, copy=False)})[0]


def _metadata(path: Path, props: dict[str, str]) -> dict[str, Any]:
    if META_KEY not in props:
        raise CheckpointError(
            f"{path} is an ONNX model, but not one cnn-tune exported (no {META_KEY!r} metadata)",
            hint="give a file written by `cnn-tune export`",
        )
    try:
        meta = json.loads(props[META_KEY])
        classes = meta["classes"]
        ok = isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise CheckpointError(f"{path}: its cnn-tune metadata is malformed", hint="export it again")
    return meta


def predict_onnx(path: Path, images: list[Path], invert: bool) -> list[Prediction]:
    """`predict` with an exported ONNX model: the same :class:`Prediction` records as with a
    checkpoint, without importing torch."""
    model = OnnxModel(path)
    pixels = np.stack([to_pixels(p, invert) for p in images])  # (N, 28, 28) uint8, all decoded before any is scored
    probs = model.run(pixels[:, None].astype(np.float32) / 255.0)  # (N, C)
    if probs.shape != (len(images), len(model.classes)):
        raise CheckpointError(
            f"{path} gives {probs.shape[-1]} outputs for {len(model.classes)} classes", hint="export it again"
        )
    return [
        Prediction(
            p, int(row.argmax()), model.classes[int(row.argmax())], float(row.max()), [round(float(v), 6) for v in row]
        )
        for p, row in zip(images, probs)
    ]
