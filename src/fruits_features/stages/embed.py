"""The embed stage and its preflight: list the input, check the model files and the output, then
embed every listed image once on the executors, persist the features and count what was rejected.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_features import progress
from fruits_features.config import JobConfig
from fruits_features.errors import ConfigError, InputError, PipelineError, TooManyRejectsError
from fruits_features.features.model_files import check_weights
from fruits_features.features.onnx_export import check_onnx
from fruits_features.features.udf import EmbedCounters, EmbedSpec, embed_column
from fruits_features.io.inventory import list_images_from_files
from fruits_features.io.listing import Listing, list_images
from fruits_features.io.loading import keys_frame, partition_count
from fruits_features.io.outputs import REJECTED_DIR, write_parts
from fruits_features.io.parallel_listing import list_images_in_parallel
from fruits_features.io.s3 import S3Settings, check_output_writable
from fruits_features.io.uri import S3Uri
from fruits_features.manifest import Counts, EngineSection, RunManifest, StageTimer
from fruits_features.progress import ProgressEndpoint
from fruits_features.settings import embed_spec, s3_settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

# The rejects the log names one by one; the rest are counted (all are in <run>/rejected/).
REJECTS_LOGGED = 10


def check_model(config: JobConfig) -> EngineSection:
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
        return EngineSection(engine=model.engine)
    if model.engine == "openvino" and importlib.util.find_spec("openvino") is None:
        raise ConfigError(
            "model.engine=openvino, but OpenVINO is not installed: install the 'openvino' extra "
            "(pip install 'fruits-features[openvino]') or use model.engine=auto or onnxruntime"
        )
    location = model.onnx_location()
    info = check_onnx(location, model.weights, model.image_size, settings)
    log.info("ONNX model %s: exported from %s, %dpx", location, info.weights, info.image_size)
    return EngineSection(
        engine=model.engine, precision=model.precision, onnx=location, onnx_export=asdict(info)
    )


def list_input(
    spark: SparkSession | None, client: S3Client, config: JobConfig, *, labelled_only: bool
) -> Listing:
    """The images under ``input.uri``, found as ``input.listing`` says: on the driver
    (``sequential``), or on the executors (``parallel``, ``inventory``, ``key_list``).

    Raises:
        InputError: the prefix, the report or the list cannot be read.
        InventoryError: the report or the list is malformed.
    """
    uri = S3Uri.parse(config.input.uri)
    mode = config.input.listing
    extensions = config.input.extensions
    if mode == "sequential":
        return list_images(client, uri, extensions, labelled_only=labelled_only)
    if spark is None:
        raise ValueError(f"input.listing {mode} needs the Spark session")
    settings = s3_settings(config)
    if mode == "parallel":
        return list_images_in_parallel(spark, client, settings, uri, extensions, labelled_only=labelled_only)
    source = S3Uri.parse((config.input.inventory if mode == "inventory" else config.input.key_list) or "")
    return list_images_from_files(
        spark, client, settings, uri, source, kind=mode, extensions=extensions, labelled_only=labelled_only
    )


@dataclass(frozen=True)
class Preflight:
    """What the checks before any Spark work found: the images, and the model to embed them with."""

    listing: Listing
    model: EngineSection  # the manifest's ``model`` section, see :func:`check_model`


def preflight(
    client: S3Client,
    config: JobConfig,
    run_uri: S3Uri,
    timer: StageTimer,
    *,
    labelled_only: bool = True,
    spark: SparkSession | None = None,
) -> Preflight:
    """Everything that can be checked cheaply, before Spark does any heavy work.

    Args:
        client: the driver's S3 client.
        config: the job's configuration.
        run_uri: the run's output folder, which must be empty.
        timer: records the ``list`` and ``preflight`` stages.
        labelled_only: list only images in class folders (the feature job), or any image (scoring).
        spark: the session, for the listings made on the executors (``input.listing`` other than
            ``sequential``).

    Returns:
        The images listed under ``input.uri`` and the checked model files.

    Raises:
        InputError: the input cannot be listed or holds no images.
        InventoryError: the inventory report or key list is malformed.
        OutputError: the output cannot be listed or the run's folder is not empty.
        WeightsUnavailableError: ``model.weights`` or ``model.onnx`` cannot be had.
        OnnxMismatchError: the ONNX file was exported from other weights or for another size.
    """
    input_uri = S3Uri.parse(config.input.uri)
    with timer.stage("list"):
        listing = list_input(spark, client, config, labelled_only=labelled_only)
    log.info(
        "listed %d keys under %s: %d images, %d other keys skipped",
        listing.keys_listed,
        input_uri,
        listing.count,
        listing.skipped,
    )
    try:
        if not listing.count:
            raise InputError(
                f"no images ({', '.join(config.input.extensions)}) in class folders under {input_uri} "
                f"({listing.keys_listed} keys listed)"
            )
        with timer.stage("preflight"):
            check_output_writable(client, run_uri)
            model = check_model(config)
    except BaseException:
        if listing.frame is not None:  # a parallel listing's keys: released with the run that failed
            listing.frame.unpersist()
        raise
    return Preflight(listing, model)


def embed_images(
    keys: DataFrame,
    spec: EmbedSpec,
    counters: EmbedCounters,
    fetch_threads: int,
    progress: ProgressEndpoint | None = None,
) -> DataFrame:
    """Stage: ``path, label, etag`` -> ``path, label, etag, features, error``, reading S3 on the
    executors.

    ``features`` is null exactly where ``error`` says why.
    """
    embedded = keys.withColumn(
        "_embedding",
        embed_column(F.col("path"), spec, counters, fetch_threads=fetch_threads, progress=progress),
    )
    return embedded.select(
        "path",
        "label",
        "etag",
        F.col("_embedding.features").alias("features"),
        F.when(
            F.col("_embedding.features").isNull(),
            F.coalesce("_embedding.error", F.lit("no features and no reason recorded")),
        ).alias("error"),
    )


def check_rejects(images: int, rejected: int, sample: list[tuple[str, str]], max_fraction: float) -> None:
    """Log the rejects (``sample``: the first few); fail when they exceed ``max_fraction`` of the images.

    Raises:
        TooManyRejectsError: naming the counts and the setting.
    """
    for path, reason in sample:
        log.warning("rejected %s: %s", path, reason)
    if rejected > len(sample):
        log.warning("... and %d more rejected images: see %s/", rejected - len(sample), REJECTED_DIR)
    fraction = rejected / images if images else 0.0
    if fraction > max_fraction:
        raise TooManyRejectsError(
            f"{rejected} of {images} images rejected ({fraction:.1%}), over "
            f"max_rejected_fraction={max_fraction:g}; see {REJECTED_DIR}/"
        )
    if rejected:
        log.warning(
            "%d of %d images rejected (%.1f%%), within max_rejected_fraction=%g",
            rejected,
            images,
            100 * fraction,
            max_fraction,
        )


@dataclass
class Embedded:
    """The embed stage's outcome; ``frame`` is persisted until :meth:`unpersist`."""

    frame: DataFrame  # path, label, etag, features, error: every listed image
    featurized: DataFrame  # path, label, etag, features: the images with features
    counts: Counts  # rejected and featurized once write_rejects has written them
    counters: EmbedCounters
    partitions: int

    def unpersist(self) -> None:
        """Release the persisted features."""
        self.frame.unpersist()


