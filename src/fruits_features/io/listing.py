"""Listing the input: the image keys under a prefix and their labels (the class folders).

:func:`list_images` walks the prefix in one loop on the driver, which holds every key.
:mod:`fruits_features.io.parallel_listing` lists each folder on the executors instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fruits_features.io.labels import Labels
from fruits_features.io.s3 import iter_objects
from fruits_features.io.uri import S3Uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

# The columns of a listing made on the executors, as Spark DDL: ``label`` is null for a key that
# is not an image to featurize, ``etag`` where the listing has none (a plain key list).
LISTED_DDL = "path string, label string, etag string"


@dataclass(frozen=True)
class ImageRef:
    """One image to featurize: its location, its label (the class folder) and its ETag where the
    listing gave one (an incremental run compares it with the previous run's)."""

    path: str
    label: str
    etag: str | None = None


@dataclass(frozen=True)
class Listing:
    """What was found under the input prefix.

    Attributes:
        images: the images, sorted by path, on the driver (sequential listing); empty when
            ``frame`` holds them.
        keys_listed: every key listed; ``skipped`` of them are not images to featurize.
        frame: the keys of a listing on the executors (``parallel``, ``inventory``, ``key_list``)
            as a persisted ``path, label, etag`` DataFrame (:data:`LISTED_SCHEMA`) that the driver
            never collects: every key listed, ``label`` null for the skipped ones.
        labels: the label of each folder, where ``labels.rule`` makes labels that are not the
            folder (``images`` and ``frame`` hold the folders; the keys frame gets the labels).
    """

    images: list[ImageRef]
    keys_listed: int
    skipped: int
    frame: DataFrame | None = None
    labels: Labels | None = None

    def folders(self) -> set[str]:
        """The folder of every listed image (``""``: outside one), collected from ``frame`` if need be."""
        if self.frame is None:
            return {ref.label for ref in self.images}
        rows = self.frame.filter(self.frame["label"].isNotNull()).select("label").distinct().collect()
        return {row["label"] for row in rows}

    @property
    def count(self) -> int:
        """How many images were listed."""
        return self.keys_listed - self.skipped


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
    for key, etag in iter_objects(client, uri):
        listed += 1
        label = image_label(key, uri.prefix, extensions, labelled_only=labelled_only)
        if label is not None:
            images.append(ImageRef(str(S3Uri(uri.bucket, key)), label, etag))
    images.sort(key=lambda ref: ref.path)
    return Listing(images=images, keys_listed=listed, skipped=listed - len(images))


def image_label(key: str, prefix: str, extensions: tuple[str, ...], *, labelled_only: bool) -> str | None:
    """The label a listing gives ``key``: its class folder; ``""`` for an image outside one when
    ``labelled_only`` is false (scoring); ``None`` for a key that is skipped."""
    label = label_for_key(key, prefix, extensions)
    if label is None and not labelled_only and is_image_key(key, extensions):
        return ""
    if label is None:
        log.debug("skipping %s: not an image%s", key, " in a class folder" if labelled_only else "")
    return label
