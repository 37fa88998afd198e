"""input.listing: parallel: the folders listed on the executors give exactly the keys, labels and counts
of the sequential listing, and a run over them the same output."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from fruits_features.errors import InputError
from fruits_features.io.listing import list_images
from fruits_features.io.parallel_listing import list_folders, list_images_in_parallel
from fruits_features.io.s3 import S3Settings
from fruits_features.io.uri import S3Uri

EXTENSIONS = (".jpg", ".jpeg", ".png")
# Two class folders past one page (1,000 keys) each, names with spaces and non-ASCII, a nested
# folder, keys directly under the prefix, and keys that are not images.
FOLDERS = {"Apple Red 1": 1003, "Pomme façon été": 1001, "Kiwi": 7}
OTHERS = [
    "Kiwi/notes.txt",
    "Kiwi/.hidden.jpg",
    "Kiwi/extra/nested 1.jpg",
    "top.jpg",
    "README.txt",
    "Kiwi/",
]


@pytest.fixture(scope="module")
def listed_bucket(s3) -> dict[str, Any]:
    bucket = "parallel-listing"
    s3.create_bucket(Bucket=bucket)
    keys = [f"images/{folder}/{i:05d} ü.jpg" for folder, count in FOLDERS.items() for i in range(count)]
    keys += [f"images/{key}" for key in OTHERS]
    keys += ["elsewhere/Kiwi/outside.jpg"]  # not under the prefix
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b"x"), keys))
    return {"bucket": bucket, "uri": S3Uri(bucket, "images/")}


@pytest.mark.parametrize("labelled_only", [True, False], ids=["class folders", "any image"])
def test_parallel_listing_gives_the_sequential_keys_labels_and_counts(
    spark, s3, listed_bucket: dict[str, Any], labelled_only: bool
) -> None:
    uri = listed_bucket["uri"]
    sequential = list_images(s3, uri, EXTENSIONS, labelled_only=labelled_only)

    parallel = list_images_in_parallel(spark, s3, S3Settings(), uri, EXTENSIONS, labelled_only=labelled_only)

    assert parallel.frame is not None
    try:
        rows = parallel.frame.filter("label IS NOT NULL").orderBy("path").collect()
    finally:
        parallel.frame.unpersist()
    assert [(r["path"], r["label"]) for r in rows] == [(ref.path, ref.label) for ref in sequential.images]
    assert (parallel.keys_listed, parallel.skipped, parallel.count) == (
        sequential.keys_listed,
        sequential.skipped,
        len(sequential.images),
    )
    assert parallel.images == []  # the driver holds no keys
    assert sequential.keys_listed == sum(FOLDERS.values()) + len(OTHERS)
    assert len(sequential.images) == sum(FOLDERS.values()) + (
        1 if labelled_only else 2
    )  # + nested (+ top.jpg)


def test_the_driver_lists_only_the_folders_and_the_keys_directly_under_the_prefix(
    s3, listed_bucket: dict[str, Any]
) -> None:
    folders, keys = list_folders(s3, listed_bucket["uri"])
    assert sorted(folders) == sorted(f"images/{name}/" for name in FOLDERS)
    assert sorted(key for key, _ in keys) == ["images/README.txt", "images/top.jpg"]


def test_a_prefix_that_cannot_be_listed_is_an_input_error(spark, s3) -> None:
    uri = S3Uri("no-such-bucket-anywhere", "images/")
    with pytest.raises(InputError, match=r"cannot list s3://no-such-bucket-anywhere/images/: NoSuchBucket"):
        list_images_in_parallel(spark, s3, S3Settings(), uri, EXTENSIONS)
