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


def job_command(
    job: str,
    *args: str,
    master: str = "local[2]",
    config: str | Path = LOCAL_CONFIG,
    driver_memory: str | None = None,
    conf: Mapping[str, str] | None = None,
) -> list[str]:
    """``spark-submit --master MASTER [--driver-memory M] [--conf K=V ...] jobs/<job>.py --config C ...``.

    Args:
        job: ``extract_features`` or ``score``.
        args: the job's own arguments after ``--config``.
        conf: Spark properties for spark-submit's ``--conf``, e.g.
            ``spark.executorEnv.AWS_ENDPOINT_URL_S3`` for the executors of a non-local master.
    """
    memory = ["--driver-memory", driver_memory] if driver_memory else []
    properties = [item for key, value in (conf or {}).items() for item in ("--conf", f"{key}={value}")]
    return [
        str(SPARK_SUBMIT),
        "--master",
        master,
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
