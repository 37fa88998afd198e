"""The feature job: list, embed, reduce, write; with the classifier, train and save; then the report.

Orchestration only: each step is a stage under :mod:`fruits_features.stages` (or
:mod:`fruits_features.reporting`), and the manifest records what each did. A failure after the
preflight still writes ``manifest.json`` (``status: failed``, the error).
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack

from pyspark import StorageLevel
from pyspark.sql import SparkSession

from fruits_features.config import JobConfig
from fruits_features.errors import PipelineError
from fruits_features.features.engines import FEATURE_DIM
from fruits_features.io.outputs import FEATURES_DIR, failure_recorded, finish_run, write_parts
from fruits_features.io.s3 import s3_client
from fruits_features.io.uri import S3Uri
from fruits_features.manifest import PcaSection, RunManifest, RunResult
from fruits_features.progress import stage_timer
from fruits_features.reporting.publish import build_report
from fruits_features.settings import s3_settings
from fruits_features.stages.classify import class_counts, run_classifier
from fruits_features.stages.embed import preflight, record_run, run_embed_stage
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
    """
    started = time.perf_counter()
    timer = stage_timer(spark.sparkContext, config.progress_interval_seconds)
    settings = s3_settings(config)
    client = s3_client(settings)
    run_uri = S3Uri.parse(config.output.uri).join(run_id)
    manifest = RunManifest("features", run_id, config.input.uri, str(run_uri), config.to_dict())
    if config.classifier.enabled:
        check_model_transfer(config, spark.sparkContext.master or "")
    checked = preflight(client, config, run_uri, timer, spark=spark)
    manifest.model = checked.model

    with ExitStack() as cleanup, failure_recorded(client, run_uri, manifest):
        embedded = run_embed_stage(
            spark, config, checked, timer=timer, manifest=manifest, run_uri=run_uri, cleanup=cleanup
        )
        counts = embedded.counts
        featurized = embedded.featurized
        if isinstance(config.pca.k, int) and counts.featurized <= config.pca.k:
            log.warning(
                "only %d images for %d components: the trailing components carry no information",
                counts.featurized,
                config.pca.k,
            )

        with timer.stage("reduce"):
            reduction = fit_reduction(featurized, config.pca.k, rows=counts.featurized, dimension=FEATURE_DIM)
        log.info(
            "fitted StandardScaler + PCA(k=%d%s): %.1f%% of the variance kept",
            reduction.k,
            "" if reduction.variance_target is None else f", the fewest for {reduction.variance_target:g}",
            100 * reduction.cumulative_variance[-1],
        )
        # The k components of every image, persisted: written, classified and sampled for the report.
        projected = project(featurized, reduction).persist(StorageLevel.MEMORY_AND_DISK)
        cleanup.callback(projected.unpersist)
        with timer.stage("write"):
            parts = write_parts(
                components_to_columns(projected, reduction.k),
                run_uri,
                settings,
                FEATURES_DIR,
                config.output.format,
            )
        written = sum(part.rows for part in parts)
        if written != counts.featurized:
            raise PipelineError(
                f"wrote {written} feature rows but {counts.featurized} images were featurized"
            )
        counts.part_files = len(parts)
        log.info("wrote %d rows in %d part files under %s", written, len(parts), run_uri.join(FEATURES_DIR))
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
