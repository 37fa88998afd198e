"""The feature job and the scoring job on a real Spark standalone cluster (a master and two workers
on 127.0.0.1, each worker its own JVM with one executor), through ``spark-submit --master spark://``,
against the local S3 endpoint: what a non-local master changes is exercised here, not only on EMR.

- the executors reach S3 only through ``spark.executorEnv.AWS_ENDPOINT_URL_S3`` (the workers'
  environment has credentials but no endpoint);
- both workers' executors run tasks (Spark's event log says which executor ran each task);
- the executors' Python is the packed environment ``make package`` builds
  (``--archives dist/environment-onnxruntime.tar.gz#environment``,
  ``spark.pyspark.python=./environment/bin/python``), with only Spark's own Python package beside
  it, as EMR's Spark and EMR Serverless provide it;
- the classifier's model goes through ``classifier.model_transfer: boto3`` with a
  ``classifier.staging_dir`` that driver and executors share (all run on this machine), and is
  refused without one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from conftest import ROOT, sample_classes, spark_submit, upload_sample
from fruits_features.deploy.package import build_package
from fruits_features.io.folders import download_folder
from fruits_features.io.uri import S3Uri
from fruits_features.stages.model_store import staged_pipeline_gaps

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLASSES = sample_classes(6)  # 12 images: 6 train the classifier, 6 test it
IMAGE_SIZE = 64
K = 5
PARTITIONS = 4  # the embed stage's tasks: two per executor (unset, 12 images would make one)


def job_args(bucket: str, run_id: str, weights: str, onnx: str, staging: Path | None) -> list[str]:
    """The arguments both jobs share: the bucket's folders, the run id, the model at 64 px."""
    settings = [
        f"model.weights={weights}",
        f"model.onnx={onnx}",
        f"model.image_size={IMAGE_SIZE}",
        f"pca.k={K}",
        f"spark.partitions={PARTITIONS}",
        "classifier.enabled=true",
        "classifier.model_transfer=boto3",
        "report.enabled=false",
    ]
    if staging is not None:
        settings.append(f"classifier.staging_dir={staging}")
    return [
        *("--input", f"s3://{bucket}/images/", "--run-id", run_id),
        *[item for setting in settings for item in ("--set", setting)],
    ]


@pytest.fixture(scope="module")
def packed_environment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``spark-submit --conf`` items that run the executors from the onnxruntime engine's packed
    environment, built by ``make package``'s code with this machine's Python at its own prefix (on
    EMR: /usr). The archive holds no pyspark: as EMR's Spark does, the workers get Spark's Python
    package alone on PYTHONPATH (a folder with just pyspark and py4j), so a library missing from
    the archive fails the run instead of being found in the test's own venv."""
    import py4j
    import pyspark

    base = Path(sys.base_prefix)
    python = base / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    package = build_package(
        ROOT,
        tmp_path_factory.mktemp("packed") / "dist",
        environment="onnxruntime",
        environment_python=str(python),
        python_prefix=str(base),
    )
    assert package.environment == "environment-onnxruntime.tar.gz"
    spark_only = tmp_path_factory.mktemp("spark-python")
    for module in (pyspark, py4j):
        (spark_only / module.__name__).symlink_to(Path(module.__file__).parent)
    return {
        "spark.archives": f"{package.dist / package.environment}#environment",
        "spark.pyspark.python": "./environment/bin/python",
        "spark.pyspark.driver.python": sys.executable,
        "spark.executorEnv.PYTHONPATH": str(spark_only),
    }


def cluster_conf(endpoint: str, events: Path) -> dict[str, str]:
    """What a non-local master needs (the S3 endpoint for the executors), plus an event log that
    records which executor ran each task, and a start once both executors are registered."""
    return {
        "spark.executorEnv.AWS_ENDPOINT_URL_S3": endpoint,
        "spark.scheduler.minRegisteredResourcesRatio": "1.0",
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": events.as_uri(),
        "spark.eventLog.compress": "false",
        "spark.eventLog.rolling.enabled": "false",
    }


