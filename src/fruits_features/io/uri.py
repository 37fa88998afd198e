"""``s3://bucket/prefix`` URIs: parsed, validated and joined, with no I/O (the config module uses them)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Uri:
    """An ``s3://bucket/key-or-prefix`` location."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str) -> S3Uri:
        """Parse ``s3://bucket/key``.

        Raises:
            ValueError: if the scheme is not ``s3://`` or the bucket name is not a valid S3 name.
        """
        scheme, sep, rest = uri.partition("://")
        if not sep or scheme not in {"s3", "s3a"}:
            raise ValueError(f"expected an s3://bucket/prefix URI, got {uri!r}")
        bucket, _, key = rest.partition("/")
        if not _BUCKET_RE.match(bucket):
            raise ValueError(f"{bucket!r} in {uri!r} is not a valid S3 bucket name")
        return cls(bucket, key)

    @property
    def prefix(self) -> str:
        """The key as a folder prefix: empty, or ending with one ``/``."""
        return self.key.rstrip("/") + "/" if self.key.strip("/") else ""

    def join(self, *parts: str) -> S3Uri:
        """The URI of ``parts`` under this prefix."""
        return S3Uri(self.bucket, self.prefix + "/".join(p.strip("/") for p in parts))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"
