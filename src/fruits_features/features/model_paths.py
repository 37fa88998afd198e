"""Where the model files are by default: Keras' ``imagenet`` cache and the ONNX export beside the
weights. Names only, no I/O: the config module uses them for its defaults.
"""

from __future__ import annotations

import os
from pathlib import Path

IMAGENET = "imagenet"

# Keras' own file name for the ImageNet ResNet50 weights without the top (keras.applications.resnet),
# and where it downloads them from: keras.utils.get_file returns the cached copy when there is one.
IMAGENET_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"


def keras_home() -> Path:
    """Keras' cache folder (``KERAS_HOME``, else ``~/.keras``), where ``imagenet`` lands."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def default_onnx_location(weights: str, image_size: int) -> str:
    """Where the ONNX export of ``weights`` at ``image_size`` lives unless ``model.onnx`` says.

    Next to the weights file, local or ``s3://``: ``<stem>.<size>px.onnx``; for ``imagenet``, in
    Keras' cache folder beside the downloaded weights.
    """
    if weights == IMAGENET:
        weights = str(keras_home() / "models" / IMAGENET_FILE)
    folder, _, name = weights.rpartition("/")
    stem = name[: -len(".h5")] if name.endswith(".h5") else name
    return f"{folder}/{stem}.{image_size}px.onnx" if folder else f"{stem}.{image_size}px.onnx"
