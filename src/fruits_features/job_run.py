"""One run of a job, as its stages share it: the session, the S3 client and its settings (built
once), the run's folder, its manifest and its clock; and the one way a run ends.

Both jobs (:mod:`fruits_features.pipeline`, :mod:`fruits_features.scoring`) start a
:class:`JobRun`, hand it to the stages that write or record, and end it with :meth:`JobRun.finish`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pyspark.sql import SparkSession

from fruits_features.config import JobConfig
from fruits_features.io.outputs import failure_recorded, finish_run
from fruits_features.io.s3 import S3Settings, s3_client
from fruits_features.io.uri import S3Uri
from fruits_features.manifest import Job, RunManifest, RunResult, StageTimer
from fruits_features.progress import stage_timer
from fruits_features.settings import s3_settings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from fruits_features.stages.embed import Embedded


def spark_start_seconds(spark: SparkSession) -> float | None:
    """Seconds since the driver JVM started, where spark-submit started it before this Python
    driver (``PYSPARK_GATEWAY_PORT`` set); ``None`` otherwise."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return None
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    started_ms = float(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getStartTime())
    return round(time.time() - started_ms / 1000, 3)


@dataclass
class JobRun:
    """A run under way: what every stage that reads, writes or records needs, built once."""

    spark: SparkSession
    settings: S3Settings  # boto3's settings, the same on the driver and the executors
    client: S3Client  # the driver's S3 client
    uri: S3Uri  # the run's folder, ``<output.uri>/<run id>/``
    manifest: RunManifest
    timer: StageTimer
    started: float  # time.perf_counter() when the run started
    # Seconds from the driver JVM's start to this run's: JVM, Python driver, imports, SparkSession.
    # Known under spark-submit only (a session started in-process has its own history).
    spark_start: float | None = None

    @classmethod
    def start(cls, spark: SparkSession, config: JobConfig, job: Job, run_id: str) -> JobRun:
        """Start the clock and build the settings, the client and the manifest of run ``run_id``."""
        started = time.perf_counter()
        settings = s3_settings(config)
        uri = S3Uri.parse(config.output.uri).join(run_id)
        return cls(
            spark=spark,
            settings=settings,
            client=s3_client(settings),
            uri=uri,
            manifest=RunManifest(job, run_id, config.input.uri, str(uri), config.to_dict()),
            timer=stage_timer(spark.sparkContext, config.progress_interval_seconds),
            started=started,
            spark_start=spark_start_seconds(spark),
        )

    @property
    def run_id(self) -> str:
        """The run's id, the last part of its folder."""
        return self.manifest.run_id

    @contextmanager
    def failure_recorded(self) -> Iterator[None]:
        """On any error in the block, ``manifest.json`` says ``status: failed`` and why (no ``_SUCCESS``)."""
        with failure_recorded(self.client, self.uri, self.manifest):
            yield

    def record(self, embedded: Embedded) -> None:
        """Set the manifest's timings and Spark details, as of now."""
        sc = self.spark.sparkContext
        self.manifest.timings_seconds = {
            **self.timer.seconds,
            "total": round(time.perf_counter() - self.started, 3),
            "executor_decode": round(embedded.counters.decode_seconds.value, 3),
            "executor_model": round(embedded.counters.model_seconds.value, 3),
            # The tasks' other phases, summed over tasks (udf.PHASES; decode and model as above).
            **{
                f"executor_{phase}": round(value, 3)
                for phase, value in embedded.counters.phases.value.items()
                if phase not in {"decode", "model"}
            },
        }
        if self.spark_start is not None:
            self.manifest.timings_seconds["spark_start"] = self.spark_start
        self.manifest.spark = {
            "version": self.spark.version,
            "master": sc.master,
            "default_parallelism": sc.defaultParallelism,
            "partitions": embedded.partitions,
        }

    def finish(self, embedded: Embedded, report: Callable[[], str] | None = None) -> RunResult:
        """End a run that succeeded: record it; build the HTML report (``report``, which reads the
        manifest as it stands then) and record it again; write ``manifest.json``, then ``_SUCCESS``."""
        self.manifest.succeed()
        self.record(embedded)
        if report is not None:
            with self.timer.stage("report"):
                self.manifest.report = report()
            self.manifest.succeed()
            self.record(embedded)
        finish_run(self.client, self.uri, self.manifest)
        return RunResult(run_uri=str(self.uri), manifest=self.manifest.to_dict())
