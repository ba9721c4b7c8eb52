"""The retrain recipe's ingredients, each checked on tensors: shifts, the cosine schedule,
weight averaging, and the ensemble's vote."""

from __future__ import annotations

import pytest
import torch

from cnn_tune.model.augment import random_flip, random_shift
from cnn_tune.model.network import Ensemble, build_model
from cnn_tune.model.space import Hyperparams, Style
from cnn_tune.model.training import step_hooks


def test_random_shift_moves_each_image_by_at_most_max_shift():
    x = torch.zeros(64, 1, 28, 28)
    x[:, 0, 14, 14] = 1.0  # one bright pixel in the middle of every image
    out = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.sum(dim=(1, 2, 3)).eq(1).all()  # moved, never lost
    where = out[:, 0].flatten(1).argmax(1)
    rows, cols = where // 28 - 14, where % 28 - 14
    assert rows.abs().max() <= 2 and cols.abs().max() <= 2
    assert len({(int(r), int(c)) for r, c in zip(rows, cols)}) > 10  # each image its own shift
    again = random_shift(x, 2, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # seeded


def test_random_flip_mirrors_about_half_of_the_images():
    x = torch.zeros(200, 1, 28, 28)
    x[:, 0, 5, 3] = 1.0  # left of centre in every image
    out = random_flip(x, torch.Generator().manual_seed(0))
    mirrored = out[:, 0, 5, 24] == 1.0  # the pixel's mirror image: column 27 - 3
    assert torch.equal(out[mirrored], x[mirrored].flip(-1)) and torch.equal(out[~mirrored], x[~mirrored])
    assert 70 < int(mirrored.sum()) < 130  # each image its own coin
    assert torch.equal(out, random_flip(x, torch.Generator().manual_seed(0)))  # seeded


def test_random_shift_fills_with_background():
    """Each image moves by at most ``max_shift`` pixels per axis; what moves in is background (0)."""
    x = torch.ones(64, 1, 28, 28)
    out = random_shift(x, 2, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and set(out.unique().tolist()) <= {0.0, 1.0}
    rows, cols = out[:, 0].amax(2), out[:, 0].amax(1)  # (64, 28): which rows/columns still hold the image
    for img, r, c in zip(out[:, 0], rows, cols):
        kept_r, kept_c = r.nonzero().flatten(), c.nonzero().flatten()
        assert len(kept_r) >= 26 and len(kept_c) >= 26  # moved by at most 2 pixels
        assert kept_r[0] == 0 or kept_r[-1] == 27  # a contiguous block against one edge
        assert kept_c[0] == 0 or kept_c[-1] == 27
        assert img.sum() == len(kept_r) * len(kept_c)  # inside the block all image, outside all background
    assert (rows == 0).any() and (cols == 0).any()  # some images did move (1 in 25 of each stays put)


def test_cosine_schedule_decays_the_trials_lr_to_zero():
    model = build_model(Hyperparams())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    after_step, kept = step_hooks(model, optimizer, Style(schedule="cosine"), steps=10)
    assert kept is model
    lrs = []
    for _ in range(10):
        optimizer.step()
        after_step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == sorted(lrs, reverse=True) and lrs[0] < 1e-3 and lrs[-1] < 1e-9


def test_constant_schedule_adds_nothing():
    model = build_model(Hyperparams())
    after_step, kept = step_hooks(model, torch.optim.Adam(model.parameters()), Style(), steps=10)
    assert after_step is None and kept is model


def test_ema_hands_back_an_average_of_the_weights():
    model = build_model(Hyperparams())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    after_step, kept = step_hooks(model, optimizer, Style(ema=0.5), steps=3)
    start = model.fc2.bias.detach().clone()
    for _ in range(3):
        model.fc2.bias.data += 1.0  # a step of +1
        after_step()
    # the average lags behind the weights it follows
    averaged = kept.fc2.bias
    assert torch.all(averaged < model.fc2.bias) and torch.all(averaged > start)


def test_an_ensemble_of_one_is_the_model_itself():
    model = build_model(Hyperparams()).eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(Ensemble([model])(x), model(x))


def test_an_ensemble_averages_probabilities():
    a, b = build_model(Hyperparams()).eval(), build_model(Hyperparams(fc2_input_dim=32)).eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        got = Ensemble([a, b])(x).softmax(1)
        want = (a(x).softmax(1) + b(x).softmax(1)) / 2
    assert torch.allclose(got, want, atol=1e-6)


def test_a_style_needs_a_concrete_schedule():
    """`auto` belongs to a recipe, resolved per optimizer; a Style given it would train constant."""
    with pytest.raises(ValueError, match="auto"):
        Style(schedule="auto")
