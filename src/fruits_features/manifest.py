"""What a run did, as the JSON written to ``manifest.json``."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, Literal

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


Job = Literal["features", "scoring"]
Status = Literal["running", "succeeded", "failed"]


@dataclass
class EngineSection:
    """What embedded the images, in both jobs (``manifest.model``).

    Attributes:
        engine: ``model.engine`` as configured (``auto``, ``onnxruntime``, ...).
        backbone: the network, its feature size, preprocessing and input layout.
        precision: ``model.precision`` as configured; ``None`` for ``tensorflow``.
        onnx: the ONNX file the ONNX-based engines ran; ``None`` for ``tensorflow``.
        onnx_export: what the ONNX file records of its export (weights, digest, image size).
        executors: tasks per engine, precision and CPU the executors actually ran.
        tasks_with_tensorflow: tasks whose Python worker had TensorFlow loaded.
    """

    engine: str
    backbone: dict[str, Any] = field(default_factory=dict)
    precision: str | None = None
    onnx: str | None = None
    onnx_export: dict[str, Any] | None = None
    executors: dict[str, int] = field(default_factory=dict)
    tasks_with_tensorflow: int = 0


@dataclass
class Counts:
    """How many of what (``manifest.counts``); the embed stage fills it, the writes add ``part_files``."""

    keys_listed: int = 0
    keys_skipped: int = 0
    images: int = 0
    featurized: int = 0
    rejected: int = 0
    model_images: int = 0
    model_batches: int = 0
    augmented: int = 0  # augment.copies: the augmented copies embedded (not in images)
    part_files: int = 0


@dataclass
class PcaSection:
    """The reduction (``manifest.pca``): the k kept, the variance target if any, their variance."""

    k: int
    variance_target: float | None
    explained_variance: list[float]
    cumulative_explained_variance: list[float]


@dataclass
class RunManifest:
    """``manifest.json``: one shape for both jobs, the same key meaning the same thing in each.

    A run that fails after its preflight is written with ``status: failed`` and ``error``. The
    sections a job or a run does not have (``pca`` and ``classifier`` for scoring, ``report``
    when off, ``scoring_model`` for the feature job) are left out of the JSON. docs/outputs.md
    describes every key.
    """

    job: Job
    run_id: str
    input: str
    output: str
    config: dict[str, Any]
    status: Status = "running"
    error: str | None = None
    started_at: str = field(default_factory=utc_now)
    finished_at: str | None = None
    model: EngineSection | None = None
    scoring_model: dict[str, Any] | None = None  # scoring: the saved model's URI and model.json
    counts: Counts = field(default_factory=Counts)
    labels: dict[str, Any] | None = None  # labels.rule fruit or table: the rule, each label's folders
    incremental: dict[str, Any] | None = (
        None  # an incremental run: the previous run, the mode, what was reused
    )
    pca: PcaSection | None = None
    embeddings: str | None = None  # output.incremental_base: the embeddings/ folder
    augment: dict[str, Any] | None = None  # augment.copies: the settings, the copies, augmented/
    classifier: dict[str, Any] | None = None
    report: str | None = None
    timings_seconds: dict[str, float] = field(default_factory=dict)
    spark: dict[str, Any] | None = None
    versions: dict[str, str | None] = field(default_factory=library_versions)

    def succeed(self) -> None:
        """Mark the run succeeded, as of now."""
        self.status, self.finished_at = "succeeded", utc_now()

    def fail(self, error: BaseException) -> None:
        """Mark the run failed with ``error``, as of now."""
        self.status, self.error, self.finished_at = "failed", str(error) or type(error).__name__, utc_now()

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, without the sections this run does not have (``None``)."""
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class RunResult:
    """Where a finished run wrote its results, and its manifest (as written)."""

    run_uri: str
    manifest: dict[str, Any]
