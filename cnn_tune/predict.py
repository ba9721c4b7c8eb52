"""`predict`: classify image files with a checkpoint written by `retrain` (no study, no data set)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint as ckpt
from .errors import ImageError
from .training import to_inputs


@dataclass
class Prediction:
    image: Path
    digit: int
    probability: float
    probabilities: list[float]  # softmax over digits 0–9

    def as_dict(self) -> dict[str, Any]:
        return {"image": str(self.image), "digit": self.digit, "probability": self.probability,
                "probabilities": self.probabilities}


def read_image(path: Path, invert: bool) -> np.ndarray:
    """Any PIL-readable picture → uint8 (28, 28), grayscale, MNIST polarity (white on black)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            gray = img.convert("L")
    except FileNotFoundError:
        raise ImageError(f"no image at {path}", hint="check the path") from None
    except IsADirectoryError:
        raise ImageError(f"{path} is a folder, not an image", hint="give image files") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ImageError(f"cannot decode {path} as an image ({reason})", hint="give PNG or JPEG files") from None
    if gray.size != (28, 28):
        gray = gray.resize((28, 28), Image.Resampling.BILINEAR)
    pixels = np.asarray(gray, dtype=np.uint8)  # (28, 28)
    return 255 - pixels if invert else pixels


@torch.inference_mode()
def predict(path: Path, images: list[Path], invert: bool) -> list[Prediction]:
    loaded = ckpt.load(path)
    pixels = np.stack([read_image(p, invert) for p in images])  # all decoded before any is scored
    x = to_inputs(torch.from_numpy(pixels), torch.device("cpu"))  # (N, 1, 28, 28)
    probs = torch.softmax(loaded.model(x), dim=1)  # (N, 10)
    return [Prediction(p, int(row.argmax()), float(row.max()), [round(float(v), 6) for v in row])
            for p, row in zip(images, probs)]
