"""The feature job: list, embed, reduce, write; with the classifier, train and save; then the report.

Orchestration only: each step is a stage under :mod:`fruits_features.stages` (or
:mod:`fruits_features.reporting`), and the manifest records what each did. A failure after the
preflight still writes ``manifest.json`` (``status: failed``, the error).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import replace

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession

from fruits_features.config import JobConfig
from fruits_features.errors import PipelineError
from fruits_features.io.labels import with_folder
from fruits_features.io.outputs import EMBEDDINGS_DIR, FEATURES_DIR, PREDICTIONS_DIR, WrittenPart, write_parts
from fruits_features.job_run import JobRun
from fruits_features.manifest import PcaSection, RunResult
from fruits_features.reporting.publish import build_report
from fruits_features.stages.augmented import write_augmented
from fruits_features.stages.classify import class_counts, run_classifier
from fruits_features.stages.embed import Embedded, run_embed_stage
from fruits_features.stages.incremental import (
    Increment,
    apply_previous,
    plan_increment,
    previous_run_uri,
    read_previous_run,
    save_reduction,
    with_unchanged,
    write_embeddings,
)
from fruits_features.stages.model_store import check_model_transfer
from fruits_features.stages.preflight import preflight
from fruits_features.stages.reduce import Reduction, components_to_columns, fit_reduction, project

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
        ModelMismatchError: the previous run embedded with another backbone, other weights or at
            another size.
    """
    job = JobRun.start(spark, config, "features", run_id)
    if config.classifier.enabled or config.output.incremental_base:
        check_model_transfer(config, spark.sparkContext.master or "")
    previous_uri = previous_run_uri(config)
    previous = (
        None if previous_uri is None else read_previous_run(job.client, job.settings, previous_uri, config)
    )
    checked = preflight(job, config)
    listing = checked.listing

    with ExitStack() as cleanup, job.failure_recorded():
        if listing.frame is not None:  # keys listed on the executors: released however the run ends
            cleanup.callback(listing.frame.unpersist)
        increment = None
        if previous is not None:
            with job.timer.stage("increment"):
                increment = plan_increment(job, listing, previous)
            cleanup.callback(increment.release)
            job.manifest.incremental = increment.section(config.incremental.mode)
            checked = replace(checked, listing=increment.to_embed)  # embed the new and changed only
        embedded = run_embed_stage(job, config, checked, cleanup=cleanup, allow_none=increment is not None)
        embedded.counts.keys_listed, embedded.counts.keys_skipped = listing.keys_listed, listing.skipped
        featurized, rows = every_image(job, embedded, increment, cleanup)
        # The embeddings and the model save are writes of their own, mostly waiting on S3 and on
        # Spark's scheduling: they run in a thread beside the fit and the features' write. Closed
        # (waited for) before the persisted rows are released, however the run ends.
        beside = cleanup.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="beside"))
        pending: list[Future[None]] = []
        if config.output.incremental_base:
            pending.append(
                beside.submit(
                    write_embeddings_stage, job, featurized, rows, embedded.augmented, config.augment.copies
                )
            )
            job.manifest.embeddings = f"{job.uri.join(EMBEDDINGS_DIR)}/"
        if increment is not None and config.incremental.mode == "apply":
            apply_fit(job, config, increment, embedded.featurized, rows)
            wait_for(pending)
            return job.finish(embedded)

        def fitted(reduction: Reduction) -> None:
            if config.output.incremental_base and not config.classifier.enabled:
                # No classifier will save it: the reduction is the model, saved beside the write.
                pending.append(beside.submit(save_reduction_stage, job, config, reduction))

        reduction, projected = reduce_and_write(job, config, featurized, rows, cleanup, fitted=fitted)
        copies = None
        if embedded.augmented is not None:
            copies = write_augmented(job, config, embedded.augmented, reduction, images=rows, cleanup=cleanup)

        classes = class_counts(featurized) if config.classifier.enabled or config.report.enabled else {}
        evaluation = None
        if config.classifier.enabled:
            evaluation, job.manifest.classifier = run_classifier(
                job, config, reduction=reduction, projected=projected, classes=classes, copies=copies
            )
            if evaluation is not None:
                cleanup.callback(evaluation.predictions.unpersist)
        if config.output.incremental_base and config.classifier.enabled and evaluation is None:
            save_reduction_stage(job, config, reduction)  # the classifier was skipped: the reduction alone
        wait_for(pending)

        def report() -> str:
            return build_report(
                config,
                manifest=job.manifest.to_dict(),
                reduction=reduction,
                projected=projected,
                classes=classes,
                evaluation=evaluation,
                client=job.client,
                run_uri=job.uri,
            )

        return job.finish(embedded, report=report if config.report.enabled else None)


