"""Writing a run's results to S3: part files from the executors, then the small files, then ``_SUCCESS``.

Layout under ``<output>/<run id>/``::

    features/part-00000.csv ...   header row + path,label,pc_1..pc_k; one part per non-empty partition
                                  (output.format parquet: part-00000.parquet, the same columns)
    predictions/part-00000.csv    with the classifier: path,label,split,predicted,probability
    embeddings/part-00000.parquet with output.incremental_base: path,label,etag,features (2048 floats)
    model/                        with the classifier: the fitted scaler + PCA + classifier, model.json
    metrics.json                  with the classifier: accuracy, macro F1, per-class metrics, confusions
    report/index.html, *.png      the report (unless report.enabled is false)
    rejected/part-00000.csv ...   path,reason of every listed image that was not featurized, written by
                                  the executors (one header-only part when there are none)
    manifest.json                 what was done: config, counts, explained variance, timings, versions
    _SUCCESS                      written last; without it nothing under the prefix is to be trusted
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark import TaskContext
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StringType, StructType

from fruits_features.io.partitions import parallelize_evenly
from fruits_features.io.s3 import S3Settings, iter_keys, read_object, s3_client, write_object
from fruits_features.io.uri import S3Uri
from fruits_features.manifest import RunManifest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

FEATURES_DIR = "features"
EMBEDDINGS_DIR = "embeddings"
AUGMENTED_DIR = "augmented"  # augment.copies: the copies' components
PREDICTIONS_DIR = "predictions"
MODEL_DIR = "model"
REPORT_DIR = "report"
METRICS_FILE = "metrics.json"
REJECTED_DIR = "rejected"
MANIFEST_FILE = "manifest.json"
SUCCESS_FILE = "_SUCCESS"
CSV_TYPE = "text/csv; charset=utf-8"
PARQUET_TYPE = "application/vnd.apache.parquet"
PartFormat = Literal["csv", "parquet"]
CONTENT_TYPES: dict[str, str] = {"csv": CSV_TYPE, "parquet": PARQUET_TYPE}


def part_name(partition: int, fmt: PartFormat = "csv") -> str:
    """``part-00007.csv`` (or ``.parquet``) for partition 7."""
    return f"part-{partition:05d}.{fmt}"


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """CSV with a header row; floats written with full precision so that they round-trip."""
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")


def to_parquet_bytes(frame: pd.DataFrame, schema: pa.Schema | None = None) -> bytes:
    """One Parquet file (Snappy, as Spark writes them); ``schema`` types an empty frame."""
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="snappy")
    return bytes(buffer.getvalue().to_pybytes())


def part_bytes(frame: pd.DataFrame, fmt: PartFormat, schema: pa.Schema | None = None) -> bytes:
    """``frame`` as one part file in ``fmt``."""
    return to_parquet_bytes(frame, schema) if fmt == "parquet" else to_csv_bytes(frame)


@dataclass(frozen=True)
class WrittenPart:
    """One part file: its URI and how many rows it holds."""

    uri: str
    rows: int


def _write_partition(
    frames: Iterable[pd.DataFrame], folder_uri: S3Uri, settings: S3Settings, fmt: PartFormat
) -> Iterator[pd.DataFrame]:
    batches = list(frames)
    rows = sum(len(frame) for frame in batches)
    if rows == 0:
        return
    context = TaskContext.get()
    partition = context.partitionId() if context is not None else 0
    uri = folder_uri.join(part_name(partition, fmt))
    # One PUT per partition: a retried task overwrites the same key with the same rows.
    body = part_bytes(pd.concat(batches, ignore_index=True), fmt)
    write_object(s3_client(settings), uri, body, CONTENT_TYPES[fmt])
    yield pd.DataFrame({"uri": [str(uri)], "rows": [rows]})


def write_parts(
    frame: DataFrame,
    run_uri: S3Uri,
    settings: S3Settings,
    folder: str = FEATURES_DIR,
    fmt: PartFormat = "csv",
) -> list[WrittenPart]:
    """Write ``frame`` as part files (CSV or Parquet) under ``<run>/<folder>/``, from the executors.

    Only the parts' names and row counts come back to the driver.

    Args:
        frame: the rows to write, every column a column of the files.
        run_uri: the run's folder.
        settings: the executors' boto3 settings.
        folder: ``features`` (the default) or ``predictions``.
        fmt: ``output.format``.
    """
    folder_uri = run_uri.join(folder)
    written = frame.mapInPandas(
        lambda frames: _write_partition(frames, folder_uri, settings, fmt),
        schema="uri string, rows long",
    ).collect()
    parts = [WrittenPart(uri=row["uri"], rows=int(row["rows"])) for row in written]
    if not parts:
        parts = [write_empty_part(frame, run_uri, settings, folder, fmt)]
    return sorted(parts, key=lambda part: part.uri)


def write_empty_part(
    frame: DataFrame, run_uri: S3Uri, settings: S3Settings, folder: str, fmt: PartFormat
) -> WrittenPart:
    """``<run>/<folder>/part-00000``, with ``frame``'s columns and no rows, written by the driver
    without running ``frame``: an empty part (a CSV header, a typed Parquet schema) keeps the
    folder readable by both pandas and Spark."""
    from pyspark.sql.pandas.types import to_arrow_schema

    empty = pd.DataFrame(columns=frame.columns)
    uri = run_uri.join(folder).join(part_name(0, fmt))
    body = part_bytes(empty, fmt, to_arrow_schema(frame.schema) if fmt == "parquet" else None)
    write_object(s3_client(settings), uri, body, CONTENT_TYPES[fmt])
    return WrittenPart(uri=str(uri), rows=0)


def part_uris(client: S3Client, folder_uri: S3Uri) -> list[str]:
    """The part files (``part-NNNNN.csv`` or ``.parquet``) under ``<run>/<folder>/``, sorted.

    Raises:
        InputError: the folder cannot be listed.
    """
    names = (f"{folder_uri.prefix}part-",)
    return sorted(
        str(S3Uri(folder_uri.bucket, key))
        for key in iter_keys(client, folder_uri)
        if key.startswith(names) and key.endswith((".csv", ".parquet"))
    )


def _read_partition(
    frames: Iterable[pd.DataFrame], settings: S3Settings, columns: list[str], strings: list[str]
) -> Iterator[pd.DataFrame]:
    client = s3_client(settings)
    for frame in frames:
        for uri in frame["uri"]:
            body = io.BytesIO(read_object(client, S3Uri.parse(uri)))
            if uri.endswith(".parquet"):
                yield pd.read_parquet(body, columns=columns)
            else:  # the text columns as written ("NA" is a label, not a missing value); floats exact
                yield pd.read_csv(
                    body,
                    usecols=columns,
                    dtype=dict.fromkeys(strings, str),
                    keep_default_na=False,
                    float_precision="round_trip",
                )[columns]


def read_parts(
    spark: SparkSession, client: S3Client, folder_uri: S3Uri, schema: StructType, settings: S3Settings
) -> DataFrame:
    """The part files a run wrote under ``folder_uri``, read back by the executors (a task per few
    files) as a DataFrame of ``schema``'s columns: only those are read from Parquet parts, and
    CSV floats come back to the bit.

    Raises:
        InputError: the folder cannot be listed.
    """
    uris = part_uris(client, folder_uri)
    columns = [f.name for f in schema.fields]
    strings = [f.name for f in schema.fields if f.dataType == StringType()]
    slices = max(1, min(len(uris), 4 * spark.sparkContext.defaultParallelism))
    files = spark.createDataFrame(
        parallelize_evenly(spark.sparkContext, [(u,) for u in uris], slices), "uri string"
    )
    return files.mapInPandas(
        lambda frames: _read_partition(frames, settings, columns, strings), schema=schema
    )


def json_bytes(data: Any) -> bytes:
    """``data`` as indented UTF-8 JSON, keys in the given order."""
    return json.dumps(data, indent=2, sort_keys=False).encode("utf-8")


def write_manifest(client: S3Client, run_uri: S3Uri, manifest: RunManifest) -> None:
    """Write ``manifest.json`` (also for a run that failed)."""
    write_object(client, run_uri.join(MANIFEST_FILE), json_bytes(manifest.to_dict()), "application/json")


def finish_run(client: S3Client, run_uri: S3Uri, manifest: RunManifest) -> None:
    """Write ``manifest.json`` and, only once it is stored, ``_SUCCESS``.

    If a write fails, the exception propagates before ``_SUCCESS`` exists, so the run is visibly
    incomplete.
    """
    write_manifest(client, run_uri, manifest)
    write_object(client, run_uri.join(SUCCESS_FILE), b"", "application/octet-stream")
    log.info("wrote %s and %s under %s", MANIFEST_FILE, SUCCESS_FILE, run_uri)


@contextmanager
def failure_recorded(client: S3Client, run_uri: S3Uri, manifest: RunManifest) -> Iterator[None]:
    """On any error in the block: write ``manifest.json`` with ``status: failed`` and the error
    (never ``_SUCCESS``), then let the error go on.

    The rejects are already under ``rejected/`` once the embed stage has counted them. A failure
    to write the manifest is logged; the run's own error is the one raised.
    """
    try:
        yield
    except Exception as exc:
        manifest.fail(exc)
        try:
            write_manifest(client, run_uri, manifest)
        except Exception as write_error:
            log.error("could not write the failed run's manifest under %s: %s", run_uri, write_error)
        raise
