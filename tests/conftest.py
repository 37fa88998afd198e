"""Shared fixtures: the local S3 endpoint, one SparkSession, a Spark standalone cluster, the sample
images and the weights."""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType

import pytest

from fruits_features.dev.local_s3 import local_s3
from fruits_features.dev.spark_submit import job_command, job_env
from fruits_features.io.folders import upload_folder
from fruits_features.io.s3 import s3_client
from fruits_features.io.uri import S3Uri
from s3_wire import WireLog

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = ROOT / "tests" / "data" / "fruits360-sample"


# The fixtures that start a JVM, an S3 server or TensorFlow, or build the package: a test that
# uses any of them, directly or through another fixture, is an integration test. `make test-unit`
# runs the others (FRUITS_TEST_TIER=unit), and there these fixtures fail the test instead of starting.
HEAVY_FIXTURES = frozenset(
    {
        "s3_endpoint",
        "s3_wire",
        "s3",
        "bucket",
        "spark",
        "standalone_cluster",
        "weights",
        "onnx_file",
        "onnx_file_64",
        "package",
    }
)
# Every request that reaches the session's S3 server passes it; it records only when asked.
WIRE = WireLog()
UNIT_TIER = os.environ.get("FRUITS_TEST_TIER") == "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def heavy(what: str) -> None:
    """Fail a test of the unit tier that reaches ``what`` (a JVM, an S3 server, a browser, ...)."""
    if UNIT_TIER:
        pytest.fail(
            f"the unit tier starts no {what}: this test belongs to the integration tier", pytrace=False
        )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server on 127.0.0.1, reached through AWS_ENDPOINT_URL_S3."""
    heavy("S3 server")
    with local_s3(wrap=WIRE.wrap) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def s3_wire(s3_endpoint: str) -> WireLog:
    """The requests that reach the S3 server: ``with s3_wire.recording(bucket, ...) as requests``."""
    return WIRE


@pytest.fixture(scope="session")
def s3(s3_endpoint: str):
    """A boto3 client for the local endpoint."""
    return s3_client()


@pytest.fixture
def bucket(s3) -> str:
    """A new, empty bucket for one test."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def spark(s3_endpoint: str):
    """One local SparkSession for the whole run; started after the S3 endpoint so that its
    Python workers inherit AWS_ENDPOINT_URL_S3."""
    from pyspark.sql import SparkSession

    heavy("JVM")

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("fruits-features-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "64")
        .config("spark.python.worker.reuse", "true")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def weights() -> str:
    """The model weights the integration tests use: FRUITS_WEIGHTS, else Keras' download."""
    heavy("model weights")
    value = os.environ.get("FRUITS_WEIGHTS", "imagenet")
    return str(Path(value).resolve()) if Path(value).exists() else value


# Where the tests keep their ONNX exports across runs: the same files `make run` and `make bench`
# use (build/models/, FRUITS_ONNX's default), each checked against the weights' SHA-256 and the
# image size its metadata records before it is reused.
EXPORTS = ROOT / "build" / "models"


def export_for_tests(
    weights: str, image_size: int, folder: Path = EXPORTS, backbone: str = "resnet50"
) -> str:
    """The weights exported to ONNX at ``image_size`` by the project's exporter (verified against
    the source framework), or the file an earlier run exported from the same weights at the same
    size."""
    from fruits_features.errors import FruitsFeaturesError
    from fruits_features.features.backbones import BACKBONES
    from fruits_features.features.onnx_export import check_onnx, export_onnx
    from fruits_features.features.samples import load_labelled_samples
    from fruits_features.io.s3 import S3Settings

    network = BACKBONES[backbone]
    target = folder / f"{network.export_stem}.{image_size}px.onnx"
    folder.mkdir(parents=True, exist_ok=True)
    # One export at a time (the suite's workers, `make run`): the others wait, then reuse it.
    with open(folder / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            try:
                check_onnx(str(target), weights, image_size, S3Settings(), network)
                return str(target)
            except FruitsFeaturesError:  # other weights, another size, or no metadata: export anew
                pass
        samples = load_labelled_samples(str(SAMPLE_DIR), 16, image_size, S3Settings())
        export_onnx(
            weights,
            image_size,
            str(target),
            samples.pixels,
            S3Settings(),
            network=network,
            labels=samples.labels,
        )
    return str(target)


@pytest.fixture(scope="session")
def onnx_file(weights: str) -> str:
    """The weights exported to ONNX at 224 px: the default engine's model (build/models/, cached)."""
    return export_for_tests(weights, 224)


@pytest.fixture(scope="session")
def onnx_file_64(weights: str) -> str:
    """The same at 64 px, for the tests that run many images quickly."""
    return export_for_tests(weights, 64)


@pytest.fixture(scope="session")
def lite2_onnx_128() -> str:
    """EfficientNet-Lite2 (the package's weights) exported at 128 px, verified against PyTorch."""
    heavy("model weights")
    return export_for_tests("imagenet", 128, backbone="efficientnet_lite2")


@pytest.fixture(scope="session")
def package(tmp_path_factory: pytest.TempPathFactory):
    """dist/ for EMR and EC2 (wheel, --py-files zip, entry point, configs, bootstrap, pins), built
    once for every test that reads it; a test that edits it edits a copy."""
    from deploy_support import build_dist

    heavy("package build")
    return build_dist(tmp_path_factory.mktemp("build") / "dist")


def sample_classes(count: int) -> list[str]:
    """The first ``count`` class folders of the bundled sample, sorted."""
    return sorted(p.name for p in SAMPLE_DIR.iterdir() if p.is_dir())[:count]


def upload_sample(client, bucket: str, prefix: str, classes: list[str]) -> int:
    """Upload the sample images of ``classes`` under ``s3://bucket/prefix/<Class>/``."""
    uploaded = 0
    for name in classes:
        uploaded += upload_folder(client, SAMPLE_DIR, S3Uri(bucket, prefix), pattern=f"{name}/*")
    return uploaded


def spark_submit_command(
    *args: str, master: str = "local[2]", conf: Mapping[str, str] | None = None, job: str = "extract_features"
) -> list[str]:
    """``spark-submit`` of the job (or ``score``), as users and EMR run it, with ``conf/local.yaml``."""
    return job_command(job, *args, master=master, conf=conf)


def spark_submit(
    *args: str,
    env: dict[str, str] | None = None,
    master: str = "local[2]",
    conf: Mapping[str, str] | None = None,
    job: str = "extract_features",
) -> subprocess.CompletedProcess[str]:
    """Run the job to completion; its log (spark-submit merges the driver's stderr) is in ``stdout``."""
    heavy("spark-submit")
    return subprocess.run(
        spark_submit_command(*args, master=master, conf=conf, job=job),
        env=job_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        check=False,
    )


def load_job(name: str) -> ModuleType:
    """``jobs/<name>.py`` as a module, its ``main(argv)`` callable in process."""
    spec = importlib.util.spec_from_file_location(f"job_{name}", ROOT / "jobs" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_job_in_process(
    name: str,
    *args: str,
    spark,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> tuple[int, list[str]]:
    """``jobs/<name>.py``'s ``main`` with ``--config conf/local.yaml`` and ``args``, on the shared
    session (which it must not stop); returns the exit code and the messages it logged at INFO and
    up. The exit-code cases need no spark-submit of their own: one contract run is in test_job.py."""
    module = load_job(name)
    monkeypatch.setattr(module, "build_session", lambda *_: spark)
    monkeypatch.setattr(spark, "stop", lambda: None)
    caplog.set_level(logging.INFO)
    # The driver's boto3 clients are cached per settings, not per endpoint: a test that points
    # AWS_ENDPOINT_URL_S3 elsewhere gets new ones, and leaves none behind.
    s3_client.cache_clear()
    try:
        code = module.main(["--config", str(ROOT / "conf" / "local.yaml"), *args])
    finally:
        s3_client.cache_clear()
    return code, [r.getMessage() for r in caplog.records if r.name == name]


# -- a Spark standalone cluster on 127.0.0.1 -------------------------------------------------------


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Spark standalone master and two workers on 127.0.0.1, each its own JVM with 1 core (and 2g:
    one executor of Spark's default 1g, and room); yields the master's ``spark://`` URL once both
    workers are registered, and stops them all afterwards.

    The daemons' logs and the workers' work folders (each executor's stdout and stderr) are under
    the fixture's temporary folder; the failure message carries the logs.
    """
    from fruits_features.dev.standalone_cluster import ClusterStartError
    from fruits_features.dev.standalone_cluster import standalone_cluster as start_cluster

    heavy("Spark standalone cluster")
    try:
        with start_cluster(
            workers=2, cores=1, memory="2g", folder=tmp_path_factory.mktemp("standalone")
        ) as cluster:
            yield cluster.master
    except ClusterStartError as exc:
        pytest.fail(str(exc), pytrace=False)


def read_rejects(run_folder: Path):
    """A run's ``rejected/part-*.csv`` (a local copy) as one pandas frame, ``path, reason``."""
    import pandas as pd

    parts = sorted((run_folder / "rejected").glob("part-*.csv"))
    assert parts, f"no rejected/ parts under {run_folder}"
    return pd.concat([pd.read_csv(p) for p in parts], ignore_index=True)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Whether ``condition()`` turns true within ``timeout`` seconds (polled every 20 ms): for what
    arrives asynchronously (a UDP datagram), never for how fast the machine computes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False
