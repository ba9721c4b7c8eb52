"""Training and evaluation on tensors that already sit on the training device.

No Dataset, DataLoader or PIL: the split's images are converted to float once, each epoch
draws one permutation, and a batch is an index slice of it. Evaluation runs without
autograd in large batches.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from cnn_tune.data.images import Images, Split
from cnn_tune.model.augment import augment
from cnn_tune.model.network import build_model, build_optimizer
from cnn_tune.model.results import EpochResult
from cnn_tune.model.space import Space, Style

# Evaluation batch: on a GPU, large batches amortise kernel launches. On a CPU a large batch is
# slower: a 4096-image batch's first activation is (4096, 16, 28, 28) = 100 MB in bf16, far
# beyond cache; 256 keeps it at 6 MB. Measured on the 2-core CPU, 12k validation images:
# 0.31–0.35 s at 256 vs 0.57–0.59 s at 4096 (bf16), 0.48–0.51 s vs 1.0–1.2 s (fp32).
EVAL_BATCH_CPU = 256
EVAL_BATCH_CUDA = 4096


def eval_batch(device: torch.device) -> int:
    return EVAL_BATCH_CUDA if device.type == "cuda" else EVAL_BATCH_CPU


def autocast(device: torch.device, precision: str):
    """bf16 autocast for the forward pass (convs and matmuls in bf16, reductions in fp32)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def to_inputs(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (N, 28, 28) → float32 (N, 1, 28, 28) in [0, 1] on ``device``."""
    return images.to(device).unsqueeze(1).float().div_(255.0)


def as_inputs(batch: torch.Tensor) -> torch.Tensor:
    """A batch the network takes: uint8 images (B, 28, 28) are converted (:func:`to_inputs`);
    float inputs (B, 1, 28, 28) pass as they are."""
    return batch if batch.is_floating_point() else to_inputs(batch, batch.device)


class Trainer:
    """Holds one split of the data on one device; trains any number of configurations on it."""

    def __init__(self, data: Images, split: Split, device: torch.device, precision: str = "fp32") -> None:
        self.device = device
        self.precision = precision  # "fp32" or "bf16" (resolved, see device.resolve_precision)
        self.n_classes = data.n_classes
        # The images stay uint8 and whole: on the CPU they are the memory-mapped files every worker
        # shares (data.read_folder), and each batch is converted to float as it is drawn — a float
        # copy of the split was ~190 MB per worker process, and the conversion costs far less
        # than the batch's convolutions.
        self.images = data.train_images.to(device)  # (N, 28, 28) uint8
        self.labels = data.train_labels.long().to(device)  # (N,)
        self.train_rows = split.train.to(device)  # (n_train,) rows of images
        self.val_x = data.train_images[split.val].to(device)  # (n_val, 28, 28) uint8
        self.val_y = data.train_labels[split.val].long().to(device)  # (n_val,)

    @classmethod
    def all_training_images(cls, data: Images, device: torch.device, precision: str = "fp32") -> "Trainer":
        """Train on all training images (train + validation), with no validation: `retrain`."""
        n = data.n_train_images
        return cls(data, Split(train=torch.arange(n), val=torch.arange(0)), device, precision)

    @property
    def n_train(self) -> int:
        """The images it trains on: the split's train part (a protocol's ``n_train``), or
        every training image for `retrain`."""
        return len(self.train_rows)

    @property
    def n_val(self) -> int:
        return len(self.val_y)

    def fit(self, hp: Space, epochs: int, seed: int) -> Iterator[EpochResult]:
        """Train ``hp`` from scratch for ``epochs`` with its own style (the article's space: constant
        lr, no augmentation), yielding after each epoch (so the caller can report to a pruner
        and stop early)."""
        for result, _ in self.fit_model(hp, epochs, seed, hp.style()):
            yield result

    def fit_model(
        self, hp: Space, epochs: int, seed: int, style: Style = Style()
    ) -> Iterator[tuple[EpochResult, torch.nn.Module]]:
        """As :meth:`fit` with ``style``, also yielding the model being trained (retrain keeps
        it) — the averaged copy when ``style.ema`` is set."""
        torch.manual_seed(seed)  # weights and dropout masks
        order = torch.Generator(device=self.device).manual_seed(seed)  # batch order (and shifts)
        # channels_last: oneDNN/cuDNN's preferred layout for these convolutions (≈1.6x on CPU here).
        model = build_model(hp, self.n_classes).to(self.device, memory_format=torch.channels_last)
        optimizer = build_optimizer(hp, model)
        per_epoch = -(-self.n_train // hp.batch_size)  # optimizer steps an epoch (the last batch may be short)
        after_step, kept = step_hooks(model, optimizer, style, epochs * per_epoch)
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            train_loss = train_epoch(
                model,
                optimizer,
                self.images,
                self.labels,
                hp.batch_size,
                order,
                self.precision,
                style,
                after_step,
                self.train_rows,
            )
            if epoch * per_epoch < NORM_SETTLED_STEPS:
                recompute_norm_statistics(kept, self.images, self.train_rows, self.precision)
            val_loss, val_acc = evaluate(kept, self.val_x, self.val_y, self.precision) if self.n_val else (None, None)
            yield EpochResult(epoch, train_loss, val_loss, val_acc, time.perf_counter() - start), kept


# Batch norm's running statistics move 10% of the way to each batch's: after 200 steps the
# starting values (mean 0, variance 1) weigh 0.9^200 ≈ 7e-10. Fewer steps — a folder of 114
# images at batch 128 trains one step an epoch — leave them so far off that a model with 100%
# accuracy in training mode scored 33% (chance) in evaluation mode; recomputing them fixed it.
NORM_SETTLED_STEPS = 200


@torch.no_grad()
def recompute_norm_statistics(model: torch.nn.Module, images: torch.Tensor, rows: torch.Tensor, precision: str) -> None:
    """Batch norm's running mean and variance recomputed over the training ``rows`` of ``images``
    (uint8, N × 28 × 28), unaugmented: the exact average over one pass (``momentum=None``), as
    torch.optim.swa_utils.update_bn does. Nothing else of the model changes. No-op without batch norm."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over the batches below
    model.eval()
    for m in norms:  # only the norms in training mode: dropout draws nothing, training's random stream is untouched
        m.train()
    size = eval_batch(images.device)
    for start in range(0, len(rows), size):
        with autocast(images.device, precision):
            model(as_inputs(images[rows[start : start + size]]))  # (B, 1, 28, 28) → the statistics only
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


