"""Augmented copies: deterministic per seed, image and copy; the mask keeps the fruit."""

from __future__ import annotations

import numpy as np
import pytest

from fruits_features.features.augment import AugmentSpec, augment_image, fruit_mask

SIZE = 64


def fruit_on_white() -> tuple[np.ndarray, np.ndarray]:
    """A red disc of radius 18 (with a small white highlight inside) on white, and the disc less its
    outermost pixel (the mask's EDGE)."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    pixels = np.full((SIZE, SIZE, 3), 255, dtype=np.uint8)
    pixels[(yy - 30) ** 2 + (xx - 34) ** 2 <= 18**2] = (200, 30, 40)
    pixels[24:27, 28:31] = 250  # a 3x3 specular highlight, near-white, inside the fruit
    return pixels, (yy - 30) ** 2 + (xx - 34) ** 2 <= 16.5**2


def test_the_mask_keeps_the_fruit_with_its_highlight_and_drops_the_white() -> None:
    pixels, disc = fruit_on_white()

    mask = fruit_mask(pixels, white_threshold=230, feather=0.0)

    assert mask.shape == (SIZE, SIZE)
    assert (mask[disc] == 1.0).all()  # the highlight included
    ring = np.zeros_like(disc)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    ring[(yy - 30) ** 2 + (xx - 34) ** 2 >= 21**2] = True
    assert (mask[ring] == 0.0).all()


def test_background_replacement_changes_the_white_and_leaves_the_fruit() -> None:
    pixels, disc = fruit_on_white()
    spec = AugmentSpec(copies=1, background=1.0, feather=0.0)

    out = augment_image(pixels, spec, "s3://b/images/Apple/1.jpg", 1)

    assert out.dtype == np.uint8
    assert out.shape == pixels.shape
    np.testing.assert_array_equal(out[disc], pixels[disc])
    white = ~np.zeros_like(disc)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    white[(yy - 30) ** 2 + (xx - 34) ** 2 < 21**2] = False
    assert (out[white] < 230).any(axis=-1).mean() > 0.5  # most of the background is no longer white


ALL_STEPS = AugmentSpec(copies=2, seed=7, background=1.0, scale=1.0, colour=1.0, equalize=1.0, noise=1.0)


def test_a_copy_is_the_same_for_the_same_seed_image_and_copy_and_differs_otherwise() -> None:
    pixels, _ = fruit_on_white()
    path = "s3://b/images/Apple/1.jpg"

    first = augment_image(pixels, ALL_STEPS, path, 1)

    np.testing.assert_array_equal(first, augment_image(pixels.copy(), ALL_STEPS, path, 1))
    for other in (
        augment_image(pixels, ALL_STEPS, path, 2),
        augment_image(pixels, ALL_STEPS, "s3://b/images/Apple/2.jpg", 1),
        augment_image(pixels, ALL_STEPS.model_copy(update={"seed": 8}), path, 1),
    ):
        assert np.abs(first.astype(int) - other.astype(int)).mean() > 5


@pytest.mark.parametrize(
    "step", ["scale", "colour", "equalize", "noise", "several", "shadow", "light", "blur", "jpeg"]
)
def test_each_step_changes_the_pixels_only_when_it_is_on(step: str) -> None:
    pixels, _ = fruit_on_white()
    off = AugmentSpec(copies=1, background=0.0)

    unchanged = augment_image(pixels, off, "p", 1)
    changed = augment_image(pixels, off.model_copy(update={step: 1.0}), "p", 1)

    np.testing.assert_array_equal(unchanged, pixels)
    assert (changed != pixels).any()


def red_pixels(pixels: np.ndarray) -> int:
    return int(((pixels[..., 0] > 150) & (pixels[..., 1] < 90)).sum())


def test_cut_puts_part_of_the_fruit_out_of_the_frame_and_several_adds_a_second() -> None:
    pixels, _ = fruit_on_white()
    placed = AugmentSpec(copies=1, background=0.0, scale=1.0, min_scale=0.9)
    cut = placed.model_copy(update={"cut": 1.0, "cut_fraction": 0.5})
    paths = [f"s3://b/images/Apple/{i}.jpg" for i in range(12)]
    whole = [red_pixels(augment_image(pixels, placed, p, 1)) for p in paths]
    part = [red_pixels(augment_image(pixels, cut, p, 1)) for p in paths]
    disc = red_pixels(pixels)
    assert min(whole) > 0.75 * disc  # 90-100% of the size, always whole
    assert min(part) < 0.6 * disc  # some copies lose much of the fruit to the frame's edge
    assert max(part) > 0.75 * disc  # and some lose little or nothing

    several = AugmentSpec(copies=1, background=0.0, several=1.0, feather=0.0)
    _, inside = fruit_on_white()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    beyond = (yy - 30) ** 2 + (xx - 34) ** 2 > 19**2  # white in the original
    beside = []
    for path in paths:
        two = augment_image(pixels, several, path, 1)
        np.testing.assert_array_equal(two[inside], pixels[inside])  # the fruit in front of its copy
        beside.append(red_pixels(np.where(beyond[..., None], two, 255)))
    assert red_pixels(np.where(beyond[..., None], pixels, 255)) == 0
    assert np.mean(beside) > 0.05 * disc  # the copy, 50-80% of the fruit, partly behind it


def test_a_cluttered_background_replaces_the_colour_field_and_keeps_the_fruit() -> None:
    pixels, disc = fruit_on_white()
    field = AugmentSpec(copies=1, background=1.0, feather=0.0)
    clutter = field.model_copy(update={"texture": 1.0})
    for i in range(4):
        plain = augment_image(pixels, field, f"p{i}", 1).astype(np.float32)
        busy = augment_image(pixels, clutter, f"p{i}", 1).astype(np.float32)
        np.testing.assert_array_equal(busy[disc], pixels[disc])
        outside = ~disc
        assert np.abs(busy[outside] - plain[outside]).mean() > 20  # another background altogether
        assert (busy[outside] < 230).any(axis=-1).mean() > 0.5  # not the white


def test_the_udf_embeds_each_images_copies_beside_it_and_leaves_the_original_alone() -> None:
    from pathlib import Path

    import pandas as pd

    from fruits_features.features.decoding import decode_image
    from fruits_features.features.udf import EmbedSpec, embed_series, featurize

    spec = EmbedSpec(weights="fake", image_size=32, batch_size=4, threads=1, max_image_pixels=10**7)
    jpegs = sorted((Path(__file__).parent / "data" / "fruits360-sample").glob("*/*.jpg"))[:2]
    data = [jpegs[0].read_bytes(), b"not an image", jpegs[1].read_bytes()]
    paths = ["s3://b/images/A/0.jpg", "s3://b/images/A/bad.jpg", "s3://b/images/B/1.jpg"]

    def model(batch: np.ndarray) -> np.ndarray:  # per image: its mean per channel, 2048 wide
        return np.tile(batch.mean(axis=(1, 2)), (1, 2048 // 3 + 1))[:, :2048]

    augment = AugmentSpec(copies=2, seed=3, colour=1.0)
    plain = embed_series(pd.Series(data), spec, model)
    out = embed_series(pd.Series(data), spec, model, augment=augment, paths=paths)

    assert plain["augmented"].isna().all()
    assert out["augmented"][1] is None  # not decoded: no copies either
    for row in (0, 2):
        np.testing.assert_array_equal(out["features"][row], plain["features"][row])
        pixels = decode_image(data[row], 32, 10**7)
        expected = [featurize(model, augment_image(pixels, augment, paths[row], c)[None])[0] for c in (1, 2)]
        assert len(out["augmented"][row]) == 2
        for got, want in zip(out["augmented"][row], expected, strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6)
        assert not np.allclose(out["augmented"][row][0], out["features"][row])
