"""S3 through boto3: clients, reading and writing objects, checking an output folder.

Endpoint, region and credentials come from the standard AWS environment (the credential chain,
``AWS_REGION``, ``AWS_ENDPOINT_URL_S3``), so the same code reaches AWS, a cluster's instance
profile, or a local S3-compatible server. Hadoop's S3A connector is never needed.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import boto3
from boto3.exceptions import RetriesExceededError
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.utils import S3_RETRYABLE_DOWNLOAD_ERRORS

from fruits_features.errors import InputError, OutputError
from fruits_features.io.uri import S3Uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class S3Settings:
    """boto3 client settings that travel from the driver to the executors (no secrets).

    Attributes:
        retry_mode: boto3's retry mode; ``standard`` and ``adaptive`` retry throttling
            (503 SlowDown), 5xx errors and dropped connections with exponential backoff.
        max_attempts: attempts per request, the first included.
        max_pool_connections: connections each client keeps open.
        expected_bucket_owner: account id sent as ``ExpectedBucketOwner`` with every request.
        sse: server-side encryption for every object written: ``none`` (the bucket's
            default), ``AES256`` (SSE-S3) or ``aws:kms`` (SSE-KMS).
        sse_kms_key_id: the KMS key for ``aws:kms``; ``None`` means the AWS managed key.
    """

    retry_mode: Literal["standard", "adaptive", "legacy"] = "standard"
    max_attempts: int = 10
    max_pool_connections: int = 16
    expected_bucket_owner: str | None = None
    sse: Literal["none", "AES256", "aws:kms"] = "none"
    sse_kms_key_id: str | None = None


@functools.lru_cache(maxsize=8)
def s3_client(settings: S3Settings = S3Settings()) -> S3Client:
    """A boto3 S3 client, one per process and settings, reused across tasks.

    A fresh ``Session`` per client because sessions are not thread-safe, while clients are.
    The bucket-owner check and encryption are added to requests by event handlers, so that
    every call made with the client carries them, boto3's managed transfers included.
    """
    config = Config(
        retries={"mode": settings.retry_mode, "max_attempts": settings.max_attempts},
        max_pool_connections=settings.max_pool_connections,
    )
    client = boto3.session.Session().client("s3", config=config)
    if settings.expected_bucket_owner:
        client.meta.events.register(
            "before-parameter-build.s3", functools.partial(_add_owner, settings.expected_bucket_owner)
        )
    if settings.sse != "none":
        encryption: dict[str, str] = {"ServerSideEncryption": settings.sse}
        if settings.sse_kms_key_id:
            encryption["SSEKMSKeyId"] = settings.sse_kms_key_id
        for operation in ("PutObject", "CreateMultipartUpload", "CopyObject"):
            client.meta.events.register(
                f"before-parameter-build.s3.{operation}", functools.partial(_add_params, encryption)
            )
    return client


def _add_owner(owner: str, params: dict[str, Any], model: Any, **_: Any) -> None:
    if "ExpectedBucketOwner" in model.input_shape.members:
        params.setdefault("ExpectedBucketOwner", owner)


def _add_params(extra: dict[str, str], params: dict[str, Any], **_: Any) -> None:
    for key, value in extra.items():
        params.setdefault(key, value)


def describe_error(exc: BaseException) -> str:
    """A short reason for an S3 failure: the service's error code and message, or the cause."""
    if isinstance(exc, ClientError):
        error: dict[str, Any] = dict(exc.response.get("Error", {}))
        code = error.get("Code", "Error")
        message = error.get("Message") or ""
        return f"{code}: {message}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


def iter_keys(client: S3Client, uri: S3Uri) -> Iterator[str]:
    """Every key under ``uri``'s prefix, following ``list_objects_v2`` pagination.

    Raises:
        InputError: for a missing bucket, denied access or an unreachable endpoint.
    """
    for key, _ in iter_objects(client, uri):
        yield key


def iter_objects(client: S3Client, uri: S3Uri) -> Iterator[tuple[str, str | None]]:
    """``(key, etag)`` of every object under ``uri``'s prefix, following pagination; the ETag
    without its quotes, as S3 Inventory reports write it.

    Raises:
        InputError: for a missing bucket, denied access or an unreachable endpoint.
    """
    paginator = client.get_paginator("list_objects_v2")
    try:
        for page in paginator.paginate(Bucket=uri.bucket, Prefix=uri.prefix):
            for item in page.get("Contents", []):
                yield item["Key"], plain_etag(item.get("ETag"))
    except ClientError as exc:
        raise InputError(f"cannot list {uri}: {describe_error(exc)}") from exc
    except BotoCoreError as exc:
        raise InputError(f"cannot list {uri}: {describe_error(exc)}") from exc


def plain_etag(etag: str | None) -> str | None:
    """An ETag without the double quotes ``list_objects_v2`` puts around it (``None`` stays)."""
    return etag.strip('"') if etag else None


# Attempts at reading an object's body. botocore retries the GET itself (throttling, 5xx, failed
# connections: s3.retry_mode, s3.max_attempts); a connection lost while the body streams only
# surfaces from read(), and is retried here on the errors boto3's managed downloads retry.
# (download_fileobj would do the same, but sends a HEAD before every GET: twice the requests per
# image; measured here, 1.7 ms more client CPU per object, and 1.7-3.3 ms more for the local server.)
BODY_ATTEMPTS = 5


def read_object(client: S3Client, uri: S3Uri) -> bytes:
    """The bytes of one object: one GET, sent again if the connection drops while the body streams.

    Raises:
        ClientError, BotoCoreError: the GET failed once botocore's retries were spent.
        RetriesExceededError: the body was cut off on each of :data:`BODY_ATTEMPTS` GETs (as boto3's
            managed downloads raise it; ``last_exception`` says how).
    """
    attempt = 1
    while True:
        response = client.get_object(Bucket=uri.bucket, Key=uri.key)
        try:
            return response["Body"].read()
        except S3_RETRYABLE_DOWNLOAD_ERRORS as exc:
            if attempt == BODY_ATTEMPTS:
                # boto3's stubs type last_exception as a Boto3Error; boto3 itself passes the socket
                # or botocore error that ended the last attempt, as here.
                raise RetriesExceededError(exc) from exc  # type: ignore[arg-type]
            log.debug("reading %s was cut off (%s); reading it again", uri, exc)
            attempt += 1


def write_object(client: S3Client, uri: S3Uri, body: bytes, content_type: str) -> None:
    """Write one object (a single PUT: S3 makes it visible whole or not at all)."""
    client.put_object(Bucket=uri.bucket, Key=uri.key, Body=body, ContentType=content_type)


def check_output_writable(client: S3Client, run_uri: S3Uri) -> None:
    """Fail early when the output bucket is unreachable or the run's folder already has objects.

    A run never mixes its files with an earlier attempt's: reusing a run id whose folder holds
    anything is refused, so no stale part file can survive into a new result.

    Raises:
        OutputError: naming the URI and the cause.
    """
    try:
        response = client.list_objects_v2(Bucket=run_uri.bucket, Prefix=run_uri.prefix, MaxKeys=1)
    except (ClientError, BotoCoreError) as exc:
        raise OutputError(f"cannot use output {run_uri}: {describe_error(exc)}") from exc
    if response.get("KeyCount", 0):
        raise OutputError(
            f"output {run_uri} already holds objects from an earlier run; "
            "choose another --run-id or delete that prefix"
        )
