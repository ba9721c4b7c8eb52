"""The networks and how they are trained: the search spaces and the style each record trains
with (``space``), the networks (``network``) and their size worked out torch-free (``size``),
augmentation (``augment``), training and scoring (``training``; its torch-free parts: ``device``
picks the device and precision, ``results`` is what an epoch reports, ``choices`` holds the
fixed names), the final model's recipes (``recipe``), weights-only checkpoints
(``checkpoint``), the final model trained from a study (``retrain``) and scored (``evaluation``),
classification of new images (``predict``; ``portable`` for an exported ONNX model, without
torch) and the exports themselves (``export``).

May import: ``data``, ``storage`` (``retrain`` reads the study it trains from and stores its
record there), ``cnn_tune.errors``, ``cnn_tune.files``. Never ``search`` or ``cli``.
"""

# The modules other folders (and the tests and benchmarks) may import; the rest are this folder's own.
__all__ = [
    "augment",
    "checkpoint",
    "choices",
    "device",
    "evaluation",
    "kept",
    "export",
    "network",
    "portable",
    "predict",
    "recipe",
    "results",
    "retrain",
    "size",
    "space",
    "training",
]
