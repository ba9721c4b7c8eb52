"""The study database, only ever through Optuna's public API: storage URLs and SQLite safety
(``urls``), opening storage once per process (``engine``), one-line answers to database faults
and the library warnings decided about (``faults``), the heartbeat (``heartbeat``), studies and
the records cnn-tune keeps on them (``studies``, ``protocol``), where a study stands and why
a search stopped (``patience``), read-only views of trials (``inspection``), copies
(``backup``) and optuna-dashboard (``dashboard``).

May import: ``data.datasets`` (the protocol names the data set), ``cnn_tune.errors``,
``cnn_tune.files``. Torch-free: the CLI inspects studies without loading torch.
"""

# The modules other folders (and the tests and benchmarks) may import; the rest are this folder's own.
__all__ = [
    "artifacts",
    "backup",
    "dashboard",
    "engine",
    "faults",
    "heartbeat",
    "inspection",
    "patience",
    "protocol",
    "studies",
    "urls",
]
