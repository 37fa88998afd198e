"""Photo-like scenes: the second, fixed test set of `make bench-robustness`, made by other generators
than the training augmentation (:mod:`fruits_features.features.augment`) and than the first test
set (:func:`.backgrounds.composite`: one fruit filling its 100-pixel frame on a texture).

A scene is what a phone photo of a fruit looks like at the model's scale, drawn from the held-out
images of one class and a seed only (the same pixels on every machine):

- a 4:3 frame of :data:`SCENE_SIZE`, larger than the fruit;
- a backdrop: granite (:func:`stone`) or a market shelf (:func:`shelf`), neither used anywhere else,
  or one of the first set's textures at the frame's scale;
- one to three fruits of the class, each 30-70% of the frame's height, anywhere in it, up to a
  quarter of each cut off by the frame's edge, each with a soft contact shadow;
- sometimes a hand holding the first fruit, its fingers over the fruit;
- light falling off across the frame, a little blur, and JPEG compression at quality 45-80.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fruits_features.dev.bench.backgrounds import FEATHER, KINDS, WHITE_THRESHOLD, _finish, _smooth_noise
from fruits_features.features.augment import fruit_mask

SCENE_SIZE = (320, 240)  # width, height
# The backdrops a scene draws from: the two of this module, then the first set's textures.
BACKDROPS = ("stone", "shelf", *KINDS)
HAND = 0.3  # the probability that a hand holds the first fruit


def scene_rng(seed: str) -> np.random.Generator:
    """The random generator of the scene named ``seed``: the same on every machine."""
    digest = hashlib.sha256(f"scene\x00{seed}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def stone(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A granite worktop: a grey, beige or dark base, speckled with grains of three tones, a few
    faint veins, polished to a soft sheen."""
    base = np.array([rng.uniform(60, 200)] * 3, dtype=np.float32) + rng.uniform(-15, 15, size=3)
    pixels = np.empty((height, width, 3), dtype=np.float32)
    pixels[:] = base
    for tone in (rng.uniform(0.3, 0.6), rng.uniform(0.8, 1.0), rng.uniform(1.2, 1.5)):
        grains = rng.random((height, width)) < rng.uniform(0.05, 0.15)
        pixels[grains] = np.clip(base * tone, 0, 255)
    pixels = np.asarray(Image.fromarray(pixels.astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.7)))
    veins = np.abs(np.sin(_smooth_noise(rng, height, width, (3, 4)) * rng.uniform(12, 24)))
    sheen = 0.85 + 0.3 * _smooth_noise(rng, height, width, (2, 2))
    shaded = pixels.astype(np.float32) * (0.85 + 0.15 * veins)[..., None] * sheen[..., None]
    return _finish(shaded, rng, 3.0)


