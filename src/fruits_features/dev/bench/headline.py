"""`make bench`: each backbone and engine's job end to end against its own model ceiling at N
images, and a scaling run over several N (the first backbone); bench/results/run.json and run.png.

Results are keyed ``"<backbone> <engine>"`` (``resnet50 onnxruntime``, ``efficientnet_lite2
openvino-bf16``): every backbone runs on the engines it supports, in one sitting."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import psutil

from fruits_features.dev.bench.breakdown import breakdown, breakdown_lines, cpu_budget, ratios
from fruits_features.dev.bench.ceilings import ceilings
from fruits_features.dev.bench.harness import (
    BUCKET,
    CORES,
    JOB_HEADER,
    RESULTS,
    cpu_line,
    cpu_report,
    engine_overrides,
    image_size_for,
    job_row,
    run_job,
    runs_on,
    save,
    stage_images,
    table,
)
from fruits_features.dev.local_s3 import local_s3, object_get_latency
from fruits_features.io.s3 import s3_client


def plot_run(result: dict[str, Any], path: Path) -> None:
    """run.png: the jobs against their ceilings, where the time goes, and the scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    engines = result["engines"]
    colours = {
        f"{backbone} {engine}": colour
        for backbone in ("resnet50", "efficientnet_lite2")
        for engine, colour in {
            "onnxruntime": "#dd8452",
            "tensorflow": "#4c72b0",
            "openvino-fp32": "#55a868",
            "openvino-bf16": "#8172b3",
        }.items()
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
        if len(scaling) < 2:  # measured at N only
            continue
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


def speedup(fast: dict[str, Any], slow: dict[str, Any]) -> dict[str, float]:
    """How many times the first measurement's images/s the second's is, job and model ceiling."""
    return {
        "job": fast["job"]["images_per_s"] / slow["job"]["images_per_s"],
        "model_ceiling": fast["ceilings"]["model_images_per_s"] / slow["ceilings"]["model_images_per_s"],
    }


def print_targets(engines: dict[str, dict[str, Any]], n: int) -> None:
    """The issue's two ratios per backbone and engine at ``n``, and the embed stage's at each scaling size."""
    for engine, measured in engines.items():
        targets = measured["targets"]
        print(
            f"headline: {engine} job / its model ceiling = {measured['ratio']:.2f} at N={n}; "
            "whole job (spark-submit wall) / ONNX Runtime fp32 bare = "
            f"{targets['job_over_onnxruntime_bare']:.2f}"
            f"; embed stage / its bare engine = {targets['embed_over_own_bare']:.2f}"
        )
        budget = measured.get("cpu_budget")
        if budget:
            print(
                f"headline: {engine} CPU ms per image: model {budget['model']:.1f} (bare, {CORES} cores), "
                f"beside it decode {budget['decode']:.1f}, GET {budget['get']:.1f}, local S3 server "
                f"{budget['s3_server']:.1f}: the embed stage can reach {budget['embed_bound']:.2f} of "
                f"its bare engine here, {budget['embed_bound_on_aws']:.2f} with S3 off the machine"
            )
        for job in measured["scaling"]:
            if job["n"] != n:
                rate = job["n"] / job["timings_seconds"]["load_and_embed"]
                print(
                    f"headline: {engine} at N={job['n']}: embed stage / its bare engine = "
                    f"{rate / measured['ceilings']['model_images_per_s']:.2f}"
                )


def cmd_run(args: argparse.Namespace) -> None:
    """`make bench`."""
    sizes = sorted({args.n, *args.scaling})
    engines: dict[str, dict[str, Any]] = {}
    cpu = cpu_report()
    print(cpu_line(cpu), flush=True)
    low, high = args.s3_latency
    with local_s3(wrap=object_get_latency(low, high) if high > 0 else None):
        s3_client().create_bucket(Bucket=BUCKET)
        for n in sizes:
            stage_images(n, args.data, f"n{n}")
        for backbone in args.backbones:
            size = image_size_for(args.image_size, backbone)
            # The scaling run for the first backbone: time and memory against N do not depend on it.
            measured_at = sizes if backbone == args.backbones[0] else [args.n]
            for engine in (e for e in args.engines if runs_on(backbone, e)):
                key = f"{backbone} {engine}"
                ceiling = ceilings(
                    engine=engine,
                    image_size=size,
                    batch_size=args.batch_size,
                    threads=CORES,
                    weights=args.weights,
                    data=args.data,
                    images=min(args.n, 512),
                    backbone=backbone,
                    objects=f"s3://{BUCKET}/n{args.n}/",
                )
                overrides = engine_overrides(engine, args.weights, size, backbone)
                jobs = {n: run_job(f"n{n}", n, args.weights, overrides, args.master) for n in measured_at}
                engines[key] = {
                    "backbone": backbone,
                    "engine": engine,
                    "image_size": size,
                    "ceilings": ceiling,
                    "job": jobs[args.n],
                    "ratio": jobs[args.n]["images_per_s"] / ceiling["model_images_per_s"],
                    "scaling": [jobs[n] for n in measured_at],
                }
                print(f"{key}: job / model ceiling = {engines[key]['ratio']:.2f} at N={args.n}", flush=True)
    result: dict[str, Any] = {
        "machine": {
            "cores": CORES,
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "cpu": cpu,
        },
        "settings": {
            "n": args.n,
            "image_sizes": {b: image_size_for(args.image_size, b) for b in args.backbones},
            "batch_size": args.batch_size,
            "master": args.master,
            "s3_get_latency_ms": [low, high],
        },
        "engines": engines,
    }
    for measured in engines.values():
        reference = engines.get(f"{measured['backbone']} onnxruntime", measured)["ceilings"]
        measured["breakdown"] = breakdown(measured["job"])
        measured["cpu_budget"] = cpu_budget(measured["ceilings"], CORES)
        measured["targets"] = ratios(
            measured["job"], measured["ceilings"]["model_images_per_s"], reference["model_images_per_s"]
        )
    if {"resnet50 onnxruntime", "resnet50 tensorflow"} <= engines.keys():
        result["onnxruntime_over_tensorflow"] = speedup(
            engines["resnet50 onnxruntime"], engines["resnet50 tensorflow"]
        )
    result["lite2_over_resnet50"] = {
        engine: speedup(engines[f"efficientnet_lite2 {engine}"], engines[f"resnet50 {engine}"])
        for engine in args.engines
        if {f"efficientnet_lite2 {engine}", f"resnet50 {engine}"} <= engines.keys()
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
    print(f"where the time goes (N={args.n}, each object GET waiting {low:g}-{high:g} ms):")
    for engine, measured in engines.items():
        print("\n".join(breakdown_lines(engine, measured["job"])))
    print_targets(engines, args.n)
    if "onnxruntime_over_tensorflow" in result:
        both = result["onnxruntime_over_tensorflow"]
        print(f"onnxruntime / tensorflow: job {both['job']:.2f}x, model ceiling {both['model_ceiling']:.2f}x")
    for engine, both in result["lite2_over_resnet50"].items():
        print(
            f"efficientnet_lite2 / resnet50 with {engine}: job {both['job']:.2f}x, "
            f"model ceiling {both['model_ceiling']:.2f}x"
        )
    print(f"wrote {path} and {RESULTS / 'run.png'}")
