"""ResNet50 features: the model loader, the pure featurizer, and the Spark pandas UDF around them.

Operating notes (what a user of this UDF must know, after Spark's own ``predict_batch_udf``):

- The model is built lazily inside the Python worker, once per worker process and
  :class:`EmbedSpec`, and cached in this module; keep ``spark.python.worker.reuse=true`` (Spark's
  default) so the cache lives across tasks. It is never pickled from the driver.
- Weights given as ``s3://`` are downloaded once per machine into a local cache folder
  (``FRUITS_WEIGHTS_CACHE``, default ``<tmp>/fruits-features-weights``) under a file lock.
- TensorFlow's intra-op threads follow ``model.threads``, or the task's ``spark.task.cpus`` when
  it is 0, and inter-op threads are 1: with several Python workers per machine, more would
  oversubscribe the cores.
- ``spark.sql.execution.arrow.maxRecordsPerBatch`` bounds how many encoded images a UDF call
  receives; inside it, images are decoded and fed to the model ``model.batch_size`` at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from botocore.exceptions import BotoCoreError, ClientError

from fruits_features.decoding import ImageDecodeError, decode_image
from fruits_features.errors import WeightsUnavailableError
from fruits_features.storage import S3Settings, S3Uri, describe_error, s3_client

if TYPE_CHECKING:
    from pyspark.accumulators import Accumulator
    from pyspark.sql import Column

log = logging.getLogger(__name__)

FEATURE_DIM = 2048
IMAGENET = "imagenet"

ModelFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EmbedSpec:
    """Everything an executor needs to build the model and run it; hashable, no secrets."""

    weights: str
    image_size: int
    batch_size: int
    threads: int
    max_image_pixels: int
    s3: S3Settings = field(default_factory=S3Settings)


def featurize(model_fn: ModelFn, pixels: np.ndarray) -> np.ndarray:
    """ResNet50 features of a batch of RGB images.

    Args:
        model_fn: the (compiled) model call, float32 ``(n, s, s, 3)`` -> ``(n, 2048)``.
        pixels: uint8 ``(n, s, s, 3)`` RGB arrays, as :func:`decode_image` returns them.

    Returns:
        float32 ``(n, 2048)``.
    """
    from keras.applications.resnet50 import preprocess_input

    batch = preprocess_input(pixels.astype(np.float32))
    return np.asarray(model_fn(batch), dtype=np.float32)


def weights_cache_dir() -> Path:
    """Where ``s3://`` weights are cached on each machine."""
    default = Path(tempfile.gettempdir()) / "fruits-features-weights"
    return Path(os.environ.get("FRUITS_WEIGHTS_CACHE", str(default)))


