"""The classifier stage: the split and the metrics (plain functions), then the real thing: trained on
the bundled sample with the real weights, saved, scored again, and its report opened in Chromium."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, SAMPLE_DIR, job_env, run_job_in_process, sample_classes, upload_sample
from fruits_features import pipeline, scoring
from fruits_features.config_files import apply_overrides, build_config, load_config
from fruits_features.errors import ConfigError
from fruits_features.features.model_files import file_sha256, weights_sha256
from fruits_features.io.folders import download_folder
from fruits_features.io.s3 import S3Settings
from fruits_features.io.uri import S3Uri
from fruits_features.stages.classify import (
    TEST,
    TRAIN,
    ClassifierError,
    stratified_split,
    train_and_evaluate,
    train_count,
)
from fruits_features.stages.metrics import classification_metrics, most_confused
from fruits_features.stages.model_info import ModelInfo, ModelMismatchError, ModelUnavailableError
from fruits_features.stages.model_store import check_model_transfer
from report_checks import check_report_folder, open_in_chromium

# -- the split ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "fraction", "expected"),
    [
        (1, 0.7, 1),  # a single image trains: the class is learnt, not tested
        (2, 0.7, 1),
        (2, 0.1, 1),  # at least one training image
        (2, 0.99, 1),  # at least one test image
        (3, 0.5, 2),  # 1.5 rounds half up
        (10, 0.7, 7),
        (10, 0.75, 8),  # 7.5 rounds half up
        (100, 0.999, 99),
    ],
)
def test_training_images_per_class(images: int, fraction: float, expected: int) -> None:
    assert train_count(images, fraction) == expected


@pytest.fixture(scope="module")
def labelled(spark):
    counts = {"Apple": 10, "Banana": 3, "Cherry": 2, "Kiwi": 1}
    rows = [(f"s3://b/i/{label}/{n:03d}.jpg", label) for label, count in counts.items() for n in range(count)]
    return spark.createDataFrame(rows, "path string, label string"), counts


def split_of(frame, counts: dict[str, int], seed: int = 42) -> dict[str, str]:
    rows = stratified_split(frame, counts, 0.7, seed).collect()
    return {row["path"]: row["split"] for row in rows}


def test_stratified_split_trains_the_quota_of_each_class_and_tests_the_rest(labelled) -> None:
    frame, counts = labelled

    split = split_of(frame, counts)

    assert len(split) == sum(counts.values())
    for label, count in counts.items():
        trained = sum(1 for path, side in split.items() if f"/{label}/" in path and side == TRAIN)
        assert trained == train_count(count, 0.7)
    tested = {path.split("/")[-2] for path, side in split.items() if side == TEST}
    assert tested == {"Apple", "Banana", "Cherry"}  # every class with two images or more


def test_split_depends_on_the_seed_not_on_partitioning(labelled) -> None:
    frame, counts = labelled

    once = split_of(frame.repartition(1), counts)
    again = split_of(frame.repartition(5), counts)
    other_seed = split_of(frame, counts, seed=7)

    assert once == again
    assert other_seed != once


# -- the metrics ----------------------------------------------------------------------------------


def test_metrics_from_confusion_counts_match_a_hand_computation() -> None:
    # true a: 3 right, 1 taken for b; true b: 2 right; true c: 1 taken for a, 1 for b. Nothing is
    # predicted as c: its precision is 0, as scikit-learn reports it.
    confusion = np.array([[3, 1, 0], [0, 2, 0], [1, 1, 0]])

    metrics = classification_metrics(["a", "b", "c"], confusion)

    assert metrics.test_images == 8
    assert metrics.accuracy == pytest.approx(5 / 8)
    a, b, c = (metrics.per_class[label] for label in "abc")
    assert (a.precision, a.recall, a.support, a.predicted) == (
        pytest.approx(3 / 4),
        pytest.approx(3 / 4),
        4,
        4,
    )
    assert (b.precision, b.recall) == (pytest.approx(2 / 4), pytest.approx(1.0))
    assert b.f1 == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    assert (c.precision, c.recall, c.f1) == (0.0, 0.0, 0.0)
    assert metrics.macro_f1 == pytest.approx((0.75 + 2 / 3 + 0.0) / 3)


def test_classes_neither_tested_nor_predicted_stay_out_of_the_macro_average() -> None:
    metrics = classification_metrics(["a", "b", "single"], np.array([[2, 0, 0], [1, 1, 0], [0, 0, 0]]))
    assert set(metrics.per_class) == {"a", "b"}
    assert metrics.macro_f1 == pytest.approx((0.8 + 2 / 3) / 2)


def test_metrics_refuse_a_matrix_of_the_wrong_shape_or_without_test_images() -> None:
    with pytest.raises(ValueError, match="expected a 2x2 confusion matrix"):
        classification_metrics(["a", "b"], np.zeros((3, 3)))
    with pytest.raises(ValueError, match="no test images"):
        classification_metrics(["a", "b"], np.zeros((2, 2)))


def test_most_confused_cells_come_first_and_ties_go_by_name() -> None:
    confusion = np.array([[5, 2, 1], [2, 5, 0], [0, 3, 5]])
    cells = most_confused(["a", "b", "c"], confusion, 3)
    assert [(c.true, c.predicted, c.count) for c in cells] == [("c", "b", 3), ("a", "b", 2), ("b", "a", 2)]


def test_classifier_refuses_data_it_cannot_be_tested_on(spark) -> None:
    config = build_config(
        {
            "input": {"uri": "s3://b-in/x/"},
            "output": {"uri": "s3://b-out/y/"},
            "classifier": {"enabled": True},
        }
    ).classifier
    frame = spark.createDataFrame([("s3://b/i/K/1.jpg", "K")], "path string, label string")
    with pytest.raises(ClassifierError, match="at least two classes"):
        train_and_evaluate(frame, {"K": 5}, config)
    with pytest.raises(ClassifierError, match="no class has two or more images"):
        train_and_evaluate(frame, {"K": 1, "L": 1}, config)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "classifier.train_fraction=1.0",
            "config key 'classifier.train_fraction': Input should be less than 1",
        ),
        (
            "classifier.train_fraction=0",
            "config key 'classifier.train_fraction': Input should be greater than 0",
        ),
        ("classifier.model_transfer=s3a", "config key 'classifier.model_transfer'"),
        ("classifier.reg_param=-1", "config key 'classifier.reg_param'"),
        ("classifier.enable=true", "config key 'classifier.enable': unknown key"),
        ("report.classes=50", "config key 'report.classes'"),
    ],
)
def test_bad_classifier_and_report_settings_name_the_key(override: str, message: str) -> None:
    data = {"input": {"uri": "s3://b-in/x/"}, "output": {"uri": "s3://b-out/y/"}}
    with pytest.raises(ConfigError) as caught:
        build_config(apply_overrides(data, [override]))
    assert message in str(caught.value)


def test_classifier_is_off_by_default_and_on_in_the_local_config() -> None:
    data = {"input": {"uri": "s3://b-in/x/"}, "output": {"uri": "s3://b-out/y/"}}
    assert build_config(data).classifier.enabled is False
    assert build_config(data).report.enabled is True
    assert load_config(ROOT / "conf" / "local.yaml").classifier.enabled is True
    assert load_config(ROOT / "conf" / "emr.yaml").classifier.model_transfer == "hadoop"


def test_staging_the_model_without_a_shared_folder_is_refused_on_a_cluster() -> None:
    data = {
        "input": {"uri": "s3://b-in/x/"},
        "output": {"uri": "s3://b-out/y/"},
        "classifier": {"enabled": True},
    }
    check_model_transfer(build_config(data), "local[4]")
    check_model_transfer(build_config(data), "local-cluster[2,1,1024]")
    with pytest.raises(ConfigError, match=r"classifier\.staging_dir': unset, .* with master 'yarn'"):
        check_model_transfer(build_config(data), "yarn")
    data["classifier"]["model_transfer"] = "hadoop"
    check_model_transfer(build_config(data), "yarn")


def test_model_description_round_trips_and_another_format_is_refused() -> None:
    info = ModelInfo(
        image_size=64,
        weights="/w.h5",
        weights_sha256="ab" * 32,
        feature_dim=2048,
        k=7,
        variance_target=0.9,
        labels=("Apple", "Kiwi"),
        run_id="r",
        trained_at="2026-11-26T05:00:00Z",
        spark_version="4.0.5",
    )
    data = json.loads(json.dumps(info.to_dict()))
    assert ModelInfo.from_dict(data, "model.json") == info
    with pytest.raises(ModelUnavailableError, match="format_version 2"):
        ModelInfo.from_dict({**data, "format_version": 2}, "model.json")
    with pytest.raises(ModelUnavailableError, match="not a model description"):
        ModelInfo.from_dict({k: v for k, v in data.items() if k != "labels"}, "model.json")


def test_the_same_weights_file_has_one_digest_wherever_it_is(
    s3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRUITS_WEIGHTS_CACHE", str(tmp_path / "cache"))
    local = tmp_path / "w.h5"
    local.write_bytes(b"not really weights, but a file all the same")
    s3.upload_file(str(local), bucket, "models/w.h5")

    from_s3 = weights_sha256(f"s3://{bucket}/models/w.h5", S3Settings())

    assert from_s3 == weights_sha256(str(local), S3Settings()) == file_sha256(local)


def test_imagenet_weights_are_digested_from_the_keras_cache(tmp_path: Path) -> None:
    models = tmp_path / "keras" / "models"
    models.mkdir(parents=True)
    cached = models / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cached.write_bytes(b"what Keras downloaded")
    code = "from fruits_features.features.model_files import weights_sha256 as w; print(w('imagenet', None))"

    # KERAS_HOME is read when Keras is imported: a fresh interpreter, and no network (a proxy
    # that refuses), so the digest can only come from the cache Keras' ResNet50 loads from.
    env = job_env({"KERAS_HOME": str(tmp_path / "keras"), "HTTPS_PROXY": "http://127.0.0.1:9"})
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == file_sha256(cached)


# -- the real thing -------------------------------------------------------------------------------

# Every one of the 131 classes of the bundled sample, two images each: one trains, one tests.
# One example per class over 131 fine-grained classes (three kinds of red apple, four tomatoes) is
# harsh, and 64 px images keep the test fast. On the development machine the classifier gets
# about 90% of the 131 test images right (chance: 0.8%). The thresholds below leave room for
# ~20 more mistakes from numerical differences on other CPUs, and still sit far above what a
# broken pipeline gets: shuffled labels or a wrong label order give about 1%.
ACCURACY_AT_LEAST = 0.70
MACRO_F1_AT_LEAST = 0.60
CLASSES = sample_classes(131)
IMAGE_SIZE = 64
VARIANCE_TARGET = 0.9


def classifier_config(bucket: str, weights: str, onnx: str, **sections: dict[str, Any]) -> Any:
    """The job on the default engine at 64 px."""
    return build_config(
        {
            "input": {"uri": f"s3://{bucket}/images/"},
            "output": {"uri": f"s3://{bucket}/out/"},
            "model": {
                "weights": weights,
                "image_size": IMAGE_SIZE,
                "onnx": onnx,
                **sections.pop("model", {}),
            },
            "pca": {"k": VARIANCE_TARGET},
            "classifier": {"enabled": True, "train_fraction": 0.5, "seed": 42},
            **sections,
        }
    )


def read_parts(folder: Path) -> pd.DataFrame:
    frames = [
        pd.read_csv(p, float_precision="round_trip", keep_default_na=False)
        for p in sorted(folder.glob("*.csv"))
    ]
    return pd.concat(frames, ignore_index=True).sort_values("path").reset_index(drop=True)


@pytest.fixture(scope="module")
def trained(
    spark, s3, weights: str, onnx_file_64: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    bucket = "classifier-run"
    s3.create_bucket(Bucket=bucket)
    uploaded = upload_sample(s3, bucket, "images", CLASSES)
    config = classifier_config(bucket, weights, onnx_file_64)

    result = pipeline.run(spark, config, "train-1")

    local = tmp_path_factory.mktemp("train-1")
    download_folder(s3, S3Uri.parse(result.run_uri), local)
    return {
        "bucket": bucket,
        "uploaded": uploaded,
        "config": config,
        "manifest": result.manifest,
        "local": local,
        "predictions": read_parts(local / "predictions"),
    }


@pytest.mark.integration
def test_classifier_beats_the_stated_accuracy_with_one_training_image_per_class(
    trained: dict[str, Any],
) -> None:
    classifier = trained["manifest"]["classifier"]
    assert classifier["status"] == "trained"
    assert classifier["classes"] == 131
    assert classifier["train_images"] == classifier["test_images"] == 131
    assert classifier["accuracy"] >= ACCURACY_AT_LEAST, classifier["most_confused"]
    assert classifier["macro_f1"] >= MACRO_F1_AT_LEAST


@pytest.mark.integration
def test_variance_target_sets_k_in_the_manifest_the_features_and_the_model(trained: dict[str, Any]) -> None:
    pca = trained["manifest"]["pca"]
    k = pca["k"]
    assert pca["variance_target"] == VARIANCE_TARGET
    assert pca["cumulative_explained_variance"][-1] >= VARIANCE_TARGET
    assert k == 1 or pca["cumulative_explained_variance"][-2] < VARIANCE_TARGET  # the fewest that reach it
    header = (trained["local"] / "features" / "part-00000.csv").read_text().splitlines()[0]
    assert header == ",".join(["path", "label", *[f"pc_{i}" for i in range(1, k + 1)]])
    assert json.loads((trained["local"] / "model" / "model.json").read_text())["k"] == k


@pytest.mark.integration
def test_metrics_agree_with_the_written_predictions(trained: dict[str, Any]) -> None:
    predictions = trained["predictions"]
    assert list(predictions.columns) == ["path", "label", "split", "predicted", "probability"]
    assert len(predictions) == trained["uploaded"] == 262
    assert all(sorted(sides) == [TEST, TRAIN] for _, sides in predictions.groupby("label")["split"])
    assert predictions["probability"].between(0, 1).all()

    test = predictions[predictions["split"] == TEST]
    accuracy = (test["label"] == test["predicted"]).mean()
    manifest = trained["manifest"]["classifier"]
    metrics = json.loads((trained["local"] / "metrics.json").read_text())
    assert manifest["accuracy"] == metrics["accuracy"] == pytest.approx(accuracy)
    assert np.array(metrics["confusion"]).sum() == len(test)
    for label in ("Banana", "Tomato 1", "Apple Red 1"):
        predicted_as = test[test["predicted"] == label]
        precision = (predicted_as["label"] == label).mean() if len(predicted_as) else 0.0
        assert manifest["per_class"][label]["precision"] == pytest.approx(precision)
        assert manifest["per_class"][label]["recall"] == float(
            test[test["label"] == label]["predicted"].iloc[0] == label
        )


@pytest.mark.integration
def test_model_records_how_its_features_were_made(trained: dict[str, Any], weights: str) -> None:
    model = trained["local"] / "model"
    info = ModelInfo.from_dict(json.loads((model / "model.json").read_text()), "model.json")
    assert info.image_size == IMAGE_SIZE
    assert info.feature_dim == 2048
    assert info.labels == tuple(CLASSES)
    if Path(weights).is_file():
        assert info.weights_sha256 == file_sha256(Path(weights))
    assert (model / "pipeline" / "metadata").is_dir()
    assert not list(model.rglob("*.crc"))


@pytest.mark.integration
def test_saved_model_scores_the_same_images_with_the_same_predictions(
    spark, s3, trained: dict[str, Any], weights: str, onnx_file_64: str
) -> None:
    bucket = trained["bucket"]
    # The config says 224 px: the model's own 64 px must win, or the features would not match.
    config = classifier_config(bucket, weights, onnx_file_64, model={"image_size": 224})

    result = scoring.run_scoring(spark, config, f"s3://{bucket}/out/train-1/model/", "score-1")

    assert result.manifest["scoring_model"]["image_size"] == IMAGE_SIZE
    local = Path(str(trained["local"]) + "-score")
    download_folder(s3, S3Uri.parse(result.run_uri), local)
    assert (local / "_SUCCESS").exists()
    scored = read_parts(local / "predictions")
    expected = trained["predictions"]
    assert list(scored.columns) == ["path", "label", "predicted", "probability"]
    assert scored["path"].tolist() == expected["path"].tolist()
    assert scored["label"].tolist() == expected["label"].tolist()
    assert scored["predicted"].tolist() == expected["predicted"].tolist()
    np.testing.assert_allclose(scored["probability"], expected["probability"], rtol=1e-4)


@pytest.mark.integration
def test_scoring_with_other_weights_is_refused_before_any_work(
    spark, s3, trained: dict[str, Any], tmp_path: Path
) -> None:
    other = tmp_path / "other.h5"
    other.write_bytes(b"other weights")
    # TensorFlow: the weights alone are checked in the preflight (an ONNX file would not match them either).
    config = classifier_config(trained["bucket"], str(other), "unused.onnx", model={"engine": "tensorflow"})

    with pytest.raises(
        ModelMismatchError, match=r"differs from the weights the model at s3://classifier-run/"
    ):
        scoring.run_scoring(spark, config, f"s3://{trained['bucket']}/out/train-1/model/", "score-other")
    assert not s3.list_objects_v2(Bucket=trained["bucket"], Prefix="out/score-other/").get("KeyCount")


@pytest.mark.integration
def test_scoring_a_folder_that_is_not_a_model_names_it(
    spark, trained: dict[str, Any], weights: str, onnx_file_64: str
) -> None:
    config = classifier_config(trained["bucket"], weights, onnx_file_64)
    with pytest.raises(
        ModelUnavailableError, match=r"cannot read s3://classifier-run/out/train-1/features/model.json"
    ):
        scoring.run_scoring(spark, config, f"s3://{trained['bucket']}/out/train-1/features/", "score-none")


@pytest.mark.integration
def test_score_entry_point_scores_new_images_without_class_folders(
    spark,
    s3,
    trained: dict[str, Any],
    weights: str,
    onnx_file_64: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """jobs/score.py's main in process, on the shared session (the cluster tier runs it through
    spark-submit)."""
    bucket = trained["bucket"]
    for path in sorted((SAMPLE_DIR / "Banana").glob("*.jpg")):  # no class folder: nothing to go by
        s3.upload_file(str(path), bucket, f"new/{path.name}")

    code, logged = run_job_in_process(
        "score",
        *("--model", f"s3://{bucket}/out/train-1/model/"),
        *("--input", f"s3://{bucket}/new/", "--output", f"s3://{bucket}/scores/", "--run-id", "cli-score"),
        *("--set", f"model.weights={weights}", "--set", f"model.onnx={onnx_file_64}"),
        spark=spark,
        monkeypatch=monkeypatch,
        caplog=caplog,
    )

    assert code == 0, logged[-20:]
    download_folder(s3, S3Uri(bucket, "scores/cli-score/"), tmp_path)
    scored = read_parts(tmp_path / "predictions")
    assert scored["path"].tolist() == [
        f"s3://{bucket}/new/{p.name}" for p in sorted((SAMPLE_DIR / "Banana").glob("*.jpg"))
    ]
    assert scored["label"].tolist() == ["", ""]
    banana = trained["predictions"][trained["predictions"]["label"] == "Banana"]
    assert scored["predicted"].tolist() == banana["predicted"].tolist()  # the same files, the same answers
    assert any("scored           2" in line for line in logged), logged


@pytest.mark.integration
def test_report_of_the_run_refers_to_decodable_pictures_and_opens_in_chromium(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    folder = trained["local"] / "report"
    assert trained["manifest"]["report"] == f"s3://{trained['bucket']}/out/train-1/report/index.html"

    images = check_report_folder(folder)

    assert set(images) == {
        "variance.png",
        "components.png",
        "confusion_matrix.png",
        "confused_classes.png",
        "confused_pairs.png",
    }
    page = (folder / "index.html").read_text()
    assert f"{100 * trained['manifest']['classifier']['accuracy']:.1f}%" in page
    open_in_chromium(folder, tmp_path / "screenshot.png", tmp_path)
