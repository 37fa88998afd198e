"""Listed keys to a DataFrame, and the executor-side reads of the images' bytes.

The driver only ever holds the keys; every byte of every image is read by an executor's own
boto3 client (one per Python worker, reused), several objects at a time, inside the same Python
worker that embeds them (see :func:`fruits_features.features.udf.embed_column`), so the bytes
never cross into the JVM either.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd
from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StringType, StructField, StructType

from fruits_features.io.listing import ImageRef
from fruits_features.io.partitions import frame_evenly
from fruits_features.io.s3 import S3Settings, describe_error, read_object, s3_client
from fruits_features.io.uri import S3Uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

KEYS_SCHEMA = StructType(
    [
        StructField("path", StringType(), False),
        StructField("label", StringType(), False),
        StructField("etag", StringType(), True),
    ]
)


# The most images one task embeds when spark.partitions is 0: past one task per core, a large input
# gets more, shorter tasks (about 11 minutes each at 30 images/s), so that a lost task or a slow node
# costs minutes, not hours (a per-core task at 100 million images on 256 cores would be 390,625 images).
MAX_IMAGES_PER_PARTITION = 20_000


def partition_count(images: int, parallelism: int, batch_size: int, configured: int = 0) -> int:
    """How many partitions to spread ``images`` over.

    Args:
        images: number of images listed.
        parallelism: the cores Spark can run tasks on (``defaultParallelism``).
        batch_size: the model batch size; a partition smaller than one batch wastes the model.
        configured: ``spark.partitions`` from config; 0 means choose.

    Returns:
        ``configured`` when set; otherwise one task per core, or more where a task would have
        over :data:`MAX_IMAGES_PER_PARTITION` images, but never more partitions than full model
        batches. Measured (`make bench-knobs`, 500 images on 2 cores): 2 partitions
        12.0 images/s, 8 partitions 10.8, 32 partitions 8.4. Each task pays a start-up (Arrow
        stream, the first read not yet overlapped with the model) that fewer, longer tasks
        amortise; on a cluster, set ``spark.partitions`` to a few per core against stragglers.
    """
    if configured:
        return configured
    full_batches = math.ceil(images / batch_size)
    per_core = max(1, parallelism, math.ceil(images / MAX_IMAGES_PER_PARTITION))
    return max(1, min(full_batches, per_core))


def keys_frame(spark: SparkSession, images: list[ImageRef], partitions: int) -> DataFrame:
    """The listed images as a ``path, label, etag`` DataFrame over ``partitions`` partitions, in
    order, of sizes that differ by one at most (so that no task of the embed stage is longer
    than the others)."""
    rows = [(ref.path, ref.label, ref.etag) for ref in images]
    return frame_evenly(spark, rows, KEYS_SCHEMA, partitions)


FetchResult = tuple[bytes | None, str | None]


def fetch_object(client: S3Client, path: str) -> FetchResult:
    """The bytes of the object at ``path``, or ``None`` and the reason it could not be read.

    Errors surface here only once boto3's retries are spent: the object is then recorded as
    rejected with the cause, and ``max_rejected_fraction`` decides whether the run succeeds.
    """
    try:
        return read_object(client, S3Uri.parse(path)), None
    except (ClientError, BotoCoreError, Boto3Error) as exc:
        return None, f"could not read the object: {describe_error(exc)}"


@dataclass
class PendingReads:
    """The reads of one batch of paths, in flight: :meth:`contents` hands each over as it lands."""

    futures: list[Future[FetchResult]]
    paths: list[str] = field(default_factory=list)  # what each future reads, in order
    errors: list[str | None] = field(default_factory=list)  # filled as :meth:`contents` goes
    # Each read's own seconds (filled by the fetch threads), and the seconds :meth:`contents`
    # waited for reads not yet landed: the part of S3's latency the read-ahead did not hide.
    read_seconds: list[float] = field(default_factory=list)
    wait_seconds: float = 0.0

    def contents(self) -> Iterator[bytes | None]:
        """Each object's bytes in order, as soon as it has been read (``None`` if it could not be).

        Why an object could not be read is appended to :attr:`errors`, aligned with the bytes.
        """
        for future in self.futures:
            started = time.perf_counter()
            content, error = future.result()
            self.wait_seconds += time.perf_counter() - started
            self.errors.append(error)
            yield content


def _timed_fetch(client: S3Client, path: str, seconds: list[float]) -> FetchResult:
    started = time.perf_counter()
    try:
        return fetch_object(client, path)
    finally:
        seconds.append(time.perf_counter() - started)  # list.append is atomic across threads


def prefetched(batches: Iterable[pd.Series], settings: S3Settings, threads: int) -> Iterator[PendingReads]:
    """The reads of each batch of paths, ``threads`` at a time, submitted one batch ahead.

    While the caller works on batch *k* (decoding, inference), the reads of batch *k+1* are
    already in flight, so S3 latency hides behind the model instead of adding to it; and the
    caller can start on batch *k*'s first images before its last ones have arrived.

    Yields:
        Per batch, in order, its reads (the next batch's are submitted before).
    """
    client = s3_client(settings)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: PendingReads | None = None
        for paths in batches:
            scheduled = PendingReads([], paths=list(paths))
            scheduled.futures = [
                pool.submit(_timed_fetch, client, path, scheduled.read_seconds) for path in paths
            ]
            if pending is not None:
                yield pending
            pending = scheduled
        if pending is not None:
            yield pending
