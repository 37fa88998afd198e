"""The backbone as an ONNX file: exported once, verified, and checked before a run uses it.

The export (``make export-onnx``, ``make export-lite2``, ``jobs/export_onnx.py``) builds the
backbone from ``model.weights`` at ``model.image_size`` in its source framework, writes it as
ONNX, runs both on real sample images and refuses to write a file whose features differ from the
source framework's by more than :data:`TOLERANCE`:

- ResNet50: Keras builds it, ``model.export(format="onnx")`` (tf2onnx underneath) writes it;
- EfficientNet-Lite2: PyTorch builds it from the package's ``.pth``, ``torch.onnx.export`` writes
  it (:mod:`fruits_features.features.lite2_export`); its ImageNet head, fed the file's
  features, must also put the samples of fruit classes ImageNet has in their class.

The file carries what it was made from in its metadata (``fruits_features.*``): the backbone,
the weights' SHA-256, the image size, the versions, the difference measured. Before any Spark
work, :func:`check_onnx` opens the file with ONNX Runtime and compares those with the
configuration: a missing file, another backbone, another image size or other weights stop the
run with one line.

Exporting needs the source framework (the ``export`` or ``export-lite2`` extra); running the
file needs only ONNX Runtime or OpenVINO.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError

from fruits_features.errors import (
    ConfigError,
    OutputError,
    WeightsUnavailableError,
)
from fruits_features.features.backbones import RESNET50, Backbone
from fruits_features.features.export_sources import ExportError, check_imagenet_top1, source_network
from fruits_features.features.model_files import (
    imagenet_path,
    is_s3,
    local_file,
    one_line,
    weights_sha256,
)
from fruits_features.features.model_paths import IMAGENET
from fruits_features.io.s3 import S3Settings, describe_error, s3_client
from fruits_features.io.uri import S3Uri

log = logging.getLogger(__name__)

# The largest absolute difference an export may show against Keras on the sample images (the
# features are averages of ReLU outputs, of order 1-20; tf2onnx's graph differs in float
# rounding only, about 1e-5 here).
TOLERANCE = 1e-4
_PREFIX = "fruits_features."
EXPORT_HINT = (
    "export it with `make export-onnx` (ResNet50) or `make export-lite2` (EfficientNet-Lite2), that is "
    "python jobs/export_onnx.py --config <conf>"
)


class OnnxModelError(WeightsUnavailableError):
    """The ONNX file ``model.onnx`` names cannot be had or opened (exit code 3)."""


class OnnxMismatchError(ConfigError):
    """The ONNX file was exported from other weights or for another image size (exit code 2)."""


@dataclass(frozen=True)
class OnnxInfo:
    """What an exported file says about itself.

    Attributes:
        image_size: the square input size the graph takes.
        weights: ``model.weights`` as given at export time.
        weights_sha256: the digest of that weights file.
        max_abs_difference: the largest difference from the source framework measured at export time.
        verified_images: how many sample images that was measured on.
        versions: the source framework, its converter and onnx at export time.
        backbone: the network (files written before there was a choice are ResNet50's).
        imagenet_top1: ``right/checked`` samples of ImageNet fruit classes the export's features put
            in their class through the network's ImageNet head; empty without a head (ResNet50's
            weights have none) or without such samples.
    """

    image_size: int
    weights: str
    weights_sha256: str
    max_abs_difference: float
    verified_images: int
    versions: dict[str, str]
    backbone: str = RESNET50.name
    imagenet_top1: str = ""

    def to_metadata(self) -> dict[str, str]:
        """The ONNX ``metadata_props`` entries (strings only)."""
        values = {**asdict(self), **{f"{k}_version": v for k, v in self.versions.items()}}
        del values["versions"]
        return {f"{_PREFIX}{key}": str(value) for key, value in values.items()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], input_shape: Sequence[Any]) -> OnnxInfo:
        """Read back :meth:`to_metadata`, taking the image size from the graph's own input.

        Raises:
            KeyError: an entry is missing (a file this exporter did not write).
            ValueError: the input is not ``(batch, size, size, 3)``.
        """
        if len(input_shape) != 4 or input_shape[1] != input_shape[2] or input_shape[3] != 3:
            raise ValueError(f"expected an input of shape (batch, size, size, 3), got {list(input_shape)}")
        get = {k[len(_PREFIX) :]: v for k, v in metadata.items() if k.startswith(_PREFIX)}
        return cls(
            image_size=int(input_shape[1]),
            weights=get["weights"],
            weights_sha256=get["weights_sha256"],
            max_abs_difference=float(get["max_abs_difference"]),
            verified_images=int(get["verified_images"]),
            versions={k[: -len("_version")]: v for k, v in get.items() if k.endswith("_version")},
            backbone=get.get("backbone", RESNET50.name),
            imagenet_top1=get.get("imagenet_top1", ""),
        )


def read_info(path: str) -> OnnxInfo:
    """Open ``path`` with ONNX Runtime and read what it was exported from.

    Raises:
        OnnxModelError: not an ONNX file ONNX Runtime can open.
        OnnxMismatchError: an ONNX file, but not one this project's exporter wrote.
    """
    import onnxruntime as ort

    # Only the metadata and the input's shape are read: no graph optimisation (half the memory).
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own Fail/InvalidProtobuf/... classes
        raise OnnxModelError(f"model.onnx={path}: ONNX Runtime cannot open it ({one_line(exc)})") from exc
    metadata = session.get_modelmeta().custom_metadata_map
    try:
        return OnnxInfo.from_metadata(metadata, session.get_inputs()[0].shape)
    except (KeyError, ValueError) as exc:
        raise OnnxMismatchError(
            f"model.onnx={path}: not an export of this project ({one_line(exc)}); {EXPORT_HINT}"
        ) from exc


def check_onnx(
    location: str, weights: str, image_size: int, s3: S3Settings, network: Backbone = RESNET50
) -> OnnxInfo:
    """Make sure the ONNX file exists and was exported from ``weights`` at ``image_size``, for
    the backbone ``network``.

    Runs on the driver before any Spark work; an ``s3://`` file is downloaded into this
    machine's cache, where the local executors find it.

    Raises:
        OnnxModelError: the file is missing, unreadable or not ONNX.
        OnnxMismatchError: another backbone, image size or weights, or not this project's export.
        WeightsUnavailableError: the weights to compare with cannot be had.
    """
    if is_s3(location):
        uri = S3Uri.parse(location)
        try:
            s3_client(s3).head_object(Bucket=uri.bucket, Key=uri.key)
        except (ClientError, BotoCoreError) as exc:
            raise OnnxModelError(f"model.onnx={location}: {describe_error(exc)}; {EXPORT_HINT}") from exc
    elif not Path(location).is_file():
        raise OnnxModelError(f"model.onnx={location}: no such file; {EXPORT_HINT}")
    info = read_info(local_file(location, s3))
    if info.backbone != network.name:
        raise OnnxMismatchError(
            f"model.onnx={location} is an export of {info.backbone} but model.backbone is {network.name}: "
            f"{EXPORT_HINT}, or set model.onnx to a {network.name} export"
        )
    if info.image_size != image_size:
        raise OnnxMismatchError(
            f"model.onnx={location} takes {info.image_size}px images but model.image_size is "
            f"{image_size}: export one for {image_size}px, or set model.onnx to it"
        )
    digest = weights_sha256(weights, s3, network)
    if digest != info.weights_sha256:
        raise OnnxMismatchError(
            f"model.onnx={location} was exported from other weights ({info.weights}, sha256 "
            f"{info.weights_sha256[:12]}...) than model.weights={weights} (sha256 {digest[:12]}...); "
            f"{EXPORT_HINT}"
        )
    return info


def compare_features(
    expected: np.ndarray,
    actual: np.ndarray,
    tolerance: float = TOLERANCE,
    network: Backbone = RESNET50,
    source: str = "Keras",
) -> float:
    """The largest absolute difference between the source framework's features and the export's.

    Raises:
        ExportError: other shapes, a difference above ``tolerance``, or non-finite values.
    """
    if actual.shape != expected.shape or expected.shape[1:] != (network.feature_dim,):
        raise ExportError(f"the export gives features of shape {actual.shape}, {source} {expected.shape}")
    difference = float(np.max(np.abs(actual - expected)))
    log.info(
        "ONNX export differs from %s by at most %.2e on %d images (largest feature %.1f)",
        source,
        difference,
        len(expected),
        float(np.max(np.abs(expected))),
    )
    if not difference <= tolerance:  # also refuses NaN
        raise ExportError(
            f"the ONNX export differs from {source} by {difference:.3g} (> {tolerance:g}) on "
            f"{len(expected)} sample images; nothing written"
        )
    return difference


def export_onnx(
    weights: str,
    image_size: int,
    target: str,
    samples: np.ndarray,
    s3: S3Settings,
    *,
    network: Backbone = RESNET50,
    labels: Sequence[str] | None = None,
) -> OnnxInfo:
    """Export the backbone with ``weights`` at ``image_size`` to ``target``, verified on ``samples``.

    Args:
        weights: ``model.weights`` (``imagenet``, a local path or ``s3://``).
        image_size: the square input size.
        target: where the file goes, a local path or ``s3://`` URI.
        samples: uint8 RGB images ``(n, size, size, 3)``, decoded as the job decodes them.
        s3: boto3 settings for ``s3://`` weights and targets.
        network: the backbone.
        labels: the samples' Fruits 360 classes, for the ImageNet check (backbones with a head).

    Returns:
        What the written file records about itself.

    Raises:
        ExportError: no samples, a difference from the source framework above :data:`TOLERANCE`,
            or a failed ImageNet check; nothing is written then.
        OutputError: the target cannot be written.
    """
    if len(samples) == 0:
        raise ExportError("no sample images to verify the export on")
    import onnx
    import onnxruntime as ort

    started = time.perf_counter()
    digest = weights_sha256(weights, s3, network)
    local = imagenet_path(network) if weights == IMAGENET else Path(local_file(weights, s3))
    source = source_network(network, local, image_size)
    with tempfile.TemporaryDirectory(prefix="fruits-onnx-") as folder:
        path = Path(folder) / "model.onnx"
        source.export(path)
        batch = network.preprocess(samples)
        expected = source.features(batch)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        actual = session.run(None, {session.get_inputs()[0].name: batch})[0]
        difference = compare_features(expected, actual, network=network, source=source.framework)
        info = OnnxInfo(
            image_size=image_size,
            weights=weights,
            weights_sha256=digest,
            max_abs_difference=difference,
            verified_images=len(samples),
            versions=source.versions(),
            backbone=network.name,
            imagenet_top1=check_imagenet_top1(source, actual, labels),
        )
        proto = onnx.load(str(path))
        for key, value in info.to_metadata().items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(path))
        _put(path, target, s3)
    log.info(
        "exported %s (%dpx, %s) to %s in %.1fs",
        network.title,
        image_size,
        weights,
        target,
        time.perf_counter() - started,
    )
    return info


def _put(path: Path, target: str, s3: S3Settings) -> None:
    try:
        if is_s3(target):
            uri = S3Uri.parse(target)
            s3_client(s3).upload_file(str(path), uri.bucket, uri.key)
        else:
            destination = Path(target)
            destination.parent.mkdir(parents=True, exist_ok=True)
            partial = destination.with_name(f"{destination.name}.{os.getpid()}.partial")
            shutil.copyfile(path, partial)
            os.replace(partial, destination)  # readers never see half a file
    except (OSError, ClientError, BotoCoreError, Boto3Error) as exc:
        raise OutputError(f"cannot write the ONNX export to {target}: {describe_error(exc)}") from exc
