"""`make bench-robustness`: the job's classifier on images that look unlike Fruits 360, with and
without augmentation, per backbone, and what the augmentation costs in images embedded.

The dev set is split per class by sorted file name: all but the last :data:`HELD_OUT` images are
the feature job's input (its classifier trains on ``classifier.train_fraction`` 0.8 of them and
tests on the rest, white originals); the last :data:`HELD_OUT` never reach it. Each backbone and
each ``augment.copies`` (0: off; 1: one copy per image, the augmentation's defaults: the white
replaced by a smooth random colour field) gets a feature job, then `jobs/score.py` with that run's
model scores the held-out images twice: as they are (white) and composited onto a background the
augmentation never uses (:mod:`.backgrounds`: wood, bricks, foliage, a tablecloth, a blurred
kitchen; the kinds in turn over the held-out images). Both kinds of test image sit in one input,
``robust/test/<set>/<Class>/<file>``, so a run scores them in one job and the folder names the set.

Writes bench/results/robustness.json (with the CPU) and robustness-backgrounds.png (the
backgrounds and a few test images), and prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from fruits_features.cli import new_run_id
from fruits_features.dev.bench.backgrounds import KINDS, background, composite, kind_for
from fruits_features.dev.bench.harness import (
    BUCKET,
    RESULTS,
    cpu_line,
    cpu_report,
    dev_images,
    engine_overrides,
    image_size_for,
    run_job,
    save,
    table,
)
from fruits_features.dev.local_s3 import local_s3
from fruits_features.dev.spark_submit import job_command, job_env
from fruits_features.io.s3 import s3_client

# The last images of each class (by file name) that only the scoring job sees.
HELD_OUT = 3
TRAIN_PREFIX = "robust/train"
TEST_PREFIX = "robust/test"
# The held-out images as they are; the composites' sets are named for their background kind.
WHITE = "white"
# The feature job's classifier: 80% of each class's training input trains, the rest tests.
CLASSIFY = ["classifier.enabled=true", "classifier.train_fraction=0.8", "classifier.seed=42"]
JPEG_QUALITY = 95


@dataclass(frozen=True)
class ScoredImage:
    """One image the scoring job sees: its set (:data:`WHITE` or a background kind), its class,
    its file name and its pixels."""

    set: str
    label: str
    name: str
    pixels: np.ndarray

    @property
    def key(self) -> str:
        """Its key in the bucket: ``robust/test/<set>/<Class>/<file>``."""
        return f"{TEST_PREFIX}/{self.set}/{self.label}/{self.name}"


def split_dev(images: Sequence[Path], held_out: int = HELD_OUT) -> tuple[list[Path], list[Path]]:
    """The dev images split per class by sorted file name: (training input, held out), the last
    ``held_out`` of each class held out. A class of ``held_out`` images or fewer is all held out."""
    by_class: dict[str, list[Path]] = defaultdict(list)
    for image in images:
        by_class[image.parent.name].append(image)
    train: list[Path] = []
    test: list[Path] = []
    for label in sorted(by_class):
        files = sorted(by_class[label], key=lambda path: path.name)
        cut = max(0, len(files) - held_out)
        train += files[:cut]
        test += files[cut:]
    return train, test


def family(label: str) -> str:
    """A class's fruit family, the first word of its name: ``Apple Red 2`` -> ``Apple``."""
    return label.split(maxsplit=1)[0]


def test_images(held_out: Sequence[Path]) -> list[ScoredImage]:
    """Each held-out image as it is and on its background: the ``i``-th on kind
    :func:`~.backgrounds.kind_for` ``(i)``, seeded by its class and file name."""
    images: list[ScoredImage] = []
    for index, path in enumerate(held_out):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        label = path.parent.name
        kind = kind_for(index)
        height, width = pixels.shape[:2]
        scene = composite(pixels, background(kind, height, width, f"{label}/{path.name}"))
        images += [ScoredImage(WHITE, label, path.name, pixels), ScoredImage(kind, label, path.name, scene)]
    return images


def stage(train: Sequence[Path], tests: Sequence[ScoredImage]) -> None:
    """Upload the training input under ``robust/train/<Class>/`` and the test images (JPEG)."""
    client = s3_client()
    for path in train:
        client.upload_file(str(path), BUCKET, f"{TRAIN_PREFIX}/{path.parent.name}/{path.name}")
    for image in tests:
        body = io.BytesIO()
        Image.fromarray(image.pixels).save(body, format="JPEG", quality=JPEG_QUALITY)
        client.put_object(Bucket=BUCKET, Key=image.key, Body=body.getvalue())


