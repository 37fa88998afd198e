"""`make bench-precision`: what bf16 costs downstream, the job's classifier on the dev set per
engine and precision, with the same split."""

from __future__ import annotations

import argparse
from typing import Any

from fruits_features.dev.bench.harness import (
    CLASSIFY,
    cpu_line,
    cpu_report,
    engine_overrides,
    run_job,
    save,
    staged_dev_set,
    table,
)


def cmd_precision(args: argparse.Namespace) -> None:
    """What bf16 costs downstream: the job's own classifier on the dev set, per engine and precision,
    with the same split (per class 70% train, seed 42)."""
    cpu = cpu_report()
    labels = [label for label in args.engines if label != "tensorflow"]
    rows: list[dict[str, Any]] = []
    with staged_dev_set(args.data) as n:
        for label in labels:
            job = run_job(
                "dev", n, args.weights, [*engine_overrides(label, args.weights, 224), *CLASSIFY], args.master
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
    print(cpu_line(cpu))
    print(table(lines))
    print(f"wrote {path}")
