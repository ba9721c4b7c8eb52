"""`optimize`'s options resolved, once, into a frozen :class:`Plan`.

The CLI hands over :class:`OptimizeOptions` exactly as typed (``None`` = "the study's, or the
default"). Each rule that turns them into what runs is a small named function below, testable
without data or training; :func:`make_plan` applies them in order. Nothing here opens storage
or reads data: the caller passes in what the study already holds and what the data is."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cnn_tune.data.datasets import DIGITS, FOLDER, DatasetRef, default_study_name
from cnn_tune.data.images import VAL_FRACTION, Images, split_sizes
from cnn_tune.data.load import parse_dataset
from cnn_tune.errors import ProtocolConflict, UsageError
from cnn_tune.model.choices import architecture_for
from cnn_tune.model.space import SEARCH_SPACE_VERSION
from cnn_tune.search.presets import DEFAULT_PRESET, PRESETS, Search
from cnn_tune.search.records import Plan
from cnn_tune.search.samplers import check_pruner, check_sampler
from cnn_tune.storage.heartbeat import Heartbeat
from cnn_tune.storage.protocol import DEFAULT_EPOCHS, SPLIT_SEED, Protocol
from cnn_tune.storage.urls import DEFAULT_STORAGE


@dataclass(frozen=True)
class OptimizeOptions:
    """What the user asked for. Typer has already checked each option's own bounds."""

    trials: int = 20
    timeout: float | None = None
    epochs: int | None = None  # None: the study's, or DEFAULT_EPOCHS for a new study
    train_limit: int | None = None  # None: the study's, or all images for a new study
    study: str | None = None  # None: named after the data set (mnist-cnn, fashion-mnist-cnn, <folder>-cnn)
    storage: str = DEFAULT_STORAGE
    seed: int | None = None
    device: str = "auto"
    precision: str = "auto"  # auto | fp32 | bf16 (autocast); see training.resolve_precision
    preset: str = DEFAULT_PRESET  # what sampler, pruner, warm_start and workers are when None
    sampler: str | None = None
    pruner: str | None = None
    data_dir: Path | None = None
    workers: int | str | None = None  # processes on this machine sharing the study, or "auto" (see auto_workers)
    threads: int | None = None  # CPU threads per worker; None: the cores shared out among workers
    max_trials: int | None = None  # study-wide cap: stop when this many trials are complete/pruned/running
    heartbeat: Heartbeat = field(default_factory=Heartbeat)
    warm_start: bool | None = None  # a new study's first trial is a known-good configuration (enqueued)
    dataset: str | None = None  # mnist, fashion-mnist or a folder; None: the study's, or mnist for a new study
    patience: int | None = None  # trials in a row without a gain beyond the noise before stopping; None: the preset's


def resolve_search(options: OptimizeOptions) -> Search:
    """Sampler, pruner, warm start, workers and patience: as asked, else the preset's."""
    if options.preset not in PRESETS:
        raise UsageError(f"unknown preset {options.preset!r}", hint=f"use one of: {', '.join(PRESETS)}")
    preset = PRESETS[options.preset]
    return Search(sampler=options.sampler or preset.sampler, pruner=options.pruner or preset.pruner,
                  warm_start=preset.warm_start if options.warm_start is None else options.warm_start,
                  workers=preset.workers if options.workers is None else options.workers,
                  patience=preset.patience if options.patience is None else options.patience)


def study_name(options: OptimizeOptions) -> str:
    """``--study``, else named after ``--dataset`` (``mnist-cnn`` when neither is given)."""
    if options.study is not None:
        return options.study
    return default_study_name(parse_dataset(options.dataset) if options.dataset is not None else DatasetRef())


def resolve_dataset(options: OptimizeOptions, stored: Protocol | None) -> DatasetRef:
    """The data set: as asked, else the study's, else MNIST. A study is never resumed on
    another data set (a folder that moved is the same data set: its fingerprint decides)."""
    if options.dataset is None:
        return stored.ref if stored is not None else DatasetRef()
    asked = parse_dataset(options.dataset)
    if stored is not None and asked.name != stored.dataset:
        raise ProtocolConflict(f"study {options.study!r} was tuned on {stored.ref.text()}; "
                               f"you asked for {asked.text()}",
                               hint="drop --dataset to resume it, or start a new one with --study NAME")
    return asked


def check_options(options: OptimizeOptions) -> Search:
    """What can be refused before anything is opened or read (names only; Typer did the bounds).
    Returns the search resolved from the options and the preset, once: :func:`make_plan` takes it."""
    if options.dataset is not None:
        parse_dataset(options.dataset)
    search = resolve_search(options)
    check_sampler(search.sampler)
    check_pruner(search.pruner)
    options.heartbeat.check()
    if search.workers == "auto":
        check_threads(options.threads, os.cpu_count() or 1)
    return search


def adoptable(has_protocol: bool, n_trials: int) -> bool:
    """A study created but never given a protocol and holding no trial (its creator was killed
    in between) is taken over as if new."""
    return not has_protocol and n_trials == 0


def resolve_length(options: OptimizeOptions, stored: Protocol | None) -> tuple[int, int | None]:
    """Epochs and train limit: as asked, else the study's, else the defaults. Asking a study
    for other values than it was run with is refused: its trials would not be comparable."""
    epochs = options.epochs or (stored.epochs if stored else DEFAULT_EPOCHS)
    limit = options.train_limit if options.train_limit is not None else (stored.train_limit if stored else None)
    if stored and (epochs, limit) != (stored.epochs, stored.train_limit):
        raise ProtocolConflict(
            f"study {options.study!r} runs {stored.epochs} epochs on {stored.train_limit or 'all'} training "
            f"images; you asked {epochs} on {limit or 'all'}",
            hint="drop --epochs/--train-limit to resume it, or start a new one with --study NAME")
    return epochs, limit


