"""The onnxruntime engine: the export, its checks, and the same features and PCA as TensorFlow's."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT, SAMPLE_DIR, run_job_in_process, sample_classes, spark_submit, upload_sample
from fruits_features import pipeline
from fruits_features.config import ModelConfig
from fruits_features.config_files import build_config
from fruits_features.errors import WeightsUnavailableError
from fruits_features.features.backbones import caffe_preprocess as preprocess
from fruits_features.features.engines import EmbedSpec, build_keras_fn, build_onnx_fn
from fruits_features.features.model_files import file_sha256, tensorflow_import_quieted
from fruits_features.features.onnx_export import (
    TOLERANCE,
    ExportError,
    OnnxInfo,
    OnnxMismatchError,
    OnnxModelError,
    check_onnx,
    compare_features,
    export_onnx,
    read_info,
)
from fruits_features.features.samples import load_samples
from fruits_features.io.folders import download_folder
from fruits_features.io.s3 import S3Settings
from fruits_features.io.uri import S3Uri

INFO = OnnxInfo(
    image_size=224,
    weights="/models/w.h5",
    weights_sha256="ab" * 32,
    max_abs_difference=1.5e-5,
    verified_images=16,
    versions={"keras": "3.15.1", "tf2onnx": "1.17.0"},
)


# ------------------------------------------------------------------ pure parts, no model


def test_preprocess_is_keras_resnet50_preprocessing() -> None:
    from keras.applications.resnet50 import preprocess_input

    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)

    np.testing.assert_allclose(preprocess(pixels), preprocess_input(pixels.astype(np.float32)), atol=1e-4)
    assert preprocess(pixels).dtype == np.float32


def test_onnx_info_round_trips_through_metadata() -> None:
    metadata = INFO.to_metadata()

    assert all(key.startswith("fruits_features.") and isinstance(v, str) for key, v in metadata.items())
    assert OnnxInfo.from_metadata(metadata, ["batch", 224, 224, 3]) == INFO
    # The image size is the graph's own, whatever the metadata says.
    assert OnnxInfo.from_metadata(metadata, ["batch", 100, 100, 3]).image_size == 100
    with pytest.raises(ValueError, match="shape"):
        OnnxInfo.from_metadata(metadata, ["batch", "h", "w", 3])
    with pytest.raises(KeyError):
        OnnxInfo.from_metadata({}, ["batch", 224, 224, 3])


def test_the_onnx_file_defaults_to_next_to_the_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", "/home/u/.keras")

    assert ModelConfig(weights="/m/w.h5").onnx_location() == "/m/w.224px.onnx"
    assert ModelConfig(weights="s3://models-b/r/w.h5", image_size=100).onnx_location() == (
        "s3://models-b/r/w.100px.onnx"
    )
    assert ModelConfig().onnx_location() == (
        "/home/u/.keras/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.224px.onnx"
    )
    assert (
        ModelConfig(weights="/m/w.h5", onnx="s3://models-b/x.onnx").onnx_location() == "s3://models-b/x.onnx"
    )


def test_compare_features_refuses_a_difference_beyond_the_tolerance() -> None:
    expected = np.random.default_rng(1).random((4, 2048)).astype(np.float32)

    assert compare_features(expected, expected + TOLERANCE / 2) == pytest.approx(TOLERANCE / 2, rel=1e-3)
    with pytest.raises(ExportError, match="differs from Keras by"):
        compare_features(expected, expected + 3 * TOLERANCE)
    with pytest.raises(ExportError, match="differs from Keras by nan"):
        compare_features(expected, np.full_like(expected, np.nan))
    with pytest.raises(ExportError, match="shape"):
        compare_features(expected, expected[:, :100])


def test_export_needs_sample_images(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no sample images"):
        export_onnx(
            "/w.h5", 224, str(tmp_path / "m.onnx"), np.zeros((0, 224, 224, 3), np.uint8), S3Settings()
        )
    assert not (tmp_path / "m.onnx").exists()


# ------------------------------------------------------------------ the export and its checks


@pytest.mark.integration
def test_the_export_records_what_it_was_made_from(onnx_file: str, weights: str) -> None:
    info = read_info(onnx_file)

    assert info.image_size == 224
    assert info.weights_sha256 == file_sha256(Path(weights))
    assert info.verified_images == 16
    assert 0 <= info.max_abs_difference <= TOLERANCE
    assert {"keras", "tensorflow", "tf2onnx", "onnx", "onnxruntime"} <= set(info.versions)
    assert check_onnx(onnx_file, weights, 224, S3Settings()) == info


@pytest.mark.integration
def test_onnx_features_equal_tensorflow_features(onnx_file: str, weights: str) -> None:
    pixels = load_samples(str(SAMPLE_DIR), 48, 224, S3Settings())  # spread over the classes
    spec = EmbedSpec(weights, 224, 16, 2, 50_000_000, engine="onnxruntime", onnx=onnx_file)
    batch = preprocess(pixels)

    onnx = build_onnx_fn(spec)(batch)
    keras = build_keras_fn(spec)(batch)

    assert onnx.shape == keras.shape == (48, 2048)
    np.testing.assert_allclose(onnx, keras, rtol=0, atol=1e-4)
    assert np.abs(keras).max() > 1  # real features, not zeros


@pytest.mark.integration
def test_a_missing_onnx_file_is_a_clear_error(tmp_path: Path, weights: str, s3, bucket: str) -> None:
    with pytest.raises(OnnxModelError, match=r"model.onnx=.*missing.onnx: no such file; export it with"):
        check_onnx(str(tmp_path / "missing.onnx"), weights, 224, S3Settings())
    with pytest.raises(OnnxModelError, match=rf"model.onnx=s3://{bucket}/m.onnx: .*Not Found"):
        check_onnx(f"s3://{bucket}/m.onnx", weights, 224, S3Settings())
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    with pytest.raises(OnnxModelError, match="ONNX Runtime cannot open it"):
        check_onnx(str(text), weights, 224, S3Settings())
    assert issubclass(OnnxModelError, WeightsUnavailableError)  # exit code 3, as for missing weights


@pytest.mark.integration
def test_an_onnx_file_for_another_image_size_or_weights_is_refused(
    onnx_file: str, weights: str, tmp_path: Path
) -> None:
    with pytest.raises(OnnxMismatchError, match=r"takes 224px images but model\.image_size is 100"):
        check_onnx(onnx_file, weights, 100, S3Settings())

    other = tmp_path / "other-weights.h5"
    shutil.copyfile(weights, other)
    with other.open("ab") as handle:
        handle.write(b"\0")  # any other file: another digest
    with pytest.raises(
        OnnxMismatchError, match=r"exported from other weights .* than model.weights=.*other-weights"
    ):
        check_onnx(onnx_file, str(other), 224, S3Settings())


@pytest.mark.integration
def test_an_onnx_file_without_the_export_metadata_is_refused(
    onnx_file: str, weights: str, tmp_path: Path
) -> None:
    import onnx

    proto = onnx.load(onnx_file)
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))

    with pytest.raises(OnnxMismatchError, match="not an export of this project"):
        check_onnx(str(bare), weights, 224, S3Settings())


@pytest.mark.integration
def test_an_s3_onnx_file_is_checked_from_this_machines_copy(
    onnx_file: str, weights: str, s3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRUITS_WEIGHTS_CACHE", str(tmp_path / "cache"))
    s3.upload_file(onnx_file, bucket, "models/r50.224px.onnx")

    info = check_onnx(f"s3://{bucket}/models/r50.224px.onnx", weights, 224, S3Settings())

    assert info == read_info(onnx_file)
    (copy,) = (tmp_path / "cache").rglob("r50.224px.onnx")
    assert file_sha256(copy) == file_sha256(Path(onnx_file))


# ------------------------------------------------------------------ the job with either engine


def _run(bucket: str, weights: str, run_id: str, *sets: str):
    args = ["--input", f"s3://{bucket}/images/", "--output", f"s3://{bucket}/out/", "--run-id", run_id]
    for item in (
        f"model.weights={weights}",
        "pca.k=10",
        "classifier.enabled=false",
        "report.enabled=false",
        *sets,
    ):
        args += ["--set", item]
    return spark_submit(*args)


def _features(s3, bucket: str, run_id: str, folder: Path) -> tuple[pd.DataFrame, dict]:
    download_folder(s3, S3Uri(bucket, f"out/{run_id}/"), folder)
    frame = pd.concat([pd.read_csv(p) for p in sorted((folder / "features").glob("part-*.csv"))])
    manifest = json.loads((folder / "manifest.json").read_text())
    return frame.sort_values("path").reset_index(drop=True), manifest


@pytest.mark.integration
def test_the_job_gives_the_same_components_with_either_engine(
    spark, s3, bucket: str, weights: str, onnx_file: str, tmp_path: Path
) -> None:
    images = upload_sample(s3, bucket, "images", sample_classes(12))  # 24 images: 10 components and more
    # ONNX Runtime in process; TensorFlow through spark-submit, in Python workers of its own (the
    # project's one TensorFlow end-to-end run).
    config = build_config(
        {
            "input": {"uri": f"s3://{bucket}/images/"},
            "output": {"uri": f"s3://{bucket}/out/"},
            "model": {"weights": weights, "engine": "onnxruntime", "onnx": onnx_file},
            "pca": {"k": 10},
        }
    )
    pipeline.run(spark, config, "onnx")
    tf_run = _run(bucket, weights, "tf", "model.engine=tensorflow")

    assert tf_run.returncode == 0, tf_run.stdout[-3000:]
    onnx, onnx_manifest = _features(s3, bucket, "onnx", tmp_path / "onnx")
    tf, tf_manifest = _features(s3, bucket, "tf", tmp_path / "tf")
    assert len(onnx) == len(tf) == images == 24
    assert list(onnx["path"]) == list(tf["path"])
    assert list(onnx["label"]) == list(tf["label"])
    components = [f"pc_{i}" for i in range(1, 11)]
    for name in components:  # the same signs (the sign convention): no alignment
        a, b = onnx[name].to_numpy(), tf[name].to_numpy()
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-3 * np.abs(b).max())
    np.testing.assert_allclose(
        onnx_manifest["pca"]["explained_variance"], tf_manifest["pca"]["explained_variance"], rtol=1e-4
    )
    # ResNet50 ran once per image in each; only the TensorFlow engine's workers loaded TensorFlow.
    assert onnx_manifest["counts"]["model_images"] == tf_manifest["counts"]["model_images"] == 24
    assert onnx_manifest["model"]["engine"] == "onnxruntime"
    assert onnx_manifest["model"]["onnx_export"]["weights_sha256"] == file_sha256(Path(weights))
    # (that ONNX Runtime's workers need no TensorFlow at all: test_scripts.py, the wheel without it)
    assert tf_manifest["model"]["tasks_with_tensorflow"] > 0


@pytest.mark.integration
@pytest.mark.parametrize(
    ("setting", "code", "message"),
    [
        ("missing", 3, "none.onnx: no such file; export it with `make export-onnx`"),
        ("other size", 2, "takes 224px images but model.image_size is 100"),
    ],
)
def test_the_job_stops_before_spark_work_on_a_missing_or_mismatched_onnx_file(
    spark,
    s3,
    bucket: str,
    weights: str,
    onnx_file: str,
    tmp_path: Path,
    setting: str,
    code: int,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The job's main in process (the exit code as spark-submit would return it)."""
    upload_sample(s3, bucket, "images", sample_classes(2))
    sets = {
        "missing": [f"model.onnx={tmp_path / 'none.onnx'}"],
        "other size": [f"model.onnx={onnx_file}", "model.image_size=100"],
    }[setting]
    args = ["--input", f"s3://{bucket}/images/", "--output", f"s3://{bucket}/out/", "--run-id", "stops"]
    for item in (
        f"model.weights={weights}",
        "pca.k=10",
        "classifier.enabled=false",
        "report.enabled=false",
        *sets,
    ):
        args += ["--set", item]

    got, logged = run_job_in_process(
        "extract_features", *args, spark=spark, monkeypatch=monkeypatch, caplog=caplog
    )

    assert got == code
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert message in errors[0]
    assert not any("embedded" in line for line in logged)  # no image was read or embedded
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="out/")


