"""An HTTP proxy in front of the local S3 server that fails a fraction of requests.

Faults, on every ``every``-th request of each HTTP method, cycling through the kinds that apply
to it (so each kind is sure to occur once a method has seen enough requests):

- ``slowdown``: answers ``503 SlowDown`` with S3's XML error body, as S3 does when throttling;
- ``drop``: reads the request, then closes the connection without answering;
- ``truncate``: forwards the request, then sends the response headers and half the body and
  closes the connection (a connection lost in the middle of a read).

Buckets in ``deny`` get ``403 AccessDenied`` for every request. Every request's method, path and
headers are recorded, so tests can check what the client sent.
"""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit

SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message></Error>"
)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    fault: str | None


@dataclass
class FaultPlan:
    """Which requests fail, and how."""

    every: int = 0  # 0: no faults
    kinds: tuple[str, ...] = ("slowdown", "drop", "truncate")
    methods: tuple[str, ...] = ("GET", "PUT", "HEAD", "POST")
    deny: tuple[str, ...] = ()
    seen: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    requests: list[RecordedRequest] = field(default_factory=list)


class FaultProxy:
    """Run the proxy on 127.0.0.1 in a thread: ``with FaultProxy(upstream, plan) as url: ...``."""

    def __init__(self, upstream: str, plan: FaultPlan) -> None:
        self.upstream = urlsplit(upstream)
        self.plan = plan
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> str:
        self._thread.start()
        return self.url

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _choose_fault(self, method: str) -> str | None:
        with self._lock:
            self.plan.seen[method] += 1
            count = self.plan.seen[method]
            if method not in self.plan.methods or not self.plan.every or count % self.plan.every:
                return None
            kinds = [k for k in self.plan.kinds if k != "truncate" or method == "GET"]
            return kinds[(count // self.plan.every - 1) % len(kinds)] if kinds else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return  # quiet

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._choose_fault(self.command)
                bucket = self.path.lstrip("/").split("/", 1)[0].split("?", 1)[0]
                if bucket in proxy.plan.deny:
                    fault = "deny"
                with proxy._lock:
                    proxy.plan.requests.append(
                        RecordedRequest(self.command, self.path, dict(self.headers.items()), fault)
                    )
                    if fault:
                        proxy.plan.faults[f"{self.command} {fault}"] += 1
                if fault == "drop":
                    self.close_connection = True
                    return
                if fault in {"slowdown", "deny"}:
                    payload = SLOWDOWN if fault == "slowdown" else ACCESS_DENIED
                    self.send_response(503 if fault == "slowdown" else 403)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection(
                    proxy.upstream.hostname or "127.0.0.1", proxy.upstream.port, timeout=60
                )
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "expect"}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    payload = response.read()
                    self.send_response(response.status, response.reason)
                    for key, value in response.getheaders():
                        if key.lower() not in {"transfer-encoding", "connection", "content-length"}:
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command == "HEAD":
                        return
                    if fault == "truncate" and len(payload) > 1:
                        self.wfile.write(payload[: len(payload) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    self.wfile.write(payload)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _relay  # noqa: N815

        return Handler