def test_set(path: str) -> str:
    """The set of a scored image from its path: ``s3://b/robust/test/wood/Kiwi/x.jpg`` -> ``wood``."""
    return path.split(f"/{TEST_PREFIX}/", 1)[1].split("/", 1)[0]


def accuracies(predictions: Iterable[tuple[str, str, str]]) -> dict[str, Any]:
    """Accuracy from ``(path, label, predicted)`` rows: on the white images, on the composites
    (``scene``), per background kind, and per family on both.

    Returns:
        ``{"white": {"images", "correct", "accuracy"}, "scene": {...}, "kinds": {kind: {...}},
        "families": {family: {"white": {...}, "scene": {...}}}}``.
    """
    counts: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0])
    for path, label, predicted in predictions:
        kind = test_set(path)
        group = WHITE if kind == WHITE else "scene"
        right = int(label == predicted)
        for key in ((group,), ("kind", kind), ("family", family(label), group)):
            counts[key][0] += 1
            counts[key][1] += right

    def score(key: tuple[str, ...]) -> dict[str, Any]:
        images, correct = counts.get(key, (0, 0))
        return {"images": images, "correct": correct, "accuracy": correct / images if images else None}

    kinds = sorted(key[1] for key in counts if key[0] == "kind" and key[1] != WHITE)
    families = sorted({key[1] for key in counts if key[0] == "family"})
    return {
        WHITE: score((WHITE,)),
        "scene": score(("scene",)),
        "kinds": {kind: score(("kind", kind)) for kind in kinds},
        "families": {name: {g: score(("family", name, g)) for g in (WHITE, "scene")} for name in families},
    }


def run_scoring(model: str, weights: str, overrides: list[str], master: str) -> dict[str, Any]:
    """spark-submit jobs/score.py with ``model`` on ``robust/test/``; its wall seconds, counts and
    :func:`accuracies`."""
    run_id = new_run_id()
    command = job_command(
        "score",
        *("--model", model, "--input", f"s3://{BUCKET}/{TEST_PREFIX}/", "--output", f"s3://{BUCKET}/scores/"),
        *("--run-id", run_id, "--set", f"model.weights={weights}", "--set", "output.format=csv"),
        *[arg for item in overrides for arg in ("--set", item)],
        master=master,
        driver_memory="2g",
    )
    started = time.perf_counter()
    done = subprocess.run(command, env=job_env(), capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(
            f"the scoring job failed ({done.returncode}):\n{(done.stdout + done.stderr)[-4000:]}"
        )
    client = s3_client()
    run = f"scores/{run_id}"
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{run}/predictions/").get("Contents", [])
    frames = [
        pd.read_csv(client.get_object(Bucket=BUCKET, Key=item["Key"])["Body"], keep_default_na=False)
        for item in listed
        if item["Key"].endswith(".csv")
    ]
    predictions = pd.concat(frames, ignore_index=True)
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key=f"{run}/manifest.json")["Body"].read())
    return {
        "run_id": run_id,
        "wall_seconds": wall,
        "counts": manifest["counts"],
        **accuracies(zip(predictions["path"], predictions["label"], predictions["predicted"], strict=True)),
    }


def plot_samples(tests: Sequence[ScoredImage], path: Path) -> None:
    """robustness-backgrounds.png: per background kind, the texture alone, then held-out images of
    that kind, white and composited, at their own size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    white = {(image.label, image.name): image for image in tests if image.set == WHITE}
    columns = list(KINDS)
    fig, axes = plt.subplots(4, len(columns), figsize=(2.2 * len(columns), 9.4))
    for column, kind in enumerate(columns):
        scenes = [image for image in tests if image.set == kind]
        # Spread over the classes, and other classes in each column.
        step = len(scenes) // (2 * len(columns))
        first, second = (
            scenes[(2 * column + 1) * step // 2],
            scenes[(2 * column + 1) * step // 2 + len(scenes) // 2],
        )
        height, width = first.pixels.shape[:2]
        cells = [
            (background(kind, height, width, "sample"), f"{kind}"),
            (white[(first.label, first.name)].pixels, f"{first.label}\n(held out, white)"),
            (first.pixels, f"{first.label}\non {kind}"),
            (second.pixels, f"{second.label}\non {kind}"),
        ]
        for row, (pixels, title) in enumerate(cells):
            axes[row][column].imshow(pixels)
            axes[row][column].set_title(title, fontsize=8)
            axes[row][column].axis("off")
    fig.suptitle("make bench-robustness: the test images (100x100, as scored)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_row(
    backbone: str, size: int, copies: int, job: dict[str, Any], scores: dict[str, Any]
) -> dict[str, Any]:
    """One backbone and augmentation's measurements, as robustness.json keeps them."""
    return {
        "backbone": backbone,
        "image_size": size,
        "augment_copies": copies,
        "job": {key: value for key, value in job.items() if key not in ("progress_lines", "classifier")},
        "wall_seconds": job["wall_seconds"],
        # through the model: the images and their augmented copies
        "model_images": job["model_images"] + job["augmented_images"],
        "test_split": job["classifier"],
        "scoring": scores,
    }


