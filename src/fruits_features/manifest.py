"""What a run did, as the JSON written to ``manifest.json``."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from importlib import metadata

LIBRARIES = (
    "fruits-features",
    "pyspark",
    "tensorflow",
    "keras",
    "numpy",
    "pandas",
    "pyarrow",
    "pillow",
    "boto3",
)


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that shape the result (``None`` when absent)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def utc_now() -> str:
    """The current time as ISO 8601 UTC, to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


Watch = Callable[[str], AbstractContextManager[None]]


class StageTimer:
    """Wall-clock seconds per named stage, in the order the stages ran.

    Args:
        watch: entered around every stage by name, e.g. to log progress while it runs.
    """

    def __init__(self, watch: Watch | None = None) -> None:
        self.seconds: dict[str, float] = {}
        self._watch = watch

    @contextmanager
    def stage(self, name: str, *, watched: bool = True) -> Iterator[None]:
        """Time the ``with`` block as stage ``name`` (``watched=False``: without the watch)."""
        started = time.perf_counter()
        watch = self._watch(name) if self._watch is not None and watched else nullcontext()
        try:
            with watch:
                yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 3)
