"""Checkpoints of retrained models: saved as plain data, loaded without executing anything.

A checkpoint is a ``torch.save`` of a dict of plain types and tensors. Loading uses
``torch.load(weights_only=True)``, whose unpickler admits only tensors and containers of
primitive values — a file crafted to run code on load is refused — and then every field is
validated before a model is built from it.

A network of another width than MNIST's 10 classes is architecture ``ConvNet-v2``; its class
names are the top-level ``classes`` (label order), which `predict` prints. A network of the
wide space is ``ConvNet-v3`` (:class:`~cnn_tune.model.network.WideNet`), whatever its classes.

Format 2 holds ``members``: one or more trained networks (an ensemble of the top K trials),
each with its trial, seed, hyperparameters and weights. Format 1 (one network, its weights
in ``state_dict`` at the top) is still read: it loads as an ensemble of one.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnn_tune.data.datasets import DIGITS
from cnn_tune.errors import CheckpointError
from cnn_tune.files import write_atomic
from cnn_tune.model.choices import ARCHITECTURE, ARCHITECTURE_WIDE, ARCHITECTURES, architecture_for
from cnn_tune.model.network import Ensemble, build_model
from cnn_tune.model.space import ARTICLE, WIDE, Hyperparams, Space, WideHyperparams, short_text

FORMAT = "cnn-tune-checkpoint"
FORMAT_VERSION = 2
REQUIRED = {
    "format": str,
    "format_version": int,
    "architecture": str,
    "hyperparams": dict,
    "protocol": dict,
    "metrics": dict,
    "data_md5": dict,
    "versions": dict,
    "created": str,
    "study": str,
    "trial": int,
    "epochs": int,
    "seed": int,
}
MEMBER_REQUIRED = {"architecture": str, "trial": int, "seed": int, "hyperparams": dict, "state_dict": dict}


@dataclass
class Member:
    """One trained network of a checkpoint."""

    trial: int
    seed: int
    hyperparams: Space
    model: torch.nn.Module

    def as_meta(self) -> dict[str, Any]:
        """What a checkpoint's metadata (and `retrain`'s result) says of this member."""
        return {"trial": self.trial, "seed": self.seed, "hyperparams": self.hyperparams.as_dict()}


@dataclass
class Checkpoint:
    model: Ensemble  # in eval mode, on the CPU; one member for a single-model checkpoint
    hyperparams: Space  # the first (best) member's
    meta: dict[str, Any]  # everything but the weights, JSON-ready; "members": [{trial, seed, hyperparams}]


def save(path: Path, members: list[Member], meta: dict[str, Any], classes: tuple[str, ...] = DIGITS) -> None:
    """Write atomically: a crash never leaves half a checkpoint under ``path``."""
    if not members:
        raise ValueError("a checkpoint needs at least one member")
    architecture = architecture_for(
        len(classes), WIDE if isinstance(members[0].hyperparams, WideHyperparams) else ARTICLE
    )
    # contiguous CPU copies: channels_last weights would otherwise be saved in that layout
    stored = [
        {
            "architecture": architecture,
            **m.as_meta(),
            "state_dict": {k: v.detach().to("cpu").contiguous() for k, v in m.model.state_dict().items()},
        }
        for m in members
    ]
    first = members[0]
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        **meta,
        "classes": list(classes),
        "members": stored,
        "hyperparams": first.hyperparams.as_dict(),
        "trial": first.trial,
        "seed": first.seed,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomic(path, buffer.getvalue())


def load(path: Path) -> Checkpoint:
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}", hint="run `cnn-tune retrain` to make one")
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a folder, not a checkpoint", hint="give the .pt file `cnn-tune retrain` wrote"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses any global it does not know (code that would run on load) and
        # any opcode outside its subset (files that are not pickles of plain data at all)
        reason = _refusal(exc)
        verdict = "refused to load it" if "GLOBAL" in reason.upper() else "cannot read it"
        raise CheckpointError(
            f"{path} is not a cnn-tune checkpoint; {verdict} ({reason})",
            hint="only load checkpoints written by `cnn-tune retrain`",
        ) from None
    except Exception as exc:  # noqa: BLE001 - any failure of a weights-only load means a bad file
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"{path} is damaged or not a checkpoint ({type(exc).__name__}: {first[:160]})",
            hint="run `cnn-tune retrain` again to rewrite it",
        ) from None
    return _validate(path, payload)


_BOILERPLATE = (
    "Weights only load failed",
    "Please file an issue",
    "Check the documentation",
    "(1)",
    "(2)",
    "In PyTorch 2.6",
)


def _refusal(exc: Exception) -> str:
    """The unpickler's reason in a few words, e.g. ``Trying to load unsupported GLOBAL
    posix.system …`` or ``Unsupported operand 35``, without torch's advice to disable the check."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for line in lines:
        reason = line.split("WeightsUnpickler error:", 1)[-1].strip()
        if reason and not reason.startswith(_BOILERPLATE):
            return reason.split(" was not an allowed")[0][:160]
    return type(exc).__name__