WARMUP_FRACTION = 0.1  # of all steps: the lr rises linearly to the trial's, then decays as a cosine


def warmup_cosine(steps: int) -> Callable[[int], float]:
    """The lr factor after ``step`` optimizer steps of ``steps``: linear from 1/w to 1 over the
    first w = :data:`WARMUP_FRACTION` of them, then a cosine to 0 — a high lr that batch norm
    tolerates once the first steps have set its statistics."""
    warm = max(1, round(WARMUP_FRACTION * steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, steps - warm))))

    return factor


def step_hooks(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, style: Style, steps: int
) -> tuple[Callable[[], None] | None, torch.nn.Module]:
    """What runs after every optimizer step (lr schedule, weight averaging), and the model
    that training hands back (the average, when there is one)."""
    hooks: list[Callable[[], None]] = []
    if style.schedule == "cosine":
        # stepped per batch, not per epoch: a smooth decay whatever the number of epochs
        hooks.append(torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1)).step)
    elif style.schedule == "warmup":
        hooks.append(torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps)).step)
    kept: torch.nn.Module = model
    if style.ema is not None:
        averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(style.ema), use_buffers=True)
        hooks.append(lambda: averaged.update_parameters(model))
        kept = averaged.module  # the averaged copy, a plain ConvNet: saved and scored as any other
    if not hooks:
        return None, model

    def after_step() -> None:
        for hook in hooks:
            hook()

    return after_step, kept