def shelf(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A market shelf: boards across the frame, crates of other produce in flat colours behind, price
    tags on the boards' edges, the top darker than the bottom."""
    image = Image.new("RGB", (width, height), tuple(int(v) for v in rng.uniform(40, 90, size=3)))
    draw = ImageDraw.Draw(image)
    level = int(rng.integers(height // 4, height // 2))
    top = 0
    while top < height:
        for left in range(-int(rng.integers(0, width // 3)), width, int(width * rng.uniform(0.2, 0.4))):
            produce = tuple(int(v) for v in rng.uniform(30, 230, size=3))
            draw.rectangle([left + 3, top + 4, left + width // 3, top + level - 10], fill=produce)
        board = tuple(int(v) for v in rng.uniform(120, 200, size=3))
        draw.rectangle([0, top + level - 10, width, top + level], fill=board)
        for _ in range(int(rng.integers(1, 4))):
            x = rng.uniform(0, width)
            draw.rectangle([x, top + level - 9, x + width * 0.08, top + level - 1], fill=(240, 235, 200))
        top += level
    light = np.linspace(rng.uniform(0.6, 0.8), 1.05, height, dtype=np.float32)
    pixels = np.asarray(image.filter(ImageFilter.GaussianBlur(1.2)), dtype=np.float32) * light[:, None, None]
    return _finish(pixels, rng, 4.0)


def backdrop(kind: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Backdrop ``kind`` (one of :data:`BACKDROPS`), uint8 RGB ``(height, width, 3)``."""
    if kind == "stone":
        return stone(rng, height, width)
    if kind == "shelf":
        return shelf(rng, height, width)
    return KINDS[kind](rng, height, width)


def cut_out(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fruit of a Fruits 360 image and its soft mask, cropped to the mask's bounding box."""
    mask = fruit_mask(pixels, WHITE_THRESHOLD, FEATHER)
    rows, columns = np.nonzero(mask > 0.5)
    if not len(rows):
        return pixels, np.ones(pixels.shape[:2], dtype=np.float32)
    top, bottom, left, right = rows.min(), rows.max() + 1, columns.min(), columns.max() + 1
    return pixels[top:bottom, left:right], mask[top:bottom, left:right]


def _paste(canvas: np.ndarray, layer: np.ndarray, alpha: np.ndarray, top: int, left: int) -> None:
    """Blend ``layer`` with ``alpha`` onto ``canvas`` (float32) at ``(top, left)``, clipped to it."""
    height, width = canvas.shape[:2]
    y0, x0 = max(0, top), max(0, left)
    y1, x1 = min(height, top + layer.shape[0]), min(width, left + layer.shape[1])
    if y0 >= y1 or x0 >= x1:
        return
    part = layer[y0 - top : y1 - top, x0 - left : x1 - left]
    a = alpha[y0 - top : y1 - top, x0 - left : x1 - left][..., None]
    canvas[y0:y1, x0:x1] = a * part + (1.0 - a) * canvas[y0:y1, x0:x1]


def _soft_ellipse(width: int, height: int, box: tuple[float, float, float, float], blur: float) -> np.ndarray:
    """A blurred filled ellipse in a ``(height, width)`` float32 mask of 0-1."""
    image = Image.new("L", (width, height), 0)
    ImageDraw.Draw(image).ellipse(box, fill=255)
    return np.asarray(image.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32) / 255.0


def _hand(rng: np.random.Generator, fruit_h: int, fruit_w: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """A hand seen from the side holding a fruit of ``(fruit_h, fruit_w)``: skin pixels, their
    mask, and their offset from the fruit's top left."""
    height, width = int(fruit_h * 1.6), int(fruit_w * 1.4)
    skin = np.array([rng.uniform(170, 235), rng.uniform(120, 180), rng.uniform(90, 150)], dtype=np.float32)
    mask = np.zeros((height, width), dtype=np.float32)
    palm_top = int(fruit_h * 0.75)
    mask = np.maximum(mask, _soft_ellipse(width, height, (0, palm_top, width * 0.9, height), 2.0))
    for finger in range(4):  # fingers curled over the fruit's lower front
        x = width * (0.15 + 0.17 * finger)
        mask = np.maximum(
            mask, _soft_ellipse(width, height, (x, fruit_h * 0.45, x + width * 0.14, palm_top + 10), 1.5)
        )
    shade = 0.75 + 0.35 * _smooth_noise(rng, height, width, (2, 3))
    return skin * shade[..., None], mask, int(fruit_h * 0.05), -int(fruit_w * 0.2)


def scene(fruits: Sequence[np.ndarray], seed: str) -> np.ndarray:
    """One scene of the fruits of one class (Fruits 360 images, uint8 RGB): uint8 RGB of
    :data:`SCENE_SIZE`, JPEG-compressed once. The same ``fruits`` and ``seed`` give the same pixels.

    Raises:
        ValueError: no fruit given.
    """
    if not fruits:
        raise ValueError("a scene needs at least one fruit")
    rng = scene_rng(seed)
    width, height = SCENE_SIZE
    kind = BACKDROPS[int(rng.integers(0, len(BACKDROPS)))]
    canvas = backdrop(kind, rng, height, width).astype(np.float32)
    count = int(rng.integers(1, min(3, len(fruits)) + 1))
    for index in range(count):
        pixels, mask = cut_out(fruits[(index + int(rng.integers(0, len(fruits)))) % len(fruits)])
        size = rng.uniform(0.3, 0.7) * height
        scale = size / max(pixels.shape[:2])
        new_w, new_h = max(4, round(pixels.shape[1] * scale)), max(4, round(pixels.shape[0] * scale))
        fruit = np.asarray(
            Image.fromarray(pixels).resize((new_w, new_h), Image.Resampling.BILINEAR), np.float32
        )
        alpha = np.asarray(Image.fromarray(mask).resize((new_w, new_h), Image.Resampling.BILINEAR))
        # anywhere, up to a quarter of the fruit outside the frame
        top = int(rng.uniform(-0.25 * new_h, height - 0.75 * new_h))
        left = int(rng.uniform(-0.25 * new_w, width - 0.75 * new_w))
        shadow = _soft_ellipse(
            width, height, (left, top + 0.75 * new_h, left + new_w * 1.1, top + 1.05 * new_h), 6
        )
        canvas *= 1.0 - rng.uniform(0.3, 0.6) * shadow[..., None]
        _paste(canvas, fruit, alpha, top, left)
        if index == 0 and rng.random() < HAND:
            skin, hand_mask, dy, dx = _hand(rng, new_h, new_w)
            _paste(canvas, skin, hand_mask, top + dy, left + dx)
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(angle) * x / width + np.sin(angle) * y / height + 1.0) / 2.0
    canvas *= (rng.uniform(0.6, 0.8) + rng.uniform(0.3, 0.5) * ramp)[..., None]
    image = Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8))
    image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, 1.2))))
    body = io.BytesIO()
    image.save(body, format="JPEG", quality=int(rng.integers(45, 81)))
    return np.asarray(Image.open(io.BytesIO(body.getvalue())).convert("RGB"))