def listed_keys(spark: SparkSession, listing: Listing, partitions: int) -> DataFrame:
    """The listed images as ``path, label, etag`` over ``partitions`` partitions of contiguous, sorted
    ranges of paths: from the driver's list, or, for a listing on the executors, by ranging its
    frame (a shuffle of the keys only; the driver never holds them)."""
    if listing.frame is None:
        return keys_frame(spark, listing.images, partitions)
    images_listed = listing.frame.filter(F.col("label").isNotNull())
    return images_listed.repartitionByRange(partitions, "path").sortWithinPartitions("path")


def embed_listing(
    spark: SparkSession, config: JobConfig, spec: EmbedSpec, listing: Listing, timer: StageTimer
) -> Embedded:
    """Embed every listed image once, persist the result and count it.

    The caller unpersists (:meth:`Embedded.unpersist`), also when a later stage fails.
    """
    total = listing.count
    partitions = partition_count(
        total,
        spark.sparkContext.defaultParallelism,
        config.model.batch_size,
        config.spark.partitions,
    )
    counters = EmbedCounters.create(spark.sparkContext)
    keys = listed_keys(spark, listing, partitions)
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
        finally:
            if listing.frame is not None:
                listing.frame.unpersist()  # the embedded rows are persisted and counted: the keys are done
    log.info("%s", progress.progress_line("embed", images, total, timer.seconds["load_and_embed"]))
    featurized = embedded.filter(F.col("features").isNotNull()).select("path", "label", "etag", "features")
    counts = Counts(
        keys_listed=listing.keys_listed,
        keys_skipped=listing.skipped,
        images=images,
        model_images=counters.images.value,
        model_batches=counters.batches.value,
    )
    embed_seconds = timer.seconds["load_and_embed"]
    log.info(
        "embedded %d images over %d partitions in %.1fs (%.2f images/s)",
        images,
        partitions,
        embed_seconds,
        images / embed_seconds if embed_seconds else 0.0,
    )
    return Embedded(embedded, featurized, counts, counters, partitions)


