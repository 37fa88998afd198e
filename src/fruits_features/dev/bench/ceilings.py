"""The ceilings the job is measured against, each in a fresh process: the bare model over
decoded, resized, preprocessed arrays (the job's batch size, image size and threads), decoding
alone on one core, and the CPU an object GET costs (boto3's side, and the local S3 server's when it
runs in this process)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

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
    objects: str | None = None,
) -> dict[str, Any]:
    """Model and decode ceilings, measured in a child process so the engine's threads are fresh.

    With ``objects`` (an ``s3://`` prefix), the child also reads up to ``images`` objects there
    as the job does (``s3.fetch_threads`` at a time) and reports boto3's CPU per GET; the CPU this
    process spent meanwhile is the local S3 server's (:func:`fruits_features.dev.local_s3.local_s3`
    serves from here, idle otherwise), reported per GET too.
    """
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
    if objects:
        command += ["--objects", objects]
    before = psutil.Process().cpu_times()
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    after = psutil.Process().cpu_times()
    measured = dict(json.loads(output.strip().splitlines()[-1]))
    if measured.get("gets"):
        server = after.user + after.system - before.user - before.system
        measured["s3_server_cpu_ms_per_get"] = server * 1000 / measured["gets"]
    return measured


def get_cpu(prefix: str, limit: int) -> tuple[int, float]:
    """Read up to ``limit`` objects under ``prefix`` as the job's tasks do; how many, and the CPU
    milliseconds this process spent per GET (boto3: signing, HTTP, parsing)."""
    from concurrent.futures import ThreadPoolExecutor

    from fruits_features.config_sections import S3Config
    from fruits_features.io.loading import fetch_object
    from fruits_features.io.s3 import iter_keys, s3_client
    from fruits_features.io.uri import S3Uri

    client = s3_client()
    uri = S3Uri.parse(prefix)
    paths = [f"s3://{uri.bucket}/{key}" for key, _ in zip(iter_keys(client, uri), range(limit), strict=False)]
    fetch_object(client, paths[0])  # the connection pool and the client's lazy parts, once
    started = time.process_time()
    with ThreadPoolExecutor(max_workers=S3Config().fetch_threads) as pool:
        failed = [error for _, error in pool.map(lambda path: fetch_object(client, path), paths) if error]
    cpu = time.process_time() - started
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(paths)} GETs failed, the first: {failed[0]}")
    return len(paths), cpu * 1000 / len(paths)


def measure_ceilings(args: argparse.Namespace) -> None:
    """The hidden subcommand: measure, print the figures as one JSON line."""
    from fruits_features.features.backbones import backbone
    from fruits_features.features.decoding import decode_image
    from fruits_features.features.engines import EmbedSpec, build_model_fn

    paths = (dev_images(Path(args.data)) * (1 + args.n // 1310))[: args.n]
    blobs = [p.read_bytes() for p in paths]
    (name,) = args.backbones

    # As the job prepares them: decoded and resized, then preprocessed a model batch at a time;
    # timed on the second pass, the first paying for Pillow's and numpy's first calls.
    def prepare() -> list[np.ndarray]:
        return [
            backbone(name).preprocess(
                np.stack(
                    [decode_image(b, args.image_size, 50_000_000) for b in blobs[i : i + args.batch_size]]
                )
            )
            for i in range(0, len(blobs), args.batch_size)
        ]

    prepare()
    started = time.perf_counter()
    prepared = prepare()
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
    measured: dict[str, Any] = {
        "engine": label,
        "model_images_per_s": model_rate,
        "decode_images_per_s": decode_rate,
        "images": len(arrays),
        "model_startup_s": startup,
    }
    if args.objects:
        measured["gets"], measured["get_cpu_ms"] = get_cpu(args.objects, args.n)
    print(json.dumps(measured))
