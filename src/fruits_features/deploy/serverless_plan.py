"""An EMR Serverless submission, planned: the uploads and the exact API requests, built without
calling AWS, as :mod:`fruits_features.deploy.plan` does for EMR on EC2.

EMR Serverless runs no bootstrap action: the job's Python comes in the packed environment
(``make package``), which Spark unpacks on the driver and every executor from ``spark.archives``
and runs as ``./environment/bin/python`` (the AWS samples' way: ``spark.emr-serverless.driverEnv``
and ``executorEnv`` set ``PYSPARK_PYTHON``). The code also travels as the ``--py-files`` archive,
the job config with ``--files``, as in an EMR step.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from fruits_features.config import JobConfig
from fruits_features.deploy.environment import packed_environment
from fruits_features.deploy.package import ENTRY_POINT, Package
from fruits_features.deploy.plan import check_engine_files
from fruits_features.deploy.serverless_settings import InitialWorkers, ServerlessSettings
from fruits_features.deploy.submission import (
    ApiCall,
    JobArguments,
    Upload,
    artifacts_prefix,
    folder_uri,
    run_prefix,
)
from fruits_features.errors import ConfigError

# GetJobRun's states that no longer change.
TERMINAL_RUN_STATES = frozenset({"SUCCESS", "FAILED", "CANCELLED"})
# The application states in which it takes job runs (it starts itself when needed).
USABLE_APPLICATION_STATES = ("CREATING", "CREATED", "STARTING", "STARTED", "STOPPING", "STOPPED")
PYTHON = "./environment/bin/python"


@dataclass(frozen=True)
class ServerlessPlan:
    """Everything a submission does, in order: upload; find the application by name, release and
    architecture (``ListApplications``) or create it; start the job run; poll it."""

    run_id: str
    output_uri: str
    uploads: tuple[Upload, ...]
    find: ApiCall
    create: ApiCall
    start: ApiCall  # its applicationId is filled in once the application is known
    poll_seconds: float
    timeout_minutes: int
    wait: bool

    @property
    def application(self) -> dict[str, Any]:
        """What identifies a reusable application: the name, release and architecture it is created with."""
        return {key: self.create.parameters[key] for key in ("name", "releaseLabel", "architecture")}

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON-ready data: what ``--dry-run`` prints."""
        return {
            "run_id": self.run_id,
            "output": self.output_uri,
            "uploads": [{"source": str(u.source), "destination": u.destination} for u in self.uploads],
            "requests": [
                {"operation": self.find.operation, "parameters": self.find.parameters},
                {
                    "operation": self.create.operation,
                    "when": "no application in ListApplications has this name, release and architecture",
                    "parameters": self.create.parameters,
                },
                {"operation": self.start.operation, "parameters": self.start.parameters},
            ],
            "then": [
                f"GetJobRun every {self.poll_seconds:g}s until {', '.join(sorted(TERMINAL_RUN_STATES))} "
                f"(at most {self.timeout_minutes} minutes)"
                if self.wait
                else "return once the job run is started (--no-wait)"
            ],
        }


def _workers(workers: InitialWorkers) -> dict[str, Any]:
    size = workers.size
    return {
        "workerCount": workers.count,
        "workerConfiguration": {"cpu": size.cpu, "memory": size.memory, "disk": size.disk},
    }


def create_application_request(settings: ServerlessSettings) -> dict[str, Any]:
    """``CreateApplication``: a Spark application that starts on submission and stops when idle."""
    app = settings.application
    request: dict[str, Any] = {
        "name": app.name,
        "releaseLabel": app.release_label,
        "type": "SPARK",
        "architecture": app.architecture,
        "maximumCapacity": {
            "cpu": app.maximum_capacity.cpu,
            "memory": app.maximum_capacity.memory,
            "disk": app.maximum_capacity.disk,
        },
        "autoStartConfiguration": {"enabled": True},
        "autoStopConfiguration": {"enabled": True, "idleTimeoutMinutes": app.idle_minutes},
        "tags": dict(app.tags),
    }
    initial = {
        kind: _workers(workers)
        for kind, workers in (("DRIVER", app.driver), ("EXECUTOR", app.executor))
        if workers.count
    }
    if initial:
        request["initialCapacity"] = initial
    digest = hashlib.sha256(repr(sorted(request.items())).encode()).hexdigest()[:16]
    request["clientToken"] = f"{app.name}-{digest}"  # the same request, sent twice, creates one
    return request


