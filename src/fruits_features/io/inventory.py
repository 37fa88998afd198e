"""Input from an S3 Inventory report or a plain key list, read on the executors as data.

- ``input.listing: inventory``: ``input.inventory`` names a report's ``manifest.json``, as S3
  Inventory writes it (``sourceBucket``, ``destinationBucket``, ``fileFormat`` ``CSV`` or
  ``Parquet``, ``fileSchema``, ``files``). The driver reads only that small file and checks it; each
  data file (gzip CSV with URL-encoded keys, or Parquet) is read by an executor.
- ``input.listing: key_list``: ``input.key_list`` names one object, or a prefix (ending in ``/``)
  of objects, each a text file (gzip when its name ends in ``.gz``) with one entry a line: a key of
  ``input.uri``'s bucket or a full ``s3://bucket/key`` URI. Blank lines are ignored.

Either way the keys kept are those under ``input.uri`` (the rest of the bucket is not the input),
labelled exactly as a listing labels them; a versioned inventory's old versions and delete markers
are left out. The rows stay on the executors in a persisted ``path, label, etag`` DataFrame, and
the counts come back from one aggregation, as for ``input.listing: parallel``.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Literal, cast
from urllib.parse import unquote_plus

import pyarrow as pa
import pyarrow.parquet as pq
from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError
from pyspark.sql import SparkSession

from fruits_features.errors import InputError, InventoryError
from fruits_features.io.listing import LISTED_DDL, Listing, image_label
from fruits_features.io.parallel_listing import persisted_listing
from fruits_features.io.partitions import parallelize_evenly
from fruits_features.io.s3 import S3Settings, describe_error, iter_keys, plain_etag, read_object, s3_client
from fruits_features.io.uri import S3Uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

InventoryFormat = Literal["CSV", "Parquet"]
ListedRow = tuple[str, str | None, str | None]


@dataclass(frozen=True)
class InventoryManifest:
    """What a report's ``manifest.json`` says (the parts this job reads).

    Attributes:
        source_bucket: the bucket the report lists.
        file_format: ``CSV`` (gzip, no header, keys URL-encoded) or ``Parquet``.
        columns: the data files' columns, in order, as snake_case names (``key``, ``e_tag``, ...).
        files: the data files' URIs.
    """

    source_bucket: str
    file_format: InventoryFormat
    columns: tuple[str, ...]
    files: tuple[str, ...]


def snake_case(name: str) -> str:
    """``LastModifiedDate`` -> ``last_modified_date``, ``ETag`` -> ``e_tag`` (CSV schema names)."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name.strip()).lower()


def schema_columns(file_format: InventoryFormat, file_schema: str) -> tuple[str, ...]:
    """The column names of a ``fileSchema``: a comma-separated list for CSV, a Parquet message
    (``message s3.inventory { required binary key (STRING); ... }``) for Parquet."""
    if file_format == "CSV":
        return tuple(snake_case(name) for name in file_schema.split(",") if name.strip())
    return tuple(re.findall(r"\b(?:required|optional|repeated)\s+\w+\s+(\w+)", file_schema))


def _bucket_of(value: str) -> str:
    # destinationBucket is an ARN (arn:aws:s3:::name); accept a plain name too.
    return value.rsplit(":", 1)[-1] if value.startswith("arn:") else value


def parse_manifest(body: bytes, source: str) -> InventoryManifest:
    """Read an S3 Inventory ``manifest.json``.

    Raises:
        InventoryError: not JSON, a field missing, a format other than CSV or Parquet, or a schema
            without the ``Key`` column; the message names ``source`` and what was wrong.
    """
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise InventoryError(f"input.inventory {source} is not an S3 Inventory manifest.json: {exc}") from exc
    if not isinstance(data, Mapping):
        raise InventoryError(f"input.inventory {source} is not an S3 Inventory manifest.json: not an object")
    missing = [
        k for k in ("sourceBucket", "destinationBucket", "fileFormat", "fileSchema", "files") if k not in data
    ]
    if missing:
        raise InventoryError(
            f"input.inventory {source}: no {', '.join(missing)} (not an S3 Inventory manifest.json)"
        )
    file_format = str(data["fileFormat"])
    normalised = {"csv": "CSV", "parquet": "Parquet"}.get(file_format.lower())
    if normalised is None:
        raise InventoryError(
            f"input.inventory {source}: fileFormat {file_format!r}; this job reads CSV or Parquet"
        )
    columns = schema_columns(normalised, str(data["fileSchema"]))  # type: ignore[arg-type]
    if "key" not in columns:
        raise InventoryError(
            f"input.inventory {source}: the fileSchema has no Key column: {data['fileSchema']!r}"
        )
    files = data["files"]
    if not isinstance(files, list) or not all(
        isinstance(f, Mapping) and isinstance(f.get("key"), str) for f in files
    ):
        raise InventoryError(f"input.inventory {source}: 'files' is not a list of {{\"key\": ...}} entries")
    destination = _bucket_of(str(data["destinationBucket"]))
    return InventoryManifest(
        source_bucket=str(data["sourceBucket"]),
        file_format=normalised,  # type: ignore[arg-type]
        columns=columns,
        files=tuple(str(S3Uri(destination, f["key"])) for f in files),
    )


