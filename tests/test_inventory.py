"""input.listing: inventory and key_list: an S3 Inventory report (CSV or Parquet) or a key list, read by
the executors, gives exactly the keys, labels and counts of the sequential listing; a malformed
report is a one-line error (exit 2) before any heavy work."""

from __future__ import annotations

import gzip
import io
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from fruits_features.dev.inventory_report import InventoryEntry, entries_of, write_inventory, write_key_list
from fruits_features.errors import InputError, InventoryError
from fruits_features.io.inventory import (
    csv_records,
    key_list_entry,
    list_images_from_files,
    parse_manifest,
    schema_columns,
)
from fruits_features.io.listing import Listing, list_images
from fruits_features.io.s3 import S3Settings
from fruits_features.io.uri import S3Uri

EXTENSIONS = (".jpg", ".jpeg", ".png")
FOLDERS = {"Apple Red 1": 1003, "Pomme façon été": 1001, "Kiwi": 7}
OTHERS = ["Kiwi/notes.txt", "Kiwi/.hidden.jpg", "Kiwi/extra/nested 1+2.jpg", "top.jpg", "README.txt", "Kiwi/"]


# --- the pure parts -----------------------------------------------------------------------------


def manifest(**changes: Any) -> bytes:
    data = {
        "sourceBucket": "photos",
        "destinationBucket": "arn:aws:s3:::inventories",
        "version": "2016-11-30",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag, IsLatest, IsDeleteMarker",
        "files": [{"key": "photos/cfg/data/a.csv.gz", "size": 1, "MD5checksum": "x"}],
    }
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


def test_a_csv_manifest_names_its_columns_and_data_files_in_the_destination_bucket() -> None:
    parsed = parse_manifest(manifest(), "s3://inventories/m.json")
    assert parsed.source_bucket == "photos"
    assert parsed.file_format == "CSV"
    assert parsed.columns == (
        "bucket",
        "key",
        "size",
        "last_modified_date",
        "e_tag",
        "is_latest",
        "is_delete_marker",
    )
    assert parsed.files == ("s3://inventories/photos/cfg/data/a.csv.gz",)


def test_a_parquet_schema_gives_its_column_names() -> None:
    schema = (
        "message s3.inventory { required binary bucket (STRING); required binary key (STRING); "
        "optional binary e_tag (STRING);}"
    )
    assert schema_columns("Parquet", schema) == ("bucket", "key", "e_tag")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "is not an S3 Inventory manifest.json"),
        (manifest(files=None), "no files"),
        (manifest(fileFormat="ORC"), "fileFormat 'ORC'; this job reads CSV or Parquet"),
        (manifest(fileSchema="Bucket, Size"), "the fileSchema has no Key column"),
        (manifest(files=["a.csv.gz"]), "'files' is not a list"),
    ],
    ids=["not json", "no files", "orc", "no key column", "files not objects"],
)
def test_a_malformed_manifest_is_an_inventory_error_naming_the_file(body: bytes, message: str) -> None:
    with pytest.raises(InventoryError, match=message) as raised:
        parse_manifest(body, "s3://inventories/m.json")
    assert "s3://inventories/m.json" in str(raised.value)
    assert raised.value.exit_code == 2


def test_csv_rows_must_have_the_schemas_field_count() -> None:
    rows = b'"photos","a.jpg","1"\n"photos","b.jpg"\n'
    records = csv_records(io.BytesIO(rows), ("bucket", "key", "size"), "s3://i/a.csv")
    assert next(records) == {"bucket": "photos", "key": "a.jpg", "size": "1"}
    with pytest.raises(
        InventoryError, match=r"s3://i/a.csv row 2: 2 fields, the manifest's fileSchema has 3"
    ):
        next(records)


