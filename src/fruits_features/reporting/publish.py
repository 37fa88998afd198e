"""The report end to end: gather its bounded inputs, draw it, upload ``<run>/report/``."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame

from fruits_features.config import JobConfig
from fruits_features.io.folders import upload_folder
from fruits_features.io.outputs import REPORT_DIR
from fruits_features.io.uri import S3Uri
from fruits_features.reporting.augmentation import EXAMPLE_CLASSES
from fruits_features.reporting.gather import (
    augmented_examples,
    class_centroids,
    confused_examples,
    first_paths,
    scatter_sample,
    spread_classes,
)
from fruits_features.reporting.inputs import AugmentedExample, ConfusedExample, ReportInputs
from fruits_features.reporting.page import INDEX_FILE, write_report_folder
from fruits_features.settings import augment_spec
from fruits_features.stages.classify import Evaluation
from fruits_features.stages.metrics import most_confused
from fruits_features.stages.reduce import Reduction

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)


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
    """Gather the report's bounded inputs, draw it, upload ``<run>/report/``; returns its URI.

    With ``augment.copies``, the first image of each of a few classes chosen to show the spread is
    read from S3 and shown beside its first augmented copies; without, nothing more is read.
    """
    centroids = class_centroids(projected)
    shown = spread_classes(centroids, classes, config.report.classes)
    sample = scatter_sample(projected, shown, config.report.points_per_class)
    examples: list[ConfusedExample] = []
    if evaluation is not None and config.report.confused_pairs:
        metrics = evaluation.metrics
        confusions = most_confused(metrics.labels, metrics.confusion, config.report.confused_pairs)
        examples = confused_examples(client, evaluation.predictions, confusions)
    spec = augment_spec(config)
    augmented: list[AugmentedExample] = []
    if spec is not None:
        augmented = augmented_examples(
            client,
            first_paths(projected, spread_classes(centroids, classes, EXAMPLE_CLASSES)),
            spec,
            image_size=config.model.image_size,
            max_pixels=config.model.max_image_pixels,
        )
    inputs = ReportInputs(
        manifest=manifest,
        spectrum=reduction.spectrum,
        scatter=sample,
        metrics=evaluation.metrics if evaluation is not None else None,
        examples=examples,
        augment=spec,
        augmented=augmented,
    )
    report_uri = run_uri.join(REPORT_DIR)
    with tempfile.TemporaryDirectory(prefix="fruits-report-") as scratch:
        files = write_report_folder(inputs, Path(scratch))
        upload_folder(client, Path(scratch), report_uri)
    index = report_uri.join(INDEX_FILE)
    log.info("wrote the report (%d files): %s", len(files), index)
    return str(index)
