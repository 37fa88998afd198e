"""The feature job: list, embed, reduce, write; with the classifier, train and save; then the report.

Orchestration only: each step is a stage under :mod:`fruits_features.stages` (or
:mod:`fruits_features.reporting`), and the manifest records what each did. A failure after the
preflight still writes ``manifest.json`` (``status: failed``, the error).
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import replace

from pyspark import StorageLevel
from pyspark.sql import SparkSession

from fruits_features.config import JobConfig
from fruits_features.errors import PipelineError
from fruits_features.features.engines import FEATURE_DIM
from fruits_features.io.outputs import (
    EMBEDDINGS_DIR,
    FEATURES_DIR,
    PREDICTIONS_DIR,
    WrittenPart,
    failure_recorded,
    finish_run,
    write_parts,
)
from fruits_features.io.s3 import s3_client
from fruits_features.io.uri import S3Uri
from fruits_features.manifest import PcaSection, RunManifest, RunResult
from fruits_features.progress import stage_timer
from fruits_features.reporting.publish import build_report
from fruits_features.settings import s3_settings
from fruits_features.stages.classify import class_counts, run_classifier
from fruits_features.stages.embed import preflight, record_run, run_embed_stage
from fruits_features.stages.incremental import (
    apply_previous,
    plan_increment,
    previous_run_uri,
    read_previous_run,
    save_reduction,
    with_unchanged,
    write_embeddings,
)
from fruits_features.stages.model_store import check_model_transfer
from fruits_features.stages.reduce import components_to_columns, fit_reduction, project

log = logging.getLogger(__name__)


def run(spark: SparkSession, config: JobConfig, run_id: str) -> RunResult:
    """Run the whole job and return where its results are.

    Args:
        spark: the session to run on (local, EC2 or EMR: the code is the same).
        config: the validated configuration.
        run_id: names the output folder ``<output>/<run_id>/``.

    Raises:
        ConfigError: ``classifier.model_transfer`` cannot work with this master.
        InputError: the input cannot be listed or holds no images.
        OutputError: the output cannot be written or the run's folder is not empty.
        WeightsUnavailableError: ``model.weights`` cannot be had.
        TooManyRejectsError: more images were rejected than ``max_rejected_fraction`` allows.
        PipelineError: nothing could be featurized, or the written rows do not add up.
        PreviousRunError: ``incremental.previous_run`` is not a finished run written with
            ``output.incremental_base``.
        ModelMismatchError: the previous run embedded with other weights or at another size.
    """
    started = time.perf_counter()
    timer = stage_timer(spark.sparkContext, config.progress_interval_seconds)
    settings = s3_settings(config)
    client = s3_client(settings)
    run_uri = S3Uri.parse(config.output.uri).join(run_id)
    manifest = RunManifest("features", run_id, config.input.uri, str(run_uri), config.to_dict())
    if config.classifier.enabled or config.output.incremental_base:
        check_model_transfer(config, spark.sparkContext.master or "")
    previous_uri = previous_run_uri(config)
    previous = None if previous_uri is None else read_previous_run(client, previous_uri, config)
    checked = preflight(client, config, run_uri, timer, spark=spark)
    manifest.model = checked.model
    listing = checked.listing

    with ExitStack() as cleanup, failure_recorded(client, run_uri, manifest):
        if listing.frame is not None:  # keys listed on the executors: released however the run ends
            cleanup.callback(listing.frame.unpersist)
        increment = None
        if previous is not None:
            with timer.stage("increment"):
                increment = plan_increment(spark, client, config, listing, previous)
            cleanup.callback(increment.release)
            manifest.incremental = increment.section(config.incremental.mode)
            checked = replace(checked, listing=increment.to_embed)  # embed the new and changed only
        embedded = run_embed_stage(
            spark,
            config,
            checked,
            timer=timer,
            manifest=manifest,
            run_uri=run_uri,
            cleanup=cleanup,
            allow_none=increment is not None,
        )
        counts = embedded.counts
        counts.keys_listed, counts.keys_skipped = listing.keys_listed, listing.skipped
        featurized = embedded.featurized
        rows = counts.featurized
        if increment is not None:  # this run's images and the previous run's unchanged ones
            featurized = with_unchanged(spark, client, config, increment, featurized)
            featurized = featurized.persist(StorageLevel.MEMORY_AND_DISK)
            cleanup.callback(featurized.unpersist)
            rows += increment.counts["unchanged"]
        if config.output.incremental_base:
            with timer.stage("embeddings"):
                check_rows("embeddings", write_embeddings(featurized, run_uri, config), rows)
            manifest.embeddings = str(run_uri.join(EMBEDDINGS_DIR)) + "/"
        if increment is not None and config.incremental.mode == "apply":
            with timer.stage("apply"):
                applied = apply_previous(
                    spark, client, config, increment, featurized=embedded.featurized, run_uri=run_uri
                )
            counts.part_files = check_rows("feature", applied.features, rows)
            manifest.pca = PcaSection(**increment.previous.manifest["pca"])
            if applied.predictions:
                manifest.classifier = {
                    "status": "applied",
                    "predictions": f"{run_uri.join(PREDICTIONS_DIR)}/",
                }
            log.info(
                "applied the fit of %s: %d rows under %s (no report: the previous run's describes the fit)",
                increment.previous.uri,
                rows,
                run_uri,
            )
            manifest.succeed()
            record_run(manifest, spark, embedded, timer, started)
            finish_run(client, run_uri, manifest)
            return RunResult(run_uri=str(run_uri), manifest=manifest.to_dict())
        if isinstance(config.pca.k, int) and rows <= config.pca.k:
            log.warning(
                "only %d images for %d components: the trailing ones carry no information", rows, config.pca.k
            )

        with timer.stage("reduce"):
            reduction = fit_reduction(featurized, config.pca.k, rows=rows, dimension=FEATURE_DIM)
        log.info(
            "fitted StandardScaler + PCA(k=%d%s): %.1f%% of the variance kept",
            reduction.k,
            "" if reduction.variance_target is None else f", the fewest for {reduction.variance_target:g}",
            100 * reduction.cumulative_variance[-1],
        )
        # The k components of every image, persisted: written, classified and sampled for the report.
        projected = project(featurized.drop("etag"), reduction).persist(StorageLevel.MEMORY_AND_DISK)
        cleanup.callback(projected.unpersist)
        with timer.stage("write"):
            parts = write_parts(
                components_to_columns(projected, reduction.k),
                run_uri,
                settings,
                FEATURES_DIR,
                config.output.format,
            )
        counts.part_files = check_rows("feature", parts, rows)
        log.info("wrote %d rows in %d part files under %s", rows, len(parts), run_uri.join(FEATURES_DIR))
        manifest.pca = PcaSection(
            reduction.k,
            reduction.variance_target,
            reduction.explained_variance,
            reduction.cumulative_variance,
        )

        classes = class_counts(featurized) if config.classifier.enabled or config.report.enabled else {}
        evaluation = None
        if config.classifier.enabled:
            evaluation, manifest.classifier = run_classifier(
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
            if evaluation is not None:
                cleanup.callback(evaluation.predictions.unpersist)
        if config.output.incremental_base and evaluation is None:  # no classifier saved it: the reduction
            with timer.stage("model_save"):
                save_reduction(spark, client, config, run_id=run_id, reduction=reduction, run_uri=run_uri)
        manifest.succeed()
        record_run(manifest, spark, embedded, timer, started)
        if config.report.enabled:
            with timer.stage("report"):
                manifest.report = build_report(
                    config,
                    manifest=manifest.to_dict(),
                    reduction=reduction,
                    projected=projected,
                    classes=classes,
                    evaluation=evaluation,
                    client=client,
                    run_uri=run_uri,
                )
            manifest.succeed()
            record_run(manifest, spark, embedded, timer, started)
        finish_run(client, run_uri, manifest)
    return RunResult(run_uri=str(run_uri), manifest=manifest.to_dict())


def check_rows(what: str, parts: list[WrittenPart], rows: int) -> int:
    """Check that ``parts`` hold ``rows`` rows in all; returns how many parts.

    Raises:
        PipelineError: they do not.
    """
    written = sum(part.rows for part in parts)
    if written != rows:
        raise PipelineError(f"wrote {written} {what} rows but {rows} images were featurized")
    return len(parts)
