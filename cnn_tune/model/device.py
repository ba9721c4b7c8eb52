"""Which device and precision a command trains on, decided without importing torch where that
cannot change the answer.

Why torch-free: the parent of ``optimize --workers N`` only coordinates; its workers train. The
CUDA build of torch costs every process that imports it ~345 MB of its own memory (operator
tables and library initialisers), a quarter of what the whole command holds, so the parent
asks torch only when there is a GPU for torch to find.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cnn_tune.errors import UsageError
from cnn_tune.model.choices import DEVICES, PRECISIONS

# Device nodes some GPU driver creates: NVIDIA's, WSL's GPU paravirtualisation, AMD's (ROCm builds
# of torch answer torch.cuda too). CUDA cannot run without one of them, so where Linux shows
# none, torch.cuda.is_available() is False and we need not import torch to hear it.
GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd")


def no_gpu_possible(dev: Path = Path("/")) -> bool:
    """True where no GPU can be present: Linux without any GPU driver's device node. Elsewhere
    (macOS, Windows) we cannot tell cheaply, so False: ask torch."""
    if not sys.platform.startswith("linux"):
        return False
    return not any((dev / node.lstrip("/")).exists() for node in GPU_NODES)


def cuda_available() -> bool:
    if no_gpu_possible():
        return False
    import torch

    return torch.cuda.is_available()


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` when torch sees a CUDA device, else ``cpu``. Asking for CUDA without
    one is a usage error. The device's type, for ``torch.device(...)``."""
    if name not in DEVICES:
        raise UsageError(f"unknown device {name!r}", hint=f"use {', '.join(DEVICES)}")
    if name == "auto":
        return "cuda" if cuda_available() else "cpu"
    if name == "cuda" and not cuda_available():
        raise UsageError("--device cuda was asked for, but torch sees no CUDA device", hint="use --device cpu or auto")
    return name


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """AMX-BF16 or AVX512-BF16: CPUs where oneDNN runs bf16 convolutions in hardware. Elsewhere
    bf16 is emulated — measured 12x *slower* than fp32 on an AVX2-only EPYC — so auto keeps fp32."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no way to tell cheaply, stay with fp32
            return False
    flags = set(cpuinfo.split())
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(name: str, device: str) -> str:
    """``auto`` → bf16 autocast where the hardware runs it natively (CUDA with bf16 support,
    CPUs with AMX/AVX512-BF16), else fp32. Weights and optimizer state stay fp32 either way.
    ``device`` is a resolved device type (:func:`resolve_device`)."""
    if name not in PRECISIONS:
        raise UsageError(f"unknown precision {name!r}", hint=f"use {', '.join(PRECISIONS)}")
    if device == "cuda":
        import torch

        supported = torch.cuda.is_bf16_supported()
    else:
        supported = cpu_has_fast_bf16()
    if name == "bf16" and device == "cuda" and not supported:
        raise UsageError("this GPU has no bf16 support", hint="use --precision fp32 or auto")
    if name == "auto":
        return "bf16" if supported else "fp32"
    return name
