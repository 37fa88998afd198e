"""The OpenVINO engine: fp32 equal to ONNX Runtime, bf16 within what bf16 can promise, and the
engine/precision each executor resolves for the CPU it runs on.

These run on every machine: where the CPU has no native bf16, OpenVINO runs a bf16 request as it
can there, and the assertions still hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conftest import SAMPLE_DIR, sample_classes, upload_sample
from fruits_features import pipeline
from fruits_features.config_files import build_config
from fruits_features.errors import ConfigError
from fruits_features.features.backbones import caffe_preprocess
from fruits_features.features.engines import (
    EmbedSpec,
    build_onnx_fn,
    build_openvino_fn,
    cpu_flags,
    cpu_vendor,
    matrix_flags,
    openvino_capabilities,
    resolve_engine,
)
from fruits_features.features.samples import load_samples
from fruits_features.io.folders import download_folder
from fruits_features.io.s3 import S3Settings
from fruits_features.io.uri import S3Uri

AMX = ("FP32", "BF16", "INT8", "BIN", "EXPORT_IMPORT")
AVX2 = ("FP32", "INT8", "BIN", "EXPORT_IMPORT")


def no_probe() -> tuple[str, ...]:
    raise AssertionError("the CPU is probed only for openvino and auto")


INTEL_AMX = ("GenuineIntel", ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"))
INTEL_AVX512_BF16 = ("GenuineIntel", ("avx2", "avx512f", "avx512_bf16", "avx512_vnni"))
AMD_ZEN5 = ("AuthenticAMD", ("avx2", "avx512f", "avx512_bf16", "avx512_vnni"))
AMD_AVX2 = ("AuthenticAMD", ("avx2",))


@pytest.mark.parametrize(
    ("engine", "precision", "capabilities", "cpu", "expected"),
    [
        ("auto", "auto", AMX, INTEL_AMX, ("openvino", "bf16")),
        ("auto", "bf16", AMX, INTEL_AMX, ("openvino", "bf16")),
        ("auto", "auto", AMX, AMD_ZEN5, ("openvino", "bf16")),
        # OpenVINO reports BF16 on AVX-512 BF16 without AMX, where bf16 measured slower than fp32.
        ("auto", "auto", AMX, INTEL_AVX512_BF16, ("onnxruntime", "fp32")),
        ("openvino", "auto", AMX, INTEL_AVX512_BF16, ("openvino", "fp32")),
        ("auto", "auto", AVX2, AMD_AVX2, ("onnxruntime", "fp32")),
        ("auto", "bf16", AVX2, AMD_AVX2, ("onnxruntime", "fp32")),
        ("auto", "fp32", AMX, INTEL_AMX, ("onnxruntime", "fp32")),
        ("auto", "auto", (), INTEL_AMX, ("onnxruntime", "fp32")),  # no OpenVINO installed
        ("openvino", "auto", AMX, INTEL_AMX, ("openvino", "bf16")),
        ("openvino", "auto", AVX2, AMD_AVX2, ("openvino", "fp32")),
        ("openvino", "bf16", AVX2, AMD_AVX2, ("openvino", "bf16")),  # asked for by name
        ("openvino", "bf16", AMX, INTEL_AVX512_BF16, ("openvino", "bf16")),
        ("openvino", "fp32", AMX, INTEL_AMX, ("openvino", "fp32")),
    ],
)
def test_engine_and_precision_follow_the_cpu_capabilities(
    engine: Any, precision: Any, capabilities: tuple[str, ...], cpu: Any, expected: tuple[str, str]
) -> None:
    resolved = resolve_engine(engine, precision, probe=lambda: capabilities, cpu=lambda: cpu)
    assert (resolved.engine, resolved.precision) == expected
    assert resolved.capabilities == capabilities
    assert resolved.cpu_flags == cpu[1]


def test_the_cpu_vendor_is_read_from_cpuinfo(tmp_path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2\n")
    assert cpu_vendor(str(cpuinfo)) == "AuthenticAMD"
    assert cpu_vendor(str(tmp_path / "missing")) == ""


def test_fp32_engines_never_probe_openvino_but_record_the_cpu_flags() -> None:
    for engine in ("onnxruntime", "tensorflow"):
        resolved = resolve_engine(engine, "auto", probe=no_probe)
        assert (resolved.engine, resolved.precision) == (engine, "fp32")
        assert resolved.cpu_flags == cpu_flags()
    flags = " ".join(cpu_flags())
    assert (
        resolve_engine("onnxruntime", "auto", probe=no_probe).describe() == f"onnxruntime fp32 (CPU: {flags})"
    )
    assert resolve_engine("openvino", "bf16", probe=lambda: AMX).describe() == (
        f"openvino bf16 (CPU: {flags}; OpenVINO: FP32 BF16 INT8 BIN EXPORT_IMPORT)"
    )


SAPPHIRE_RAPIDS = (
    "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8488C\n"
    "flags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8 smap\n"
    "processor\t: 1\nflags\t\t: fpu\n"
)


def test_matrix_flags_are_read_from_cpuinfo_in_a_fixed_order() -> None:
    assert matrix_flags(SAPPHIRE_RAPIDS) == (
        "avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8"
    )  # fmt: skip
    assert matrix_flags("flags : fpu sse4_2 avx2 fma\n") == ("avx2",)
    assert matrix_flags("") == ()
    assert cpu_flags("/nonexistent/cpuinfo") == ()


def test_this_cpu_reports_its_capabilities() -> None:
    capabilities = openvino_capabilities()
    assert "FP32" in capabilities, capabilities


def test_bf16_with_an_fp32_only_engine_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model\.precision bf16 needs model\.engine openvino or auto"):
        build_config(
            {
                "input": {"uri": "s3://fruits-in/images/"},
                "output": {"uri": "s3://fruits-out/features/"},
                "model": {"engine": "onnxruntime", "precision": "bf16"},
            }
        )


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    return caffe_preprocess(load_samples(str(SAMPLE_DIR), 32, 224, S3Settings()))


def test_openvino_fp32_equals_onnxruntime_and_bf16_stays_within_cosine_0999(
    onnx_file: str, samples: np.ndarray
) -> None:
    spec = EmbedSpec(
        weights="unused", image_size=224, batch_size=16, threads=2, max_image_pixels=10**8, onnx=onnx_file
    )
    reference = np.concatenate([build_onnx_fn(spec)(samples[i : i + 16]) for i in range(0, len(samples), 16)])
    fp32_fn = build_openvino_fn(spec, "fp32")
    bf16_fn = build_openvino_fn(spec, "bf16")
    # Batches of another size than the first, and a last, shorter one: the batch dimension is open.
    fp32 = np.concatenate([fp32_fn(samples[i : i + 12]) for i in range(0, len(samples), 12)])
    bf16 = np.concatenate([bf16_fn(samples[i : i + 12]) for i in range(0, len(samples), 12)])

    assert reference.shape == fp32.shape == bf16.shape == (32, 2048)
    np.testing.assert_allclose(fp32, reference, atol=1e-4)
    cosine = (bf16 * reference).sum(axis=1) / (
        np.linalg.norm(bf16, axis=1) * np.linalg.norm(reference, axis=1)
    )
    assert cosine.min() >= 0.999, cosine.min()


def job_config(bucket: str, run: str, weights: str, onnx_file: str, **model: Any) -> Any:
    return build_config(
        {
            "input": {"uri": f"s3://{bucket}/images/"},
            "output": {"uri": f"s3://{bucket}/{run}/"},
            "model": {"weights": weights, "onnx": onnx_file, **model},
            "pca": {"k": 10},
            "classifier": {"enabled": False},
            "report": {"enabled": False},
        }
    )


def standardized(features: np.ndarray) -> np.ndarray:
    """The features as the job's StandardScaler makes them (mean 0, unbiased standard deviation 1)."""
    std = features.std(axis=0, ddof=1)
    return (features - features.mean(axis=0)) / np.where(std > 0, std, 1.0)


