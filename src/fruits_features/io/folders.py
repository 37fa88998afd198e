"""Whole folders between a local disk and S3, or from one S3 prefix to another: the fitted
pipeline (saved and loaded through a local staging folder), the report, an incremental run's
inherited ``model/``, and the demo's and the tests' sample images.

Every request goes through the caller's client, so the run's encryption and bucket-owner
settings apply (:func:`fruits_features.io.s3.s3_client`).
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import TYPE_CHECKING

from fruits_features.io.s3 import iter_keys, read_object, write_object
from fruits_features.io.uri import S3Uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


def content_type(path: Path) -> str:
    """The ``Content-Type`` an object uploaded from ``path`` is stored with (text as UTF-8)."""
    guessed = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


def upload_folder(client: S3Client, folder: Path, uri: S3Uri, pattern: str = "**/*") -> int:
    """Upload the files of ``folder`` that match ``pattern`` to ``uri``, keeping their relative
    paths; returns the count.

    One PUT per file (each object visible whole or not at all). Hadoop's ``.crc`` checksum files
    are left out: a local copy of a Spark folder reads fine without them.
    """
    count = 0
    for path in sorted(folder.glob(pattern)):
        if path.is_file() and not path.name.endswith(".crc"):
            target = uri.join(path.relative_to(folder).as_posix())
            write_object(client, target, path.read_bytes(), content_type(path))
            count += 1
    return count


def download_folder(client: S3Client, uri: S3Uri, folder: Path) -> int:
    """Copy every object under ``uri`` into ``folder``, keeping relative paths; returns the count
    (folder markers, keys ending in ``/``, are skipped).

    Raises:
        InputError: the prefix cannot be listed.
        ClientError, BotoCoreError, RetriesExceededError: an object cannot be read.
    """
    count = 0
    for key in iter_keys(client, uri):
        relative = key[len(uri.prefix) :]
        if not relative or relative.endswith("/"):
            continue
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read_object(client, S3Uri(uri.bucket, key)))
        count += 1
    return count


def copy_folder(client: S3Client, source: S3Uri, target: S3Uri) -> int:
    """Copy every object under ``source`` to ``target`` inside S3 (server-side); returns the count.

    Raises:
        InputError: the prefix cannot be listed.
        ClientError, BotoCoreError: an object cannot be copied.
    """
    count = 0
    for key in iter_keys(client, source):
        destination = target.join(key[len(source.prefix) :])
        client.copy_object(
            Bucket=destination.bucket, Key=destination.key, CopySource={"Bucket": source.bucket, "Key": key}
        )
        count += 1
    return count
