"""The whole job on a real local S3 endpoint and a local SparkSession, with real images and weights."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conftest import SAMPLE_DIR, read_rejects, sample_classes, upload_sample
from fruits_features import pipeline
from fruits_features.config_files import build_config
from fruits_features.dev.inventory_report import entries_of, write_inventory
from fruits_features.errors import OutputError
from fruits_features.features.udf import EmbedCounters
from fruits_features.io.folders import download_folder
from fruits_features.io.listing import list_images
from fruits_features.io.loading import keys_frame
from fruits_features.io.uri import S3Uri
from fruits_features.settings import embed_spec, s3_settings
from fruits_features.stages.embed import embed_images
from fruits_features.stages.reduce import component_signs

pytestmark = pytest.mark.integration

CLASSES = sample_classes(40)  # 80 images: more rows than the 50 components
K = 50


def keras_features(paths: list[Path], size: int, weights: str) -> np.ndarray:
    """Features from a direct Keras call, independent of the pipeline's code."""
    import keras
    from keras.applications.resnet50 import preprocess_input

    model = keras.applications.ResNet50(
        include_top=False, weights=weights, pooling="avg", input_shape=(size, size, 3)
    )
    batch = np.stack(
        [
            keras.utils.img_to_array(
                keras.utils.load_img(p, target_size=(size, size), interpolation="bilinear")
            )
            for p in paths
        ]
    )
    return np.asarray(model.predict(preprocess_input(batch), batch_size=16, verbose=0))


def job_config(bucket: str, weights: str, onnx_file: str, **sections: dict[str, Any]) -> Any:
    """The job on the default engine, auto, held to fp32 so that its features equal Keras' within 1e-4
    on every CPU (auto's bf16 on AMX is checked against fp32 in test_openvino.py)."""
    return build_config(
        {
            "input": {"uri": f"s3://{bucket}/images/"},
            "output": {"uri": f"s3://{bucket}/features/"},
            "model": {
                "weights": weights,
                "onnx": onnx_file,
                "precision": "fp32",
                **sections.pop("model", {}),
            },
            "pca": {"k": K},
            "report": {"enabled": False},  # the report has its tests (test_report, test_classifier)
            **sections,
        }
    )


