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
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from fruits_features.errors import InputError
from fruits_features.io.listing import Listing, image_label
from fruits_features.io.s3 import S3Settings, describe_error, iter_keys, s3_client
from fruits_features.io.uri import S3Uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

LISTED_SCHEMA = StructType(
    [StructField("path", StringType(), False), StructField("label", StringType(), True)]
)
# The most folders one listing task takes: a task per few folders spreads a long tail of big ones.
FOLDERS_PER_TASK = 4


def list_folders(client: S3Client, uri: S3Uri) -> tuple[list[str], list[str]]:
    """The folders directly under ``uri`` (as key prefixes) and the keys directly under it.

    Raises:
        InputError: for a missing bucket, denied access or an unreachable endpoint.
    """
    folders: list[str] = []
    keys: list[str] = []
    paginator = client.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=uri.bucket, Prefix=uri.prefix, Delimiter="/"):
            folders += [entry["Prefix"] for entry in page.get("CommonPrefixes", [])]
            keys += [item["Key"] for item in page.get("Contents", [])]
    except (ClientError, BotoCoreError) as exc:
        raise InputError(f"cannot list {uri}: {describe_error(exc)}") from exc
    return folders, keys


def listed_rows(
    folders: Iterable[str],
    settings: S3Settings,
    root: S3Uri,
    extensions: tuple[str, ...],
    labelled_only: bool,
) -> Iterator[tuple[str, str | None]]:
    """Executor side: ``(path, label)`` for every key under each folder, ``label`` ``None`` for a
    key that is skipped."""
    client = s3_client(settings)
    for folder in folders:
        for key in iter_keys(client, S3Uri(root.bucket, folder)):
            yield (
                str(S3Uri(root.bucket, key)),
                image_label(key, root.prefix, extensions, labelled_only=labelled_only),
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
        (str(S3Uri(uri.bucket, k)), image_label(k, uri.prefix, extensions, labelled_only=labelled_only))
        for k in top_keys
    ]
    context = spark.sparkContext
    slices = max(1, min(len(folders), -(-len(folders) // FOLDERS_PER_TASK), 4 * context.defaultParallelism))
    rows = context.parallelize(folders, slices).mapPartitions(
        lambda part: listed_rows(part, settings, uri, extensions, labelled_only)
    )
    listed = spark.createDataFrame(rows, LISTED_SCHEMA)
    if top:
        listed = listed.unionByName(spark.createDataFrame(top, LISTED_SCHEMA))
    listed = listed.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        totals = listed.agg(F.count("*").alias("keys"), F.count("label").alias("images")).first()
    except Exception as exc:
        listed.unpersist()
        raise InputError(executor_error(exc) or f"cannot list {uri}: {str(exc).splitlines()[0]}") from exc
    keys, images = (int(totals["keys"]), int(totals["images"])) if totals is not None else (0, 0)
    log.info("listed %d folders under %s on the executors (%d tasks)", len(folders), uri, slices)
    return Listing(images=[], keys_listed=keys, skipped=keys - images, frame=listed)


def executor_error(exc: BaseException) -> str | None:
    """The executor's own one-line reason inside a failed Spark job (``cannot list s3://...: ...``)."""
    match = re.search(r"InputError: (cannot list [^\n]*)", str(exc))
    return match[1] if match else None
