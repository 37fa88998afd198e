"""Augmented copies of a decoded image: the fruit as the robots and the app see it, not on Fruits 360's
white. Pure numpy and Pillow: the executors run it between decoding and the model.

Each copy is a function of the image's pixels, its path, the copy number and ``augment.seed`` only
(:func:`copy_rng`), so a rerun or a retried task gives the same pixels. The steps, each taken with
its own probability, in this order:

1. the fruit's mask: the pixels that are not near-white (every channel at or above
   ``white_threshold`` is background), closed over small highlights, its edge softened by
   ``feather`` pixels (:func:`fruit_mask`);
2. scale and position: the fruit and its mask shrunk by a factor in ``[min_scale, 1]`` and placed
   at a random spot of the frame;
3. background: everything outside the mask replaced by a smooth random colour field with noise
   (:func:`colour_field`), where the Fruits 360 background was white;
4. colour: brightness, contrast and saturation each scaled by a factor in
   ``[1 - colour_strength, 1 + colour_strength]``;
5. histogram equalisation (Pillow's ``ImageOps.equalize``);
6. Gaussian noise of ``noise_sigma`` grey levels.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

# How far small white areas inside the fruit (highlights) are closed into its mask: the side, in
# pixels, of Pillow's max/min filters (odd).
CLOSING = 5
# The fruit's outline in a JPEG is light but not white: the mask is eroded by this many pixels, so
# that no pale halo of the studio's white goes along with the fruit.
EDGE = 1
# The colour field: a grid of this many random colours a side, smoothly interpolated to the frame.
FIELD_GRID = 4
FIELD_NOISE_SIGMA = 6.0


@dataclass(frozen=True)
class AugmentSpec:
    """What the ``augment`` section asks the executors to do (the UDF's closure carries it).

    Attributes:
        copies: augmented copies per image (0: none).
        seed: with the image's path and the copy number, decides every random draw.
        background, scale, colour, equalize, noise: each step's probability, 0 to 1.
        white_threshold: a pixel whose three channels are all at least this is background.
        feather: the mask's edge softening, a Gaussian radius in pixels.
        min_scale: the smallest scale of the fruit in the frame.
        colour_strength: how far brightness, contrast and saturation move (0.3: +-30%).
        noise_sigma: the noise's standard deviation, in grey levels.
    """

    copies: int = 0
    seed: int = 0
    background: float = 1.0
    white_threshold: int = 230
    feather: float = 1.5
    scale: float = 0.0
    min_scale: float = 0.6
    colour: float = 0.0
    colour_strength: float = 0.3
    equalize: float = 0.0
    noise: float = 0.0
    noise_sigma: float = 8.0


def copy_rng(seed: int, path: str, copy: int) -> np.random.Generator:
    """The random generator of copy ``copy`` of the image at ``path``: the same on every machine and
    every run for the same three values, independent between images and copies."""
    digest = hashlib.sha256(f"{seed}\x00{path}\x00{copy}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def fruit_mask(pixels: np.ndarray, white_threshold: int, feather: float) -> np.ndarray:
    """Where the fruit is, 1.0, and its white background, 0.0: float32 ``(h, w)``.

    Near-white means all three channels at or above ``white_threshold``. Highlights inside the fruit
    smaller than :data:`CLOSING` pixels are closed into it; the outline is eroded by :data:`EDGE`
    pixels and softened by a Gaussian of radius ``feather``. A white part of a fruit larger than that
    counts as background.
    """
    fruit: np.ndarray = np.asarray((pixels < white_threshold).any(axis=-1))
    # The frame's outermost pixels are background: Fruits 360's photos often have a pale, not quite
    # white line there, which would otherwise show as a stripe around a shrunk copy.
    fruit[[0, -1], :] = False
    fruit[:, [0, -1]] = False
    mask = Image.fromarray(np.where(fruit, 255, 0).astype(np.uint8))
    mask = mask.filter(ImageFilter.MaxFilter(CLOSING)).filter(ImageFilter.MinFilter(CLOSING))
    mask = mask.filter(ImageFilter.MinFilter(2 * EDGE + 1))
    if feather > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(feather))
    return np.asarray(mask, dtype=np.float32) / 255.0


def colour_field(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth random colour field with noise, float32 ``(height, width, 3)`` in 0-255: a
    :data:`FIELD_GRID`-square grid of random colours, bicubically interpolated."""
    grid = rng.integers(0, 256, size=(FIELD_GRID, FIELD_GRID, 3), dtype=np.uint8)
    smooth = Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC)
    noise = rng.normal(0.0, FIELD_NOISE_SIGMA, size=(height, width, 3))
    return np.clip(np.asarray(smooth, dtype=np.float32) + noise, 0, 255).astype(np.float32)


def _placed(
    rng: np.random.Generator, pixels: np.ndarray, mask: np.ndarray, min_scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """The image and its mask shrunk by a random factor and placed at a random spot; white and
    mask 0 around them."""
    height, width = mask.shape
    factor = rng.uniform(min_scale, 1.0)
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    top, left = int(rng.integers(0, height - new_h + 1)), int(rng.integers(0, width - new_w + 1))
    small = Image.fromarray(pixels).resize((new_w, new_h), Image.Resampling.BILINEAR)
    small_mask = Image.fromarray(mask).resize((new_w, new_h), Image.Resampling.BILINEAR)
    placed = np.full_like(pixels, 255)
    placed[top : top + new_h, left : left + new_w] = np.asarray(small)
    placed_mask = np.zeros_like(mask)
    placed_mask[top : top + new_h, left : left + new_w] = np.asarray(small_mask)
    return placed, placed_mask


def augment_image(
    pixels: np.ndarray, spec: AugmentSpec, path: str, copy: int, mask: np.ndarray | None = None
) -> np.ndarray:
    """Copy ``copy`` (1, 2, ...) of the decoded image at ``path``: uint8 RGB ``(h, w, 3)`` in, the
    same shape out. Deterministic: the same arguments give the same pixels.

    ``mask``: the image's :func:`fruit_mask` with ``spec``'s settings, where the caller makes several
    copies of one image (computed here when not given).
    """
    rng = copy_rng(spec.seed, path, copy)
    # The steps' coin flips come first, so that one step's probability never changes which of the
    # others run.
    draws = rng.random(5)
    if mask is None:
        mask = fruit_mask(pixels, spec.white_threshold, spec.feather)
    image = pixels
    if draws[0] < spec.scale:
        image, mask = _placed(rng, image, mask, spec.min_scale)
    out = image.astype(np.float32)
    if draws[1] < spec.background:
        alpha = mask[..., None]
        out = alpha * out + (1.0 - alpha) * colour_field(rng, *mask.shape)
    picture = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    if draws[2] < spec.colour:
        low, high = 1.0 - spec.colour_strength, 1.0 + spec.colour_strength
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            picture = enhancer(picture).enhance(float(rng.uniform(low, high)))
    if draws[3] < spec.equalize:
        picture = ImageOps.equalize(picture)
    result = np.asarray(picture, dtype=np.uint8)
    if draws[4] < spec.noise:
        noisy = result.astype(np.float32) + rng.normal(0.0, spec.noise_sigma, size=result.shape)
        result = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return result
