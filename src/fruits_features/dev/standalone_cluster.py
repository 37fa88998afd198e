"""A Spark standalone cluster on 127.0.0.1, started from the project's own pyspark, for the scale bench.

Development only. A master and its workers each run as their own JVM (``bin/spark-class
org.apache.spark.deploy.master.Master`` / ``...worker.Worker`` of the pyspark package, which is a
Spark home), so that a ``spark-submit --master spark://...`` driver is a real driver: its executors
and their Python workers are the workers' processes, not its own. The daemons get the local S3
credentials but no S3 endpoint: a driver passes it to its executors with
``spark.executorEnv.AWS_ENDPOINT_URL_S3`` (:meth:`StandaloneCluster.submit_conf`), as the README
asks of any non-local master.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fruits_features.dev.local_s3 import LOCAL_ENV, free_port

START_SECONDS = 120


class ClusterStartError(RuntimeError):
    """The master or a worker exited, or the workers did not register in time; carries their logs."""


def spark_home() -> Path:
    """The project's own pyspark package folder: its ``bin/spark-class`` and ``jars/``."""
    import pyspark

    return Path(pyspark.__file__).parent


def daemon_env(folder: Path) -> dict[str, str]:
    """The daemons' environment: this Python for the executors' Python workers, the local S3
    credentials (as an instance profile would give them), 127.0.0.1, and no S3 endpoint."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_ENDPOINT_URL")}
    env.update(LOCAL_ENV)
    env.update(
        SPARK_HOME=str(spark_home()),
        SPARK_LOCAL_IP="127.0.0.1",
        SPARK_LOG_DIR=str(folder),
        SPARK_PID_DIR=str(folder),
        PYSPARK_PYTHON=sys.executable,
    )
    return env


@dataclass
class Daemon:
    """One daemon we started: its name, its process (the leader of a process group of its own) and log."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.name} (exit code {self.process.poll()}), {self.log}:\n{text[-chars:]}"


@dataclass
class StandaloneCluster:
    """A running cluster: the master's URL, its web UI, and the daemons (the master first)."""

    master: str
    web_ui: str
    folder: Path
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def worker_pids(self) -> list[int]:
        """The workers' JVMs: each one's process tree holds its executors and their Python workers."""
        return [d.process.pid for d in self.daemons if d.name.startswith("worker")]

    def state(self) -> dict[str, Any]:
        """The master's ``/json/`` (workers, applications), or ``{}`` while it does not answer."""
        try:
            with urllib.request.urlopen(f"{self.web_ui}/json/", timeout=2) as response:
                state = json.load(response)
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def alive_workers(self) -> int:
        return sum(1 for worker in self.state().get("workers", []) if worker.get("state") == "ALIVE")

    def submit_conf(self, endpoint: str | None = None) -> dict[str, str]:
        """``spark-submit --conf`` items for a driver on this cluster: the S3 endpoint for its
        executors (``AWS_ENDPOINT_URL_S3`` of this process when not given) and the driver on 127.0.0.1."""
        conf = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1"}
        endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3")
        if endpoint:
            conf["spark.executorEnv.AWS_ENDPOINT_URL_S3"] = endpoint
        return conf

    def logs(self) -> str:
        return "\n".join(d.log_tail() for d in self.daemons)


def _stop(daemons: list[Daemon]) -> None:
    """Stop each daemon and what it started (executors, Python workers): the process group of the
    pid we started, SIGTERM, then SIGKILL after 30 s."""
    for daemon in daemons:
        if daemon.process.poll() is None:
            os.killpg(daemon.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    for daemon in daemons:
        try:
            daemon.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(daemon.process.pid, signal.SIGKILL)
            daemon.process.wait(timeout=10)


@contextmanager
def standalone_cluster(
    *,
    workers: int = 1,
    cores: int = 2,
    memory: str = "2g",
    folder: Path | None = None,
    start_seconds: float = START_SECONDS,
) -> Iterator[StandaloneCluster]:
    """Run a master and ``workers`` workers (``cores`` cores and ``memory`` each) on 127.0.0.1.

    Yields the cluster once every worker is registered; stops the daemons, their executors and
    their Python workers on exit. The daemons' logs and the workers' work folders are under
    ``folder`` (a temporary folder, removed afterwards, when not given).

    Raises:
        ClusterStartError: a daemon exited or the workers were not registered in ``start_seconds``.
    """
    with ExitStack() as stack:
        if folder is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fruits-standalone-")))
        folder.mkdir(parents=True, exist_ok=True)
        env = daemon_env(folder)
        spark_class = str(spark_home() / "bin" / "spark-class")
        master_port, ui_port = free_port(), free_port()
        cluster = StandaloneCluster(f"spark://127.0.0.1:{master_port}", f"http://127.0.0.1:{ui_port}", folder)

        def start(name: str, *command: str) -> None:
            log = folder / f"{name}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [spark_class, *command],
                    env=env,
                    cwd=folder,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stopped with what it started
                )
            cluster.daemons.append(Daemon(name, process, log))

        stack.callback(_stop, cluster.daemons)
        start(
            "master",
            "org.apache.spark.deploy.master.Master",
            *("--host", "127.0.0.1", "--port", str(master_port), "--webui-port", str(ui_port)),
        )
        for index in range(1, workers + 1):
            work_dir = folder / f"worker-{index}"
            work_dir.mkdir(exist_ok=True)
            start(
                f"worker-{index}",
                "org.apache.spark.deploy.worker.Worker",
                *("--host", "127.0.0.1", "--port", str(free_port()), "--webui-port", str(free_port())),
                *("--cores", str(cores), "--memory", memory, "--work-dir", str(work_dir)),
                cluster.master,
            )
        deadline = time.monotonic() + start_seconds
        while (alive := cluster.alive_workers()) < workers:
            exited = [d.name for d in cluster.daemons if d.process.poll() is not None]
            if exited or time.monotonic() > deadline:
                reason = f"{', '.join(exited)} exited" if exited else f"not up in {start_seconds:.0f}s"
                raise ClusterStartError(
                    f"the standalone cluster at {cluster.master} did not come up ({reason}; {alive} of "
                    f"{workers} workers registered):\n{cluster.logs()}"
                )
            time.sleep(0.5)
        yield cluster
