"""The job's command-line contract, through a real `spark-submit` as users and EMR call it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from conftest import sample_classes, spark_submit, upload_sample
from fault_proxy import FaultPlan, FaultProxy
from fruits_features.dev.local_s3 import download_tree, free_port
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


def test_spark_submit_runs_the_job_with_overrides(s3, bucket: str, weights: str, tmp_path: Path) -> None:
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
        "model.image_size=96",
        "--set",
        "model.engine=tensorflow",
    )

    assert result.returncode == 0, result.stdout[-3000:]
    download_tree(s3, S3Uri(bucket, "out/cli-run/"), tmp_path)
    assert (tmp_path / "_SUCCESS").exists()
    frame = pd.concat([pd.read_csv(p) for p in sorted((tmp_path / "features").glob("part-*.csv"))])
    assert list(frame.columns) == ["path", "label", "pc_1", "pc_2", "pc_3"]
    assert len(frame) == 6
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["model"]["image_size"] == 96
    assert manifest["counts"]["featurized"] == 6
    assert "featurized       6" in result.stdout  # the summary is logged
    # A quiet console: the job's own lines and Spark's warnings, none of Spark's INFO lines.
    assert spark_lines(result, "INFO") == []
    assert "INFO fruits_features.pipeline: listed 6 keys" in result.stdout


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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "pca.k=0"], "config key 'pca.k'"),
        (["--set", "model.colour=red"], "config key 'model.colour': unknown key"),
        (["--input", "bucket/images"], "config key 'input.uri'"),
        (["--run-id", "a/b"], "--run-id 'a/b'"),
    ],
)
def test_bad_configuration_exits_2_with_one_line_naming_the_key(args: list[str], message: str) -> None:
    result = submit(*args)
    assert result.returncode == 2
    errors = error_lines(result)
    assert len(errors) == 1
    assert message in errors[0]
    assert "Traceback" not in result.stdout


def test_unreachable_imagenet_download_stops_early_naming_the_setting(
    s3, bucket: str, tmp_path: Path
) -> None:
    upload_sample(s3, bucket, "images", sample_classes(1))
    blocked = {
        "KERAS_HOME": str(tmp_path / "keras"),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
    }

    result = submit(
        "--input",
        f"s3://{bucket}/images/",
        "--output",
        f"s3://{bucket}/out/",
        "--set",
        "model.weights=imagenet",
        env=blocked,
    )

    assert result.returncode == 3
    (error,) = error_lines(result)
    assert "model.weights=imagenet" in error
    assert "FRUITS_WEIGHTS" in error
    assert not s3.list_objects_v2(Bucket=bucket, Prefix="out/").get("KeyCount")


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing bucket", "cannot list s3://no-such-bucket-anywhere/images/: NoSuchBucket"),
        ("empty prefix", "no images (.jpg, .jpeg, .png) in class folders under s3://{bucket}/images/"),
        ("access denied", "cannot list s3://{bucket}/images/: AccessDenied: Access Denied"),
        ("bad endpoint", "cannot list s3://{bucket}/images/: EndpointConnectionError: Could not connect"),
    ],
)
def test_unusable_input_exits_3_naming_the_uri_before_any_work(
    s3, s3_endpoint: str, bucket: str, weights: str, case: str, message: str
) -> None:
    input_uri = f"s3://{bucket}/images/"
    env: dict[str, str] = {}
    if case == "missing bucket":
        input_uri = "s3://no-such-bucket-anywhere/images/"
    elif case == "empty prefix":
        s3.put_object(Bucket=bucket, Key="images/notes.txt", Body=b"nothing to see")
    elif case == "bad endpoint":
        env["AWS_ENDPOINT_URL_S3"] = f"http://127.0.0.1:{free_port()}"
    args = ("--input", input_uri, "--output", f"s3://{bucket}/out/", "--set", f"model.weights={weights}")

    with FaultProxy(s3_endpoint, FaultPlan(deny=(bucket,) if case == "access denied" else ())) as proxy:
        env.setdefault("AWS_ENDPOINT_URL_S3", proxy)
        result = submit(*args, "--set", "s3.max_attempts=2", env=env)

    assert result.returncode == 3
    (error,) = error_lines(result)
    assert message.format(bucket=bucket) in error
    assert "embedded" not in result.stdout  # stopped before Spark's work
