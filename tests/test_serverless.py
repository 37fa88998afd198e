"""EMR Serverless: the plan (what --dry-run prints), the submission against moto's EMR Serverless
API on the local server, the exit codes, and the IAM documents for the submitter and the
execution role, evaluated by the IAM evaluator against the requests the submission made."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy_support import REGION, ROOT, with_environment
from fruits_features.deploy import serverless
from fruits_features.deploy.package import Package
from iam_actions import IamRequest
from iam_eval import ACCOUNT, evaluate

pytestmark = pytest.mark.integration


@pytest.fixture
def endpoint(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """moto's server answers EMR Serverless on the same port as S3."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_EMR_SERVERLESS", s3_endpoint)
    return s3_endpoint


def backend() -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.emrserverless.models import emrserverless_backends

    return emrserverless_backends[DEFAULT_ACCOUNT_ID][REGION]


def settings_file(folder: Path, bucket: str, **application: Any) -> Path:
    """conf/emr-serverless.yaml with its artifacts and logs in ``bucket``, a role of moto's account."""
    data = yaml.safe_load((ROOT / "conf" / "emr-serverless.yaml").read_text())
    data["artifacts_uri"] = f"s3://{bucket}/artifacts/"
    data["run"]["log_uri"] = f"s3://{bucket}/serverless-logs/"
    data["run"]["execution_role_arn"] = f"arn:aws:iam::{ACCOUNT}:role/fruits-features-serverless-job"
    data["application"].update(application)
    path = folder / "emr-serverless.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def submit(package: Package, settings: Path, bucket: str, run_id: str, *extra: str) -> int:
    return serverless.main(
        [
            "submit",
            *("--config", str(ROOT / "conf" / "emr.yaml"), "--serverless-config", str(settings)),
            *("--dist", str(package.dist), "--output", f"s3://{bucket}/features/", "--run-id", run_id),
            *("--poll-seconds", "0.05"),
            *extra,
        ]
    )


@pytest.fixture
def packed(package: Package, tmp_path: Path) -> Package:
    """dist/ with a (stand-in) packed environment for conf/emr.yaml's engine, auto."""
    return with_environment(package, tmp_path, "auto")


def test_dry_run_prints_a_complete_start_job_run_and_calls_nothing(
    packed: Package, s3, bucket: str, endpoint: str, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    applications = len(backend().applications)

    assert submit(packed, settings_file(tmp_path, bucket), bucket, "dry-1", "--dry-run") == 0

    plan = json.loads(capsys.readouterr().out)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert len(backend().applications) == applications
    artifacts = f"s3://{bucket}/artifacts/{packed.tag}/"
    assert [u["destination"] for u in plan["uploads"]] == [
        *(artifacts + name for name in packed.files),
        f"s3://{bucket}/artifacts/runs/dry-1/emr.yaml",
    ]
    find, create, start = plan["requests"]
    assert find["operation"] == "ListApplications"
    assert create["operation"] == "CreateApplication"
    assert (create["parameters"]["releaseLabel"], create["parameters"]["type"]) == (
        "emr-spark-8.0.0",
        "SPARK",
    )
    assert create["parameters"]["autoStopConfiguration"] == {"enabled": True, "idleTimeoutMinutes": 15}
    assert start["operation"] == "StartJobRun"
    params = start["parameters"]
    assert params["executionRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/fruits-features-serverless-job"
    driver = params["jobDriver"]["sparkSubmit"]
    assert driver["entryPoint"] == f"{artifacts}extract_features.py"
    assert driver["entryPointArguments"] == [
        *("--config", "emr.yaml", "--output", f"s3://{bucket}/features/", "--run-id", "dry-1")
    ]
    words = shlex.split(driver["sparkSubmitParameters"])
    conf = dict(words[i + 1].split("=", 1) for i, word in enumerate(words) if word == "--conf")
    # Every process runs the packed environment's Python: no bootstrap, no PyPI.
    assert conf["spark.archives"] == f"{artifacts}environment-auto.tar.gz#environment"
    for key in (
        "spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON",
        "spark.emr-serverless.driverEnv.PYSPARK_PYTHON",
        "spark.emr-serverless.executorEnv.PYSPARK_PYTHON",
    ):
        assert conf[key] == "./environment/bin/python"
    assert conf["spark.executor.memoryOverhead"] == "5g"
    assert words[words.index("--py-files") + 1] == f"{artifacts}{packed.archive}"
    assert words[words.index("--files") + 1] == f"s3://{bucket}/artifacts/runs/dry-1/emr.yaml"
    monitoring = params["configurationOverrides"]["monitoringConfiguration"]
    assert monitoring == {"s3MonitoringConfiguration": {"logUri": f"s3://{bucket}/serverless-logs/"}}
    assert params["executionTimeoutMinutes"] == 360


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (("--set", "classifier.model_transfer=boto3"), "EMR Serverless workers share no folder"),
        (("--set", "model.engine=onnxruntime"), "dist/ holds environment-auto.tar.gz but"),
    ],
)
def test_what_cannot_work_on_serverless_is_refused_before_any_request(
    packed: Package,
    bucket: str,
    endpoint: str,
    tmp_path: Path,
    caplog,
    setting: tuple[str, str],
    message: str,
) -> None:  # type: ignore[no-untyped-def]
    assert submit(packed, settings_file(tmp_path, bucket), bucket, "refused", *setting) == 2
    assert message in caplog.text


