"""ResNet50 as an ONNX file: exported from Keras once, verified, and checked before a run uses it.

The export (``make export-onnx``, ``jobs/export_onnx.py``) builds Keras' ResNet50 from
``model.weights`` at ``model.image_size``, converts it with ``model.export(format="onnx")``
(tf2onnx underneath), runs both on real sample images and refuses to write a file whose features
differ from Keras' by more than :data:`TOLERANCE`. The file carries what it was made from in its
metadata (``fruits_features.*``): the weights' SHA-256, the image size, the versions, the
difference measured. Before any Spark work, :func:`check_onnx` opens the file with ONNX Runtime
and compares those with the configuration: a missing file, another image size or other weights
stop the run with one line.

Exporting needs TensorFlow, Keras, tf2onnx and onnx (the ``export`` extra); running the file
needs only ONNX Runtime.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError

from fruits_features.config import IMAGE_EXTENSIONS
from fruits_features.errors import (
    ConfigError,
    FruitsFeaturesError,
    InputError,
    OutputError,
    WeightsUnavailableError,
)
from fruits_features.features.decoding import ImageDecodeError, decode_image
from fruits_features.features.engines import FEATURE_DIM, preprocess
from fruits_features.features.model_files import (
    is_s3,
    local_file,
    one_line,
    tensorflow_import_quieted,
    weights_sha256,
)
from fruits_features.io.listing import list_images
from fruits_features.io.s3 import S3Settings, describe_error, read_object, s3_client
from fruits_features.io.uri import S3Uri

log = logging.getLogger(__name__)

# The largest absolute difference an export may show against Keras on the sample images (the
# features are averages of ReLU outputs, of order 1-20; tf2onnx's graph differs in float
# rounding only, about 1e-5 here).
TOLERANCE = 1e-4
_PREFIX = "fruits_features."
EXPORT_HINT = "export it with `make export-onnx` (python jobs/export_onnx.py --config <conf>)"


class OnnxModelError(WeightsUnavailableError):
    """The ONNX file ``model.onnx`` names cannot be had or opened (exit code 3)."""


class OnnxMismatchError(ConfigError):
    """The ONNX file was exported from other weights or for another image size (exit code 2)."""


class ExportError(FruitsFeaturesError):
    """The export differs from Keras beyond the tolerance (exit code 1)."""


@dataclass(frozen=True)
class OnnxInfo:
    """What an exported file says about itself.

    Attributes:
        image_size: the square input size the graph takes.
        weights: ``model.weights`` as given at export time.
        weights_sha256: the digest of that weights file.
        max_abs_difference: the largest difference from Keras measured at export time.
        verified_images: how many sample images that was measured on.
        versions: keras, tensorflow, tf2onnx and onnx at export time.
    """

    image_size: int
    weights: str
    weights_sha256: str
    max_abs_difference: float
    verified_images: int
    versions: dict[str, str]

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
            f"model.onnx={path}: not a ResNet50 export of this project ({one_line(exc)}); {EXPORT_HINT}"
        ) from exc


def check_onnx(location: str, weights: str, image_size: int, s3: S3Settings) -> OnnxInfo:
    """Make sure the ONNX file exists and was exported from ``weights`` at ``image_size``.

    Runs on the driver before any Spark work; an ``s3://`` file is downloaded into this
    machine's cache, where the local executors find it.

    Raises:
        OnnxModelError: the file is missing, unreadable or not ONNX.
        OnnxMismatchError: another image size, other weights, or not this project's export.
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
    if info.image_size != image_size:
        raise OnnxMismatchError(
            f"model.onnx={location} takes {info.image_size}px images but model.image_size is "
            f"{image_size}: export one for {image_size}px, or set model.onnx to it"
        )
    digest = weights_sha256(weights, s3)
    if digest != info.weights_sha256:
        raise OnnxMismatchError(
            f"model.onnx={location} was exported from other weights ({info.weights}, sha256 "
            f"{info.weights_sha256[:12]}...) than model.weights={weights} (sha256 {digest[:12]}...); "
            f"{EXPORT_HINT}"
        )
    return info


