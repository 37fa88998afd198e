"""The S3 requests that reach the local S3 server, as they arrived: a WSGI middleware in front of
moto (``local_s3(wrap=...)``), so requests from the driver, the executors' Python workers and any
child process are all seen, whichever client sent them.

Recording is off until a test asks for it, and then keeps only the requests for the buckets it
names: other test files on the same worker use their own buckets.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

# Request headers that change which IAM actions a request needs.
HEADERS = (
    "x-amz-copy-source",
    "x-amz-server-side-encryption",
    "x-amz-server-side-encryption-aws-kms-key-id",
    "x-amz-tagging",
    "x-amz-acl",
    "range",
)


@dataclass(frozen=True)
class WireRequest:
    """One request as the server saw it (path-style addressing, as the local endpoint uses)."""

    method: str
    bucket: str
    key: str  # "" for a request on the bucket
    query: tuple[tuple[str, str], ...]
    headers: tuple[tuple[str, str], ...]
    body: bytes  # kept for POST only (DeleteObjects names its keys in it)
    status: int = 0
    response_headers: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        return next((value for key, value in self.query if key == name), None)

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self.query)

    def header(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)

    def response_header(self, name: str) -> str | None:
        return next((value for key, value in self.response_headers if key == name), None)

    def __str__(self) -> str:
        query = "&".join(f"{k}={v}" if v else k for k, v in self.query)
        return f"{self.method} /{self.bucket}/{self.key}" + (f"?{query}" if query else "")


@dataclass
class WireLog:
    """WSGI middleware that records requests for the buckets being watched."""

    app: Callable[..., Iterable[bytes]] | None = None
    buckets: frozenset[str] = frozenset()
    requests: list[WireRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wrap(self, app: Callable[..., Iterable[bytes]]) -> WireLog:
        self.app = app
        return self

    @contextmanager
    def recording(self, *buckets: str) -> Iterator[list[WireRequest]]:
        """Record the requests for ``buckets`` until the block ends; yields the growing list."""
        with self._lock:
            self.buckets, self.requests = frozenset(buckets), []
        try:
            yield self.requests
        finally:
            with self._lock:
                self.buckets = frozenset()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        assert self.app is not None
        # PEP 3333: PATH_INFO is decoded, its bytes carried as latin-1.
        path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
        bucket, _, key = path.lstrip("/").partition("/")
        if bucket not in self.buckets:
            return self.app(environ, start_response)
        body = b""
        if environ["REQUEST_METHOD"] == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = io.BytesIO(body)
        headers = tuple(
            (name, environ[f"HTTP_{name.upper().replace('-', '_')}"])
            for name in HEADERS
            if f"HTTP_{name.upper().replace('-', '_')}" in environ
        )
        query = tuple(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
        seen: dict[str, Any] = {}

        def recording_start(status: str, response_headers: list[tuple[str, str]], *rest: Any) -> Any:
            seen["status"] = int(status.split(maxsplit=1)[0])
            seen["headers"] = tuple((k.lower(), v) for k, v in response_headers)
            return start_response(status, response_headers, *rest)

        result = self.app(environ, recording_start)
        with self._lock:
            self.requests.append(
                WireRequest(
                    environ["REQUEST_METHOD"],
                    bucket,
                    key,
                    query,
                    headers,
                    body,
                    seen.get("status", 0),
                    seen.get("headers", ()),
                )
            )
        return result
