"""Sample images for the export's verification: decoded exactly as the job decodes them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError

from fruits_features.config import IMAGE_EXTENSIONS
from fruits_features.errors import InputError
from fruits_features.features.decoding import ImageDecodeError, decode_image
from fruits_features.features.model_files import is_s3
from fruits_features.io.listing import list_images
from fruits_features.io.s3 import S3Settings, describe_error, read_object, s3_client
from fruits_features.io.uri import S3Uri

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Samples:
    """Decoded sample images and their classes (the folder each image is in).

    Attributes:
        pixels: uint8 RGB ``(n, size, size, 3)``.
        labels: the class of each image, in the same order.
    """

    pixels: np.ndarray
    labels: tuple[str, ...]


def load_samples(
    source: str, count: int, image_size: int, s3: S3Settings, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> np.ndarray:
    """Up to ``count`` images from a local folder or an ``s3://`` prefix, spread over its classes:
    :func:`load_labelled_samples`' pixels."""
    return load_labelled_samples(source, count, image_size, s3, extensions).pixels


def load_labelled_samples(
    source: str, count: int, image_size: int, s3: S3Settings, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> Samples:
    """Up to ``count`` images from a local folder or an ``s3://`` prefix, spread over its classes,
    with their classes (``<class>/<file>``: the folder).

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
    labels: list[str] = []
    for path in paths[::step]:
        if len(pixels) == count:
            break
        try:
            pixels.append(decode_image(read(path), image_size, 50_000_000))
            labels.append(path.rsplit("/", 2)[-2] if path.count("/") >= 1 else "")
        except ImageDecodeError as exc:
            log.warning("sample %s passed over: %s", path, exc)
        except (OSError, ClientError, BotoCoreError, Boto3Error) as exc:
            log.warning("sample %s passed over: %s", path, describe_error(exc))
    if not pixels:
        raise InputError(f"sample images: no decodable images ({', '.join(extensions)}) under {source}")
    return Samples(np.stack(pixels), tuple(labels))
