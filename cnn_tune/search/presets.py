"""How `optimize` searches unless told otherwise: named presets of (sampler, pruner, warm
start, workers, patience, space). Torch-free, so the CLI builds its choices without loading torch.

``fast`` is the default: the wide space, each trial trained with the recipe its final model
gets, multivariate TPE, the space's pruner, a warm start, one worker per core and a patience of
8 — what docs/performance.md measured to give the best final model per minute. ``article`` is
the seed article's search, one flag away: its space, TPE and the median pruner, one worker, 20
trials, no stop. How each came to be is in CHANGELOG.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Search:
    """How a search runs: sampler, pruner, warm start, workers, patience and space (a preset's, or
    as asked)."""

    sampler: str  # a name in samplers.SAMPLERS
    pruner: str  # a name in samplers.PRUNERS
    warm_start: bool  # a new study's first trial is the article's configuration
    workers: int | str  # or "auto": one 1-thread worker per core, as memory allows
    patience: int | None = 0  # stop after this many trials in a row without a gain beyond the noise; 0: never;
    # None: the space's (PATIENCE_BY_SPACE)
    space: str = "article"  # the search space a new study searches (model.space.SPACES)


# ``auto``: the pruner measured for the study's space. The narrowing pruner was calibrated on the
# article's 10-epoch constant-lr curves; the wide space's trials follow a cosine schedule over 20
# epochs, where successive halving in images seen spends the epochs on the few that lead.
PRUNER_BY_SPACE = {"article": "narrowing", "wide": "halving"}

# The patience measured for each space: 8 for the article's (0.7: the final model's median test
# accuracy kept, fewer epochs); 5 for the wide one, whose complete trials cost 20 epochs each (a
# search with 8 ran 22 minutes on a slow hour of the 2-core machine, docs/performance.md).
PATIENCE_BY_SPACE = {"article": 8, "wide": 5}

PRESETS: dict[str, Search] = {
    "fast": Search(sampler="tpe-mv", pruner="auto", warm_start=True, workers="auto", patience=None, space="wide"),
    "article": Search(sampler="tpe", pruner="median", warm_start=False, workers=1, space="article"),
}
DEFAULT_PRESET = "fast"