@pytest.fixture(scope="module")
def run(spark, s3, weights: str, onnx_file: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    bucket = "pipeline-run"
    s3.create_bucket(Bucket=bucket)
    uploaded = upload_sample(s3, bucket, "images", CLASSES)
    s3.put_object(Bucket=bucket, Key="images/Kiwi/broken.jpg", Body=b"this is not a jpeg")
    s3.put_object(Bucket=bucket, Key="images/README.txt", Body=b"not an image")
    config = job_config(bucket, weights, onnx_file, progress_interval_seconds=0.5)

    with captured_logs("fruits_features") as logs:
        result = pipeline.run(spark, config, "run-1")

    local = tmp_path_factory.mktemp("run-1")
    download_folder(s3, S3Uri.parse(result.run_uri), local)
    parts = sorted((local / "features").glob("part-*.csv"))
    features = pd.concat([pd.read_csv(p, float_precision="round_trip") for p in parts], ignore_index=True)
    return {
        "bucket": bucket,
        "config": config,
        "uploaded": uploaded,
        "result": result,
        "local": local,
        "features": features,
        "logs": logs,
    }


@contextmanager
def captured_logs(name: str) -> Iterator[list[str]]:
    """The INFO (and up) messages logged under ``name`` while the block runs."""
    messages: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_one_row_per_image_with_its_label_and_k_components(run: dict[str, Any]) -> None:
    features = run["features"]
    assert list(features.columns) == ["path", "label", *[f"pc_{i}" for i in range(1, K + 1)]]
    assert len(features) == run["uploaded"] == 80
    assert features["path"].is_unique
    expected = {
        f"s3://{run['bucket']}/images/{p.parent.name}/{p.name}": p.parent.name
        for name in CLASSES
        for p in (SAMPLE_DIR / name).glob("*.jpg")
    }
    assert dict(zip(features["path"], features["label"], strict=True)) == expected
    assert features.filter(like="pc_").notna().all().all()


def test_unreadable_image_is_rejected_with_a_reason_and_other_keys_are_skipped(run: dict[str, Any]) -> None:
    rejected = read_rejects(run["local"])
    assert rejected.to_dict("records") == [
        {"path": f"s3://{run['bucket']}/images/Kiwi/broken.jpg", "reason": "not a recognised image format"}
    ]
    counts = run["result"].manifest["counts"]
    assert counts["keys_listed"] == 82
    assert counts["keys_skipped"] == 1
    assert counts["images"] == 81
    assert counts["featurized"] + counts["rejected"] == counts["images"]


def test_progress_lines_rise_carry_an_eta_and_end_at_the_final_count(run: dict[str, Any]) -> None:
    # How many lines a 0.5 s interval gives depends on the machine's speed: only their form and
    # order are checked here (that the executors' counts reach the driver: test_embedding's UDF run).
    lines = [line for line in run["logs"] if line.startswith("embed: ")]
    counts = [tuple(map(int, re.match(r"embed: (\d+)/(\d+) images", line).groups())) for line in lines]  # type: ignore[union-attr]
    assert lines, run["logs"]
    assert {total for _, total in counts} == {81}
    done = [count for count, _ in counts]
    assert done == sorted(done)
    assert all(
        " images/s, ETA " in line for line, (count, total) in zip(lines, counts, strict=True) if count < total
    )
    assert done[-1] == run["result"].manifest["counts"]["images"] == 81
    assert " done in " in lines[-1]


def test_resnet_runs_exactly_once_per_image(run: dict[str, Any]) -> None:
    counts = run["result"].manifest["counts"]
    assert counts["model_images"] == counts["featurized"] == 80


def test_manifest_records_config_variance_timings_and_versions(run: dict[str, Any]) -> None:
    manifest = json.loads((run["local"] / "manifest.json").read_text())
    assert manifest == run["result"].manifest
    assert manifest["run_id"] == "run-1"
    assert (manifest["job"], manifest["status"]) == ("features", "succeeded")
    assert "error" not in manifest
    assert manifest["model"]["engine"] == "auto"
    assert manifest["input"] == f"s3://{run['bucket']}/images/"
    assert manifest["output"] == f"s3://{run['bucket']}/features/run-1"
    assert manifest["config"]["pca"]["k"] == K
    variance = manifest["pca"]["explained_variance"]
    cumulative = manifest["pca"]["cumulative_explained_variance"]
    assert len(variance) == len(cumulative) == K
    assert variance == sorted(variance, reverse=True)
    assert cumulative[-1] == pytest.approx(sum(variance))
    assert 0.5 < cumulative[-1] <= 1.0
    timings = manifest["timings_seconds"]
    assert set(timings) >= {"list", "load_and_embed", "reduce", "write", "total"}
    # The tasks' phases, summed: every task spent time in its UDF, reading and running the model.
    phases = {
        f"executor_{phase}"
        for phase in ("udf", "model_load", "read", "read_wait", "decode", "prepare_wait", "model")
    }
    assert set(timings) >= phases
    assert min(timings["executor_udf"], timings["executor_read"], timings["executor_model"]) > 0
    assert timings["executor_udf"] >= timings["executor_model"] + timings["executor_prepare_wait"]
    assert "spark_start" not in timings  # an in-process session: only spark-submit's start is known
    assert manifest["versions"]["tensorflow"]
    assert manifest["versions"]["pyspark"]
    assert (run["local"] / "_SUCCESS").exists()


def test_pca_matches_numpy_on_the_standardized_features_with_the_sign_convention(
    run: dict[str, Any], weights: str
) -> None:
    features = run["features"]
    paths = [SAMPLE_DIR / p.split("/images/", 1)[1] for p in features["path"]]
    x = keras_features(paths, 224, weights).astype(np.float64)
    std = x.std(axis=0, ddof=1)  # Spark's StandardScaler uses the unbiased standard deviation
    z = np.where(std > 0, (x - x.mean(axis=0)) / np.where(std > 0, std, 1), 0.0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(z, rowvar=False))
    order = np.argsort(eigenvalues)[::-1][:K]
    loadings = eigenvectors[:, order]
    expected = z @ (loadings * component_signs(loadings))
    got = features.filter(like="pc_").to_numpy()

    for j in range(K):
        np.testing.assert_allclose(got[:, j], expected[:, j], atol=1e-4 * np.abs(expected[:, j]).max())
    values = eigenvalues[order]
    explained = values / eigenvalues.sum()
    np.testing.assert_allclose(run["result"].manifest["pca"]["explained_variance"], explained, rtol=1e-3)


def test_features_equal_a_direct_keras_call(spark, s3, weights: str, onnx_file: str) -> None:
    bucket = "embed-check"
    s3.create_bucket(Bucket=bucket)
    upload_sample(s3, bucket, "images", sample_classes(3))
    config = job_config(bucket, weights, onnx_file, model={"batch_size": 4})
    listing = list_images(s3, S3Uri.parse(config.input.uri), config.input.extensions)
    keys = keys_frame(spark, listing.images, 2)
    counters = EmbedCounters.create(spark.sparkContext)
    embedded = embed_images(keys, embed_spec(config, s3_settings(config)), counters, fetch_threads=4)

    rows = embedded.orderBy("path").collect()

    assert [r["error"] for r in rows] == [None] * 6
    got = np.array([r["features"] for r in rows])
    assert got.shape == (6, 2048)
    paths = [SAMPLE_DIR / r["path"].split("/images/", 1)[1] for r in rows]
    np.testing.assert_allclose(got, keras_features(paths, 224, weights), atol=1e-4)


def test_spark_and_pandas_read_the_same_rows_and_floats(run: dict[str, Any], spark) -> None:
    from_spark = (
        spark.read.csv(str(run["local"] / "features"), header=True, inferSchema=True)
        .toPandas()
        .sort_values("path")
        .reset_index(drop=True)
    )
    from_pandas = run["features"].sort_values("path").reset_index(drop=True)
    pd.testing.assert_frame_equal(from_spark, from_pandas, check_exact=True)


def test_reusing_a_run_id_is_refused_before_any_work(spark, run: dict[str, Any]) -> None:
    with pytest.raises(OutputError, match="run-1 already holds objects"):
        pipeline.run(spark, run["config"], "run-1")


def test_part_files_are_plain_csv_with_a_header_each(run: dict[str, Any]) -> None:
    for part in (run["local"] / "features").glob("part-*.csv"):
        first = part.read_text().splitlines()[0]
        assert first.startswith("path,label,pc_1,")
        assert pd.read_csv(io.StringIO(part.read_text())).shape[1] == K + 2


@pytest.fixture(scope="module")
def parquet_run(spark, s3, run: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same images and settings as ``run``, written as Parquet."""
    config = run["config"].model_copy(
        update={"output": run["config"].output.model_copy(update={"format": "parquet"})}
    )
    result = pipeline.run(spark, config, "run-parquet")
    local = tmp_path_factory.mktemp("run-parquet")
    download_folder(s3, S3Uri.parse(result.run_uri), local)
    return local


def test_parquet_output_holds_the_same_frame_as_csv(run: dict[str, Any], parquet_run: Path, spark) -> None:
    parts = sorted((parquet_run / "features").glob("part-*.parquet"))
    assert parts
    assert not list((parquet_run / "features").glob("*.csv"))
    from_pandas = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    from_spark = spark.read.parquet(str(parquet_run / "features")).toPandas()
    csv = run["features"].sort_values("path").reset_index(drop=True)
    for read in (from_pandas, from_spark):
        frame = read.sort_values("path").reset_index(drop=True)
        assert list(frame.columns) == list(csv.columns)
        assert (frame.filter(like="pc_").dtypes == np.float64).all()
        # Two fits of the same features: their sums differ in the last bits, and the sign
        # convention gives both the same signs, so no alignment. (One frame written both ways is
        # equal to the bit: tests/test_output.py.)
        pd.testing.assert_frame_equal(frame, csv, check_exact=False, rtol=1e-9, atol=1e-9)
    assert (parquet_run / "_SUCCESS").exists()
    assert read_rejects(parquet_run)["path"].tolist() == [f"s3://{run['bucket']}/images/Kiwi/broken.jpg"]
    manifest = json.loads((parquet_run / "manifest.json").read_text())
    assert manifest["config"]["output"]["format"] == "parquet"
    assert manifest["counts"] == {**run["result"].manifest["counts"], "part_files": len(parts)}


def test_a_write_beside_the_fit_that_fails_fails_the_run(
    spark, s3, weights: str, onnx_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embeddings are written in a thread beside the PCA fit: its error still ends the run."""
    bucket = "pipeline-fails-beside"
    s3.create_bucket(Bucket=bucket)
    upload_sample(s3, bucket, "images", sample_classes(2))

    def broken_write(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the embeddings could not be written")

    monkeypatch.setattr(pipeline, "write_embeddings", broken_write)
    with pytest.raises(RuntimeError, match="could not be written"):
        pipeline.run(spark, job_config(bucket, weights, onnx_file), "run-fails")

    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="features/run-fails/")["Contents"]}
    assert "features/run-fails/_SUCCESS" not in keys
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="features/run-fails/manifest.json")["Body"].read())
    assert (manifest["status"], manifest["error"]) == ("failed", "the embeddings could not be written")


