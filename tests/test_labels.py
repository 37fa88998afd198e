"""The label a run learns (labels.rule folder, fruit or table) and the classes' weights: plain
functions here; then one run with fruit labels, trained, scored and evaluated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from conftest import SAMPLE_DIR, upload_sample
from fruits_features import pipeline, scoring
from fruits_features.cli import score_summary_lines, summary_lines
from fruits_features.config import AugmentConfig, LabelsConfig
from fruits_features.config_files import build_config
from fruits_features.config_sections import FRUIT_MODEL_AUGMENT
from fruits_features.errors import ConfigError
from fruits_features.io.folders import download_folder
from fruits_features.io.labels import UnknownClassesError, fruit_of, resolve_labels
from fruits_features.io.uri import S3Uri
from fruits_features.stages.classify import class_weights
from fruits_features.stages.metrics import scored_metrics

FRUITS360_CLASSES = sorted(p.name for p in SAMPLE_DIR.iterdir() if p.is_dir())
APPLES = [name for name in FRUITS360_CLASSES if name.startswith("Apple ")]
BANANAS = ["Banana", "Banana Lady Finger", "Banana Red"]


def test_every_fruits360_class_maps_to_the_fruit_it_shows() -> None:
    fruits = {name: fruit_of(name) for name in FRUITS360_CLASSES}
    by_fruit: dict[str, list[str]] = {}
    for name, fruit in fruits.items():
        by_fruit.setdefault(fruit, []).append(name)
    assert len(FRUITS360_CLASSES) == 131
    assert by_fruit["Apple"] == APPLES
    assert len(APPLES) == 13
    assert by_fruit["Banana"] == BANANAS
    assert by_fruit["Orange"] == ["Orange"]
    assert by_fruit["Tomato"] == [name for name in FRUITS360_CLASSES if name.startswith("Tomato")]
    assert by_fruit["Cherry"] == [name for name in FRUITS360_CLASSES if name.startswith("Cherry")]
    assert by_fruit["Passion Fruit"] == ["Maracuja", "Passion Fruit"]
    assert fruits["Potato Sweet"] == "Sweet Potato"
    assert fruits["Nut Pecan"] == "Pecan"
    assert fruits["Cactus fruit"] == "Cactus fruit"
    assert fruits["Grapefruit Pink"] == "Grapefruit"
    assert len(by_fruit) == 68  # the 131 classes show 68 fruits and vegetables


def test_a_fruit_folder_of_a_users_own_is_its_first_word_capitalised() -> None:
    assert fruit_of("apple") == "Apple"
    assert fruit_of("banana ripe 2") == "Banana"
    assert fruit_of("Orange") == "Orange"


def test_the_table_comes_before_the_rule_and_a_table_rule_refuses_what_it_does_not_name() -> None:
    fruit = LabelsConfig(rule="fruit", table={"Nut Forest": "Hazelnut"})
    labels = resolve_labels(fruit, ["Nut Forest", "Hazelnut", "Apple Braeburn"], unknown_allowed=False)
    assert labels.mapping == {"Nut Forest": "Hazelnut", "Hazelnut": "Hazelnut", "Apple Braeburn": "Apple"}
    assert labels.classes() == {"Apple": ["Apple Braeburn"], "Hazelnut": ["Hazelnut", "Nut Forest"]}

    table = LabelsConfig(rule="table", table={"Apple Braeburn": "apple", "Banana": "banana"})
    with pytest.raises(UnknownClassesError, match=r"2 listed class folders .*'Kiwi', 'Orange'"):
        resolve_labels(table, ["Apple Braeburn", "Orange", "Kiwi", "Banana"], unknown_allowed=False)
    scored = resolve_labels(table, ["Apple Braeburn", "Orange", ""], unknown_allowed=True)
    assert scored.mapping == {"": "", "Apple Braeburn": "apple", "Orange": ""}
    assert scored.section()["unknown_folders"] == ["Orange"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"rule": "table"}, "labels.rule 'table' needs labels.table"),
        ({"rule": "fruit", "table": {"a/b": "x"}}, "labels.table"),
        ({"rule": "fruit", "table": {"Apple": " "}}, "labels.table"),
        ({"rule": "variety"}, "labels.rule"),
    ],
)
def test_bad_label_settings_name_the_key(override: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_config({"input": {"uri": "s3://bkt/i/"}, "output": {"uri": "s3://bkt/o/"}, "labels": override})


def test_classes_are_balanced_past_the_ratio_and_each_then_weighs_the_same() -> None:
    assert class_weights({"a": 10, "b": 10}, "auto") is None
    assert class_weights({"a": 20, "b": 10}, "auto") is None  # twice: within the ratio
    assert class_weights({"a": 130, "b": 30, "c": 10}, "none") is None
    weights = class_weights({"a": 130, "b": 30, "c": 10}, "auto")
    assert weights == class_weights({"a": 130, "b": 30, "c": 10}, "balanced")
    assert weights is not None
    counts = {"a": 130, "b": 30, "c": 10}
    assert {label: weights[label] * n for label, n in counts.items()} == pytest.approx(
        {"a": 170 / 3, "b": 170 / 3, "c": 170 / 3}
    )
    assert class_weights({"a": 10, "b": 10}, "balanced") == {"a": 1.0, "b": 1.0}


def test_scored_images_are_evaluated_on_the_labels_the_model_knows() -> None:
    cells = [("Apple", "Apple", 8), ("Apple", "Banana", 2), ("Banana", "Banana", 5), ("Kiwi", "Apple", 3)]
    section = scored_metrics([*cells, ("", "Apple", 4)], ["Apple", "Banana", "Orange"])
    assert section["status"] == "evaluated"
    assert section["accuracy"] == pytest.approx(13 / 15)
    assert section["test_images"] == 15
    assert section["other_labels"] == {"Kiwi": 3}
    assert section["unlabelled_images"] == 4
    assert section["confusion"] == [[8, 2, 0], [0, 5, 0], [0, 0, 0]]
    assert scored_metrics([("", "Apple", 4)], ["Apple", "Banana"])["status"] == "unlabelled"


# -- one run with fruit labels ---------------------------------------------------------------------

CLASSES = [*APPLES, *BANANAS, "Orange", "Tomato Cherry Red", "Potato Sweet"]


def read_parts(folder: Path) -> pd.DataFrame:
    frames = [pd.read_csv(p, keep_default_na=False) for p in sorted(folder.glob("*.csv"))]
    return pd.concat(frames, ignore_index=True).sort_values("path").reset_index(drop=True)


def fruit_config(bucket: str, weights: str, onnx: str, **sections: Any) -> Any:
    return build_config(
        {
            "input": {"uri": f"s3://{bucket}/images/", **sections.pop("input", {})},
            "output": {"uri": f"s3://{bucket}/out/"},
            "model": {"weights": weights, "image_size": 64, "onnx": onnx},
            "pca": {"k": 10},
            "report": {"enabled": False},
            **sections,
        }
    )


@pytest.fixture(scope="module")
def fruit_run(spark, s3, weights: str, onnx_file_64: str, tmp_path_factory: pytest.TempPathFactory):
    bucket = "fruit-labels"
    s3.create_bucket(Bucket=bucket)
    assert upload_sample(s3, bucket, "images", CLASSES) == 2 * len(CLASSES)
    # listed on the executors: the labels are mapped on a frame, not on the driver's list
    config = fruit_config(
        bucket,
        weights,
        onnx_file_64,
        input={"listing": "parallel"},
        labels={"rule": "fruit"},
        classifier={"enabled": True, "train_fraction": 0.5},
    )
    trained = pipeline.run(spark, config, "fruit-1")
    # scored with the default labels.rule (folder): the model's own rule must win
    scored = scoring.run_scoring(
        spark, fruit_config(bucket, weights, onnx_file_64), f"s3://{bucket}/out/fruit-1/model/", "score-1"
    )
    # nothing new since: an incremental refit with the folders as labels relabels every kept row
    refit = pipeline.run(
        spark,
        fruit_config(bucket, weights, onnx_file_64, incremental={"previous_run": "fruit-1", "mode": "refit"}),
        "folders-1",
    )
    local = tmp_path_factory.mktemp("fruit")
    for name, result in (("train", trained), ("score", scored), ("refit", refit)):
        download_folder(s3, S3Uri.parse(result.run_uri), local / name)
    return {"trained": trained.manifest, "scored": scored.manifest, "refit": refit.manifest, "local": local}


@pytest.mark.integration
def test_a_fruit_run_learns_fruits_and_keeps_each_images_folder(fruit_run: dict[str, Any]) -> None:
    manifest, local = fruit_run["trained"], fruit_run["local"] / "train"
    assert manifest["labels"]["classes"]["Apple"] == APPLES
    assert manifest["labels"]["classes"]["Tomato"] == ["Tomato Cherry Red"]
    classifier = manifest["classifier"]
    assert classifier["classes"] == 5  # Apple, Banana, Orange, Sweet Potato, Tomato
    assert classifier["class_weight"] == "balanced"  # 13 apple images train against one orange
    assert manifest["augment"]["copies_per_image"] == 1  # the fruit-level model's augmentation
    assert classifier["train_copies"] == classifier["train_images"]
    for part in ("features", "predictions", "augmented"):
        rows = read_parts(local / part)
        assert list(rows.columns[:3]) == ["path", "label", "folder"], part
        assert (rows["folder"] == rows["path"].str.split("/").str[-2]).all()
        assert (rows["label"] == rows["folder"].map(fruit_of)).all()
        assert len(rows) == 2 * len(CLASSES)
    summary = "\n".join(summary_lines(manifest))
    assert f"  labels           fruit: {len(CLASSES)} folders, 5 labels" in summary
    assert "classes weighted)" in summary
    model = json.loads((local / "model" / "model.json").read_text())
    assert model["labels"] == ["Apple", "Banana", "Orange", "Sweet Potato", "Tomato"]
    assert model["label_rule"] == {"rule": "fruit", "table": {}}


@pytest.mark.integration
def test_scoring_labels_folders_as_the_model_learnt_and_reports_the_accuracy(
    fruit_run: dict[str, Any],
) -> None:
    manifest = fruit_run["scored"]
    predictions = read_parts(fruit_run["local"] / "score" / "predictions")
    assert list(predictions.columns) == ["path", "label", "folder", "predicted", "probability"]
    assert set(predictions["label"]) == {"Apple", "Banana", "Orange", "Sweet Potato", "Tomato"}
    evaluation = manifest["classifier"]
    assert evaluation["status"] == "evaluated"
    assert evaluation["test_images"] == len(predictions)
    assert evaluation["accuracy"] == pytest.approx((predictions["label"] == predictions["predicted"]).mean())
    summary = "\n".join(score_summary_lines(manifest))
    assert f"accuracy         {100 * evaluation['accuracy']:.1f}% on {len(predictions)} images" in summary
    assert "    Apple                recall" in summary


@pytest.mark.integration
def test_an_incremental_run_labels_the_images_it_keeps_by_its_own_rule(fruit_run: dict[str, Any]) -> None:
    assert fruit_run["refit"]["incremental"]["unchanged"] == 2 * len(CLASSES)
    assert "labels" not in fruit_run["refit"]
    features = read_parts(fruit_run["local"] / "refit" / "features")
    assert list(features.columns[:3]) == ["path", "label", "pc_1"]
    assert (features["label"] == features["path"].str.split("/").str[-2]).all()


def test_a_fruit_model_is_trained_with_the_photo_augmentation_where_the_config_says_nothing() -> None:
    base = {"input": {"uri": "s3://bkt/i/"}, "output": {"uri": "s3://bkt/o/"}}
    assert build_config(base).augment == AugmentConfig()  # the folders: no augmentation
    fruit = build_config({**base, "labels": {"rule": "fruit"}})
    assert fruit.augment == AugmentConfig(**FRUIT_MODEL_AUGMENT)
    assert fruit.augment.copies >= 1
    own = build_config({**base, "labels": {"rule": "fruit"}, "augment": {"copies": 2, "scale": 0.0}})
    assert own.augment == AugmentConfig(**{**FRUIT_MODEL_AUGMENT, "copies": 2, "scale": 0.0})
    # an incremental run does not augment: nothing is added that it would refuse
    daily = build_config({**base, "labels": {"rule": "fruit"}, "incremental": {"previous_run": "run-1"}})
    assert daily.augment.copies == 0
