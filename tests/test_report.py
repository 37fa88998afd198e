"""The report's drawing and page, from synthetic inputs (no Spark), and in headless Chromium; its
augmented examples read from S3, and built end to end by ``build_report``."""

from __future__ import annotations

import dataclasses
import html
import itertools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from conftest import sample_classes, upload_sample
from fruits_features.config_files import build_config
from fruits_features.features.augment import AugmentSpec, augment_image
from fruits_features.features.decoding import decode_image
from fruits_features.io.folders import download_folder
from fruits_features.io.uri import S3Uri
from fruits_features.reporting.augmentation import (
    EXAMPLE_COPIES,
    augmented_example,
    describe_augmentation,
)
from fruits_features.reporting.figures import (
    AUGMENTED_PNG,
    CONFUSED_CLASSES_PNG,
    CONFUSION_PNG,
    PAIRS_PNG,
    SCATTER_PNG,
    VARIANCE_PNG,
    augmented_figure,
    confused_classes,
    row_normalised,
)
from fruits_features.reporting.gather import augmented_examples, spread_classes
from fruits_features.reporting.inputs import AugmentedExample, ConfusedExample, ReportInputs
from fruits_features.reporting.page import render_html, write_report_folder
from fruits_features.reporting.publish import build_report
from fruits_features.stages.metrics import classification_metrics, most_confused
from fruits_features.stages.reduce import fit_reduction, project
from report_checks import check_report_folder, open_in_chromium

SAMPLE = Path(__file__).parent / "data" / "fruits360-sample"
LABELS = [p.name for p in sorted(SAMPLE.iterdir()) if p.is_dir()][:12]


def synthetic_manifest(k: int = 8, target: float | None = 0.6) -> dict[str, Any]:
    spectrum = synthetic_spectrum()
    return {
        "run_id": "20261126T050000Z-abc123",
        "status": "succeeded",
        "input": "s3://fruits-demo/images/",
        "output": "s3://fruits-demo/features/20261126T050000Z-abc123",
        "started_at": "2026-11-26T05:00:00Z",
        "counts": {"keys_listed": 120, "keys_skipped": 0, "images": 120, "featurized": 119, "rejected": 1},
        "pca": {
            "k": k,
            "variance_target": target,
            "explained_variance": spectrum[:k],
            "cumulative_explained_variance": list(itertools.accumulate(spectrum[:k])),
        },
        "classifier": {"train_images": 84, "train_fraction": 0.7, "seed": 42, "untested_classes": []},
        "timings_seconds": {"list": 0.1, "load_and_embed": 20.5, "reduce": 1.2, "total": 30.0},
        "spark": {"version": "4.0.5", "master": "local[2]"},
        "versions": {"python": "3.11", "pyspark": "4.0.5"},
    }


def synthetic_spectrum() -> list[float]:
    values = 0.8 ** np.arange(30)
    return list(values / values.sum())


def synthetic_confusion() -> np.ndarray:
    rng = np.random.default_rng(3)
    confusion = np.diag(rng.integers(2, 5, size=len(LABELS)))
    confusion[0, 1] = 3  # Apple Braeburn taken for Apple Crimson Snow
    confusion[2, 3] = 2
    confusion[4, 3] = 1
    return confusion


def thumbnail(label: str) -> np.ndarray:
    path = sorted((SAMPLE / label).glob("*.jpg"))[0]
    return decode_image(path.read_bytes(), 100, 10**8)


