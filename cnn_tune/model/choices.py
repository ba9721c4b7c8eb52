"""The fixed choices of options whose library modules import torch, and the network's
architecture names: kept here, torch-free, so the CLI builds its ``--help`` from the library's
own tuples and a study's protocol is planned without loading torch."""

DEVICES = ("auto", "cpu", "cuda")  # device.resolve_device
PRECISIONS = ("auto", "fp32", "bf16")  # device.resolve_precision

# Stored in the protocol and in checkpoints; bump if the layers change. v1 has 10 outputs (every
# study and checkpoint made before other data sets); v2 is the same network with one output per
# class, the class names stored beside it. A 10-class network is recorded as v1: it is v1.
# v3 is the wide space's network (model.network.WideNet), one output per class whatever their number.
ARCHITECTURE = "ConvNet-v1"
ARCHITECTURE_PER_CLASS = "ConvNet-v2"
ARCHITECTURE_WIDE = "ConvNet-v3"
ARCHITECTURES = (ARCHITECTURE, ARCHITECTURE_PER_CLASS, ARCHITECTURE_WIDE)


def architecture_for(n_classes: int, space: str = "article") -> str:
    if space == "wide":
        return ARCHITECTURE_WIDE
    return ARCHITECTURE if n_classes == 10 else ARCHITECTURE_PER_CLASS
