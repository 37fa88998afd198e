"""Writing S3 Inventory reports and key lists as AWS lays them out, for the tests and the scale bench.

Development only: on AWS, S3 Inventory writes the reports itself. The layout follows AWS's:
``<destination>/<source bucket>/<config id>/<timestamp>/manifest.json`` naming gzip CSV files
(no header, keys URL-encoded, the columns of ``fileSchema``) or Parquet files under ``data/``.
"""

from __future__ import annotations

import gzip
import io
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote_plus

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fruits_features.io.s3 import iter_objects
from fruits_features.io.uri import S3Uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

CSV_SCHEMA = "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, ETag"
PARQUET_SCHEMA = (
    "message s3.inventory { required binary bucket (STRING); required binary key (STRING); "
    "optional binary version_id (STRING); optional boolean is_latest; optional boolean is_delete_marker; "
    "optional int64 size; optional binary e_tag (STRING);}"
)
COLUMNS = ["bucket", "key", "version_id", "is_latest", "is_delete_marker", "size", "e_tag"]


@dataclass(frozen=True)
class InventoryEntry:
    """One row of a report: an object version."""

    key: str
    etag: str = "0" * 32
    size: int = 0
    is_latest: bool = True
    is_delete_marker: bool = False
    version_id: str = ""


def entries_of(client: S3Client, uri: S3Uri) -> Iterator[InventoryEntry]:
    """The report rows of every object under ``uri``, as S3 Inventory would list them."""
    for key, etag in iter_objects(client, uri):
        yield InventoryEntry(key=key, etag=etag or "")


def _chunks(entries: Iterable[InventoryEntry], size: int) -> Iterator[list[InventoryEntry]]:
    it = iter(entries)
    while chunk := list(islice(it, size)):
        yield chunk


def _csv_gz(bucket: str, chunk: list[InventoryEntry]) -> bytes:
    lines = io.StringIO()
    for e in chunk:
        fields = [
            bucket,
            quote_plus(e.key, safe="/"),
            e.version_id,
            str(e.is_latest).lower(),
            str(e.is_delete_marker).lower(),
            str(e.size),
            e.etag,
        ]
        lines.write(",".join(f'"{f}"' for f in fields) + "\n")
    return gzip.compress(lines.getvalue().encode("utf-8"), compresslevel=1)


def _parquet(bucket: str, chunk: list[InventoryEntry]) -> bytes:
    frame = pd.DataFrame(
        {
            "bucket": [bucket] * len(chunk),
            "key": [e.key for e in chunk],
            "version_id": [e.version_id or None for e in chunk],
            "is_latest": [e.is_latest for e in chunk],
            "is_delete_marker": [e.is_delete_marker for e in chunk],
            "size": [e.size for e in chunk],
            "e_tag": [e.etag for e in chunk],
        },
        columns=COLUMNS,
    )
    buffer = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer, compression="snappy")
    return bytes(buffer.getvalue().to_pybytes())


def write_inventory(
    client: S3Client,
    destination: S3Uri,
    source_bucket: str,
    entries: Iterable[InventoryEntry],
    *,
    file_format: Literal["CSV", "Parquet"] = "CSV",
    rows_per_file: int = 100_000,
) -> S3Uri:
    """Write a report of ``entries`` under ``destination``; returns its ``manifest.json``'s URI."""
    config_id = "fruits-images"
    base = destination.join(source_bucket, config_id)
    files = []
    for chunk in _chunks(entries, rows_per_file):
        if file_format == "CSV":
            body, name = _csv_gz(source_bucket, chunk), f"data/{uuid.uuid4()}.csv.gz"
        else:
            body, name = _parquet(source_bucket, chunk), f"data/{uuid.uuid4()}.parquet"
        uri = base.join(name)
        client.put_object(Bucket=uri.bucket, Key=uri.key, Body=body)
        files.append({"key": uri.key, "size": len(body), "MD5checksum": ""})
    manifest = {
        "sourceBucket": source_bucket,
        "destinationBucket": f"arn:aws:s3:::{destination.bucket}",
        "version": "2016-11-30",
        "creationTimestamp": "1764633600000",
        "fileFormat": file_format,
        "fileSchema": CSV_SCHEMA if file_format == "CSV" else PARQUET_SCHEMA,
        "files": files,
    }
    manifest_uri = base.join("2026-12-01T01-00Z", "manifest.json")
    client.put_object(Bucket=manifest_uri.bucket, Key=manifest_uri.key, Body=json.dumps(manifest).encode())
    return manifest_uri


def write_key_list(client: S3Client, uri: S3Uri, keys: Iterable[str]) -> S3Uri:
    """A plain key list at ``uri``: one entry a line, gzip when the name ends in ``.gz``."""
    body = "".join(f"{key}\n" for key in keys).encode("utf-8")
    client.put_object(
        Bucket=uri.bucket, Key=uri.key, Body=gzip.compress(body) if uri.key.endswith(".gz") else body
    )
    return uri
