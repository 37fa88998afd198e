"""`make bench-robustness`: the job's classifier on images that look unlike Fruits 360, with and
without augmentation, per backbone, and what the augmentation costs in images embedded.

The dev set is split per class by sorted file name: all but the last :data:`HELD_OUT` images are
the feature job's input (its classifier trains on ``classifier.train_fraction`` 0.8 of them and
tests on the rest, white originals); the last :data:`HELD_OUT` never reach it. Each backbone and
each ``augment.copies`` (0: off; 1: one copy per image, the augmentation's defaults: the white
replaced by a smooth random colour field) gets a feature job, then `jobs/score.py` with that run's
model scores the held-out images three times: as they are (white), composited onto a background the
augmentation never uses (:mod:`.backgrounds`: wood, bricks, foliage, a tablecloth, a blurred
kitchen; the kinds in turn over the held-out images), and as photo-like scenes (:mod:`.scenes`: a
larger frame, one to three fruits anywhere and cut by its edge, shadows, a hand, light fall-off,
blur, JPEG), made by other generators than both the augmentation and the first set. All test images
sit in one input, ``robust/test/<set>/<Class>/<file>``, so a run scores them in one job and the
folder names the set. ``--variants`` and ``--fruits`` compare other settings (``labels.rule=fruit``)
on the dev classes of some fruits only (``Apple,Banana,Orange``: the issue's 17 classes).

Writes bench/results/robustness.json (with the CPU), robustness-backgrounds.png (the backgrounds
and a few test images) and robustness-photos.png (photo scenes), and prints a table.
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
from fruits_features.dev.bench.augment_cost import TIMED_STEPS, augment_costs
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
from fruits_features.dev.bench.pictures import PHOTO, WHITE, plot_photos, plot_samples
from fruits_features.dev.bench.scenes import scene as photo_scene
from fruits_features.dev.local_s3 import local_s3
from fruits_features.dev.spark_submit import job_command, job_env
from fruits_features.io.labels import fruit_of
from fruits_features.io.s3 import s3_client

# The last images of each class (by file name) that only the scoring job sees.
HELD_OUT = 3
TRAIN_PREFIX = "robust/train"
TEST_PREFIX = "robust/test"
# Photo scenes per held-out image: three of each class's few held-out images give a class a few
# more points than three, where one image is 33 points of a fruit of one class.
PHOTOS_PER_IMAGE = 3
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
    :func:`~.backgrounds.kind_for` ``(i)``, seeded by its class and file name; and as many
    :data:`PHOTOS_PER_IMAGE` times as many :mod:`.scenes` of each class's held-out images (the
    second test set, :data:`PHOTO`)."""
    images: list[ScoredImage] = []
    by_class: dict[str, list[np.ndarray]] = defaultdict(list)
    for index, path in enumerate(held_out):
        pixels = np.asarray(Image.open(path).convert("RGB"))
        label = path.parent.name
        by_class[label].append(pixels)
        kind = kind_for(index)
        height, width = pixels.shape[:2]
        scene = composite(pixels, background(kind, height, width, f"{label}/{path.name}"))
        images += [ScoredImage(WHITE, label, path.name, pixels), ScoredImage(kind, label, path.name, scene)]
    for label, fruits in sorted(by_class.items()):
        images += [
            ScoredImage(PHOTO, label, f"scene-{i}.jpg", photo_scene(fruits, f"{label}/{i}"))
            for i in range(PHOTOS_PER_IMAGE * len(fruits))
        ]
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
    """Accuracy from ``(path, label, predicted)`` rows, exact and by fruit (:func:`fruit_of` of both
    agree: how a class-labelled model is judged on photos): on the white images, on the composites
    (``scene``), on the photo-like scenes (``photo``), per background kind, and per family on each.

    Returns:
        ``{"white": {"images", "correct", "accuracy"}, "scene": {...}, "photo": {...}, "kinds":
        {kind: {...}}, "families": {family: {"white": {...}, "scene": {...}, "photo": {...}}}}``.
    """
    counts: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0, 0])
    for path, label, predicted in predictions:
        kind = test_set(path)
        group = kind if kind in (WHITE, PHOTO) else "scene"
        right, right_fruit = int(label == predicted), int(fruit_of(label) == fruit_of(predicted))
        for key in ((group,), ("kind", kind), ("family", family(label), group)):
            counts[key][0] += 1
            counts[key][1] += right
            counts[key][2] += right_fruit

    def score(key: tuple[str, ...]) -> dict[str, Any]:
        images, correct, fruit = counts.get(key, (0, 0, 0))
        return {
            "images": images,
            "correct": correct,
            "accuracy": correct / images if images else None,
            # the photo check's measure: the predicted class is the right fruit (labels.rule fruit's)
            "fruit_accuracy": fruit / images if images else None,
        }

    kinds = sorted(key[1] for key in counts if key[0] == "kind" and key[1] not in (WHITE, PHOTO))
    families = sorted({key[1] for key in counts if key[0] == "family"})
    return {
        WHITE: score((WHITE,)),
        "scene": score(("scene",)),
        PHOTO: score((PHOTO,)),
        "kinds": {kind: score(("kind", kind)) for kind in kinds},
        "families": {
            name: {g: score(("family", name, g)) for g in (WHITE, "scene", PHOTO)} for name in families
        },
        # each fruit's share of right answers, averaged over the fruits: the held-out images are as
        # many per class, so 13 apple classes against one orange make plain accuracy an apple score
        "balanced_by_fruit": {
            g: float(np.mean([score(("family", name, g))["fruit_accuracy"] or 0.0 for name in families]))
            if families
            else None
            for g in (WHITE, "scene", PHOTO)
        },
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


def run_row(
    backbone: str, size: int, copies: int, variant: str, *, job: dict[str, Any], scores: dict[str, Any]
) -> dict[str, Any]:
    """One backbone, augmentation and variant's measurements, as robustness.json keeps them."""
    return {
        "backbone": backbone,
        "image_size": size,
        "augment_copies": copies,
        "variant": variant,
        "job": {key: value for key, value in job.items() if key not in ("progress_lines", "classifier")},
        "wall_seconds": job["wall_seconds"],
        # through the model: the images and their augmented copies
        "model_images": job["model_images"] + job["augmented_images"],
        "test_split": job["classifier"],
        "scoring": scores,
    }


def setting(row: dict[str, Any]) -> str:
    """A row's augmentation and variant, as the tables name it."""
    return " ".join(v for v in (f"copies={row['augment_copies']}", row.get("variant", "")) if v)


def summary_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The printed tables: one row per run, then accuracy per background kind."""

    def pct(value: float | None) -> str:
        return "" if value is None else f"{100 * value:.1f}%"

    header = ("backbone", "px", "augment", "train imgs", "embedded", "job wall s", "test split",
              "held-out white", "held-out scene", "held-out photo", "photo by fruit",
              "scene balanced", "photo balanced", "score wall s")  # fmt: skip
    lines: list[tuple[str, ...]] = [header]
    for r in rows:
        lines.append(
            (
                r["backbone"],
                str(r["image_size"]),
                setting(r),
                str(r["job"]["n"]),
                str(r["model_images"]),
                f"{r['wall_seconds']:.1f}",
                pct(r["test_split"]["accuracy"]),
                pct(r["scoring"][WHITE]["accuracy"]),
                pct(r["scoring"]["scene"]["accuracy"]),
                pct(r["scoring"].get(PHOTO, {}).get("accuracy")),
                pct(r["scoring"].get(PHOTO, {}).get("fruit_accuracy")),
                pct(r["scoring"].get("balanced_by_fruit", {}).get("scene")),
                pct(r["scoring"].get("balanced_by_fruit", {}).get(PHOTO)),
                f"{r['scoring']['wall_seconds']:.1f}",
            )
        )
    kinds = list(KINDS)
    per_kind: list[tuple[str, ...]] = [("backbone", "augment", *kinds)]
    for r in rows:
        scored = r["scoring"]["kinds"]
        per_kind.append((r["backbone"], setting(r), *(pct(scored[k]["accuracy"]) for k in kinds)))
    return [table(lines), "", "held-out scene accuracy per background:", table(per_kind)]


def cmd_robustness(args: argparse.Namespace) -> None:
    """`make bench-robustness`: per backbone and ``augment.copies`` (``--copies``), a feature job
    with its classifier on the training input, and a scoring job on the held-out images, white and
    composited; the first of ``--engines`` runs both."""
    started = time.perf_counter()
    cpu = cpu_report()
    engine = args.engines[0]
    images = [p for p in dev_images(args.data) if not args.fruits or family(p.parent.name) in args.fruits]
    train, held_out = split_dev(images)
    tests = test_images(held_out)
    RESULTS.mkdir(parents=True, exist_ok=True)
    picture = RESULTS / "robustness-backgrounds.png"
    plot_samples(tests, picture)
    plot_photos(tests, RESULTS / "robustness-photos.png")
    costs = {
        backbone: augment_costs(held_out[:48], image_size_for(args.image_size, backbone))
        for backbone in args.backbones
    }
    rows: list[dict[str, Any]] = []
    with local_s3():
        s3_client().create_bucket(Bucket=BUCKET)
        stage(train, tests)
        for backbone in args.backbones:
            size = image_size_for(args.image_size, backbone)
            engine_set = engine_overrides(engine, args.weights, size, backbone)
            for copies, variant in ((c, v) for c in args.copies for v in args.variants):
                overrides = [*engine_set, *CLASSIFY, f"augment.copies={copies}", *variant.split()]
                job = run_job(TRAIN_PREFIX, len(train), args.weights, overrides, args.master)
                embedded = job["model_images"] + job["augmented_images"]
                if copies and embedded <= len(train):
                    raise SystemExit(
                        f"augment.copies={copies} embedded {embedded} images for {len(train)} "
                        "listed: this job does not augment"
                    )
                model = f"s3://{BUCKET}/out/{job['run_id']}/model/"
                scores = run_scoring(model, args.weights, engine_set, args.master)
                rows.append(run_row(backbone, size, copies, variant, job=job, scores=scores))
                print(
                    f"{backbone} {size}px copies={copies} {variant}: {embedded} embedded in "
                    f"{job['wall_seconds']:.1f} s; held-out white {scores[WHITE]['accuracy']:.3f}, "
                    f"scene {scores['scene']['accuracy']:.3f}, photo {scores[PHOTO]['accuracy']:.3f}",
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
        "fruits": args.fruits or "all",
        "augment_ms_per_copy": costs,
        "rows": rows,
        "bench_seconds": time.perf_counter() - started,
    }
    path = save(args.results or "robustness", result)
    print(cpu_line(cpu))
    print("\n".join(summary_lines(rows)))
    print("augmentation, ms per copy on one core, each step alone with the default background:")
    print(
        table(
            [("step", *costs), *[(step, *(f"{costs[b][step]:.2f}" for b in costs)) for step in TIMED_STEPS]]
        )
    )
    print(f"wrote {path} and {picture} ({result['bench_seconds']:.0f} s)")
