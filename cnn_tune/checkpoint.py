"""Checkpoints of retrained models: saved as plain data, loaded without executing anything.

A checkpoint is a ``torch.save`` of a dict of plain types and tensors. Loading uses
``torch.load(weights_only=True)``, whose unpickler admits only tensors and containers of
primitive values — a file crafted to run code on load is refused — and then every field is
validated before a model is built from it.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .files import write_atomic
from .model import ARCHITECTURE, ConvNet, build_model
from .space import Hyperparams

FORMAT = "cnn-tune-checkpoint"
FORMAT_VERSION = 1
REQUIRED = {"format": str, "format_version": int, "architecture": str, "state_dict": dict, "hyperparams": dict,
            "protocol": dict, "metrics": dict, "data_md5": dict, "versions": dict, "created": str,
            "study": str, "trial": int, "epochs": int, "seed": int}


@dataclass
class Checkpoint:
    model: ConvNet  # in eval mode, on the CPU
    hyperparams: Hyperparams
    meta: dict[str, Any]  # everything but the weights, JSON-ready


def save(path: Path, model: torch.nn.Module, meta: dict[str, Any]) -> None:
    """Write atomically: a crash never leaves half a checkpoint under ``path``."""
    # contiguous CPU copies: channels_last weights would otherwise be saved in that layout
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "architecture": ARCHITECTURE,
               "state_dict": state, **meta}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue())


def load(path: Path) -> Checkpoint:
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}", hint="run `cnn-tune retrain` to make one")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint",
                              hint="give the .pt file `cnn-tune retrain` wrote")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global it does not know (code that would run on load) and
        # any opcode outside its subset (files that are not pickles of plain data at all)
        reason = _refusal(exc)
        verdict = "refused to load it" if "GLOBAL" in reason.upper() else "cannot read it"
        raise CheckpointError(f"{path} is not a cnn-tune checkpoint; {verdict} ({reason})",
                              hint="only load checkpoints written by `cnn-tune retrain`") from None
    except Exception as exc:  # noqa: BLE001 - any failure of a weights-only load means a bad file
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{path} is damaged or not a checkpoint ({type(exc).__name__}: {first[:160]})",
                              hint="run `cnn-tune retrain` again to rewrite it") from None
    return _validate(path, payload)


_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)",
                "In PyTorch 2.6")


def _refusal(exc: Exception) -> str:
    """The unpickler's reason in a few words, e.g. ``Trying to load unsupported GLOBAL
    posix.system …`` or ``Unsupported operand 35``, without torch's advice to disable the check."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in lines:
        reason = line.split("WeightsUnpickler error:", 1)[-1].strip()
        if reason and not reason.startswith(_BOILERPLATE):
            return reason.split(" was not an allowed")[0][:160]
    return type(exc).__name__


def _validate(path: Path, payload: Any) -> Checkpoint:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a PyTorch file but not a cnn-tune checkpoint",
                              hint="give a file written by `cnn-tune retrain`")
    wrong = [k for k, kind in REQUIRED.items() if not isinstance(payload.get(k), kind)]
    if wrong:
        raise CheckpointError(f"{path} lacks or has malformed fields: {', '.join(wrong)}",
                              hint="run `cnn-tune retrain` again to rewrite it")
    if payload["format_version"] > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer cnn-tune (format {payload['format_version']})",
                              hint="upgrade cnn-tune")
    if payload["architecture"] != ARCHITECTURE:
        raise CheckpointError(f"{path} holds a {payload['architecture']!r} network; "
                              f"this cnn-tune builds {ARCHITECTURE!r}",
                              hint="evaluate it with the cnn-tune version that wrote it")
    try:
        hp = Hyperparams.from_params(payload["hyperparams"])
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} has invalid hyperparameters: {exc}",
                              hint="run `cnn-tune retrain` again") from None
    model = build_model(hp)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = payload["state_dict"]
    got = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if got != expected or len(state) != len(expected):
        raise CheckpointError(f"{path}: the weights do not fit a ConvNet with fc2_input_dim={hp.fc2_input_dim}",
                              hint="the file was altered; run `cnn-tune retrain` again")
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise CheckpointError(f"{path} holds non-finite weights", hint="run `cnn-tune retrain` again")
    model.load_state_dict(state)
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return Checkpoint(model=model, hyperparams=hp, meta=meta)
