"""Evaluation runs in chunks (256 images on CPU, 4096 on CUDA); the chunks, including the last
short one, must add up to what one pass over all images gives."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cnn_tune.model import build_model
from cnn_tune.space import Hyperparams
from cnn_tune.training import eval_batch, evaluate, score

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


def test_evaluation_batch_follows_the_device():
    # small on CPU (cache), large on CUDA (launch overhead); see training.EVAL_BATCH_CPU
    assert eval_batch(torch.device("cpu")) == 256
    assert eval_batch(torch.device("cuda")) == 4096
