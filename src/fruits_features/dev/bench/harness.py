"""What every benchmark shares: the images in a local S3 endpoint, the ONNX exports, the job
through spark-submit with its processes sampled, the CPU report, the results files and tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from fruits_features.cli import new_run_id
from fruits_features.dev.bench.sampling import ProcessSampler
from fruits_features.dev.local_s3 import local_s3
from fruits_features.dev.spark_submit import job_command, job_env
from fruits_features.io.s3 import s3_client

ROOT = Path(__file__).resolve().parents[4]
# The entry point: the ceilings and the scale driver run it again in processes of their own.
BENCH_SCRIPT = ROOT / "scripts" / "bench.py"
DEV_DATA = ROOT.parent / "shared" / "data" / "fruits360-dev"
RESULTS = ROOT / "bench" / "results"
MODELS = ROOT / "build" / "models"
# What `--engines` names: an engine, or OpenVINO at one precision (openvino-fp32, openvino-bf16).
ENGINES = ("onnxruntime", "tensorflow", "openvino-fp32", "openvino-bf16")
# What `--backbones` names (model.backbone); each runs on the engines it supports.
BACKBONES = ("resnet50", "efficientnet_lite2")
BUCKET = "fruits-bench"
CORES = os.cpu_count() or 1
# The job's own classifier where a benchmark scores the features: per class 70% train, seed 42.
CLASSIFY = ["classifier.enabled=true", "classifier.train_fraction=0.7", "classifier.seed=42"]


def dev_images(data: Path) -> list[Path]:
    """The development images, sorted by class then file name."""
    images = sorted(data.glob("*/*.jpg"))
    if not images:
        raise SystemExit(f"no images under {data}: set --data to a Fruits 360 folder")
    return images


def stage_images(n: int, data: Path, prefix: str) -> int:
    """Upload ``n`` images under ``s3://fruits-bench/<prefix>/<Class>/``, repeating under new keys."""
    client = s3_client()
    images = dev_images(data)
    for i in range(n):
        source = images[i % len(images)]
        key = f"{prefix}/{source.parent.name}/r{i // len(images)}_{source.name}"
        client.upload_file(str(source), BUCKET, key)
    return n


@contextmanager
def staged_images(n: int, data: Path, prefix: str) -> Iterator[int]:
    """The local S3 endpoint with ``n`` images under ``s3://fruits-bench/<prefix>/``; yields ``n``."""
    with local_s3():
        s3_client().create_bucket(Bucket=BUCKET)
        yield stage_images(n, data, prefix)


@contextmanager
def staged_dev_set(data: Path) -> Iterator[int]:
    """The local S3 endpoint with every dev image under ``s3://fruits-bench/dev/``; yields their count."""
    with staged_images(len(dev_images(data)), data, "dev") as n:
        yield n


def backbone_weights(weights: str, backbone: str) -> str:
    """The weights a backbone runs with: ``--weights`` for ResNet50; EfficientNet-Lite2's package file."""
    return weights if backbone == "resnet50" else "imagenet"


def image_size_for(size: int, backbone: str) -> int:
    """``--image-size``, or the backbone's own (224 ResNet50, 260 EfficientNet-Lite2) when it is 0."""
    from fruits_features.features.backbones import backbone as network

    return size or network(backbone).default_image_size


def first_backbone(args: Any) -> tuple[int, str]:
    """The image size and backbone of the benchmarks that measure one (knobs, progress, output
    format): ``--backbones``' first, at ``--image-size`` or its own."""
    backbone = args.backbones[0]
    return image_size_for(args.image_size, backbone), backbone


def runs_on(backbone: str, label: str) -> bool:
    """Whether the engine ``label`` names runs ``backbone`` (TensorFlow runs ResNet50 only)."""
    from fruits_features.features.backbones import backbone as network

    return engine_and_precision(label)[0] in network(backbone).engines


