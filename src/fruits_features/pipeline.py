"""The job: list, load, embed, reduce, write, with counts and timings at each stage boundary."""

from __future__ import annotations

import importlib.util
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_features import progress
from fruits_features.classifier import ClassifierError, Evaluation, most_confused, train_and_evaluate
from fruits_features.config import JobConfig
from fruits_features.embedding import FEATURE_DIM, EmbedCounters, EmbedSpec, embed_column
from fruits_features.errors import (
    ConfigError,
    FruitsFeaturesError,
    InputError,
    PipelineError,
    TooManyRejectsError,
)
from fruits_features.loading import keys_frame, partition_count
from fruits_features.manifest import StageTimer, library_versions, utc_now
from fruits_features.model_store import ModelInfo, save_model
from fruits_features.onnx_model import check_onnx
from fruits_features.output import (
    FEATURES_DIR,
    METRICS_FILE,
    MODEL_DIR,
    PREDICTIONS_DIR,
    REPORT_DIR,
    finish_run,
    json_bytes,
    upload_folder,
    write_parts,
    write_report,
)
from fruits_features.progress import ProgressEndpoint
from fruits_features.reduction import Reduction, components_to_columns, fit_reduction, project
from fruits_features.report import (
    INDEX_FILE,
    ConfusedExample,
    ReportInputs,
    confused_examples,
    most_frequent,
    scatter_sample,
    write_report_folder,
)
from fruits_features.storage import (
    Listing,
    S3Settings,
    S3Uri,
    check_output_writable,
    list_images,
    s3_client,
    write_object,
)
from fruits_features.weights import check_weights, weights_sha256

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """Where a finished run wrote its results, and its manifest."""

    run_uri: str
    manifest: dict[str, Any]


def s3_settings(config: JobConfig) -> S3Settings:
    """The boto3 settings for this job's clients, on the driver and the executors."""
    return S3Settings(
        retry_mode=config.s3.retry_mode,
        max_attempts=config.s3.max_attempts,
        max_pool_connections=config.s3.max_pool_connections,
        expected_bucket_owner=config.s3.expected_bucket_owner,
        sse=config.output.sse,
        sse_kms_key_id=config.output.kms_key_id,
    )


def stage_timer(spark: SparkSession, config: JobConfig) -> StageTimer:
    """Times the stages; logs how each long one is going every ``progress_interval_seconds``."""
    interval = config.progress_interval_seconds
    return StageTimer(watch=lambda name: progress.stage_progress(name, interval, spark.sparkContext))


def embed_spec(config: JobConfig) -> EmbedSpec:
    """The model settings shipped to the executors."""
    return EmbedSpec(
        weights=config.model.weights,
        image_size=config.model.image_size,
        batch_size=config.model.batch_size,
        threads=config.model.threads,
        max_image_pixels=config.model.max_image_pixels,
        s3=s3_settings(config),
        engine=config.model.engine,
        onnx=config.model.onnx_location() if config.model.uses_onnx else None,
        precision=config.model.precision,
    )


def check_model(config: JobConfig) -> dict[str, Any]:
    """Make sure the engine's model files can be had and agree; the manifest's ``model`` section.

    Raises:
        WeightsUnavailableError: ``model.weights`` (or the ONNX file) cannot be had.
        OnnxMismatchError: the ONNX file was exported from other weights or for another size.
    """
    settings = s3_settings(config)
    model = config.model
    check_weights(model.weights, settings)
    if model.engine == "tensorflow":
        if importlib.util.find_spec("tensorflow") is None:
            raise ConfigError(
                "model.engine=tensorflow, but TensorFlow is not installed: install the 'tensorflow' "
                "extra (pip install 'fruits-features[tensorflow]') or use model.engine=onnxruntime"
            )
        return {"engine": model.engine}
    if model.engine == "openvino" and importlib.util.find_spec("openvino") is None:
        raise ConfigError(
            "model.engine=openvino, but OpenVINO is not installed: install the 'openvino' extra "
            "(pip install 'fruits-features[openvino]') or use model.engine=auto or onnxruntime"
        )
    location = model.onnx_location()
    info = check_onnx(location, model.weights, model.image_size, settings)
    log.info("ONNX model %s: exported from %s, %dpx", location, info.weights, info.image_size)
    return {
        "engine": model.engine,
        "precision": model.precision,
        "onnx": location,
        "onnx_export": asdict(info),
    }


