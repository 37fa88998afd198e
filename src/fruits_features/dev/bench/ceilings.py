"""The ceilings the job is measured against, each in a fresh process: the bare model over
decoded, resized, preprocessed arrays (the job's batch size, image size and threads), and decoding
alone on one core."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from fruits_features.dev.bench.harness import (
    BENCH_SCRIPT,
    backbone_weights,
    dev_images,
    engine_and_precision,
    onnx_file,
)

# The hidden subcommand that measures in a process of its own.
CEILINGS_COMMAND = "_ceilings"


def ceilings(
    *,
    engine: str,
    image_size: int,
    batch_size: int,
    threads: int,
    weights: str,
    data: Path,
    images: int,
    backbone: str = "resnet50",
) -> dict[str, Any]:
    """Model and decode ceilings, measured in a child process so the engine's threads are fresh."""
    command = [
        sys.executable,
        str(BENCH_SCRIPT),
        CEILINGS_COMMAND,
        *("--engines", engine, "--image-size", str(image_size), "--batch-size", str(batch_size)),
        *("--threads", str(threads), "--weights", backbone_weights(weights, backbone)),
        *("--data", str(data), "--n", str(images), "--backbones", backbone),
    ]
    if engine_and_precision(engine)[0] != "tensorflow":
        command += ["--onnx", onnx_file(weights, image_size, backbone)]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


def measure_ceilings(args: argparse.Namespace) -> None:
    """The hidden subcommand: measure, print the figures as one JSON line."""
    from fruits_features.features.backbones import backbone
    from fruits_features.features.decoding import decode_image
    from fruits_features.features.engines import EmbedSpec, build_model_fn

    paths = (dev_images(Path(args.data)) * (1 + args.n // 1310))[: args.n]
    blobs = [p.read_bytes() for p in paths]
    (name,) = args.backbones
    # As the job prepares them: decoded and resized, then preprocessed a model batch at a time.
    started = time.perf_counter()
    prepared = [
        backbone(name).preprocess(
            np.stack([decode_image(b, args.image_size, 50_000_000) for b in blobs[i : i + args.batch_size]])
        )
        for i in range(0, len(blobs), args.batch_size)
    ]
    decode_rate = len(blobs) / (time.perf_counter() - started)
    arrays = np.concatenate(prepared)

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
        backbone=name,
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
