from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fruits_features.io.outputs import failure_recorded, finish_run, to_csv_bytes, write_parts
from fruits_features.io.s3 import S3Settings
from fruits_features.io.uri import S3Uri
from fruits_features.manifest import Counts, PcaSection, RunManifest


class RecordingClient:
    """Stands in for boto3's S3 client: records PUTs in order, optionally failing on one key."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.keys: list[str] = []
        self.bodies: dict[str, bytes] = {}
        self.fail_on = fail_on

    def put_object(self, *, Bucket: str, Key: str, Body: bytes, ContentType: str) -> dict[str, Any]:  # noqa: N803
        if self.fail_on and Key.endswith(self.fail_on):
            raise ConnectionError("simulated failure")
        self.keys.append(Key)
        self.bodies[Key] = Body
        return {}


RUN = S3Uri.parse("s3://out-bucket/features/run-1")


def new_manifest() -> RunManifest:
    return RunManifest("features", "run-1", "s3://in/images/", str(RUN), {"pca": {"k": 2}})


def test_success_marker_is_written_last() -> None:
    client = RecordingClient()
    finish_run(client, RUN, new_manifest())
    assert client.keys == ["features/run-1/manifest.json", "features/run-1/_SUCCESS"]


def test_no_success_marker_when_the_manifest_cannot_be_written() -> None:
    client = RecordingClient(fail_on="manifest.json")
    with pytest.raises(ConnectionError):
        finish_run(client, RUN, new_manifest())
    assert not any(key.endswith("_SUCCESS") for key in client.keys)


def test_rejects_are_written_as_csv_parts_with_a_header_even_when_empty(spark, s3, bucket: str) -> None:
    rejects = [("s3://b/p/Kiwi/a, b.jpg", 'say "no"'), ("s3://b/p/Kiwi/c.jpg", "empty object (0 bytes)")]
    frame = spark.createDataFrame(rejects, "path string, reason string").repartition(2)

    parts = write_parts(frame, S3Uri(bucket, "out/run"), S3Settings(), "rejected")
    empty = write_parts(frame.limit(0), S3Uri(bucket, "out/none"), S3Settings(), "rejected")

    read = [
        pd.read_csv(io.BytesIO(s3.get_object(Bucket=bucket, Key=S3Uri.parse(p.uri).key)["Body"].read()))
        for p in parts
    ]
    assert sorted(map(tuple, pd.concat(read).to_numpy().tolist())) == sorted(rejects)
    assert (
        s3.get_object(Bucket=bucket, Key="out/none/rejected/part-00000.csv")["Body"].read()
        == b"path,reason\n"
    )
    assert [p.rows for p in empty] == [0]


def test_floats_round_trip_through_the_csv() -> None:
    values = np.random.default_rng(0).normal(size=(20, 3)) * 10.0 ** np.arange(-5, 10, 5)
    frame = pd.DataFrame(values, columns=["pc_1", "pc_2", "pc_3"])
    back = pd.read_csv(io.BytesIO(to_csv_bytes(frame)), float_precision="round_trip")
    np.testing.assert_array_equal(back.to_numpy(), values)


def test_features_are_written_as_one_csv_per_partition_from_the_executors(spark, s3, bucket: str) -> None:
    rows = [(f"s3://{bucket}/i/K{i % 3}/{i}.jpg", f"K{i % 3}", float(i) / 3, -float(i)) for i in range(10)]
    frame = spark.createDataFrame(rows, "path string, label string, pc_1 double, pc_2 double").repartition(3)
    run = S3Uri(bucket, "out/run-1")

    parts = write_parts(frame, run, S3Settings())

    assert sum(part.rows for part in parts) == 10
    assert len(parts) == 3
    read = []
    for part in parts:
        body = s3.get_object(Bucket=bucket, Key=S3Uri.parse(part.uri).key)["Body"].read()
        assert body.startswith(b"path,label,pc_1,pc_2\n")
        read.append(pd.read_csv(io.BytesIO(body), float_precision="round_trip"))
    got = pd.concat(read).sort_values("pc_2", ascending=False).reset_index(drop=True)
    expected = pd.DataFrame(rows, columns=["path", "label", "pc_1", "pc_2"])
    pd.testing.assert_frame_equal(got, expected)


def test_no_featurized_rows_still_leaves_a_readable_header_only_part(spark, s3, bucket: str) -> None:
    frame = spark.createDataFrame([], "path string, label string, pc_1 double")

    parts = write_parts(frame, S3Uri(bucket, "out/empty"), S3Settings())

    assert [(p.uri, p.rows) for p in parts] == [(f"s3://{bucket}/out/empty/features/part-00000.csv", 0)]
    body = s3.get_object(Bucket=bucket, Key="out/empty/features/part-00000.csv")["Body"].read()
    assert body == b"path,label,pc_1\n"


def test_the_manifest_holds_what_it_is_given() -> None:
    client = RecordingClient()
    manifest = new_manifest()
    manifest.counts = Counts(images=3, featurized=2, rejected=1)
    manifest.pca = PcaSection(2, None, [0.5, 0.25], [0.5, 0.75])
    manifest.succeed()
    finish_run(client, RUN, manifest)
    written = json.loads(client.bodies["features/run-1/manifest.json"])
    assert written == manifest.to_dict()
    assert (written["job"], written["status"], written["counts"]["images"]) == ("features", "succeeded", 3)
    assert written["pca"] == {
        "k": 2,
        "variance_target": None,
        "explained_variance": [0.5, 0.25],
        "cumulative_explained_variance": [0.5, 0.75],
    }
    # Sections this run does not have are left out, and there is no error.
    assert not {"error", "classifier", "report", "scoring_model", "spark"} & set(written)


def test_a_failure_in_the_block_writes_a_failed_manifest_then_goes_on() -> None:
    client = RecordingClient()
    manifest = new_manifest()

    def failing_stage() -> None:
        with failure_recorded(client, RUN, manifest):
            raise RuntimeError("PCA went wrong")

    with pytest.raises(RuntimeError, match="PCA went wrong"):
        failing_stage()
    written = json.loads(client.bodies["features/run-1/manifest.json"])
    assert (written["status"], written["error"]) == ("failed", "PCA went wrong")
    assert written["finished_at"]
    assert client.keys == ["features/run-1/manifest.json"]


def test_the_run_error_is_raised_even_when_its_manifest_cannot_be_written() -> None:
    client = RecordingClient(fail_on="manifest.json")
    with (
        pytest.raises(RuntimeError, match="the write stage"),
        failure_recorded(client, RUN, new_manifest()),
    ):
        raise RuntimeError("the write stage")


def test_a_block_that_succeeds_writes_nothing() -> None:
    client = RecordingClient()
    with failure_recorded(client, RUN, new_manifest()):
        pass
    assert client.keys == []


def test_features_as_parquet_hold_the_same_rows_and_float64_columns(spark, s3, bucket: str) -> None:
    rows = [(f"s3://{bucket}/i/K{i % 3}/{i}.jpg", f"K{i % 3}", float(i) / 3, -float(i)) for i in range(10)]
    frame = spark.createDataFrame(rows, "path string, label string, pc_1 double, pc_2 double").repartition(3)

    parts = write_parts(frame, S3Uri(bucket, "out/run-pq"), S3Settings(), fmt="parquet")

    assert len(parts) == 3
    assert all(part.uri.endswith(".parquet") for part in parts)
    read = [
        pd.read_parquet(io.BytesIO(s3.get_object(Bucket=bucket, Key=S3Uri.parse(p.uri).key)["Body"].read()))
        for p in parts
    ]
    assert sum(len(frame) for frame in read) == sum(part.rows for part in parts) == 10
    got = pd.concat(read).sort_values("pc_2", ascending=False).reset_index(drop=True)
    assert list(got.dtypes) == [object, object, np.float64, np.float64]
    pd.testing.assert_frame_equal(got, pd.DataFrame(rows, columns=["path", "label", "pc_1", "pc_2"]))


def test_no_rows_as_parquet_still_leaves_a_typed_empty_part(spark, s3, bucket: str) -> None:
    frame = spark.createDataFrame([], "path string, label string, pc_1 double")

    parts = write_parts(frame, S3Uri(bucket, "out/empty-pq"), S3Settings(), fmt="parquet")

    assert [(p.uri, p.rows) for p in parts] == [
        (f"s3://{bucket}/out/empty-pq/features/part-00000.parquet", 0)
    ]
    body = s3.get_object(Bucket=bucket, Key="out/empty-pq/features/part-00000.parquet")["Body"].read()
    empty = pd.read_parquet(io.BytesIO(body))
    assert len(empty) == 0
    assert list(empty.columns) == ["path", "label", "pc_1"]
    assert empty["pc_1"].dtype == np.float64