def write_embeddings_stage(
    job: JobRun, featurized: DataFrame, rows: int, copies: DataFrame | None = None, per_image: int = 0
) -> None:
    """Stage ``embeddings``: write ``embeddings/`` (with ``per_image`` augmented ``copies`` of each
    image, flagged) and check its rows (run beside the fit)."""
    expected = rows + (rows * per_image if copies is not None else 0)
    with job.timer.stage("embeddings", watched=False):
        check_rows("embeddings", write_embeddings(job, featurized, copies), expected)


def save_reduction_stage(job: JobRun, config: JobConfig, reduction: Reduction) -> None:
    """Stage ``model_save``: the fitted scaler + PCA under ``model/`` (run beside the write)."""
    with job.timer.stage("model_save", watched=False):
        save_reduction(job, config, reduction)


def wait_for(pending: list[Future[None]]) -> None:
    """Wait for the writes running beside the driver; the first error is raised."""
    for future in pending:
        future.result()


def every_image(
    job: JobRun, embedded: Embedded, increment: Increment | None, cleanup: ExitStack
) -> tuple[DataFrame, int]:
    """The features of every listed image and how many: this run's, and in an incremental run the
    previous run's unchanged ones (persisted until ``cleanup`` closes)."""
    if increment is None:
        return embedded.featurized, embedded.counts.featurized
    featurized = with_unchanged(job, increment, embedded.featurized).persist(StorageLevel.MEMORY_AND_DISK)
    cleanup.callback(featurized.unpersist)
    return featurized, embedded.counts.featurized + increment.counts["unchanged"]


def apply_fit(job: JobRun, config: JobConfig, increment: Increment, featurized: DataFrame, rows: int) -> None:
    """``incremental.mode: apply``: this run's images projected (and classified) by the previous
    run's fit, written beside the unchanged images' components; the manifest says whose fit."""
    with job.timer.stage("apply"):
        applied = apply_previous(job, config, increment, featurized)
    job.manifest.counts.part_files = check_rows("feature", applied.features, rows)
    job.manifest.pca = PcaSection(**increment.previous.manifest["pca"])
    if applied.predictions:
        job.manifest.classifier = {"status": "applied", "predictions": f"{job.uri.join(PREDICTIONS_DIR)}/"}
    log.info(
        "applied the fit of %s: %d rows under %s (no report: the previous run's describes the fit)",
        increment.previous.uri,
        rows,
        job.uri,
    )


def reduce_and_write(
    job: JobRun,
    config: JobConfig,
    featurized: DataFrame,
    rows: int,
    cleanup: ExitStack,
    *,
    fitted: Callable[[Reduction], None] | None = None,
) -> tuple[Reduction, DataFrame]:
    """Fit the scaler + PCA on every image, write their components as ``features/``; returns the
    fit and the components (``path, label, components``), persisted until ``cleanup`` closes.
    ``fitted`` is called with the fit before the write starts."""
    if isinstance(config.pca.k, int) and rows <= config.pca.k:
        log.warning(
            "only %d images for %d components: the trailing ones carry no information", rows, config.pca.k
        )
    with job.timer.stage("reduce"):
        reduction = fit_reduction(featurized, config.pca.k)
    log.info(
        "fitted StandardScaler + PCA(k=%d%s): %.1f%% of the variance kept",
        reduction.k,
        "" if reduction.variance_target is None else f", the fewest for {reduction.variance_target:g}",
        100 * reduction.cumulative_variance[-1],
    )
    job.manifest.pca = PcaSection(
        reduction.k, reduction.variance_target, reduction.explained_variance, reduction.cumulative_variance
    )
    if fitted is not None:
        fitted(reduction)
    # Persisted: written, classified and sampled for the report.
    projected = project(featurized.drop("etag"), reduction).persist(StorageLevel.MEMORY_AND_DISK)
    cleanup.callback(projected.unpersist)
    with job.timer.stage("write"):
        columns = with_folder(components_to_columns(projected, reduction.k), config.labels, config.input_uri)
        parts = write_parts(columns, job.uri, job.settings, FEATURES_DIR, config.output.format)
    job.manifest.counts.part_files = check_rows("feature", parts, rows)
    log.info("wrote %d rows in %d part files under %s", rows, len(parts), job.uri.join(FEATURES_DIR))
    return reduction, projected


def check_rows(what: str, parts: list[WrittenPart], rows: int) -> int:
    """Check that ``parts`` hold ``rows`` rows in all; returns how many parts.

    Raises:
        PipelineError: they do not.
    """
    written = sum(part.rows for part in parts)
    if written != rows:
        raise PipelineError(f"wrote {written} {what} rows but {rows} images were featurized")
    return len(parts)
