"""Typed, validated EMR Serverless settings, read from ``conf/emr-serverless.yaml``: the application
the job runs in (created once, reused by name) and how each job run is started.

As with ``conf/emr-cluster.yaml``, the job's own configuration stays apart and no credentials
belong here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StrictInt, ValidationError, field_validator

from fruits_features.config_files import read_yaml
from fruits_features.deploy.settings import (
    RELEASE_RE,
    SettingsSection,
    one_line_error,
    s3_prefix_of,
    stringify_spark_conf,
)
from fruits_features.errors import ConfigError

_CPU_RE = re.compile(r"^[1-9][0-9]* vCPU$")
_MEMORY_RE = re.compile(r"^[1-9][0-9]* GB$")
_ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}|ACCOUNT_ID):role/[\w+=,.@/-]{1,128}$")


def _cpu(value: str) -> str:
    if not _CPU_RE.match(value):
        raise ValueError(f"write it as '<n> vCPU', got {value!r}")
    return value


def _gb(value: str) -> str:
    if not _MEMORY_RE.match(value):
        raise ValueError(f"write it as '<n> GB', got {value!r}")
    return value


class WorkerSize(SettingsSection):
    """One pre-initialised worker: ``cpu`` as ``"4 vCPU"``, ``memory`` and ``disk`` as ``"16 GB"``."""

    cpu: Annotated[str, AfterValidator(_cpu)] = "4 vCPU"
    memory: Annotated[str, AfterValidator(_gb)] = "16 GB"
    disk: Annotated[str, AfterValidator(_gb)] = "20 GB"


class InitialWorkers(SettingsSection):
    """Workers kept warm between runs (``count`` 0: none, each run waits for its own)."""

    count: StrictInt = Field(0, ge=0)
    size: WorkerSize = Field(default_factory=WorkerSize)


class MaximumCapacity(SettingsSection):
    """The most one application may hold at once, every run together."""

    cpu: Annotated[str, AfterValidator(_cpu)] = "64 vCPU"
    memory: Annotated[str, AfterValidator(_gb)] = "256 GB"
    disk: Annotated[str, AfterValidator(_gb)] = "1000 GB"


class ApplicationSettings(SettingsSection):
    """The EMR Serverless application: created with these settings, or reused by name."""

    name: str = "fruits-features"
    release_label: str = "emr-spark-8.0.0"
    architecture: Literal["X86_64", "ARM64"] = "X86_64"
    driver: InitialWorkers = Field(default_factory=InitialWorkers)
    executor: InitialWorkers = Field(default_factory=InitialWorkers)
    maximum_capacity: MaximumCapacity = Field(default_factory=MaximumCapacity)
    idle_minutes: StrictInt = Field(15, ge=1, description="the application stops after this long idle")
    tags: dict[str, str] = Field(default_factory=lambda: {"project": "fruits-features"})

    @field_validator("release_label")
    @classmethod
    def _check_release(cls, value: str) -> str:
        if not RELEASE_RE.match(value):
            raise ValueError(f"expected emr-7.x.y or emr-spark-8.x.y, got {value!r}")
        return value

    @field_validator("architecture")
    @classmethod
    def _x86_only(cls, value: str) -> str:
        if value != "X86_64":
            # The packed environment holds x86_64 wheels, and OpenVINO publishes no aarch64 wheel
            # for Amazon Linux's glibc: Graviton workers would need a build of their own.
            raise ValueError(
                "the packed environment is built for X86_64 (make package); ARM64 needs an aarch64 build"
            )
        return value


class RunSettings(SettingsSection):
    """How each job run is started and watched."""

    execution_role_arn: str
    log_uri: str
    cloudwatch_log_group: str | None = None
    spark_conf: dict[str, str] = Field(default_factory=dict)
    _stringify = field_validator("spark_conf", mode="before")(stringify_spark_conf)
    timeout_minutes: StrictInt = Field(360, ge=5)
    poll_seconds: float = Field(30.0, gt=0)

    @field_validator("execution_role_arn")
    @classmethod
    def _check_role(cls, value: str) -> str:
        if not _ROLE_ARN_RE.match(value):
            raise ValueError(f"expected arn:aws:iam::<account id>:role/<name>, got {value!r}")
        return value

    @field_validator("log_uri")
    @classmethod
    def _check_logs(cls, value: str) -> str:
        return s3_prefix_of(value)


class ServerlessSettings(SettingsSection):
    """The whole of ``conf/emr-serverless.yaml``."""

    artifacts_uri: str
    application: ApplicationSettings = Field(default_factory=ApplicationSettings)
    run: RunSettings

    @field_validator("artifacts_uri")
    @classmethod
    def _check_artifacts(cls, value: str) -> str:
        return s3_prefix_of(value)


def load_serverless_settings(path: Path) -> ServerlessSettings:
    """Read and validate ``conf/emr-serverless.yaml``.

    Raises:
        ConfigError: one line naming the file and the first offending key.
    """
    try:
        return ServerlessSettings.model_validate(read_yaml(path))
    except ValidationError as exc:
        raise ConfigError(one_line_error(path, exc)) from exc
