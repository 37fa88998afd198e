"""`make bench-precision`: what bf16 and the backbone change downstream, the job's classifier on
the dev set per backbone, engine and precision, with the same split."""

from __future__ import annotations

import argparse
from typing import Any

from fruits_features.dev.bench.harness import (
    CLASSIFY,
    cpu_line,
    cpu_report,
    engine_overrides,
    image_size_for,
    run_job,
    runs_on,
    save,
    staged_dev_set,
    table,
)


def cmd_precision(args: argparse.Namespace) -> None:
    """What bf16 and the backbone cost downstream: the job's own classifier on the dev set, per
    backbone, engine and precision, with the same split (per class 70% train, seed 42)."""
    cpu = cpu_report()
    labels = [label for label in args.engines if label != "tensorflow"]
    rows: list[dict[str, Any]] = []
    with staged_dev_set(args.data) as n:
        for backbone in args.backbones:
            size = image_size_for(args.image_size, backbone)
            for label in (e for e in labels if runs_on(backbone, e)):
                overrides = [*engine_overrides(label, args.weights, size, backbone), *CLASSIFY]
                job = run_job("dev", n, args.weights, overrides, args.master)
                scores = job["classifier"]
                rows.append(
                    {
                        "backbone": backbone,
                        "image_size": size,
                        "engine": label,
                        "job": job,
                        "accuracy": scores["accuracy"],
                        "macro_f1": scores["macro_f1"],
                    }
                )
                print(
                    f"{backbone} {size}px {label}: accuracy {scores['accuracy']:.4f}, "
                    f"{job['images_per_s']:.2f} images/s",
                    flush=True,
                )
    path = save("precision", {"cpu": cpu, "n": n, "split": "train_fraction 0.7, seed 42", "rows": rows})
    lines: list[tuple[str, ...]] = [
        ("backbone", "px", "engine", "img/s", "accuracy", "macro F1", "test images")
    ]
    for r in rows:
        lines.append(
            (
                r["backbone"],
                str(r["image_size"]),
                r["engine"],
                f"{r['job']['images_per_s']:.2f}",
                f"{r['accuracy']:.4f}",
                f"{r['macro_f1']:.4f}",
                str(r["job"]["classifier"]["test_images"]),
            )
        )
    print(cpu_line(cpu))
    print(table(lines))
    print(f"wrote {path}")
