"""Progress of the long stages, logged by the driver at a steady interval.

Spark tells the driver about a task when it ends, and Python accumulators reach the driver only
then: with one long task per core that says nothing until the stage is nearly over. So each
embed task also sends its own count of finished images to the driver after every model batch,
as one small UDP datagram (:class:`TaskProgress`), and the driver's :class:`ProgressListener`
keeps the latest count per partition. A datagram carries the partition's running total, so a
lost one is made good by the next, and a retried task replaces the failed attempt's count
instead of adding to it. Progress is for people: when the driver cannot be reached (a firewall
between the nodes), the tasks run as before and the lines show only what has been heard.

Stages without a per-image count (the PCA fit, the writes, the classifier) log how long they
have been running and their Spark tasks, from Spark's own status tracker.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fruits_features.manifest import StageTimer

if TYPE_CHECKING:
    from pyspark import SparkContext

log = logging.getLogger(__name__)

_MAX_DATAGRAM = 256


@dataclass(frozen=True)
class ProgressEndpoint:
    """Where the executors send their counts: shipped to them in the UDF's closure."""

    host: str
    port: int
    token: str


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_line(stage: str, done: int, total: int, elapsed: float) -> str:
    """``embed: 512/1000 images (51%), 18.3 images/s, ETA 27s`` (done so far, over the whole stage)."""
    done = min(done, total)
    percent = 100 * done / total if total else 100.0
    rate = done / elapsed if elapsed > 0 else 0.0
    if done >= total:
        eta = f"done in {format_duration(elapsed)}"
    elif rate > 0:
        eta = f"ETA {format_duration((total - done) / rate)}"
    else:
        eta = "ETA unknown (no image finished yet)"
    return f"{stage}: {done}/{total} images ({percent:.0f}%), {rate:.1f} images/s, {eta}"


class ProgressListener:
    """The driver's end: a UDP socket and a thread that keeps each partition's latest count.

    Use as a context manager; :attr:`endpoint` is what the executors need.
    """

    def __init__(self, host: str) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("", 0))  # every interface: the executors send to ``host``
        self._socket.settimeout(0.5)
        self.endpoint = ProgressEndpoint(host, self._socket.getsockname()[1], secrets.token_hex(16))
        self._counts: dict[int, tuple[int, int]] = {}  # partition -> (attempt, images done)
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="progress-listener", daemon=True)

    def __enter__(self) -> ProgressListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped.set()
        self._thread.join()
        self._socket.close()

    def done(self) -> int:
        """Images the executors have reported finished, over all partitions."""
        with self._lock:
            return sum(count for _, count in self._counts.values())

    def record(self, message: bytes) -> None:
        """Take one datagram: ``<token> <partition> <attempt> <done>``; anything else is ignored."""
        fields = message.split()
        if len(fields) != 4 or fields[0].decode("ascii", "replace") != self.endpoint.token:
            return
        try:
            partition, attempt, done = (int(value) for value in fields[1:])
        except ValueError:
            return
        with self._lock:
            seen_attempt, seen_done = self._counts.get(partition, (-1, 0))
            if attempt > seen_attempt or (attempt == seen_attempt and done > seen_done):
                self._counts[partition] = (attempt, done)

    def _receive(self) -> None:
        while not self._stopped.is_set():
            try:
                message = self._socket.recv(_MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError:
                return
            self.record(message)


class TaskProgress:
    """The executor's end: adds up a task's finished images and sends the running total."""

    def __init__(self, endpoint: ProgressEndpoint | None, partition: int, attempt: int) -> None:
        self._endpoint = endpoint
        self._prefix = f"{endpoint.token} {partition} {attempt} " if endpoint else ""
        self._socket: socket.socket | None = None
        self.done = 0

    @classmethod
    def for_this_task(cls, endpoint: ProgressEndpoint | None) -> TaskProgress:
        """For the running Spark task (partition 0, attempt 0 outside one)."""
        from pyspark import TaskContext

        context = TaskContext.get()
        if context is None:
            return cls(endpoint, 0, 0)
        return cls(endpoint, context.partitionId(), context.attemptNumber())

    def add(self, images: int) -> None:
        """Count ``images`` more as finished and tell the driver; never raises."""
        self.done += images
        if self._endpoint is None or not images:
            return
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            message = f"{self._prefix}{self.done}".encode("ascii")
            self._socket.sendto(message, (self._endpoint.host, self._endpoint.port))
        except OSError:
            self._endpoint = None  # unreachable: the work goes on without progress

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


@contextmanager
def every(interval: float, say: Callable[[float], str]) -> Iterator[None]:
    """Log ``say(elapsed)`` every ``interval`` seconds while the block runs (never when 0)."""
    if interval <= 0:
        yield
        return
    started = time.perf_counter()
    stopped = threading.Event()

    def loop() -> None:
        while not stopped.wait(interval):
            try:
                log.info("%s", say(time.perf_counter() - started))
            except Exception as exc:  # a progress line must never fail the job
                log.debug("progress line failed: %s", exc)

    thread = threading.Thread(target=loop, name="progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopped.set()
        thread.join()


@contextmanager
def image_progress(
    stage: str, total: int, interval: float, spark_context: Any
) -> Iterator[ProgressEndpoint | None]:
    """Listen for the executors' counts and log :func:`progress_line` every ``interval`` seconds.

    Yields the endpoint to give the executors, or ``None`` when ``interval`` is 0 (no progress).
    """
    if interval <= 0:
        yield None
        return
    with ProgressListener(spark_context.getConf().get("spark.driver.host")) as listener:
        say = lambda elapsed: progress_line(stage, listener.done(), total, elapsed)  # noqa: E731
        with every(interval, say):
            yield listener.endpoint


def spark_tasks_line(stage: str, spark_context: Any, elapsed: float) -> str:
    """``reduce: running for 45s; Spark stage 12: 1/2 tasks done, 1 running``."""
    tracker = spark_context.statusTracker()
    parts = []
    for stage_id in sorted(tracker.getActiveStageIds()):
        info = tracker.getStageInfo(stage_id)
        if info is not None:
            parts.append(
                f"Spark stage {stage_id}: {info.numCompletedTasks}/{info.numTasks} tasks done, "
                f"{info.numActiveTasks} running"
            )
    return f"{stage}: running for {format_duration(elapsed)}" + (f"; {'; '.join(parts)}" if parts else "")


@contextmanager
def stage_progress(stage: str, interval: float, spark_context: Any) -> Iterator[None]:
    """While a stage without a per-image count runs: how long, and its Spark tasks."""
    with every(interval, lambda elapsed: spark_tasks_line(stage, spark_context, elapsed)):
        yield


def stage_timer(context: SparkContext, interval: float) -> StageTimer:
    """Times the stages; logs how each long one is going every ``interval`` seconds (0: never)."""
    return StageTimer(watch=lambda name: stage_progress(name, interval, context))