def summary_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The printed tables: one row per run, then accuracy per background kind."""

    def pct(value: float | None) -> str:
        return "" if value is None else f"{100 * value:.1f}%"

    header = ("backbone", "px", "augment", "train imgs", "embedded", "job wall s", "test split",
              "held-out white", "held-out scene", "score wall s")  # fmt: skip
    lines: list[tuple[str, ...]] = [header]
    for r in rows:
        lines.append(
            (
                r["backbone"],
                str(r["image_size"]),
                f"copies={r['augment_copies']}",
                str(r["job"]["n"]),
                str(r["model_images"]),
                f"{r['wall_seconds']:.1f}",
                pct(r["test_split"]["accuracy"]),
                pct(r["scoring"][WHITE]["accuracy"]),
                pct(r["scoring"]["scene"]["accuracy"]),
                f"{r['scoring']['wall_seconds']:.1f}",
            )
        )
    kinds = list(KINDS)
    per_kind: list[tuple[str, ...]] = [("backbone", "augment", *kinds)]
    for r in rows:
        scored = r["scoring"]["kinds"]
        per_kind.append(
            (r["backbone"], f"copies={r['augment_copies']}", *(pct(scored[k]["accuracy"]) for k in kinds))
        )
    return [table(lines), "", "held-out scene accuracy per background:", table(per_kind)]


def cmd_robustness(args: argparse.Namespace) -> None:
    """`make bench-robustness`: per backbone and ``augment.copies`` (``--copies``), a feature job
    with its classifier on the training input, and a scoring job on the held-out images, white and
    composited; the first of ``--engines`` runs both."""
    started = time.perf_counter()
    cpu = cpu_report()
    engine = args.engines[0]
    train, held_out = split_dev(dev_images(args.data))
    tests = test_images(held_out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    picture = RESULTS / "robustness-backgrounds.png"
    plot_samples(tests, picture)
    rows: list[dict[str, Any]] = []
    with local_s3():
        s3_client().create_bucket(Bucket=BUCKET)
        stage(train, tests)
        for backbone in args.backbones:
            size = image_size_for(args.image_size, backbone)
            engine_set = engine_overrides(engine, args.weights, size, backbone)
            for copies in args.copies:
                overrides = [*engine_set, *CLASSIFY, f"augment.copies={copies}"]
                job = run_job(TRAIN_PREFIX, len(train), args.weights, overrides, args.master)
                embedded = job["model_images"] + job["augmented_images"]
                if copies and embedded <= len(train):
                    raise SystemExit(
                        f"augment.copies={copies} embedded {embedded} images for {len(train)} "
                        "listed: this job does not augment"
                    )
                model = f"s3://{BUCKET}/out/{job['run_id']}/model/"
                scores = run_scoring(model, args.weights, engine_set, args.master)
                rows.append(run_row(backbone, size, copies, job, scores))
                print(
                    f"{backbone} {size}px copies={copies}: {embedded} embedded in "
                    f"{job['wall_seconds']:.1f} s; held-out white {scores[WHITE]['accuracy']:.3f}, "
                    f"scene {scores['scene']['accuracy']:.3f}",
                    flush=True,
                )
    result = {
        "cpu": cpu,
        "engine": engine,
        "split": f"per class by file name: the last {HELD_OUT} held out, the rest the feature job's input "
        "(classifier.train_fraction 0.8, seed 42)",
        "train_images": len(train),
        "held_out_images": len(held_out),
        "backgrounds": {kind: sum(image.set == kind for image in tests) for kind in KINDS},
        "augment": "augment.copies as given, every other augment key its default",
        "rows": rows,
        "bench_seconds": time.perf_counter() - started,
    }
    path = save("robustness", result)
    print(cpu_line(cpu))
    print("\n".join(summary_lines(rows)))
    print(f"wrote {path} and {picture} ({result['bench_seconds']:.0f} s)")
