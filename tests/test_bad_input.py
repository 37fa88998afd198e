"""Broken, odd and convertible inputs: every listed image is featurized or rejected with a reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from bad_corpus import NOT_IMAGES, bad_corpus, decompression_bomb_png
from conftest import read_rejects, sample_classes, upload_sample
from fruits_features import pipeline
from fruits_features.config import JobConfig
from fruits_features.config_files import build_config
from fruits_features.errors import OutputError, TooManyRejectsError
from fruits_features.io.folders import download_folder
from fruits_features.io.uri import S3Uri

pytestmark = pytest.mark.integration


def config_for(bucket: str, weights: str, onnx: str, max_rejected_fraction: float) -> JobConfig:
    return build_config(
        {
            "input": {"uri": f"s3://{bucket}/images/"},
            "model": {"weights": weights, "image_size": 64, "onnx": onnx},
            "pca": {"k": 3},
            "max_rejected_fraction": max_rejected_fraction,
            # Neither the report nor the files of incremental runs are what these tests check.
            "report": {"enabled": False},
            "output": {"uri": f"s3://{bucket}/features/", "incremental_base": False},
        }
    )


def read_run(s3, bucket: str, run_id: str, local: Path) -> dict[str, object]:
    download_folder(s3, S3Uri(bucket, f"features/{run_id}/"), local)
    parts = sorted((local / "features").glob("part-*.csv"))
    return {
        "features": pd.concat([pd.read_csv(p) for p in parts]) if parts else None,
        "rejected": read_rejects(local),
        "files": sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()),
    }


def test_bad_images_are_rejected_with_reasons_and_convertible_ones_featurized(
    spark, s3, bucket: str, weights: str, onnx_file_64: str, tmp_path: Path
) -> None:
    upload_sample(s3, bucket, "images", sample_classes(3))
    cases = bad_corpus()
    for case in cases:
        s3.put_object(Bucket=bucket, Key=f"images/{case.key}", Body=case.body)
    for key, body in NOT_IMAGES.items():
        s3.put_object(Bucket=bucket, Key=f"images/{key}", Body=body)

    result = pipeline.run(spark, config_for(bucket, weights, onnx_file_64, 0.5), "corpus")

    out = read_run(s3, bucket, "corpus", tmp_path)
    featurized = set(out["features"]["path"])
    reasons = dict(zip(out["rejected"]["path"], out["rejected"]["reason"], strict=True))
    for case in cases:
        path = f"s3://{bucket}/images/{case.key}"
        if case.reason is None:
            assert path in featurized, f"{case.key} was not featurized: {reasons.get(path)}"
        else:
            assert path in reasons, f"{case.key} was not rejected"
            assert case.reason in reasons[path]
    counts = result.manifest["counts"]
    assert counts["images"] == 6 + len(cases)
    assert counts["images"] == counts["featurized"] + counts["rejected"]
    assert counts["rejected"] == sum(case.reason is not None for case in cases)
    assert counts["keys_skipped"] == len(NOT_IMAGES)  # folder marker, other extensions, no class folder
    assert out["features"]["path"].is_unique


def test_rejects_over_the_limit_fail_the_run_without_success_marker(
    spark, s3, bucket: str, weights: str, onnx_file_64: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    upload_sample(s3, bucket, "images", sample_classes(2))  # 4 good images
    s3.put_object(Bucket=bucket, Key="images/Broken/a.jpg", Body=b"")
    s3.put_object(Bucket=bucket, Key="images/Broken/b.jpg", Body=b"plain text")

    with pytest.raises(
        TooManyRejectsError, match=r"2 of 6 images rejected \(33\.3%\), over max_rejected_fraction=0\.2"
    ):
        pipeline.run(spark, config_for(bucket, weights, onnx_file_64, 0.2), "strict")

    failed = read_run(s3, bucket, "strict", tmp_path / "strict")
    assert "_SUCCESS" not in failed["files"]
    assert len(failed["rejected"]) == 2
    assert failed["features"] is None
    with pytest.raises(OutputError, match="already holds objects"):
        pipeline.run(
            spark, config_for(bucket, weights, onnx_file_64, 0.2), "strict"
        )  # a rerun never mixes with it

    with caplog.at_level("WARNING"):
        pipeline.run(spark, config_for(bucket, weights, onnx_file_64, 0.5), "lenient")

    lenient = read_run(s3, bucket, "lenient", tmp_path / "lenient")
    assert "_SUCCESS" in lenient["files"]
    assert len(lenient["features"]) == 4
    assert "2 of 6 images rejected (33.3%), within max_rejected_fraction=0.5" in caplog.text


def test_decompression_bomb_is_refused_without_allocating_its_pixels(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(decompression_bomb_png())
    code = (
        "import re\n"
        "from fruits_features.features.decoding import ImageDecodeError, decode_image\n"
        "try:\n"
        f"    decode_image(open({str(bomb)!r}, 'rb').read(), 224, 50_000_000)\n"
        "except ImageDecodeError as exc:\n"
        "    print(exc)\n"
        # VmHWM is this process's own peak: ru_maxrss would carry the forking test runner's over exec.
        "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    reason, peak_kib = result.stdout.strip().splitlines()
    assert "too many pixels" in reason or "over the limit" in reason
    assert int(peak_kib) < 300 * 1024  # 900 million pixels would need at least 900 MB