def make_protocol(epochs: int, train_limit: int | None, n_images: int, fingerprint: str,
                  ref: DatasetRef = DatasetRef(), classes: tuple[str, ...] = DIGITS) -> Protocol:
    """The protocol of a study on ``n_images`` training images of ``ref`` (``train_limit``
    checked against them); a folder's class names are part of it."""
    if train_limit is not None and not 10 <= train_limit <= n_images:
        raise UsageError(f"--train-limit must be between 10 and {n_images} (the training images available)")
    n_train, n_val = split_sizes(n_images, train_limit)
    return Protocol(epochs=epochs, train_limit=train_limit, split_seed=SPLIT_SEED, val_fraction=VAL_FRACTION,
                    n_train=n_train, n_val=n_val, data_fingerprint=fingerprint,
                    search_space_version=SEARCH_SPACE_VERSION, architecture=architecture_for(len(classes)),
                    dataset=ref.name, dataset_source=ref.source, classes=classes if ref.name == FOLDER else None)


def protocol_for(epochs: int, train_limit: int | None, data: Images) -> Protocol:
    """:func:`make_protocol` for the images in hand."""
    return make_protocol(epochs, train_limit, data.n_train, data.fingerprint, data.ref, data.classes)


def resolve_workers(workers: int, trials: int) -> tuple[int, str | None]:
    """No more workers than trials (an idle worker would only load data); the note says so."""
    if workers <= trials:
        return workers, None
    return trials, (f"--workers {workers} is more than --trials {trials}: "
                    f"starting {trials} worker(s), one trial each")


WORKER_MEMORY_GB = 1.0  # peak RSS of one worker on full MNIST, measured (4 workers: 4.5 GB in all)


def available_memory_gb(meminfo: str | None = None) -> float | None:
    """MemAvailable from /proc/meminfo, in GB (None where there is no such file)."""
    try:
        text = meminfo if meminfo is not None else Path("/proc/meminfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024 ** 2
    return None


def check_threads(threads: int | None, cores: int) -> int:
    """Threads per worker that ``--workers auto`` can give: no more than the cores it shares out."""
    per = threads or 1
    if per > cores:
        raise UsageError(f"--threads {per} is more than the {cores} core(s) that --workers auto shares out",
                         hint=f"drop --threads, give at most --threads {cores}, or give --workers N")
    return per


def auto_workers(device: str, threads: int | None, cores: int, memory_gb: float | None) -> int:
    """``--workers auto``: on a CPU, one worker per ``threads`` cores (1 by default: on 2 cores two
    1-thread workers did 1.2x the work of one 2-thread worker), no more than memory holds.
    On CUDA one worker drives the GPU (several were never measured here)."""
    if device == "cuda":
        return 1
    per = check_threads(threads, cores)
    workers = max(1, cores // per)
    if memory_gb is not None:
        workers = max(1, min(workers, int(memory_gb // WORKER_MEMORY_GB)))
    return workers


def resolve_threads(workers: int, asked: int | None, cores: int | None = None) -> int | None:
    """CPU threads per worker: as asked; else, for several workers, the cores shared out, at
    least one each (N workers × all cores would slow every one of them); else torch's default."""
    if asked is not None or workers == 1:
        return asked
    return max(1, (cores or os.cpu_count() or 1) // workers)


def shared_cores(workers: int, asked: int | None, cores: int | None = None) -> int | None:
    """The cores :func:`resolve_threads` shared out among several workers (None when the threads
    were asked for, or one worker has them all): a worker whose peers have exited may take theirs."""
    if asked is not None or workers == 1:
        return None
    return cores or os.cpu_count() or 1


def workers_for(asked: int | str, trials: int, device: str, threads: int | None) -> tuple[int, str | None]:
    """Workers for ``trials`` on this machine: as asked, or ``auto`` (:func:`auto_workers` from its
    cores and available memory), then :func:`resolve_workers`; the note says what was cut."""
    count = asked if asked != "auto" else auto_workers(device, threads, os.cpu_count() or 1, available_memory_gb())
    return resolve_workers(int(count), trials)


# Long: one keyword per field of the frozen Plan; the rules themselves are the functions above.
def make_plan(options: OptimizeOptions, search: Search, url: str, stored: Protocol | None, trials_before: int,
              data: Images, device: str, precision: str, enqueued_only: bool = False) -> tuple[Plan, list[str]]:
    """The plan, and notes for the user about what was adjusted. ``search``: what
    :func:`check_options` resolved. ``enqueued_only``: run only the trials waiting in the study
    (``confirm``'s runs of a study's top trials), under the study's own protocol."""
    epochs, limit = resolve_length(options, stored)
    protocol = stored if enqueued_only and stored is not None else protocol_for(epochs, limit, data)
    workers, note = workers_for(search.workers, options.trials, device, options.threads)
    plan = Plan(study=options.study, url=url, protocol=protocol, resumed=stored is not None and not enqueued_only,
                trials_before=trials_before, trials=options.trials, workers=workers,
                threads=resolve_threads(workers, options.threads), cores=shared_cores(workers, options.threads),
                timeout=options.timeout, seed=options.seed,
                sampler=search.sampler, pruner=search.pruner, max_trials=options.max_trials,
                heartbeat=options.heartbeat, device=device, precision=precision, data_folder=data.folder,
                # the study name was resolved by the caller (study_name)
                warm_start=search.warm_start, patience=search.patience, enqueued_only=enqueued_only)
    return plan, [note] if note else []
