"""`optimize`'s options resolved, once, into a frozen :class:`Plan`.

The CLI hands over :class:`OptimizeOptions` as typed (``None`` = "the study's, or the default";
``--dataset`` already parsed into a :class:`DatasetRef`). :func:`check_options` resolves, once,
what needs nothing opened (the search, the study's name, the workers, this machine's cores) into
:class:`Checked`; :func:`make_plan` applies the rules that need the study and the data. Each rule
is a small named function below, testable without data or training. Nothing here opens storage
or reads data: the caller passes in what the study already holds and what the data is."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cnn_tune.data.datasets import DIGITS, FOLDER, DatasetRef, default_study_name
from cnn_tune.data.images import VAL_FRACTION, Images, split_sizes
from cnn_tune.errors import ProtocolConflict, UsageError
from cnn_tune.model.choices import architecture_for
from cnn_tune.model.space import ARTICLE, SPACES, VERSIONS
from cnn_tune.search.presets import DEFAULT_PRESET, PATIENCE_BY_SPACE, PRESETS, PRUNER_BY_SPACE, Search
from cnn_tune.search.records import Plan
from cnn_tune.search.samplers import check_pruner, check_sampler
from cnn_tune.storage.artifacts import artifact_folder
from cnn_tune.storage.heartbeat import Heartbeat
from cnn_tune.storage.protocol import EPOCHS_BY_SPACE, SPLIT_SEED, StudyProtocol
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
    dataset: DatasetRef | None = None  # --dataset, parsed; None: the study's, or MNIST for a new study
    patience: int | None = None  # trials in a row without a gain beyond the noise before stopping; None: the preset's
    space: str | None = None  # article or wide; None: the study's, or the preset's for a new study
    max_params: int | None = None  # no trial trains a network with more parameters than this
    artifacts: Path | None = None  # the artifact store's folder; None: artifacts/ beside a SQLite database


def resolve_search(options: OptimizeOptions) -> Search:
    """Sampler, pruner, warm start, workers and patience: as asked, else the preset's."""
    if options.preset not in PRESETS:
        raise UsageError(f"unknown preset {options.preset!r}", hint=f"use one of: {', '.join(PRESETS)}")
    preset = PRESETS[options.preset]
    return Search(
        sampler=options.sampler or preset.sampler,
        pruner=options.pruner or preset.pruner,
        warm_start=preset.warm_start if options.warm_start is None else options.warm_start,
        workers=preset.workers if options.workers is None else options.workers,
        patience=preset.patience if options.patience is None else options.patience,
        space=options.space or preset.space,
    )


def study_name(options: OptimizeOptions) -> str:
    """``--study``, else named after ``--dataset`` (``mnist-cnn`` when neither is given)."""
    if options.study is not None:
        return options.study
    return default_study_name(options.dataset or DatasetRef())


def resolve_dataset(options: OptimizeOptions, stored: StudyProtocol | None) -> DatasetRef:
    """The data set: as asked, else the study's, else MNIST. A study is never resumed on
    another data set (a folder that moved is the same data set: its fingerprint decides)."""
    if options.dataset is None:
        return stored.ref if stored is not None else DatasetRef()
    asked = options.dataset
    if stored is not None and asked.name != stored.dataset:
        raise ProtocolConflict(
            f"study {options.study!r} was tuned on {stored.ref.text()}; you asked for {asked.text()}",
            hint="drop --dataset to resume it, or start a new one with --study NAME",
        )
    return asked


@dataclass(frozen=True)
class Checked:
    """What :func:`check_options` resolved from the options, once, before anything is opened."""

    search: Search  # sampler, pruner, warm start, patience and space: as asked, else the preset's
    study: str  # --study, else named after the data set (study_name)
    workers: int  # processes: as asked, or what --workers auto gives on this machine (auto_workers)
    cores: int  # this machine's CPU cores, read once


