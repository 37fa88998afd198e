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
split). Each writes JSON (and `run` a PNG) under bench/results/ and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
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
    }
    commands[args.command](args)


if __name__ == "__main__":
    main()
