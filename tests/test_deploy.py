"""The EMR submit command against moto's server, which speaks the EMR and S3 APIs on 127.0.0.1.

What the cluster receives is read back through the EMR API and, byte for byte, from moto's request
recorder; moto never finishes a step by itself, so :class:`StepFinisher` plays the cluster's part.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError

from deploy_support import (
    ROOT,
    StepFinisher,
    cluster_settings_file,
    emr_backend,
    recorded_emr_requests,
    with_environment,
)
from fruits_features.config_files import load_config
from fruits_features.deploy import emr
from fruits_features.deploy.environment import lock_name, write_lock
from fruits_features.deploy.errors import AwsCallError, PackageError
from fruits_features.deploy.instances import check_instance, cpu_of
from fruits_features.deploy.package import Package, build_package, load_package
from fruits_features.deploy.pins import PROVIDED_BY_EMR, REQUIREMENTS, Pin, check_project_ranges, read_pins
from fruits_features.deploy.security import (
    SecuritySettings,
    create_security_configuration,
    security_configuration_request,
)
from fruits_features.deploy.settings import load_settings
from fruits_features.errors import ConfigError
from fruits_features.features.engines import Engine
from iam_actions import IamRequest
from iam_eval import ACCOUNT, evaluate

WEIGHTS = "s3://fruits-artifacts-bucket/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
ONNX = "s3://fruits-artifacts-bucket/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.224px.onnx"
NODE_WEIGHTS = (
    "/opt/fruits-features/weights/"
    f"{hashlib.sha256(WEIGHTS.encode()).hexdigest()[:16]}/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
)


@pytest.fixture
def emr_endpoint(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """moto's server answers EMR on the same port as S3."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_EMR", s3_endpoint)
    return s3_endpoint


@pytest.fixture
def emr_api(emr_endpoint: str) -> Any:
    return boto3.session.Session().client("emr")


