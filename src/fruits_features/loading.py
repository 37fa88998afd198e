"""Listed keys to a DataFrame of image bytes, fetched on the executors.

The driver only ever holds the keys; every byte of every image is read by an executor's own
boto3 client (one per Python worker, reused), several objects at a time.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import BinaryType, StringType, StructField, StructType

from fruits_features.storage import ImageRef, S3Settings, S3Uri, describe_error, read_object, s3_client

log = logging.getLogger(__name__)

KEYS_SCHEMA = StructType(
    [StructField("path", StringType(), False), StructField("label", StringType(), False)]
)
LOADED_SCHEMA = StructType(
    [*KEYS_SCHEMA.fields, StructField("content", BinaryType()), StructField("error", StringType())]
)


def partition_count(images: int, parallelism: int, batch_size: int, configured: int = 0) -> int:
    """How many partitions to spread ``images`` over.

    Args:
        images: number of images listed.
        parallelism: the cores Spark can run tasks on (``defaultParallelism``).
        batch_size: the model batch size; a partition smaller than one batch wastes the model.
        configured: ``spark.partitions`` from config; 0 means choose.

    Returns:
        ``configured`` when set; otherwise up to four tasks per core (so a slow task does not
        hold the stage back), but never more partitions than full model batches.
    """
    if configured:
        return configured
    full_batches = math.ceil(images / batch_size)
    return max(1, min(full_batches, 4 * max(1, parallelism)))


def keys_frame(spark: SparkSession, images: list[ImageRef], partitions: int) -> DataFrame:
    """The listed images as a ``path, label`` DataFrame over ``partitions`` partitions, in order."""
    rows = [(ref.path, ref.label) for ref in images]
    rdd = spark.sparkContext.parallelize(rows, max(1, partitions))
    return spark.createDataFrame(rdd, KEYS_SCHEMA)


def fetch_batches(
    frames: Iterable[pd.DataFrame], settings: S3Settings, threads: int
) -> Iterator[pd.DataFrame]:
    """Add ``content`` (the object's bytes) and ``error`` to each batch of ``path, label`` rows.

    An object that cannot be read after boto3's retries gets ``content=None`` and the reason
    in ``error``; it never fails the task.
    """
    client = s3_client(settings)

    def fetch(path: str) -> tuple[bytes | None, str | None]:
        try:
            return read_object(client, S3Uri.parse(path)), None
        # Raised only once boto3's retries are spent: the object is recorded as rejected with
        # the cause, and max_rejected_fraction decides whether the run may still succeed.
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            return None, f"could not read the object: {describe_error(exc)}"

    with ThreadPoolExecutor(max_workers=threads) as pool:
        for frame in frames:
            results = list(pool.map(fetch, frame["path"]))
            yield frame.assign(
                content=pd.Series([content for content, _ in results], index=frame.index, dtype=object),
                error=pd.Series([error for _, error in results], index=frame.index, dtype=object),
            )


def load_images(keys: DataFrame, settings: S3Settings, threads: int) -> DataFrame:
    """Stage: ``path, label`` -> ``path, label, content, error``, reading S3 on the executors."""
    return keys.mapInPandas(lambda frames: fetch_batches(frames, settings, threads), schema=LOADED_SCHEMA)
