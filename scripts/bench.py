"""`make bench`: where the job's time goes, against the model's own speed.

Measures, on N images copied from ../shared/data/fruits360-dev into a local S3 endpoint:

1. model ceiling: the bare ResNet50 forward pass over pre-decoded, pre-resized, preprocessed arrays
   (same batch size, image size and total threads as the job), in images/s;
2. decode ceiling: decode + resize + preprocess alone, one core, in images/s;
3. the job: `spark-submit jobs/extract_features.py` end to end, in images/s over the manifest's
   total, with its stage timings, how many images went through ResNet50, and the peak memory of
   the driver (JVM and Python) and of the Python workers;
4. the ratio job / model ceiling.

Subcommands: `run` (the above, plus a scaling run over several N), `knobs` (one job per setting of
each tuning knob), `image-size` (224 against the native 100x100: throughput and the accuracy of a
job's own classifier on the components, fixed split). Each writes JSON and a PNG under
bench/results/ and prints a table.
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
from fruits_features.local_s3 import local_s3
from fruits_features.storage import s3_client

ROOT = Path(__file__).resolve().parent.parent
DEV_DATA = ROOT.parent / "shared" / "data" / "fruits360-dev"
RESULTS = ROOT / "bench" / "results"
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


# ---------------------------------------------------------------- ceilings (in a fresh process)


def ceilings(
    *, image_size: int, batch_size: int, threads: int, weights: str, data: Path, images: int
) -> dict[str, Any]:
    """Model and decode ceilings, measured in a child process so TensorFlow's threads are fresh."""
    command = [
        sys.executable,
        __file__,
        "_ceilings",
        *("--image-size", str(image_size), "--batch-size", str(batch_size)),
        *("--threads", str(threads), "--weights", weights, "--data", str(data), "--n", str(images)),
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def _measure_ceilings(args: argparse.Namespace) -> None:
    from keras.applications.resnet50 import preprocess_input

    from fruits_features.decoding import decode_image
    from fruits_features.embedding import EmbedSpec, build_model_fn

    paths = (dev_images(Path(args.data)) * (1 + args.n // 1310))[: args.n]
    blobs = [p.read_bytes() for p in paths]
    started = time.perf_counter()
    pixels = [decode_image(b, args.image_size, 50_000_000) for b in blobs]
    arrays = preprocess_input(np.stack(pixels).astype(np.float32))
    decode_rate = len(blobs) / (time.perf_counter() - started)

    spec = EmbedSpec(args.weights, args.image_size, args.batch_size, args.threads, 50_000_000)
    model_fn = build_model_fn(spec)
    batches = [arrays[i : i + args.batch_size] for i in range(0, len(arrays), args.batch_size)]
    model_fn(batches[0])  # trace and warm up: the job pays this once per worker, not per image
    started = time.perf_counter()
    for batch in batches:
        model_fn(batch)
    model_rate = len(arrays) / (time.perf_counter() - started)
    print(
        json.dumps(
            {"model_images_per_s": model_rate, "decode_images_per_s": decode_rate, "images": len(arrays)}
        )
    )


# ---------------------------------------------------------------- the job, with memory sampling


@dataclass
class MemorySampler:
    """Peak resident memory of a process tree, by role, sampled every ``interval`` seconds."""

    root: int
    interval: float = 0.2
    peaks_mib: dict[str, float] = field(
        default_factory=lambda: {"driver_jvm": 0.0, "driver_python": 0.0, "worker": 0.0}
    )
    _stop: threading.Event = field(default_factory=threading.Event)

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
    command = [
        str(Path(sys.executable).with_name("spark-submit")),
        *("--master", master, "--driver-memory", "2g"),
        str(ROOT / "jobs" / "extract_features.py"),
        *("--config", str(ROOT / "conf" / "local.yaml")),
        *("--input", f"s3://{BUCKET}/{prefix}/", "--output", f"s3://{BUCKET}/out/", "--run-id", run_id),
        *("--set", f"model.weights={weights}"),
        # The feature job alone (list, load, embed, PCA, write): no classifier or report unless asked.
        *("--set", "classifier.enabled=false", "--set", "report.enabled=false"),
    ]
    for item in overrides:
        command += ["--set", item]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    started = time.perf_counter()
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as job:
        sampler = MemorySampler(job.pid)
        with sampler.running():
            log, _ = job.communicate()
    wall = time.perf_counter() - started
    if job.returncode != 0:
        raise SystemExit(f"the job failed ({job.returncode}):\n{log[-4000:]}")
    body = s3_client().get_object(Bucket=BUCKET, Key=f"out/{run_id}/manifest.json")["Body"].read()
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
        "classifier": manifest.get("classifier"),
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

    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(15, 4.5))
    names = ["model ceiling", "decode ceiling", f"job (N={result['job']['n']})"]
    rates = [
        result["ceilings"]["model_images_per_s"],
        result["ceilings"]["decode_images_per_s"],
        result["job"]["images_per_s"],
    ]
    # The decode ceiling is an order of magnitude above the others: drawn cut, labelled with its value.
    shown = min(max(rates), 2.5 * max(rates[0], rates[2]))
    left.barh(names, [min(rate, shown) for rate in rates], color=["#4c72b0", "#8c8c8c", "#dd8452"])
    for row, rate in enumerate(rates):
        left.text(min(rate, shown), row, f" {rate:.1f}", va="center")
    left.set_xlim(0, shown * 1.25)
    left.set_xlabel("images/s")
    left.set_title(f"throughput; job / model ceiling = {result['ratio']:.2f}")
    stages = ["list", "preflight", "load_and_embed", "reduce", "write"]
    seconds = [result["job"]["timings_seconds"].get(s, 0.0) for s in stages]
    middle.bar(stages, seconds, color="#55a868")
    middle.set_ylabel("seconds")
    middle.set_title("where the job's time goes")
    middle.tick_params(axis="x", rotation=30)
    scaling = result.get("scaling", [])
    if scaling:
        ns = [j["n"] for j in scaling]
        right.plot(ns, [j["timings_seconds"]["total"] for j in scaling], "o-", label="job total (s)")
        right.set_xlabel("images (N)")
        right.set_ylabel("seconds")
        twin = right.twinx()
        twin.plot(
            ns,
            [j["peak_memory_mib"]["driver_jvm"] for j in scaling],
            "s--",
            color="#c44e52",
            label="driver JVM MiB",
        )
        twin.plot(
            ns, [j["peak_memory_mib"]["worker"] for j in scaling], "^--", color="#8172b2", label="worker MiB"
        )
        twin.set_ylabel("peak MiB")
        twin.set_ylim(bottom=0)
        right.legend(loc="upper left")
        twin.legend(loc="lower right")
        right.set_title("scaling: job time and peak memory against N")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- subcommands


def cmd_run(args: argparse.Namespace) -> None:
    ceiling = ceilings(
        image_size=args.image_size,
        batch_size=args.batch_size,
        threads=CORES,
        weights=args.weights,
        data=args.data,
        images=min(args.n, 512),
    )
    sizes = sorted({args.n, *args.scaling})
    jobs: dict[int, dict[str, Any]] = {}
    with local_s3():
        s3_client().create_bucket(Bucket=BUCKET)
        for n in sizes:
            stage_images(n, args.data, f"n{n}")
            jobs[n] = run_job(f"n{n}", n, args.weights, [f"model.image_size={args.image_size}"], args.master)
    job = jobs[args.n]
    result = {
        "machine": {"cores": CORES, "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)},
        "settings": {"image_size": args.image_size, "batch_size": args.batch_size, "master": args.master},
        "ceilings": ceiling,
        "job": job,
        "ratio": job["images_per_s"] / ceiling["model_images_per_s"],
        "scaling": [jobs[n] for n in sizes],
    }
    path = save("run", result)
    plot_run(result, RESULTS / "run.png")
    model_rate = ceiling["model_images_per_s"]
    print(f"model ceiling   {model_rate:.2f} images/s ({CORES} threads, batch {args.batch_size})")
    print(f"decode ceiling  {ceiling['decode_images_per_s']:.2f} images/s (one core)")
    print(
        table([JOB_HEADER, *[job_row(f"job N={n}", jobs[n], ceiling["model_images_per_s"]) for n in sizes]])
    )
    print(f"headline: job / model ceiling = {result['ratio']:.2f} at N={args.n}")
    print(f"wrote {path} and {RESULTS / 'run.png'}")


KNOBS: dict[str, list[list[str]]] = {
    "model.batch_size": [["model.batch_size=8"], ["model.batch_size=32"], ["model.batch_size=64"]],
    "arrow maxRecordsPerBatch": [
        [f"spark.conf.spark.sql.execution.arrow.maxRecordsPerBatch={v}"] for v in (32, 256, 2048)
    ],
    "spark.partitions": [["spark.partitions=2"], ["spark.partitions=0"], ["spark.partitions=32"]],
    "threads x task.cpus": [
        ["model.threads=1", "spark.conf.spark.task.cpus=1"],
        ["model.threads=2", "spark.conf.spark.task.cpus=2"],
        ["model.threads=2", "spark.conf.spark.task.cpus=1"],
    ],
}


def cmd_knobs(args: argparse.Namespace) -> None:
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
                    [f"model.image_size={args.image_size}", *overrides],
                    args.master,
                )
                results[knob].append(job)
                print(f"{knob}: {overrides} -> {job['images_per_s']:.2f} images/s", flush=True)
    path = save(
        "knobs", {"n": args.n, "image_size": args.image_size, "master": args.master, "knobs": results}
    )
    rows: list[tuple[str, ...]] = [("knob", "setting", *JOB_HEADER[2:])]
    for knob, jobs in results.items():
        for job in jobs:
            rows.append((knob, " ".join(job["overrides"][1:]), *job_row("", job)[2:]))
    print(table(rows))
    print(f"wrote {path}")


def cmd_image_size(args: argparse.Namespace) -> None:
    rows: list[dict[str, Any]] = []
    with local_s3():
        s3_client().create_bucket(Bucket=BUCKET)
        n = stage_images(len(dev_images(args.data)), args.data, "dev")
        for size in (224, 100):
            # The job's own classifier: per class 70% train (7 of 10 images), seed 42.
            classify = ["classifier.enabled=true", "classifier.train_fraction=0.7", "classifier.seed=42"]
            job = run_job("dev", n, args.weights, [f"model.image_size={size}", *classify], args.master)
            ceiling = ceilings(
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
    path = save("image-size", {"split": split, "rows": rows})
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("run", "knobs", "image-size", "_ceilings"):
        p = sub.add_parser(name)
        p.add_argument("--n", type=int, default=1000)
        p.add_argument("--image-size", type=int, default=224)
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--threads", type=int, default=CORES)
        p.add_argument("--master", default=f"local[{CORES}]")
        p.add_argument("--data", type=Path, default=DEV_DATA)
        p.add_argument("--weights", default=os.environ.get("FRUITS_WEIGHTS") or "imagenet")
        p.add_argument("--scaling", type=lambda s: [int(v) for v in s.split(",") if v], default=[250, 4000])
    args = parser.parse_args()
    if args.weights != "imagenet" and Path(args.weights).exists():
        args.weights = str(Path(args.weights).resolve())
    {"run": cmd_run, "knobs": cmd_knobs, "image-size": cmd_image_size, "_ceilings": _measure_ceilings}[
        args.command
    ](args)


if __name__ == "__main__":
    main()
