"""The job's command-line contract, through a real `spark-submit` as users and EMR call it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, sample_classes, upload_sample
from fruits_features.local_s3 import download_tree
from fruits_features.storage import S3Uri

pytestmark = pytest.mark.integration

SPARK_SUBMIT = Path(sys.executable).with_name("spark-submit")


def submit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [
        str(SPARK_SUBMIT),
        "--master",
        "local[2]",
        str(ROOT / "jobs" / "extract_features.py"),
        "--config",
        str(ROOT / "conf" / "local.yaml"),
        *args,
    ]
    full_env = {
        **os.environ,
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        **(env or {}),
    }
    # spark-submit forwards the Python driver's stderr to its stdout: read both as one stream.
    return subprocess.run(
        command,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stdout.splitlines() if " ERROR extract_features: " in line]


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
    ("input_uri", "message"),
    [
        (
            "s3://no-such-bucket-anywhere/images/",
            "cannot list s3://no-such-bucket-anywhere/images/: NoSuchBucket",
        ),
        ("EMPTY", "no images (.jpg, .jpeg, .png) in class folders under"),
    ],
)
def test_unusable_input_exits_3_naming_the_uri(
    s3, bucket: str, weights: str, input_uri: str, message: str
) -> None:
    if input_uri == "EMPTY":
        s3.put_object(Bucket=bucket, Key="images/notes.txt", Body=b"nothing to see")
        input_uri = f"s3://{bucket}/images/"

    result = submit(
        "--input", input_uri, "--output", f"s3://{bucket}/out/", "--set", f"model.weights={weights}"
    )

    assert result.returncode == 3
    (error,) = error_lines(result)
    assert message in error