def check_options(
    options: OptimizeOptions, device: str = "cpu", cores: int | None = None, memory_gb: float | None = None
) -> Checked:
    """What can be refused before anything is opened or read (names only; Typer did the bounds),
    and what that much decides. ``device``: the resolved one; ``cores`` and ``memory_gb``: this
    machine's unless given (tests give them)."""
    search = resolve_search(options)
    if search.space not in SPACES:
        raise UsageError(f"unknown search space {search.space!r}", hint=f"use one of: {', '.join(SPACES)}")
    check_sampler(search.sampler)
    if search.pruner != "auto":
        check_pruner(search.pruner)
    options.heartbeat.check()
    cores = cores or os.cpu_count() or 1
    workers = (
        auto_workers(device, options.threads, cores, memory_gb if memory_gb is not None else available_memory_gb())
        if search.workers == "auto"
        else int(search.workers)
    )
    return Checked(search, study_name(options), workers, cores)


def never_set_up(has_protocol: bool, n_trials: int) -> bool:
    """A study created but never given a protocol and holding no trial (its creator was killed
    in between) is taken over as if new."""
    return not has_protocol and n_trials == 0


def resolve_space(options: OptimizeOptions, search: Search, stored: StudyProtocol | None) -> str:
    """The search space: a study's own (asking another is refused), else as asked or the preset's."""
    if stored is None:
        return search.space
    if options.space is not None and options.space != stored.space:
        raise ProtocolConflict(
            f"study {options.study!r} searches the {stored.space} space; you asked for {options.space}",
            hint="drop --space to resume it, or start a new one with --study NAME",
        )
    return stored.space


def resolve_patience(search: Search, space: str) -> int:
    """The preset's patience, where it has one for every space (None), is the space's (:data:`PATIENCE_BY_SPACE`)."""
    return PATIENCE_BY_SPACE[space] if search.patience is None else search.patience


def resolve_pruner(search: Search, space: str) -> str:
    """The preset's ``auto`` pruner is the one measured for the space (:data:`PRUNER_BY_SPACE`)."""
    return PRUNER_BY_SPACE[space] if search.pruner == "auto" else search.pruner


def resolve_length(
    options: OptimizeOptions, stored: StudyProtocol | None, space: str = ARTICLE
) -> tuple[int, int | None]:
    """Epochs and train limit: as asked, else the study's, else the space's defaults. Asking a
    study for other values than it was run with is refused: its trials would not be comparable."""
    epochs = options.epochs or (stored.epochs if stored else EPOCHS_BY_SPACE[space])
    limit = options.train_limit if options.train_limit is not None else (stored.train_limit if stored else None)
    if stored and (epochs, limit) != (stored.epochs, stored.train_limit):
        raise ProtocolConflict(
            f"study {options.study!r} runs {stored.epochs} epochs on {stored.train_limit or 'all'} training "
            f"images; you asked {epochs} on {limit or 'all'}",
            hint="drop --epochs/--train-limit to resume it, or start a new one with --study NAME",
        )
    return epochs, limit


def make_protocol(
    epochs: int,
    train_limit: int | None,
    n_images: int,
    fingerprint: str,
    ref: DatasetRef = DatasetRef(),
    classes: tuple[str, ...] = DIGITS,
    space: str = ARTICLE,
) -> StudyProtocol:
    """The protocol of a study on ``n_images`` training images of ``ref`` (``train_limit``
    checked against them); a folder's class names are part of it."""
    if train_limit is not None and not 10 <= train_limit <= n_images:
        raise UsageError(f"--train-limit must be between 10 and {n_images} (the training images available)")
    n_train, n_val = split_sizes(n_images, train_limit)
    return StudyProtocol(
        epochs=epochs,
        train_limit=train_limit,
        split_seed=SPLIT_SEED,
        val_fraction=VAL_FRACTION,
        n_train=n_train,
        n_val=n_val,
        data_fingerprint=fingerprint,
        search_space_version=VERSIONS[space],
        architecture=architecture_for(len(classes), space),
        ref=ref,
        classes=classes if ref.name == FOLDER else None,
        space=space,
    )


