"""Random changes to a batch of training images, each drawn from the trainer's seeded
generator (same seed, same batches): shifts, mirror images, random erasing. Every function takes
and returns float images (B, 1, H, W) in [0, 1]; none loops over images in Python."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cnn_tune.model.space import Style

# Random erasing (Zhong et al., 2017): a rectangle of 2–33% of the image, aspect ratio 0.3–3.3,
# set to 0 (the background of these images).
ERASE_AREA = (0.02, 0.33)
ERASE_ASPECT = (0.3, 1 / 0.3)


def augment(x: torch.Tensor, style: Style, generator: torch.Generator) -> torch.Tensor:
    """``x`` (B, 1, H, W) with the style's augmentations, in a fixed order: shift, flip, erase."""
    x = random_shift(x, style.shift, generator) if style.shift else x
    x = random_flip(x, generator) if style.flip else x
    return random_erasing(x, style.erasing, generator) if style.erasing else x


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image of x (B, 1, H, W) left-right with probability 1/2 (its own coin)."""
    heads = torch.rand(len(x), generator=generator, device=x.device) < 0.5  # (B,)
    return torch.where(heads[:, None, None, None], x.flip(-1), x)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image of x (B, 1, H, W) by its own (dy, dx) in [-max_shift, max_shift]²,
    filling with zeros (MNIST's background). One gather: no Python loop over images."""
    b, _, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s))  # (B, 1, H + 2s, W + 2s)
    offsets = torch.randint(0, 2 * s + 1, (2, b), generator=generator, device=x.device)  # top-left corners
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]  # (B, 1, 1)
    return padded[batch, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)  # (B, 1, H, W)


def random_erasing(x: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Blank one random rectangle (:data:`ERASE_AREA` of the image, :data:`ERASE_ASPECT`) in each
    image of x (B, 1, H, W) with ``probability``; the others are unchanged. One mask, no loop."""
    b, _, h, w = x.shape

    def uniform(low: float, high: float) -> torch.Tensor:  # (B,)
        return low + (high - low) * torch.rand(b, generator=generator, device=x.device)

    hit = torch.rand(b, generator=generator, device=x.device) < probability  # (B,)
    area = h * w * uniform(*ERASE_AREA)
    aspect = uniform(math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])).exp()
    tall = (area * aspect).sqrt().round().clamp(1, h)  # (B,) rectangle height
    wide = (area / aspect).sqrt().round().clamp(1, w)  # (B,) rectangle width
    top = (uniform(0, 1) * (h + 1 - tall)).floor()
    left = (uniform(0, 1) * (w + 1 - wide)).floor()
    ys = torch.arange(h, device=x.device)[None, :]  # (1, H)
    xs = torch.arange(w, device=x.device)[None, :]  # (1, W)
    in_rows = (ys >= top[:, None]) & (ys < (top + tall)[:, None])  # (B, H)
    in_cols = (xs >= left[:, None]) & (xs < (left + wide)[:, None])  # (B, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :] & hit[:, None, None]  # (B, H, W)
    return x.masked_fill(mask[:, None], 0.0)