def onnx_file(weights: str, image_size: int, backbone: str = "resnet50") -> str:
    """The ONNX export of the backbone at ``image_size`` under build/models/, exported when missing
    (the file names `make run`, `make export-lite2` and the tests use).

    An existing file is reused only if it passes the job's own check (same backbone, weights, size).
    """
    from fruits_features.errors import FruitsFeaturesError
    from fruits_features.features.backbones import backbone as network
    from fruits_features.features.onnx_export import check_onnx
    from fruits_features.io.s3 import S3Settings

    weights = backbone_weights(weights, backbone)
    path = MODELS / f"{network(backbone).export_stem}.{image_size}px.onnx"
    if path.exists():
        try:
            check_onnx(str(path), weights, image_size, S3Settings(), network(backbone))
            return str(path)
        except FruitsFeaturesError as exc:
            print(f"re-exporting {path}: {exc}", flush=True)
    command = [
        sys.executable,
        str(ROOT / "jobs" / "export_onnx.py"),
        *("--config", str(ROOT / "conf" / "local.yaml")),
        *("--samples", str(ROOT / "tests" / "data" / "fruits360-sample")),
        *("--set", f"model.weights={weights}", "--set", f"model.image_size={image_size}"),
        *("--set", f"model.onnx={path}", "--set", f"model.backbone={backbone}"),
    ]
    subprocess.run(command, check=True, capture_output=True)
    return str(path)


def engine_and_precision(label: str) -> tuple[str, str]:
    """``openvino-bf16`` -> (``openvino``, ``bf16``); an engine alone runs fp32."""
    engine, _, precision = label.partition("-")
    return engine, precision or "fp32"


def engine_overrides(label: str, weights: str, image_size: int, backbone: str = "resnet50") -> list[str]:
    """The job's ``--set`` items for the engine ``label`` names and ``backbone``, at ``image_size``
    (after ``model.weights={weights}``, so a backbone's own weights win)."""
    engine, precision = engine_and_precision(label)
    overrides = [f"model.engine={engine}", f"model.image_size={image_size}", f"model.backbone={backbone}"]
    if backbone != "resnet50":
        overrides.append(f"model.weights={backbone_weights(weights, backbone)}")
    if engine != "tensorflow":
        overrides.append(f"model.onnx={onnx_file(weights, image_size, backbone)}")
    if engine == "openvino":
        overrides.append(f"model.precision={precision}")
    return overrides


def cpu_report() -> dict[str, Any]:
    """The CPU this sitting ran on: its name, the vector and matrix flags that matter, and what
    OpenVINO reports it can do (``BF16`` = native bf16: AMX or AVX-512 BF16)."""
    from fruits_features.features.engines import cpu_flags, openvino_capabilities

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    names = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    return {
        "model": names[0] if names else "unknown",
        "cores": CORES,
        "flags": list(cpu_flags()),
        "openvino_capabilities": list(openvino_capabilities()),
    }


def cpu_line(cpu: dict[str, Any]) -> str:
    """The CPU as the benchmarks print it first."""
    return (
        f"CPU: {cpu['model']}, {cpu['cores']} cores; flags {' '.join(cpu['flags'])}; OpenVINO: "
        f"{' '.join(cpu['openvino_capabilities']) or 'not installed'}"
    )


JOB_ROLES = ("driver_jvm", "driver_python", "worker")


def job_role(process: psutil.Process, tree: int) -> str | None:
    """The job's processes by role: the driver's JVM (spark-submit execs into it) and Python, the
    Python workers."""
    line = " ".join(process.cmdline())
    if "pyspark.daemon" in line:
        return "worker"
    if "extract_features.py" in line and "python" in process.name():
        return "driver_python"
    if process.name() == "java" and "SparkSubmit" in line:
        return "driver_jvm"
    return None