def test_a_package_without_a_packed_environment_is_refused(
    package: Package, bucket: str, endpoint: str, tmp_path: Path, caplog
) -> None:  # type: ignore[no-untyped-def]
    assert submit(package, settings_file(tmp_path, bucket), bucket, "bare") == 2
    assert "EMR Serverless runs the packed environment" in caplog.text


def test_submit_creates_the_application_once_starts_the_planned_run_and_waits(
    packed: Package, s3, bucket: str, endpoint: str, tmp_path: Path, capsys, caplog
) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO)
    name = f"fruits-features-{bucket}"  # this test's own application
    # moto's EMR Serverless knows only emr-X.Y.0 labels, not the emr-spark-8 line.
    settings = settings_file(tmp_path, bucket, name=name, release_label="emr-7.13.0")
    assert submit(packed, settings, bucket, "live-1", "--dry-run") == 0
    planned = json.loads(capsys.readouterr().out)["requests"][2]["parameters"]

    assert submit(packed, settings, bucket, "live-1") == 0
    assert submit(packed, settings, bucket, "live-2") == 0

    apps = [a for a in backend().applications.values() if a.name == name]
    assert len(apps) == 1  # created by the first run, reused by the second
    assert apps[0].release_label == "emr-7.13.0"
    runs = backend().job_runs[apps[0].id]
    assert len(runs) == 2
    assert runs[0].job_driver == planned["jobDriver"]  # what the dry run showed is what was sent
    assert runs[0].configuration_overrides == planned["configurationOverrides"]
    assert runs[0].execution_role_arn == planned["executionRoleArn"]
    for name in packed.files:
        body = s3.get_object(Bucket=bucket, Key=f"artifacts/{packed.tag}/{name}")["Body"].read()
        assert body == (packed.dist / name).read_bytes(), name
    assert f"job run {runs[0].id} on application {apps[0].id}: SUCCESS" in caplog.text
    assert (
        f"s3://{bucket}/serverless-logs/applications/{apps[0].id}/jobs/{runs[0].id}/SPARK_DRIVER/"
        in caplog.text
    )