def test_a_failure_after_the_preflight_leaves_a_failed_manifest_and_the_rejects(
    spark, s3, weights: str, onnx_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = "pipeline-fails-in-pca"
    s3.create_bucket(Bucket=bucket)
    upload_sample(s3, bucket, "images", sample_classes(2))
    s3.put_object(Bucket=bucket, Key="images/Kiwi/broken.jpg", Body=b"this is not a jpeg")

    def broken_fit(*_: Any, **__: Any) -> Any:
        raise RuntimeError("the PCA fit ran out of memory")

    monkeypatch.setattr(pipeline, "fit_reduction", broken_fit)
    config = job_config(bucket, weights, onnx_file, max_rejected_fraction=0.5)

    with pytest.raises(RuntimeError, match="ran out of memory"):
        pipeline.run(spark, config, "run-fails")

    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="features/run-fails/")["Contents"]}
    # The embeddings were written before the PCA fit; no features, no model, no _SUCCESS.
    embeddings = {key for key in keys if key.startswith("features/run-fails/embeddings/part-")}
    assert embeddings
    assert keys - embeddings == {
        "features/run-fails/manifest.json",
        "features/run-fails/rejected/part-00000.csv",
    }
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="features/run-fails/manifest.json")["Body"].read())
    assert (manifest["status"], manifest["error"]) == ("failed", "the PCA fit ran out of memory")
    assert (manifest["counts"]["images"], manifest["counts"]["rejected"]) == (5, 1)
    assert manifest["finished_at"]
    assert "pca" not in manifest
    rejected = (
        s3.get_object(Bucket=bucket, Key="features/run-fails/rejected/part-00000.csv")["Body"].read().decode()
    )
    assert f"s3://{bucket}/images/Kiwi/broken.jpg," in rejected


