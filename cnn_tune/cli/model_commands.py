"""``retrain``, ``evaluate`` and ``predict``: the final model, trained from a study, re-scored,
and used on new images."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Optional

import typer

from cnn_tune.cli.options import (
    ArtifactsOpt,
    Average,
    DataDirOpt,
    Device,
    DeviceOpt,
    ExportFormat,
    Format,
    FormatOpt,
    KeptCheckpointArg,
    Precision,
    PrecisionOpt,
    RecipeName,
    Schedule,
    StorageOpt,
    StudyOpt,
    WideOpt,
    render,
)
from cnn_tune.model.recipe import MAX_SHIFT, MAX_TOP
from cnn_tune.storage.urls import DEFAULT_STORAGE


# Long: one parameter per option of `retrain`; the body itself is a dozen lines.
def retrain(
    trial: Annotated[
        Optional[int],
        typer.Option("--trial", min=0, metavar="N", help="Trial to retrain. \\[default: the best complete one]"),
    ] = None,
    recipe: Annotated[
        Optional[RecipeName],
        typer.Option(
            "--recipe",
            help="tuned: the trial's own training again, as the search ran it; best: what won per minute "
            "in benchmarks/retrain.py for the article's space (20 epochs, cosine lr, shifts on MNIST); "
            "article: the article's plain training (the study's epochs, constant lr, no augmentation). "
            "\\[default: tuned for the wide space, best for the article's]",
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", min=1, help="Epochs. \\[default: the recipe's]")] = None,
    schedule: Annotated[
        Optional[Schedule],
        typer.Option(
            "--schedule",
            help="Learning rate: the trial's throughout (constant), cosine decay from it to 0, warmup "
            "(a linear rise over the first tenth, then cosine), or auto: cosine, but constant for "
            "Adagrad, whose steps already shrink. "
            "\\[default: the recipe's]",
        ),
    ] = None,
    shift: Annotated[
        Optional[int],
        typer.Option(
            "--shift",
            min=0,
            max=MAX_SHIFT,
            metavar="PX",
            help="Shift each training image at random by up to PX pixels; 0: no augmentation. "
            "\\[default: the recipe's]",
        ),
    ] = None,
    flip: Annotated[
        Optional[bool],
        typer.Option(
            "--flip/--no-flip",
            help="Mirror training images left-right at random (clothes, not digits). \\[default: the recipe's]",
            show_default=False,
        ),
    ] = None,
    average: Annotated[
        Optional[Average],
        typer.Option(
            "--average", help="ema: keep an exponential moving average of the weights. \\[default: the recipe's]"
        ),
    ] = None,
    top: Annotated[
        Optional[int],
        typer.Option(
            "--top",
            min=1,
            max=MAX_TOP,
            metavar="K",
            help="Retrain the K best trials into one checkpoint that averages their probabilities. \\[default: 1]",
        ),
    ] = None,
    seed: Annotated[
        Optional[int], typer.Option("--seed", min=0, help="Training seed. \\[default: each trial's own]")
    ] = None,
    study: StudyOpt = None,
    storage: StorageOpt = DEFAULT_STORAGE,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output", "-o", metavar="PATH", help="Checkpoint file. \\[default: STUDY-trialN.pt beside the database]"
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing checkpoint file.")] = False,
    fmt: FormatOpt = Format.table,
    data_dir: DataDirOpt = None,
    wide: WideOpt = False,
    artifacts: ArtifactsOpt = None,
) -> None:
    """Train the best trial into the final model and score the test set.

    Trains the trial's hyperparameters (default: the best trial's) on all the study's training
    images with a recipe, then scores the test images, writes a checkpoint and records the test
    accuracy on the study. A trial of the wide space is retrained as the search trained it (its
    schedule, augmentation and epochs); one of the article's space by default for 20 epochs
    with a cosine learning rate (constant for Adagrad) and, for MNIST, images shifted by up to 2
    pixels. Any option below overrides one part of the recipe.

    Example: cnn-tune retrain --trial 3 --output best.pt
    """
    from cnn_tune.cli.model_views import evaluation_view
    from cnn_tune.cli.output import terminal
    from cnn_tune.cli.progress import EpochProgress
    from cnn_tune.model.retrain import RetrainSettings
    from cnn_tune.model.retrain import retrain as run_retrain

    changes = {
        "epochs": epochs,
        "schedule": schedule and schedule.value,
        "shift": shift,
        "average": average and average.value,
        "top": top,
        "flip": flip,
    }
    settings = RetrainSettings(
        study=study,
        storage=storage,
        trial=trial,
        recipe=recipe and recipe.value,
        changes={k: v for k, v in changes.items() if v is not None},
        seed=seed,
        artifacts=artifacts,
        device=device.value,
        precision=precision.value,
        output=output,
        overwrite=overwrite,
        data_dir=data_dir,
    )
    progress = EpochProgress(terminal())
    try:
        result = run_retrain(settings, progress.epoch, progress.info, progress.images)
    finally:
        progress.close()
    render(evaluation_view(result.as_dict(), True), fmt, wide=wide)


def evaluate(
    checkpoint: KeptCheckpointArg = None,
    device: DeviceOpt = Device.auto,
    fmt: FormatOpt = Format.table,
    data_dir: DataDirOpt = None,
    wide: WideOpt = False,
    study: StudyOpt = None,
    storage: StorageOpt = DEFAULT_STORAGE,
) -> None:
    """Score a saved checkpoint on the test set again.

    Touches no study: the checkpoint holds everything needed. Without CHECKPOINT, the study's
    final model is fetched from its artifact store and checked (sha256) before it is loaded.

    Example: cnn-tune evaluate studies/mnist-cnn-trial3.pt
    """
    from cnn_tune.cli.model_views import evaluation_view
    from cnn_tune.cli.output import terminal
    from cnn_tune.cli.progress import EpochProgress
    from cnn_tune.model.evaluation import kept_checkpoint, score_checkpoint

    log = EpochProgress(terminal()).info
    with tempfile.TemporaryDirectory() as fetched:
        if checkpoint is None:
            checkpoint, where = kept_checkpoint(storage, study, Path(fetched))
            log(f"The study's final model, from {where} (sha256 checked)")
        result = score_checkpoint(checkpoint, data_dir, device.value, log)
    for note in result.notes:
        typer.echo(f"Note: {note}", err=True)
    render(evaluation_view(result.as_dict(), False), fmt, wide=wide)


def predict(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            metavar="MODEL",
            help="A .pt checkpoint written by `cnn-tune retrain`, or a .onnx file written by "
            "`cnn-tune export` (run without PyTorch).",
        ),
    ],
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="PNG/JPEG files, one object each.")],
    invert: Annotated[
        bool, typer.Option("--invert", help="Invert the images first (a dark digit on white paper for an MNIST model).")
    ] = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Classify images with a checkpoint or an exported ONNX model.

    Prints the class (the digit, for MNIST) and its probability for each file. A .onnx model
    runs in onnxruntime without importing PyTorch: a one-image prediction starts much sooner.

    Images are read as grayscale and resized to 28×28, as the training images were. MNIST
    digits are white on black; for a dark digit on white paper pass --invert.

    Example: cnn-tune predict studies/mnist-cnn-trial3.pt seven.png --invert
    """
    from cnn_tune.cli.model_views import predictions_view

    if checkpoint.suffix.lower() == ".onnx":
        from cnn_tune.model.portable import predict_onnx as run_predict
    else:
        from cnn_tune.model.predict import predict as run_predict
    render(predictions_view([p.as_dict() for p in run_predict(checkpoint, images, invert)]), fmt)