def test_a_failed_run_exits_with_the_jobs_own_exit_code(
    packed: Package, bucket: str, endpoint: str, tmp_path: Path, caplog, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    start = backend().start_job_run

    def failing(*args: Any, **kwargs: Any) -> Any:
        run = start(*args, **kwargs)
        run.state = "FAILED"
        run.state_details = (
            "Job failed, please check complete logs in configured logging destination. ExitCode: 4."
        )
        return run

    monkeypatch.setattr(backend(), "start_job_run", failing)

    settings = settings_file(tmp_path, bucket, name=f"failing-{bucket}", release_label="emr-7.13.0")
    code = submit(packed, settings, bucket, "fails")

    assert code == 4  # the job's "output not writable"
    assert "FAILED" in caplog.text
    assert "ExitCode: 4" in caplog.text


def test_the_submitter_and_execution_role_policies_allow_what_a_submission_does(
    packed: Package, bucket: str, endpoint: str, tmp_path: Path, capsys
) -> None:  # type: ignore[no-untyped-def]
    # The shipped settings: the policies name their artifacts and log prefixes.
    settings = ROOT / "conf" / "emr-serverless.yaml"
    assert submit(packed, settings, bucket, "iam", "--dry-run") == 0
    plan = json.loads(capsys.readouterr().out.replace("ACCOUNT_ID", ACCOUNT))
    app = f"arn:aws:emr-serverless:{REGION}:{ACCOUNT}:/applications/00abcdefghijklmn"
    role = plan["requests"][2]["parameters"]["executionRoleArn"]
    submitter = [
        IamRequest("emr-serverless:ListApplications", "*"),
        IamRequest("emr-serverless:CreateApplication", "*"),
        IamRequest("emr-serverless:TagResource", app),
        IamRequest("emr-serverless:StartJobRun", app),
        IamRequest("emr-serverless:TagResource", f"{app}/jobruns/00abcdefghijklmo"),
        IamRequest("emr-serverless:GetJobRun", f"{app}/jobruns/00abcdefghijklmo"),
        IamRequest("iam:PassRole", role, (("iam:PassedToService", "emr-serverless.amazonaws.com"),)),
        *(IamRequest("s3:PutObject", "arn:aws:s3:::" + u["destination"][5:]) for u in plan["uploads"]),
    ]
    # What the job run reads (entry point, code, environment, config) and writes (its logs).
    driver = plan["requests"][2]["parameters"]["jobDriver"]["sparkSubmit"]
    words = shlex.split(driver["sparkSubmitParameters"])
    reads = [driver["entryPoint"], words[words.index("--py-files") + 1], words[words.index("--files") + 1]]
    reads.append(next(w.split("=", 1)[1].split("#")[0] for w in words if w.startswith("spark.archives=")))
    job = [IamRequest("s3:GetObject", "arn:aws:s3:::" + uri[5:]) for uri in reads]
    job.append(
        IamRequest(
            "s3:PutObject",
            "arn:aws:s3:::fruits-artifacts-bucket/serverless-logs/applications/x/jobs/y/SPARK_DRIVER/stderr.gz",
        )
    )
    denied_by = {
        "serverless-submitter-policy": [
            d for d in evaluate(policy("serverless-submitter-policy"), submitter) if not d.allowed
        ],
        "serverless-job-policy": [
            d for d in evaluate(policy("serverless-job-policy"), job, role) if not d.allowed
        ],
    }
    assert denied_by == {"serverless-submitter-policy": [], "serverless-job-policy": []}
    # And no more: another role, another service, deleting applications.
    others = [
        IamRequest(
            "iam:PassRole",
            f"arn:aws:iam::{ACCOUNT}:role/Admin",
            (("iam:PassedToService", "emr-serverless.amazonaws.com"),),
        ),
        IamRequest("iam:PassRole", role, (("iam:PassedToService", "lambda.amazonaws.com"),)),
        IamRequest("emr-serverless:DeleteApplication", app),
    ]
    assert not [d for d in evaluate(policy("serverless-submitter-policy"), others) if d.allowed]


def policy(name: str) -> dict[str, Any]:
    text = (ROOT / "conf" / "iam" / f"{name}.json").read_text().replace("ACCOUNT_ID", ACCOUNT)
    return {name: json.loads(text)}


def test_the_execution_role_trusts_emr_serverless_for_this_account_only() -> None:
    (statement,) = json.loads((ROOT / "conf" / "iam" / "serverless-trust-policy.json").read_text())[
        "Statement"
    ]
    assert statement["Principal"] == {"Service": "emr-serverless.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": "ACCOUNT_ID"}
