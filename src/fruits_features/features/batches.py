"""The model's batches, prepared one ahead: decode, augment and preprocess a batch of images
while the model runs the one before. Pure numpy and Pillow (no Spark): the UDF's core runs it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from fruits_features.features.augment import AugmentSpec, augment_image, fruit_mask
from fruits_features.features.decoding import ImageDecodeError, decode_image
from fruits_features.features.engines import EmbedSpec


@dataclass
class Prepared:
    """One model batch, decoded and preprocessed: the (row, copy) each input fills, copy 0 being
    the image itself, and the model's input."""

    rows: list[tuple[int, int]]
    inputs: np.ndarray


@dataclass
class Augmenting:
    """What the copies need: the settings and each row's path (the copies' random draws)."""

    spec: AugmentSpec
    paths: list[str]


def prepared_batches(
    images: Iterable[bytes | None],
    spec: EmbedSpec,
    features: list[np.ndarray | None],
    errors: list[str | None],
    seconds: dict[str, float],
    *,
    augmenting: Augmenting | None = None,
) -> Iterator[Prepared]:
    """Decode, resize and preprocess ``images`` a model batch at a time, appending a slot per
    image to ``features`` and ``errors`` (the reason where it cannot be decoded) as it goes; with
    ``augmenting``, each decoded image's copies follow it into the batch."""
    rows: list[tuple[int, int]] = []
    pixels: list[np.ndarray] = []

    def batch() -> Prepared:
        started = time.perf_counter()
        prepared = Prepared(list(rows), spec.network.preprocess(np.stack(pixels)))
        seconds["decode"] += time.perf_counter() - started
        rows.clear()
        pixels.clear()
        return prepared

    for row, data in enumerate(images):
        features.append(None)
        errors.append(None)
        if data is None:  # not fetched, and the load stage recorded why
            continue
        started = time.perf_counter()
        try:
            decoded = decode_image(bytes(data), spec.image_size, spec.max_image_pixels)
        except ImageDecodeError as exc:
            errors[row] = str(exc)
            decoded = None
        seconds["decode"] += time.perf_counter() - started
        if decoded is None:
            continue
        pixels.append(decoded)
        rows.append((row, 0))
        if augmenting is not None:
            started = time.perf_counter()
            settings, path = augmenting.spec, augmenting.paths[row]
            mask = fruit_mask(decoded, settings.white_threshold, settings.feather)  # once for all copies
            for copy in range(1, settings.copies + 1):
                pixels.append(augment_image(decoded, settings, path, copy, mask))
                rows.append((row, copy))
            seconds["augment"] += time.perf_counter() - started
        if len(pixels) >= spec.batch_size:
            yield batch()
    if pixels:
        yield batch()


def place_outputs(
    prepared: Prepared,
    outputs: np.ndarray,
    features: list[np.ndarray | None],
    copies: dict[int, list[np.ndarray]],
) -> int:
    """Put each output of a model batch in its image's slot, or its list of copies; returns how
    many were images (copy 0)."""
    for (index, copy), vector in zip(prepared.rows, outputs, strict=True):
        if copy == 0:
            features[index] = vector
        else:
            copies.setdefault(index, []).append(vector)
    return sum(copy == 0 for _, copy in prepared.rows)


_END = object()


def one_ahead(items: Iterator[Prepared], pool: ThreadPoolExecutor) -> Iterator[Prepared]:
    """``items``, each computed in ``pool`` while the caller works on the one before."""
    pending = pool.submit(next, items, _END)
    while (item := pending.result()) is not _END:
        pending = pool.submit(next, items, _END)
        yield item  # type: ignore[misc]
