"""The embed stage: embed every listed image once on the executors, persist the features, write
and count what was rejected (the listing and the checks before it: :mod:`.preflight`).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_features import progress
from fruits_features.config import JobConfig
from fruits_features.errors import PipelineError, TooManyRejectsError
from fruits_features.features.augment import AugmentSpec
from fruits_features.features.udf import EmbedCounters, EmbedSpec, embed_column
from fruits_features.io.labels import relabel
from fruits_features.io.listing import Listing
from fruits_features.io.loading import keys_frame, partition_count
from fruits_features.io.outputs import REJECTED_DIR, write_empty_part, write_parts
from fruits_features.io.s3 import S3Settings
from fruits_features.io.uri import S3Uri
from fruits_features.manifest import Counts, StageTimer
from fruits_features.progress import ProgressEndpoint
from fruits_features.settings import augment_spec, embed_spec
from fruits_features.stages.preflight import Preflight

if TYPE_CHECKING:
    from fruits_features.job_run import JobRun

log = logging.getLogger(__name__)

# The rejects the log names one by one; the rest are counted (all are in <run>/rejected/).
REJECTS_LOGGED = 10


def embed_images(
    keys: DataFrame,
    spec: EmbedSpec,
    counters: EmbedCounters,
    fetch_threads: int,
    *,
    progress: ProgressEndpoint | None = None,
    augment: AugmentSpec | None = None,
) -> DataFrame:
    """Stage: ``path, label, etag`` -> ``path, label, etag, features, error``, reading S3 on the
    executors; with ``augment``, also ``augmented``: the copies' features (null where ``features``
    is).

    ``features`` is null exactly where ``error`` says why.
    """
    embedded = keys.withColumn(
        "_embedding",
        embed_column(
            F.col("path"), spec, counters, fetch_threads=fetch_threads, progress=progress, augment=augment
        ),
    )
    copies = [F.col("_embedding.augmented").alias("augmented")] if augment is not None else []
    return embedded.select(
        "path",
        "label",
        "etag",
        F.col("_embedding.features").alias("features"),
        F.when(
            F.col("_embedding.features").isNull(),
            F.coalesce("_embedding.error", F.lit("no features and no reason recorded")),
        ).alias("error"),
        *copies,
    )


def augmented_rows(embedded: DataFrame) -> DataFrame:
    """Stage: the copies of ``embed_images``' rows, one row each: ``path`` (of the source image),
    ``label``, ``etag``, ``copy`` (1, 2, ...), ``features``."""
    exploded = embedded.select(
        "path", "label", "etag", F.posexplode("augmented").alias("_position", "features")
    )
    return exploded.select("path", "label", "etag", (F.col("_position") + 1).alias("copy"), "features")


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
    augmented: DataFrame | None  # path, label, etag, copy, features: augment.copies' copies
    counts: Counts  # rejected and featurized once write_rejects has written them
    counters: EmbedCounters
    partitions: int

    def unpersist(self) -> None:
        """Release the persisted features."""
        self.frame.unpersist()


def listed_keys(spark: SparkSession, listing: Listing, partitions: int) -> DataFrame:
    """The listed images as ``path, label, etag`` over ``partitions`` partitions of contiguous, sorted
    ranges of paths: from the driver's list, or, for a listing on the executors, by ranging its
    frame (a shuffle of the keys only; the driver never holds them); labelled as ``listing.labels``
    says."""
    labels = listing.labels
    if listing.frame is None:
        if labels is None:
            return keys_frame(spark, listing.images, partitions)
        relabelled = [replace(ref, label=labels.mapping[ref.label]) for ref in listing.images]
        return keys_frame(spark, relabelled, partitions)
    images_listed = listing.frame.filter(F.col("label").isNotNull())
    if labels is not None:
        images_listed = relabel(images_listed, labels.mapping)
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
    augment = augment_spec(config)
    with progress.image_progress("embed", total, interval, spark.sparkContext) as endpoint:
        embedded = embed_images(
            keys, spec, counters, config.s3.fetch_threads, progress=endpoint, augment=augment
        )
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
    with_features = embedded.filter(F.col("features").isNotNull())
    featurized = with_features.select("path", "label", "etag", "features")
    copies = augmented_rows(with_features) if augment is not None else None
    counts = Counts(
        keys_listed=listing.keys_listed,
        keys_skipped=listing.skipped,
        images=images,
        model_images=counters.images.value,
        model_batches=counters.batches.value,
        augmented=counters.augmented.value,
    )
    embed_seconds = timer.seconds["load_and_embed"]
    log.info(
        "embedded %d images over %d partitions in %.1fs (%.2f images/s)",
        images,
        partitions,
        embed_seconds,
        images / embed_seconds if embed_seconds else 0.0,
    )
    return Embedded(embedded, featurized, copies, counts, counters, partitions)


def write_rejects(embedded: Embedded, run_uri: S3Uri, settings: S3Settings) -> list[tuple[str, str]]:
    """Write ``<run>/rejected/part-NNNNN.csv`` (``path,reason``) from the executors and count the
    rejects exactly (``embedded.counts``); returns the first few, for the log.

    The executors counted the images they could not featurize: with none, no query for them, and
    one header-only part. (A retried task may count its rejects twice, never zero times.)
    """
    failed = embedded.frame.filter(F.col("features").isNull()).select("path", F.col("error").alias("reason"))
    if embedded.counters.rejected.value:
        parts = write_parts(failed, run_uri, settings, REJECTED_DIR, "csv")
    else:  # none: the header-only part, no Spark job
        parts = [write_empty_part(failed, run_uri, settings, REJECTED_DIR, "csv")]
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
    job: JobRun,
    config: JobConfig,
    checked: Preflight,
    *,
    cleanup: ExitStack,
    allow_none: bool = False,
) -> Embedded:
    """The embed stage as both jobs run it: embed the listed images, keep them persisted until
    ``cleanup`` closes, write the rejects under ``<run>/rejected/`` from the executors, record the
    counts and the engines the executors ran in the manifest, and fail when too few were featurized
    (:func:`check_embedded`; ``allow_none``: an incremental run may have no new image)."""
    spec = embed_spec(config, job.settings)
    embedded = embed_listing(job.spark, config, spec, checked.listing, job.timer)
    cleanup.callback(embedded.unpersist)
    checked.model.executors = dict(embedded.counters.engines.value)
    checked.model.tasks_with_tensorflow = embedded.counters.tasks_with_tensorflow.value
    job.manifest.counts = embedded.counts
    with job.timer.stage("rejects", watched=False):
        sample = write_rejects(embedded, job.uri, job.settings)
    check_embedded(embedded, sample, config, allow_none=allow_none)
    return embedded