def spark_submit_parameters(
    settings: ServerlessSettings, package: Package, environment: str, arguments: JobArguments
) -> str:
    """``sparkSubmitParameters``: the packed environment as every process's Python, the code, the
    job config, and the configured Spark properties."""
    artifacts = artifacts_prefix(settings, package)
    conf = {
        "spark.archives": f"{artifacts.join(environment)}#environment",
        "spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON": PYTHON,
        "spark.emr-serverless.driverEnv.PYSPARK_PYTHON": PYTHON,
        "spark.emr-serverless.executorEnv.PYSPARK_PYTHON": PYTHON,
        **dict(sorted(settings.run.spark_conf.items())),
    }
    parts = [f"--conf {key}={value}" for key, value in conf.items()]
    parts.append(f"--py-files {artifacts.join(package.archive)}")
    parts.append(f"--files {run_prefix(settings, arguments.run_id).join(arguments.config_path.name)}")
    return " ".join(parts)


def check_model_transfer(job: JobConfig) -> None:
    """Refuse ``classifier.model_transfer: boto3`` when the run saves a model: it needs a folder the
    driver and the executors share, which EMR Serverless workers have not. ``hadoop`` goes through
    EMRFS, as on EMR on EC2.

    Raises:
        ConfigError: naming the key.
    """
    saves_model = job.classifier.enabled or job.output.incremental_base
    if saves_model and job.classifier.model_transfer == "boto3":
        raise ConfigError(
            "config key 'classifier.model_transfer': EMR Serverless workers share no folder with the "
            "driver, so boto3 cannot stage the model: use hadoop (EMRFS, as in conf/emr.yaml)"
        )


def plan_serverless(
    settings: ServerlessSettings, package: Package, job: JobConfig, arguments: JobArguments, *, wait: bool
) -> ServerlessPlan:
    """Plan an EMR Serverless job run; no AWS call.

    Raises:
        ConfigError: model files the workers cannot reach, a model transfer that cannot work there.
        PackageError: ``dist/`` holds no packed environment, or another engine's.
    """
    check_engine_files(job)
    check_model_transfer(job)
    environment = packed_environment(package, job.model.engine)
    if environment is None:
        raise ConfigError(
            f"EMR Serverless runs the packed environment, and {package.dist} has none: run make package"
        )
    artifacts = artifacts_prefix(settings, package)
    uploads = [Upload(package.dist / name, str(artifacts.join(name))) for name in package.files]
    config_target = run_prefix(settings, arguments.run_id).join(arguments.config_path.name)
    uploads.append(Upload(arguments.config_path, str(config_target)))
    monitoring: dict[str, Any] = {"s3MonitoringConfiguration": {"logUri": settings.run.log_uri}}
    if settings.run.cloudwatch_log_group:
        monitoring["cloudWatchLoggingConfiguration"] = {
            "enabled": True,
            "logGroupName": settings.run.cloudwatch_log_group,
        }
    start = {
        "applicationId": "<from ListApplications or CreateApplication>",
        "clientToken": re.sub(r"[^\w.-]", "-", f"fruits-features-{arguments.run_id}"),
        "name": f"fruits-features {arguments.run_id}",
        "executionRoleArn": settings.run.execution_role_arn,
        "jobDriver": {
            "sparkSubmit": {
                "entryPoint": str(artifacts.join(ENTRY_POINT)),
                "entryPointArguments": ["--config", arguments.config_path.name, *arguments.command_line()],
                "sparkSubmitParameters": spark_submit_parameters(settings, package, environment, arguments),
            }
        },
        "configurationOverrides": {"monitoringConfiguration": monitoring},
        "executionTimeoutMinutes": settings.run.timeout_minutes,
        "tags": dict(settings.application.tags),
    }
    return ServerlessPlan(
        run_id=arguments.run_id,
        output_uri=str(folder_uri(arguments.output_uri or job.output.uri, arguments.run_id)),
        uploads=tuple(uploads),
        find=ApiCall("ListApplications", "list_applications", {"states": list(USABLE_APPLICATION_STATES)}),
        create=ApiCall("CreateApplication", "create_application", create_application_request(settings)),
        start=ApiCall("StartJobRun", "start_job_run", start),
        poll_seconds=settings.run.poll_seconds,
        timeout_minutes=settings.run.timeout_minutes,
        wait=wait,
    )
