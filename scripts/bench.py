"""`make bench`: where the job's time goes, against the model's own speed.

Measures, on N images copied from ../shared/data/fruits360-dev into a local S3 endpoint:

1. model ceiling: the bare ResNet50 forward pass over pre-decoded, pre-resized, preprocessed arrays
   (same batch size, image size and total threads as the job), in images/s;
2. decode ceiling: decode + resize + preprocess alone, one core, in images/s;
3. the job: `spark-submit jobs/extract_features.py` end to end, in images/s over the manifest's
   total, with its stage timings, how many images went through ResNet50, and the peak memory of
   the driver (JVM and Python) and of the Python workers;
4. the ratio job / model ceiling.

Each engine (`--engines`, default both: onnxruntime and tensorflow) is measured against its own
ceiling; the ONNX files come from `jobs/export_onnx.py` (exported on first use into build/models/).

Subcommands: `run` (the above for each engine, plus a scaling run over several N), `knobs` (one
job per setting of each tuning knob, one engine), `image-size` (224 against the native 100x100:
throughput and the accuracy of a job's own classifier on the components, fixed split), `progress`
(the job with progress lines every 15 s against none, in turn, pair by pair), `output-format` (the
dev set written as CSV and as Parquet: the features' size and the write stage), `precision` (the
job's classifier on the dev set with ONNX Runtime fp32, OpenVINO fp32 and OpenVINO bf16, same
split), `scale` (the job's listing and partitioning of 10k to 1M keys from a generated S3 Inventory
report and key list, and the sequential listing for contrast, by a spark-submit driver on a local
standalone cluster: time, the driver's peak memory, the executors' CPU; no images, no model). Each
writes JSON (and `run` a PNG) under bench/results/ and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from fruits_features.cli import new_run_id
from fruits_features.dev.local_s3 import local_s3
from fruits_features.dev.spark_submit import job_command, job_env
from fruits_features.io.s3 import s3_client

ROOT = Path(__file__).resolve().parent.parent
DEV_DATA = ROOT.parent / "shared" / "data" / "fruits360-dev"
RESULTS = ROOT / "bench" / "results"
MODELS = ROOT / "build" / "models"
# What `--engines` names: an engine, or OpenVINO at one precision (openvino-fp32, openvino-bf16).
ENGINES = ("onnxruntime", "tensorflow", "openvino-fp32", "openvino-bf16")
BUCKET = "fruits-bench"
CORES = os.cpu_count() or 1


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
def staged_dev_set(data: Path) -> Iterator[int]:
    """The local S3 endpoint with every dev image under ``s3://fruits-bench/dev/``; yields their count."""
    with local_s3():
        s3_client().create_bucket(Bucket=BUCKET)
        yield stage_images(len(dev_images(data)), data, "dev")


# ---------------------------------------------------------------- ceilings (in a fresh process)


def onnx_file(weights: str, image_size: int) -> str:
    """The ONNX export of ``weights`` at ``image_size`` under build/models/, exported when missing.

    An existing file is reused only if it passes the job's own check (same weights and size).
    """
    from fruits_features.errors import FruitsFeaturesError
    from fruits_features.features.onnx_export import check_onnx
    from fruits_features.io.s3 import S3Settings

    path = MODELS / f"resnet50-notop.{image_size}px.onnx"
    if path.exists():
        try:
            check_onnx(str(path), weights, image_size, S3Settings())
            return str(path)
        except FruitsFeaturesError as exc:
            print(f"re-exporting {path}: {exc}", flush=True)
    command = [
        sys.executable,
        str(ROOT / "jobs" / "export_onnx.py"),
        *("--config", str(ROOT / "conf" / "local.yaml")),
        *("--samples", str(ROOT / "tests" / "data" / "fruits360-sample")),
        *("--set", f"model.weights={weights}", "--set", f"model.image_size={image_size}"),
        *("--set", f"model.onnx={path}"),
    ]
    subprocess.run(command, check=True, capture_output=True)
    return str(path)


def engine_and_precision(label: str) -> tuple[str, str]:
    """``openvino-bf16`` -> (``openvino``, ``bf16``); an engine alone runs fp32."""
    engine, _, precision = label.partition("-")
    return engine, precision or "fp32"


def engine_overrides(label: str, weights: str, image_size: int) -> list[str]:
    """The job's ``--set`` items for the engine ``label`` names, at ``image_size``."""
    engine, precision = engine_and_precision(label)
    overrides = [f"model.engine={engine}", f"model.image_size={image_size}"]
    if engine != "tensorflow":
        overrides.append(f"model.onnx={onnx_file(weights, image_size)}")
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


