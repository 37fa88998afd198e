"""`make bench-knobs`: one job per setting of each tuning knob, one engine."""

from __future__ import annotations

import argparse
from typing import Any

from fruits_features.dev.bench.harness import (
    JOB_HEADER,
    engine_overrides,
    first_backbone,
    job_row,
    run_job,
    save,
    staged_images,
    table,
)

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
    """`make bench-knobs`."""
    engine = args.engines[0]
    results: dict[str, list[dict[str, Any]]] = {}
    with staged_images(args.n, args.data, "knobs"):
        for knob, settings in KNOBS.items():
            if args.knobs and knob not in args.knobs:
                continue
            results[knob] = []
            for overrides in settings:
                job = run_job(
                    "knobs",
                    args.n,
                    args.weights,
                    [*engine_overrides(engine, args.weights, *first_backbone(args)), *overrides],
                    args.master,
                )
                job["setting"] = " ".join(overrides)
                results[knob].append(job)
                print(f"{knob}: {overrides} -> {job['images_per_s']:.2f} images/s", flush=True)
    image_size, backbone = first_backbone(args)
    path = save(
        "knobs" if backbone == "resnet50" else f"knobs-{backbone}",
        {
            "engine": engine,
            "backbone": backbone,
            "n": args.n,
            "image_size": image_size,
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
