"""`make bench-progress`: the job with progress lines every 15 s against none, pair by pair."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from fruits_features.dev.bench.harness import (
    engine_overrides,
    first_backbone,
    run_job,
    save,
    staged_images,
    table,
)


def cmd_progress(args: argparse.Namespace) -> None:
    """Progress lines every 15 s (the default) against none, A B A B ..., on the same images."""
    engine = args.engines[0]
    settings = {"every 15 s": "progress_interval_seconds=15", "off": "progress_interval_seconds=0"}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in settings}
    with staged_images(args.n, args.data, "progress"):
        for pair in range(args.pairs):
            for name, setting in settings.items():
                overrides = [*engine_overrides(engine, args.weights, *first_backbone(args)), setting]
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