def submit(job: str, args: list[str], master: str, conf: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return spark_submit(*args, master=master, conf=conf, job=job, env={"SPARK_LOCAL_IP": "127.0.0.1"})


def tasks_per_worker(events: Path) -> dict[str, int]:
    """Successful tasks per worker (its web UI's port, from its executor's log URLs) in the one
    application whose event log is in ``events``."""
    (log,) = [p for p in events.rglob("*") if p.is_file()]
    worker_of: dict[str, str] = {}
    tasks: dict[str, int] = {}
    for line in log.read_text().splitlines():
        event = json.loads(line)
        if event["Event"] == "SparkListenerExecutorAdded":
            url = event["Executor Info"]["Log Urls"]["stderr"]
            worker_of[event["Executor ID"]] = re.match(r"http://[^/]+:(\d+)/", url).group(1)  # type: ignore[union-attr]
        elif event["Event"] == "SparkListenerTaskEnd" and event["Task End Reason"]["Reason"] == "Success":
            worker = worker_of[event["Task Info"]["Executor ID"]]
            tasks[worker] = tasks.get(worker, 0) + 1
    return tasks


def read_parts(folder: Path) -> pd.DataFrame:
    frames = [pd.read_csv(p, keep_default_na=False) for p in sorted(folder.glob("part-*.csv"))]
    return pd.concat(frames, ignore_index=True).sort_values("path").reset_index(drop=True)


@pytest.fixture(scope="module")
def cluster_runs(
    standalone_cluster: str,
    s3_endpoint: str,
    s3,
    weights: str,
    onnx_file_64: str,
    packed_environment: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """The feature job, then the scoring job with its model, both on the cluster, the executors
    running the packed environment."""
    bucket = "cluster-run"
    s3.create_bucket(Bucket=bucket)
    uploaded = upload_sample(s3, bucket, "images", CLASSES)
    staging = tmp_path_factory.mktemp("model-staging")
    runs: dict[str, Any] = {"bucket": bucket, "uploaded": uploaded, "staging": staging}
    for job, run_id, extra in [
        ("extract_features", "train", ["--output", f"s3://{bucket}/features/"]),
        (
            "score",
            "score",
            ["--output", f"s3://{bucket}/scores/", "--model", f"s3://{bucket}/features/train/model/"],
        ),
    ]:
        events = tmp_path_factory.mktemp(f"events-{run_id}")
        result = submit(
            job,
            [*job_args(bucket, run_id, weights, onnx_file_64, staging), *extra],
            standalone_cluster,
            {**cluster_conf(s3_endpoint, events), **packed_environment},
        )
        (tmp_path_factory.getbasetemp() / f"cluster-{run_id}.log").write_text(result.stdout)
        assert result.returncode == 0, f"{job} on {standalone_cluster}:\n{result.stdout[-6000:]}"
        local = tmp_path_factory.mktemp(run_id)
        prefix = "features" if job == "extract_features" else "scores"
        download_folder(s3, S3Uri(bucket, f"{prefix}/{run_id}/"), local)
        runs[run_id] = {"local": local, "events": events, "log": result.stdout}
    return runs


def test_the_feature_job_writes_every_image_on_the_cluster(
    cluster_runs: dict[str, Any], standalone_cluster: str
) -> None:
    local = cluster_runs["train"]["local"]
    assert (local / "_SUCCESS").exists()
    features = read_parts(local / "features")
    assert len(features) == cluster_runs["uploaded"] == 2 * len(CLASSES)
    assert {"path", "label"} <= set(features.columns)
    assert [c for c in features.columns if c.startswith("pc_")] == [f"pc_{i}" for i in range(1, K + 1)]
    assert features.filter(like="pc_").notna().all().all()
    assert sorted(set(features["label"])) == CLASSES
    manifest = json.loads((local / "manifest.json").read_text())
    assert manifest["status"] == "succeeded"
    assert manifest["spark"]["master"] == standalone_cluster
    assert manifest["counts"]["featurized"] == len(features)
    assert manifest["spark"]["partitions"] == PARTITIONS
    assert sum(manifest["model"]["executors"].values()) == PARTITIONS  # each embed task ran the engine


def test_the_executors_ran_the_packed_environment(
    cluster_runs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Spark unpacked the archive into each executor's work folder, and ran its interpreter there
    # (spark.pyspark.python): a run whose executors could not start it would have failed.
    unpacked = sorted(tmp_path_factory.getbasetemp().glob("standalone*/**/app-*/*/environment/bin/python"))
    applications = {path.parents[3].name for path in unpacked}
    assert len(applications) >= 2, unpacked  # both runs: the feature job and the scoring job
    assert len(unpacked) >= 4, unpacked  # two executors each
    assert all(
        "onnxruntime" in {p.name for p in path.parents[1].glob("lib/python3*/site-packages/*")}
        for path in unpacked
    )


def test_both_workers_ran_tasks(cluster_runs: dict[str, Any]) -> None:
    for run_id in ("train", "score"):
        tasks = tasks_per_worker(cluster_runs[run_id]["events"])
        assert len(tasks) == 2, (run_id, tasks)
        assert min(tasks.values()) >= 1, (run_id, tasks)


def test_the_model_is_saved_through_the_shared_staging_folder(cluster_runs: dict[str, Any]) -> None:
    model = cluster_runs["train"]["local"] / "model"
    info = json.loads((model / "model.json").read_text())
    assert (info["image_size"], info["k"], info["labels"]) == (IMAGE_SIZE, K, CLASSES)
    assert staged_pipeline_gaps(model / "pipeline") == []  # the metadata and every stage's files
    stages = sorted(p.name.split("_")[1] for p in (model / "pipeline" / "stages").iterdir())
    assert {"StandardScaler", "PCA", "LogisticRegression"} <= set(stages), stages
    manifest = json.loads((cluster_runs["train"]["local"] / "manifest.json").read_text())
    assert manifest["classifier"]["status"] == "trained"
    assert not list(cluster_runs["staging"].iterdir())  # the staged copy is gone after the upload


def test_the_scoring_job_scores_every_image_with_the_saved_model(
    cluster_runs: dict[str, Any], standalone_cluster: str
) -> None:
    local = cluster_runs["score"]["local"]
    assert (local / "_SUCCESS").exists()
    scored = read_parts(local / "predictions")
    features = read_parts(cluster_runs["train"]["local"] / "features")
    assert scored["path"].tolist() == features["path"].tolist()
    assert scored["label"].tolist() == features["label"].tolist()
    assert set(scored["predicted"]) <= set(CLASSES)
    assert scored["probability"].between(0, 1).all()
    manifest = json.loads((local / "manifest.json").read_text())
    assert manifest["spark"]["master"] == standalone_cluster
    assert manifest["scoring_model"]["uri"] == f"s3://{cluster_runs['bucket']}/features/train/model/"
    trained = read_parts(cluster_runs["train"]["local"] / "predictions")
    assert scored["predicted"].tolist() == trained["predicted"].tolist()  # the same model, the same answers


def test_staging_the_model_without_a_shared_folder_is_refused_on_the_cluster(
    standalone_cluster: str, s3_endpoint: str, bucket: str, weights: str, onnx_file_64: str, tmp_path: Path
) -> None:
    args = [*job_args(bucket, "refused", weights, onnx_file_64, None), "--output", f"s3://{bucket}/features/"]

    result = submit("extract_features", args, standalone_cluster, cluster_conf(s3_endpoint, tmp_path))

    assert result.returncode == 2, result.stdout[-4000:]
    errors = [line for line in result.stdout.splitlines() if "classifier.staging_dir" in line]
    assert len(errors) == 1, result.stdout[-4000:]
    assert standalone_cluster in errors[0]
