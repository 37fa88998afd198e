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

The photo-like steps join them where they belong, drawn from a second generator
(:func:`photo_rng`), so that with them off a copy is the same pixels as before they existed:
``several`` (a smaller mirrored copy of the fruit behind it) and ``cut`` (the fruit partly out of
the frame) with the placing; ``texture`` (a cluttered background instead of the colour field,
:func:`clutter`) and ``shadow`` (a contact shadow under the fruit) with the background; ``light``
(a ramp across the frame) before the colour step; ``blur`` before the noise and ``jpeg`` (compressed
at a random quality) last.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from fruits_features.config_sections import AugmentConfig

# How far small white areas inside the fruit (highlights) are closed into its mask: the side, in
# pixels, of Pillow's max/min filters (odd).
CLOSING = 5
# The fruit's outline in a JPEG is light but not white: the mask is eroded by this many pixels, so
# that no pale halo of the studio's white goes along with the fruit.
EDGE = 1
# The colour field: a grid of this many random colours a side, smoothly interpolated to the frame.
FIELD_GRID = 4
FIELD_NOISE_SIGMA = 6.0


# The ``augment`` section itself is what the executors are given (the UDF's closure carries it).
AugmentSpec = AugmentConfig


def copy_rng(seed: int, path: str, copy: int, stream: str = "") -> np.random.Generator:
    """The random generator of copy ``copy`` of the image at ``path``: the same on every machine and
    every run for the same values, independent between images, copies and ``stream``s."""
    digest = hashlib.sha256(f"{seed}\x00{path}\x00{copy}{stream}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def photo_rng(seed: int, path: str, copy: int) -> np.random.Generator:
    """The photo-like steps' own generator for the same copy (see the module's notes)."""
    return copy_rng(seed, path, copy, "\x00photo")


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


def clutter(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A cluttered background, float32 ``(height, width, 3)`` in 0-255: value noise of random colours at
    three scales, then shapes (ellipses, boxes, bars) of other colours, slightly out of focus. Like
    a table, a wall or a shelf behind a fruit in its edges and patches, none of them in particular."""
    field = np.zeros((height, width, 3), dtype=np.float32)
    for cells, weight in ((2, 0.5), (5, 0.3), (12, 0.2)):
        grid = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
        layer = Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC)
        field += weight * np.asarray(layer, dtype=np.float32)
    image = Image.fromarray(np.clip(field, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 12))):
        x, y = rng.uniform(-0.2, 1.0, size=2) * (width, height)
        w, h = rng.uniform(0.1, 0.6, size=2) * (width, height)
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        shape = int(rng.integers(0, 3))
        if shape == 0:
            draw.ellipse([x, y, x + w, y + h], fill=colour)
        elif shape == 1:
            draw.rectangle([x, y, x + w, y + h], fill=colour)
        else:
            draw.line([(x, y), (x + w, y + h)], fill=colour, width=max(1, int(min(width, height) * 0.04)))
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.5, 2.0))))
    noise = rng.normal(0.0, FIELD_NOISE_SIGMA, size=(height, width, 3))
    return np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype(np.float32)


def contact_shadow(mask: np.ndarray) -> np.ndarray:
    """A soft shadow under the fruit of ``mask``, float32 ``(h, w)`` of 0-1: a blurred ellipse at the
    bottom of the fruit's bounding box, a little wider than it."""
    height, width = mask.shape
    rows, columns = np.nonzero(mask > 0.5)
    shadow = Image.new("L", (width, height), 0)
    if len(rows):
        top, bottom, left, right = rows.min(), rows.max(), columns.min(), columns.max()
        tall, wide = bottom - top + 1, right - left + 1
        box = (left - 0.05 * wide, bottom - 0.2 * tall, right + 0.15 * wide, bottom + 0.12 * tall)
        ImageDraw.Draw(shadow).ellipse(box, fill=255)
    blurred = shadow.filter(ImageFilter.GaussianBlur(max(1.0, 0.04 * min(height, width))))
    return np.asarray(blurred, dtype=np.float32) / 255.0


def _overlap(
    shape: tuple[int, int], top: int, left: int, size: tuple[int, int]
) -> tuple[slice, slice, slice, slice]:
    """Where a ``size`` (h, w) layer at ``(top, left)`` meets a frame of ``shape`` (h, w): the frame's
    rows and columns, then the layer's (empty slices where they do not meet)."""
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = max(y0, min(shape[0], top + size[0])), max(x0, min(shape[1], left + size[1]))
    return slice(y0, y1), slice(x0, x1), slice(y0 - top, y1 - top), slice(x0 - left, x1 - left)


def _paste(
    canvas: np.ndarray, union: np.ndarray, layer: np.ndarray, alpha: np.ndarray, at: tuple[int, int]
) -> None:
    """Blend ``layer`` (float32) with ``alpha`` onto ``canvas`` at ``(top, left)``, clipped to the
    frame; the mask ``union`` takes ``alpha`` in too."""
    rows, columns, layer_rows, layer_columns = _overlap(union.shape, *at, alpha.shape)
    a = alpha[layer_rows, layer_columns]
    blended = a[..., None] * layer[layer_rows, layer_columns] + (1.0 - a[..., None]) * canvas[rows, columns]
    canvas[rows, columns] = blended
    union[rows, columns] = np.maximum(union[rows, columns], a)


def _resized(pixels: np.ndarray, mask: np.ndarray, new_w: int, new_h: int) -> tuple[np.ndarray, np.ndarray]:
    small = Image.fromarray(pixels).resize((new_w, new_h), Image.Resampling.BILINEAR)
    small_mask = Image.fromarray(mask).resize((new_w, new_h), Image.Resampling.BILINEAR)
    return np.asarray(small, dtype=np.float32), np.asarray(small_mask, dtype=np.float32)


def _placed(
    rng: np.random.Generator, pixels: np.ndarray, mask: np.ndarray, min_scale: float, cut: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The image and its mask shrunk by a random factor and placed at a random spot, up to ``cut`` of
    it outside the frame; white and mask 0 around them."""
    height, width = mask.shape
    factor = rng.uniform(min_scale, 1.0)
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    out_h, out_w = int(cut * new_h), int(cut * new_w)
    top = int(rng.integers(-out_h, height - new_h + out_h + 1))
    left = int(rng.integers(-out_w, width - new_w + out_w + 1))
    small, small_mask = _resized(pixels, mask, new_w, new_h)
    rows, columns, inner_rows, inner_columns = _overlap((height, width), top, left, (new_h, new_w))
    placed = np.full_like(pixels, 255)
    placed[rows, columns] = small[inner_rows, inner_columns].astype(np.uint8)
    placed_mask = np.zeros_like(mask)
    placed_mask[rows, columns] = small_mask[inner_rows, inner_columns]
    return placed, placed_mask


def _with_second_fruit(
    rng: np.random.Generator, pixels: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A smaller, mirrored copy of the fruit (50-80%) somewhere in the frame, behind the fruit."""
    height, width = mask.shape
    factor = rng.uniform(0.5, 0.8)
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    second, second_mask = _resized(pixels[:, ::-1].copy(), mask[:, ::-1].copy(), new_w, new_h)
    top = int(rng.integers(-new_h // 4, height - 3 * new_h // 4 + 1))
    left = int(rng.integers(-new_w // 4, width - 3 * new_w // 4 + 1))
    canvas = np.full(pixels.shape, 255.0, dtype=np.float32)
    union = np.zeros_like(mask)
    _paste(canvas, union, second, second_mask, (top, left))
    _paste(canvas, union, pixels.astype(np.float32), mask, (0, 0))
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), union


def _light_ramp(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Light falling off across the frame: a ramp from 0.6-0.8 to 1.0-1.2 in a random direction."""
    angle = rng.uniform(0.0, 2 * np.pi)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * x / width + np.sin(angle) * y / height + 1.0) / 2.0
    low, high = rng.uniform(0.6, 0.8), rng.uniform(1.0, 1.2)
    lit: np.ndarray = (low + (high - low) * ramp).astype(np.float32)
    return lit


def _jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    body = io.BytesIO()
    Image.fromarray(pixels).save(body, format="JPEG", quality=quality)
    with Image.open(io.BytesIO(body.getvalue())) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8)


def augment_image(
    pixels: np.ndarray, spec: AugmentSpec, path: str, copy: int, mask: np.ndarray | None = None
) -> np.ndarray:
    """Copy ``copy`` (1, 2, ...) of the decoded image at ``path``: uint8 RGB ``(h, w, 3)`` in, the
    same shape out. Deterministic: the same arguments give the same pixels.

    ``mask``: the image's :func:`fruit_mask` with ``spec``'s settings, where the caller makes several
    copies of one image (computed here when not given).
    """
    rng = copy_rng(spec.seed, path, copy)
    photo = photo_rng(spec.seed, path, copy)
    # The steps' coin flips come first, so that one step's probability never changes which of the
    # others run.
    draws = rng.random(5)
    texture, cut, several, shadow, light, blur, jpeg = photo.random(7)
    if mask is None:
        mask = fruit_mask(pixels, spec.white_threshold, spec.feather)
    image = pixels
    if several < spec.several:
        image, mask = _with_second_fruit(photo, image, mask)
    if draws[0] < spec.scale:
        image, mask = _placed(rng, image, mask, spec.min_scale, spec.cut_fraction if cut < spec.cut else 0.0)
    out = image.astype(np.float32)
    backdrop = None
    if draws[1] < spec.background:
        backdrop = clutter(photo, *mask.shape) if texture < spec.texture else colour_field(rng, *mask.shape)
    if shadow < spec.shadow:
        darker = 1.0 - photo.uniform(0.3, 0.6) * contact_shadow(mask)
        backdrop = (out if backdrop is None else backdrop) * darker[..., None]
    out = out if backdrop is None else mask[..., None] * out + (1.0 - mask[..., None]) * backdrop
    if light < spec.light:
        out = out * _light_ramp(photo, *mask.shape)[..., None]
    picture = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))
    if draws[2] < spec.colour:
        low, high = 1.0 - spec.colour_strength, 1.0 + spec.colour_strength
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            picture = enhancer(picture).enhance(float(rng.uniform(low, high)))
    if draws[3] < spec.equalize:
        picture = ImageOps.equalize(picture)
    if blur < spec.blur:
        picture = picture.filter(ImageFilter.GaussianBlur(float(photo.uniform(0.3, spec.blur_radius))))
    result = np.asarray(picture, dtype=np.uint8)
    if draws[4] < spec.noise:
        noisy = result.astype(np.float32) + rng.normal(0.0, spec.noise_sigma, size=result.shape)
        result = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    if jpeg < spec.jpeg:
        result = _jpeg(result, int(photo.integers(spec.jpeg_quality, 96)))
    return result