def synthetic_inputs(with_classifier: bool = True) -> ReportInputs:
    rng = np.random.default_rng(0)
    scatter = pd.DataFrame(
        [
            (label, rng.normal(i, 0.5), rng.normal(-i, 0.5))
            for i, label in enumerate(LABELS[:5])
            for _ in range(20)
        ],
        columns=["label", "pc_1", "pc_2"],
    )
    if not with_classifier:
        manifest = synthetic_manifest()
        del manifest["classifier"]
        return ReportInputs(manifest=manifest, spectrum=synthetic_spectrum(), scatter=scatter)
    metrics = classification_metrics(LABELS, synthetic_confusion())
    confusions = most_confused(LABELS, metrics.confusion, 3)
    examples = [
        ConfusedExample(
            confusion=c,
            image_path=f"s3://b/images/{c.true}/x.jpg",
            reference_path=f"s3://b/images/{c.predicted}/y.jpg",
            image=thumbnail(c.true),
            reference=None if n == 2 else thumbnail(c.predicted),  # one image could not be read
        )
        for n, c in enumerate(confusions)
    ]
    return ReportInputs(
        manifest=synthetic_manifest(),
        spectrum=synthetic_spectrum(),
        scatter=scatter,
        metrics=metrics,
        examples=examples,
    )


def test_report_folder_holds_the_page_and_every_picture_it_refers_to(tmp_path: Path) -> None:
    written = write_report_folder(synthetic_inputs(), tmp_path)

    images = check_report_folder(tmp_path)

    assert set(images) == {VARIANCE_PNG, SCATTER_PNG, CONFUSION_PNG, CONFUSED_CLASSES_PNG, PAIRS_PNG}
    assert sorted(p.name for p in written) == sorted(["index.html", *images])


@pytest.mark.integration  # a browser
def test_report_opens_in_headless_chromium_without_errors(tmp_path: Path) -> None:
    folder = tmp_path / "report"
    write_report_folder(with_augmentation(synthetic_inputs()), folder)

    open_in_chromium(folder, tmp_path / "screenshot.png", tmp_path)


@pytest.mark.integration  # a browser
def test_a_picture_the_browser_cannot_decode_is_caught(tmp_path: Path) -> None:
    folder = tmp_path / "report"
    write_report_folder(synthetic_inputs(), folder)
    (folder / SCATTER_PNG).write_bytes(b"\x89PNG\r\n\x1a\n but not really")

    with pytest.raises(AssertionError, match="images the browser could not show"):
        open_in_chromium(folder, tmp_path / "screenshot.png", tmp_path)


def test_report_without_a_classifier_shows_the_components_only(tmp_path: Path) -> None:
    inputs = synthetic_inputs(with_classifier=False)

    write_report_folder(inputs, tmp_path)

    assert set(check_report_folder(tmp_path)) == {VARIANCE_PNG, SCATTER_PNG}
    page = (tmp_path / "index.html").read_text()
    assert "Not run (<code>classifier.enabled</code> is false)" in page
    assert "test accuracy" not in page


def test_page_states_the_numbers_of_the_manifest_and_metrics() -> None:
    # Numbers worked out by hand, not read back from the inputs: 7 of 8 test images right;
    # F1 6/7 and 8/9 for the two classes; the first 8 of 30 components of a 0.8 geometric spectrum
    # keep (1 - 0.8^8) / (1 - 0.8^30) = 83.3% of the variance.
    metrics = classification_metrics(["Apple", "Kiwi"], np.array([[3, 1], [0, 4]]))
    inputs = ReportInputs(manifest=synthetic_manifest(), spectrum=synthetic_spectrum(), metrics=metrics)

    page = render_html(inputs, {})

    assert "k = 8 components, the fewest reaching the variance target of 60.0%" in page
    assert "keep 83.3% of the variance" in page
    assert "Test accuracy <strong>87.5%</strong>" in page
    assert "macro F1 <strong>0.873</strong>" in page
    assert '<td class="num">20.5</td>' in page  # the embed stage's seconds
    assert "<img" not in page  # no picture drawn, none referred to


def test_the_page_names_the_backbone_of_the_features() -> None:
    inputs = synthetic_inputs(with_classifier=False)
    lite2 = {**inputs.manifest, "model": {"backbone": {"name": "efficientnet_lite2", "feature_dim": 1280}}}

    assert "of the standardized ResNet50 features" in render_html(inputs, {})  # a manifest without one
    page = render_html(ReportInputs(manifest=lite2, spectrum=inputs.spectrum), {})
    assert "of the standardized EfficientNet-Lite2 features" in page


