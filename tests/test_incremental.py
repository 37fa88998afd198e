"""Incremental runs: against a previous run, only new and changed images reach the model; with its
fitted pipeline applied, the unchanged images keep exactly the components they had; refitted, the
result is a full run's over the same images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conftest import SAMPLE_DIR, sample_classes, upload_sample
from fruits_features import pipeline
from fruits_features.config_files import build_config
from fruits_features.errors import ConfigError
from fruits_features.io.folders import download_folder
from fruits_features.io.uri import S3Uri
from fruits_features.stages.incremental import PreviousRunError, change_status

CLASSES = sample_classes(4)


def config_for(bucket: str, weights: str, onnx: str, **sections: Any) -> Any:
    return build_config(
        {
            "input": {"uri": f"s3://{bucket}/images/"},
            "output": {"uri": f"s3://{bucket}/features/"},
            "model": {"weights": weights, "onnx": onnx, "image_size": 64, "precision": "fp32"},
            "pca": {"k": 3},
            "classifier": {"enabled": True},
            "report": {"enabled": False},
            **sections,
        }
    )


def features_of(s3, run_uri: str, local: Path, folder: str = "features") -> pd.DataFrame:
    download_folder(s3, S3Uri.parse(run_uri), local)
    parts = sorted((local / folder).glob("part-*.csv"))
    frame = pd.concat([pd.read_csv(p, float_precision="round_trip") for p in parts])
    return frame.sort_values("path").set_index("path")


@pytest.fixture(scope="module")
def runs(
    spark, s3, weights: str, onnx_file_64: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """A first run on three classes; then one class added, one image changed, one removed, and an
    incremental run applying the first run's pipeline."""
    bucket = "incremental-runs"
    s3.create_bucket(Bucket=bucket)
    upload_sample(s3, bucket, "images", CLASSES[:3])
    config = config_for(bucket, weights, onnx_file_64)
    first = pipeline.run(spark, config, "first")

    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="images/")["Contents"])
    changed, removed = keys[0], keys[-1]
    other_image = next((SAMPLE_DIR / CLASSES[3]).iterdir()).read_bytes()
    s3.put_object(Bucket=bucket, Key=changed, Body=other_image)  # new bytes: a new ETag
    s3.delete_object(Bucket=bucket, Key=removed)
    upload_sample(s3, bucket, "images", CLASSES[3:4])

    incremental = {"previous_run": "first", "mode": "apply"}
    second = pipeline.run(spark, config_for(bucket, weights, onnx_file_64, incremental=incremental), "second")
    local = tmp_path_factory.mktemp("incremental")
    return {
        "bucket": bucket,
        "config": config,
        "first": first,
        "second": second,
        "changed": f"s3://{bucket}/{changed}",
        "removed": f"s3://{bucket}/{removed}",
        "first_features": features_of(s3, first.run_uri, local / "first"),
        "second_features": features_of(s3, second.run_uri, local / "second"),
        "second_local": local / "second",
        "local": local,
    }


def test_only_the_new_and_changed_images_reach_the_model(runs: dict[str, Any]) -> None:
    first, second = runs["first"].manifest, runs["second"].manifest
    assert first["counts"]["model_images"] == 6
    assert second["incremental"] == {
        "previous_run": f"s3://{runs['bucket']}/features/first",
        "mode": "apply",
        "new": 2,
        "changed": 1,
        "unchanged": 4,
        "removed": 1,
    }
    assert second["counts"]["model_images"] == 3  # two new images and the changed one
    assert (second["counts"]["keys_listed"], second["counts"]["images"]) == (7, 3)


def test_applied_the_unchanged_images_keep_exactly_their_components(runs: dict[str, Any]) -> None:
    before, after = runs["first_features"], runs["second_features"]
    unchanged = sorted(set(before.index) - {runs["changed"], runs["removed"]})
    assert len(unchanged) == 4
    pd.testing.assert_frame_equal(after.loc[unchanged], before.loc[unchanged], check_exact=True)
    assert runs["removed"] not in after.index
    assert len(after) == 7
    # The changed image was embedded again: new bytes, other components.
    assert not np.allclose(
        after.filter(like="pc_").loc[runs["changed"]].to_numpy(float),
        before.filter(like="pc_").loc[runs["changed"]].to_numpy(float),
    )
    assert runs["second"].manifest["pca"] == runs["first"].manifest["pca"]


def test_applied_the_previous_classifier_predicts_the_new_images(runs: dict[str, Any]) -> None:
    predictions = pd.concat(
        pd.read_csv(p) for p in sorted((runs["second_local"] / "predictions").glob("part-*.csv"))
    )
    assert len(predictions) == 3
    assert set(predictions["predicted"]) <= set(CLASSES[:3])  # the classes the first run learnt
    assert runs["changed"] in set(predictions["path"])
    model = json.loads((runs["second_local"] / "model" / "model.json").read_text())
    assert model["run_id"] == "first"  # the applied pipeline, carried forward for the next increment


