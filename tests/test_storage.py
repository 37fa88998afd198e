from __future__ import annotations

import boto3
import pytest
from boto3.exceptions import RetriesExceededError
from botocore.config import Config
from botocore.exceptions import BotoCoreError

from fault_proxy import FaultPlan, FaultProxy
from fruits_features.errors import InputError, OutputError
from fruits_features.io.listing import ImageRef, label_for_key, list_images
from fruits_features.io.loading import keys_frame, partition_count
from fruits_features.io.partitions import parallelize_evenly
from fruits_features.io.s3 import (
    BODY_ATTEMPTS,
    S3Settings,
    check_output_writable,
    read_object,
    s3_client,
    write_object,
)
from fruits_features.io.uri import S3Uri

EXTENSIONS = (".jpg", ".jpeg", ".png")


@pytest.mark.parametrize(
    ("key", "label"),
    [
        ("images/Apple Braeburn/r_6_100.jpg", "Apple Braeburn"),
        ("images/Kiwi/1.JPG", "Kiwi"),
        ("images/Kiwi/1.Jpeg", "Kiwi"),
        ("images/Kiwi/shot.png", "Kiwi"),
        ("images/Pitahaya Red/über café.jpg", "Pitahaya Red"),
        ("images/nested/Cherry 1/a.jpg", "Cherry 1"),
        ("images/Kiwi/notes.txt", None),
        ("images/Kiwi/anim.gif", None),
        ("images/Kiwi/", None),
        ("images/loose.jpg", None),
        ("images/Kiwi/.hidden.jpg", None),
        ("images/Kiwi/jpg", None),
    ],
)
def test_label_is_the_parent_folder_of_an_image_key(key: str, label: str | None) -> None:
    assert label_for_key(key, "images/", EXTENSIONS) == label


def test_uri_parsing_and_joining() -> None:
    uri = S3Uri.parse("s3://my-bucket/some/prefix")
    assert (uri.bucket, uri.key, uri.prefix) == ("my-bucket", "some/prefix", "some/prefix/")
    assert str(uri.join("run-1", "features")) == "s3://my-bucket/some/prefix/run-1/features"
    assert S3Uri.parse("s3://my-bucket").prefix == ""
    assert str(S3Uri.parse("s3://my-bucket/").join("x.csv")) == "s3://my-bucket/x.csv"


@pytest.mark.parametrize("bad", ["my-bucket/x", "http://my-bucket/x", "s3://", "s3://UP/x", "s3://a/x"])
def test_malformed_uris_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="s3"):
        S3Uri.parse(bad)


def test_listing_follows_pagination_past_1000_keys(s3, bucket: str) -> None:
    for i in range(1105):
        s3.put_object(Bucket=bucket, Key=f"images/Class {i % 3}/{i:05d}.jpg", Body=b"x")
    s3.put_object(Bucket=bucket, Key="images/Class 0/readme.txt", Body=b"x")
    s3.put_object(Bucket=bucket, Key="other/Class 0/outside.jpg", Body=b"x")

    listing = list_images(s3, S3Uri.parse(f"s3://{bucket}/images/"), EXTENSIONS)

    assert listing.keys_listed == 1106
    assert listing.skipped == 1
    assert len(listing.images) == 1105
    assert {ref.label for ref in listing.images} == {"Class 0", "Class 1", "Class 2"}
    assert listing.images[0].path == f"s3://{bucket}/images/Class 0/00000.jpg"


