"""The local ``spark-submit`` command line of a job, as `make run`, `make bench` and the tests run it.

Development only: it finds ``jobs/`` and ``conf/`` in this checkout, and the ``spark-submit``
beside the running Python (the project's own pyspark).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[3]
JOBS = CHECKOUT / "jobs"
LOCAL_CONFIG = CHECKOUT / "conf" / "local.yaml"
SPARK_SUBMIT = Path(sys.executable).with_name("spark-submit")

# The driver JVM's start and warm-up, cut (docs/performance.md, "Spark's start"). In local mode the
# driver is the executor too, and on 2 cores C2's compiles took about 10 CPU seconds of a 30 s job:
# C1 alone compiles at once and costs little, for JVM code that only moves keys, Arrow batches and
# results. The class archive (`make class-archive`) maps the classes a run of the job loaded,
# already parsed and verified, instead of reading them from Spark's jars.
DRIVER_JIT = "-XX:TieredStopAtLevel=1"
CLASS_ARCHIVE = CHECKOUT / "build" / "spark-driver.jsa"


def driver_java_options(archive: Path | None = CLASS_ARCHIVE, *, dump: bool = False) -> str:
    """The driver JVM's options: :data:`DRIVER_JIT`, and the class archive if ``archive`` exists,
    or, with ``dump``, the archive written at the JVM's exit (``-XX:ArchiveClassesAtExit``).

    A JVM of another build than the archive's ignores it and starts as without it.
    """
    options = [DRIVER_JIT]
    if archive is not None and dump:
        # Quiet: the JVM warns once per class it leaves out (signed jars, generated classes).
        options += [f"-XX:ArchiveClassesAtExit={archive}", "-Xlog:cds*=error"]
    elif archive is not None and archive.exists():
        options.append(f"-XX:SharedArchiveFile={archive}")
    return " ".join(options)


def job_command(
    job: str,
    *args: str,
    master: str = "local[2]",
    config: str | Path = LOCAL_CONFIG,
    driver_memory: str | None = None,
    conf: Mapping[str, str] | None = None,
    java_options: str | None = None,
) -> list[str]:
    """``spark-submit --master MASTER --driver-java-options O [--driver-memory M] [--conf K=V ...]
    jobs/<job>.py --config C ...``.

    Args:
        job: ``extract_features`` or ``score``.
        args: the job's own arguments after ``--config``.
        conf: Spark properties for spark-submit's ``--conf``, e.g.
            ``spark.executorEnv.AWS_ENDPOINT_URL_S3`` for the executors of a non-local master.
        java_options: the driver JVM's options; default :func:`driver_java_options`.
    """
    memory = ["--driver-memory", driver_memory] if driver_memory else []
    options = driver_java_options() if java_options is None else java_options
    properties = [item for key, value in (conf or {}).items() for item in ("--conf", f"{key}={value}")]
    return [
        str(SPARK_SUBMIT),
        "--master",
        master,
        *(["--driver-java-options", options] if options else []),
        *memory,
        *properties,
        str(JOBS / f"{job}.py"),
        "--config",
        str(config),
        *args,
    ]


def job_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment for a spark-submit child: its Python for the driver and workers."""
    return {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        **(extra or {}),
    }
