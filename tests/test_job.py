"""The job's command-line contract, through a real `spark-submit` as users and EMR call it."""

from __future__ import annotations

import json
import logging
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from conftest import run_job_in_process, sample_classes, spark_submit, upload_sample
from fault_proxy import FaultPlan, FaultProxy
from fruits_features import pipeline
from fruits_features.config_files import build_config
from fruits_features.dev.local_s3 import free_port
from fruits_features.errors import InputError, WeightsUnavailableError
from fruits_features.io.folders import download_folder
from fruits_features.io.uri import S3Uri

pytestmark = pytest.mark.integration


def submit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return spark_submit(*args, env=env)


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if " ERROR extract_features: " in line]


# Spark's own log layout (log4j2): "26/12/01 21:38:58 INFO SparkContext: Running Spark version 4.0.5".
SPARK_LINE = re.compile(r"^\d\d/\d\d/\d\d \d\d:\d\d:\d\d (?P<level>[A-Z]+) ")


def spark_lines(result: subprocess.CompletedProcess[str], level: str) -> list[str]:
    return [
        line
        for line in result.stdout.splitlines()
        if (match := SPARK_LINE.match(line)) and match["level"] == level
    ]


def test_spark_submit_runs_the_job_with_overrides(
    s3, bucket: str, weights: str, onnx_file: str, tmp_path: Path
) -> None:
    upload_sample(s3, bucket, "photos", sample_classes(3))

    result = submit(
        "--input",
        f"s3://{bucket}/photos/",
        "--output",
        f"s3://{bucket}/out/",
        "--run-id",
        "cli-run",
        "--set",
        f"model.weights={weights}",
        "--set",
        "pca.k=3",
        "--set",
        "model.batch_size=4",
        "--set",
        f"model.onnx={onnx_file}",
        "--set",
        "classifier.enabled=false",  # its stages and the report's are tested in process
        "--set",
        "report.enabled=false",
    )

    assert result.returncode == 0, result.stdout[-3000:]
    download_folder(s3, S3Uri(bucket, "out/cli-run/"), tmp_path)
    assert (tmp_path / "_SUCCESS").exists()
    frame = pd.concat([pd.read_csv(p) for p in sorted((tmp_path / "features").glob("part-*.csv"))])
    assert list(frame.columns) == ["path", "label", "pc_1", "pc_2", "pc_3"]
    assert len(frame) == 6
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["model"]["batch_size"] == 4
    assert manifest["counts"]["model_batches"] >= 2  # 6 images in batches of at most 4
    assert manifest["counts"]["featurized"] == 6
    assert "featurized       6" in result.stdout  # the summary is logged
    # A quiet console: the job's own lines and Spark's warnings, none of Spark's INFO lines.
    assert spark_lines(result, "INFO") == []
    assert "INFO fruits_features.stages.preflight: listed 6 keys" in result.stdout


def test_verbose_brings_back_sparks_info_lines(s3, bucket: str, weights: str) -> None:
    args = (
        "--input",
        f"s3://{bucket}/empty/",
        "--output",
        f"s3://{bucket}/out/",
        "--set",
        f"model.weights={weights}",
    )

    # Spark starts, then the job finds no images: exit 3. (The quiet default: the run above.)
    result = submit(*args, "--verbose")

    assert result.returncode == 3, result.stdout[-3000:]
    assert len(error_lines(result)) == 1
    info = spark_lines(result, "INFO")
    assert len(info) >= 10
    assert any("INFO SparkContext: Running Spark version" in line for line in info)


def test_unreachable_imagenet_download_stops_early_naming_the_setting(
    spark, s3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process: Keras' download goes through an HTTPS proxy that refuses, with an empty cache."""
    upload_sample(s3, bucket, "images", sample_classes(1))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    config = build_config(
        {
            "input": {"uri": f"s3://{bucket}/images/"},
            "output": {"uri": f"s3://{bucket}/out/"},
            "model": {"weights": "imagenet"},
        }
    )

    with pytest.raises(WeightsUnavailableError) as raised:
        pipeline.run(spark, config, "no-weights")

    assert raised.value.exit_code == 3
    assert "model.weights=imagenet" in str(raised.value)
    assert "FRUITS_WEIGHTS" in str(raised.value)
    assert not s3.list_objects_v2(Bucket=bucket, Prefix="out/").get("KeyCount")


@pytest.mark.parametrize(
    ("input_uri", "message"),
    [
        (
            "s3://no-such-bucket-anywhere/images/",
            "cannot list s3://no-such-bucket-anywhere/images/: NoSuchBucket",
        ),
        (
            "s3://{bucket}/images/",
            "no images (.jpg, .jpeg, .png) in class folders under s3://{bucket}/images/",
        ),
    ],
    ids=["missing bucket", "empty prefix"],
)
def test_unusable_input_is_an_input_error_before_any_work(
    spark, s3, bucket: str, weights: str, input_uri: str, message: str
) -> None:
    """In process (the exit code is the error's; the spark-submit cases below check the command)."""
    s3.put_object(Bucket=bucket, Key="images/notes.txt", Body=b"nothing to see")
    config = build_config(
        {
            "input": {"uri": input_uri.format(bucket=bucket)},
            "output": {"uri": f"s3://{bucket}/out/"},
            "model": {"weights": weights, "engine": "tensorflow"},
        }
    )

    with pytest.raises(InputError) as raised:
        pipeline.run(spark, config, "unusable")

    assert raised.value.exit_code == 3
    assert message.format(bucket=bucket) in str(raised.value)
    assert not s3.list_objects_v2(Bucket=bucket, Prefix="out/").get("KeyCount")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("access denied", "cannot list s3://{bucket}/images/: AccessDenied: Access Denied"),
        ("bad endpoint", "cannot list s3://{bucket}/images/: EndpointConnectionError: Could not connect"),
    ],
)
def test_unusable_input_exits_3_naming_the_uri_before_any_work(
    spark,
    s3,
    s3_endpoint: str,
    bucket: str,
    weights: str,
    case: str,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The job's main in process (the exit code as spark-submit would return it)."""
    input_uri = f"s3://{bucket}/images/"
    args = ("--input", input_uri, "--output", f"s3://{bucket}/out/", "--set", f"model.weights={weights}")

    with FaultProxy(s3_endpoint, FaultPlan(deny=(bucket,) if case == "access denied" else ())) as proxy:
        endpoint = f"http://127.0.0.1:{free_port()}" if case == "bad endpoint" else proxy
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
        code, logged = run_job_in_process(
            "extract_features",
            *args,
            "--set",
            "s3.max_attempts=2",
            spark=spark,
            monkeypatch=monkeypatch,
            caplog=caplog,
        )

    assert code == 3
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert message.format(bucket=bucket) in errors[0]
    assert not any("embedded" in line for line in logged)  # stopped before Spark's work
    assert not s3.list_objects_v2(Bucket=bucket, Prefix="out/").get("KeyCount")
