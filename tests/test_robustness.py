"""make bench-robustness's pure parts: the backgrounds, the composite, the split and the scoring's
accuracies. No Spark, no S3."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from fruits_features.dev.bench.backgrounds import KINDS, background, composite, kind_for
from fruits_features.dev.bench.robustness import accuracies, family, split_dev
from fruits_features.dev.bench.scenes import SCENE_SIZE, backdrop, scene
from fruits_features.features.augment import colour_field

SIZE = 100
SEEDS = range(8)


def fine_structure(pixels: np.ndarray) -> float:
    """How much of an image's fine detail is structure rather than pixel noise: the lag-1
    correlation of what a Gaussian blur of radius 2 removes (about 0 for white noise, high for
    edges, grain and strokes a few pixels wide)."""
    image = Image.fromarray(pixels.astype(np.uint8))
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(2.0)), dtype=np.float32)
    residual = (np.asarray(image, dtype=np.float32) - blurred).mean(axis=-1)[5:-5, 5:-5]
    across = np.corrcoef(residual[:, :-1].ravel(), residual[:, 1:].ravel())[0, 1]
    down = np.corrcoef(residual[:-1].ravel(), residual[1:].ravel())[0, 1]
    return float((across + down) / 2)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_background_is_the_same_for_the_same_seed_and_differs_for_another(kind: str) -> None:
    first = background(kind, SIZE, SIZE, "Kiwi/r_1_100.jpg")
    again = background(kind, SIZE, SIZE, "Kiwi/r_1_100.jpg")
    other = background(kind, SIZE, SIZE, "Kiwi/r_2_100.jpg")

    assert first.dtype == np.uint8
    assert first.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 5


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_background_is_not_near_white_nor_the_augmentations_smooth_colour_field(kind: str) -> None:
    fields = [colour_field(np.random.default_rng(seed), SIZE, SIZE) for seed in SEEDS]
    assert max(fine_structure(field) for field in fields) < 0.15  # the measure tells the field apart

    for seed in SEEDS:
        pixels = background(kind, SIZE, SIZE, seed)
        near_white = (pixels >= 230).all(axis=-1)
        assert near_white.mean() < 0.01, f"{kind} seed {seed}: {near_white.mean():.1%} near-white"
        assert fine_structure(pixels) > 0.25, f"{kind} seed {seed}: no more structure than a colour field"


def test_a_background_keeps_a_non_square_shape() -> None:
    assert all(background(kind, 60, 90, 0).shape == (60, 90, 3) for kind in KINDS)


def disc_on_white() -> tuple[np.ndarray, np.ndarray]:
    """A green disc of radius 30 on white, and the distance of each pixel from its centre."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    distance = np.hypot(yy - 48, xx - 52)
    pixels = np.full((SIZE, SIZE, 3), 255, dtype=np.uint8)
    pixels[distance <= 30] = (60, 150, 40)
    return pixels, distance


def test_a_composite_keeps_the_fruit_and_replaces_the_white_with_the_background() -> None:
    pixels, distance = disc_on_white()
    backdrop = background("bricks", SIZE, SIZE, 3)

    out = composite(pixels, backdrop)

    assert out.dtype == np.uint8
    assert out.shape == pixels.shape
    inside, outside = distance <= 24, distance >= 34  # beyond the mask's eroded, feathered edge
    np.testing.assert_array_equal(out[inside], pixels[inside])
    np.testing.assert_array_equal(out[outside], backdrop[outside])


def test_a_composite_refuses_a_background_of_another_size() -> None:
    pixels, _ = disc_on_white()

    with pytest.raises(ValueError, match="differ in shape"):
        composite(pixels, background("wood", 50, 50, 0))


def test_the_kinds_take_turns_over_the_held_out_images() -> None:
    kinds = [kind_for(index) for index in range(2 * len(KINDS))]

    assert kinds[: len(KINDS)] == list(KINDS)
    assert kinds[len(KINDS) :] == list(KINDS)


