"""Listing a large prefix on the executors: the driver finds the folders with one delimiter listing,
then each folder is listed by an executor's own boto3 client, so no single loop walks every key and
the driver never holds them. The images stay in a persisted ``path, label`` DataFrame; the counts
come back from one aggregation and stay exact.

The same keys as :func:`fruits_features.io.listing.list_images`: every key under the prefix is either
directly under it (listed by the driver's delimiter listing: few in the ``<Class>/<file>`` layout)
or under one of its folders (listed, nested keys included, by an executor).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError
from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from fruits_features.errors import FruitsFeaturesError, InputError, InventoryError
from fruits_features.io.listing import LISTED_DDL, Listing, image_label
from fruits_features.io.partitions import parallelize_evenly
from fruits_features.io.s3 import S3Settings, describe_error, iter_objects, plain_etag, s3_client
from fruits_features.io.uri import S3Uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

# The most folders one listing task takes: a task per few folders spreads a long tail of big ones.
FOLDERS_PER_TASK = 4


def list_folders(client: S3Client, uri: S3Uri) -> tuple[list[str], list[tuple[str, str | None]]]:
    """The folders directly under ``uri`` (as key prefixes) and the keys (with their ETags)
    directly under it.

    Raises:
        InputError: for a missing bucket, denied access or an unreachable endpoint.
    """
    folders: list[str] = []
    keys: list[tuple[str, str | None]] = []
    paginator = client.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=uri.bucket, Prefix=uri.prefix, Delimiter="/"):
            folders += [entry["Prefix"] for entry in page.get("CommonPrefixes", [])]
            keys += [(item["Key"], plain_etag(item.get("ETag"))) for item in page.get("Contents", [])]
    except (ClientError, BotoCoreError) as exc:
        raise InputError(f"cannot list {uri}: {describe_error(exc)}") from exc
    return folders, keys


def listed_rows(
    folders: Iterable[str],
    settings: S3Settings,
    root: S3Uri,
    extensions: tuple[str, ...],
    labelled_only: bool,
) -> Iterator[tuple[str, str | None, str | None]]:
    """Executor side: ``(path, label, etag)`` for every key under each folder, ``label`` ``None``
    for a key that is skipped."""
    client = s3_client(settings)
    for folder in folders:
        for key, etag in iter_objects(client, S3Uri(root.bucket, folder)):
            yield (
                str(S3Uri(root.bucket, key)),
                image_label(key, root.prefix, extensions, labelled_only=labelled_only),
                etag,
            )


def list_images_in_parallel(
    spark: SparkSession,
    client: S3Client,
    settings: S3Settings,
    uri: S3Uri,
    extensions: tuple[str, ...],
    *,
    labelled_only: bool = True,
) -> Listing:
    """List the images under ``uri`` on the executors (see the module's notes).

    Returns:
        A :class:`Listing` whose ``frame`` holds the images (persisted: the caller unpersists it)
        and whose counts are exact.

    Raises:
        InputError: if the prefix or one of its folders cannot be listed.
    """
    folders, top_keys = list_folders(client, uri)
    top = [
        (
            str(S3Uri(uri.bucket, k)),
            image_label(k, uri.prefix, extensions, labelled_only=labelled_only),
            etag,
        )
        for k, etag in top_keys
    ]
    context = spark.sparkContext
    slices = max(1, min(len(folders), -(-len(folders) // FOLDERS_PER_TASK), 4 * context.defaultParallelism))
    rows = parallelize_evenly(context, folders, slices).mapPartitions(
        lambda part: listed_rows(part, settings, uri, extensions, labelled_only)
    )
    listed = spark.createDataFrame(rows, LISTED_DDL)
    if top:
        listed = listed.unionByName(spark.createDataFrame(top, LISTED_DDL))
    listing = persisted_listing(listed, f"cannot list {uri}", InputError)
    log.info("listed %d folders under %s on the executors (%d tasks)", len(folders), uri, slices)
    return listing


def persisted_listing(listed: DataFrame, failure: str, error: type[FruitsFeaturesError]) -> Listing:
    """Persist a listing made on the executors and count it exactly, with one aggregation.

    Args:
        listed: ``path, label, etag`` rows (:data:`~fruits_features.io.listing.LISTED_DDL`).
        failure: how the error starts when the executors fail (``cannot list s3://...``).
        error: the exception raised then, with the executor's own one-line reason where it gave
            one; an executor's :class:`InventoryError` (a malformed input file) stays one.

    Returns:
        A :class:`Listing` whose ``frame`` is ``listed``, persisted (the caller unpersists it).
    """
    listed = listed.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        totals = listed.agg(F.count("*").alias("keys"), F.count("label").alias("images")).first()
    except Exception as exc:
        listed.unpersist()
        kind, reason = executor_error(exc)
        raised = InventoryError if kind == "InventoryError" else error
        raise raised(reason or f"{failure}: {str(exc).splitlines()[0]}") from exc
    keys, images = (int(totals["keys"]), int(totals["images"])) if totals is not None else (0, 0)
    return Listing(images=[], keys_listed=keys, skipped=keys - images, frame=listed)


def executor_error(exc: BaseException) -> tuple[str | None, str | None]:
    """The error an executor raised inside a failed Spark job: its class name (``InputError``,
    ``InventoryError``) and its one-line message (``cannot list s3://...: ...``)."""
    match = re.search(r"\b(InputError|InventoryError): ([^\n]*)", str(exc))
    return (match[1], match[2]) if match else (None, None)