@pytest.mark.parametrize("listing", ["parallel", "inventory"])
def test_a_listing_on_the_executors_gives_the_same_run(
    spark, s3, run: dict[str, Any], weights: str, onnx_file: str, tmp_path: Path, listing: str
) -> None:
    bucket = run["bucket"]
    source: dict[str, str] = {}
    if listing == "inventory":  # an S3 Inventory report of the bucket, as AWS writes one
        entries = entries_of(s3, S3Uri(bucket, ""))
        report = write_inventory(s3, S3Uri(bucket, "inventories/"), bucket, entries, rows_per_file=3)
        source = {"inventory": str(report)}
    config = job_config(
        bucket, weights, onnx_file, input={"uri": f"s3://{bucket}/images/", "listing": listing, **source}
    )

    result = pipeline.run(spark, config, f"run-{listing}")

    download_folder(s3, S3Uri.parse(result.run_uri), tmp_path)
    parts = sorted((tmp_path / "features").glob("part-*.csv"))
    got = pd.concat([pd.read_csv(p, float_precision="round_trip") for p in parts]).sort_values("path")
    expected = run["features"].sort_values("path")
    assert got["path"].tolist() == expected["path"].tolist()
    assert got["label"].tolist() == expected["label"].tolist()
    # Other partitions, other model batches: the features differ in their last bits, the signs not.
    for name in [c for c in expected.columns if c.startswith("pc_")]:
        a, b = got[name].to_numpy(), expected[name].to_numpy()
        np.testing.assert_allclose(a, b, atol=1e-6 * np.abs(b).max())
    counts = ("keys_listed", "keys_skipped", "images", "featurized", "rejected")
    first = run["result"].manifest["counts"]
    assert {k: result.manifest["counts"][k] for k in counts} == {k: first[k] for k in counts}
    assert read_rejects(tmp_path)["path"].tolist() == [f"s3://{bucket}/images/Kiwi/broken.jpg"]