def test_the_split_holds_out_the_last_three_images_of_each_class_by_file_name() -> None:
    names = [f"{i}_100.jpg" for i in (5, 1, 9, 3, 7)]  # sorted: 1, 3, 5, 7, 9
    images = [Path("dev") / label / name for label in ("Kiwi", "Apple Red 1") for name in names]
    images.append(Path("dev") / "Fig" / "1_100.jpg")

    train, held_out = split_dev(images)

    assert [(p.parent.name, p.name) for p in train] == [
        ("Apple Red 1", "1_100.jpg"), ("Apple Red 1", "3_100.jpg"),
        ("Kiwi", "1_100.jpg"), ("Kiwi", "3_100.jpg"),
    ]  # fmt: skip
    assert [(p.parent.name, p.name) for p in held_out] == [
        ("Apple Red 1", "5_100.jpg"), ("Apple Red 1", "7_100.jpg"), ("Apple Red 1", "9_100.jpg"),
        ("Fig", "1_100.jpg"),  # a class of three or fewer is all held out
        ("Kiwi", "5_100.jpg"), ("Kiwi", "7_100.jpg"), ("Kiwi", "9_100.jpg"),
    ]  # fmt: skip


def test_accuracies_count_each_set_apart_per_kind_and_family_exactly_and_by_fruit() -> None:
    root = "s3://fruits-bench/robust/test"
    rows = [
        (f"{root}/white/Apple Red 1/a.jpg", "Apple Red 1", "Apple Red 1"),
        (f"{root}/white/Kiwi/b.jpg", "Kiwi", "Kiwi"),
        (f"{root}/wood/Apple Red 1/a.jpg", "Apple Red 1", "Apple Red 2"),  # the right fruit
        (f"{root}/bricks/Kiwi/b.jpg", "Kiwi", "Kiwi"),
        (f"{root}/wood/Apple Golden 1/c.jpg", "Apple Golden 1", "Apple Golden 1"),
        (f"{root}/photo/Kiwi/scene-0.jpg", "Kiwi", "Apple Red 1"),
        (f"{root}/photo/Apple Red 1/scene-0.jpg", "Apple Red 1", "Apple Golden 1"),
    ]

    scores = accuracies(rows)

    assert scores["white"] == {"images": 2, "correct": 2, "accuracy": 1.0, "fruit_accuracy": 1.0}
    assert scores["scene"] == {
        "images": 3, "correct": 2, "accuracy": pytest.approx(2 / 3), "fruit_accuracy": 1.0
    }  # fmt: skip
    assert scores["photo"] == {"images": 2, "correct": 0, "accuracy": 0.0, "fruit_accuracy": 0.5}
    assert scores["kinds"] == {
        "bricks": {"images": 1, "correct": 1, "accuracy": 1.0, "fruit_accuracy": 1.0},
        "wood": {"images": 2, "correct": 1, "accuracy": 0.5, "fruit_accuracy": 1.0},
    }
    assert scores["families"]["Apple"]["scene"]["accuracy"] == 0.5
    assert scores["families"]["Kiwi"]["white"]["accuracy"] == 1.0
    assert scores["families"]["Kiwi"]["photo"]["accuracy"] == 0.0
    assert scores["balanced_by_fruit"] == {"white": 1.0, "scene": 1.0, "photo": 0.5}
    assert family("Apple Red 1") == "Apple"


def test_a_photo_scene_is_a_larger_frame_the_same_for_the_same_seed_with_the_fruit_in_it() -> None:
    pixels, _ = disc_on_white()
    first = scene([pixels], "Kiwi/0")
    assert first.shape == (SCENE_SIZE[1], SCENE_SIZE[0], 3)
    np.testing.assert_array_equal(first, scene([pixels], "Kiwi/0"))
    assert np.abs(first.astype(int) - scene([pixels], "Kiwi/1").astype(int)).mean() > 5
    # the disc's green is somewhere in every scene, and the studio's white nowhere
    for seed in range(6):
        out = scene([pixels], f"Kiwi/{seed}").astype(int)
        greenish = (out[..., 1] > out[..., 0] + 40) & (out[..., 1] > out[..., 2] + 60)
        assert greenish.sum() > 200, seed
        assert ((out >= 245).all(axis=-1)).mean() < 0.01, seed


def test_a_scene_backdrop_is_none_of_the_augmentations_nor_near_white() -> None:
    fields = [colour_field(np.random.default_rng(seed), SIZE, SIZE) for seed in SEEDS]
    assert max(fine_structure(field) for field in fields) < 0.15
    for kind in ("stone", "shelf"):
        pixels = backdrop(kind, np.random.default_rng(1), SIZE, SIZE)
        assert ((pixels >= 230).all(axis=-1)).mean() < 0.05, kind
        assert fine_structure(pixels) > 0.25, kind
