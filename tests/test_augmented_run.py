"""A feature run with augment.copies: augmented/ and flagged embeddings/, the PCA fitted on the
originals only, and no copy of a test image in the classifier's training rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conftest import sample_classes, upload_sample
from fruits_features import pipeline
from fruits_features.config_files import build_config
from fruits_features.io.folders import download_folder
from fruits_features.io.uri import S3Uri
from fruits_features.stages.classify import SPLIT_COL, TEST, TRAIN, training_rows
from fruits_features.stages.reduce import COMPONENTS_COL

K = 5


@pytest.fixture(scope="module")
def augmented_run(
    spark, s3, weights: str, onnx_file: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    bucket = "augmented-run"
    s3.create_bucket(Bucket=bucket)
    uploaded = upload_sample(s3, bucket, "images", sample_classes(6))
    config = build_config(
        {
            "input": {"uri": f"s3://{bucket}/images/"},
            "output": {"uri": f"s3://{bucket}/features/", "incremental_base": True},
            "model": {"weights": weights, "onnx": onnx_file, "precision": "fp32"},
            "pca": {"k": K},
            "classifier": {"enabled": True, "train_fraction": 0.5},
            "report": {"enabled": False},
            "augment": {"copies": 2, "seed": 5, "colour": 0.5},
        }
    )
    result = pipeline.run(spark, config, "aug-1")
    local = tmp_path_factory.mktemp("aug-1")
    download_folder(s3, S3Uri.parse(result.run_uri), local)
    return {"uploaded": uploaded, "manifest": result.manifest, "local": local, "bucket": bucket}


def parts(folder: Path) -> pd.DataFrame:
    files = sorted(folder.glob("part-*"))
    assert files, folder
    read = pd.read_parquet if files[0].suffix == ".parquet" else pd.read_csv
    return pd.concat([read(f) for f in files], ignore_index=True)


def test_features_stay_one_row_per_image_and_augmented_holds_each_copy(augmented_run: dict[str, Any]) -> None:
    n = augmented_run["uploaded"]
    features = parts(augmented_run["local"] / "features")
    augmented = parts(augmented_run["local"] / "augmented")

    assert len(features) == n
    assert list(augmented.columns) == ["path", "label", "copy", *[f"pc_{i}" for i in range(1, K + 1)]]
    assert len(augmented) == 2 * n
    assert sorted(augmented.groupby("path")["copy"].apply(sorted).tolist()) == [[1, 2]] * n
    assert set(augmented["path"]) == set(features["path"])
    labels = dict(zip(features["path"], features["label"], strict=True))
    assert (augmented["label"] == augmented["path"].map(labels)).all()

    manifest = augmented_run["manifest"]
    assert manifest["augment"] == {
        "copies_per_image": 2,
        "seed": 5,
        "images": n,
        "copies": 2 * n,
        "augmented": f"s3://{augmented_run['bucket']}/features/aug-1/augmented/",
        "pca_fitted_on": "originals",
    }
    assert manifest["counts"]["augmented"] == 2 * n
    assert manifest["counts"]["model_images"] == n
    assert manifest["timings_seconds"]["executor_augment"] > 0
    classifier = manifest["classifier"]
    assert classifier["train_copies"] == 2 * classifier["train_images"]
    assert classifier["train_images"] + classifier["test_images"] == n


def standardized_spectrum(rows: np.ndarray) -> np.ndarray:
    centred = rows - rows.mean(axis=0)
    std = rows.std(axis=0, ddof=1)
    scaled = centred / np.where(std > 0, std, 1.0)
    values = np.linalg.eigvalsh(scaled.T @ scaled / (len(rows) - 1))[::-1]
    return values / values.sum()


def test_the_pca_is_fitted_on_the_originals_and_embeddings_flag_the_copies(
    augmented_run: dict[str, Any],
) -> None:
    embeddings = parts(augmented_run["local"] / "embeddings")
    n = augmented_run["uploaded"]

    assert embeddings["copy"].value_counts().sort_index().to_dict() == {0: n, 1: n, 2: n}
    originals = np.stack(embeddings.loc[embeddings["copy"] == 0, "features"]).astype(np.float64)
    everything = np.stack(embeddings["features"]).astype(np.float64)
    explained = augmented_run["manifest"]["pca"]["explained_variance"]
    np.testing.assert_allclose(explained, standardized_spectrum(originals)[:K], rtol=1e-3)
    assert not np.allclose(explained, standardized_spectrum(everything)[:K], rtol=1e-2)


def test_no_copy_of_a_test_image_reaches_the_training_rows(spark) -> None:
    vector = "array<double>"
    split = spark.createDataFrame(
        [("a", "A", [1.0], TRAIN), ("b", "A", [2.0], TEST), ("c", "B", [3.0], TRAIN)],
        f"path string, label string, {COMPONENTS_COL} {vector}, {SPLIT_COL} string",
    )
    copies = spark.createDataFrame(
        [("a", "A", 1, [1.5]), ("b", "A", 1, [2.5]), ("b", "A", 2, [2.6]), ("c", "B", 1, [3.5])],
        f"path string, label string, copy int, {COMPONENTS_COL} {vector}",
    )

    rows = training_rows(split, copies).collect()

    assert sorted((r["path"], r[COMPONENTS_COL][0]) for r in rows) == [
        ("a", 1.0),
        ("a", 1.5),
        ("c", 3.0),
        ("c", 3.5),
    ]
    assert sorted(r["path"] for r in training_rows(split).collect()) == ["a", "c"]


def test_an_incremental_run_on_an_augmented_base_reads_the_originals_only(
    augmented_run: dict[str, Any], spark, weights: str, onnx_file: str
) -> None:
    bucket, n = augmented_run["bucket"], augmented_run["uploaded"]
    config = build_config(
        {
            "input": {"uri": f"s3://{bucket}/images/"},
            "output": {"uri": f"s3://{bucket}/features/"},
            "model": {"weights": weights, "onnx": onnx_file, "precision": "fp32"},
            "pca": {"k": K},
            "report": {"enabled": False},
            "incremental": {"previous_run": "aug-1", "mode": "refit"},
        }
    )

    manifest = pipeline.run(spark, config, "aug-2").manifest

    assert manifest["incremental"]["unchanged"] == n
    assert manifest["incremental"]["removed"] == 0
    np.testing.assert_allclose(
        manifest["pca"]["explained_variance"],
        augmented_run["manifest"]["pca"]["explained_variance"],
        rtol=1e-6,
    )
