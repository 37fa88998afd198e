"""The embed stage's plumbing with fake models (after Spark's own tests of predict_batch_udf)."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import wait_for
from fruits_features.errors import WeightsUnavailableError
from fruits_features.features.backbones import RESNET50
from fruits_features.features.model_files import check_weights, file_sha256, local_file
from fruits_features.features.udf import (
    EmbedCounters,
    EmbedSpec,
    cached_model_fn,
    embed_column,
    embed_series,
)
from fruits_features.io.loading import FetchResult, PendingReads
from fruits_features.io.s3 import S3Settings
from fruits_features.progress import ProgressListener

FEATURE_DIM = RESNET50.feature_dim
SAMPLE = Path(__file__).parent / "data" / "fruits360-sample"
JPEGS = sorted(SAMPLE.glob("*/*.jpg"))[:7]
SPEC = EmbedSpec(weights="fake", image_size=32, batch_size=3, threads=1, max_image_pixels=10**7)


class BatchRecorder:
    """A model that answers each image with its mean pixel and remembers its batch sizes."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(batch))
        return np.repeat(batch.mean(axis=(1, 2, 3))[:, None], FEATURE_DIM, axis=1)


def test_images_are_fed_to_the_model_in_batches_of_the_configured_size() -> None:
    model = BatchRecorder()
    series = pd.Series([p.read_bytes() for p in JPEGS])

    out = embed_series(series, SPEC, model)

    assert model.batch_sizes == [3, 3, 1]
    assert out["error"].isna().all()
    assert all(len(v) == FEATURE_DIM and v.dtype == np.float32 for v in out["features"])


def test_a_bad_image_gives_a_null_and_a_reason_without_failing_the_batch() -> None:
    model = BatchRecorder()
    series = pd.Series([JPEGS[0].read_bytes(), b"not an image", None, b"", JPEGS[1].read_bytes()])

    out = embed_series(series, SPEC, model)

    assert [v is not None for v in out["features"]] == [True, False, False, False, True]
    assert out["error"].tolist() == [
        None,
        "not a recognised image format",
        None,
        "empty object (0 bytes)",
        None,
    ]
    assert model.batch_sizes == [2]


def test_features_stay_aligned_with_their_rows_across_batches() -> None:
    model = BatchRecorder()
    data = [JPEGS[i].read_bytes() for i in range(5)]
    series = pd.Series([data[0], b"bad", data[1], data[2], data[3], b"bad", data[4]])

    out = embed_series(series, SPEC, model)

    alone = [embed_series(pd.Series([d]), SPEC, BatchRecorder())["features"][0] for d in data]
    # Row by row: each image's own features on its own row, None exactly on the bad rows.
    expected = [alone[0], None, alone[1], alone[2], alone[3], None, alone[4]]
    assert len(out) == len(series)
    for row, (want, got) in enumerate(zip(expected, out["features"], strict=True)):
        if want is None:
            assert got is None, row
            assert out["error"][row], row
        else:
            assert got is not None, row
            np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"row {row}")
    # The images differ, so features on the wrong rows could not pass.
    assert not np.allclose(alone[0], alone[1])


def test_the_model_starts_on_the_first_batch_before_the_rest_has_arrived() -> None:
    arrived: list[int] = []
    started_after: list[int] = []

    def stream() -> Iterator[bytes]:  # reads landing one by one
        for path in JPEGS:
            arrived.append(1)
            yield path.read_bytes()

    def model(batch: np.ndarray) -> np.ndarray:
        started_after.append(len(arrived))
        return BatchRecorder()(batch)

    out = embed_series(stream(), SPEC, model)

    assert started_after == [3, 6, 7]  # batch size 3: each batch as soon as its images are in
    assert len(out) == len(JPEGS)


def test_the_next_batch_is_decoded_while_the_model_runs_the_one_before() -> None:
    """The model's first call (batch of 3) waits until the first image of the next batch has
    been taken from the stream: only a decoder running beside the model gets there."""
    next_batch_pulled = threading.Event()

    def stream() -> Iterator[bytes]:
        for index, path in enumerate(JPEGS[:6]):
            if index == SPEC.batch_size:
                next_batch_pulled.set()
            yield path.read_bytes()

    overlapped: list[bool] = []

    def model(batch: np.ndarray) -> np.ndarray:
        if not overlapped:
            overlapped.append(next_batch_pulled.wait(timeout=30))
        return BatchRecorder()(batch)

    seconds: dict[str, float] = {}
    out = embed_series(stream(), SPEC, model, seconds=seconds)

    assert overlapped == [True]
    assert out["features"].notna().all()
    assert set(seconds) == {"decode", "augment", "prepare_wait", "model"}
    assert seconds["model"] > 0
    assert seconds["decode"] > 0


class Counter:
    """Stands in for a Spark accumulator."""

    def __init__(self) -> None:
        self.value = 0

    def add(self, amount: float) -> None:
        self.value += amount


def test_counters_add_up_images_batches_and_rejects() -> None:
    counters = EmbedCounters(*(Counter() for _ in fields(EmbedCounters)))  # type: ignore[arg-type]
    series = pd.Series([JPEGS[0].read_bytes(), b"bad", None, *[p.read_bytes() for p in JPEGS[1:4]]])

    embed_series(series, SPEC, BatchRecorder(), counters)

    assert (counters.images.value, counters.batches.value, counters.rejected.value) == (4, 2, 2)
    assert counters.model_seconds.value > 0


