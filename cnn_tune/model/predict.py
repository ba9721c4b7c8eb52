"""`predict`: classify image files with a checkpoint written by `retrain` (no study, no data set)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnn_tune.data.folder import to_pixels
from cnn_tune.model import checkpoint as ckpt
from cnn_tune.model.results import Prediction
from cnn_tune.model.training import to_inputs


@torch.inference_mode()
def predict(path: Path, images: list[Path], invert: bool) -> list[Prediction]:
    loaded = ckpt.load(path)
    pixels = np.stack([to_pixels(p, invert) for p in images])  # all decoded before any is scored
    x = to_inputs(torch.from_numpy(pixels), torch.device("cpu"))  # (N, 1, 28, 28)
    probs = torch.softmax(loaded.model(x), dim=1)  # (N, C)
    names = loaded.meta["classes"]
    return [
        Prediction(p, int(row.argmax()), names[int(row.argmax())], float(row.max()), [round(float(v), 6) for v in row])
        for p, row in zip(images, probs)
    ]