def test_class_names_and_paths_are_escaped_in_the_page() -> None:
    inputs = synthetic_inputs(with_classifier=False)
    manifest = {**inputs.manifest, "input": "s3://b/<script>alert(1)</script>/", "run_id": "a&b"}

    page = render_html(ReportInputs(manifest=manifest, spectrum=inputs.spectrum), {})

    assert "<script>" not in page
    assert "s3://b/&lt;script&gt;alert(1)&lt;/script&gt;/" in page
    assert "run <code>a&amp;b</code>" in page


def test_rows_are_normalised_and_rows_without_test_images_stay_zero() -> None:
    shares = row_normalised(np.array([[3, 1], [0, 0]]))
    np.testing.assert_allclose(shares, [[0.75, 0.25], [0.0, 0.0]])


def test_confused_classes_keep_their_order_of_appearance_up_to_the_limit() -> None:
    confusions = most_confused(
        ["a", "b", "c", "d"], np.array([[1, 4, 0, 0], [0, 1, 0, 0], [0, 2, 1, 3], [0, 0, 0, 1]]), 5
    )
    assert [(c.true, c.predicted, c.count) for c in confusions] == [
        ("a", "b", 4),
        ("c", "d", 3),
        ("c", "b", 2),
    ]
    assert confused_classes(confusions) == ["a", "b", "c", "d"]
    assert confused_classes(confusions, limit=3) == ["a", "b", "c"]


def test_the_scatter_shows_classes_spread_over_the_plane_not_the_first_by_name() -> None:
    # Equal counts, as in the demo: eight apples packed near the origin, three other fruits apart.
    apples = {f"Apple {n}": (0.1 * n, 0.0) for n in range(8)}
    others = {"Banana": (10.0, 0.0), "Kiwi": (0.0, 10.0), "Orange": (-10.0, -10.0)}
    centroids = {**apples, **others}
    counts = dict.fromkeys(centroids, 2)

    chosen = spread_classes(centroids, counts, 4)

    assert chosen == ["Apple 0", "Banana", "Kiwi", "Orange"]  # not Apple 0-3
    assert spread_classes(dict(reversed(centroids.items())), counts, 4) == chosen  # order-free
    assert spread_classes(centroids, counts, 20) == sorted(centroids)  # all, when fewer than asked
    assert spread_classes({}, {}, 3) == []


def test_the_spread_starts_from_the_most_frequent_class() -> None:
    centroids = {"Apple": (0.0, 0.0), "Banana": (1.0, 0.0), "Cherry": (5.0, 0.0)}

    assert spread_classes(centroids, {"Apple": 1, "Banana": 9, "Cherry": 1}, 1) == ["Banana"]
    assert spread_classes(centroids, {"Apple": 1, "Banana": 9, "Cherry": 1}, 2) == ["Banana", "Cherry"]


# -- augmented examples (augment.copies) ----------------------------------------------------------

SPEC = AugmentSpec(copies=5, seed=11, scale=0.5, colour=0.5, noise=0.5)
EXAMPLE_SIZE = 64


def sample_file(label: str) -> Path:
    return sorted((SAMPLE / label).glob("*.jpg"))[0]


def example_of(label: str, spec: AugmentSpec = SPEC) -> AugmentedExample:
    original = decode_image(sample_file(label).read_bytes(), EXAMPLE_SIZE, 10**8)
    return augmented_example(label, f"s3://fruits/images/{label}/{sample_file(label).name}", original, spec)


def with_augmentation(inputs: ReportInputs) -> ReportInputs:
    """``inputs`` of a run with :data:`SPEC`, two classes shown beside their copies."""
    return dataclasses.replace(inputs, augment=SPEC, augmented=[example_of(LABELS[0]), example_of(LABELS[5])])


