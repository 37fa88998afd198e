"""The job: list, load, embed, reduce, write, with counts and timings at each stage boundary."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_features.config import JobConfig
from fruits_features.embedding import EmbedCounters, EmbedSpec, check_weights, embed_column
from fruits_features.errors import FruitsFeaturesError, InputError, PipelineError, TooManyRejectsError
from fruits_features.loading import keys_frame, partition_count
from fruits_features.manifest import StageTimer, library_versions, utc_now
from fruits_features.output import finish_run, write_features, write_report
from fruits_features.reduction import fit_reduction, reduce_features
from fruits_features.storage import (
    Listing,
    S3Settings,
    S3Uri,
    check_output_writable,
    list_images,
    s3_client,
)

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


def embed_spec(config: JobConfig) -> EmbedSpec:
    """The model settings shipped to the executors."""
    return EmbedSpec(
        weights=config.model.weights,
        image_size=config.model.image_size,
        batch_size=config.model.batch_size,
        threads=config.model.threads,
        max_image_pixels=config.model.max_image_pixels,
        s3=s3_settings(config),
    )


def embed_images(keys: DataFrame, spec: EmbedSpec, counters: EmbedCounters, fetch_threads: int) -> DataFrame:
    """Stage: ``path, label`` -> ``path, label, features, error``, reading S3 on the executors.

    ``features`` is null exactly where ``error`` says why.
    """
    embedded = keys.withColumn(
        "_embedding", embed_column(F.col("path"), spec, counters, fetch_threads=fetch_threads)
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


def preflight(client: S3Client, config: JobConfig, run_uri: S3Uri, timer: StageTimer) -> Listing:
    """Everything that can be checked cheaply, before Spark does any heavy work.

    Returns:
        The images listed under ``input.uri``.

    Raises:
        InputError: the input cannot be listed or holds no images.
        OutputError: the output cannot be listed or the run's folder is not empty.
        WeightsUnavailableError: ``model.weights`` cannot be had.
    """
    input_uri = S3Uri.parse(config.input.uri)
    with timer.stage("list"):
        listing = list_images(client, input_uri, config.input.extensions)
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
        check_weights(config.model.weights, s3_settings(config))
    return listing


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


def run(spark: SparkSession, config: JobConfig, run_id: str) -> RunResult:
    """Run the whole job and return where its results are.

    Args:
        spark: the session to run on (local, EC2 or EMR: the code is the same).
        config: the validated configuration.
        run_id: names the output folder ``<output>/<run_id>/``.

    Returns:
        The run's URI and manifest.

    Raises:
        InputError: the input cannot be listed or holds no images.
        OutputError: the output cannot be written or the run's folder is not empty.
        WeightsUnavailableError: ``model.weights`` cannot be had.
        TooManyRejectsError: more images were rejected than ``max_rejected_fraction`` allows;
            ``rejected.csv`` and ``manifest.json`` are written, ``_SUCCESS`` is not.
        PipelineError: nothing could be featurized, or the written rows do not add up.
    """
    started = time.perf_counter()
    timer = StageTimer()
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
    listing = preflight(client, config, run_uri, timer)

    partitions = partition_count(
        len(listing.images),
        spark.sparkContext.defaultParallelism,
        config.model.batch_size,
        config.spark.partitions,
    )
    counters = EmbedCounters.create(spark.sparkContext)
    keys = keys_frame(spark, listing.images, partitions)
    embedded = embed_images(keys, embed_spec(config), counters, config.s3.fetch_threads)
    # Persisted so that counting, fitting, transforming and writing never run ResNet50 again.
    embedded = embedded.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        with timer.stage("load_and_embed"):
            images = embedded.count()
        rejected = [
            (row["path"], row["error"])
            for row in embedded.filter(F.col("features").isNull()).select("path", "error").collect()
        ]
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
        manifest["counts"] = counts
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
        try:
            check_rejects(images, rejected, config.max_rejected_fraction)
            if counts["featurized"] == 0:
                raise PipelineError(
                    f"none of the {images} images under {config.input.uri} could be featurized"
                )
        except FruitsFeaturesError as exc:
            # What was rejected, and why, is kept for the person who reads the error; without
            # _SUCCESS nothing here counts as a result.
            manifest.update(status="failed", error=str(exc), finished_at=utc_now())
            write_report(client, run_uri, rejected, manifest)
            raise
        if counts["featurized"] <= config.pca.k:
            log.warning(
                "only %d images for %d components: the trailing components carry no information",
                counts["featurized"],
                config.pca.k,
            )

        with timer.stage("reduce"):
            reduction = fit_reduction(featurized, config.pca.k)
        log.info(
            "fitted StandardScaler + PCA(k=%d): %.1f%% of the variance kept",
            config.pca.k,
            100 * reduction.cumulative_variance[-1],
        )
        with timer.stage("write"):
            parts = write_features(reduce_features(featurized, reduction), run_uri, settings)
        written = sum(part.rows for part in parts)
        if written != counts["featurized"]:
            raise PipelineError(
                f"wrote {written} feature rows but {counts['featurized']} images were featurized"
            )
        counts["part_files"] = len(parts)
        log.info("wrote %d rows in %d part files under %s", written, len(parts), run_uri.join("features"))

        manifest.update(
            status="succeeded",
            finished_at=utc_now(),
            pca={
                "k": reduction.k,
                "explained_variance": reduction.explained_variance,
                "cumulative_explained_variance": reduction.cumulative_variance,
            },
            timings_seconds={
                **timer.seconds,
                "total": round(time.perf_counter() - started, 3),
                "executor_decode": round(counters.decode_seconds.value, 3),
                "executor_model": round(counters.model_seconds.value, 3),
            },
            spark={
                "version": spark.version,
                "master": spark.sparkContext.master,
                "default_parallelism": spark.sparkContext.defaultParallelism,
                "partitions": partitions,
            },
            versions=library_versions(),
        )
        finish_run(client, run_uri, rejected, manifest)
    finally:
        embedded.unpersist()
    return RunResult(run_uri=str(run_uri), manifest=manifest)
