"""`make bench-output-format`: the dev set's features as CSV and as Parquet, size and write time."""

from __future__ import annotations

import argparse
from typing import Any

from fruits_features.dev.bench.harness import (
    engine_overrides,
    first_backbone,
    run_job,
    save,
    staged_dev_set,
    table,
)


def cmd_output_format(args: argparse.Namespace) -> None:
    """The dev set's features written as CSV and as Parquet: size and write time."""
    engine = args.engines[0]
    rows: list[dict[str, Any]] = []
    with staged_dev_set(args.data) as n:
        for fmt in ("csv", "parquet"):
            overrides = [
                *engine_overrides(engine, args.weights, *first_backbone(args)),
                f"output.format={fmt}",
            ]
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