def _opened(body: Any, uri: S3Uri) -> IO[bytes]:
    # ``body`` streams (botocore's StreamingBody): gzip and the text reader pull from it as they go.
    if uri.key.endswith(".gz"):
        return cast(IO[bytes], gzip.GzipFile(fileobj=body))
    return cast(IO[bytes], body)


def csv_records(stream: IO[bytes], columns: Sequence[str], source: str) -> Iterator[dict[str, str]]:
    """The rows of an inventory CSV (no header) as ``{column: value}``.

    Raises:
        InventoryError: a row whose field count is not the schema's.
    """
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    for number, row in enumerate(csv.reader(text), start=1):
        if not row:
            continue
        if len(row) != len(columns):
            raise InventoryError(
                f"{source} row {number}: {len(row)} fields, the manifest's fileSchema has {len(columns)}"
            )
        yield dict(zip(columns, row, strict=True))


def parquet_records(body: bytes, source: str) -> Iterator[dict[str, Any]]:
    """The rows of an inventory Parquet file, batch by batch.

    Raises:
        InventoryError: not a Parquet file, or one without a ``key`` column.
    """
    try:
        parquet = pq.ParquetFile(pa.BufferReader(body))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InventoryError(f"{source} is not a Parquet file: {exc}") from exc
    if "key" not in parquet.schema_arrow.names:
        raise InventoryError(f"{source} has no 'key' column: {parquet.schema_arrow.names}")
    wanted = [
        c
        for c in ("bucket", "key", "e_tag", "is_latest", "is_delete_marker")
        if c in parquet.schema_arrow.names
    ]
    for batch in parquet.iter_batches(columns=wanted):
        yield from batch.to_pylist()


def _is_current(record: Mapping[str, Any]) -> bool:
    # Versioned inventories list every version: keep the latest that is not a delete marker.
    def flag(name: str) -> bool | None:
        value = record.get(name)
        return None if value in (None, "") else str(value).lower() == "true"

    return flag("is_latest") is not False and flag("is_delete_marker") is not True


def inventory_rows(
    files: Iterable[str],
    manifest: InventoryManifest,
    settings: S3Settings,
    root: S3Uri,
    *,
    extensions: tuple[str, ...],
    labelled_only: bool,
) -> Iterator[ListedRow]:
    """Executor side: ``(path, label, etag)`` for every current object of the report's data files
    under ``root``.

    Raises:
        InputError: a data file cannot be read.
        InventoryError: a data file does not match the manifest.
    """
    client = s3_client(settings)
    for file_uri in files:
        uri = S3Uri.parse(file_uri)
        try:
            if manifest.file_format == "CSV":
                body = client.get_object(Bucket=uri.bucket, Key=uri.key)["Body"]
                records: Iterator[Mapping[str, Any]] = (
                    {**r, "key": unquote_plus(r["key"])}
                    for r in csv_records(_opened(body, uri), manifest.columns, file_uri)
                )
            else:
                records = parquet_records(read_object(client, uri), file_uri)
            for record in records:
                bucket = record.get("bucket") or manifest.source_bucket
                key = str(record["key"])
                if bucket == root.bucket and key.startswith(root.prefix) and _is_current(record):
                    label = image_label(key, root.prefix, extensions, labelled_only=labelled_only)
                    yield str(S3Uri(root.bucket, key)), label, plain_etag(record.get("e_tag"))
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise InputError(f"cannot read the inventory file {file_uri}: {describe_error(exc)}") from exc
        except (EOFError, gzip.BadGzipFile, UnicodeDecodeError, csv.Error) as exc:
            raise InventoryError(f"{file_uri} is not a gzip CSV inventory file: {exc}") from exc


def key_list_entry(line: str, default_bucket: str) -> S3Uri | None:
    """One line of a key list as a URI: ``s3://bucket/key`` as it is, a bare key in
    ``default_bucket``; ``None`` for a blank line."""
    entry = line.strip()
    if not entry:
        return None
    return S3Uri.parse(entry) if entry.startswith("s3://") else S3Uri(default_bucket, entry.lstrip("/"))


