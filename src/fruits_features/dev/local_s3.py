"""An S3-compatible server on 127.0.0.1 for the demo and the tests (moto's server mode).

The job reaches it exactly as it reaches AWS: through ``AWS_ENDPOINT_URL_S3``. Needs the
``dev`` extra (moto).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication

# moto accepts any credentials; these only keep boto3 from looking for real ones.
LOCAL_ENV = {
    "AWS_ACCESS_KEY_ID": "local-testing",
    "AWS_SECRET_ACCESS_KEY": "local-testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def object_get_latency(low_ms: float, high_ms: float, seed: int = 0) -> Callable[[WSGIApplication], Any]:
    """WSGI middleware for :func:`local_s3`: each object GET waits ``low_ms``..``high_ms``
    (uniform, seeded) before moto answers, as a GET from S3 takes 20-50 ms to its first byte;
    listings, uploads and the rest answer at once. The wait is a sleep: it costs no CPU."""
    import random

    if not 0 <= low_ms <= high_ms:
        raise ValueError(f"latency bounds must be 0 <= low <= high, got {low_ms}..{high_ms}")
    draw = random.Random(seed)
    lock = threading.Lock()

    def wrap(app: WSGIApplication) -> WSGIApplication:
        def delayed(environ: dict[str, Any], start_response: Any) -> Any:
            # Path-style object requests: /<bucket>/<key> with no sub-resource query (?list-type...).
            parts = environ.get("PATH_INFO", "").strip("/").split("/", 1)
            if environ.get("REQUEST_METHOD") == "GET" and len(parts) == 2 and parts[1]:
                with lock:
                    seconds = draw.uniform(low_ms, high_ms) / 1000
                time.sleep(seconds)
            return app(environ, start_response)

        return delayed

    return wrap


@contextmanager
def local_s3(port: int | None = None, wrap: Callable[[WSGIApplication], Any] | None = None) -> Iterator[str]:
    """Run moto's S3 server on 127.0.0.1 and point this process's environment at it.

    Args:
        port: the port to listen on; a free one when ``None``.
        wrap: WSGI middleware put in front of moto's application (the tests record the
            requests that reach the server with it).

    Yields:
        The endpoint URL, also set as ``AWS_ENDPOINT_URL_S3`` (child processes inherit it).
    """
    # What moto.server.ThreadedMotoServer does, with the application wrapped.
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    port = port or free_port()
    app: Any = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        "127.0.0.1", port, wrap(app) if wrap else app, threaded=True, request_handler=MotoRequestHandler
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {key: os.environ.get(key) for key in [*LOCAL_ENV, "AWS_ENDPOINT_URL_S3"]}
    os.environ.update(LOCAL_ENV)
    os.environ["AWS_ENDPOINT_URL_S3"] = endpoint
    try:
        yield endpoint
    finally:
        server.shutdown()
        thread.join()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
