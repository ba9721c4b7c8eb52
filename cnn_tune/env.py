"""Environment variables cnn-tune reads, in one place (no heavy imports: the CLI loads this
before torch, so ``--help`` stays fast)."""

STORAGE_ENV = "CNN_TUNE_STORAGE"  # default for --storage
STUDY_ENV = "CNN_TUNE_STUDY"  # default for --study
DATA_DIR_ENV = "CNN_TUNE_DATA_DIR"  # default for --data-dir
DEBUG_ENV = "CNN_TUNE_DEBUG"  # 1: tracebacks instead of one-line errors
WORKERS_ENV = "CNN_TUNE_WORKERS"  # --workers of optimize and confirm