def protocol_for(epochs: int, train_limit: int | None, data: Images, space: str = ARTICLE) -> StudyProtocol:
    """:func:`make_protocol` for the images in hand."""
    return make_protocol(epochs, train_limit, data.n_train_images, data.fingerprint, data.ref, data.classes, space)


def resolve_workers(workers: int, trials: int) -> tuple[int, str | None]:
    """No more workers than trials (an idle worker would only load data); the note says so."""
    if workers <= trials:
        return workers, None
    return trials, (f"--workers {workers} is more than --trials {trials}: starting {trials} worker(s), one trial each")


WORKER_MEMORY_GB = 1.0  # peak RSS of one worker on full MNIST, measured (4 workers: 4.5 GB in all)


def available_memory_gb(meminfo: str | None = None) -> float | None:
    """MemAvailable from /proc/meminfo, in GB (None where there is no such file)."""
    try:
        text = meminfo if meminfo is not None else Path("/proc/meminfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    return None


def check_threads(threads: int | None, cores: int) -> int:
    """Threads per worker that ``--workers auto`` can give: no more than the cores it shares out."""
    per = threads or 1
    if per > cores:
        raise UsageError(
            f"--threads {per} is more than the {cores} core(s) that --workers auto shares out",
            hint=f"drop --threads, give at most --threads {cores}, or give --workers N",
        )
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


def resolve_threads(workers: int, asked: int | None, cores: int) -> int | None:
    """CPU threads per worker: as asked; else, for several workers, the cores shared out, at
    least one each (N workers × all cores would slow every one of them); else torch's default."""
    if asked is not None or workers == 1:
        return asked
    return max(1, cores // workers)


def shared_cores(workers: int, asked: int | None, cores: int) -> int | None:
    """The cores :func:`resolve_threads` shared out among several workers (None when the threads
    were asked for, or one worker has them all): a worker whose peers have exited may take theirs."""
    if asked is not None or workers == 1:
        return None
    return cores


# Long: one keyword per field of the frozen Plan; the rules themselves are the functions above.
def make_plan(
    options: OptimizeOptions,
    checked: Checked,
    url: str,
    stored: StudyProtocol | None,
    trials_before: int,
    data: Images,
    device: str,
    precision: str,
    enqueued_only: bool = False,
) -> tuple[Plan, list[str]]:
    """The plan, and notes for the user about what was adjusted.

    ``options``: as typed, its ``study`` already resolved; ``checked``: what :func:`check_options`
    resolved from them; ``url``: the prepared storage URL; ``stored`` and ``trials_before``: the
    study's protocol and trial count (None and 0 for a new study); ``data``: the images read;
    ``device`` and ``precision``: resolved ("cpu"/"cuda", "fp32"/"bf16"); ``enqueued_only``: run
    only the trials waiting in the study (``confirm``'s runs), under the study's own protocol."""
    search = checked.search
    space = resolve_space(options, search, stored)
    epochs, limit = resolve_length(options, stored, space)
    protocol = stored if enqueued_only and stored is not None else protocol_for(epochs, limit, data, space)
    workers, note = resolve_workers(checked.workers, options.trials)
    plan = Plan(
        study=options.study,
        url=url,
        protocol=protocol,
        resumed=stored is not None and not enqueued_only,
        trials_before=trials_before,
        trials=options.trials,
        workers=workers,
        threads=resolve_threads(workers, options.threads, checked.cores),
        cores=shared_cores(workers, options.threads, checked.cores),
        timeout=options.timeout,
        seed=options.seed,
        sampler=search.sampler,
        pruner=resolve_pruner(search, protocol.space),
        max_trials=options.max_trials,
        heartbeat=options.heartbeat,
        device=device,
        precision=precision,
        data_folder=data.folder,
        warm_start=search.warm_start,
        patience=resolve_patience(search, protocol.space),
        enqueued_only=enqueued_only,
        max_params=options.max_params,
        artifacts=artifact_folder(url, options.artifacts),
    )
    return plan, [note] if note else []