def write_rejects(embedded: Embedded, run_uri: S3Uri, settings: S3Settings) -> list[tuple[str, str]]:
    """Write ``<run>/rejected/part-NNNNN.csv`` (``path,reason``) from the executors and count the
    rejects exactly (``embedded.counts``); returns the first few, for the log.

    The executors counted the images they could not featurize: with none, no query for them, and
    one header-only part. (A retried task may count its rejects twice, never zero times.)
    """
    failed = embedded.frame.filter(F.col("features").isNull()).select("path", F.col("error").alias("reason"))
    if not embedded.counters.rejected.value:
        failed = failed.limit(0)
    parts = write_parts(failed, run_uri, settings, REJECTED_DIR, "csv")
    rejected = sum(part.rows for part in parts)
    embedded.counts.rejected = rejected
    embedded.counts.featurized = embedded.counts.images - rejected
    sample = (
        [(row["path"], row["reason"]) for row in failed.limit(REJECTS_LOGGED).collect()] if rejected else []
    )
    log.info(
        "%d featurized, %d rejected (%s)",
        embedded.counts.featurized,
        rejected,
        run_uri.join(REJECTED_DIR),
    )
    return sample


def check_embedded(
    embedded: Embedded, sample: list[tuple[str, str]], config: JobConfig, *, allow_none: bool = False
) -> None:
    """Fail the run when too little was featurized (the caller records the failure).

    Raises:
        TooManyRejectsError: over ``max_rejected_fraction``.
        PipelineError: nothing could be featurized (unless ``allow_none`` and there was nothing to).
    """
    counts = embedded.counts
    check_rejects(counts.images, counts.rejected, sample, config.max_rejected_fraction)
    if counts.featurized == 0 and not (allow_none and counts.images == 0):
        raise PipelineError(
            f"none of the {counts.images} images under {config.input.uri} could be featurized"
        )


def run_embed_stage(
    spark: SparkSession,
    config: JobConfig,
    checked: Preflight,
    *,
    timer: StageTimer,
    manifest: RunManifest,
    run_uri: S3Uri,
    cleanup: ExitStack,
    allow_none: bool = False,
) -> Embedded:
    """The embed stage as both jobs run it: embed the listed images, keep them persisted until
    ``cleanup`` closes, write the rejects under ``<run>/rejected/`` from the executors, record the
    counts and the engines the executors ran in ``manifest``, and fail when too few were featurized
    (:func:`check_embedded`; ``allow_none``: an incremental run may have no new image)."""
    embedded = embed_listing(spark, config, embed_spec(config), checked.listing, timer)
    cleanup.callback(embedded.unpersist)
    checked.model.executors = dict(embedded.counters.engines.value)
    checked.model.tasks_with_tensorflow = embedded.counters.tasks_with_tensorflow.value
    manifest.counts = embedded.counts
    sample = write_rejects(embedded, run_uri, s3_settings(config))
    check_embedded(embedded, sample, config, allow_none=allow_none)
    return embedded


def record_run(
    manifest: RunManifest, spark: SparkSession, embedded: Embedded, timer: StageTimer, started: float
) -> None:
    """Set the manifest's timings and Spark details, as of now."""
    manifest.timings_seconds = {
        **timer.seconds,
        "total": round(time.perf_counter() - started, 3),
        "executor_decode": round(embedded.counters.decode_seconds.value, 3),
        "executor_model": round(embedded.counters.model_seconds.value, 3),
    }
    manifest.spark = {
        "version": spark.version,
        "master": spark.sparkContext.master,
        "default_parallelism": spark.sparkContext.defaultParallelism,
        "partitions": embedded.partitions,
    }
