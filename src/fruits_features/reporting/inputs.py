"""What the report shows, already on the driver: plain data, no Spark."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fruits_features.features.augment import AugmentSpec
from fruits_features.features.backbones import BACKBONES, RESNET50
from fruits_features.stages.metrics import Confusion, Metrics

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConfusedExample:
    """One cell of the confusion matrix, with a picture of each side.

    Attributes:
        confusion: true class, predicted class, how many test images.
        image_path: a test image of the true class that was predicted as the other class.
        reference_path: a training image of the predicted class (what it was taken for).
        image: ``image_path``'s pixels, ``None`` when it could not be read.
        reference: ``reference_path``'s pixels, ``None`` when it could not be read.
    """

    confusion: Confusion
    image_path: str | None
    reference_path: str | None
    image: np.ndarray | None = field(default=None, repr=False)
    reference: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class AugmentedExample:
    """An original image beside its first augmented copies, the pixels the model was given.

    Attributes:
        label: the image's class.
        path: the image's ``s3://`` path, as the job's ``path`` column holds it (the copies' random
            draws depend on it).
        original: the decoded image, uint8 ``(s, s, 3)`` at ``model.image_size``.
        copies: copies 1, 2, ... of it, each as the executors made it.
    """

    label: str
    path: str
    original: np.ndarray = field(repr=False)
    copies: tuple[np.ndarray, ...] = field(default=(), repr=False)


# -- drawing (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows, already on the driver.

    Attributes:
        manifest: the run's manifest so far (counts, PCA, classifier, timings, versions).
        spectrum: explained variance of every component PCA computed (at least the k kept).
        scatter: ``label, pc_1, pc_2`` of a bounded sample, or ``None``.
        metrics: the classifier's evaluation, or ``None`` without a classifier.
        examples: the most-confused pairs with thumbnails.
        augment: what the ``augment`` section asked for, or ``None`` when augmentation was off.
        augmented: a few images beside their augmented copies (with ``augment`` only).
    """

    manifest: Mapping[str, Any]
    spectrum: Sequence[float]
    scatter: pd.DataFrame | None = None
    metrics: Metrics | None = None
    examples: Sequence[ConfusedExample] = ()
    augment: AugmentSpec | None = None
    augmented: Sequence[AugmentedExample] = ()

    @property
    def backbone_title(self) -> str:
        """The backbone that embedded the images, as the report names it (the manifest's
        ``model.backbone``; ResNet50 for a manifest without one)."""
        name = self.manifest.get("model", {}).get("backbone", {}).get("name", RESNET50.name)
        return BACKBONES[name].title if name in BACKBONES else str(name)
