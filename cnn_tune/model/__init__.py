"""The network and how it is trained: the search space (``space``), the ConvNet (``network``),
training and scoring (``training``; its torch-free parts: ``device`` picks the device and
precision, ``results`` is what an epoch reports, ``choices`` holds the fixed names), the final
model's recipes (``recipe``), weights-only checkpoints (``checkpoint``), the final model
trained from a study (``retrain``) and classification of new images (``predict``).

May import: ``data``, ``storage`` (``retrain`` reads the study it trains from and stores its
record there), ``cnn_tune.errors``, ``cnn_tune.files``. Never ``search`` or ``cli``.
"""
