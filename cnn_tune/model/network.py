"""The networks, each built from its space's record: the seed article's :class:`ConvNet`
(:class:`~cnn_tune.model.space.Hyperparams`) and the wide space's :class:`WideNet`
(:class:`~cnn_tune.model.space.WideHyperparams`); the optimizer each trains with; the ensemble."""

from __future__ import annotations

import torch
from torch import nn

from cnn_tune.model.space import Hyperparams, Space, WideHyperparams


class ConvNet(nn.Module):
    """conv(1→16,k5) → pool → relu → conv(16→32,k5) → pool → relu → dropout2d → fc → relu → dropout → fc(C)."""

    def __init__(
        self, fc2_input_dim: int = 128, dropout_rate: float = 0.2, dropout_rate2: float = 0.1, n_classes: int = 10
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=5, padding=2)  # (B,1,28,28) → (B,16,28,28)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=5, padding=2)  # (B,16,14,14) → (B,32,14,14)
        self.pool = nn.MaxPool2d(2)
        self.drop2d = nn.Dropout2d(dropout_rate)
        self.fc1 = nn.Linear(32 * 7 * 7, fc2_input_dim)
        self.drop = nn.Dropout(dropout_rate2)
        self.fc2 = nn.Linear(fc2_input_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 1, 28, 28) float in [0, 1]
        x = torch.relu(self.pool(self.conv1(x)))  # (B, 16, 14, 14)
        x = torch.relu(self.pool(self.conv2(x)))  # (B, 32, 7, 7)
        x = self.drop2d(x)
        x = torch.flatten(x, 1)  # (B, 1568)
        x = self.drop(torch.relu(self.fc1(x)))  # (B, fc2_input_dim)
        return self.fc2(x)  # (B, C) logits, C classes


class WideNet(nn.Module):
    """``blocks`` × [conv 3×3 → max pool 2 → batch norm → ReLU], channels ``width``, 2·width, 4·width;
    then dropout → fc → ReLU → dropout → fc(C).

    The pool comes before batch norm and ReLU: ReLU commutes with max pooling, and batch norm and
    ReLU then run on a quarter of the values. On the 2-core CPU (bf16, one thread, 32/64
    channels) that trained 6,300 images/s against 3,400 for conv → norm → ReLU → pool, where
    norm, pool and ReLU at full resolution took ~80% of a step and the convolutions 17%."""

    def __init__(
        self,
        width: int = 32,
        blocks: int = 3,
        batch_norm: bool = True,
        fc2_input_dim: int = 128,
        dropout_rate: float = 0.2,
        dropout_rate2: float = 0.1,
        n_classes: int = 10,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = 1, 28
        for block in range(blocks):
            out = width * 2**block
            layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1, bias=not batch_norm), nn.MaxPool2d(2)]
            layers += [nn.BatchNorm2d(out)] if batch_norm else []
            layers.append(nn.ReLU(inplace=True))
            channels, size = out, size // 2  # (B, out, 28 / 2^(block + 1), …): 14, 7, 3
        self.features = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout_rate)
        self.fc1 = nn.Linear(channels * size * size, fc2_input_dim)
        self.drop2 = nn.Dropout(dropout_rate2)
        self.fc2 = nn.Linear(fc2_input_dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 1, 28, 28) float in [0, 1]
        x = torch.flatten(self.drop(self.features(x)), 1)  # (B, channels · size²)
        x = self.drop2(torch.relu(self.fc1(x)))  # (B, fc2_input_dim)
        return self.fc2(x)  # (B, C) logits


def build_model(hp: Space, n_classes: int = 10) -> nn.Module:
    """The network of ``hp``'s space, with one output per class."""
    if isinstance(hp, WideHyperparams):
        return WideNet(
            width=hp.width,
            blocks=hp.blocks,
            batch_norm=hp.batch_norm,
            fc2_input_dim=hp.fc2_input_dim,
            dropout_rate=hp.dropout_rate,
            dropout_rate2=hp.dropout_rate2,
            n_classes=n_classes,
        )
    assert isinstance(hp, Hyperparams)
    return ConvNet(
        fc2_input_dim=hp.fc2_input_dim,
        dropout_rate=hp.dropout_rate,
        dropout_rate2=hp.dropout_rate2,
        n_classes=n_classes,
    )


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


OPTIMIZER_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "Adam": torch.optim.Adam,
    "Adadelta": torch.optim.Adadelta,
    "Adagrad": torch.optim.Adagrad,
    "AdamW": torch.optim.AdamW,
}


def build_optimizer(hp: Space, model: nn.Module) -> torch.optim.Optimizer:
    """The trial's optimizer over ``model``'s parameters (already on their device).

    Fused where torch has a fused kernel for this optimizer on this device (Adam on CPU and
    CUDA, Adagrad on CPU in recent torch): one kernel updates all eight parameter tensors
    instead of ~10 small ops per tensor — measured 5–7% of a bf16 training step on the 2-core
    CPU. Same update rule; only float rounding order differs. Elsewhere the plain loop."""
    cls = OPTIMIZER_CLASSES[hp.optimizer]  # type: ignore[attr-defined]
    # AdamW's decay is decoupled from the gradient (Loshchilov & Hutter): the wide space's knob
    options = {"lr": hp.lr, **({"weight_decay": hp.weight_decay} if isinstance(hp, WideHyperparams) else {})}  # type: ignore[attr-defined]
    try:
        return cls(model.parameters(), fused=True, **options)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this class/device/torch
        return cls(model.parameters(), **options)


class Ensemble(nn.Module):
    """K trained ConvNets voting by averaged probabilities (`retrain --top K`).

    forward returns log of the mean softmax, (B, C): argmax is the ensemble's class,
    cross-entropy on it is the ensemble's log loss, and softmax of it gives back the mean
    probabilities. With one member it returns that member's logits unchanged, so a
    single-model checkpoint scores exactly as before ensembles existed."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.members) == 1:
            return self.members[0](x)
        probs = torch.stack([m(x).float().softmax(dim=1) for m in self.members])  # (K, B, C)
        return probs.mean(dim=0).clamp_min(1e-30).log()  # (B, C)