def embed_images(
    keys: DataFrame,
    spec: EmbedSpec,
    counters: EmbedCounters,
    fetch_threads: int,
    progress: ProgressEndpoint | None = None,
) -> DataFrame:
    """Stage: ``path, label`` -> ``path, label, features, error``, reading S3 on the executors.

    ``features`` is null exactly where ``error`` says why.
    """
    embedded = keys.withColumn(
        "_embedding",
        embed_column(F.col("path"), spec, counters, fetch_threads=fetch_threads, progress=progress),
    )
    return embedded.select(
        "path",
        "label",
        F.col("_embedding.features").alias("features"),
        F.when(
            F.col("_embedding.features").isNull(),
            F.coalesce("_embedding.error", F.lit("no features and no reason recorded")),
        ).alias("error"),
    )


Lister = Callable[["S3Client", S3Uri, tuple[str, ...]], Listing]


@dataclass(frozen=True)
class Preflight:
    """What the checks before any Spark work found: the images, and the model to embed them with."""

    listing: Listing
    model: dict[str, Any]  # the manifest's ``model`` section, see :func:`check_model`


def preflight(
    client: S3Client, config: JobConfig, run_uri: S3Uri, timer: StageTimer, lister: Lister = list_images
) -> Preflight:
    """Everything that can be checked cheaply, before Spark does any heavy work.

    Args:
        client: the driver's S3 client.
        config: the job's configuration.
        run_uri: the run's output folder, which must be empty.
        timer: records the ``list`` and ``preflight`` stages.
        lister: lists the input (the job: class folders; scoring: any image under the prefix).

    Returns:
        The images listed under ``input.uri`` and the checked model files.

    Raises:
        InputError: the input cannot be listed or holds no images.
        OutputError: the output cannot be listed or the run's folder is not empty.
        WeightsUnavailableError: ``model.weights`` or ``model.onnx`` cannot be had.
        OnnxMismatchError: the ONNX file was exported from other weights or for another size.
    """
    input_uri = S3Uri.parse(config.input.uri)
    with timer.stage("list"):
        listing = lister(client, input_uri, config.input.extensions)
    log.info(
        "listed %d keys under %s: %d images, %d other keys skipped",
        listing.keys_listed,
        input_uri,
        len(listing.images),
        listing.skipped,
    )
    if not listing.images:
        raise InputError(
            f"no images ({', '.join(config.input.extensions)}) in class folders under {input_uri} "
            f"({listing.keys_listed} keys listed)"
        )
    with timer.stage("preflight"):
        check_output_writable(client, run_uri)
        model = check_model(config)
    return Preflight(listing, model)


def check_rejects(images: int, rejected: list[tuple[str, str]], max_fraction: float) -> None:
    """Log the rejects; fail when they exceed ``max_fraction`` of the images.

    Raises:
        TooManyRejectsError: naming the counts and the setting.
    """
    for path, reason in rejected[:10]:
        log.warning("rejected %s: %s", path, reason)
    if len(rejected) > 10:
        log.warning("... and %d more rejected images: see rejected.csv", len(rejected) - 10)
    fraction = len(rejected) / images if images else 0.0
    if fraction > max_fraction:
        raise TooManyRejectsError(
            f"{len(rejected)} of {images} images rejected ({fraction:.1%}), over "
            f"max_rejected_fraction={max_fraction:g}; see rejected.csv"
        )
    if rejected:
        log.warning(
            "%d of %d images rejected (%.1f%%), within max_rejected_fraction=%g",
            len(rejected),
            images,
            100 * fraction,
            max_fraction,
        )


def check_model_transfer(config: JobConfig, master: str) -> None:
    """Refuse to stage a Spark ML model on the driver's disk when executors do not share it.

    Spark ML's writer and reader run Spark jobs: with ``classifier.model_transfer: boto3`` the
    executors write and read the staging folder, which is only the driver's folder in local mode.

    Raises:
        ConfigError: naming the setting and the master.
    """
    if config.classifier.model_transfer == "boto3" and not master.startswith("local"):
        raise ConfigError(
            f"config key 'classifier.model_transfer': boto3 stages the model on the driver's disk, which "
            f"the executors of master {master!r} cannot reach; use hadoop (EMRFS serves s3:// on EMR)"
        )


@dataclass
class Embedded:
    """The embed stage's outcome; ``frame`` is persisted until :meth:`unpersist`."""

    frame: DataFrame  # path, label, features, error: every listed image
    featurized: DataFrame  # path, label, features: the images with features
    rejected: list[tuple[str, str]]
    counts: dict[str, int]
    counters: EmbedCounters
    partitions: int

    def unpersist(self) -> None:
        """Release the persisted features."""
        self.frame.unpersist()


