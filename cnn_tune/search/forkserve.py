"""What the fork server of ``optimize --workers N`` imports before it forks any worker (and
nothing else imports): torch, optuna and the worker code, loaded once and then frozen.

``gc.freeze()`` moves every object alive now out of the collector's generations: a collection
in a worker then never writes to their headers, so the pages holding them stay shared with the
fork server instead of being copied into each worker the first time the collector runs.
"""

import gc

from cnn_tune.search import parallel, worker  # noqa: F401 - imported for their imports: torch, optuna, sqlalchemy, training

gc.freeze()
