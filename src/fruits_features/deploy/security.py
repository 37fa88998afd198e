"""The EMR security configuration every new cluster is created with: encryption at rest for what
EMRFS writes to S3 (the fitted model with ``classifier.model_transfer: hadoop``) and, given a KMS
key, for the nodes' local disks and EBS volumes.

The job's own S3 writes are encrypted by boto3 as ``output.sse`` says; EMRFS ignores that setting
and follows the cluster's security configuration instead, so the two are set alike. A security
configuration cannot be changed once created: its name carries a digest of its content, so that a
submission reuses an identical one and a change makes a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any, Literal, Protocol

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from fruits_features.deploy.errors import AwsCallError
from fruits_features.io.s3 import describe_error

log = logging.getLogger(__name__)

_KMS_KEY_RE = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:(\d{12}|ACCOUNT_ID):(key|alias)/[\w/+=,.@-]+$")


class SecuritySettings(BaseModel):
    """``cluster.security``: encryption at rest, set in an EMR security configuration."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    s3_encryption: Literal["SSE-S3", "SSE-KMS"] = "SSE-S3"
    s3_kms_key: str | None = None  # with SSE-KMS: the key's ARN
    local_disk_kms_key: str | None = None  # the key's ARN for local disks and EBS; None: not encrypted

    @field_validator("s3_kms_key", "local_disk_kms_key")
    @classmethod
    def _check_key(cls, value: str | None) -> str | None:
        if value is not None and not _KMS_KEY_RE.match(value):
            raise ValueError(
                f"expected a KMS key or alias ARN (arn:aws:kms:<region>:<account>:key/...), got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _kms_needs_a_key(self) -> SecuritySettings:
        if (self.s3_encryption == "SSE-KMS") != (self.s3_kms_key is not None):
            raise ValueError("s3_kms_key is needed with s3_encryption SSE-KMS, and only with it")
        return self


def security_configuration(settings: SecuritySettings) -> dict[str, Any]:
    """The security configuration's JSON document."""
    s3: dict[str, str] = {"EncryptionMode": settings.s3_encryption}
    if settings.s3_kms_key:
        s3["AwsKmsKey"] = settings.s3_kms_key
    at_rest: dict[str, Any] = {"S3EncryptionConfiguration": s3}
    if settings.local_disk_kms_key:
        at_rest["LocalDiskEncryptionConfiguration"] = {
            "EncryptionKeyProviderType": "AwsKms",
            "AwsKmsKey": settings.local_disk_kms_key,
            "EnableEbsEncryption": True,
        }
    return {
        "EncryptionConfiguration": {
            "EnableInTransitEncryption": False,
            "EnableAtRestEncryption": True,
            "AtRestEncryptionConfiguration": at_rest,
        }
    }


def security_configuration_request(cluster_name: str, settings: SecuritySettings) -> dict[str, str]:
    """``CreateSecurityConfiguration``'s parameters: ``<cluster name>-<12 hex digits of the content>``."""
    body = json.dumps(security_configuration(settings), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(body.encode()).hexdigest()[:12]
    return {"Name": f"{cluster_name}-{digest}", "SecurityConfiguration": body}


class SecurityConfigurations(Protocol):
    """The part of boto3's EMR client that creates security configurations."""

    def create_security_configuration(self, **kwargs: Any) -> dict[str, Any]: ...


def create_security_configuration(emr: SecurityConfigurations, parameters: dict[str, Any]) -> None:
    """Create the security configuration; one of that name holds the same content (its name
    carries the content's digest), so an existing one is reused."""
    name = parameters["Name"]
    try:
        emr.create_security_configuration(**parameters)
        log.info("created security configuration %s", name)
    except ClientError as exc:
        if "already exists" not in describe_error(exc):
            raise AwsCallError(f"CreateSecurityConfiguration {name}: {describe_error(exc)}") from exc
        log.info("security configuration %s exists: reused", name)
    except BotoCoreError as exc:
        raise AwsCallError(f"CreateSecurityConfiguration {name}: {describe_error(exc)}") from exc
