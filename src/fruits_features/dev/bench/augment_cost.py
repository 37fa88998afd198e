"""What each augmentation step costs: milliseconds per copy on one core (`make bench-robustness`'s
``augment_ms_per_copy``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fruits_features.features.augment import AugmentSpec, augment_image, fruit_mask

# The augmentation steps timed one at a time (augment_costs), each with the default background.
TIMED_STEPS: dict[str, dict[str, Any]] = {
    "background (the default)": {},
    "texture": {"texture": 1.0},
    "scale": {"scale": 1.0},
    "scale + cut": {"scale": 1.0, "cut": 1.0},
    "several": {"several": 1.0},
    "shadow": {"shadow": 1.0},
    "light": {"light": 1.0},
    "colour": {"colour": 1.0},
    "equalize": {"equalize": 1.0},
    "blur": {"blur": 1.0},
    "noise": {"noise": 1.0},
    "jpeg": {"jpeg": 1.0},
}


def augment_costs(images: Sequence[Path], size: int, rounds: int = 3) -> dict[str, float]:
    """Milliseconds per copy of each step of :data:`TIMED_STEPS` at ``size`` px, on one core: the
    median of ``rounds`` passes over ``images`` (decoded once, the fruit's mask made once per image,
    as the executors do), each step taken with probability 1."""
    decoded = [
        (str(p), np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)))
        for p in images
    ]
    costs: dict[str, float] = {}
    for name, steps in TIMED_STEPS.items():
        spec = AugmentSpec(copies=1, **steps)
        masks = [fruit_mask(pixels, spec.white_threshold, spec.feather) for _, pixels in decoded]
        passes = []
        for _ in range(rounds):
            started = time.perf_counter()
            for (path, pixels), mask in zip(decoded, masks, strict=True):
                augment_image(pixels, spec, path, 1, mask)
            passes.append((time.perf_counter() - started) / len(decoded))
        costs[name] = round(1000 * float(np.median(passes)), 2)
    return costs
