"""How `optimize` searches unless told otherwise: named presets of (sampler, pruner, warm
start, workers). Torch-free, so the CLI builds its choices without loading torch.

``fast`` is the default because of benchmarks/search.py's full-mode run (docs/performance.md):
on the seed protocol it reached 98.9% validation accuracy sooner and finished sooner than the
article's choice, over held-out seeds. Its patience of 8 since 0.7: on MNIST and on
Fashion-MNIST the final model's median test accuracy stayed within the test interval of the
unstopped search's while the search trained fewer epochs (docs/performance.md, "Knowing when to
stop"). ``article`` is the seed article's choice, one flag away: 20 trials, no stop.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Search:
    sampler: str  # a name in samplers.SAMPLERS
    pruner: str  # a name in samplers.PRUNERS
    warm_start: bool  # a new study's first trial is the article's configuration
    workers: int | str  # or "auto": one 1-thread worker per core, as memory allows
    patience: int = 0  # stop after this many trials in a row without a gain beyond the noise; 0: never


PRESETS: dict[str, Search] = {
    "fast": Search(sampler="tpe-mv", pruner="narrowing", warm_start=True, workers="auto", patience=8),
    "article": Search(sampler="tpe", pruner="median", warm_start=False, workers=1),
}
DEFAULT_PRESET = "fast"
