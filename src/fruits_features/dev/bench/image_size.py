"""`make bench-image-size`: image sizes compared for one backbone, throughput and the job's own
classifier on the components (fixed split): ResNet50 at 224 px against Fruits 360's native 100
px; EfficientNet-Lite2 at its own 260 px against 224 (``--backbones efficientnet_lite2``)."""

from __future__ import annotations

import argparse
from typing import Any

from fruits_features.dev.bench.ceilings import ceilings
from fruits_features.dev.bench.harness import (
    CLASSIFY,
    CORES,
    engine_overrides,
    run_job,
    save,
    staged_dev_set,
    table,
)

# The sizes compared unless --sizes says: the backbone's own first.
DEFAULT_SIZES = {"resnet50": [224, 100], "efficientnet_lite2": [260, 224]}


def cmd_image_size(args: argparse.Namespace) -> None:
    """`make bench-image-size`."""
    engine = args.engines[0]
    backbone = args.backbones[0]
    rows: list[dict[str, Any]] = []
    with staged_dev_set(args.data) as n:
        for size in args.sizes or DEFAULT_SIZES[backbone]:
            overrides = [*engine_overrides(engine, args.weights, size, backbone), *CLASSIFY]
            job = run_job("dev", n, args.weights, overrides, args.master)
            ceiling = ceilings(
                engine=engine,
                image_size=size,
                batch_size=32,
                threads=CORES,
                weights=args.weights,
                data=args.data,
                images=320,
                backbone=backbone,
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
    name = "image-size" if backbone == "resnet50" else f"image-size-{backbone}"
    path = save(name, {"backbone": backbone, "engine": engine, "split": split, "rows": rows})
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
