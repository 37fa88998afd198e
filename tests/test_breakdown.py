"""The benchmark's breakdown of a job's time and its S3 latency: pure functions, no Spark."""

from __future__ import annotations

from typing import Any

import pytest

from fruits_features.dev import local_s3
from fruits_features.dev.bench.breakdown import breakdown, breakdown_lines, cpu_budget, ratios
from fruits_features.dev.bench.ceilings import get_cpu

JOB: dict[str, Any] = {
    "n": 1000,
    "wall_seconds": 60.0,
    "partitions": 4,
    "task_slots": 2,
    "timings_seconds": {
        "spark_start": 5.0,
        "list": 0.5,
        "preflight": 0.5,
        "load_and_embed": 40.0,
        "embeddings": 1.5,
        "reduce": 2.0,
        "write": 1.0,
        "model_save": 1.0,
        "total": 50.0,
        "executor_udf": 76.0,  # 4 tasks on 2 slots: 38 s of each slot's 40
        "executor_model_load": 2.0,
        "executor_model": 64.0,
        "executor_prepare_wait": 4.0,
        "executor_decode": 6.0,
        "executor_read": 30.0,
        "executor_read_wait": 1.0,
    },
    "cpu_seconds": {"driver_jvm": 20.0, "worker": 70.0, "local_s3": 3.0},
}


def test_the_wall_time_is_split_into_spark_start_the_stages_and_the_rest() -> None:
    split = breakdown(JOB)["split"]
    assert split == {
        "spark_start": 5.0,
        "list": 0.5,
        "preflight": 0.5,
        "load_and_embed": 40.0,
        "reduce": 2.0,
        "write": 1.0,
        "other": 11.0,
    }
    assert sum(split.values()) == pytest.approx(JOB["wall_seconds"])
    assert breakdown(JOB)["beside"] == {"embeddings": 1.5, "model_save": 1.0}


def test_the_embed_stage_is_split_per_task_slot() -> None:
    embed = breakdown(JOB)["embed"]
    assert (embed["tasks"], embed["slots"]) == (4, 2)
    assert embed["model"] == 32.0
    assert embed["model_load"] == 1.0
    assert embed["prepare_wait"] == 2.0
    assert embed["udf_other"] == pytest.approx(38.0 - 32.0 - 1.0 - 2.0)
    assert embed["outside_udf"] == pytest.approx(40.0 - 38.0)
    assert embed["hidden"] == {"decode": 3.0, "read": 15.0, "read_wait": 0.5}
    lines = breakdown_lines("resnet50 onnxruntime", JOB)
    assert lines[0].startswith("resnet50 onnxruntime: wall 60.0 s = spark_start 5.0 + list 0.5")
    assert lines[0].endswith("(beside them: embeddings 1.5, model_save 1.0)")
    assert "local_s3 3.0" in lines[-1]


def test_the_targets_are_the_whole_job_against_onnxruntime_and_the_stage_against_its_engine() -> None:
    targets = ratios(JOB, own_ceiling=30.0, onnxruntime_ceiling=25.0)
    assert targets["job_over_onnxruntime_bare"] == pytest.approx(1000 / 60 / 25)
    assert targets["embed_over_own_bare"] == pytest.approx(1000 / 40 / 30)


def test_the_cpu_each_image_needs_beside_the_model_bounds_the_embed_stage() -> None:
    # 50 images/s on 2 cores: 40 CPU ms per image; decoding 400/s on one core: 2.5 ms.
    ceiling = {
        "model_images_per_s": 50.0,
        "decode_images_per_s": 400.0,
        "get_cpu_ms": 1.5,
        "s3_server_cpu_ms_per_get": 4.0,
    }
    budget = cpu_budget(ceiling, cores=2)
    assert (budget["model"], budget["decode"], budget["get"], budget["s3_server"]) == (40.0, 2.5, 1.5, 4.0)
    assert budget["embed_bound"] == pytest.approx(40 / 48)
    assert budget["embed_bound_on_aws"] == pytest.approx(40 / 44)
    # Without the GETs measured (no --objects), decoding alone bounds it.
    bare = cpu_budget({"model_images_per_s": 50.0, "decode_images_per_s": 400.0}, cores=2)
    assert bare["embed_bound"] == bare["embed_bound_on_aws"] == pytest.approx(40 / 42.5)


def test_the_get_cpu_is_measured_over_the_objects_the_job_would_read(
    s3: Any, s3_wire: Any, bucket: str
) -> None:
    for i in range(12):
        s3.put_object(Bucket=bucket, Key=f"images/Apple/{i}.jpg", Body=b"x" * 100)
    s3.put_object(Bucket=bucket, Key="elsewhere/0.jpg", Body=b"x")
    with s3_wire.recording(bucket) as requests:
        gets, cpu_ms = get_cpu(f"s3://{bucket}/images/", limit=10)
    assert gets == 10
    assert cpu_ms > 0
    read = [r.key for r in requests if r.method == "GET" and r.key]
    assert len(read) == 11  # one to warm the client, then the ten timed
    assert set(read) <= {f"images/Apple/{i}.jpg" for i in range(12)}
    assert get_cpu(f"s3://{bucket}/images/", limit=100)[0] == 12


def test_object_gets_wait_and_nothing_else_does(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(local_s3.time, "sleep", slept.append)
    app = local_s3.object_get_latency(20, 50, seed=1)(lambda environ, start_response: [b"ok"])

    def call(method: str, path: str) -> None:
        assert app({"REQUEST_METHOD": method, "PATH_INFO": path}, None) == [b"ok"]

    call("GET", "/bucket/images/Apple/1.jpg")
    call("GET", "/bucket/images/Apple/2.jpg")
    assert len(slept) == 2
    assert all(0.020 <= s <= 0.050 for s in slept)
    call("GET", "/bucket")  # a listing
    call("GET", "/bucket/")
    call("PUT", "/bucket/out/part-0.csv")
    call("HEAD", "/bucket/images/Apple/1.jpg")
    assert len(slept) == 2
    with pytest.raises(ValueError, match="0 <= low <= high"):
        local_s3.object_get_latency(50, 20)