# ------------------------------------------------------------------ the export command


def test_load_samples_spreads_over_the_classes_from_a_folder_or_s3(s3, bucket: str) -> None:
    upload_sample(s3, bucket, "images", sample_classes(6))

    local = load_samples(str(SAMPLE_DIR), 5, 64, S3Settings())
    remote = load_samples(f"s3://{bucket}/images/", 3, 64, S3Settings())

    assert local.shape == (5, 64, 64, 3)
    assert local.dtype == np.uint8
    assert remote.shape == (3, 64, 64, 3)
    # 12 images in 6 classes, every 4th: three different classes, not the first class's two images.
    assert len({tuple(image.mean(axis=(0, 1)).round(3)) for image in remote}) == 3


def _export_command(*args: str) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        str(ROOT / "jobs" / "export_onnx.py"),
        "--config",
        str(ROOT / "conf" / "local.yaml"),
    ]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--set", "model.engine=pytorch"], 2, "config key 'model.engine'"),
        (["--samples", "/no/such/folder"], 3, "sample images: /no/such/folder is not a folder"),
    ],
)
def test_the_export_command_fails_with_one_line(
    args: list[str], code: int, message: str, weights: str, tmp_path: Path
) -> None:
    result = _export_command(
        *args, "--set", f"model.weights={weights}", "--set", f"model.onnx={tmp_path}/m.onnx"
    )

    assert result.returncode == code, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if " ERROR export_onnx: " in line]
    assert len(errors) == 1
    assert message in errors[0]
    assert not (tmp_path / "m.onnx").exists()


def test_tensorflow_import_lines_are_kept_off_stderr_unless_the_block_fails(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # What TensorFlow's native code writes before absl's logging is set up: straight to fd 2.
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)
    with tensorflow_import_quieted():
        os.write(2, b"I0000 cudart_stub.cc:31] Could not find cuda drivers\n")
    assert capfd.readouterr().err == ""

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)

    def failing_import() -> None:
        with tensorflow_import_quieted():
            os.write(2, b"F0000 the reason it failed\n")
            raise ImportError("no tensorflow")

    with pytest.raises(ImportError):
        failing_import()
    assert "F0000 the reason it failed" in capfd.readouterr().err

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # the user asked for TensorFlow's lines
    with tensorflow_import_quieted():
        os.write(2, b"I0000 shown\n")
    assert "I0000 shown" in capfd.readouterr().err