def pca_loadings(local: Path) -> np.ndarray:
    """The ``(2048, k)`` loadings of a run's saved pipeline (``model/pipeline``), signs applied."""
    from pyspark.ml import PipelineModel

    stages = PipelineModel.load(str(local / "model" / "pipeline")).stages
    return np.asarray(stages[1].pc.toArray() * stages[2].getScalingVec().toArray())


@pytest.mark.integration
def test_the_job_with_openvino_bf16_keeps_each_images_features_and_the_pca_subspace_of_fp32(
    spark, s3, weights: str, onnx_file: str, tmp_path: Path
) -> None:
    """bf16 (where the CPU has it natively, really bf16) against ONNX Runtime fp32 on the same 40
    images: per-image cosine of the 2048 features, and the PCA subspace, by principal angles, within
    the Davis-Kahan bound that the features' own difference sets. Both hold on every CPU; neither
    compares single components, which two fits on 40 images may swap under any perturbation."""
    bucket = "openvino-job"
    s3.create_bucket(Bucket=bucket)
    upload_sample(s3, bucket, "images", sample_classes(20))
    frames, embeddings, loadings, manifests = {}, {}, {}, {}
    for name, model in {
        "onnxruntime": {"engine": "onnxruntime"},
        "openvino": {"engine": "openvino", "precision": "bf16"},
    }.items():
        result = pipeline.run(spark, job_config(bucket, name, weights, onnx_file, **model), "run")
        local = tmp_path / name
        download_folder(s3, S3Uri.parse(result.run_uri), local)
        parts = sorted((local / "features").glob("part-*.csv"))
        frames[name] = pd.concat([pd.read_csv(p) for p in parts]).sort_values("path").reset_index(drop=True)
        embedded = pd.read_parquet(local / "embeddings").sort_values("path")
        embeddings[name] = np.stack(embedded["features"].to_numpy()).astype(np.float64)
        loadings[name] = pca_loadings(local)
        manifests[name] = result.manifest

    ort, ov = frames["onnxruntime"], frames["openvino"]
    assert len(ort) == 40
    assert ort["path"].tolist() == ov["path"].tolist()
    assert ort["label"].tolist() == ov["label"].tolist()

    fp32, bf16 = embeddings["onnxruntime"], embeddings["openvino"]
    cosine = (fp32 * bf16).sum(axis=1) / (np.linalg.norm(fp32, axis=1) * np.linalg.norm(bf16, axis=1))
    assert cosine.min() >= 0.999, cosine.min()

    native = "BF16" in openvino_capabilities()
    (used,) = manifests["openvino"]["model"]["executors"]
    flags = " ".join(cpu_flags()) or "unknown"
    assert used.startswith(f"openvino bf16 (CPU: {flags}; OpenVINO: ")
    assert ("BF16" in used.split("OpenVINO: ", 1)[1].split()) == native
    if native:  # it really ran in bf16: its features are not fp32's
        assert cosine.min() < 1 - 1e-6, cosine.min()
    else:  # OpenVINO ran the bf16 request in fp32 on this CPU
        assert cosine.min() > 1 - 1e-6, cosine.min()
    assert list(manifests["onnxruntime"]["model"]["executors"]) == [f"onnxruntime fp32 (CPU: {flags})"]

    # The first k loadings span the same subspace: the largest principal angle's sine is within the
    # Davis-Kahan bound (Yu, Wang & Samworth 2015) for the two covariances' difference, at the k
    # among 1-10 whose eigengap makes the bound tightest.
    covariance = {name: np.cov(standardized(x), rowvar=False) for name, x in embeddings.items()}
    eigenvalues = np.linalg.eigvalsh(covariance["onnxruntime"])[::-1]
    difference = np.linalg.norm(covariance["openvino"] - covariance["onnxruntime"], ord=2)
    bounds = {k: 2 * np.sqrt(k) * difference / (eigenvalues[k - 1] - eigenvalues[k]) for k in range(1, 11)}
    k = min(bounds, key=bounds.__getitem__)
    cosines = np.linalg.svd(loadings["onnxruntime"][:, :k].T @ loadings["openvino"][:, :k], compute_uv=False)
    largest_sine = np.sqrt(max(0.0, 1 - cosines.min() ** 2))
    assert largest_sine <= min(1.0, bounds[k]), (k, largest_sine, bounds)
    if not native:  # fp32 against fp32: the same subspace to float noise
        assert largest_sine < 1e-3, (k, largest_sine)