def embed_listing(
    spark: SparkSession, config: JobConfig, spec: EmbedSpec, listing: Listing, timer: StageTimer
) -> Embedded:
    """Embed every listed image once, persist the result and count it.

    The caller unpersists (:meth:`Embedded.unpersist`), also when a later stage fails.
    """
    partitions = partition_count(
        len(listing.images),
        spark.sparkContext.defaultParallelism,
        config.model.batch_size,
        config.spark.partitions,
    )
    counters = EmbedCounters.create(spark.sparkContext)
    keys = keys_frame(spark, listing.images, partitions)
    total = len(listing.images)
    interval = config.progress_interval_seconds
    with progress.image_progress("embed", total, interval, spark.sparkContext) as endpoint:
        embedded = embed_images(keys, spec, counters, config.s3.fetch_threads, endpoint)
        # Persisted so that counting, fitting, transforming and writing never run ResNet50 again.
        embedded = embedded.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            with timer.stage("load_and_embed", watched=False):  # image_progress watches it
                images = embedded.count()
        except BaseException:
            embedded.unpersist()
            raise
    log.info("%s", progress.progress_line("embed", images, total, timer.seconds["load_and_embed"]))
    try:
        # The executors counted the images they could not featurize: with none, no query for them.
        # (A retried task may count its rejects twice, never zero times.)
        rejected: list[tuple[str, str]] = []
        if counters.rejected.value:
            failed = embedded.filter(F.col("features").isNull()).select("path", "error")
            rejected = [(row["path"], row["error"]) for row in failed.collect()]
    except BaseException:
        embedded.unpersist()
        raise
    featurized = embedded.filter(F.col("features").isNotNull()).select("path", "label", "features")
    counts: dict[str, int] = {
        "keys_listed": listing.keys_listed,
        "keys_skipped": listing.skipped,
        "images": images,
        "featurized": images - len(rejected),
        "rejected": len(rejected),
        "model_images": counters.images.value,
        "model_batches": counters.batches.value,
    }
    embed_seconds = timer.seconds["load_and_embed"]
    log.info(
        "embedded %d images over %d partitions in %.1fs (%.2f images/s): %d featurized, %d rejected",
        images,
        partitions,
        embed_seconds,
        images / embed_seconds if embed_seconds else 0.0,
        counts["featurized"],
        counts["rejected"],
    )
    return Embedded(embedded, featurized, rejected, counts, counters, partitions)


def check_embedded(
    embedded: Embedded, config: JobConfig, client: S3Client, run_uri: S3Uri, manifest: dict[str, Any]
) -> None:
    """Fail the run, with ``rejected.csv`` and a failed manifest written, when too little was featurized.

    Raises:
        TooManyRejectsError: over ``max_rejected_fraction``.
        PipelineError: nothing could be featurized.
    """
    images = embedded.counts["images"]
    try:
        check_rejects(images, embedded.rejected, config.max_rejected_fraction)
        if embedded.counts["featurized"] == 0:
            raise PipelineError(f"none of the {images} images under {config.input.uri} could be featurized")
    except FruitsFeaturesError as exc:
        # What was rejected, and why, is kept for the person who reads the error; without
        # _SUCCESS nothing here counts as a result.
        manifest.update(status="failed", error=str(exc), finished_at=utc_now())
        write_report(client, run_uri, embedded.rejected, manifest)
        raise


def run_details(spark: SparkSession, embedded: Embedded, timer: StageTimer, started: float) -> dict[str, Any]:
    """The manifest's timings, Spark details and library versions, as of now."""
    return {
        "timings_seconds": {
            **timer.seconds,
            "total": round(time.perf_counter() - started, 3),
            "executor_decode": round(embedded.counters.decode_seconds.value, 3),
            "executor_model": round(embedded.counters.model_seconds.value, 3),
        },
        "spark": {
            "version": spark.version,
            "master": spark.sparkContext.master,
            "default_parallelism": spark.sparkContext.defaultParallelism,
            "partitions": embedded.partitions,
        },
        "versions": library_versions(),
    }


def pca_section(reduction: Reduction) -> dict[str, Any]:
    """The manifest's ``pca``: k, the variance target if any, and the kept components' variance."""
    return {
        "k": reduction.k,
        "variance_target": reduction.variance_target,
        "explained_variance": reduction.explained_variance,
        "cumulative_explained_variance": reduction.cumulative_variance,
    }


def class_counts(featurized: DataFrame) -> dict[str, int]:
    """Featurized images per label (one row per class reaches the driver)."""
    return {row["label"]: int(row["count"]) for row in featurized.groupBy("label").count().collect()}


