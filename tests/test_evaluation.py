"""Evaluation runs in chunks (256 images on CPU, 4096 on CUDA); the chunks, including the last
short one, must add up to what one pass over all images gives."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnn_tune.model.network import build_model
from cnn_tune.model.space import Hyperparams
from cnn_tune.model.training import eval_batch, evaluate, score

N = 1000  # not a multiple of the CPU chunk: the last chunk is short


def one_pass(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    with torch.no_grad():
        logits = model.eval()(x)  # (N, 10), fp32, one batch
    predicted = logits.argmax(1)
    return F.cross_entropy(logits, y).item(), (predicted == y).float().mean().item(), predicted


def test_chunked_evaluation_matches_one_pass():
    torch.manual_seed(3)
    model = build_model(Hyperparams()).to(memory_format=torch.channels_last)
    x = torch.rand(N, 1, 28, 28)
    # labels the untrained model half agrees with, so accuracy is neither 0 nor 1
    with torch.no_grad():
        y = model.eval()(x).argmax(1)
    y[::2] = (y[::2] + 1) % 10
    loss, accuracy, predicted = one_pass(model, x, y)
    assert eval_batch(torch.device("cpu")) < N and N % eval_batch(torch.device("cpu"))

    chunked_loss, chunked_accuracy = evaluate(model, x, y, "fp32")
    assert chunked_accuracy == accuracy
    assert abs(chunked_loss - loss) < 1e-5

    scores = score(model, x, y)
    assert scores.accuracy == accuracy and abs(scores.loss - loss) < 1e-5
    expected = torch.zeros(10, 10, dtype=torch.long)
    expected.index_put_((y, predicted), torch.ones(N, dtype=torch.long), accumulate=True)
    assert scores.confusion == expected.tolist()


def test_cpu_evaluation_never_sees_a_batch_larger_than_the_cache_sized_one():
    # A 4096-image batch spilled the cache (~1.8x slower on the 2-core CPU); see EVAL_BATCH_CPU.
    model = build_model(Hyperparams()).to(memory_format=torch.channels_last)
    seen: list[int] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(len(args[0])))
    n = 3 * eval_batch(torch.device("cpu")) + 5  # three full batches and a short one
    x, y = torch.rand(n, 1, 28, 28), torch.randint(0, 10, (n,))
    evaluate(model, x, y)
    score(model, x, y)
    assert max(seen) == eval_batch(torch.device("cpu")) < 4096
    assert sum(seen) == 2 * len(y)  # every image scored once by each