def test_a_key_list_line_is_a_key_of_the_input_bucket_or_a_full_uri() -> None:
    assert key_list_entry("images/Kiwi/a b.jpg\n", "photos") == S3Uri("photos", "images/Kiwi/a b.jpg")
    assert key_list_entry("s3://other/images/x.jpg", "photos") == S3Uri("other", "images/x.jpg")
    assert key_list_entry("   \n", "photos") is None


# --- against the local S3 endpoint and Spark ----------------------------------------------------


@pytest.fixture(scope="module")
def photos(s3) -> dict[str, Any]:
    """A prefix with two class folders past 1,000 keys, spaces, '+' and non-ASCII in keys, a nested
    folder, top-level keys and non-images, a key outside the prefix; and its reports and key lists."""
    bucket, reports = "inventory-photos", "inventory-reports"
    for name in (bucket, reports):
        s3.create_bucket(Bucket=name)
    keys = [f"images/{folder}/{i:05d} ü.jpg" for folder, count in FOLDERS.items() for i in range(count)]
    keys += [f"images/{key}" for key in OTHERS] + ["elsewhere/Kiwi/outside.jpg"]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=key.encode()), keys))
    entries = list(entries_of(s3, S3Uri(bucket, "")))
    # A versioned bucket's report also lists old versions and delete markers: neither is an image now.
    stale = [
        InventoryEntry(key="images/Kiwi/deleted.jpg", is_delete_marker=True),
        InventoryEntry(key="images/Kiwi/old version.jpg", is_latest=False),
    ]
    reports_uri = S3Uri(reports, "")
    return {
        "bucket": bucket,
        "uri": S3Uri(bucket, "images/"),
        "etags": {f"s3://{bucket}/{e.key}": e.etag for e in entries},
        "CSV": write_inventory(s3, reports_uri.join("csv"), bucket, entries + stale, rows_per_file=700),
        "Parquet": write_inventory(
            s3, reports_uri.join("parquet"), bucket, entries + stale, file_format="Parquet", rows_per_file=900
        ),
        "key_list": write_key_list(s3, reports_uri.join("keys/all.txt.gz"), [e.key for e in entries]),
        "key_list_uris": write_key_list(
            s3, reports_uri.join("uris/part-1.txt"), [f"s3://{bucket}/{e.key}" for e in entries]
        ),
    }


def rows_of(listing: Listing) -> list[tuple[str, str, str | None]]:
    assert listing.frame is not None
    try:
        rows = listing.frame.filter("label IS NOT NULL").orderBy("path").collect()
    finally:
        listing.frame.unpersist()
    return [(r["path"], r["label"], r["etag"]) for r in rows]


@pytest.mark.parametrize("labelled_only", [True, False], ids=["class folders", "any image"])
@pytest.mark.parametrize(
    ("kind", "source"),
    [("inventory", "CSV"), ("inventory", "Parquet"), ("key_list", "key_list"), ("key_list", "key_list_uris")],
    ids=["inventory csv", "inventory parquet", "key list of keys (gzip)", "key list of uris"],
)
def test_inventory_and_key_list_give_the_sequential_keys_labels_and_counts(
    spark, s3, photos: dict[str, Any], kind: str, source: str, labelled_only: bool
) -> None:
    uri = photos["uri"]
    sequential = list_images(s3, uri, EXTENSIONS, labelled_only=labelled_only)

    listing = list_images_from_files(
        spark,
        s3,
        S3Settings(),
        uri,
        photos[source],
        kind=kind,  # type: ignore[arg-type]
        extensions=EXTENSIONS,
        labelled_only=labelled_only,
    )

    rows = rows_of(listing)
    assert [(path, label) for path, label, _ in rows] == [(ref.path, ref.label) for ref in sequential.images]
    assert (listing.keys_listed, listing.skipped) == (sequential.keys_listed, sequential.skipped)
    assert listing.images == []  # the driver holds no keys
    if kind == "inventory":  # the report's ETags are the objects' own
        assert [etag for _, _, etag in rows] == [photos["etags"][path] for path, _, _ in rows]
    assert len(rows) == sum(FOLDERS.values()) + (1 if labelled_only else 2)