def key_list_rows(
    files: Iterable[str],
    settings: S3Settings,
    root: S3Uri,
    *,
    extensions: tuple[str, ...],
    labelled_only: bool,
) -> Iterator[ListedRow]:
    """Executor side: ``(path, label, None)`` for every entry of the key-list files under ``root``.

    Raises:
        InputError: a file cannot be read.
        InventoryError: a line is not a key or an ``s3://`` URI, or the file is not UTF-8 text.
    """
    client = s3_client(settings)
    for file_uri in files:
        uri = S3Uri.parse(file_uri)
        try:
            body = client.get_object(Bucket=uri.bucket, Key=uri.key)["Body"]
            lines = io.TextIOWrapper(_opened(body, uri), encoding="utf-8")
            for number, line in enumerate(lines, start=1):
                try:
                    entry = key_list_entry(line, root.bucket)
                except ValueError as exc:
                    raise InventoryError(f"{file_uri} line {number}: {exc}") from exc
                if entry is not None and entry.bucket == root.bucket and entry.key.startswith(root.prefix):
                    label = image_label(entry.key, root.prefix, extensions, labelled_only=labelled_only)
                    yield str(entry), label, None
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise InputError(f"cannot read the key list {file_uri}: {describe_error(exc)}") from exc
        except (EOFError, gzip.BadGzipFile, UnicodeDecodeError) as exc:
            raise InventoryError(f"{file_uri} is not a UTF-8 key list (gzip for .gz): {exc}") from exc


def read_manifest(client: S3Client, inventory: S3Uri) -> InventoryManifest:
    """The report's manifest, read and checked on the driver.

    Raises:
        InputError: it cannot be read (exit 3).
        InventoryError: it is malformed (exit 2).
    """
    try:
        body = read_object(client, inventory)
    except (ClientError, BotoCoreError, Boto3Error) as exc:
        raise InputError(f"cannot read input.inventory {inventory}: {describe_error(exc)}") from exc
    return parse_manifest(body, str(inventory))


def key_list_files(client: S3Client, key_list: S3Uri) -> list[str]:
    """The key-list files: the object itself, or every object under a prefix ending in ``/``.

    Raises:
        InputError: nothing there, or it cannot be read.
    """
    if key_list.key and not key_list.key.endswith("/"):
        try:
            client.head_object(Bucket=key_list.bucket, Key=key_list.key)
        except (ClientError, BotoCoreError) as exc:
            raise InputError(f"cannot read input.key_list {key_list}: {describe_error(exc)}") from exc
        return [str(key_list)]
    files = [str(S3Uri(key_list.bucket, k)) for k in iter_keys(client, key_list) if not k.endswith("/")]
    if not files:
        raise InputError(f"no key-list files under input.key_list {key_list}")
    return files


def list_images_from_files(
    spark: SparkSession,
    client: S3Client,
    settings: S3Settings,
    uri: S3Uri,
    source: S3Uri,
    *,
    kind: Literal["inventory", "key_list"],
    extensions: tuple[str, ...],
    labelled_only: bool = True,
) -> Listing:
    """List the images under ``uri`` from an inventory report or a key list (see the module's notes).

    Args:
        source: ``input.inventory`` (the ``manifest.json``) or ``input.key_list``.
        kind: which of the two ``source`` is.

    Returns:
        A :class:`Listing` whose ``frame`` holds the keys (persisted: the caller unpersists it) and
        whose counts are exact.

    Raises:
        InputError: the report, the list or one of their files cannot be read.
        InventoryError: they are malformed, or the report lists another bucket than ``uri``'s.
    """
    rows: Callable[[Iterable[str]], Iterator[ListedRow]]
    if kind == "inventory":
        manifest = read_manifest(client, source)
        if manifest.source_bucket != uri.bucket:
            raise InventoryError(
                f"input.inventory {source} lists bucket {manifest.source_bucket!r}, "
                f"but input.uri is in {uri.bucket!r}"
            )
        files = list(manifest.files)
        rows = functools.partial(
            inventory_rows,
            manifest=manifest,
            settings=settings,
            root=uri,
            extensions=extensions,
            labelled_only=labelled_only,
        )
    else:
        files = key_list_files(client, source)
        rows = functools.partial(
            key_list_rows, settings=settings, root=uri, extensions=extensions, labelled_only=labelled_only
        )
    slices = max(1, min(len(files), 4 * spark.sparkContext.defaultParallelism))
    listed = spark.createDataFrame(
        parallelize_evenly(spark.sparkContext, files, slices).mapPartitions(rows), LISTED_DDL
    )
    listing = persisted_listing(listed, f"cannot read input.{kind} {source}", InputError)
    log.info(
        "read %d %s files of %s on the executors (%d tasks)",
        len(files),
        kind.replace("_", " "),
        source,
        slices,
    )
    return listing
