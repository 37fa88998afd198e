"""Typed, validated EMR deploy settings, read from ``conf/emr-cluster.yaml``.

The job's own configuration (``conf/emr.yaml``) says what the job does; this file says where and on
what it runs: the cluster, the bootstrap action and the step. They are kept apart because the job's
loader refuses unknown sections, and because the job never needs to know its cluster.

Every problem surfaces as a :class:`~fruits_features.errors.ConfigError` whose one-line message
names the file and the key. No credentials belong here: the submitter uses the default AWS
credential chain and ``AWS_REGION``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError, field_validator

from fruits_features.config_files import read_yaml
from fruits_features.deploy.security import SecuritySettings
from fruits_features.errors import ConfigError
from fruits_features.io.uri import S3Uri

# The releases with Spark 3.5 or later on Amazon Linux 2023, whose package repository has python3.11:
# EMR 7.x (Spark 3.5) and the AWS runtime for Apache Spark, emr-spark-8.x (emr-spark-8.0.0: Spark
# 4.0.2, Python 3.11-3.13).
RELEASE_RE = re.compile(r"^(emr-7|emr-spark-8)\.\d+\.\d+$")
_INSTANCE_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]*\.[a-z0-9]+$")
_MEMORY_RE = re.compile(r"^[1-9][0-9]*[kmgt]$")
_ROLE_RE = re.compile(r"^[\w+=,.@-]{1,128}$")
# EMR's v2 managed policies (AmazonEMRServicePolicy_v2, the default service role's) act only on
# resources that carry this tag with the value "true": the cluster is created with it (EMR passes it
# on to what it creates), and a subnet or security group EMR did not create must carry it too.
MANAGED_POLICY_TAG = "for-use-with-amazon-emr-managed-policies"


class SettingsSection(BaseModel):
    # As in the job's config: a misspelt key is an error, not a silently ignored value.
    model_config = ConfigDict(extra="forbid", frozen=True)


def s3_prefix_of(value: str) -> str:
    uri = S3Uri.parse(value)
    if not value.startswith("s3://"):
        raise ValueError(f"use the s3:// scheme, got {value!r}")
    if not uri.prefix:
        raise ValueError(f"name a prefix inside the bucket, got {value!r}")
    return f"s3://{uri.bucket}/{uri.prefix}"


def _absolute_path(value: str) -> str:
    if not value.startswith("/") or value.endswith("/") or " " in value:
        raise ValueError(f"must be an absolute path without spaces or a trailing '/', got {value!r}")
    return value


def stringify_spark_conf(value: Any) -> Any:
    """Spark properties as spark-submit takes them: YAML reads ``true`` and ``1`` as bool and int."""
    if isinstance(value, Mapping):
        return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
    return value


class InstanceGroup(SettingsSection):
    """One instance group of the cluster: the primary node or the core nodes."""

    instance_type: str
    count: Annotated[StrictInt, Field(ge=1, le=500)]
    market: Literal["ON_DEMAND", "SPOT"] = "ON_DEMAND"
    # Extra gp3 volume per instance, for YARN's local directories (shuffle, spilled blocks).
    ebs_volume_gb: Annotated[StrictInt, Field(ge=1, le=16384)] | None = None

    @field_validator("instance_type")
    @classmethod
    def _check_instance_type(cls, value: str) -> str:
        if not _INSTANCE_TYPE_RE.match(value):
            raise ValueError(f"expected an EC2 instance type such as m5.xlarge, got {value!r}")
        return value


class ClusterSettings(SettingsSection):
    """The cluster ``run_job_flow`` creates when no ``--cluster-id`` is given."""

    name: str = "fruits-features"
    release_label: str
    log_uri: str
    service_role: str
    instance_profile: str
    primary: InstanceGroup
    core: InstanceGroup
    subnet_id: str | None = None
    keep_alive: StrictBool = False
    idle_timeout_seconds: Annotated[StrictInt, Field(ge=60, le=604800)] = 3600
    tags: dict[str, str] = Field(default_factory=dict)
    security: SecuritySettings = Field(default_factory=SecuritySettings)

    @field_validator("release_label")
    @classmethod
    def _check_release(cls, value: str) -> str:
        if not RELEASE_RE.match(value):
            raise ValueError(
                f"expected an EMR 7.x or emr-spark-8.x release label such as emr-7.13.0 or emr-spark-8.0.0, "
                f"got {value!r}"
            )
        return value

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, value: dict[str, str]) -> dict[str, str]:
        if value.get(MANAGED_POLICY_TAG, "true") != "true":
            raise ValueError(
                f"{MANAGED_POLICY_TAG} must be 'true' (it is added to every cluster: EMR's v2 managed "
                "policies act only on resources tagged so)"
            )
        return value

    @property
    def request_tags(self) -> dict[str, str]:
        """The tags the cluster is created with: ``tags`` and the v2 managed policies' tag."""
        return {**self.tags, MANAGED_POLICY_TAG: "true"}

    @field_validator("log_uri")
    @classmethod
    def _check_log_uri(cls, value: str) -> str:
        return s3_prefix_of(value)

    @field_validator("service_role", "instance_profile")
    @classmethod
    def _check_role(cls, value: str) -> str:
        if not _ROLE_RE.match(value):
            raise ValueError(f"expected an IAM role or instance profile name, got {value!r}")
        return value

    @field_validator("primary")
    @classmethod
    def _check_primary(cls, value: InstanceGroup) -> InstanceGroup:
        if value.count not in {1, 3}:
            raise ValueError(f"an EMR cluster has 1 or 3 primary nodes, got {value.count}")
        return value