def test_an_example_holds_augment_images_copies_of_its_path_and_copy_numbers() -> None:
    example = example_of(LABELS[0])

    assert len(example.copies) == EXAMPLE_COPIES == 3  # 5 copies made, the first 3 shown
    for copy, pixels in enumerate(example.copies, start=1):
        expected = augment_image(example.original, SPEC, example.path, copy)
        np.testing.assert_array_equal(pixels, expected)
    assert not np.array_equal(example.copies[0], example.original)  # the background at least changed
    assert not np.array_equal(example.copies[0], example.copies[1])
    assert len(example_of(LABELS[0], SPEC.model_copy(update={"copies": 2})).copies) == 2


def test_the_figure_shows_each_original_then_its_copies_row_by_row() -> None:
    examples = [example_of(LABELS[0]), example_of(LABELS[5])]

    axes = augmented_figure(examples).axes

    columns = 1 + EXAMPLE_COPIES
    assert len(axes) == 2 * columns
    for row, example in enumerate(examples):
        shown = [example.original, *example.copies]
        for column, pixels in enumerate(shown):
            drawn = np.asarray(axes[row * columns + column].images[0].get_array())
            np.testing.assert_array_equal(drawn, pixels)
        titles = [axes[row * columns + column].get_title() for column in range(columns)]
        assert titles == [f"{example.label}\noriginal", "copy 1", "copy 2", "copy 3"]


def test_the_sentence_names_the_steps_on_with_their_probabilities_and_the_seed() -> None:
    spec = AugmentSpec(copies=2, seed=7, background=1.0, scale=0.5, noise=0.25)

    assert describe_augmentation(spec) == (
        "Each image was embedded with 2 augmented copies (augment.seed 7), with these steps on, each "
        "taken with its probability: background 1, scale 0.5 (to 60-100% of the frame), "
        "noise 0.25 (sigma 8 grey levels)."
    )
    others = AugmentSpec(copies=1, seed=0, background=0.2, colour=0.3, equalize=0.1)
    assert describe_augmentation(others) == (
        "Each image was embedded with 1 augmented copy (augment.seed 0), with these steps on, each "
        "taken with its probability: background 0.2, colour 0.3 (±30%), equalize 0.1."
    )
    nothing = AugmentSpec(copies=3, seed=1, background=0.0)
    assert describe_augmentation(nothing) == (
        "Each image was embedded with 3 augmented copies (augment.seed 1), with every step off "
        "(each copy equals its original)."
    )


def test_with_augmentation_the_page_shows_the_examples_and_names_the_steps(tmp_path: Path) -> None:
    inputs = with_augmentation(synthetic_inputs())

    written = write_report_folder(inputs, tmp_path)

    assert AUGMENTED_PNG in check_report_folder(tmp_path)
    assert tmp_path / AUGMENTED_PNG in written
    page = (tmp_path / "index.html").read_text()
    assert "<h2>Augmented examples</h2>" in page
    assert f"<p>{html.escape(describe_augmentation(SPEC))}</p>" in page
    # Without an example that could be read: the section and its sentence, no picture.
    unread = render_html(dataclasses.replace(inputs, augmented=[]), {})
    assert "<h2>Augmented examples</h2>" in unread
    assert "No example image could be read" in unread


def test_without_augmentation_the_report_has_no_augmented_section_nor_picture(tmp_path: Path) -> None:
    inputs = synthetic_inputs()  # augment None, as settings.augment_spec gives with copies 0

    written = write_report_folder(inputs, tmp_path)

    assert AUGMENTED_PNG not in [path.name for path in written]
    assert not (tmp_path / AUGMENTED_PNG).exists()
    page = (tmp_path / "index.html").read_text()
    assert "Augmented examples" not in page
    assert "augment.seed" not in page


