"""The fixed choices of options whose library modules import torch: kept here, torch-free, so
the CLI builds its ``--help`` from the library's own tuples without loading torch."""

DEVICES = ("auto", "cpu", "cuda")  # training.resolve_device
PRECISIONS = ("auto", "fp32", "bf16")  # training.resolve_precision
