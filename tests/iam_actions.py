"""What IAM authorises for each S3 request: the action, the resource ARN and the condition keys
that the shipped policies test (``s3:prefix``, ``kms:ViaService``), after the Service
Authorization Reference's table "API operations defined by Amazon S3" and S3's page on
encryption with KMS keys (a PUT with SSE-KMS needs ``kms:GenerateDataKey``, a GET of such an
object ``kms:Decrypt``).

A request this module does not know fails the test that maps it: nothing passes unexamined.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from s3_wire import WireRequest

REGION = "us-east-1"


@dataclass(frozen=True)
class IamRequest:
    """One authorisation IAM makes: ``action`` on ``resource`` with ``context``."""

    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()
    wire: str = field(default="", compare=False)  # the HTTP request it comes from

    def __str__(self) -> str:
        context = "".join(f" [{k}={v}]" for k, v in self.context)
        return f"{self.action} {self.resource}{context}"


class UnknownRequestError(ValueError):
    """An S3 request whose IAM action is not mapped here."""


def _object(bucket: str, key: str) -> str:
    return f"arn:aws:s3:::{bucket}/{key}"


Found = list[tuple[str, str, tuple[tuple[str, str], ...]]]


def iam_requests(request: WireRequest) -> list[IamRequest]:
    """The IAM authorisations ``request`` needs, in the order S3 makes them.

    Raises:
        UnknownRequestError: a request this table does not map.
    """
    found = _on_object(request) if request.key else _on_bucket(request)
    if found is None:
        raise UnknownRequestError(str(request))
    found.extend(_kms(request))
    return [IamRequest(action, arn, context, str(request)) for action, arn, context in found]


def _on_bucket(request: WireRequest) -> Found | None:
    bucket, method = f"arn:aws:s3:::{request.bucket}", request.method
    if method == "GET" and request.has("location"):
        return [("s3:GetBucketLocation", bucket, ())]
    if method == "GET" and request.has("uploads"):
        return [("s3:ListBucketMultipartUploads", bucket, ())]
    if method in {"GET", "HEAD"} and all(k in LIST_PARAMS for k, _ in request.query):
        # ListObjects(V2), HeadBucket: s3:prefix is "" when the request names none.
        context = (("s3:prefix", request.param("prefix") or ""),) if method == "GET" else ()
        return [("s3:ListBucket", bucket, context)]
    if method == "POST" and request.has("delete"):  # DeleteObjects: one DeleteObject per key
        keys = re.findall(rb"<Key>(.*?)</Key>", request.body)
        return [("s3:DeleteObject", _object(request.bucket, key.decode()), ()) for key in keys]
    return None


def _on_object(request: WireRequest) -> Found | None:
    resource, method = _object(request.bucket, request.key), request.method
    if method in {"GET", "HEAD"} and request.has("uploadId"):
        return [("s3:ListMultipartUploadParts", resource, ())]
    if method in {"GET", "HEAD"} and all(k in GET_PARAMS for k, _ in request.query):
        return [("s3:GetObject", resource, ())]
    if method == "PUT" and all(k in PUT_PARAMS for k, _ in request.query):
        # PutObject, CopyObject, UploadPart, UploadPartCopy
        found: Found = [("s3:PutObject", resource, ())]
        copy_source = request.header("x-amz-copy-source")
        if copy_source:
            source = unquote(copy_source.lstrip("/").split("?versionId=")[0])
            found.append(("s3:GetObject", f"arn:aws:s3:::{source}", ()))
        if request.header("x-amz-tagging"):
            found.append(("s3:PutObjectTagging", resource, ()))
        if request.header("x-amz-acl"):
            found.append(("s3:PutObjectAcl", resource, ()))
        return found
    if method == "POST" and (request.has("uploads") or request.has("uploadId")):
        return [("s3:PutObject", resource, ())]  # Create/CompleteMultipartUpload
    if method == "DELETE" and (not request.query or request.has("uploadId")):
        aborts = request.has("uploadId")  # AbortMultipartUpload, else DeleteObject
        return [("s3:AbortMultipartUpload" if aborts else "s3:DeleteObject", resource, ())]
    return None


# Query parameters that do not change the operation.
LIST_PARAMS = {
    "list-type",
    "prefix",
    "delimiter",
    "continuation-token",
    "max-keys",
    "start-after",
    "encoding-type",
    "marker",
    "fetch-owner",
}
GET_PARAMS = {"partNumber", "versionId", "response-content-type"}
PUT_PARAMS = {"partNumber", "uploadId"}


def _kms(request: WireRequest) -> Found:
    """KMS calls S3 makes for the caller: a data key for each SSE-KMS write, a decryption for each
    read of an SSE-KMS object (the key as the response names it)."""
    via_s3 = (("kms:ViaService", f"s3.{REGION}.amazonaws.com"),)
    writes = request.method in {"PUT", "POST"} and request.key
    if writes and request.header("x-amz-server-side-encryption") == "aws:kms":
        key = request.header("x-amz-server-side-encryption-aws-kms-key-id")
        if key:
            return [("kms:GenerateDataKey", key, via_s3)]
    if request.method == "GET" and request.key:
        key = request.response_header("x-amz-server-side-encryption-aws-kms-key-id")
        if key and request.response_header("x-amz-server-side-encryption") == "aws:kms":
            return [("kms:Decrypt", key, via_s3)]
    return []