def test_a_data_file_that_does_not_match_its_manifest_is_an_inventory_error(
    spark, s3, photos: dict[str, Any]
) -> None:
    report = photos["CSV"]
    body = json.loads(s3.get_object(Bucket=report.bucket, Key=report.key)["Body"].read())
    bad = S3Uri(report.bucket, "bad/data/short.csv.gz")
    s3.put_object(
        Bucket=bad.bucket, Key=bad.key, Body=gzip.compress(b'"inventory-photos","images/Kiwi/a.jpg"\n')
    )
    body["files"] = [{"key": bad.key, "size": 1, "MD5checksum": ""}]
    broken = S3Uri(report.bucket, "bad/manifest.json")
    s3.put_object(Bucket=broken.bucket, Key=broken.key, Body=json.dumps(body).encode())

    with pytest.raises(
        InventoryError, match=r"short.csv.gz row 1: 2 fields, the manifest's fileSchema has 7$"
    ):
        list_images_from_files(
            spark, s3, S3Settings(), photos["uri"], broken, kind="inventory", extensions=EXTENSIONS
        )


def test_a_report_of_another_bucket_is_refused(spark, s3, photos: dict[str, Any]) -> None:
    with pytest.raises(
        InventoryError, match=r"lists bucket 'inventory-photos', but input\.uri is in 'elsewhere'"
    ):
        list_images_from_files(
            spark,
            s3,
            S3Settings(),
            S3Uri("elsewhere", "images/"),
            photos["CSV"],
            kind="inventory",
            extensions=EXTENSIONS,
        )


def test_a_missing_manifest_or_key_list_is_an_input_error(spark, s3, photos: dict[str, Any]) -> None:
    missing = S3Uri("inventory-reports", "nothing/manifest.json")
    with pytest.raises(
        InputError, match=r"cannot read input\.inventory s3://inventory-reports/nothing/manifest\.json"
    ):
        list_images_from_files(
            spark, s3, S3Settings(), photos["uri"], missing, kind="inventory", extensions=EXTENSIONS
        )
    with pytest.raises(InputError, match=r"no key-list files under input\.key_list"):
        list_images_from_files(
            spark,
            s3,
            S3Settings(),
            photos["uri"],
            S3Uri("inventory-reports", "nothing/"),
            kind="key_list",
            extensions=EXTENSIONS,
        )


def test_a_malformed_inventory_stops_the_job_with_exit_2_before_any_work(
    spark, s3, photos: dict[str, Any]
) -> None:
    from fruits_features import pipeline
    from fruits_features.config_files import build_config

    broken = S3Uri("inventory-reports", "broken/manifest.json")
    s3.put_object(Bucket=broken.bucket, Key=broken.key, Body=manifest(fileFormat="ORC"))
    config = build_config(
        {
            "input": {"uri": str(photos["uri"]), "listing": "inventory", "inventory": str(broken)},
            "output": {"uri": "s3://inventory-reports/out/"},
        }
    )

    with pytest.raises(InventoryError, match="fileFormat 'ORC'") as raised:
        pipeline.run(spark, config, "malformed")

    assert raised.value.exit_code == 2
    assert "\n" not in str(raised.value)
    assert not s3.list_objects_v2(Bucket="inventory-reports", Prefix="out/").get("KeyCount")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"listing": "inventory"}, "input.inventory is set exactly when input.listing is 'inventory'"),
        ({"key_list": "s3://bkt/keys.txt"}, "input.key_list is set exactly when input.listing is 'key_list'"),
        ({"listing": "inventory", "inventory": "bkt/manifest.json"}, "config key .input.inventory."),
    ],
)
def test_the_inventory_settings_are_checked_with_the_config(section: dict[str, str], message: str) -> None:
    from fruits_features.config_files import build_config
    from fruits_features.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        build_config({"input": {"uri": "s3://bkt/images/", **section}, "output": {"uri": "s3://bkt/out/"}})