def compare_features(expected: np.ndarray, actual: np.ndarray, tolerance: float = TOLERANCE) -> float:
    """The largest absolute difference between Keras' features and the export's.

    Raises:
        ExportError: other shapes, a difference above ``tolerance``, or non-finite values.
    """
    if actual.shape != expected.shape or expected.shape[1:] != (FEATURE_DIM,):
        raise ExportError(f"the export gives features of shape {actual.shape}, Keras {expected.shape}")
    difference = float(np.max(np.abs(actual - expected)))
    log.info(
        "ONNX export differs from Keras by at most %.2e on %d images (largest feature %.1f)",
        difference,
        len(expected),
        float(np.max(np.abs(expected))),
    )
    if not difference <= tolerance:  # also refuses NaN
        raise ExportError(
            f"the ONNX export differs from Keras by {difference:.3g} (> {tolerance:g}) on "
            f"{len(expected)} sample images; nothing written"
        )
    return difference


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("keras", "tensorflow", "tf2onnx", "onnx", "onnxruntime")}


def _keras_model(weights: str, image_size: int, s3: S3Settings) -> Any:
    with tensorflow_import_quieted():
        import keras

    model = keras.applications.ResNet50(
        include_top=False,
        weights=local_file(weights, s3),
        input_shape=(image_size, image_size, 3),
        pooling="avg",
    )
    model(np.zeros((1, image_size, image_size, 3), np.float32))  # Keras exports only a called model
    return model


def export_onnx(weights: str, image_size: int, target: str, samples: np.ndarray, s3: S3Settings) -> OnnxInfo:
    """Export ResNet50 with ``weights`` at ``image_size`` to ``target``, verified on ``samples``.

    Args:
        weights: ``model.weights`` (``imagenet``, a local path or ``s3://``).
        image_size: the square input size.
        target: where the file goes, a local path or ``s3://`` URI.
        samples: uint8 RGB images ``(n, size, size, 3)``, decoded as the job decodes them.
        s3: boto3 settings for ``s3://`` weights and targets.

    Returns:
        What the written file records about itself.

    Raises:
        ExportError: no samples, or a difference from Keras above :data:`TOLERANCE`; nothing
            is written then.
        OutputError: the target cannot be written.
    """
    if len(samples) == 0:
        raise ExportError("no sample images to verify the export on")
    import onnx
    import onnxruntime as ort

    started = time.perf_counter()
    model = _keras_model(weights, image_size, s3)
    digest = weights_sha256(weights, s3)
    with tempfile.TemporaryDirectory(prefix="fruits-onnx-") as folder:
        path = Path(folder) / "model.onnx"
        with warnings.catch_warnings():  # Keras' tf2onnx shim probes np.object, which numpy 2 warns about
            warnings.filterwarnings("ignore", message="In the future `np.object`", category=FutureWarning)
            model.export(str(path), format="onnx", verbose=False)
        batch = preprocess(samples)
        expected = np.asarray(model.predict(batch, batch_size=16, verbose=0))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        actual = session.run(None, {session.get_inputs()[0].name: batch})[0]
        difference = compare_features(expected, actual)
        info = OnnxInfo(
            image_size=image_size,
            weights=weights,
            weights_sha256=digest,
            max_abs_difference=difference,
            verified_images=len(samples),
            versions=_versions(),
        )
        proto = onnx.load(str(path))
        for key, value in info.to_metadata().items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(proto, str(path))
        _put(path, target, s3)
    log.info(
        "exported ResNet50 (%dpx, %s) to %s in %.1fs",
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


def load_samples(
    source: str, count: int, image_size: int, s3: S3Settings, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> np.ndarray:
    """Up to ``count`` images from a local folder or an ``s3://`` prefix, spread over its classes.

    Decoded exactly as the job decodes them; files that cannot be read or decoded are passed over.

    Raises:
        InputError: the folder or prefix cannot be read or holds no images.
    """
    if is_s3(source):
        uri = S3Uri.parse(source)
        client = s3_client(s3)
        paths = [ref.path for ref in list_images(client, uri, extensions).images]

        def read(path: str) -> bytes:
            return read_object(client, S3Uri.parse(path))
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise InputError(f"sample images: {source} is not a folder")
        paths = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in extensions)

        def read(path: str) -> bytes:
            return Path(path).read_bytes()

    step = max(1, len(paths) // max(count, 1))
    pixels: list[np.ndarray] = []
    for path in paths[::step]:
        if len(pixels) == count:
            break
        try:
            pixels.append(decode_image(read(path), image_size, 50_000_000))
        except ImageDecodeError as exc:
            log.warning("sample %s passed over: %s", path, exc)
        except (OSError, ClientError, BotoCoreError, Boto3Error) as exc:
            log.warning("sample %s passed over: %s", path, describe_error(exc))
    if not pixels:
        raise InputError(f"sample images: no decodable images ({', '.join(extensions)}) under {source}")
    return np.stack(pixels)