def test_examples_read_from_s3_are_the_executors_pixels_and_a_bad_image_is_skipped(
    s3, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    label = LABELS[3]
    key = f"images/{label}/{sample_file(label).name}"
    s3.put_object(Bucket=bucket, Key=key, Body=sample_file(label).read_bytes())
    s3.put_object(Bucket=bucket, Key="images/Broken/0_100.jpg", Body=b"not an image")
    paths = [
        ("Broken", f"s3://{bucket}/images/Broken/0_100.jpg"),
        ("Missing", f"s3://{bucket}/images/Missing/0_100.jpg"),
        (label, f"s3://{bucket}/{key}"),
    ]

    with caplog.at_level(logging.WARNING, logger="fruits_features.reporting"):
        examples = augmented_examples(s3, paths, SPEC, image_size=EXAMPLE_SIZE, max_pixels=10**6)

    assert [(e.label, e.path) for e in examples] == [paths[2]]
    # What an executor computes for this row: the object's bytes decoded at model.image_size, then
    # augment_image with the row's `path` and each copy number.
    decoded = decode_image(sample_file(label).read_bytes(), EXAMPLE_SIZE, 10**6)
    np.testing.assert_array_equal(examples[0].original, decoded)
    for copy, pixels in enumerate(examples[0].copies, start=1):
        np.testing.assert_array_equal(pixels, augment_image(decoded, SPEC, f"s3://{bucket}/{key}", copy))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cannot decode" in w and "Broken/0_100.jpg" in w for w in warnings), warnings
    assert any("cannot read" in w and "Missing/0_100.jpg" in w for w in warnings), warnings


@pytest.mark.parametrize("copies", [2, 0], ids=["augment on", "augment off"])
def test_the_run_report_reads_and_shows_augmented_examples_only_with_augmentation(
    copies: int, spark, s3, s3_wire, bucket: str, tmp_path: Path
) -> None:
    classes = sample_classes(3)
    upload_sample(s3, bucket, "images", classes)
    s3.put_object(Bucket=bucket, Key="images/Broken/0_100.jpg", Body=b"not an image")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="images/")["Contents"])
    rng = np.random.default_rng(0)
    featurized = spark.createDataFrame(
        [(f"s3://{bucket}/{key}", key.split("/")[1], rng.normal(size=8).tolist()) for key in keys],
        "path string, label string, features array<float>",
    )
    reduction = fit_reduction(featurized, 2)
    counts = {row["label"]: row["count"] for row in featurized.groupBy("label").count().collect()}
    config = build_config(
        {
            "input": {"uri": f"s3://{bucket}/images/"},
            "output": {"uri": f"s3://{bucket}/out/"},
            "model": {"image_size": 64},
            "augment": {"copies": copies, "seed": 3, "colour": 0.5},
        }
    )

    with s3_wire.recording(bucket) as requests:
        build_report(
            config,
            manifest=synthetic_manifest(),
            reduction=reduction,
            projected=project(featurized, reduction),
            classes=counts,
            evaluation=None,
            client=s3,
            run_uri=S3Uri(bucket, "out/run-1"),
        )

    images_read = [r.key for r in requests if r.method == "GET" and r.key.startswith("images/")]
    download_folder(s3, S3Uri(bucket, "out/run-1/report"), tmp_path)
    shown = check_report_folder(tmp_path)
    page = (tmp_path / "index.html").read_text()
    if copies:
        # Four classes, as many as the report shows: each one's first key by name, one GET each,
        # the broken image's too (skipped, the report written all the same).
        labels = [*classes, "Broken"]
        assert images_read == [min(k for k in keys if k.split("/")[1] == label) for label in labels]
        assert AUGMENTED_PNG in shown
        assert "<h2>Augmented examples</h2>" in page
        assert "augment.seed 3" in page
    else:
        assert images_read == []
        assert AUGMENTED_PNG not in shown
        assert not (tmp_path / AUGMENTED_PNG).exists()
        assert "Augmented examples" not in page
