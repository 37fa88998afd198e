"""S3 faults, a killed Python worker, and secrets: the job still produces the fault-free output.

One run through spark-submit meets them all at once; it is compared with a clean in-process run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conftest import read_rejects, sample_classes, spark_submit, upload_sample
from fault_proxy import FaultPlan, FaultProxy
from fruits_features import pipeline
from fruits_features.config_files import build_config
from fruits_features.features.udf import INJECT_WORKER_KILL
from fruits_features.io.folders import download_folder
from fruits_features.io.uri import S3Uri

pytestmark = pytest.mark.integration

ACCESS_KEY = "AKIAFRUITSTESTKEY042"
SECRET_KEY = "fruitsSecretValue/DoNotLog+0123456789abcdef"
OWNER = "123456789012"
KMS_KEY = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
PARTITIONS = 3


def features_of(s3, bucket: str, run_id: str, local: Path) -> pd.DataFrame:
    download_folder(s3, S3Uri(bucket, f"out/{run_id}/"), local)
    return read_features(local)


def read_features(local: Path) -> pd.DataFrame:
    assert (local / "_SUCCESS").exists()
    parts = sorted((local / "features").glob("part-*.csv"))
    frame = pd.concat([pd.read_csv(p, float_precision="round_trip") for p in parts])
    return frame.sort_values("path").reset_index(drop=True)


def model_section(weights: str, image_size: int, onnx: str | None) -> dict[str, Any]:
    """The default engine with ``onnx``; TensorFlow without."""
    engine = {"onnx": onnx} if onnx else {"engine": "tensorflow"}
    return {"weights": weights, "image_size": image_size, **engine}


def clean_run(
    spark, s3, bucket: str, weights: str, image_size: int, tmp_path: Path, onnx: str | None = None
) -> pd.DataFrame:
    config = build_config(
        {
            "input": {"uri": f"s3://{bucket}/images/"},
            "output": {"uri": f"s3://{bucket}/out/"},
            "model": model_section(weights, image_size, onnx),
            "pca": {"k": 3},
            "spark": {"partitions": PARTITIONS},
        }
    )
    pipeline.run(spark, config, "clean")
    return features_of(s3, bucket, "clean", tmp_path / "clean")


def job_args(bucket: str, weights: str, run_id: str, image_size: int, onnx: str | None = None) -> list[str]:
    model = model_section(weights, image_size, onnx)
    return [
        *("--input", f"s3://{bucket}/images/", "--output", f"s3://{bucket}/out/", "--run-id", run_id),
        *[arg for key, value in model.items() for arg in ("--set", f"model.{key}={value}")],
        *("--set", "pca.k=3", "--set", f"spark.partitions={PARTITIONS}"),
    ]


def assert_same_output(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert got["path"].tolist() == expected["path"].tolist()
    assert got["label"].tolist() == expected["label"].tolist()
    np.testing.assert_allclose(
        got.filter(like="pc_").to_numpy(), expected.filter(like="pc_").to_numpy(), rtol=1e-9, atol=1e-9
    )


@pytest.fixture(scope="module")
def faulty_run(
    spark, s3, s3_endpoint: str, weights: str, onnx_file_64: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    bucket = "faults-s3"
    s3.create_bucket(Bucket=bucket)
    upload_sample(s3, bucket, "images", sample_classes(8))
    local = tmp_path_factory.mktemp("faults")
    expected = clean_run(spark, s3, bucket, weights, 64, local, onnx_file_64)
    plan = FaultPlan(every=4)  # a quarter of the requests of each method
    with FaultProxy(s3_endpoint, plan) as proxy:
        # local[2,4]: a failed task is tried up to four times, as on a cluster; partition 0's first
        # attempt kills its own Python worker after its first batch (udf.INJECT_WORKER_KILL).
        result = spark_submit(
            *job_args(bucket, weights, "faulty", 64, onnx_file_64),
            *("--set", "output.sse=aws:kms", "--set", f"output.kms_key_id={KMS_KEY}"),
            *("--set", f"s3.expected_bucket_owner={OWNER}", "--set", "s3.retry_mode=standard"),
            env={
                "AWS_ENDPOINT_URL_S3": proxy,
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                INJECT_WORKER_KILL: "0",
            },
            master="local[2,4]",
        )
    if result.returncode == 0:
        download_folder(s3, S3Uri(bucket, "out/faulty/"), local / "faulty")
    return {"bucket": bucket, "local": local, "expected": expected, "plan": plan, "result": result}


def test_throttling_and_dropped_connections_give_the_fault_free_output(
    faulty_run: dict[str, Any], s3
) -> None:
    result, plan = faulty_run["result"], faulty_run["plan"]
    assert result.returncode == 0, result.stdout[-3000:]
    # Faults hit reads and writes, of every kind.
    assert plan.faults["GET slowdown"] > 0
    assert plan.faults["GET drop"] > 0
    assert plan.faults["GET truncate"] > 0
    assert plan.faults["PUT slowdown"] + plan.faults["PUT drop"] > 0
    got = read_features(faulty_run["local"] / "faulty")
    assert_same_output(got, faulty_run["expected"])
    assert read_rejects(faulty_run["local"] / "faulty").empty


def test_every_request_names_the_expected_bucket_owner(faulty_run: dict[str, Any]) -> None:
    requests = faulty_run["plan"].requests
    assert len(requests) > 50
    missing = [
        f"{r.method} {r.path}" for r in requests if r.headers.get("x-amz-expected-bucket-owner") != OWNER
    ]
    assert missing == []


def test_outputs_are_written_with_the_configured_kms_key(faulty_run: dict[str, Any], s3) -> None:
    puts = [r for r in faulty_run["plan"].requests if r.method == "PUT"]
    assert puts
    for request in puts:
        assert request.headers.get("x-amz-server-side-encryption") == "aws:kms"
        assert request.headers.get("x-amz-server-side-encryption-aws-kms-key-id") == KMS_KEY
    head = s3.head_object(Bucket=faulty_run["bucket"], Key="out/faulty/manifest.json")
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == KMS_KEY


def test_no_credentials_or_signatures_in_logs_or_manifest(faulty_run: dict[str, Any]) -> None:
    assert faulty_run["result"].returncode == 0, faulty_run["result"].stdout[-3000:]
    texts = {
        "log": faulty_run["result"].stdout,
        "manifest": (faulty_run["local"] / "faulty" / "manifest.json").read_text(),
    }
    for name, text in texts.items():
        for secret in (ACCESS_KEY, SECRET_KEY, "X-Amz-Signature", "X-Amz-Credential", "Signature="):
            assert secret not in text, f"{secret!r} found in the {name}"
    manifest = json.loads(texts["manifest"])
    assert manifest["config"]["s3"]["expected_bucket_owner"] == OWNER  # config is there, secrets are not


def test_a_python_worker_killed_mid_embed_is_retried_and_the_output_is_unchanged(
    faulty_run: dict[str, Any], s3
) -> None:
    """The fault run's partition 0 killed its own Python worker after its first batch on its first
    attempt (FRUITS_INJECT_WORKER_KILL): the task was retried, and nothing was lost or doubled."""
    result = faulty_run["result"]
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Lost task 0.0 in stage" in result.stdout, result.stdout[-3000:]
    manifest = json.loads((faulty_run["local"] / "faulty" / "manifest.json").read_text())
    images = len(faulty_run["expected"])
    # The killed attempt's counts never reach the driver: only the retry's.
    assert manifest["counts"]["model_images"] == manifest["counts"]["featurized"] == images
    assert_same_output(read_features(faulty_run["local"] / "faulty"), faulty_run["expected"])