class BootstrapSettings(SettingsSection):
    """What the bootstrap action sets up on every node."""

    python: str = "python3.11"
    venv: str = "/opt/fruits-features/venv"
    weights_dir: str = "/opt/fruits-features/weights"

    @field_validator("venv", "weights_dir")
    @classmethod
    def _check_path(cls, value: str) -> str:
        return _absolute_path(value)

    @field_validator("python")
    @classmethod
    def _check_python(cls, value: str) -> str:
        if not re.match(r"^python3\.\d+$", value):
            raise ValueError(f"expected a Python command such as python3.11, got {value!r}")
        return value


class StepSettings(SettingsSection):
    """The ``spark-submit`` step and how long to wait for it."""

    name: str = "fruits-features"
    action_on_failure: Literal["CONTINUE", "CANCEL_AND_WAIT", "TERMINATE_CLUSTER"] = "CONTINUE"
    driver_memory: str = "4g"
    spark_conf: dict[str, str] = Field(default_factory=dict)
    poll_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    timeout_minutes: Annotated[StrictInt, Field(ge=1, le=10080)] = 360

    @field_validator("driver_memory")
    @classmethod
    def _check_memory(cls, value: str) -> str:
        if not _MEMORY_RE.match(value):
            raise ValueError(f"expected a JVM memory size such as 4g, got {value!r}")
        return value

    _stringify = field_validator("spark_conf", mode="before")(stringify_spark_conf)


class DeploySettings(SettingsSection):
    """The whole of ``conf/emr-cluster.yaml``."""

    artifacts_uri: str
    cluster: ClusterSettings
    bootstrap: BootstrapSettings = Field(default_factory=BootstrapSettings)
    step: StepSettings = Field(default_factory=StepSettings)

    @field_validator("artifacts_uri")
    @classmethod
    def _check_artifacts(cls, value: str) -> str:
        return s3_prefix_of(value)


def one_line_error(path: Path, error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<root>"
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    elif first["type"] != "value_error" and "input" in first:
        message = f"{message} (got {first['input']!r})"
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{path}: key '{key}': {message}{suffix}"


def load_settings(path: Path) -> DeploySettings:
    """Read and validate the deploy settings.

    Args:
        path: the YAML file, normally ``conf/emr-cluster.yaml``.

    Returns:
        The validated, frozen settings.

    Raises:
        ConfigError: one line naming the file and the first offending key.
    """
    data = read_yaml(path)
    try:
        return DeploySettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(one_line_error(path, exc)) from exc