def ceilings(
    *, engine: str, image_size: int, batch_size: int, threads: int, weights: str, data: Path, images: int
) -> dict[str, Any]:
    """Model and decode ceilings, measured in a child process so the engine's threads are fresh."""
    command = [
        sys.executable,
        __file__,
        "_ceilings",
        *("--engines", engine, "--image-size", str(image_size), "--batch-size", str(batch_size)),
        *("--threads", str(threads), "--weights", weights, "--data", str(data), "--n", str(images)),
    ]
    if engine_and_precision(engine)[0] != "tensorflow":
        command += ["--onnx", onnx_file(weights, image_size)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def _measure_ceilings(args: argparse.Namespace) -> None:
    from fruits_features.features.decoding import decode_image
    from fruits_features.features.engines import EmbedSpec, build_model_fn, preprocess

    paths = (dev_images(Path(args.data)) * (1 + args.n // 1310))[: args.n]
    blobs = [p.read_bytes() for p in paths]
    started = time.perf_counter()
    pixels = [decode_image(b, args.image_size, 50_000_000) for b in blobs]
    arrays = preprocess(np.stack(pixels))
    decode_rate = len(blobs) / (time.perf_counter() - started)

    (label,) = args.engines
    engine, precision = engine_and_precision(label)
    spec = EmbedSpec(
        args.weights,
        args.image_size,
        args.batch_size,
        args.threads,
        50_000_000,
        engine=engine,  # type: ignore[arg-type]
        onnx=args.onnx,
        precision=precision,  # type: ignore[arg-type]
    )
    started = time.perf_counter()
    model_fn = build_model_fn(spec)
    batches = [arrays[i : i + args.batch_size] for i in range(0, len(arrays), args.batch_size)]
    model_fn(batches[0])  # trace and warm up: the job pays this once per worker, not per image
    startup = time.perf_counter() - started
    started = time.perf_counter()
    for batch in batches:
        model_fn(batch)
    model_rate = len(arrays) / (time.perf_counter() - started)
    print(
        json.dumps(
            {
                "engine": label,
                "model_images_per_s": model_rate,
                "decode_images_per_s": decode_rate,
                "images": len(arrays),
                "model_startup_s": startup,
            }
        )
    )


# ---------------------------------------------------------------- the job, with memory sampling


@dataclass
class MemorySampler:
    """Peak resident memory and CPU seconds of a process tree, by role, sampled every ``interval`` s.

    CPU seconds are each process's last sampled user + system time, summed by role: where the
    machine's cores went (the model in the Python workers, the JVM, the local S3 server).
    """

    root: int
    interval: float = 0.2
    peaks_mib: dict[str, float] = field(
        default_factory=lambda: {"driver_jvm": 0.0, "driver_python": 0.0, "worker": 0.0}
    )
    _cpu: dict[int, tuple[str, float]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def cpu_seconds(self) -> dict[str, float]:
        totals = dict.fromkeys(self.peaks_mib, 0.0)
        for role, seconds in self._cpu.values():
            totals[role] += seconds
        return totals

    def _role(self, process: psutil.Process) -> str | None:
        line = " ".join(process.cmdline())
        if "pyspark.daemon" in line:
            return "worker"
        if "extract_features.py" in line and "python" in process.name():
            return "driver_python"
        if process.name() == "java" and "SparkSubmit" in line:
            return "driver_jvm"
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                # spark-submit execs into the driver JVM: the root itself is the JVM.
                root = psutil.Process(self.root)
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for process in tree:
                try:
                    role = self._role(process)
                    if role:
                        rss = process.memory_info().rss / 2**20
                        self.peaks_mib[role] = max(self.peaks_mib[role], rss)
                        times = process.cpu_times()
                        self._cpu[process.pid] = (role, times.user + times.system)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self._stop.wait(self.interval)

    @contextmanager
    def running(self) -> Iterator[None]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()


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
        sampler = MemorySampler(job.pid)
        with sampler.running():
            log, _ = job.communicate()
    wall = time.perf_counter() - started
    after = psutil.Process().cpu_times()
    cpu = {**sampler.cpu_seconds, "local_s3": after.user + after.system - own.user - own.system}
    if job.returncode != 0:
        raise SystemExit(f"the job failed ({job.returncode}):\n{log[-4000:]}")
    client = s3_client()
    body = client.get_object(Bucket=BUCKET, Key=f"out/{run_id}/manifest.json")["Body"].read()
    features = client.list_objects_v2(Bucket=BUCKET, Prefix=f"out/{run_id}/features/").get("Contents", [])
    manifest = json.loads(body)
    timings = manifest["timings_seconds"]
    return {
        "n": n,
        "overrides": overrides,
        "master": master,
        "run_id": run_id,
        "images_per_s": n / timings["total"],
        "embed_images_per_s": n / timings["load_and_embed"],
        "wall_seconds": wall,
        "timings_seconds": timings,
        "model_images": manifest["counts"]["model_images"],
        "featurized": manifest["counts"]["featurized"],
        "peak_memory_mib": sampler.peaks_mib,
        "cpu_seconds": {role: round(seconds, 1) for role, seconds in cpu.items()},
        "classifier": manifest.get("classifier"),
        "features_bytes": sum(item["Size"] for item in features),
        "progress_lines": [line for line in log.splitlines() if "fruits_features.progress: embed: " in line],
    }


# ---------------------------------------------------------------- reports


def save(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def job_row(label: str, job: dict[str, Any], ceiling: float | None = None) -> tuple[str, ...]:
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
    "driver MiB jvm/py", "worker MiB", "resnet calls",
)  # fmt: skip


def plot_run(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = result["engines"]
    colours = {
        "onnxruntime": "#dd8452",
        "tensorflow": "#4c72b0",
        "openvino-fp32": "#55a868",
        "openvino-bf16": "#8172b3",
    }
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(16, 4.8))
    n = result["settings"]["n"]
    labels, rates, bar_colours = [], [], []
    for engine, measured in engines.items():
        labels += [f"{engine}\nmodel ceiling", f"{engine}\njob N={n}"]
        rates += [measured["ceilings"]["model_images_per_s"], measured["job"]["images_per_s"]]
        bar_colours += [colours.get(engine, "#8c8c8c")] * 2
    bars = left.barh(labels, rates, color=bar_colours)
    for bar in bars[1::2]:  # the jobs, lighter than their ceilings
        bar.set_alpha(0.6)
    for row, rate in enumerate(rates):
        left.text(rate, row, f" {rate:.1f}", va="center")
    left.set_xlim(0, max(rates) * 1.3)
    left.set_xlabel("images/s")
    ratios = ", ".join(f"{e} {m['ratio']:.2f}" for e, m in engines.items())
    left.set_title(f"job / own model ceiling: {ratios}")

    stages = ["list", "preflight", "load_and_embed", "reduce", "write"]
    width = 0.8 / len(engines)
    for i, (engine, measured) in enumerate(engines.items()):
        seconds = [measured["job"]["timings_seconds"].get(stage, 0.0) for stage in stages]
        middle.bar(
            [x + i * width for x in range(len(stages))],
            seconds,
            width,
            label=engine,
            color=colours.get(engine, "#8c8c8c"),
        )
    middle.set_xticks([x + width * (len(engines) - 1) / 2 for x in range(len(stages))], stages, rotation=30)
    middle.set_ylabel("seconds")
    middle.set_title(f"where the job's time goes (N={n})")
    middle.legend()

    twin = right.twinx()
    for engine, measured in engines.items():
        scaling = measured["scaling"]
        ns = [job["n"] for job in scaling]
        colour = colours.get(engine, "#8c8c8c")
        right.plot(ns, [job["timings_seconds"]["total"] for job in scaling], "o-", color=colour, label=engine)
        twin.plot(
            ns, [job["peak_memory_mib"]["driver_jvm"] for job in scaling], "s--", color=colour, alpha=0.5
        )
        twin.plot(ns, [job["peak_memory_mib"]["worker"] for job in scaling], "^:", color=colour, alpha=0.5)
    right.set_xlabel("images (N)")
    right.set_ylabel("job total (s), solid")
    twin.set_ylabel("peak MiB: driver JVM (squares), Python worker (triangles)")
    twin.set_ylim(bottom=0)
    right.legend(loc="upper left")
    right.set_title("scaling: time linear in N, memory flat")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- subcommands


def cmd_run(args: argparse.Namespace) -> None:
    sizes = sorted({args.n, *args.scaling})
    engines: dict[str, dict[str, Any]] = {}
    cpu = cpu_report()
    print(
        f"CPU: {cpu['model']}, {cpu['cores']} cores; flags {' '.join(cpu['flags'])}; OpenVINO: "
        f"{' '.join(cpu['openvino_capabilities']) or 'not installed'}",
        flush=True,
    )
    with local_s3():
        s3_client().create_bucket(Bucket=BUCKET)
        for n in sizes:
            stage_images(n, args.data, f"n{n}")
        for engine in args.engines:
            ceiling = ceilings(
                engine=engine,
                image_size=args.image_size,
                batch_size=args.batch_size,
                threads=CORES,
                weights=args.weights,
                data=args.data,
                images=min(args.n, 512),
            )
            overrides = engine_overrides(engine, args.weights, args.image_size)
            jobs = {n: run_job(f"n{n}", n, args.weights, overrides, args.master) for n in sizes}
            engines[engine] = {
                "ceilings": ceiling,
                "job": jobs[args.n],
                "ratio": jobs[args.n]["images_per_s"] / ceiling["model_images_per_s"],
                "scaling": [jobs[n] for n in sizes],
            }
            print(f"{engine}: job / model ceiling = {engines[engine]['ratio']:.2f} at N={args.n}", flush=True)
    result: dict[str, Any] = {
        "machine": {
            "cores": CORES,
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "cpu": cpu,
        },
        "settings": {
            "n": args.n,
            "image_size": args.image_size,
            "batch_size": args.batch_size,
            "master": args.master,
        },
        "engines": engines,
    }
    if {"onnxruntime", "tensorflow"} <= engines.keys():
        onnx, tf = engines["onnxruntime"], engines["tensorflow"]
        result["onnxruntime_over_tensorflow"] = {
            "job": onnx["job"]["images_per_s"] / tf["job"]["images_per_s"],
            "model_ceiling": onnx["ceilings"]["model_images_per_s"] / tf["ceilings"]["model_images_per_s"],
        }
    path = save("run", result)
    plot_run(result, RESULTS / "run.png")
    for engine, measured in engines.items():
        ceiling = measured["ceilings"]
        print(
            f"{engine}: model ceiling {ceiling['model_images_per_s']:.2f} images/s ({CORES} threads, "
            f"batch {args.batch_size}, start-up {ceiling['model_startup_s']:.1f}s); decode ceiling "
            f"{ceiling['decode_images_per_s']:.2f} images/s (one core)"
        )
    rows: list[tuple[str, ...]] = [JOB_HEADER]
    for engine, measured in engines.items():
        rate = measured["ceilings"]["model_images_per_s"]
        rows += [job_row(f"{engine} N={job['n']}", job, rate) for job in measured["scaling"]]
    print(table(rows))
    for engine, measured in engines.items():
        print(f"headline: {engine} job / its model ceiling = {measured['ratio']:.2f} at N={args.n}")
    if "onnxruntime_over_tensorflow" in result:
        both = result["onnxruntime_over_tensorflow"]
        print(f"onnxruntime / tensorflow: job {both['job']:.2f}x, model ceiling {both['model_ceiling']:.2f}x")
    print(f"wrote {path} and {RESULTS / 'run.png'}")


KNOBS: dict[str, list[list[str]]] = {
    "model.batch_size": [["model.batch_size=8"], ["model.batch_size=32"], ["model.batch_size=64"]],
    "arrow maxRecordsPerBatch": [
        [f"spark.conf.spark.sql.execution.arrow.maxRecordsPerBatch={v}"] for v in (32, 256, 2048)
    ],
    "spark.partitions": [["spark.partitions=0"], ["spark.partitions=8"], ["spark.partitions=32"]],
    "threads x task.cpus": [
        ["model.threads=1", "spark.conf.spark.task.cpus=1"],
        ["model.threads=2", "spark.conf.spark.task.cpus=2"],
        ["model.threads=2", "spark.conf.spark.task.cpus=1"],
    ],
}


def cmd_knobs(args: argparse.Namespace) -> None:
    engine = args.engines[0]
    results: dict[str, list[dict[str, Any]]] = {}
    with local_s3():
        s3_client().create_bucket(Bucket=BUCKET)
        stage_images(args.n, args.data, "knobs")
        for knob, settings in KNOBS.items():
            results[knob] = []
            for overrides in settings:
                job = run_job(
                    "knobs",
                    args.n,
                    args.weights,
                    [*engine_overrides(engine, args.weights, args.image_size), *overrides],
                    args.master,
                )
                job["setting"] = " ".join(overrides)
                results[knob].append(job)
                print(f"{knob}: {overrides} -> {job['images_per_s']:.2f} images/s", flush=True)
    path = save(
        "knobs",
        {
            "engine": engine,
            "n": args.n,
            "image_size": args.image_size,
            "master": args.master,
            "knobs": results,
        },
    )
    rows: list[tuple[str, ...]] = [("knob", "setting", *JOB_HEADER[2:])]
    for knob, jobs in results.items():
        for job in jobs:
            rows.append((knob, job["setting"], *job_row("", job)[2:]))
    print(table(rows))
    print(f"wrote {path}")


def cmd_image_size(args: argparse.Namespace) -> None:
    engine = args.engines[0]
    rows: list[dict[str, Any]] = []
    with staged_dev_set(args.data) as n:
        for size in (224, 100):
            # The job's own classifier: per class 70% train (7 of 10 images), seed 42.
            classify = ["classifier.enabled=true", "classifier.train_fraction=0.7", "classifier.seed=42"]
            overrides = [*engine_overrides(engine, args.weights, size), *classify]
            job = run_job("dev", n, args.weights, overrides, args.master)
            ceiling = ceilings(
                engine=engine,
                image_size=size,
                batch_size=32,
                threads=CORES,
                weights=args.weights,
                data=args.data,
                images=320,
            )
            scores = job["classifier"]
            rows.append(
                {
                    "image_size": size,
                    "job": job,
                    "ceiling": ceiling,
                    "accuracy": scores["accuracy"],
                    "macro_f1": scores["macro_f1"],
                    "test_images": scores["test_images"],
                }
            )
            print(
                f"{size}px: {job['images_per_s']:.2f} images/s, accuracy {scores['accuracy']:.3f}", flush=True
            )
    split = "classifier.train_fraction 0.7, seed 42 (7 train, 3 test images per class)"
    path = save("image-size", {"engine": engine, "split": split, "rows": rows})
    header = (
        "image size",
        "job img/s",
        "model ceiling img/s",
        "embed s",
        "total s",
        "accuracy",
        "macro F1",
    )
    lines: list[tuple[str, ...]] = [header]
    for r in rows:
        timings = r["job"]["timings_seconds"]
        lines.append(
            (
                f"{r['image_size']}",
                f"{r['job']['images_per_s']:.2f}",
                f"{r['ceiling']['model_images_per_s']:.2f}",
                f"{timings['load_and_embed']:.1f}",
                f"{timings['total']:.1f}",
                f"{r['accuracy']:.3f}",
                f"{r['macro_f1']:.3f}",
            )
        )
    print(table(lines))
    print(f"wrote {path}")


def cmd_progress(args: argparse.Namespace) -> None:
    """Progress lines every 15 s (the default) against none, A B A B ..., on the same images."""
    engine = args.engines[0]
    settings = {"every 15 s": "progress_interval_seconds=15", "off": "progress_interval_seconds=0"}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in settings}
    with local_s3():
        s3_client().create_bucket(Bucket=BUCKET)
        stage_images(args.n, args.data, "progress")
        for pair in range(args.pairs):
            for name, setting in settings.items():
                overrides = [*engine_overrides(engine, args.weights, args.image_size), setting]
                job = run_job("progress", args.n, args.weights, overrides, args.master)
                runs[name].append(job)
                print(f"pair {pair + 1} {name}: {job['images_per_s']:.2f} images/s", flush=True)
    on, off = runs["every 15 s"], runs["off"]
    ratios = [a["images_per_s"] / b["images_per_s"] for a, b in zip(on, off, strict=True)]
    result = {
        "engine": engine,
        "n": args.n,
        "master": args.master,
        "runs": runs,
        "ratio_on_over_off": ratios,
        "median_images_per_s": {
            name: float(np.median([j["images_per_s"] for j in jobs])) for name, jobs in runs.items()
        },
        "median_ratio": float(np.median(ratios)),
        "progress_lines_per_run": [len(job["progress_lines"]) for job in on],
    }
    path = save("progress", result)
    rows: list[tuple[str, ...]] = [("pair", "on img/s", "off img/s", "on/off", "progress lines")]
    for i, (a, b) in enumerate(zip(on, off, strict=True)):
        rows.append(
            (
                str(i + 1),
                f"{a['images_per_s']:.2f}",
                f"{b['images_per_s']:.2f}",
                f"{ratios[i]:.3f}",
                str(len(a["progress_lines"])),
            )
        )
    print(table(rows))
    print(f"median on/off {result['median_ratio']:.3f}; last run's lines:")
    print("\n".join(on[-1]["progress_lines"]))
    print(f"wrote {path}")


def cmd_precision(args: argparse.Namespace) -> None:
    """What bf16 costs downstream: the job's own classifier on the dev set, per engine and precision,
    with the same split (per class 70% train, seed 42)."""
    cpu = cpu_report()
    labels = [label for label in args.engines if label != "tensorflow"]
    rows: list[dict[str, Any]] = []
    with staged_dev_set(args.data) as n:
        for label in labels:
            classify = ["classifier.enabled=true", "classifier.train_fraction=0.7", "classifier.seed=42"]
            job = run_job(
                "dev", n, args.weights, [*engine_overrides(label, args.weights, 224), *classify], args.master
            )
            scores = job["classifier"]
            rows.append(
                {"engine": label, "job": job, "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}
            )
            print(
                f"{label}: accuracy {scores['accuracy']:.4f}, {job['images_per_s']:.2f} images/s", flush=True
            )
    path = save("precision", {"cpu": cpu, "n": n, "split": "train_fraction 0.7, seed 42", "rows": rows})
    lines: list[tuple[str, ...]] = [("engine", "img/s", "accuracy", "macro F1", "test images")]
    for r in rows:
        lines.append(
            (
                r["engine"],
                f"{r['job']['images_per_s']:.2f}",
                f"{r['accuracy']:.4f}",
                f"{r['macro_f1']:.4f}",
                str(r["job"]["classifier"]["test_images"]),
            )
        )
    print(f"CPU: {cpu['model']}; OpenVINO: {' '.join(cpu['openvino_capabilities']) or 'not installed'}")
    print(table(lines))
    print(f"wrote {path}")


def cmd_output_format(args: argparse.Namespace) -> None:
    """The dev set's features written as CSV and as Parquet: size and write time."""
    engine = args.engines[0]
    rows: list[dict[str, Any]] = []
    with staged_dev_set(args.data) as n:
        for fmt in ("csv", "parquet"):
            overrides = [*engine_overrides(engine, args.weights, args.image_size), f"output.format={fmt}"]
            job = run_job("dev", n, args.weights, overrides, args.master)
            rows.append({"format": fmt, "job": job})
            print(f"{fmt}: {job['features_bytes']} bytes", flush=True)
    path = save("output-format", {"engine": engine, "n": n, "k": 50, "rows": rows})
    lines: list[tuple[str, ...]] = [("format", "images", "features bytes", "bytes/image", "write s")]
    for r in rows:
        job = r["job"]
        lines.append(
            (
                r["format"],
                str(job["featurized"]),
                str(job["features_bytes"]),
                f"{job['features_bytes'] / job['featurized']:.0f}",
                f"{job['timings_seconds']['write']:.2f}",
            )
        )
    print(table(lines))
    print(f"wrote {path}")


# ---------------------------------------------------------------- scale: listing and partitioning

SCALE_INVENTORY_BUCKET = "fruits-scale-inventory"
SAMPLE_CLASSES = ROOT / "tests" / "data" / "fruits360-sample"
# The hidden subcommand spark-submit runs on the cluster: the measured driver.
SCALE_DRIVER = "_scale_driver"


def scale_bucket(n: int) -> str:
    """The bucket a size's keys are in (its inventory names it; objects only for the sequential runs)."""
    return f"fruits-scale-{n}"


def scale_classes() -> list[str]:
    """The Fruits 360 class names (131, from the bundled sample's folders)."""
    names = sorted(p.name for p in SAMPLE_CLASSES.iterdir() if p.is_dir()) if SAMPLE_CLASSES.exists() else []
    return names or [f"Class {i}" for i in range(131)]


def scale_keys(n: int, classes: list[str]) -> Iterator[str]:
    """``n`` Fruits 360 keys, ``images/<Class>/<j>_100.jpg``, spread round-robin over the classes."""
    for i in range(n):
        yield f"images/{classes[i % len(classes)]}/{i // len(classes)}_100.jpg"


def fill_bucket(bucket: str, keys: Iterable[str]) -> str:
    """Create an empty object under each key, straight into the in-process moto server's store
    (about 0.1 ms a key; a PUT through HTTP takes 13-17 ms here, 25 minutes for 100,000 keys); through
    the S3 API only when moto's store cannot be reached. The listing then goes through the API as
    the job's does. Returns how the objects were written."""
    try:
        from moto.core.models import DEFAULT_ACCOUNT_ID
        from moto.s3.models import s3_backends

        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        backend.get_bucket(bucket)
    except (ImportError, KeyError, AttributeError):
        client = s3_client()
        for key in keys:
            client.put_object(Bucket=bucket, Key=key, Body=b"")
        return "put_object"
    for key in keys:
        backend.put_object(bucket, key, b"")
    return "moto store"


@dataclass
class TreeSampler:
    """Resident memory and CPU seconds of the scale run's processes by role, every ``interval`` s,
    as a timeline.

    ``driver`` is spark-submit's pid (the driver JVM, which runs the driver's Python as its child);
    ``workers`` the standalone workers' JVMs, whose process trees hold the executors and their
    Python workers (the workers' own JVMs are not counted). A role's memory at a tick is the sum
    over its processes (``driver``: the driver's JVM and Python together); its CPU (``cpu:<role>``)
    the user + system seconds its processes have used so far, each process's last sample kept.
    """

    driver: int
    workers: list[int]
    interval: float = 0.2
    ticks: list[tuple[float, dict[str, float]]] = field(default_factory=list)  # (epoch s, MiB by role)
    _cpu: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid -> (role, CPU seconds)
    _stop: threading.Event = field(default_factory=threading.Event)

    @staticmethod
    def _role(process: psutil.Process, executor: bool) -> str | None:
        name = process.name()
        kind = "jvm" if name == "java" else "python" if name.startswith("python") else None
        return kind and f"{'executor' if executor else 'driver'}_{kind}"

    def _tick(self) -> bool:
        now = time.time()
        try:
            driver = psutil.Process(self.driver)
            trees = [(False, [driver, *driver.children(recursive=True)])]
        except psutil.NoSuchProcess:
            return False
        for pid in self.workers:
            try:
                trees.append((True, psutil.Process(pid).children(recursive=True)))
            except psutil.NoSuchProcess:
                continue
        totals: dict[str, float] = {}
        for executor, processes in trees:
            for process in processes:
                try:
                    role = self._role(process, executor)
                    if role:
                        totals[role] = totals.get(role, 0.0) + process.memory_info().rss / 2**20
                        times = process.cpu_times()
                        self._cpu[process.pid] = (role, times.user + times.system)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
        totals["driver"] = totals.get("driver_jvm", 0.0) + totals.get("driver_python", 0.0)
        for role, seconds in self._cpu.values():
            totals[f"cpu:{role}"] = totals.get(f"cpu:{role}", 0.0) + seconds
        self.ticks.append((now, totals))
        return True

    def _run(self) -> None:
        while self._tick() and not self._stop.wait(self.interval):
            pass

    def peak(self, role: str, start: float = 0.0, end: float = float("inf")) -> float:
        """The role's largest figure between ``start`` and ``end`` (epoch seconds), 0 if none."""
        return round(max((m.get(role, 0.0) for t, m in self.ticks if start <= t <= end), default=0.0), 1)

    def cpu_seconds(self, role: str, start: float, end: float) -> float:
        """The CPU seconds the role's processes used between ``start`` and ``end`` (epoch seconds),
        to the sampling interval: the last tick at or before each."""

        def used(at: float) -> float:
            return max(((t, m.get(f"cpu:{role}", 0.0)) for t, m in self.ticks if t <= at), default=(0, 0.0))[
                1
            ]

        return round(used(end) - used(start), 2)

    @contextmanager
    def running(self) -> Iterator[None]:
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()


def run_scale_driver(
    cluster: Any, mode: str, n: int, source: str | None, args: argparse.Namespace, *, partitions: int
) -> dict[str, Any]:
    """spark-submit :func:`_scale_driver` to the standalone cluster for one listing mode and size,
    sampling its memory; returns what it measured with the peaks."""
    from fruits_features.dev.spark_submit import SPARK_SUBMIT

    conf = {**cluster.submit_conf(), "spark.executor.memory": args.executor_memory}
    command = [
        str(SPARK_SUBMIT),
        *("--master", cluster.master, "--driver-memory", args.driver_memory),
        *[item for key, value in conf.items() for item in ("--conf", f"{key}={value}")],
        __file__,
        SCALE_DRIVER,
        *("--mode", mode, "--keys", str(n), "--input", f"s3://{scale_bucket(n)}/images/"),
        *("--partitions", str(partitions)),
        *(("--source", source) if source else ()),
    ]
    load_before = list(os.getloadavg())
    started = time.time()
    with subprocess.Popen(
        command,
        env=job_env({"SPARK_LOCAL_IP": "127.0.0.1"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as job:
        sampler = TreeSampler(job.pid, cluster.worker_pids)
        with sampler.running():
            log, _ = job.communicate()
    wall = time.time() - started
    results = [line for line in log.splitlines() if line.startswith("SCALE_RESULT ")]
    if job.returncode != 0 or not results:
        raise SystemExit(f"the {mode} run at {n} keys failed ({job.returncode}):\n{log[-4000:]}")
    measured: dict[str, Any] = json.loads(results[-1].removeprefix("SCALE_RESULT "))
    marks = measured.pop("marks")
    roles = ("driver", "driver_jvm", "driver_python", "executor_jvm", "executor_python")
    measured["wall_seconds"] = wall
    # The machine's load (1, 5, 15 min) before and after: other work on the same cores slows a run.
    measured["load_average"] = {"before": load_before, "after": list(os.getloadavg())}
    measured["samples"] = len(sampler.ticks)
    measured["peak_mib"] = {role: sampler.peak(role) for role in roles}
    # Before the listing (the session and its executors up, nothing listed), and while listing and
    # partitioning.
    measured["peak_mib_session_up"] = {role: sampler.peak(role, end=marks["session"]) for role in roles[:3]}
    measured["peak_mib_list_and_partition"] = {
        role: sampler.peak(role, marks["session"], marks["partitioned"]) for role in roles
    }
    # CPU seconds by phase: on a shared machine, keys per executor CPU second is the steadier rate.
    phases = {"list": ("session", "listed"), "partition": ("listed", "partitioned")}
    measured["cpu_seconds"] = {
        phase: {role: sampler.cpu_seconds(role, marks[a], marks[b]) for role in roles[1:]}
        for phase, (a, b) in phases.items()
    }
    return measured


def _scale_driver(args: argparse.Namespace) -> None:
    """The measured driver, run by spark-submit on the standalone cluster: the job's own
    ``list_input`` and ``listed_keys``, then one action that runs the range shuffle."""
    from pyspark.sql import functions as F

    from fruits_features.cli import build_session, configure_logging
    from fruits_features.config_files import load_config
    from fruits_features.io.loading import partition_count
    from fruits_features.settings import s3_settings
    from fruits_features.stages.embed import listed_keys
    from fruits_features.stages.preflight import list_input

    marks = {"start": time.time()}
    configure_logging()
    overrides = [f"input.listing={args.mode}", f"spark.partitions={args.partitions}"]
    if args.mode in ("inventory", "key_list"):
        overrides.append(f"input.{args.mode}={args.source}")
    config = load_config(ROOT / "conf" / "local.yaml", input_uri=args.input, overrides=overrides)
    spark = build_session(config)
    context = spark.sparkContext
    context.parallelize(range(context.defaultParallelism), context.defaultParallelism).count()  # executors up
    marks["session"] = time.time()

    started = time.perf_counter()
    settings = s3_settings(config)
    listing = list_input(spark, s3_client(settings), settings, config, labelled_only=True)
    list_seconds = time.perf_counter() - started
    marks["listed"] = time.time()

    partitions = partition_count(
        listing.count, context.defaultParallelism, config.model.batch_size, config.spark.partitions
    )
    started = time.perf_counter()
    keys = listed_keys(spark, listing, partitions)
    per_partition = (
        keys.select(F.spark_partition_id().alias("partition")).groupBy("partition").count().collect()
    )
    partition_seconds = time.perf_counter() - started
    marks["partitioned"] = time.time()
    plan = keys._jdf.queryExecution().executedPlan().toString()

    jvm = context._jvm
    assert jvm is not None
    jvm.java.lang.System.gc()
    runtime = jvm.java.lang.Runtime.getRuntime()
    heap_used = (runtime.totalMemory() - runtime.freeMemory()) / 2**20
    if listing.frame is not None:
        listing.frame.unpersist()
    rows = [int(row["count"]) for row in per_partition]
    result = {
        "mode": args.mode,
        "keys": args.keys,
        "images_listed": listing.count,
        "keys_listed": listing.keys_listed,
        "list_seconds": list_seconds,
        "partition_seconds": partition_seconds,
        "partitions": partitions,
        "rows_per_partition": {"min": min(rows, default=0), "max": max(rows, default=0), "count": len(rows)},
        "range_shuffle": "rangepartitioning" in plan,
        "executor_cores": context.defaultParallelism,
        "driver_jvm_heap_used_after_gc_mib": round(heap_used, 1),
        "session_seconds": marks["session"] - marks["start"],
        "marks": marks,
    }
    spark.stop()
    print("SCALE_RESULT " + json.dumps(result), flush=True)


def scale_row(run: dict[str, Any]) -> tuple[str, ...]:
    peaks = run["peak_mib"]
    return (
        run["mode"],
        f"{run['keys']:,}",
        f"{run['list_seconds']:.1f}",
        f"{run['keys'] / run['list_seconds']:,.0f}",
        f"{run['partition_seconds']:.1f}",
        str(run["partitions"]),
        f"{sum(run['cpu_seconds']['list'][r] for r in ('executor_jvm', 'executor_python')):.1f}",
        f"{peaks['driver']:.0f}",
        f"{peaks['driver_jvm']:.0f}/{peaks['driver_python']:.0f}",
        f"{run['driver_jvm_heap_used_after_gc_mib']:.0f}",
        f"{peaks['executor_jvm']:.0f}/{peaks['executor_python']:.0f}",
    )


SCALE_HEADER = (
    "listing", "keys", "list s", "keys/s", "partition s", "partitions", "list: executor CPU s", "driver MiB",
    "driver jvm/py MiB", "driver heap after GC MiB", "executor jvm/py MiB",
)  # fmt: skip


def cmd_scale(args: argparse.Namespace) -> None:
    """Listing and partitioning at each ``--keys`` size, on a standalone cluster: the driver's memory
    and the time, from an inventory report, a key list and (``--sequential`` sizes) the driver's listing."""
    from fruits_features.dev.inventory_report import InventoryEntry, write_inventory, write_key_list
    from fruits_features.dev.standalone_cluster import standalone_cluster
    from fruits_features.io.uri import S3Uri

    cpu = cpu_report()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores; flags {' '.join(cpu['flags'])}", flush=True)
    classes = scale_classes()
    sizes = sorted(set(args.keys))
    sequential = sorted(set(args.sequential) & set(sizes))
    runs: list[dict[str, Any]] = []
    generated: dict[int, dict[str, Any]] = {}
    with local_s3() as endpoint:
        client = s3_client()
        client.create_bucket(Bucket=SCALE_INVENTORY_BUCKET)
        for n in sizes:
            client.create_bucket(Bucket=scale_bucket(n))
            started = time.perf_counter()
            entries = (InventoryEntry(key=key) for key in scale_keys(n, classes))
            inventory = write_inventory(
                client,
                S3Uri(SCALE_INVENTORY_BUCKET, f"n{n}/"),
                scale_bucket(n),
                entries,
                rows_per_file=100_000,
            )
            key_list = write_key_list(
                client, S3Uri(SCALE_INVENTORY_BUCKET, f"n{n}/keys.txt.gz"), scale_keys(n, classes)
            )
            generated[n] = {
                "inventory": str(inventory),
                "inventory_files": -(-n // 100_000),
                "key_list": str(key_list),
                "seconds": time.perf_counter() - started,
            }
            if n in sequential:
                started = time.perf_counter()
                generated[n]["objects_written_by"] = fill_bucket(scale_bucket(n), scale_keys(n, classes))
                generated[n]["objects_seconds"] = time.perf_counter() - started
            print(f"{n:,} keys: generated in {generated[n]['seconds']:.1f}s", flush=True)
        with standalone_cluster(workers=1, cores=CORES, memory=args.worker_memory) as cluster:
            for n in sizes:
                plan: list[tuple[str, str | None]] = [
                    ("inventory", generated[n]["inventory"]),
                    ("key_list", generated[n]["key_list"]),
                ]
                if n in sequential:
                    plan.append(("sequential", None))
                for mode, source in plan:
                    run = run_scale_driver(cluster, mode, n, source, args, partitions=args.partitions)
                    runs.append(run)
                    if run["images_listed"] != n:
                        raise SystemExit(f"{mode} at {n:,} keys listed {run['images_listed']:,} images")
                    print(table([SCALE_HEADER, scale_row(run)]), flush=True)
            if args.wide_partitions:
                # A 100M-image run's partition count: the range shuffle's sample on the driver grows
                # with it (3 x min(100 x partitions, 1M) keys at most), not with the keys.
                n = sizes[-1]
                inventory = generated[n]["inventory"]
                runs.append(
                    run_scale_driver(
                        cluster, "inventory", n, inventory, args, partitions=args.wide_partitions
                    )
                )
                print(table([SCALE_HEADER, scale_row(runs[-1])]), flush=True)
    result = {
        "machine": {
            "cores": CORES,
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "cpu": cpu,
            "load_average_1_5_15": list(os.getloadavg()),
        },
        "settings": {
            "cluster": f"Spark standalone on 127.0.0.1: one master, one worker of {CORES} cores "
            f"({args.worker_memory}), one executor ({args.executor_memory}); the driver a spark-submit "
            f"client ({args.driver_memory}); the local S3 server (moto) in the bench's process, {endpoint}",
            "driver_memory": args.driver_memory,
            "executor_memory": args.executor_memory,
            "partitions_setting": args.partitions,
            "wide_partitions": args.wide_partitions,
            "config": "conf/local.yaml",
            "keys": "images/<Fruits 360 class>/<j>_100.jpg, round-robin over the 131 classes",
            "inventory": "gzip CSV, 100,000 rows a file (dev.inventory_report.write_inventory)",
            "key_list": "one gzip file (write_key_list), read by one task",
            "sequential": "empty objects under the keys, listed by the driver (the S3 API, 1,000 a page)",
        },
        "generated": {str(n): g for n, g in generated.items()},
        "runs": runs,
    }
    path = save("scale", result)
    print(table([SCALE_HEADER, *(scale_row(run) for run in runs)]))
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "knobs", "image-size", "progress", "output-format", "precision", "_ceilings"):
        p = sub.add_parser(name)
        p.add_argument("--n", type=int, default=1000)
        p.add_argument("--image-size", type=int, default=224)
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--threads", type=int, default=CORES)
        p.add_argument("--master", default=f"local[{CORES}]")
        p.add_argument("--data", type=Path, default=DEV_DATA)
        p.add_argument("--weights", default=os.environ.get("FRUITS_WEIGHTS") or "imagenet")
        p.add_argument("--scaling", type=lambda s: [int(v) for v in s.split(",") if v], default=[250, 4000])
        p.add_argument(
            "--engines",
            type=lambda s: [v for v in s.split(",") if v],
            default=list(ENGINES),
            help="comma-separated; knobs and image-size use the first",
        )
        p.add_argument("--onnx", help="the ONNX file (_ceilings only)")
        p.add_argument("--pairs", type=int, default=3, help="progress: on/off pairs")
    sizes = lambda s: [int(v) for v in s.split(",") if v]  # noqa: E731
    p = sub.add_parser("scale", help="listing and partitioning at 10k-1M keys on a standalone cluster")
    p.add_argument("--keys", type=sizes, default=[10_000, 100_000, 1_000_000])
    p.add_argument(
        "--sequential", type=sizes, default=[10_000, 100_000], help="sizes also listed by the driver"
    )
    p.add_argument("--partitions", type=int, default=0, help="spark.partitions (0: the job's choice)")
    p.add_argument(
        "--wide-partitions",
        type=int,
        default=5120,
        help="one more inventory run at the largest size with this spark.partitions (0: none)",
    )
    p.add_argument("--driver-memory", default="1g")
    p.add_argument("--executor-memory", default="1g")
    p.add_argument("--worker-memory", default="2g")
    p = sub.add_parser(SCALE_DRIVER)
    p.add_argument("--mode", required=True, choices=["inventory", "key_list", "sequential"])
    p.add_argument("--keys", type=int, required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--source")
    p.add_argument("--partitions", type=int, default=0)
    parser.set_defaults(weights="imagenet")
    args = parser.parse_args()
    if args.weights != "imagenet" and Path(args.weights).exists():
        args.weights = str(Path(args.weights).resolve())
    commands = {
        "run": cmd_run,
        "knobs": cmd_knobs,
        "image-size": cmd_image_size,
        "progress": cmd_progress,
        "output-format": cmd_output_format,
        "precision": cmd_precision,
        "_ceilings": _measure_ceilings,
        "scale": cmd_scale,
        SCALE_DRIVER: _scale_driver,
    }
    commands[args.command](args)


if __name__ == "__main__":
    main()