def test_listing_keeps_spaces_and_non_ascii_in_keys_and_labels(s3, bucket: str) -> None:
    keys = ["fruit/Pomme d'été/vue n°1 +%.JPEG", "fruit/Apple Braeburn/a b.png", "fruit/Kiwi/z.jpg"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")

    listing = list_images(s3, S3Uri.parse(f"s3://{bucket}/fruit"), EXTENSIONS)

    assert sorted(ref.path for ref in listing.images) == sorted(f"s3://{bucket}/{k}" for k in keys)
    assert {ref.label for ref in listing.images} == {"Pomme d'été", "Apple Braeburn", "Kiwi"}


def test_listing_a_missing_bucket_names_the_uri_and_cause(s3) -> None:
    with pytest.raises(InputError, match=r"cannot list s3://no-such-bucket-here/x/: NoSuchBucket"):
        list_images(s3, S3Uri.parse("s3://no-such-bucket-here/x/"), EXTENSIONS)


def test_output_folder_that_already_holds_objects_is_refused(s3, bucket: str) -> None:
    run = S3Uri.parse(f"s3://{bucket}/out/run-1")
    check_output_writable(s3, run)  # empty: fine
    s3.put_object(Bucket=bucket, Key="out/run-1/features/part-00000.csv", Body=b"stale")
    with pytest.raises(OutputError, match="already holds objects"):
        check_output_writable(s3, run)
    check_output_writable(s3, S3Uri.parse(f"s3://{bucket}/out/run-10"))  # a sibling prefix is not a clash


def proxied_client(proxy: str):
    """A client through the fault proxy, without botocore's own retries (so only read_object retries)."""
    config = Config(retries={"mode": "standard", "max_attempts": 1})
    return boto3.session.Session().client("s3", endpoint_url=proxy, config=config)


def test_an_object_is_read_with_one_get_and_read_again_when_its_body_is_cut_off(
    s3, bucket: str, s3_endpoint: str
) -> None:
    bodies = {f"images/Kiwi/{i}.jpg": bytes([i]) * (1000 + i) for i in range(6)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    plan = FaultPlan(every=2, kinds=("truncate",), methods=("GET",))  # every other GET loses half its body
    with FaultProxy(s3_endpoint, plan) as proxy:
        client = proxied_client(proxy)
        got = {key: read_object(client, S3Uri(bucket, key)) for key in bodies}
    assert got == bodies
    # Every even-numbered GET was cut: each object after the first once, each read again once.
    assert plan.faults["GET truncate"] == len(bodies) - 1
    assert [r.method for r in plan.requests] == ["GET"] * (2 * len(bodies) - 1)  # and no HEAD


def test_a_body_cut_off_on_every_attempt_is_an_error(s3, bucket: str, s3_endpoint: str) -> None:
    s3.put_object(Bucket=bucket, Key="images/Kiwi/1.jpg", Body=b"x" * 1000)
    plan = FaultPlan(every=1, kinds=("truncate",), methods=("GET",))
    with FaultProxy(s3_endpoint, plan) as proxy, pytest.raises(RetriesExceededError) as caught:
        read_object(proxied_client(proxy), S3Uri(bucket, "images/Kiwi/1.jpg"))
    assert plan.faults["GET truncate"] == BODY_ATTEMPTS
    assert isinstance(caught.value.last_exception, BotoCoreError)  # the cut-off body, as botocore saw it


@pytest.mark.parametrize(("sse", "key_id"), [("AES256", None), ("aws:kms", "alias/fruits-features")])
def test_objects_are_written_with_the_configured_encryption(
    s3, bucket: str, sse: str, key_id: str | None
) -> None:
    client = s3_client(S3Settings(sse=sse, sse_kms_key_id=key_id))
    write_object(client, S3Uri(bucket, "out/x.csv"), b"a,b\n", "text/csv")
    head = s3.head_object(Bucket=bucket, Key="out/x.csv")
    assert head["ServerSideEncryption"] == sse
    assert head.get("SSEKMSKeyId") == key_id


def test_expected_bucket_owner_is_added_only_where_s3_accepts_it() -> None:
    client = s3_client(S3Settings(expected_bucket_owner="123456789012"))
    sent: dict[str, dict[str, object]] = {}

    def capture(params: dict[str, object], model, **_: object) -> None:
        sent[model.name] = dict(params)
        raise RuntimeError("stop before sending")

    client.meta.events.register_last("before-parameter-build.s3", capture)
    for call in (
        lambda: client.list_objects_v2(Bucket="b", Prefix="p/"),
        lambda: client.get_object(Bucket="b", Key="k"),
        lambda: client.put_object(Bucket="b", Key="k", Body=b""),
        client.list_buckets,
    ):
        with pytest.raises(RuntimeError, match="stop before sending"):
            call()
    assert sent["ListObjectsV2"]["ExpectedBucketOwner"] == "123456789012"
    assert sent["GetObject"]["ExpectedBucketOwner"] == "123456789012"
    assert sent["PutObject"]["ExpectedBucketOwner"] == "123456789012"
    assert "ExpectedBucketOwner" not in sent["ListBuckets"]


@pytest.mark.parametrize(
    ("images", "parallelism", "configured", "expected"),
    [
        (1000, 2, 0, 2),
        (40, 4, 0, 2),
        (1, 8, 0, 1),
        (90_000, 64, 0, 64),
        (1000, 2, 7, 7),
        (1_000_000, 2, 0, 50),  # no task over 20,000 images
        (100_000_000, 256, 0, 5000),
        (100_000_000, 256, 300, 300),
    ],
)
def test_partition_count_is_one_task_per_core_at_most_20000_images_unless_configured(
    images: int, parallelism: int, configured: int, expected: int
) -> None:
    assert partition_count(images, parallelism, 32, configured) == expected


def test_keys_frame_spreads_the_keys_evenly_and_in_order(spark, capsys: pytest.CaptureFixture[str]) -> None:
    refs = [ImageRef(f"s3://b/images/C{i % 7}/{i:05d}.jpg", f"C{i % 7}", None) for i in range(3000)]

    frame = keys_frame(spark, refs, 2)  # one partition per core: a local relation, no Python worker
    other = keys_frame(spark, refs[:1001], 3)  # any other count: pickled rows, through Python workers

    assert frame.rdd.glom().map(len).collect() == [1500, 1500]
    assert other.rdd.glom().map(len).collect() == [333, 334, 334]
    assert [row["path"] for row in frame.collect()] == [ref.path for ref in refs]
    assert [row["path"] for row in other.collect()] == [ref.path for ref in refs[:1001]]
    frame.explain()
    assert "LocalTableScan" in capsys.readouterr().out
    # the folders of a parallel listing: PySpark's own split would be 32 in one task, 3 to 16 elsewhere
    assert parallelize_evenly(spark.sparkContext, list(range(131)), 8).glom().map(len).collect() == [
        16,
        16,
        17,
        16,
        16,
        17,
        16,
        17,
    ]