def run_job(prefix: str, n: int, weights: str, overrides: list[str], master: str) -> dict[str, Any]:
    """spark-submit the job on ``s3://fruits-bench/<prefix>/`` and return its measurements."""
    run_id = new_run_id()
    command = job_command(
        "extract_features",
        *("--input", f"s3://{BUCKET}/{prefix}/", "--output", f"s3://{BUCKET}/out/", "--run-id", run_id),
        *("--set", f"model.weights={weights}"),
        # The feature job alone (list, load, embed, PCA, write): no classifier or report unless asked.
        *("--set", "classifier.enabled=false", "--set", "report.enabled=false"),
        *[arg for item in overrides for arg in ("--set", item)],
        master=master,
        driver_memory="2g",
    )
    env = job_env()
    started = time.perf_counter()
    own = psutil.Process().cpu_times()  # this process serves the local S3 endpoint (moto's threads)
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as job:
        sampler = ProcessSampler([(job.pid, True)], job_role)
        with sampler.running():
            log, _ = job.communicate()
    wall = time.perf_counter() - started
    after = psutil.Process().cpu_times()
    cpu = {role: sampler.cpu_seconds(role) for role in JOB_ROLES}
    cpu["local_s3"] = after.user + after.system - own.user - own.system
    if job.returncode != 0:
        raise SystemExit(f"the job failed ({job.returncode}):\n{log[-4000:]}")
    client = s3_client()
    body = client.get_object(Bucket=BUCKET, Key=f"out/{run_id}/manifest.json")["Body"].read()
    features = client.list_objects_v2(Bucket=BUCKET, Prefix=f"out/{run_id}/features/").get("Contents", [])
    manifest = json.loads(body)
    timings = manifest["timings_seconds"]
    spark = manifest.get("spark") or {}
    task_cpus = int((manifest.get("config") or {}).get("spark", {}).get("conf", {}).get("spark.task.cpus", 1))
    return {
        "n": n,
        "overrides": overrides,
        "master": master,
        "run_id": run_id,
        "images_per_s": n / timings["total"],
        "embed_images_per_s": n / timings["load_and_embed"],
        "wall_seconds": wall,
        "timings_seconds": timings,
        "partitions": spark.get("partitions"),
        "task_slots": max(1, int(spark.get("default_parallelism") or 1) // max(1, task_cpus)),
        "model_images": manifest["counts"]["model_images"],
        "augmented_images": manifest["counts"].get("augmented", 0),  # copies through the model
        "featurized": manifest["counts"]["featurized"],
        "peak_memory_mib": {role: sampler.peak(f"max:{role}") for role in JOB_ROLES},
        "cpu_seconds": {role: round(seconds, 1) for role, seconds in cpu.items()},
        "classifier": manifest.get("classifier"),
        "features_bytes": sum(item["Size"] for item in features),
        "progress_lines": [line for line in log.splitlines() if "fruits_features.progress: embed: " in line],
    }


def save(name: str, result: dict[str, Any]) -> Path:
    """``bench/results/<name>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path


def table(rows: list[tuple[str, ...]]) -> str:
    """Rows as aligned text columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def job_row(label: str, job: dict[str, Any], ceiling: float | None = None) -> tuple[str, ...]:
    """One job's row under :data:`JOB_HEADER` (``ratio``: to ``ceiling``, the model's images/s)."""
    t = job["timings_seconds"]
    return (
        label,
        str(job["n"]),
        f"{job['images_per_s']:.2f}",
        f"{job['images_per_s'] / ceiling:.2f}" if ceiling else "",
        f"{t['load_and_embed']:.1f}",
        f"{t['reduce']:.1f}",
        f"{t['write']:.1f}",
        f"{t['total']:.1f}",
        f"{job['wall_seconds']:.1f}",
        f"{job['peak_memory_mib']['driver_jvm']:.0f}/{job['peak_memory_mib']['driver_python']:.0f}",
        f"{job['peak_memory_mib']['worker']:.0f}",
        str(job["model_images"]),
    )


JOB_HEADER = (
    "run", "N", "img/s", "ratio", "embed s", "pca s", "write s", "total s", "wall s",
    "driver MiB jvm/py", "worker MiB", "model calls",
)  # fmt: skip
