"""`make bench-scale`: the job's listing and partitioning of 10k to 1M keys, from a generated S3
Inventory report and key list (and the driver's sequential listing for contrast), by a
spark-submit driver on a local standalone cluster: time, the driver's peak memory, the executors'
CPU; no images, no model."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import time
from collections.abc import Iterable, Iterator
from typing import Any

import psutil

from fruits_features.dev.bench.harness import BENCH_SCRIPT, CORES, ROOT, cpu_report, save, table
from fruits_features.dev.bench.sampling import ProcessSampler
from fruits_features.dev.local_s3 import local_s3
from fruits_features.dev.spark_submit import job_env
from fruits_features.io.s3 import s3_client

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


def scale_role(process: psutil.Process, tree: int) -> str | None:
    """``driver_jvm``, ``driver_python`` (tree 0: spark-submit's), ``executor_jvm``,
    ``executor_python`` (the workers' trees)."""
    name = process.name()
    kind = "jvm" if name == "java" else "python" if name.startswith("python") else None
    return kind and f"{'executor' if tree else 'driver'}_{kind}"


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
        str(BENCH_SCRIPT),
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
        # The driver's JVM with its Python; the workers' executors with theirs (not the workers' JVMs).
        trees = [(job.pid, True), *((pid, False) for pid in cluster.worker_pids)]
        sampler = ProcessSampler(trees, scale_role)
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

    def peak(role: str, start: float = 0.0, end: float = math.inf) -> float:
        figures = ("driver_jvm", "driver_python") if role == "driver" else (role,)  # the two together
        return round(sampler.peak(*figures, start=start, end=end), 1)

    measured["peak_mib"] = {role: peak(role) for role in roles}
    # Before the listing (the session and its executors up, nothing listed), and while listing and
    # partitioning.
    measured["peak_mib_session_up"] = {role: peak(role, end=marks["session"]) for role in roles[:3]}
    measured["peak_mib_list_and_partition"] = {
        role: peak(role, marks["session"], marks["partitioned"]) for role in roles
    }
    # CPU seconds by phase: on a shared machine, keys per executor CPU second is the steadier rate.
    phases = {"list": ("session", "listed"), "partition": ("listed", "partitioned")}
    measured["cpu_seconds"] = {
        phase: {role: round(sampler.cpu_seconds(role, marks[a], marks[b]), 2) for role in roles[1:]}
        for phase, (a, b) in phases.items()
    }
    return measured


def scale_driver(args: argparse.Namespace) -> None:
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