def local_weights(weights: str, s3: S3Settings) -> str:
    """A local path for ``model.weights`` (``imagenet`` is returned unchanged).

    ``s3://`` weights are downloaded once per machine: concurrent workers wait on a file lock
    and then find the finished file, written under a temporary name and renamed into place.
    """
    if weights == IMAGENET or not weights.startswith(("s3://", "s3a://")):
        return weights
    uri = S3Uri.parse(weights)
    folder = weights_cache_dir() / hashlib.sha256(weights.encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / uri.key.rsplit("/", 1)[-1]
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
            log.info("downloading weights %s to %s", weights, target)
            s3_client(s3).download_file(uri.bucket, uri.key, str(partial))
            os.replace(partial, target)
    return str(target)


def build_model_fn(spec: EmbedSpec) -> ModelFn:
    """Build ResNet50 (no top, average pooling) and wrap its forward pass in ``tf.function``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    threads = spec.threads or _task_cpus()
    with contextlib.suppress(RuntimeError):  # already set by an earlier model in this process
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    started = time.perf_counter()
    model = keras.applications.ResNet50(
        include_top=False,
        weights=local_weights(spec.weights, spec.s3),
        input_shape=(spec.image_size, spec.image_size, 3),
        pooling="avg",
    )
    # A fixed signature with an open batch dimension: one trace serves every batch size, so
    # the last, shorter batch of a partition does not retrace.
    signature = [tf.TensorSpec([None, spec.image_size, spec.image_size, 3], tf.float32)]
    compiled = tf.function(lambda x: model(x, training=False), input_signature=signature)
    log.info(
        "built ResNet50 (%s, %dpx, %d threads) in %.1fs",
        spec.weights,
        spec.image_size,
        threads,
        time.perf_counter() - started,
    )

    def call(batch: np.ndarray) -> np.ndarray:
        return compiled(tf.convert_to_tensor(batch)).numpy()  # type: ignore[no-any-return]

    return call


def _task_cpus() -> int:
    from pyspark import TaskContext

    context = TaskContext.get()
    return max(1, context.cpus()) if context is not None else max(1, os.cpu_count() or 1)


ModelLoader = Callable[[EmbedSpec], ModelFn]
_MODEL_CACHE: dict[tuple[EmbedSpec, str], ModelFn] = {}


def cached_model_fn(spec: EmbedSpec, loader: ModelLoader = build_model_fn) -> ModelFn:
    """The model for ``spec``, built by ``loader`` on first use in this process and reused after.

    The cache is keyed by the spec and the loader's qualified name, not the loader object:
    each task unpickles its own copy of the UDF's closure, so object identity would miss.
    """
    key = (spec, f"{loader.__module__}.{loader.__qualname__}")
    model_fn = _MODEL_CACHE.get(key)
    if model_fn is None:
        model_fn = _MODEL_CACHE[key] = loader(spec)
    return model_fn


@dataclass
class EmbedCounters:
    """Driver-side accumulators the UDF adds to: how much work the executors did."""

    images: Accumulator[int]
    batches: Accumulator[int]
    decode_seconds: Accumulator[float]
    model_seconds: Accumulator[float]

    @classmethod
    def create(cls, spark_context: Any) -> EmbedCounters:
        return cls(
            images=spark_context.accumulator(0),
            batches=spark_context.accumulator(0),
            decode_seconds=spark_context.accumulator(0.0),
            model_seconds=spark_context.accumulator(0.0),
        )


def embed_series(
    series: pd.Series,
    spec: EmbedSpec,
    model_fn: ModelFn,
    counters: EmbedCounters | None = None,
) -> pd.DataFrame:
    """Embed one batch of encoded images; the plain-Python core of the UDF.

    Decoding and inference alternate one model batch at a time, so memory stays bounded by
    ``model.batch_size`` decoded images whatever the Arrow batch size.

    Args:
        series: image bytes (``None`` where the bytes could not be fetched).
        spec: image size, model batch size and pixel limit.
        model_fn: the model call, see :func:`featurize`.
        counters: accumulators to add image, batch and timing counts to.

    Returns:
        A frame aligned with ``series``: ``features`` (2048 floats, or ``None``) and ``error``
        (``None``, or why the image could not be featurized). A bad image never raises.
    """
    features: list[np.ndarray | None] = [None] * len(series)
    errors: list[str | None] = [None] * len(series)
    rows: list[int] = []
    pixels: list[np.ndarray] = []
    decode_seconds = model_seconds = 0.0
    for row, data in enumerate(series):
        if data is not None:  # None: not fetched, and the load stage recorded why
            started = time.perf_counter()
            try:
                pixels.append(decode_image(bytes(data), spec.image_size, spec.max_image_pixels))
                rows.append(row)
            except ImageDecodeError as exc:
                errors[row] = str(exc)
            decode_seconds += time.perf_counter() - started
        last = row == len(series) - 1
        if len(pixels) == spec.batch_size or (last and pixels):
            started = time.perf_counter()
            for index, vector in zip(rows, featurize(model_fn, np.stack(pixels)), strict=True):
                features[index] = vector
            model_seconds += time.perf_counter() - started
            if counters is not None:
                counters.images.add(len(rows))
                counters.batches.add(1)
            rows, pixels = [], []
    if counters is not None:
        counters.decode_seconds.add(decode_seconds)
        counters.model_seconds.add(model_seconds)
    return pd.DataFrame({"features": features, "error": errors})


def embed_column(
    paths: Column,
    spec: EmbedSpec,
    counters: EmbedCounters | None = None,
    loader: ModelLoader = build_model_fn,
    fetch_threads: int = 8,
) -> Column:
    """A struct column ``<features: array<float>, error: string>`` computed from ``paths``.

    One Iterator pandas UDF reads the images from S3 (``fetch_threads`` at a time, one Arrow
    batch ahead), decodes them and runs the model: one Python worker per task holds the model,
    and the image bytes never cross into the JVM. The UDF is marked non-deterministic so that
    Spark's optimizer never duplicates it into two projections: ResNet50 must run once per image.

    Args:
        paths: the ``s3://bucket/key`` column of the images.
        spec: the model settings.
        counters: accumulators the executors add their counts and timings to.
        loader: builds the model on the executor (tests pass fakes; the job uses ResNet50).
        fetch_threads: objects each task reads at once.
    """
    from pyspark.sql.pandas.functions import pandas_udf

    from fruits_features.loading import prefetched

    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        model_fn = cached_model_fn(spec, loader)
        for contents, fetch_errors in prefetched(batches, spec.s3, fetch_threads):
            frame = embed_series(pd.Series(contents, dtype=object), spec, model_fn, counters)
            frame["error"] = [
                fetched or decoded for fetched, decoded in zip(fetch_errors, frame["error"], strict=True)
            ]
            yield frame

    udf = pandas_udf(embed, "features array<float>, error string")  # type: ignore[call-overload]
    return udf.asNondeterministic()(paths)  # type: ignore[no-any-return]


def check_weights(weights: str, s3: S3Settings) -> None:
    """Make sure ``model.weights`` can be had, on the driver, before any heavy work starts.

    ``imagenet`` is fetched into Keras' cache (so local executors find it there); a local path
    must be a file; an ``s3://`` object must exist and be readable.

    Raises:
        WeightsUnavailableError: one line naming ``model.weights`` and ``FRUITS_WEIGHTS``.
    """
    hint = "set model.weights (FRUITS_WEIGHTS for make run/test) to a local .h5 path or an s3:// URI"
    if weights == IMAGENET:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras

        try:
            keras.applications.ResNet50(include_top=False, weights=IMAGENET, pooling="avg")
        # Keras reports a failed download as a bare Exception (or URLError/OSError beneath it).
        except Exception as exc:
            raise WeightsUnavailableError(
                f"model.weights=imagenet: the Keras download failed ({_one_line(exc)}); {hint}"
            ) from exc
        return
    if weights.startswith(("s3://", "s3a://")):
        uri = S3Uri.parse(weights)
        try:
            s3_client(s3).head_object(Bucket=uri.bucket, Key=uri.key)
        except (ClientError, BotoCoreError) as exc:
            raise WeightsUnavailableError(f"model.weights={weights}: {describe_error(exc)}; {hint}") from exc
        return
    if not Path(weights).is_file():
        raise WeightsUnavailableError(f"model.weights={weights}: no such file; {hint}")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__
