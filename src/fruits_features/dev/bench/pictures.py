"""The pictures `make bench-robustness` saves of its test images: the first set's backgrounds with a
few held-out images on them (robustness-backgrounds.png), and photo scenes (robustness-photos.png)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from fruits_features.dev.bench.backgrounds import KINDS, background

# The test sets: the held-out images as they are, and the photo scenes; the composites' sets are
# named for their background kind.
WHITE = "white"
PHOTO = "photo"


class TestImage(Protocol):
    """A test image (the bench's ``ScoredImage``): its set, class, file name and pixels."""

    @property
    def set(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def pixels(self) -> np.ndarray: ...


def plot_samples(tests: Sequence[TestImage], path: Path) -> None:
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


def plot_photos(tests: Sequence[TestImage], path: Path, count: int = 12) -> None:
    """robustness-photos.png: ``count`` photo scenes, spread over the classes, as scored."""
    photos = [image for image in tests if image.set == PHOTO]
    chosen = photos[:: max(1, len(photos) // count)][:count]
    columns = 4
    rows = [
        np.concatenate([i.pixels for i in chosen[r : r + columns]], axis=1)
        for r in range(0, len(chosen), columns)
    ]
    if rows and all(row.shape == rows[0].shape for row in rows):
        Image.fromarray(np.concatenate(rows, axis=0)).save(path)
