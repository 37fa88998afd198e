"""Gathering the report's inputs with Spark and S3, every result bounded (a sample of points per
class, a few thumbnails, a few augmented examples)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from fruits_features.features.augment import AugmentSpec
from fruits_features.features.decoding import ImageDecodeError, decode_image
from fruits_features.io.s3 import describe_error, read_object
from fruits_features.io.uri import S3Uri
from fruits_features.reporting.augmentation import augmented_example
from fruits_features.reporting.inputs import AugmentedExample, ConfusedExample
from fruits_features.stages.classify import PREDICTED_COL, SPLIT_COL, TEST, TRAIN
from fruits_features.stages.metrics import Confusion
from fruits_features.stages.reduce import COMPONENTS_COL

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)
THUMBNAIL_SIZE = 100  # Fruits 360's own size
THUMBNAIL_MAX_PIXELS = 50_000_000


# -- gathering (Spark, S3; every result bounded) ------------------------------------------------


def spread_classes(
    centroids: Mapping[str, tuple[float, float]], class_counts: Mapping[str, int], count: int
) -> list[str]:
    """``count`` classes that show the spread of the first two components, in name order.

    A farthest-point choice over the classes' mean (PC1, PC2): the most frequent class first (ties
    broken by name), then each time the class farthest from every class chosen so far (ties broken
    by name). With as many images in every class, the most frequent would be the first ones by
    name (in Fruits 360, all apples); this choice spans the plane instead. Deterministic.
    """
    names = sorted(centroids, key=lambda name: (-class_counts.get(name, 0), name))
    if not names:
        return []
    points = np.array([centroids[name] for name in names], dtype=float)
    chosen = [0]
    nearest = np.linalg.norm(points - points[0], axis=1)  # each class's distance to the chosen ones
    while len(chosen) < min(count, len(names)):
        # argmax returns the first maximum: ties go to the more frequent class, then by name.
        farthest = int(np.argmax(np.where(np.isin(np.arange(len(names)), chosen), -1.0, nearest)))
        chosen.append(farthest)
        nearest = np.minimum(nearest, np.linalg.norm(points - points[farthest], axis=1))
    return sorted(names[i] for i in chosen)


def first_two_components() -> tuple[Column, Column]:
    """PC1 and PC2 of ``components`` (PC2 0 when there is one component)."""
    components = vector_to_array(F.col(COMPONENTS_COL))
    return components.getItem(0), F.when(F.size(components) > 1, components.getItem(1)).otherwise(F.lit(0.0))


def class_centroids(projected: DataFrame) -> dict[str, tuple[float, float]]:
    """Each class's mean PC1 and PC2 (one row per class reaches the driver)."""
    first, second = first_two_components()
    rows = projected.groupBy("label").agg(F.avg(first).alias("pc_1"), F.avg(second).alias("pc_2")).collect()
    return {row["label"]: (float(row["pc_1"]), float(row["pc_2"])) for row in rows}


def scatter_sample(
    projected: DataFrame, classes: Sequence[str], per_class: int, seed: int = 0
) -> pd.DataFrame:
    """``label, pc_1, pc_2`` of at most ``per_class`` images of each of ``classes``, on the driver.

    The images kept are chosen by a hash of the path, so the sample is reproducible. With a
    single component, ``pc_2`` is 0.
    """
    order = Window.partitionBy("label").orderBy(F.xxhash64(F.lit(seed), F.col("path")), F.col("path"))
    first, second = first_two_components()
    rows = (
        projected.filter(F.col("label").isin(list(classes)))
        .withColumn("_rank", F.row_number().over(order))
        .filter(F.col("_rank") <= per_class)
        .select("label", first.alias("pc_1"), second.alias("pc_2"))
        .collect()
    )
    return pd.DataFrame([tuple(row) for row in rows], columns=["label", "pc_1", "pc_2"])