@pytest.fixture
def recording(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every request moto's server receives during the test, as its recorder writes them."""
    from moto.moto_api import recorder

    path = tmp_path / "moto-recording.jsonl"
    monkeypatch.setattr(recorder, "_location", str(path))  # the file only; recording is moto's own
    recorder.reset_recording()
    recorder.start_recording()
    yield path
    recorder.stop_recording()


def submit(*args: str) -> int:
    return emr.main(["submit", *args])


def base_args(package: Package, settings: Path, bucket: str, run_id: str) -> list[str]:
    return [
        "--config",
        str(ROOT / "conf" / "emr.yaml"),
        "--cluster-config",
        str(settings),
        "--dist",
        str(package.dist),
        "--input",
        f"s3://{bucket}/images/",
        "--output",
        f"s3://{bucket}/features/",
        "--run-id",
        run_id,
        "--set",
        "pca.k=10",
        "--poll-seconds",
        "0.05",
        "--timeout-minutes",
        "1",  # a step the command fails to see end fails the test in a minute, not six hours
    ]


def expected_step_args(package: Package, bucket: str, run_id: str, *tail: str) -> list[str]:
    """The step's command line for conf/emr.yaml (engine auto: the job reads the s3:// model
    files itself, no override), ``tail`` after it (the tensorflow engine's node-local weights)."""
    artifacts = f"s3://{bucket}/artifacts/{package.tag}/"
    return [
        "spark-submit",
        "--deploy-mode",
        "cluster",
        "--master",
        "yarn",
        "--driver-memory",
        "4g",
        "--conf",
        "spark.pyspark.python=/opt/fruits-features/venv/bin/python",
        "--conf",
        "spark.pyspark.driver.python=/opt/fruits-features/venv/bin/python",
        "--conf",
        "spark.yarn.maxAppAttempts=1",
        "--py-files",
        f"{artifacts}fruits_features-{package.version}.zip",
        "--files",
        f"s3://{bucket}/artifacts/runs/{run_id}/emr.yaml",
        f"{artifacts}extract_features.py",
        "--config",
        "emr.yaml",
        "--input",
        f"s3://{bucket}/images/",
        "--output",
        f"s3://{bucket}/features/",
        "--run-id",
        run_id,
        "--set",
        "pca.k=10",
        *tail,
    ]


def keys(s3: Any, bucket: str) -> list[str]:
    return sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def dry_run(package: Package, settings: Path, bucket: str, run_id: str, capsys: Any, *extra: str) -> Any:
    assert submit(*base_args(package, settings, bucket, run_id), "--dry-run", *extra) == 0
    return json.loads(capsys.readouterr().out)


def run_job_flow_of(plan: Any) -> Any:
    """The parameters of the plan's RunJobFlow request."""
    (params,) = [r["parameters"] for r in plan["requests"] if r["operation"] == "RunJobFlow"]
    return params


# --- dry run ---------------------------------------------------------------------------------


def test_dry_run_prints_the_new_cluster_request_and_calls_nothing(
    package: Package, s3, bucket: str, emr_endpoint: str, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    settings = cluster_settings_file(tmp_path, bucket)
    clusters_before = len(emr_backend().clusters)

    plan = dry_run(package, settings, bucket, "dry-1", capsys)

    assert keys(s3, bucket) == []  # nothing uploaded
    assert len(emr_backend().clusters) == clusters_before  # nothing created
    assert plan["output"] == f"s3://{bucket}/features/dry-1/"
    artifacts = f"s3://{bucket}/artifacts/{package.tag}/"
    assert [u["destination"] for u in plan["uploads"]] == [
        *(artifacts + name for name in package.files),
        f"s3://{bucket}/artifacts/runs/dry-1/emr.yaml",
    ]
    security, request = plan["requests"]
    assert (security["operation"], request["operation"]) == ("CreateSecurityConfiguration", "RunJobFlow")
    params = request["parameters"]
    # Encryption at rest for what EMRFS writes (the model with model_transfer hadoop); no local-disk key
    # in the shipped settings. The name carries the content's digest and the cluster uses it.
    assert json.loads(security["parameters"]["SecurityConfiguration"]) == {
        "EncryptionConfiguration": {
            "EnableInTransitEncryption": False,
            "EnableAtRestEncryption": True,
            "AtRestEncryptionConfiguration": {"S3EncryptionConfiguration": {"EncryptionMode": "SSE-S3"}},
        }
    }
    assert re.fullmatch(r"fruits-features-[0-9a-f]{12}", security["parameters"]["Name"])
    assert params["SecurityConfiguration"] == security["parameters"]["Name"]
    assert params["ReleaseLabel"] == "emr-spark-8.0.0"
    assert params["Applications"] == [{"Name": "Spark"}]
    assert params["LogUri"] == f"s3://{bucket}/emr-logs/"
    assert (params["ServiceRole"], params["JobFlowRole"]) == (
        "EMR_DefaultRole_V2",
        "fruits-features-emr-node",
    )
    groups = params["Instances"]["InstanceGroups"]
    assert [(g["InstanceRole"], g["InstanceType"], g["InstanceCount"]) for g in groups] == [
        ("MASTER", "m5.xlarge", 1),
        ("CORE", "m7i.4xlarge", 4),
    ]
    # EMR_DefaultRole_V2's managed policy acts only on resources tagged so: EMR tags what it creates.
    assert params["Tags"] == [
        {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"},
        {"Key": "project", "Value": "fruits-features"},
    ]
    assert params["Instances"]["KeepJobFlowAliveWhenNoSteps"] is False
    assert "AutoTerminationPolicy" not in params  # a one-off cluster ends with its step
    (bootstrap,) = params["BootstrapActions"]
    # conf/emr.yaml's engine, auto: ONNX Runtime and OpenVINO, no TensorFlow and no weights on the nodes.
    assert bootstrap["ScriptBootstrapAction"] == {
        "Path": f"{artifacts}bootstrap-emr.sh",
        "Args": [
            "--artifacts",
            artifacts,
            "--engine",
            "auto",
            "--venv",
            "/opt/fruits-features/venv",
            "--python",
            "python3.11",
        ],
    }
    (step,) = params["Steps"]
    assert step["Name"] == "fruits-features dry-1"
    assert step["ActionOnFailure"] == "CONTINUE"
    assert step["HadoopJarStep"] == {
        "Jar": "command-runner.jar",
        "Args": expected_step_args(package, bucket, "dry-1"),
    }


@pytest.mark.parametrize("engine", sorted(REQUIREMENTS))
def test_each_engines_lock_pins_exactly_its_requirement_set_with_hashes(
    package: Package, engine: str, tmp_path: Path
) -> None:
    lock = tmp_path / lock_name(engine)

    write_lock(package.dist / REQUIREMENTS[engine], lock, "3.11")  # raises when the two differ

    hashes: dict[str, int] = {}  # pin line -> how many hashes follow it
    for line in lock.read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            current = line.split()[0]
            hashes[current] = 0
        elif line.strip().startswith("--hash=sha256:"):
            hashes[current] += 1
    assert len(hashes) == len(read_pins(package.dist / REQUIREMENTS[engine]))
    assert min(hashes.values()) >= 1  # every pin carries the hashes pip will require


def test_a_packed_environment_is_uploaded_and_unpacked_by_the_bootstrap_instead_of_pypi(
    package: Package, bucket: str, emr_endpoint: str, tmp_path: Path, capsys, caplog
) -> None:  # type: ignore[no-untyped-def]
    packed = with_environment(package, tmp_path, "auto")  # conf/emr.yaml's engine
    settings = cluster_settings_file(tmp_path, bucket)

    plan = dry_run(packed, settings, bucket, "dry-packed", capsys)

    artifacts = f"s3://{bucket}/artifacts/{packed.tag}/"
    assert f"{artifacts}environment-auto.tar.gz" in [u["destination"] for u in plan["uploads"]]
    (bootstrap,) = run_job_flow_of(plan)["BootstrapActions"]
    args = bootstrap["ScriptBootstrapAction"]["Args"]
    assert args[args.index("--environment") + 1] == "environment-auto.tar.gz"
    # Another engine's environment would install the wrong libraries: refused before any request.
    assert (
        submit(
            *base_args(packed, settings, bucket, "dry-ort"), "--dry-run", "--set", "model.engine=onnxruntime"
        )
        == 2
    )
    assert "dist/ holds environment-auto.tar.gz but the job's model.engine is onnxruntime" in caplog.text


def test_the_tensorflow_engine_bootstraps_tensorflow_and_points_the_step_at_node_local_weights(
    package: Package, bucket: str, emr_endpoint: str, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    settings = cluster_settings_file(tmp_path, bucket)

    plan = dry_run(package, settings, bucket, "dry-tf", capsys, "--set", "model.engine=tensorflow")

    params = run_job_flow_of(plan)
    artifacts = f"s3://{bucket}/artifacts/{package.tag}/"
    (bootstrap,) = params["BootstrapActions"]
    assert bootstrap["ScriptBootstrapAction"]["Args"] == [
        "--artifacts",
        artifacts,
        "--engine",
        "tensorflow",
        "--venv",
        "/opt/fruits-features/venv",
        "--python",
        "python3.11",
        "--weights",
        WEIGHTS,
        "--weights-path",
        NODE_WEIGHTS,
    ]
    (step,) = params["Steps"]
    expected = expected_step_args(package, bucket, "dry-tf", "--set", f"model.weights={NODE_WEIGHTS}")
    # The job's own --set comes through, then the node-local copy of the weights, last so it wins.
    expected[expected.index("pca.k=10") + 1 : expected.index("pca.k=10") + 1] = [
        "--set",
        "model.engine=tensorflow",
    ]
    assert step["HadoopJarStep"]["Args"] == expected


def test_the_onnx_step_reads_the_configured_s3_onnx_file_without_an_override(
    package: Package, bucket: str, emr_endpoint: str, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    settings = cluster_settings_file(tmp_path, bucket)
    job = yaml.safe_load((ROOT / "conf" / "emr.yaml").read_text())
    assert (job["model"]["engine"], job["model"]["weights"], job["model"]["onnx"]) == (
        "auto",
        WEIGHTS,
        ONNX,
    )
    other = "s3://fruits-artifacts-bucket/models/other.224px.onnx"

    plan = dry_run(package, settings, bucket, "dry-onnx", capsys, "--set", f"model.onnx={other}")

    args = run_job_flow_of(plan)["Steps"][0]["HadoopJarStep"]["Args"]
    # The config (and the job's own --set) name the model files; the plan adds no model override.
    assert [args[i + 1] for i, arg in enumerate(args) if arg == "--set"] == [
        "pca.k=10",
        f"model.onnx={other}",
    ]


def test_a_lite2_step_reads_its_pth_and_its_export_from_s3_and_copies_nothing_to_the_nodes(
    package: Package, bucket: str, emr_endpoint: str, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    settings = cluster_settings_file(tmp_path, bucket)
    models = "s3://fruits-artifacts-bucket/models"
    lite2 = [
        *("--set", "model.backbone=efficientnet_lite2", "--set", "model.image_size=260"),
        *("--set", f"model.weights={models}/efficientnet-lite2-9656183e.pth"),
        *("--set", f"model.onnx={models}/efficientnet-lite2-9656183e.260px.onnx"),
    ]

    plan = dry_run(package, settings, bucket, "dry-lite2", capsys, *lite2)

    params = run_job_flow_of(plan)
    args = params["Steps"][0]["HadoopJarStep"]["Args"]
    assert [args[i + 1] for i, arg in enumerate(args) if arg == "--set"][1:] == lite2[1::2]
    (bootstrap,) = params["BootstrapActions"]
    assert "--weights" not in bootstrap["ScriptBootstrapAction"]["Args"]  # the ONNX engines read S3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ["--set", "model.weights=imagenet"],
            "config key 'model.weights': model.engine=auto on EMR reads the weights from S3",
        ),
        (
            ["--set", "model.onnx=/opt/models/r50.224px.onnx"],
            "config key 'model.onnx': model.engine=auto on EMR reads the ONNX file from S3, "
            "got '/opt/models/r50.224px.onnx'",
        ),
        (
            ["--set", "model.engine=openvino", "--set", "model.weights=imagenet"],
            "config key 'model.weights': model.engine=openvino on EMR reads the weights from S3",
        ),
        (
            ["--set", "model.backbone=efficientnet_lite2", "--set", "model.weights=imagenet"],
            "config key 'model.weights': model.engine=auto on EMR reads the weights from S3 (the nodes "
            "have no copy and no Keras or PyTorch), got 'imagenet': set the s3:// URI of the "
            "EfficientNet-Lite2 weights (efficientnet-lite2-9656183e.pth) the ONNX file was exported from",
        ),
        (
            ["--set", "model.backbone=efficientnet_lite2"],  # conf/emr.yaml's weights are ResNet50's .h5
            "is a .h5 file, ResNet50's kind, but model.backbone is efficientnet_lite2",
        ),
    ],
)
def test_onnxruntime_model_files_outside_s3_are_refused_before_any_upload(
    package: Package,
    s3,
    bucket: str,
    emr_endpoint: str,
    tmp_path: Path,
    caplog,
    change: list[str],
    message: str,
) -> None:  # type: ignore[no-untyped-def]
    settings = cluster_settings_file(tmp_path, bucket)

    assert submit(*base_args(package, settings, bucket, "local-model"), *change) == 2
    (error,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert message in error
    assert keys(s3, bucket) == []


def test_kept_alive_cluster_gets_the_idle_timeout(
    package: Package, bucket: str, emr_endpoint: str, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    settings = cluster_settings_file(tmp_path, bucket, keep_alive=True, idle_timeout_seconds=1800)

    params = run_job_flow_of(dry_run(package, settings, bucket, "dry-2", capsys))

    assert params["Instances"]["KeepJobFlowAliveWhenNoSteps"] is True
    assert params["AutoTerminationPolicy"] == {"IdleTimeout": 1800}


def test_dry_run_for_an_existing_cluster_describes_it_then_adds_the_step(
    package: Package, bucket: str, emr_endpoint: str, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    settings = cluster_settings_file(tmp_path, bucket)

    plan = dry_run(package, settings, bucket, "dry-3", capsys, "--cluster-id", "j-EXAMPLE")

    assert [
        (r["operation"], r["parameters"].get("ClusterId") or r["parameters"]["JobFlowId"])
        for r in plan["requests"]
    ] == [
        ("DescribeCluster", "j-EXAMPLE"),
        ("AddJobFlowSteps", "j-EXAMPLE"),
    ]
    (step,) = plan["requests"][1]["parameters"]["Steps"]
    assert step["HadoopJarStep"]["Args"] == expected_step_args(package, bucket, "dry-3")
    # The cluster was bootstrapped earlier: the plan says which engine the step needs it to have.
    assert any("model.engine=auto) runs on a cluster bootstrapped with any" in n for n in plan["then"])


# --- live submissions against moto ---------------------------------------------------------


def test_submit_creates_the_cluster_it_planned_uploads_the_artifacts_and_waits_for_the_step(
    package: Package, s3, bucket: str, emr_api, tmp_path: Path, recording: Path, capsys, caplog
) -> None:  # type: ignore[no-untyped-def]
    settings = cluster_settings_file(tmp_path, bucket)
    planned_requests = dry_run(package, settings, bucket, "live-1", capsys)["requests"]
    planned = run_job_flow_of({"requests": planned_requests})
    finisher = StepFinisher("fruits-features live-1", "COMPLETED")
    finisher.start()

    with caplog.at_level(logging.INFO):
        code = submit(*base_args(package, settings, bucket, "live-1"))
    finisher.join(5)

    assert code == 0, caplog.text
    # The request EMR received is, field for field, the one the dry run printed.
    (run_job_flow,) = [
        body for operation, body in recorded_emr_requests(recording) if operation == "RunJobFlow"
    ]
    assert run_job_flow == planned
    (created,) = [
        body
        for operation, body in recorded_emr_requests(recording)
        if operation == "CreateSecurityConfiguration"
    ]
    assert created == planned_requests[0]["parameters"]
    assert emr_api.describe_security_configuration(Name=created["Name"])["Name"] == created["Name"]
    # ...and the cluster holds it.
    (cluster_id,) = [
        c.id
        for c in emr_backend().clusters.values()
        if c.steps and c.steps[0].name == "fruits-features live-1"
    ]
    cluster = emr_api.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert cluster["ReleaseLabel"] == "emr-spark-8.0.0"
    assert cluster["LogUri"] == f"s3://{bucket}/emr-logs/"
    groups = emr_api.list_instance_groups(ClusterId=cluster_id)["InstanceGroups"]
    assert sorted(
        (g["InstanceGroupType"], g["InstanceType"], g["RequestedInstanceCount"]) for g in groups
    ) == [
        ("CORE", "m7i.4xlarge", 4),
        ("MASTER", "m5.xlarge", 1),
    ]
    (action,) = emr_api.list_bootstrap_actions(ClusterId=cluster_id)["BootstrapActions"]
    assert action["ScriptPath"] == f"s3://{bucket}/artifacts/{package.tag}/bootstrap-emr.sh"
    assert action["Args"] == planned["BootstrapActions"][0]["ScriptBootstrapAction"]["Args"]
    step = emr_api.describe_step(ClusterId=cluster_id, StepId=finisher.step_id)["Step"]
    assert step["Config"]["Jar"] == "command-runner.jar"
    assert step["Config"]["Args"] == expected_step_args(package, bucket, "live-1")
    # Every artifact is in S3, byte for byte, and the run's job config beside them.
    for name in package.files:
        body = s3.get_object(Bucket=bucket, Key=f"artifacts/{package.tag}/{name}")["Body"].read()
        assert body == (package.dist / name).read_bytes(), name
    config = s3.get_object(Bucket=bucket, Key="artifacts/runs/live-1/emr.yaml")["Body"].read()
    assert config == (ROOT / "conf" / "emr.yaml").read_bytes()
    # It waited: it saw the step running before it completed, and says where things are.
    assert f"step {finisher.step_id}: RUNNING" in caplog.text
    assert f"step {finisher.step_id} on cluster {cluster_id}: COMPLETED" in caplog.text
    assert f"s3://{bucket}/features/live-1/" in caplog.text
    assert f"s3://{bucket}/emr-logs/{cluster_id}/steps/{finisher.step_id}/" in caplog.text


@pytest.fixture
def running_cluster(emr_api, bucket: str) -> str:  # type: ignore[no-untyped-def]
    response = emr_api.run_job_flow(
        Name="long-lived",
        ReleaseLabel="emr-7.13.0",
        LogUri=f"s3n://{bucket}/cluster-logs/",
        Instances={
            "MasterInstanceType": "m5.xlarge",
            "InstanceCount": 1,
            "KeepJobFlowAliveWhenNoSteps": True,
        },
        JobFlowRole="fruits-features-emr-node",
        ServiceRole="EMR_DefaultRole_V2",
    )
    return str(response["JobFlowId"])


def test_step_is_added_to_an_existing_cluster(
    package: Package, s3, bucket: str, emr_api, running_cluster: str, tmp_path: Path, recording: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    settings = cluster_settings_file(tmp_path, bucket)
    finisher = StepFinisher("fruits-features live-2", "COMPLETED")
    finisher.start()

    with caplog.at_level(logging.INFO):
        code = submit(*base_args(package, settings, bucket, "live-2"), "--cluster-id", running_cluster)
    finisher.join(5)

    assert code == 0, caplog.text
    operations = [operation for operation, _ in recorded_emr_requests(recording)]
    assert "RunJobFlow" not in operations
    assert operations[:2] == ["DescribeCluster", "AddJobFlowSteps"]
    assert set(operations[2:]) == {"DescribeStep"}
    (step,) = emr_api.list_steps(ClusterId=running_cluster)["Steps"]
    assert step["Id"] == finisher.step_id
    assert step["Config"]["Args"] == expected_step_args(package, bucket, "live-2")
    assert f"artifacts/{package.tag}/fruits_features-{package.version}.zip" in keys(s3, bucket)
    # The cluster's own log URI (s3n://, as EMR reports it) is where its logs are.
    assert f"s3://{bucket}/cluster-logs/{running_cluster}/steps/{step['Id']}/" in caplog.text


@pytest.mark.parametrize("state", ["FAILED", "CANCELLED", "INTERRUPTED"])
def test_a_step_that_does_not_complete_exits_1_with_its_reason_and_logs(
    package: Package, bucket: str, running_cluster: str, tmp_path: Path, caplog, state: str
) -> None:  # type: ignore[no-untyped-def]
    settings = cluster_settings_file(tmp_path, bucket)
    finisher = StepFinisher(f"fruits-features fail-{state}", state, reason="Step failed with exitCode 1")
    finisher.start()

    with caplog.at_level(logging.INFO):
        code = submit(*base_args(package, settings, bucket, f"fail-{state}"), "--cluster-id", running_cluster)
    finisher.join(5)

    assert code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors[0] == f"step {finisher.step_id} on cluster {running_cluster}: {state}"
    assert "  reason   Step failed with exitCode 1" in errors
    assert any(f"s3://{bucket}/cluster-logs/{running_cluster}/steps/{finisher.step_id}/" in e for e in errors)
    assert not any(e.startswith("  output") for e in errors)  # no result to point at


def test_a_step_cancelled_by_an_ended_cluster_reports_the_cluster_reason(
    package: Package, bucket: str, running_cluster: str, tmp_path: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    settings = cluster_settings_file(tmp_path, bucket)
    finisher = StepFinisher(
        "fruits-features ended",
        "CANCELLED",
        cluster_end=("TERMINATED_WITH_ERRORS", "Bootstrap failure on 2 nodes"),
    )
    finisher.start()

    code = submit(*base_args(package, settings, bucket, "ended"), "--cluster-id", running_cluster)
    finisher.join(5)

    assert code == 1
    assert "reason   cluster TERMINATED_WITH_ERRORS: Bootstrap failure on 2 nodes" in caplog.text


def test_an_ended_cluster_is_refused_before_any_step_is_added(
    package: Package, bucket: str, emr_api, running_cluster: str, tmp_path: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    emr_api.terminate_job_flows(JobFlowIds=[running_cluster])
    settings = cluster_settings_file(tmp_path, bucket)

    code = submit(*base_args(package, settings, bucket, "late"), "--cluster-id", running_cluster)

    assert code == 3
    assert f"cluster {running_cluster} is TERMINATED: it takes no more steps" in caplog.text
    assert emr_api.list_steps(ClusterId=running_cluster)["Steps"] == []


def test_an_unknown_cluster_exits_3_naming_it(
    package: Package, bucket: str, emr_endpoint: str, tmp_path: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    settings = cluster_settings_file(tmp_path, bucket)

    code = submit(*base_args(package, settings, bucket, "nowhere"), "--cluster-id", "j-NOSUCHCLUSTER")

    assert code == 3
    assert "DescribeCluster j-NOSUCHCLUSTER:" in caplog.text


def test_waiting_gives_up_after_the_timeout_with_exit_1(emr_api, running_cluster: str) -> None:  # type: ignore[no-untyped-def]
    (step_id,) = emr_api.add_job_flow_steps(
        JobFlowId=running_cluster,
        Steps=[{"Name": "slow", "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["true"]}}],
    )["StepIds"]

    with pytest.raises(emr.StepNotCompletedError, match=f"step {step_id} .* is still RUNNING"):
        emr.wait_for_step(emr.emr_client(), running_cluster, step_id, poll_seconds=0.01, timeout_seconds=0.05)


# --- refused before any AWS call -----------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--set", "pca.k=0"], "config key 'pca.k'"),
        (["--run-id", "a/b"], "--run-id 'a/b'"),
        (["--cluster-config", "MISSING"], "No such file"),
    ],
)
def test_bad_job_arguments_exit_2_before_any_upload(
    package: Package,
    s3,
    bucket: str,
    emr_endpoint: str,
    tmp_path: Path,
    caplog,
    change: list[str],
    message: str,
) -> None:  # type: ignore[no-untyped-def]
    settings = cluster_settings_file(tmp_path, bucket)
    args = [*base_args(package, settings, bucket, "bad"), *change]
    if "MISSING" in change:
        args[args.index("MISSING")] = str(tmp_path / "missing.yaml")

    assert submit(*args) == 2
    (error,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert message in error
    assert keys(s3, bucket) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cluster": {"colour": "red"}}, "key 'cluster.colour': unknown key"),
        ({"cluster": {"release_label": "emr-6.15.0"}}, "key 'cluster.release_label': expected an EMR 7.x"),
        (
            {"cluster": {"security": {"s3_encryption": "SSE-KMS"}}},
            "key 'cluster.security': s3_kms_key is needed with s3_encryption SSE-KMS",
        ),
        (
            {"cluster": {"security": {"local_disk_kms_key": "my-key"}}},
            "key 'cluster.security.local_disk_kms_key'",
        ),
        ({"cluster": {"release_label": "emr-spark-8.0"}}, "key 'cluster.release_label': expected an EMR 7.x"),
        (
            {"cluster": {"tags": {"for-use-with-amazon-emr-managed-policies": "false"}}},
            "key 'cluster.tags': for-use-with-amazon-emr-managed-policies must be 'true'",
        ),
        ({"cluster": {"primary": {"instance_type": "m5.xlarge", "count": 2}}}, "1 or 3 primary nodes"),
        ({"artifacts_uri": "s3://bucket-only"}, "key 'artifacts_uri': name a prefix inside the bucket"),
        ({"step": {"driver_memory": "lots"}}, "key 'step.driver_memory'"),
    ],
)
def test_bad_cluster_settings_are_one_line_naming_the_key(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    data = yaml.safe_load((ROOT / "conf" / "emr-cluster.yaml").read_text())
    for section, value in change.items():
        if isinstance(value, dict):
            data[section].update(value)
        else:
            data[section] = value
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))

    with pytest.raises(ConfigError) as raised:
        load_settings(path)

    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_security_configuration_encrypts_emrfs_and_given_a_key_the_local_disks() -> None:
    key = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    settings = SecuritySettings(s3_encryption="SSE-KMS", s3_kms_key=key, local_disk_kms_key=key)

    request = security_configuration_request("fruits-features", settings)

    at_rest = json.loads(request["SecurityConfiguration"])["EncryptionConfiguration"][
        "AtRestEncryptionConfiguration"
    ]
    assert at_rest == {
        "S3EncryptionConfiguration": {"EncryptionMode": "SSE-KMS", "AwsKmsKey": key},
        "LocalDiskEncryptionConfiguration": {
            "EncryptionKeyProviderType": "AwsKms",
            "AwsKmsKey": key,
            "EnableEbsEncryption": True,
        },
    }
    # The same content, the same name (reused); other content, another name.
    assert security_configuration_request("fruits-features", settings) == request
    assert security_configuration_request("fruits-features", SecuritySettings())["Name"] != request["Name"]


def test_an_existing_security_configuration_of_the_name_is_reused_and_other_errors_stop() -> None:
    class Emr:
        def __init__(self, message: str) -> None:
            self.message = message

        def create_security_configuration(self, **kwargs: Any) -> dict[str, Any]:
            error = {"Error": {"Code": "InvalidRequestException", "Message": self.message}}
            raise ClientError(error, "CreateSecurityConfiguration")  # type: ignore[arg-type]

    parameters = security_configuration_request("fruits-features", SecuritySettings())
    create_security_configuration(Emr("SecurityConfiguration with name 'x' already exists."), parameters)
    with pytest.raises(
        AwsCallError, match=r"CreateSecurityConfiguration fruits-features-.*: .*not authorized"
    ):
        create_security_configuration(Emr("User is not authorized"), parameters)


def test_the_shipped_cluster_settings_validate() -> None:
    settings = load_settings(ROOT / "conf" / "emr-cluster.yaml")
    assert settings.cluster.release_label == "emr-spark-8.0.0"  # Spark 4.0, the project's own
    assert settings.bootstrap.python == "python3.11"


@pytest.mark.parametrize(
    ("instance_type", "cpu"),
    [
        ("m7i.4xlarge", "amx"),
        ("m7i-flex.2xlarge", "amx"),
        ("r7iz.xlarge", "amx"),
        ("c8i.large", "amx"),
        ("m7a.2xlarge", "avx512_bf16"),
        ("m5.xlarge", "x86"),
        ("m6i.xlarge", "x86"),  # Ice Lake: AVX-512 without BF16
        ("c5n.large", "x86"),
        ("m7g.4xlarge", "graviton"),
        ("c7gn.xlarge", "graviton"),
        ("m6gd.large", "graviton"),
        ("r8g.2xlarge", "graviton"),
    ],
)
def test_the_cpu_of_an_instance_family(instance_type: str, cpu: str) -> None:
    assert cpu_of(instance_type) == cpu


def test_graviton_core_nodes_are_refused_for_openvino_and_the_packed_environment() -> None:
    with pytest.raises(ConfigError, match="OpenVINO has no aarch64 wheel"):
        check_instance("m7g.4xlarge", "auto", packed=False)
    with pytest.raises(ConfigError, match="packed environment holds x86_64 wheels"):
        check_instance("m7g.4xlarge", "onnxruntime", packed=True)
    assert "Graviton" in check_instance("m7g.4xlarge", "onnxruntime", packed=False)
    assert check_instance("m7i.4xlarge", "auto", packed=True).endswith(
        "AMX, so model.engine auto runs OpenVINO bf16"
    )
    assert "ONNX Runtime fp32" in check_instance("m5.4xlarge", "auto", packed=True)


def test_a_graviton_cluster_is_refused_before_any_upload(
    package: Package, s3, bucket: str, emr_endpoint: str, tmp_path: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    settings = cluster_settings_file(
        tmp_path, bucket, core={"instance_type": "m7g.4xlarge", "count": 4, "ebs_volume_gb": 64}
    )

    assert submit(*base_args(package, settings, bucket, "graviton")) == 2

    assert "is Graviton (aarch64): OpenVINO has no aarch64 wheel" in caplog.text
    assert keys(s3, bucket) == []


@pytest.mark.parametrize("release", ["emr-7.14.0", "emr-spark-8.0.0"])
def test_the_current_releases_are_accepted(tmp_path: Path, release: str) -> None:
    data = yaml.safe_load((ROOT / "conf" / "emr-cluster.yaml").read_text())
    data["cluster"]["release_label"] = release
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(data))

    assert load_settings(path).cluster.release_label == release


def test_a_missing_or_changed_package_exits_2_naming_make_package(
    package: Package, s3, bucket: str, emr_endpoint: str, tmp_path: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    settings = cluster_settings_file(tmp_path, bucket)
    changed = tmp_path / "dist"
    shutil.copytree(package.dist, changed)
    (changed / "extract_features.py").write_text("print('not the job')\n")

    missing = [*base_args(package, settings, bucket, "x"), "--dist", str(tmp_path / "nothing")]
    assert submit(*missing) == 2
    assert submit(*[*base_args(package, settings, bucket, "x"), "--dist", str(changed)]) == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "holds no built package (SHA256SUMS is missing): run make package" in errors[0]
    assert "extract_features.py changed after the build: run make package" in errors[1]
    assert keys(s3, bucket) == []


# --- the package ---------------------------------------------------------------------------


def test_each_engine_gets_a_requirement_set_built_listed_and_checksummed(package: Package) -> None:
    assert REQUIREMENTS == {
        "onnxruntime": "requirements-emr-onnxruntime.txt",
        "tensorflow": "requirements-emr-tensorflow.txt",
        "openvino": "requirements-emr-openvino.txt",
        "auto": "requirements-emr-auto.txt",
    }
    assert set(REQUIREMENTS) == set(typing.get_args(Engine))  # every model.engine the job knows
    sums = {line.split("  ", 1)[1] for line in (package.dist / "SHA256SUMS").read_text().splitlines()}
    for name in REQUIREMENTS.values():
        assert name in package.files  # hence uploaded with the rest of dist/
        assert name in sums
    assert not (package.dist / "requirements-emr.txt").exists()


@pytest.mark.parametrize("engine", ["onnxruntime", "tensorflow", "openvino", "auto"])
def test_node_requirements_pin_the_run_time_closure_exactly_as_constraints(
    package: Package, engine: str
) -> None:
    requirements = read_pins(package.dist / REQUIREMENTS[engine])
    constraints = read_pins(ROOT / "constraints.txt")
    assert {name: pin.version for name, pin in requirements.items()} == {
        name: constraints[name].version for name in requirements
    }
    assert {"onnxruntime", "pandas", "pyarrow", "numpy", "pillow", "boto3", "pydantic", "matplotlib"} <= set(
        requirements
    )
    assert not PROVIDED_BY_EMR & set(requirements)  # EMR's own Spark 3.5
    assert not {"moto", "pytest", "mypy", "ruff"} & set(requirements)  # nothing from the dev extra
    assert not {"tf2onnx", "onnx"} & set(requirements)  # nor from the export extras
    assert not {"torch", "efficientnet-lite-pytorch", "triton"} & set(requirements)  # no node needs PyTorch
    assert f"model.engine: {engine}" in (package.dist / REQUIREMENTS[engine]).read_text()


def test_the_onnxruntime_set_is_the_light_one_without_tensorflow_or_what_only_it_needs(
    package: Package,
) -> None:
    light = set(read_pins(package.dist / REQUIREMENTS["onnxruntime"]))
    full = set(read_pins(package.dist / REQUIREMENTS["tensorflow"]))

    assert {"onnxruntime", "flatbuffers", "protobuf", "packaging"} <= light  # ONNX Runtime and its needs
    assert not {"tensorflow", "keras", "tf2onnx", "onnx"} & light
    # TensorFlow's and Keras' own dependencies stay out too.
    assert not {"h5py", "grpcio", "absl-py", "ml-dtypes", "optree", "libclang", "rich", "requests"} & light
    # The tensorflow set is the light one plus the `tensorflow` extra's closure.
    assert light < full
    assert {"tensorflow", "keras", "h5py", "grpcio"} <= full - light
    assert not {"tf2onnx", "onnx"} & full
    assert len(light) < len(full) / 1.5


def test_a_pin_outside_the_declared_range_is_refused(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\ndependencies = ["onnxruntime>=1.17", "pyspark>=3.5"]\n'
        '[project.optional-dependencies]\ntensorflow = ["tensorflow>=2.16,<2.20"]\n'
    )
    onnxruntime = Pin("onnxruntime", "1.32.0")

    with pytest.raises(
        PackageError, match=r"tensorflow==2\.21\.0 is outside the range tensorflow<2\.20,>=2\.16"
    ):
        check_project_ranges([onnxruntime, Pin("tensorflow", "2.21.0")], pyproject, ["tensorflow"])
    check_project_ranges([onnxruntime, Pin("tensorflow", "2.19.0")], pyproject, ["tensorflow"])
    check_project_ranges([onnxruntime], pyproject)  # the extra is not the core's; pyspark comes from EMR
    with pytest.raises(PackageError, match=r"onnxruntime is a dependency in .* but is not pinned"):
        check_project_ranges([], pyproject)
    with pytest.raises(PackageError, match=r"declares no extra 'torch'"):
        check_project_ranges([onnxruntime], pyproject, ["torch"])


def test_the_py_files_archive_carries_the_package_and_nothing_else(package: Package) -> None:
    archive = package.dist / package.archive
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import fruits_features.pipeline as p; "
        "import fruits_features.deploy.emr; print(p.__file__)"
    )

    result = subprocess.run(
        [sys.executable, "-c", probe, str(archive)], capture_output=True, text=True, check=True
    )

    assert result.stdout.strip() == f"{archive}/fruits_features/pipeline.py"
    import zipfile

    with zipfile.ZipFile(archive) as zipped:
        assert {name.split("/")[0] for name in zipped.namelist()} == {"fruits_features"}


def test_load_package_reads_what_build_wrote(package: Package) -> None:
    again = load_package(package.dist)
    assert again == package
    assert package.tag.startswith(f"{package.version}-")
    assert package.wheel in package.files


# --- IAM: the policies grant what the configs need, and no more ----------------------------


def _policy(name: str) -> dict[str, Any]:
    return json.loads((ROOT / "conf" / "iam" / name).read_text())


POLICY_EXAMPLE = {"ACCOUNT_ID": ACCOUNT, "REGION": "us-east-1", "KEY_ID": "example-key"}


class PolicyCheck:
    """Expectations on one policy of conf/iam/, evaluated together by the IAM evaluator
    (tests/iam_eval.py); ``ACCOUNT_ID``, ``REGION`` and ``KEY_ID`` stand for example values."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.policy = json.loads(self._fill(json.dumps(_policy(name))))
        self.cases: list[tuple[bool, IamRequest]] = []

    def _fill(self, text: str) -> str:
        for placeholder, value in POLICY_EXAMPLE.items():
            text = text.replace(placeholder, value)
        return text

    def _add(self, expected: bool, action: str, resource: str, context: dict[str, str] | None) -> None:
        filled = tuple((k, self._fill(v)) for k, v in (context or {}).items())
        self.cases.append((expected, IamRequest(action, self._fill(resource), filled)))

    def allows(self, action: str, resource: str, context: dict[str, str] | None = None) -> None:
        self._add(True, action, resource, context)

    def denies(self, action: str, resource: str, context: dict[str, str] | None = None) -> None:
        self._add(False, action, resource, context)

    def verify(self) -> None:
        decisions = evaluate({self.name: self.policy}, [request for _, request in self.cases])
        wrong = [
            f"{'denied' if expected else 'allowed'}: {d.request}"
            for (expected, _), d in zip(self.cases, decisions, strict=True)
            if d.allowed != expected
        ]
        assert not wrong, f"{self.name}:\n" + "\n".join(wrong)


def test_job_policy_covers_exactly_the_configured_input_output_and_weights() -> None:
    policy = PolicyCheck("job-policy.json")
    for name in ("emr", "ec2"):
        config = yaml.safe_load((ROOT / "conf" / f"{name}.yaml").read_text())
        source = config["input"]["uri"].removeprefix("s3://")
        target = config["output"]["uri"].removeprefix("s3://")
        bucket, prefix = source.split("/", 1)
        policy.allows("s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": prefix})
        policy.allows("s3:GetObject", f"arn:aws:s3:::{source}Apple Braeburn/r_6_100.jpg")
        out_bucket, out_prefix = target.split("/", 1)
        policy.allows("s3:ListBucket", f"arn:aws:s3:::{out_bucket}", {"s3:prefix": f"{out_prefix}run-1/"})
        policy.allows("s3:PutObject", f"arn:aws:s3:::{target}run-1/features/part-00000.csv")
        # No more: no writing the input, no reading elsewhere, no listing the whole bucket.
        policy.denies("s3:PutObject", f"arn:aws:s3:::{source}Apple/x.jpg")
        policy.denies("s3:DeleteObject", f"arn:aws:s3:::{target}run-1/_SUCCESS")
        policy.denies("s3:GetObject", f"arn:aws:s3:::{bucket}/other/secret.csv")
        policy.denies("s3:ListBucket", f"arn:aws:s3:::{bucket}", {"s3:prefix": ""})
    for name in ("emr", "ec2"):
        # The model files both engines read: the weights, and the ONNX export the driver checks and
        # every machine downloads (model.onnx, or its default next to the weights).
        model = load_config(ROOT / "conf" / f"{name}.yaml").model
        for location in (model.weights, model.onnx_location()):
            assert location.startswith("s3://"), (name, location)
            policy.allows("s3:GetObject", "arn:aws:s3:::" + location.removeprefix("s3://"))
            policy.denies("s3:GetObject", "arn:aws:s3:::" + location.removeprefix("s3://") + ".x")
            policy.denies("s3:PutObject", "arn:aws:s3:::" + location.removeprefix("s3://"))
    policy.verify()


def test_node_and_submitter_policies_cover_the_artifacts_logs_and_the_two_roles_only() -> None:
    settings = load_settings(ROOT / "conf" / "emr-cluster.yaml")
    artifacts = settings.artifacts_uri.removeprefix("s3://")
    logs = settings.cluster.log_uri.removeprefix("s3://")
    node = PolicyCheck("emr-node-policy.json")
    submitter = PolicyCheck("submitter-policy.json")
    node.allows("s3:GetObject", f"arn:aws:s3:::{artifacts}0.1.0-abc/bootstrap-emr.sh")
    node.allows("s3:PutObject", f"arn:aws:s3:::{logs}j-1/steps/s-1/stderr.gz")
    node.denies("s3:PutObject", f"arn:aws:s3:::{artifacts}0.1.0-abc/bootstrap-emr.sh")
    submitter.allows("s3:PutObject", f"arn:aws:s3:::{artifacts}runs/r/emr.yaml")
    submitter.denies("s3:GetObject", f"arn:aws:s3:::{artifacts}runs/r/emr.yaml")
    cluster = "arn:aws:elasticmapreduce:us-east-1:ACCOUNT_ID:cluster/j-1"
    for action in ("AddJobFlowSteps", "DescribeStep", "DescribeCluster", "ListSteps"):
        submitter.allows(f"elasticmapreduce:{action}", cluster)
    submitter.allows("elasticmapreduce:RunJobFlow", "*")
    submitter.allows("elasticmapreduce:CreateSecurityConfiguration", "*")
    submitter.denies("elasticmapreduce:DeleteSecurityConfiguration", "*")
    submitter.denies("elasticmapreduce:TerminateJobFlows", cluster)
    emr_service = {"iam:PassedToService": "elasticmapreduce.amazonaws.com"}
    for role in (settings.cluster.service_role, settings.cluster.instance_profile):
        submitter.allows("iam:PassRole", f"arn:aws:iam::ACCOUNT_ID:role/{role}", emr_service)
    submitter.denies("iam:PassRole", "arn:aws:iam::ACCOUNT_ID:role/Admin", emr_service)
    submitter.denies(
        "iam:PassRole",
        f"arn:aws:iam::ACCOUNT_ID:role/{settings.cluster.service_role}",
        {"iam:PassedToService": "lambda.amazonaws.com"},
    )
    node.verify()
    submitter.verify()


def test_the_service_role_may_pass_the_nodes_role_to_ec2_and_nothing_else() -> None:
    # AmazonEMRServicePolicy_v2 lets EMR pass EMR_EC2_DefaultRole only: the nodes' own role needs
    # this inline statement on the service role.
    settings = load_settings(ROOT / "conf" / "emr-cluster.yaml")
    service = PolicyCheck("emr-service-role-policy.json")
    nodes = f"arn:aws:iam::ACCOUNT_ID:role/{settings.cluster.instance_profile}"
    to_ec2 = {"iam:PassedToService": "ec2.amazonaws.com"}
    service.allows("iam:PassRole", nodes, to_ec2)
    service.denies("iam:PassRole", nodes, {"iam:PassedToService": "lambda.amazonaws.com"})
    service.denies("iam:PassRole", "arn:aws:iam::ACCOUNT_ID:role/Admin", to_ec2)
    service.denies("s3:GetObject", "arn:aws:s3:::fruits-artifacts-bucket/anything")
    service.verify()


def test_the_kms_policy_lets_the_job_encrypt_and_read_through_s3_only() -> None:
    kms = PolicyCheck("job-kms-policy.json")
    key = "arn:aws:kms:REGION:ACCOUNT_ID:key/KEY_ID"
    via_s3 = {"kms:ViaService": "s3.REGION.amazonaws.com"}
    kms.allows("kms:GenerateDataKey", key, via_s3)  # PUT, CreateMultipartUpload
    kms.allows("kms:Decrypt", key, via_s3)  # UploadPart, GET of an encrypted output
    kms.denies("kms:Decrypt", key, {"kms:ViaService": "lambda.REGION.amazonaws.com"})
    kms.denies("kms:Decrypt", "arn:aws:kms:REGION:ACCOUNT_ID:key/other", via_s3)
    kms.denies("kms:ScheduleKeyDeletion", key, via_s3)
    kms.verify()


def test_no_credentials_in_any_deploy_file() -> None:
    files = [
        *(ROOT / "conf").rglob("*.yaml"),
        *(ROOT / "conf" / "iam").glob("*"),
        ROOT / "scripts" / "bootstrap-emr.sh",
        ROOT / "scripts" / "setup-ec2.sh",
    ]
    for path in files:
        text = path.read_text()
        assert "AKIA" not in text, path
        assert "aws_secret_access_key" not in text.lower(), path


def test_the_same_source_builds_the_same_artifact_folder_and_a_change_a_new_one(
    package: Package, tmp_path: Path
) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy2(ROOT / name, root / name)
    for folder in ("src", "jobs", "conf", "scripts"):
        shutil.copytree(
            ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )

    same = build_package(root, tmp_path / "same")
    (root / "src" / "fruits_features" / "features" / "decoding.py").write_text(
        (root / "src" / "fruits_features" / "features" / "decoding.py").read_text() + "\n# changed\n"
    )
    changed = build_package(root, tmp_path / "changed")

    assert same.tag == package.tag
    assert changed.tag != package.tag