# Long: one loop; the optional steps (rows, augmentation, after_step) are one line each.
def train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    precision: str = "fp32",
    style: Style = Style(),
    after_step: Callable[[], None] | None = None,
    rows: torch.Tensor | None = None,
) -> float:
    """One epoch over (x, y) — or over their ``rows`` only — in a random order, augmented and
    with the label smoothing of ``style``; x is float inputs (N, 1, 28, 28) or uint8 images
    (N, 28, 28). The mean training loss."""
    model.train()
    n = len(rows) if rows is not None else len(y)
    perm = torch.randperm(n, generator=generator, device=x.device)
    total = torch.zeros((), device=x.device)  # summed on device: no host sync per batch
    for start in range(0, n, batch_size):  # the last, smaller batch is kept, as DataLoader does
        idx = perm[start : start + batch_size] if rows is None else rows[perm[start : start + batch_size]]
        batch = as_inputs(x[idx])  # (B, 1, 28, 28)
        inputs = augment(batch, style, generator)
        with autocast(x.device, precision):
            logits = model(inputs)  # (B, C)
            loss = F.cross_entropy(logits, y[idx], label_smoothing=style.label_smoothing)  # in fp32 under autocast
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        total += loss.detach() * len(idx)
    return float(total) / n


@torch.inference_mode()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str = "fp32") -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on (x, y)."""
    model.eval()
    loss = torch.zeros((), device=x.device)
    correct = torch.zeros((), dtype=torch.long, device=x.device)
    size = eval_batch(x.device)
    for start in range(0, len(y), size):
        with autocast(x.device, precision):
            logits = model(as_inputs(x[start : start + size])).float()
        target = y[start : start + size]
        loss += F.cross_entropy(logits, target, reduction="sum")
        correct += (logits.argmax(1) == target).sum()
    return float(loss) / len(y), int(correct) / len(y)


LATENCY_BATCH = 64  # images: a small batch, as a service classifying uploads would see


@torch.inference_mode()
def inference_seconds(model: torch.nn.Module, device: torch.device, repeats: int = 5) -> float:
    """Seconds per image of ``model``'s forward pass in fp32 (what an exported model runs), on a
    batch of :data:`LATENCY_BATCH` on ``device`` with this process's threads: the fastest of
    ``repeats`` runs after one to warm up (the others met a busy core or a cold cache)."""
    model.eval()
    x = torch.rand(LATENCY_BATCH, 1, 28, 28, device=device).contiguous(memory_format=torch.channels_last)
    best = float("inf")
    for i in range(repeats + 1):
        start = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            best = min(best, time.perf_counter() - start)
    model.train()
    return best / LATENCY_BATCH


@dataclass(frozen=True)
class Scores:
    """A model's scores on a set of images: loss, accuracy and the confusion matrix."""

    loss: float  # mean cross-entropy
    accuracy: float  # fraction in [0, 1]
    confusion: list[list[int]]  # [true class][predicted class] counts, C × C

    @property
    def per_class(self) -> list[float | None]:
        """Accuracy of each true class (None for a class absent from the test set)."""
        return [row[i] / sum(row) if sum(row) else None for i, row in enumerate(self.confusion)]


@torch.inference_mode()
def score(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int = 10) -> Scores:
    """Loss, accuracy and confusion matrix of ``model`` on (x, y); deterministic for a given
    model and data (fixed batch boundaries, no dropout in eval mode). Always fp32: a test
    score must not depend on whether the machine that computes it has bf16 hardware."""
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    c = n_classes
    matrix = torch.zeros(c * c, dtype=torch.long, device=x.device)
    size = eval_batch(x.device)
    for start in range(0, len(y), size):
        logits = model(as_inputs(x[start : start + size]))  # (B, C)
        target = y[start : start + size]  # (B,)
        loss += F.cross_entropy(logits, target, reduction="sum").double()
        matrix += torch.bincount(target * c + logits.argmax(1), minlength=c * c)
    confusion = matrix.view(c, c).cpu()
    return Scores(float(loss) / len(y), int(confusion.trace()) / len(y), confusion.tolist())