def run_classifier(
    spark: SparkSession,
    *,
    config: JobConfig,
    run_id: str,
    reduction: Reduction,
    projected: DataFrame,
    classes: dict[str, int],
    client: S3Client,
    run_uri: S3Uri,
    timer: StageTimer,
) -> tuple[Evaluation | None, dict[str, Any]]:
    """Train, evaluate, write predictions and metrics, save the scoring pipeline.

    Returns:
        The evaluation (its predictions persisted: the caller unpersists them), or ``None`` when
        these images cannot train a classifier; and the manifest's ``classifier`` section.
    """
    settings = s3_settings(config)
    section: dict[str, Any] = {
        "train_fraction": config.classifier.train_fraction,
        "seed": config.classifier.seed,
    }
    try:
        with timer.stage("classifier"):
            evaluation = train_and_evaluate(projected, classes, config.classifier)
    except ClassifierError as exc:
        log.warning("classifier skipped: %s", exc)
        return None, {"status": "skipped", "reason": str(exc), **section}
    try:
        metrics = evaluation.metrics
        confusions = most_confused(metrics.labels, metrics.confusion, 10)
        with timer.stage("predictions"):
            parts = write_parts(
                evaluation.predictions, run_uri, settings, PREDICTIONS_DIR, config.output.format
            )
            metrics_body = {
                **metrics.to_dict(),
                "labels": list(metrics.labels),
                "confusion": metrics.confusion.tolist(),
                "most_confused": [asdict(c) for c in most_confused(metrics.labels, metrics.confusion, 50)],
            }
            write_object(client, run_uri.join(METRICS_FILE), json_bytes(metrics_body), "application/json")
        with timer.stage("model_save"):
            info = ModelInfo(
                image_size=config.model.image_size,
                weights=config.model.weights,
                weights_sha256=weights_sha256(config.model.weights, settings),
                feature_dim=FEATURE_DIM,
                k=reduction.k,
                variance_target=reduction.variance_target,
                labels=evaluation.classifier.labels,
                run_id=run_id,
                trained_at=utc_now(),
                spark_version=spark.version,
            )
            scoring = PipelineModel(stages=[*reduction.model.stages, *evaluation.classifier.stages()])
            save_model(
                scoring,
                info,
                run_uri.join(MODEL_DIR),
                client,
                transfer=config.classifier.model_transfer,
                staging_dir=config.classifier.staging_dir,
            )
    except BaseException:
        evaluation.predictions.unpersist()
        raise
    section.update(
        status="trained",
        classes=len(metrics.labels),
        train_images=evaluation.train_images,
        test_images=metrics.test_images,
        accuracy=metrics.accuracy,
        macro_f1=metrics.macro_f1,
        untested_classes=list(evaluation.untested_classes),
        most_confused=[asdict(c) for c in confusions],
        per_class=metrics.to_dict()["per_class"],
        prediction_files=len(parts),
        model=str(run_uri.join(MODEL_DIR)) + "/",
        metrics=str(run_uri.join(METRICS_FILE)),
        predictions=str(run_uri.join(PREDICTIONS_DIR)) + "/",
    )
    log.info(
        "classifier: accuracy %.3f, macro F1 %.3f on %d test images; model saved under %s",
        metrics.accuracy,
        metrics.macro_f1,
        metrics.test_images,
        section["model"],
    )
    return evaluation, section


def build_report(
    config: JobConfig,
    *,
    manifest: dict[str, Any],
    reduction: Reduction,
    projected: DataFrame,
    classes: dict[str, int],
    evaluation: Evaluation | None,
    client: S3Client,
    run_uri: S3Uri,
) -> str:
    """Gather the report's bounded inputs, draw it, upload ``<run>/report/``; returns its URI."""
    sample = scatter_sample(
        projected, most_frequent(classes, config.report.classes), config.report.points_per_class
    )
    examples: list[ConfusedExample] = []
    if evaluation is not None and config.report.confused_pairs:
        metrics = evaluation.metrics
        confusions = most_confused(metrics.labels, metrics.confusion, config.report.confused_pairs)
        examples = confused_examples(client, evaluation.predictions, confusions)
    inputs = ReportInputs(
        manifest=manifest,
        spectrum=reduction.spectrum,
        scatter=sample,
        metrics=evaluation.metrics if evaluation is not None else None,
        examples=examples,
    )
    report_uri = run_uri.join(REPORT_DIR)
    with tempfile.TemporaryDirectory(prefix="fruits-report-") as scratch:
        files = write_report_folder(inputs, Path(scratch))
        upload_folder(client, Path(scratch), report_uri)
    index = report_uri.join(INDEX_FILE)
    log.info("wrote the report (%d files): %s", len(files), index)
    return str(index)