# Long: one parameter per option of `export`; the body itself is a dozen lines.
def export(
    checkpoint: KeptCheckpointArg = None,
    to: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            "-f",
            help="onnx (onnxruntime, OpenCV, TensorRT, browsers; needs the onnx extra) or torchscript (libtorch, C++).",
        ),
    ] = ExportFormat.onnx,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            metavar="PATH",
            help="File to write. \\[default: beside the checkpoint, .onnx or .torchscript.pt]",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file.")] = False,
    data_dir: DataDirOpt = None,
    study: StudyOpt = None,
    storage: StorageOpt = DEFAULT_STORAGE,
) -> None:
    """Export a model as ONNX or TorchScript, checked against it.

    The exported model takes images (N × 1 × 28 × 28, float in [0, 1]) and gives class
    probabilities; its class names, study, trial, data set and test accuracy travel inside it.
    Before the file is kept, it and the checkpoint classify the study's test images (its
    validation images without a test set): every class must agree, and the largest probability
    difference is printed. A disagreement is an error and leaves no file.

    Example: cnn-tune export studies/mnist-cnn-trial10.pt
    """
    from cnn_tune.cli.output import terminal
    from cnn_tune.cli.progress import EpochProgress
    from cnn_tune.model.evaluation import kept_checkpoint
    from cnn_tune.model.export import default_output
    from cnn_tune.model.export import export as run_export
    from cnn_tune.storage.urls import results_folder

    log = EpochProgress(terminal()).info
    with tempfile.TemporaryDirectory() as fetched:
        if checkpoint is None:  # written beside the database, as retrain's checkpoint is
            checkpoint, where = kept_checkpoint(storage, study, Path(fetched))
            log(f"The study's final model, from {where} (sha256 checked)")
            output = output or results_folder(storage) / default_output(checkpoint, to.value).name
        done = run_export(checkpoint, to.value, output, overwrite, data_dir, log)
    typer.echo(
        f"Wrote {done.output} ({done.format}): its classes agree with the checkpoint's on all "
        f"{done.agree} {done.images_from} images; largest probability difference {done.max_difference:.1e}"
    )
