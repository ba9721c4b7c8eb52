"""The search: options resolved once into a frozen plan (``plan``, ``presets``, ``records``),
samplers and pruners (``samplers``), the Optuna objective (``objective``), what one worker does
(``worker``) and what it tells its parent (``events``), running a plan here or in worker
processes (``parallel``, ``forkserve``), and the two commands that search: ``optimize`` and
``confirm``.

May import: ``data``, ``model``, ``storage``, ``processes``, ``cnn_tune.errors``,
``cnn_tune.files``. Never ``cli``. ``records`` is torch-free, so the views that render its
results do not load torch; so are ``events`` and ``parallel``, so the parent of worker
processes never loads it (only ``worker``, ``objective`` and what they import train).
"""

# The modules other folders (and the tests and benchmarks) may import; the rest are this folder's own.
__all__ = ["confirm", "optimize", "plan", "presets", "records", "samplers", "worker"]