def run(spark: SparkSession, config: JobConfig, run_id: str) -> RunResult:
    """Run the whole job and return where its results are.

    Args:
        spark: the session to run on (local, EC2 or EMR: the code is the same).
        config: the validated configuration.
        run_id: names the output folder ``<output>/<run_id>/``.

    Returns:
        The run's URI and manifest.

    Raises:
        ConfigError: ``classifier.model_transfer`` cannot work with this master.
        InputError: the input cannot be listed or holds no images.
        OutputError: the output cannot be written or the run's folder is not empty.
        WeightsUnavailableError: ``model.weights`` cannot be had.
        TooManyRejectsError: more images were rejected than ``max_rejected_fraction`` allows;
            ``rejected.csv`` and ``manifest.json`` are written, ``_SUCCESS`` is not.
        PipelineError: nothing could be featurized, or the written rows do not add up.
    """
    started = time.perf_counter()
    timer = stage_timer(spark, config)
    settings = s3_settings(config)
    client = s3_client(settings)
    run_uri = S3Uri.parse(config.output.uri).join(run_id)
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "status": "running",
        "input": config.input.uri,
        "output": str(run_uri),
        "started_at": utc_now(),
        "config": config.to_dict(),
    }
    if config.classifier.enabled:
        check_model_transfer(config, spark.sparkContext.master or "")
    checked = preflight(client, config, run_uri, timer)
    manifest["model"] = checked.model

    embedded = embed_listing(spark, config, embed_spec(config), checked.listing, timer)
    manifest["model"]["tasks_with_tensorflow"] = embedded.counters.tasks_with_tensorflow.value
    manifest["model"]["executors"] = dict(embedded.counters.engines.value)
    projected: DataFrame | None = None
    evaluation: Evaluation | None = None
    try:
        counts = manifest["counts"] = embedded.counts
        check_embedded(embedded, config, client, run_uri, manifest)
        featurized = embedded.featurized
        if isinstance(config.pca.k, int) and counts["featurized"] <= config.pca.k:
            log.warning(
                "only %d images for %d components: the trailing components carry no information",
                counts["featurized"],
                config.pca.k,
            )

        with timer.stage("reduce"):
            reduction = fit_reduction(
                featurized, config.pca.k, rows=counts["featurized"], dimension=FEATURE_DIM
            )
        log.info(
            "fitted StandardScaler + PCA(k=%d%s): %.1f%% of the variance kept",
            reduction.k,
            "" if reduction.variance_target is None else f", the fewest for {reduction.variance_target:g}",
            100 * reduction.cumulative_variance[-1],
        )
        # The k components of every image, persisted: written, classified and sampled for the report.
        projected = project(featurized, reduction).persist(StorageLevel.MEMORY_AND_DISK)
        with timer.stage("write"):
            features = components_to_columns(projected, reduction.k)
            parts = write_parts(features, run_uri, settings, FEATURES_DIR, config.output.format)
        written = sum(part.rows for part in parts)
        if written != counts["featurized"]:
            raise PipelineError(
                f"wrote {written} feature rows but {counts['featurized']} images were featurized"
            )
        counts["part_files"] = len(parts)
        log.info("wrote %d rows in %d part files under %s", written, len(parts), run_uri.join("features"))
        manifest["pca"] = pca_section(reduction)

        classes = class_counts(featurized) if config.classifier.enabled or config.report.enabled else {}
        if config.classifier.enabled:
            evaluation, manifest["classifier"] = run_classifier(
                spark,
                config=config,
                run_id=run_id,
                reduction=reduction,
                projected=projected,
                classes=classes,
                client=client,
                run_uri=run_uri,
                timer=timer,
            )
        manifest.update(
            status="succeeded", finished_at=utc_now(), **run_details(spark, embedded, timer, started)
        )
        if config.report.enabled:
            with timer.stage("report"):
                manifest["report"] = build_report(
                    config,
                    manifest=manifest,
                    reduction=reduction,
                    projected=projected,
                    classes=classes,
                    evaluation=evaluation,
                    client=client,
                    run_uri=run_uri,
                )
            manifest.update(finished_at=utc_now(), **run_details(spark, embedded, timer, started))
        finish_run(client, run_uri, embedded.rejected, manifest)
    finally:
        if evaluation is not None:
            evaluation.predictions.unpersist()
        if projected is not None:
            projected.unpersist()
        embedded.unpersist()
    return RunResult(run_uri=str(run_uri), manifest=manifest)
