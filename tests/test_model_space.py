"""The seed article's network and search space, pinned."""

from __future__ import annotations

import copy

import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from cnn_tune.model.network import OPTIMIZER_CLASSES, ConvNet, build_model, build_optimizer
from cnn_tune.model.space import Hyperparams, suggest

EXPECTED = {
    "dropout_rate": FloatDistribution(0.0, 0.5, step=0.1),
    "fc2_input_dim": IntDistribution(32, 128, step=32),
    "dropout_rate2": FloatDistribution(0.0, 0.3, step=0.1),
    "optimizer": CategoricalDistribution(["Adam", "Adadelta", "Adagrad"]),
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "batch_size": IntDistribution(64, 256, step=64),
}


def test_search_space_is_the_articles():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    hp = suggest(trial)
    assert trial.distributions == EXPECTED
    assert Hyperparams.from_params(trial.params) == hp


def test_hyperparams_rebuild_from_stored_params_only():
    params = {
        "dropout_rate": 0.30000000000000004,
        "fc2_input_dim": 96,
        "dropout_rate2": 0.1,
        "optimizer": "Adagrad",
        "lr": 0.01,
        "batch_size": 192,
    }
    hp = Hyperparams.from_params(params)
    assert hp.as_dict()["fc2_input_dim"] == 96 and hp.optimizer == "Adagrad"
    with pytest.raises(ValueError, match="lr"):
        Hyperparams.from_params({k: v for k, v in params.items() if k != "lr"})
    with pytest.raises(ValueError, match="optimizer"):
        Hyperparams.from_params({**params, "optimizer": "SGD"})


def test_network_shapes_and_layers():
    hp = Hyperparams(dropout_rate=0.3, fc2_input_dim=64, dropout_rate2=0.2)
    model = build_model(hp)
    assert isinstance(model, ConvNet)
    assert model.conv1.weight.shape == (16, 1, 5, 5) and model.conv1.padding == (2, 2)
    assert model.conv2.weight.shape == (32, 16, 5, 5)
    assert model.fc1.weight.shape == (64, 32 * 7 * 7) and model.fc2.weight.shape == (10, 64)
    assert model.drop2d.p == 0.3 and isinstance(model.drop2d, torch.nn.Dropout2d) and model.drop.p == 0.2
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)
    for name, cls in (("Adam", torch.optim.Adam), ("Adadelta", torch.optim.Adadelta), ("Adagrad", torch.optim.Adagrad)):
        opt = build_optimizer(Hyperparams(optimizer=name, lr=0.02), model)
        assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.02


# torch has fused CPU kernels for Adam and Adagrad, none for Adadelta (which takes the plain loop)
@pytest.mark.parametrize("name, fused", [("Adam", True), ("Adadelta", None), ("Adagrad", True)])
def test_fast_optimizer_makes_the_plain_update(name, fused):
    # build_optimizer picks torch's fused kernel where there is one; five steps from the same
    # start must land where torch's default implementation lands, to float rounding. In float64:
    # Adam divides by sqrt(v), so a float32 rounding difference in a near-zero gradient grew to
    # 4e-5 in one weight (with one thread, as under xdist); in float64 the two stay within ~1e-14.
    hp = Hyperparams(optimizer=name, lr=0.01)
    torch.manual_seed(0)
    fast = build_model(hp).double()
    plain = copy.deepcopy(fast)
    optimizers = (build_optimizer(hp, fast), OPTIMIZER_CLASSES[name](plain.parameters(), lr=0.01))
    assert optimizers[0].defaults.get("fused") is fused  # the fused path is taken where torch has one
    assert not optimizers[1].defaults.get("fused")
    x, y = torch.rand(16, 1, 28, 28, dtype=torch.float64), torch.randint(0, 10, (16,))
    for _ in range(5):
        for model, optimizer in zip((fast, plain), optimizers):
            optimizer.zero_grad()
            # eval mode: no dropout, so both models see the same gradients
            torch.nn.functional.cross_entropy(model.eval()(x), y).backward()
            optimizer.step()
    for a, b in zip(fast.parameters(), plain.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)  # a wrong rule is off by ~1e-2


def test_forward_matches_the_article_order():
    # conv → pool → relu, twice; then dropout2d, flatten, fc, relu, dropout, fc.
    model = build_model(Hyperparams()).eval()
    x = torch.rand(2, 1, 28, 28)
    f = torch.nn.functional
    h = f.relu(f.max_pool2d(model.conv1(x), 2))
    h = f.relu(f.max_pool2d(model.conv2(h), 2)).flatten(1)
    expected = model.fc2(f.relu(model.fc1(h)))
    torch.testing.assert_close(model(x), expected)