def example_paths(
    predictions: DataFrame, confusions: Sequence[Confusion]
) -> list[tuple[str | None, str | None]]:
    """For each confusion, one misclassified test image and one training image of the predicted class.

    Two small aggregations: one path per confused cell and one per predicted class reach the driver.
    """
    if not confusions:
        return []
    cells = [(c.true, c.predicted) for c in confusions]
    in_cells = F.lit(False)
    for true, predicted in cells:
        in_cells = in_cells | ((F.col("label") == true) & (F.col(PREDICTED_COL) == predicted))
    wrong = {
        (row["label"], row[PREDICTED_COL]): row["path"]
        for row in predictions.filter((F.col(SPLIT_COL) == TEST) & in_cells)
        .groupBy("label", PREDICTED_COL)
        .agg(F.min("path").alias("path"))
        .collect()
    }
    references = {
        row["label"]: row["path"]
        for row in predictions.filter(
            (F.col(SPLIT_COL) == TRAIN) & F.col("label").isin(sorted({p for _, p in cells}))
        )
        .groupBy("label")
        .agg(F.min("path").alias("path"))
        .collect()
    }
    return [(wrong.get(cell), references.get(cell[1])) for cell in cells]


def fetch_thumbnail(
    client: S3Client,
    path: str | None,
    size: int = THUMBNAIL_SIZE,
    *,
    max_pixels: int = THUMBNAIL_MAX_PIXELS,
) -> np.ndarray | None:
    """An image from S3, decoded and resized for the report (:func:`decode_image` with ``size`` and
    ``max_pixels``); ``None`` (logged as a warning) if it cannot be read or decoded."""
    if path is None:
        return None
    try:
        return decode_image(read_object(client, S3Uri.parse(path)), size, max_pixels=max_pixels)
    except (ClientError, BotoCoreError, Boto3Error) as exc:
        log.warning("report: cannot read %s: %s", path, describe_error(exc))
    except ImageDecodeError as exc:
        log.warning("report: cannot decode %s: %s", path, exc)
    return None


def confused_examples(
    client: S3Client, predictions: DataFrame, confusions: Sequence[Confusion]
) -> list[ConfusedExample]:
    """:func:`example_paths` with their thumbnails, read from S3 by the driver (two per confusion)."""
    examples = []
    for confusion, (image_path, reference_path) in zip(
        confusions, example_paths(predictions, confusions), strict=True
    ):
        examples.append(
            ConfusedExample(
                confusion=confusion,
                image_path=image_path,
                reference_path=reference_path,
                image=fetch_thumbnail(client, image_path),
                reference=fetch_thumbnail(client, reference_path),
            )
        )
    return examples


def first_paths(projected: DataFrame, classes: Sequence[str]) -> list[tuple[str, str]]:
    """``(label, path)`` of each of ``classes``' first image by path, in name order (one row per
    class reaches the driver). A class without images is left out."""
    if not classes:
        return []
    rows = (
        projected.filter(F.col("label").isin(list(classes)))
        .groupBy("label")
        .agg(F.min("path").alias("path"))
        .collect()
    )
    return sorted((row["label"], row["path"]) for row in rows)


def augmented_examples(
    client: S3Client,
    paths: Sequence[tuple[str, str]],
    spec: AugmentSpec,
    *,
    image_size: int,
    max_pixels: int,
) -> list[AugmentedExample]:
    """Each ``(label, path)`` read from S3 by the driver, decoded as the executors decode it
    (``model.image_size``, ``model.max_image_pixels``), beside its first augmented copies
    (:func:`~fruits_features.reporting.augmentation.augmented_example`).

    An image that cannot be read or decoded is left out, with a warning: the report goes on.
    """
    examples = []
    for label, path in paths:
        pixels = fetch_thumbnail(client, path, image_size, max_pixels=max_pixels)
        if pixels is not None:
            examples.append(augmented_example(label, path, pixels, spec))
    log.info("report: %d of %d augmented examples read", len(examples), len(paths))
    return examples