def test_pending_reads_hand_over_bytes_in_order_with_the_reasons_aligned() -> None:
    results = [(b"a", None), (None, "could not read the object: NoSuchKey"), (b"c", None)]
    futures: list[Future[FetchResult]] = []
    for result in results:
        future: Future[FetchResult] = Future()
        future.set_result(result)
        futures.append(future)
    reads = PendingReads(futures)

    assert list(reads.contents()) == [b"a", None, b"c"]
    assert reads.errors == [None, "could not read the object: NoSuchKey", None]


def test_the_model_is_built_once_and_then_served_from_the_cache() -> None:
    builds: list[EmbedSpec] = []

    def loader(spec: EmbedSpec) -> BatchRecorder:
        builds.append(spec)
        return BatchRecorder()

    first = cached_model_fn(SPEC, loader)
    assert cached_model_fn(SPEC, loader) is first
    other = cached_model_fn(EmbedSpec("fake", 64, 3, 1, 10**7), loader)
    assert other is not first
    assert len(builds) == 2


def logging_loader(spec: EmbedSpec) -> BatchRecorder:
    """Records each build, with the building process's id, in the file named by ``spec.weights``."""
    with open(spec.weights, "a") as log:
        log.write(f"{os.getpid()}\n")
    return BatchRecorder()


def test_udf_reads_s3_and_builds_the_model_once_per_python_worker_across_tasks(
    spark, s3, bucket: str, tmp_path: Path
) -> None:
    """...and each task sends its running count to the driver's progress listener (the progress
    lines' source), every image once, rejects included."""
    from pyspark import cloudpickle
    from pyspark.sql import functions as F

    # Ship this module's loader by value: the Python workers cannot import the tests.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    build_log = tmp_path / "builds.log"
    spec = EmbedSpec(str(build_log), 32, 4, 1, 10**7)
    paths = []
    for p in sorted(SAMPLE.glob("*/*.jpg"))[:40]:
        s3.upload_file(str(p), bucket, f"images/{p.parent.name}/{p.name}")
        paths.append(f"s3://{bucket}/images/{p.parent.name}/{p.name}")
    paths.append(f"s3://{bucket}/images/Kiwi/deleted.jpg")
    frame = spark.createDataFrame([(p,) for p in paths], "path string").repartition(8)

    with ProgressListener("127.0.0.1") as listener:
        column = embed_column(F.col("path"), spec, loader=logging_loader, progress=listener.endpoint)
        out = {row["path"]: row["e"] for row in frame.select("path", column.alias("e")).collect()}
        reported = wait_for(lambda: listener.done() == 41)

    assert reported, listener.done()

    assert len(out) == 41
    assert all(out[p]["features"] is not None and out[p]["error"] is None for p in paths[:40])
    assert out[paths[40]]["features"] is None
    assert out[paths[40]]["error"].startswith("could not read the object: NoSuchKey")
    builders = build_log.read_text().split()
    assert len(builders) == len(set(builders))  # no worker built it twice
    assert 1 <= len(builders) <= 2  # local[2]: at most two Python workers for eight tasks


def test_s3_weights_are_downloaded_once_per_machine(s3, bucket: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FRUITS_WEIGHTS_CACHE", str(tmp_path / "cache"))
    s3.put_object(Bucket=bucket, Key="models/w.h5", Body=b"weights-bytes")
    uri = f"s3://{bucket}/models/w.h5"

    first = local_file(uri, S3Settings())
    s3.delete_object(Bucket=bucket, Key="models/w.h5")  # a second download would now fail
    second = local_file(uri, S3Settings())

    assert first == second
    assert Path(first).read_bytes() == b"weights-bytes"
    assert Path(first).parent.parent == tmp_path / "cache"
    assert not list(Path(first).parent.glob("*.partial"))


@pytest.mark.parametrize("where", ["s3", "local"])
def test_unavailable_weights_are_one_line_naming_the_setting(
    s3, bucket: str, tmp_path: Path, where: str
) -> None:
    weights = f"s3://{bucket}/models/missing.h5" if where == "s3" else str(tmp_path / "missing.h5")
    with pytest.raises(WeightsUnavailableError) as caught:
        check_weights(weights, S3Settings())
    message = str(caught.value)
    assert message.startswith(f"model.weights={weights}: ")
    assert "FRUITS_WEIGHTS" in message
    assert "\n" not in message


def test_a_file_is_hashed_once_until_it_changes(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "w.h5"
    path.write_bytes(b"a" * 10)
    reads: list[str] = []
    digest = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda f, name: reads.append(name) or digest(f, name))

    first = file_sha256(path)
    assert file_sha256(path) == first == hashlib.sha256(b"a" * 10).hexdigest()
    assert len(reads) == 1
    path.write_bytes(b"b" * 11)
    assert file_sha256(path) == hashlib.sha256(b"b" * 11).hexdigest()
    assert len(reads) == 2


def test_local_weights_file_passes_the_check(tmp_path: Path) -> None:
    path = tmp_path / "w.h5"
    path.write_bytes(b"x")
    check_weights(str(path), S3Settings())
    assert local_file(str(path), S3Settings()) == str(path)
