"""The backbone in the framework its weights come from: what the ONNX export converts and is
checked against (:mod:`fruits_features.features.onnx_export`).

- ResNet50: Keras builds it from the ``.h5``; ``model.export(format="onnx")`` (tf2onnx) writes it.
- EfficientNet-Lite2: PyTorch builds it from the ``.pth`` (:mod:`fruits_features.features.lite2_export`).

Each is imported only when an export asks for it: TensorFlow or PyTorch, never both.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Protocol

import numpy as np

from fruits_features.errors import FruitsFeaturesError
from fruits_features.features.backbones import RESNET50, Backbone
from fruits_features.features.model_files import tensorflow_import_quieted

log = logging.getLogger(__name__)

# The export's ImageNet check: at least this share of the checked samples in their class.
MIN_FRUIT_TOP1 = 0.5


class ExportError(FruitsFeaturesError):
    """The export differs from its source framework beyond the tolerance, or its features fail
    the ImageNet check (exit code 1)."""


class SourceNetwork(Protocol):
    """The backbone in the framework its weights come from, built for one image size."""

    framework: str

    def versions(self) -> dict[str, str]:
        """The libraries the export records."""

    def export(self, path: Path) -> None:
        """Write the ONNX file."""

    def features(self, batch: np.ndarray) -> np.ndarray:
        """The framework's own features of preprocessed images."""

    def imagenet_logits(self, features: np.ndarray) -> np.ndarray | None:
        """The ImageNet-1k head applied to features; ``None`` for weights without one."""


class KerasResNet50:
    """Keras' ResNet50 (no top, average pooling): exported by tf2onnx, through ``model.export``."""

    framework = "Keras"

    def __init__(self, weights: str, image_size: int) -> None:
        with tensorflow_import_quieted():
            import keras

        self._model = keras.applications.ResNet50(
            include_top=False, weights=weights, input_shape=(image_size, image_size, 3), pooling="avg"
        )
        self._model(np.zeros((1, image_size, image_size, 3), np.float32))  # Keras exports only a called model

    def versions(self) -> dict[str, str]:
        return {name: version(name) for name in ("keras", "tensorflow", "tf2onnx", "onnx", "onnxruntime")}

    def export(self, path: Path) -> None:
        with warnings.catch_warnings():  # Keras' tf2onnx shim probes np.object, which numpy 2 warns about
            warnings.filterwarnings("ignore", message="In the future `np.object`", category=FutureWarning)
            self._model.export(str(path), format="onnx", verbose=False)

    def features(self, batch: np.ndarray) -> np.ndarray:
        return np.asarray(self._model.predict(batch, batch_size=16, verbose=0))

    def imagenet_logits(self, features: np.ndarray) -> np.ndarray | None:
        return None  # the notop weights carry no head


def source_network(network: Backbone, weights: Path, image_size: int) -> SourceNetwork:
    """The backbone built from a local weights file in its own framework."""
    if network is RESNET50:
        return KerasResNet50(str(weights), image_size)
    from fruits_features.features.lite2_export import Lite2Network

    return Lite2Network(weights, image_size)


def check_imagenet_top1(source: SourceNetwork, features: np.ndarray, labels: Sequence[str] | None) -> str:
    """``right/checked``: the samples of fruit classes ImageNet has that the source's ImageNet
    head, fed the exported ``features``, puts in their class; empty when nothing can be checked.

    Raises:
        ExportError: at least 5 checked and fewer than :data:`MIN_FRUIT_TOP1` of them right.
    """
    from fruits_features.features.lite2_export import fruit_top1

    logits = source.imagenet_logits(features)
    if logits is None or labels is None:
        return ""
    right, checked = fruit_top1(logits, list(labels))
    if checked == 0:
        return ""
    log.info("ImageNet check: %d of %d samples of ImageNet fruit classes in their class", right, checked)
    if checked >= 5 and right < MIN_FRUIT_TOP1 * checked:
        raise ExportError(
            f"the export's features put only {right} of {checked} sample images of ImageNet fruit classes "
            f"in their ImageNet class (at least {MIN_FRUIT_TOP1:.0%} expected): the weights or the "
            "preprocessing are wrong; nothing written"
        )
    return f"{right}/{checked}"