def test_refitted_the_result_is_a_full_runs_over_the_same_images(
    spark, s3, runs: dict[str, Any], weights: str, onnx_file_64: str
) -> None:
    bucket = runs["bucket"]
    refit = {"previous_run": f"s3://{bucket}/features/second", "mode": "refit"}
    third = pipeline.run(spark, config_for(bucket, weights, onnx_file_64, incremental=refit), "third")
    full = pipeline.run(spark, runs["config"], "full")

    assert third.manifest["counts"]["model_images"] == 0  # nothing new since the second run
    assert third.manifest["incremental"]["unchanged"] == 7
    got = features_of(s3, third.run_uri, runs["local"] / "third")
    expected = features_of(s3, full.run_uri, runs["local"] / "full")
    assert got.index.tolist() == expected.index.tolist()
    for name in [c for c in expected.columns if c.startswith("pc_")]:
        a, b = got[name].to_numpy(), expected[name].to_numpy()
        np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(b).max())  # the same signs: no alignment
    assert third.manifest["classifier"]["status"] == "trained"


def test_a_previous_run_without_embeddings_is_refused_before_any_work(
    spark, s3, runs: dict[str, Any], weights: str, onnx_file_64: str
) -> None:
    bucket = runs["bucket"]
    s3.put_object(Bucket=bucket, Key="features/old/manifest.json", Body=b'{"job": "features"}')
    s3.put_object(Bucket=bucket, Key="features/old/_SUCCESS", Body=b"")
    config = config_for(bucket, weights, onnx_file_64, incremental={"previous_run": "old"})

    with pytest.raises(
        PreviousRunError, match=r"not a feature run written with output\.incremental_base"
    ) as raised:
        pipeline.run(spark, config, "after-old")
    assert raised.value.exit_code == 3
    with pytest.raises(PreviousRunError, match="no finished run there"):
        pipeline.run(
            spark, config_for(bucket, weights, onnx_file_64, incremental={"previous_run": "nope"}), "x"
        )
    assert not s3.list_objects_v2(Bucket=bucket, Prefix="features/after-old/").get("KeyCount")


def test_a_previous_run_at_another_image_size_is_refused(
    spark, runs: dict[str, Any], weights: str, onnx_file_64: str
) -> None:
    config = config_for(runs["bucket"], weights, onnx_file_64, incremental={"previous_run": "first"})
    config = config.model_copy(update={"model": config.model.model_copy(update={"image_size": 96})})
    with pytest.raises(ConfigError, match="embedded its images at 64px"):
        pipeline.run(spark, config, "other-size")


def test_change_status_tells_new_changed_and_unchanged_apart(spark) -> None:
    listed = spark.createDataFrame(
        [("a", "K", "e1"), ("b", "K", "e2"), ("c", "K", "e3"), ("d", "K", None)],
        "path string, label string, etag string",
    )
    index = spark.createDataFrame(
        [("a", "e1"), ("b", "zz"), ("d", "e4"), ("gone", "e5")], "path string, etag string"
    )
    got = {row["path"]: row["_status"] for row in change_status(listed, index).collect()}
    assert got == {
        "a": "unchanged",
        "b": "changed",
        "c": "new",
        "d": "unchanged",
    }  # no ETag listed: no change


def test_the_summary_names_the_increment_and_the_applied_classifier() -> None:
    from fruits_features.cli import summary_lines

    manifest = {
        "run_id": "second",
        "output": "s3://b/features/second",
        "counts": {"keys_listed": 7, "keys_skipped": 0, "images": 3, "featurized": 3, "rejected": 0},
        "timings_seconds": {"load_and_embed": 1.5, "total": 9.0},
        "pca": {
            "k": 3,
            "explained_variance": [0.5, 0.2, 0.1],
            "cumulative_explained_variance": [0.5, 0.7, 0.8],
        },
        "incremental": {
            "previous_run": "s3://b/features/first",
            "mode": "apply",
            "new": 2,
            "changed": 1,
            "unchanged": 4,
            "removed": 1,
        },
        "classifier": {"status": "applied", "predictions": "s3://b/features/second/predictions/"},
    }
    text = "\n".join(summary_lines(manifest))
    assert "incremental      apply on s3://b/features/first: 2 new, 1 changed, 4 unchanged, 1 removed" in text
    assert "classifier       the previous run's, applied: s3://b/features/second/predictions/" in text
    assert "classifier       skipped" not in text
