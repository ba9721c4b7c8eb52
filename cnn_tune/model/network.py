"""The seed article's ConvNet, built from a :class:`~cnn_tune.model.space.Hyperparams` record."""

from __future__ import annotations

import torch
from torch import nn

from cnn_tune.model.space import Hyperparams


class ConvNet(nn.Module):
    """conv(1→16,k5) → pool → relu → conv(16→32,k5) → pool → relu → dropout2d → fc → relu → dropout → fc(C)."""

    def __init__(self, fc2_input_dim: int = 128, dropout_rate: float = 0.2, dropout_rate2: float = 0.1,
                 n_classes: int = 10) -> None:
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


def build_model(hp: Hyperparams, n_classes: int = 10) -> ConvNet:
    return ConvNet(fc2_input_dim=hp.fc2_input_dim, dropout_rate=hp.dropout_rate, dropout_rate2=hp.dropout_rate2,
                   n_classes=n_classes)


OPTIMIZER_CLASSES: dict[str, type[torch.optim.Optimizer]] = {
    "Adam": torch.optim.Adam, "Adadelta": torch.optim.Adadelta, "Adagrad": torch.optim.Adagrad}


def build_optimizer(hp: Hyperparams, model: nn.Module) -> torch.optim.Optimizer:
    """The trial's optimizer over ``model``'s parameters (already on their device).

    Fused where torch has a fused kernel for this optimizer on this device (Adam on CPU and
    CUDA, Adagrad on CPU in recent torch): one kernel updates all eight parameter tensors
    instead of ~10 small ops per tensor — measured 5–7% of a bf16 training step on the 2-core
    CPU. Same update rule; only float rounding order differs. Elsewhere the plain loop."""
    cls = OPTIMIZER_CLASSES[hp.optimizer]
    try:
        return cls(model.parameters(), lr=hp.lr, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this class/device/torch
        return cls(model.parameters(), lr=hp.lr)


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
