"""Listing the input: the image keys under a prefix and their labels (the class folders)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fruits_features.io.s3 import iter_keys
from fruits_features.io.uri import S3Uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageRef:
    """One image to featurize: its location and its label (the class folder)."""

    path: str
    label: str


@dataclass(frozen=True)
class Listing:
    """What was found under the input prefix."""

    images: list[ImageRef]
    keys_listed: int
    skipped: int


def is_image_key(key: str, extensions: tuple[str, ...]) -> bool:
    """Whether ``key`` names an image file: an accepted extension, not a folder, not hidden."""
    name = key.rsplit("/", 1)[-1]
    return not key.endswith("/") and not name.startswith(".") and name.lower().endswith(extensions)


def label_for_key(key: str, prefix: str, extensions: tuple[str, ...]) -> str | None:
    """The class label of an image key, or ``None`` when the key is not an image in a class folder.

    Args:
        key: the object key, for example ``images/Apple Braeburn/r_6_100.jpg``.
        prefix: the listed prefix (``images/``), so that a file directly under it has no label.
        extensions: accepted lower-case extensions, such as ``(".jpg", ".jpeg", ".png")``.

    Returns:
        The name of the image's parent folder, or ``None`` for other keys (folders, other
        extensions, or files with no class folder between the prefix and the file name).
    """
    if not is_image_key(key, extensions):
        return None
    relative = key[len(prefix) :] if key.startswith(prefix) else key
    parts = relative.split("/")
    if len(parts) < 2 or not parts[-2]:
        return None
    return parts[-2]


def list_images(
    client: S3Client, uri: S3Uri, extensions: tuple[str, ...], *, labelled_only: bool = True
) -> Listing:
    """List the images under ``uri``, sorted by key.

    Args:
        labelled_only: ``True`` (the feature job): only images in a class folder
            (``<prefix>/<Class name>/<file>``), labelled by it. ``False`` (scoring): every image,
            labelled by its folder where it has one below the prefix, else ``""``.

    Raises:
        InputError: if the prefix cannot be listed.
    """
    images: list[ImageRef] = []
    listed = 0
    for key in iter_keys(client, uri):
        listed += 1
        label = label_for_key(key, uri.prefix, extensions)
        if label is None:
            if labelled_only or not is_image_key(key, extensions):
                log.debug("skipping %s: not an image%s", key, " in a class folder" if labelled_only else "")
                continue
            label = ""
        images.append(ImageRef(str(S3Uri(uri.bucket, key)), label))
    images.sort(key=lambda ref: ref.path)
    return Listing(images=images, keys_listed=listed, skipped=listed - len(images))
