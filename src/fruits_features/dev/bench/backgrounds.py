"""Backgrounds the augmentation never uses, and a fruit composited onto one: the test images of
`make bench-robustness`. Pure numpy and Pillow, no Spark.

Each background is a procedural, photograph-like texture drawn from a kind and a seed only (the same
pixels on every machine): wood grain, a brick wall, foliage (leaves and grass blades), a checked
tablecloth, a blurred kitchen (wall, worktop, cupboards, jars, a window). None is the
augmentation's smooth random colour field (:func:`fruits_features.features.augment.colour_field`):
each has edges, stripes or strokes at the scale of the fruit, and none is near-white, so the fruit's
mask stays the studio's white in the originals only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fruits_features.features.augment import fruit_mask

# The fruit mask's settings: the augmentation's defaults (augment.white_threshold, augment.feather).
WHITE_THRESHOLD = 230
FEATHER = 1.5

Texture = Callable[[np.random.Generator, int, int], np.ndarray]


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: tuple[int, int]) -> np.ndarray:
    """Value noise in [0, 1]: a ``cells`` (rows, columns) grid of uniform values, bicubically
    interpolated to ``(height, width)``."""
    grid = rng.random(cells).astype(np.float32)
    image = Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)


def _ramp(values: np.ndarray, dark: np.ndarray, light: np.ndarray) -> np.ndarray:
    """``values`` in [0, 1] mapped linearly from colour ``dark`` to colour ``light``: ``(h, w, 3)``."""
    ramp: np.ndarray = dark + values[..., None] * (light - dark)
    return ramp


def _finish(pixels: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Sensor noise of ``sigma`` grey levels, clipped and rounded to uint8."""
    noisy = pixels + rng.normal(0.0, sigma, size=pixels.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def wood(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Planks of wood: grain lines bent by smooth noise, fine streaks along the grain, the planks'
    joints, horizontal or vertical."""
    vertical = bool(rng.integers(0, 2))
    h, w = (width, height) if vertical else (height, width)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    warp = _smooth_noise(rng, h, w, (3, 4)) * rng.uniform(10.0, 25.0)
    period = rng.uniform(6.0, 12.0)
    grain = 0.5 + 0.5 * np.sin(2 * np.pi * (y + warp + 0.03 * x) / period)
    streaks = np.asarray(
        Image.fromarray(rng.random((h, max(2, w // 12))).astype(np.float32)).resize(
            (w, h), Image.Resampling.BILINEAR
        )
    )
    tone = 0.55 * grain**1.5 + 0.3 * streaks + 0.15 * _smooth_noise(rng, h, w, (2, 2))
    plank = max(12, int(rng.integers(h // 4, h // 2 + 1)))
    tone = np.where((y.astype(int) % plank) < 1, 0.0, tone)
    dark = np.array([rng.uniform(70, 110), rng.uniform(40, 65), rng.uniform(20, 40)], dtype=np.float32)
    light = dark + np.array(
        [rng.uniform(70, 100), rng.uniform(55, 80), rng.uniform(35, 55)], dtype=np.float32
    )
    pixels = _ramp(tone, dark, light)
    if vertical:
        pixels = pixels.transpose(1, 0, 2)
    return _finish(pixels, rng, 3.0)


def bricks(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A brick wall: courses offset by half a brick, each brick its own shade of red or ochre,
    grey mortar, a mottled surface, lit from one side."""
    course = int(rng.integers(max(6, height // 10), max(8, height // 5) + 1))
    brick = int(course * rng.uniform(2.0, 2.8))
    mortar = max(1, course // 7)
    base = np.array([rng.uniform(140, 180), rng.uniform(55, 90), rng.uniform(35, 60)], dtype=np.float32)
    pixels = np.empty((height, width, 3), dtype=np.float32)
    pixels[:] = rng.uniform(120, 160) + np.array([0.0, -5.0, -12.0], dtype=np.float32)  # mortar
    for row, top in enumerate(range(-int(rng.integers(0, course)), height, course)):
        shift = (brick // 2) * (row % 2) + int(rng.integers(0, 3))
        for left in range(-shift, width, brick):
            shade = base * rng.uniform(0.75, 1.15) + rng.normal(0.0, 8.0, size=3)
            y0, y1 = max(0, top + mortar), min(height, top + course)
            x0, x1 = max(0, left + mortar), min(width, left + brick)
            if y0 < y1 and x0 < x1:
                pixels[y0:y1, x0:x1] = shade
    mottle = _smooth_noise(rng, height, width, (max(2, height // 6), max(2, width // 6)))
    light = np.linspace(rng.uniform(0.75, 0.9), rng.uniform(1.0, 1.1), width, dtype=np.float32)
    shaded = pixels * (0.8 + 0.4 * mottle)[..., None] * light[None, :, None]
    return _finish(shaded, rng, 5.0)


def foliage(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Leaves and grass: overlapping leaf shapes and blades in many greens on a dark ground, the
    far ones slightly out of focus."""
    scale = 4
    size = (width * scale, height * scale)
    ground = tuple(int(v) for v in (rng.uniform(15, 40), rng.uniform(35, 70), rng.uniform(10, 30)))
    image = Image.new("RGB", size, ground)
    draw = ImageDraw.Draw(image)

    def green() -> tuple[int, int, int]:
        g = rng.uniform(70, 190)
        return int(g * rng.uniform(0.25, 0.75)), int(g), int(g * rng.uniform(0.1, 0.45))

    for _ in range(int(rng.integers(40, 70))):
        cx, cy = rng.uniform(0, size[0]), rng.uniform(0, size[1])
        length, angle = rng.uniform(0.08, 0.22) * size[1], rng.uniform(0, np.pi)
        dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
        half = length * rng.uniform(0.18, 0.3)
        nx, ny = -np.sin(angle) * half, np.cos(angle) * half
        draw.polygon(
            [(cx - dx, cy - dy), (cx + nx, cy + ny), (cx + dx, cy + dy), (cx - nx, cy - ny)], fill=green()
        )
    for _ in range(int(rng.integers(60, 110))):
        x0, y0 = rng.uniform(0, size[0]), rng.uniform(size[1] * 0.2, size[1] * 1.1)
        length, lean = rng.uniform(0.15, 0.45) * size[1], rng.uniform(-0.35, 0.35)
        end = (x0 + lean * length, y0 - length)
        draw.line([(x0, y0), end], fill=green(), width=int(rng.integers(scale, 3 * scale)))
    small = image.filter(ImageFilter.GaussianBlur(scale * 0.6)).resize(
        (width, height), Image.Resampling.LANCZOS
    )
    return _finish(np.asarray(small, dtype=np.float32), rng, 4.0)


def tablecloth(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A checked (gingham) tablecloth on linen: crossing bands of one colour, darker where they
    cross, a fine weave, folds as soft shading, turned by a small angle."""
    side = int(np.ceil(np.hypot(height, width))) + 4
    y, x = np.mgrid[0:side, 0:side].astype(np.float32)
    period = rng.uniform(0.14, 0.3) * min(height, width)
    rows = ((y / period) % 1.0) < 0.5
    columns = ((x / period) % 1.0) < 0.5
    cover = (rows.astype(np.float32) + columns.astype(np.float32)) / 2.0
    linen = np.array([rng.uniform(205, 225), rng.uniform(195, 212), rng.uniform(160, 185)], dtype=np.float32)
    colours = [(175, 35, 40), (40, 70, 150), (40, 120, 70), (200, 120, 30)]
    band = np.array(colours[int(rng.integers(0, len(colours)))], dtype=np.float32)
    pixels = linen + cover[..., None] * (band - linen) * rng.uniform(0.8, 1.0)
    weave = 1.0 + 0.06 * np.sin(np.pi * x) * np.sin(np.pi * y)
    folds = 0.85 + 0.25 * _smooth_noise(rng, side, side, (2, 3))
    pixels = pixels * (weave * folds)[..., None]
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    image = image.rotate(float(rng.uniform(-25, 25)), resample=Image.Resampling.BILINEAR)
    top, left = (side - height) // 2, (side - width) // 2
    cropped = np.asarray(image.crop((left, top, left + width, top + height)), dtype=np.float32)
    return _finish(cropped, rng, 3.0)


def kitchen(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A kitchen out of focus behind the fruit: a tiled wall above a worktop, cupboard doors, a
    window, jars and a bowl, blurred as a camera's short depth of field blurs them."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    wall = np.array([rng.uniform(150, 210), rng.uniform(140, 200), rng.uniform(110, 180)])
    counter = int(height * rng.uniform(0.55, 0.75))
    for row in range(counter):  # the wall, darker towards the top
        draw.line([(0, row), (width, row)], fill=tuple(int(c) for c in wall * (0.7 + 0.3 * row / counter)))
    top = np.array([rng.uniform(60, 140), rng.uniform(50, 120), rng.uniform(40, 110)])
    for row in range(counter, height):
        draw.line(
            [(0, row), (width, row)], fill=tuple(int(c) for c in top * (1.1 - 0.3 * (row - counter) / height))
        )
    tile = int(rng.integers(max(4, height // 14), max(6, height // 8) + 1))
    grout = tuple(int(c) for c in wall * rng.uniform(0.55, 0.75))
    for row in range(0, counter, tile):  # a tiled splashback
        draw.line([(0, row), (width, row)], fill=grout)
    for column in range(int(rng.integers(0, tile)), width, tile):
        draw.line([(column, 0), (column, counter)], fill=grout)
    door = wall * rng.uniform(0.35, 0.65) + rng.uniform(-30, 30, size=3)
    bottom = int(counter * rng.uniform(0.35, 0.5))
    left = -int(rng.integers(0, width // 4))
    while left < width:  # a row of wall cupboards, dark gaps between the doors, a handle on each
        right = left + int(width * rng.uniform(0.2, 0.35))
        draw.rectangle([left + 2, 0, right - 2, bottom], fill=tuple(int(c) for c in door))
        draw.rectangle([right - 8, bottom - 12, right - 6, bottom - 4], fill=(40, 40, 45))
        left = right
    if rng.random() < 0.7:  # a window
        wx = int(rng.uniform(0.1, 0.6) * width)
        sky = (int(rng.uniform(150, 200)), int(rng.uniform(185, 215)), int(rng.uniform(205, 225)))
        draw.rectangle([wx, int(counter * 0.5), wx + width // 3, counter - 4], fill=sky)
    for _ in range(int(rng.integers(3, 7))):  # jars, bottles, a bowl on the worktop
        jx, jw = rng.uniform(0, width), rng.uniform(0.06, 0.16) * width
        jh = rng.uniform(0.12, 0.35) * height
        colour = tuple(int(v) for v in rng.uniform(30, 220, size=3))
        shape = draw.ellipse if rng.random() < 0.4 else draw.rectangle
        shape([jx, counter - jh, jx + jw, counter + 2], fill=colour)
    blurred = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.8, 1.4)) * min(height, width) / 100))
    return _finish(np.asarray(blurred, dtype=np.float32), rng, 3.0)


KINDS: dict[str, Texture] = {
    "wood": wood,
    "bricks": bricks,
    "foliage": foliage,
    "tablecloth": tablecloth,
    "kitchen": kitchen,
}


def background_rng(kind: str, seed: str | int) -> np.random.Generator:
    """The random generator of background ``kind`` for ``seed`` (an image's path, or a number):
    the same on every machine."""
    digest = hashlib.sha256(f"{kind}\x00{seed}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def background(kind: str, height: int, width: int, seed: str | int) -> np.ndarray:
    """Background ``kind`` (one of :data:`KINDS`), uint8 RGB ``(height, width, 3)``.

    Raises:
        KeyError: ``kind`` is not one of :data:`KINDS`.
    """
    return KINDS[kind](background_rng(kind, seed), height, width)


def kind_for(index: int) -> str:
    """The background kind of the ``index``-th held-out image: the kinds in turn, so that each
    takes an equal share of every class's images as far as the counts allow."""
    return list(KINDS)[index % len(KINDS)]


def composite(pixels: np.ndarray, backdrop: np.ndarray) -> np.ndarray:
    """The fruit of ``pixels`` on ``backdrop``: uint8 RGB, both of the same shape.

    The fruit is what :func:`~fruits_features.features.augment.fruit_mask` keeps (at the
    augmentation's default threshold and feather); its white surroundings become ``backdrop``,
    blended over the mask's soft edge.

    Raises:
        ValueError: the two arrays differ in shape.
    """
    if pixels.shape != backdrop.shape:
        raise ValueError(f"image {pixels.shape} and background {backdrop.shape} differ in shape")
    alpha = fruit_mask(pixels, WHITE_THRESHOLD, FEATHER)[..., None]
    blended = alpha * pixels.astype(np.float32) + (1.0 - alpha) * backdrop.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)