# Long: one check per field of a checkpoint, in the order they are read, each with its own message.
def _validate(path: Path, payload: Any) -> Checkpoint:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is a PyTorch file but not a cnn-tune checkpoint", hint="give a file written by `cnn-tune retrain`"
        )
    _require(path, payload, REQUIRED, "")
    if payload["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer cnn-tune (format {payload['format_version']})", hint="upgrade cnn-tune"
        )
    if payload["format_version"] < 2:  # format 1: one network, its weights at the top
        _require(path, payload, {"state_dict": dict}, "")
        stored = [
            {
                "architecture": payload["architecture"],
                "trial": payload["trial"],
                "seed": payload["seed"],
                "hyperparams": payload["hyperparams"],
                "state_dict": payload["state_dict"],
            }
        ]
    else:
        stored = payload.get("members")
        if not isinstance(stored, list) or not stored:
            raise CheckpointError(
                f"{path} holds no model (its list of members is {'empty' if isinstance(stored, list) else 'missing'})",
                hint="run `cnn-tune retrain` again to rewrite it",
            )
    for i, member in enumerate(stored):
        if not isinstance(member, dict):
            raise CheckpointError(f"{path}: member {i} is not a model", hint="run `cnn-tune retrain` again")
        _require(path, member, MEMBER_REQUIRED, f"member {i}: ")
    kinds = sorted({m["architecture"] for m in stored})
    if len(kinds) > 1:
        raise CheckpointError(
            f"{path} mixes network architectures ({', '.join(kinds)}); an ensemble needs one",
            hint="run `cnn-tune retrain` again to rewrite it",
        )
    foreign = [a for a in (payload["architecture"], kinds[0]) if a not in ARCHITECTURES]
    if foreign:
        raise CheckpointError(
            f"{path} holds a {foreign[0]!r} network; this cnn-tune builds {' and '.join(map(repr, ARCHITECTURES))}",
            hint="evaluate it with the cnn-tune version that wrote it",
        )
    classes = _classes(path, payload)
    space = WideHyperparams if kinds[0] == ARCHITECTURE_WIDE else Hyperparams
    members = [_member(path, m, i if len(stored) > 1 else None, len(classes), space) for i, m in enumerate(stored)]
    model = Ensemble([m.model for m in members])
    model.eval()
    meta = {k: v for k, v in payload.items() if k not in ("state_dict", "members")}
    meta["members"] = [m.as_meta() for m in members]
    meta["classes"] = list(classes)
    return Checkpoint(model=model, hyperparams=members[0].hyperparams, meta=meta)


def _classes(path: Path, payload: dict) -> tuple[str, ...]:
    """Label k's name, as stored; a v1 network (10 outputs) without names has the digits'
    (every checkpoint made before other data sets)."""
    classes = payload.get("classes")
    if classes is None and payload["architecture"] == ARCHITECTURE:
        return DIGITS
    ok = isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)
    if not ok or (payload["architecture"] == ARCHITECTURE and len(classes) != len(DIGITS)):
        raise CheckpointError(
            f"{path}: lacks or has malformed fields: classes", hint="run `cnn-tune retrain` again to rewrite it"
        )
    return tuple(classes)


def _require(path: Path, fields: dict, required: dict[str, type], where: str) -> None:
    wrong = [k for k, kind in required.items() if not isinstance(fields.get(k), kind)]
    if wrong:
        raise CheckpointError(
            f"{path}: {where}lacks or has malformed fields: {', '.join(wrong)}",
            hint="run `cnn-tune retrain` again to rewrite it",
        )


def _member(path: Path, stored: dict, index: int | None, n_classes: int, space: type[Space]) -> Member:
    """Build one network of ``space`` from its stored fields; every check names the file (and the member)."""
    where = f"{path}" if index is None else f"{path} (member {index})"
    try:
        hp = space.from_params(stored["hyperparams"])  # type: ignore[attr-defined]
    except (ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{where} has invalid hyperparameters: {exc}", hint="run `cnn-tune retrain` again"
        ) from None
    model = build_model(hp, n_classes)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = stored["state_dict"]
    got = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if got != expected or len(state) != len(expected):
        raise CheckpointError(
            f"{where}: the weights do not fit a {stored['architecture']} network of "
            f"{short_text(hp.as_dict())} and {n_classes} classes",
            hint="the file was altered; run `cnn-tune retrain` again",
        )
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise CheckpointError(f"{where} holds non-finite weights", hint="run `cnn-tune retrain` again")
    model.load_state_dict(state)
    model.eval()
    return Member(stored["trial"], stored["seed"], hp, model)
