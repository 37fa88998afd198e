"""Writing a run's results to S3: part files from the executors, then the small files, then ``_SUCCESS``.

Layout under ``<output>/<run id>/``::

    features/part-00000.csv ...   header row + path,label,pc_1..pc_k; one part per non-empty partition
    predictions/part-00000.csv    with the classifier: path,label,split,predicted,probability
    model/                        with the classifier: the fitted scaler + PCA + classifier, model.json
    metrics.json                  with the classifier: accuracy, macro F1, per-class metrics, confusions
    report/index.html, *.png      the report (unless report.enabled is false)
    rejected.csv                  path,reason of every listed image that was not featurized
    manifest.json                 what was done: config, counts, explained variance, timings, versions
    _SUCCESS                      written last; without it nothing under the prefix is to be trusted
"""

from __future__ import annotations

import json
import logging
import mimetypes
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from pyspark import TaskContext
from pyspark.sql import DataFrame

from fruits_features.storage import S3Settings, S3Uri, s3_client, write_object

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

FEATURES_DIR = "features"
PREDICTIONS_DIR = "predictions"
MODEL_DIR = "model"
REPORT_DIR = "report"
METRICS_FILE = "metrics.json"
REJECTED_FILE = "rejected.csv"
MANIFEST_FILE = "manifest.json"
SUCCESS_FILE = "_SUCCESS"
CSV_TYPE = "text/csv; charset=utf-8"


def part_name(partition: int) -> str:
    """``part-00007.csv`` for partition 7."""
    return f"part-{partition:05d}.csv"


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """CSV with a header row; floats written with full precision so that they round-trip."""
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")


@dataclass(frozen=True)
class WrittenPart:
    """One part file: its URI and how many rows it holds."""

    uri: str
    rows: int


def _write_partition(
    frames: Iterable[pd.DataFrame], features_uri: S3Uri, settings: S3Settings
) -> Iterator[pd.DataFrame]:
    batches = list(frames)
    rows = sum(len(frame) for frame in batches)
    if rows == 0:
        return
    context = TaskContext.get()
    partition = context.partitionId() if context is not None else 0
    uri = features_uri.join(part_name(partition))
    # One PUT per partition: a retried task overwrites the same key with the same rows.
    write_object(s3_client(settings), uri, to_csv_bytes(pd.concat(batches, ignore_index=True)), CSV_TYPE)
    yield pd.DataFrame({"uri": [str(uri)], "rows": [rows]})


def write_features(
    reduced: DataFrame, run_uri: S3Uri, settings: S3Settings, folder: str = FEATURES_DIR
) -> list[WrittenPart]:
    """Write ``reduced`` as CSV part files under ``<run>/<folder>/``, from the executors.

    Only the parts' names and row counts come back to the driver.

    Args:
        reduced: the rows to write, every column a CSV column.
        run_uri: the run's folder.
        settings: the executors' boto3 settings.
        folder: ``features`` (the default) or ``predictions``.
    """
    features_uri = run_uri.join(folder)
    written = reduced.mapInPandas(
        lambda frames: _write_partition(frames, features_uri, settings),
        schema="uri string, rows long",
    ).collect()
    parts = [WrittenPart(uri=row["uri"], rows=int(row["rows"])) for row in written]
    if not parts:
        # No featurized rows: one header-only part keeps the folder readable by both pandas and Spark.
        empty = pd.DataFrame(columns=reduced.columns)
        uri = features_uri.join(part_name(0))
        write_object(s3_client(settings), uri, to_csv_bytes(empty), CSV_TYPE)
        parts = [WrittenPart(uri=str(uri), rows=0)]
    return sorted(parts, key=lambda part: part.uri)


def rejected_bytes(rejected: Sequence[tuple[str, str]]) -> bytes:
    """``path,reason`` CSV (header only when nothing was rejected)."""
    return to_csv_bytes(pd.DataFrame(list(rejected), columns=["path", "reason"]))


def json_bytes(data: Any) -> bytes:
    """``data`` as indented UTF-8 JSON, keys in the given order."""
    return json.dumps(data, indent=2, sort_keys=False).encode("utf-8")


def upload_folder(client: S3Client, folder: Path, uri: S3Uri) -> int:
    """Upload every file under ``folder`` to ``uri``, keeping relative paths; returns the count.

    One PUT per file, through the run's client (its encryption and bucket-owner settings apply).
    Hadoop's ``.crc`` checksum files are left out: a local copy reads fine without them.
    """
    count = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.endswith(".crc"):
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            if content_type.startswith("text/"):
                content_type += "; charset=utf-8"
            write_object(
                client, uri.join(path.relative_to(folder).as_posix()), path.read_bytes(), content_type
            )
            count += 1
    return count


def write_report(
    client: S3Client,
    run_uri: S3Uri,
    rejected: Sequence[tuple[str, str]],
    manifest: dict[str, Any],
) -> None:
    """Write ``rejected.csv`` and ``manifest.json`` (also for a run that failed)."""
    write_object(client, run_uri.join(REJECTED_FILE), rejected_bytes(rejected), CSV_TYPE)
    write_object(client, run_uri.join(MANIFEST_FILE), json_bytes(manifest), "application/json")


def finish_run(
    client: S3Client,
    run_uri: S3Uri,
    rejected: Sequence[tuple[str, str]],
    manifest: dict[str, Any],
) -> None:
    """Write ``rejected.csv``, ``manifest.json`` and, only once both are stored, ``_SUCCESS``.

    If any write fails, the exception propagates before ``_SUCCESS`` exists, so the run is
    visibly incomplete.
    """
    write_report(client, run_uri, rejected, manifest)
    write_object(client, run_uri.join(SUCCESS_FILE), b"", "application/octet-stream")
    log.info("wrote %s, %s and %s under %s", REJECTED_FILE, MANIFEST_FILE, SUCCESS_FILE, run_uri)
