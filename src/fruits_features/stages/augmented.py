"""The augmented copies after the fit (``augment.copies``): projected by the scaler + PCA fitted on
the originals, written under ``<run>/augmented/``, and described in the manifest's ``augment``."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame

from fruits_features.config import JobConfig
from fruits_features.errors import PipelineError
from fruits_features.io.labels import with_folder
from fruits_features.io.outputs import AUGMENTED_DIR, write_parts
from fruits_features.stages.reduce import Reduction, components_to_columns, project

if TYPE_CHECKING:
    from fruits_features.job_run import JobRun

log = logging.getLogger(__name__)


def augment_section(config: JobConfig, images: int, copies: int, folder: str) -> dict[str, Any]:
    """The manifest's ``augment``: the copies per image and their seed, how many were written
    and where, and what the PCA was fitted on."""
    return {
        "copies_per_image": config.augment.copies,
        "seed": config.augment.seed,
        "images": images,
        "copies": copies,
        "augmented": folder,
        "pca_fitted_on": "originals",
    }


def write_augmented(
    job: JobRun,
    config: JobConfig,
    copies: DataFrame,
    reduction: Reduction,
    *,
    images: int,
    cleanup: ExitStack,
) -> DataFrame:
    """Stage ``augmented``: the copies' components as ``<run>/augmented/`` (``path`` of the source
    image, ``label``, ``copy``, ``pc_1`` ... ``pc_k``); returns them as ``path, label, copy,
    COMPONENTS_COL``, persisted until ``cleanup`` closes (the classifier trains on them).

    Raises:
        PipelineError: the parts do not hold ``augment.copies`` rows for each of the ``images``.
    """
    expected = images * config.augment.copies
    with job.timer.stage("augmented"):
        projected = project(copies.drop("etag"), reduction).persist(StorageLevel.MEMORY_AND_DISK)
        cleanup.callback(projected.unpersist)
        columns = with_folder(components_to_columns(projected, reduction.k), config.labels, config.input_uri)
        parts = write_parts(columns, job.uri, job.settings, AUGMENTED_DIR, config.output.format)
    written = sum(part.rows for part in parts)
    if written != expected:
        raise PipelineError(
            f"wrote {written} augmented rows, not {images} images x {config.augment.copies} copies"
        )
    folder = f"{job.uri.join(AUGMENTED_DIR)}/"
    job.manifest.augment = augment_section(config, images, written, folder)
    log.info(
        "wrote %d augmented copies of %d images in %d part files under %s",
        written,
        images,
        len(parts),
        folder,
    )
    return projected
