"""Backbone features: the model loader, the pure featurizer, and the Spark pandas UDF around them.

Operating notes (what a user of this UDF must know, after Spark's own ``predict_batch_udf``):

- The model is built lazily inside the Python worker, once per worker process and
  :class:`EmbedSpec`, and cached in this module; keep ``spark.python.worker.reuse=true`` (Spark's
  default) so the cache lives across tasks. It is never pickled from the driver.
- The engine (:mod:`fruits_features.features.engines`) is TensorFlow or ONNX Runtime; model files given as
  ``s3://`` are downloaded once per machine (:mod:`fruits_features.features.model_files`).
- The engine's intra-op threads follow ``model.threads``, or the task's ``spark.task.cpus`` when
  it is 0, and inter-op threads are 1: with several Python workers per machine, more would
  oversubscribe the cores.
- ``spark.sql.execution.arrow.maxRecordsPerBatch`` bounds how many encoded images a UDF call
  receives; inside it, images are decoded and fed to the model ``model.batch_size`` at a time.
- Fault injection, for tests only: with ``FRUITS_INJECT_WORKER_KILL`` set to a comma-separated list
  of partition ids in the executors' environment, the Python worker of each of those partitions
  kills itself (SIGKILL, as the kernel's OOM killer would) right after its first Arrow batch on
  the task's first attempt. The retry is then certain, whatever the machine's speed.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pyspark.accumulators import AccumulatorParam

from fruits_features.features.augment import AugmentSpec
from fruits_features.features.backbones import RESNET50, Backbone
from fruits_features.features.batches import Augmenting, one_ahead, place_outputs, prepared_batches
from fruits_features.features.engines import (
    EmbedSpec,
    ModelFn,
    build_model_fn,
    machine_cpus,
    resolved_engine,
)
from fruits_features.progress import ProgressEndpoint, TaskProgress

if TYPE_CHECKING:
    from pyspark.accumulators import Accumulator
    from pyspark.sql import Column

__all__ = ["EmbedCounters", "EmbedSpec", "embed_column", "embed_series", "featurize"]


def featurize(model_fn: ModelFn, pixels: np.ndarray, network: Backbone = RESNET50) -> np.ndarray:
    """The backbone's features of a batch of RGB images.

    Args:
        model_fn: the (compiled) model call, float32 ``(n, s, s, 3)`` -> ``(n, features)``.
        pixels: uint8 ``(n, s, s, 3)`` RGB arrays, as :func:`decode_image` returns them.
        network: the backbone ``model_fn`` runs, for its preprocessing.

    Returns:
        float32 ``(n, network.feature_dim)``.
    """
    return np.asarray(model_fn(network.preprocess(pixels)), dtype=np.float32)


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
        # threads 0: the cores Spark gives this task (spark.task.cpus), so that the Python workers
        # of one machine do not oversubscribe its cores.
        built = spec if spec.threads else dataclasses.replace(spec, threads=task_cpus())
        model_fn = _MODEL_CACHE[key] = loader(built)
    return model_fn


# Fault injection (tests only): the partitions whose first attempt kills its own Python worker.
INJECT_WORKER_KILL = "FRUITS_INJECT_WORKER_KILL"


def kill_injected(environ: dict[str, str] | None = None) -> bool:
    """Whether ``FRUITS_INJECT_WORKER_KILL`` names the current task's partition and this is its
    first attempt; ``False`` outside a task or where the variable is unset."""
    from pyspark import TaskContext

    value = (os.environ if environ is None else environ).get(INJECT_WORKER_KILL, "")
    context = TaskContext.get()
    if not value.strip() or context is None or context.attemptNumber() != 0:
        return False
    return str(context.partitionId()) in {part.strip() for part in value.split(",")}


def task_cpus() -> int:
    """The cores Spark gives the current task (all of this machine's outside a task)."""
    from pyspark import TaskContext

    context = TaskContext.get()
    return max(1, context.cpus()) if context is not None else machine_cpus()


# The phases of a task the executors time (seconds, summed over tasks): see EmbedCounters.phases.
PHASES = ("udf", "model_load", "read", "read_wait", "decode", "augment", "prepare_wait", "model")


class TotalsParam(AccumulatorParam[dict[str, Any]]):
    """Adds up ``{name: amount}`` dictionaries: tasks per engine, seconds per phase."""

    def zero(self, value: dict[str, Any]) -> dict[str, Any]:
        return {}

    def addInPlace(self, value1: dict[str, Any], value2: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        for name, amount in value2.items():
            value1[name] = value1.get(name, 0) + amount
        return value1


@dataclass
class EmbedCounters:
    """Driver-side accumulators the UDF adds to: how much work the executors did."""

    images: Accumulator[int]
    # Augmented copies that went through the model (augment.copies per featurized image).
    augmented: Accumulator[int]
    batches: Accumulator[int]
    decode_seconds: Accumulator[float]
    model_seconds: Accumulator[float]
    # Images without features (not read, not decoded): when 0, no one needs to look for them.
    rejected: Accumulator[int]
    # Tasks whose Python worker had TensorFlow loaded when they finished: 0 with the ONNX engine.
    tasks_with_tensorflow: Accumulator[int]
    # Tasks per engine, precision and CPU capabilities the executors ran (ResolvedEngine.describe).
    engines: Accumulator[dict[str, int]]
    # Seconds per phase of the tasks (PHASES), summed: "udf" is each task's wall time inside the
    # UDF, "model_load" building the model (0 where the worker had it), "read" the S3 GETs
    # (overlapped, summed over the fetch threads), "read_wait" the prepare thread blocked on
    # them, "decode" decoding, resizing and preprocessing, "augment" making the augmented copies
    # (in the same thread, overlapped with the model), "prepare_wait" the model waiting for
    # a prepared batch (what the overlap did not hide), "model" inference.
    phases: Accumulator[dict[str, float]]

    @classmethod
    def create(cls, spark_context: Any) -> EmbedCounters:
        return cls(
            images=spark_context.accumulator(0),
            augmented=spark_context.accumulator(0),
            batches=spark_context.accumulator(0),
            decode_seconds=spark_context.accumulator(0.0),
            model_seconds=spark_context.accumulator(0.0),
            rejected=spark_context.accumulator(0),
            tasks_with_tensorflow=spark_context.accumulator(0),
            engines=spark_context.accumulator({}, TotalsParam()),
            phases=spark_context.accumulator({}, TotalsParam()),
        )


# What the UDF returns per image.
EMBEDDED_TYPE = "features array<float>, error string, augmented array<array<float>>"


def embed_series(
    images: Iterable[bytes | None],
    spec: EmbedSpec,
    model_fn: ModelFn,
    counters: EmbedCounters | None = None,
    on_done: Callable[[int], None] | None = None,
    *,
    seconds: dict[str, float] | None = None,
    augment: AugmentSpec | None = None,
    paths: list[str] | None = None,
) -> pd.DataFrame:
    """Embed one batch of encoded images; the plain-Python core of the UDF.

    A thread decodes, resizes and preprocesses model batch *k+1* (waiting for its reads where
    ``images`` is a stream of them) while the model runs batch *k*: Pillow and numpy release the
    GIL, so the two overlap. Memory stays bounded by two model batches of decoded images whatever
    the Arrow batch size, and the model starts as soon as its first batch has arrived. An image's
    augmented copies follow it into the same batch, which can so exceed ``model.batch_size`` by
    ``augment.copies`` inputs at most.

    Args:
        images: image bytes (``None`` where the bytes could not be fetched), in row order.
        spec: image size, model batch size and pixel limit.
        model_fn: the model call, see :func:`featurize`.
        counters: accumulators to add image, batch, rejection and timing counts to.
        on_done: called with how many more images are finished (featurized or rejected): after
            every model batch, and once at the end for the rejected ones (progress reporting).
        seconds: where to add the time spent preparing (``decode``: decode, resize and
            preprocess; ``augment``: the copies), waiting for a prepared batch (``prepare_wait``:
            what the overlap did not hide) and in the model (``model``).
        augment: with ``copies`` > 0, each decoded image's augmented copies
            (:func:`~fruits_features.features.augment.augment_image`) run through the model too.
        paths: each image's path, in row order: the copies' random draws depend on it (needed
            with ``augment``).

    Returns:
        A frame with a row per image: ``features`` (the backbone's floats, or ``None``), ``error``
        (``None``, or why the image could not be featurized) and ``augmented`` (the copies'
        features, copy 1 first, or ``None``). A bad image never raises.
    """
    timed = {"decode": 0.0, "augment": 0.0, "prepare_wait": 0.0, "model": 0.0}
    features: list[np.ndarray | None] = []
    errors: list[str | None] = []
    augmenting = None
    if augment is not None and augment.copies:
        if paths is None:
            raise ValueError("augmented copies need the images' paths")
        augmenting = Augmenting(augment, paths)
    copies: dict[int, list[np.ndarray]] = {}
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare") as pool:
        stream = prepared_batches(images, spec, features, errors, timed, augmenting=augmenting)
        batches = one_ahead(stream, pool)
        while True:
            started = time.perf_counter()
            prepared = next(batches, None)
            timed["prepare_wait"] += time.perf_counter() - started
            if prepared is None:
                break
            started = time.perf_counter()
            outputs = np.asarray(model_fn(prepared.inputs), dtype=np.float32)
            timed["model"] += time.perf_counter() - started
            originals = place_outputs(prepared, outputs, features, copies)
            if counters is not None:
                counters.images.add(originals)
                counters.augmented.add(len(prepared.rows) - originals)
                counters.batches.add(1)
            if on_done is not None:
                on_done(originals)
    rejected = sum(vector is None for vector in features)
    if counters is not None:
        counters.decode_seconds.add(timed["decode"])
        counters.model_seconds.add(timed["model"])
        counters.rejected.add(rejected)
    if seconds is not None:
        for phase, value in timed.items():
            seconds[phase] = seconds.get(phase, 0.0) + value
    if on_done is not None and rejected:
        on_done(rejected)
    augmented = [copies.get(index) for index in range(len(features))]
    return pd.DataFrame({"features": features, "error": errors, "augmented": augmented})


def embed_column(
    paths: Column,
    spec: EmbedSpec,
    counters: EmbedCounters | None = None,
    loader: ModelLoader = build_model_fn,
    fetch_threads: int = 8,
    *,
    progress: ProgressEndpoint | None = None,
    augment: AugmentSpec | None = None,
) -> Column:
    """A struct column ``<features: array<float>, error: string, augmented: array<array<float>>>``
    computed from ``paths`` (``augmented``: the copies' features with ``augment``, else null).

    One Iterator pandas UDF reads the images from S3 (``fetch_threads`` at a time, one Arrow
    batch ahead), decodes them and runs the model: one Python worker per task holds the model,
    and the image bytes never cross into the JVM. The UDF is marked non-deterministic so that
    Spark's optimizer never duplicates it into two projections: the model must run once per image.

    Args:
        paths: the ``s3://bucket/key`` column of the images.
        spec: the model settings.
        counters: accumulators the executors add their counts and timings to.
        loader: builds the model on the executor (tests pass fakes; the job uses the backbone's engine).
        fetch_threads: objects each task reads at once.
        progress: where to send each task's count of finished images (see
            :mod:`fruits_features.progress`); ``None`` sends nothing.
        augment: the augmented copies to embed beside each image (``None``: none).
    """
    from pyspark.sql.pandas.functions import pandas_udf

    from fruits_features.io.loading import prefetched

    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        entered = time.perf_counter()
        task = TaskProgress.for_this_task(progress)
        kill = kill_injected()
        seconds = dict.fromkeys(PHASES, 0.0)
        for reads in prefetched(batches, spec.s3, fetch_threads):
            # Built on first use, once the first reads are in flight: they land while it loads.
            started = time.perf_counter()
            model_fn = cached_model_fn(spec, loader)
            seconds["model_load"] += time.perf_counter() - started
            frame = embed_series(
                reads.contents(),
                spec,
                model_fn,
                counters,
                on_done=task.add,
                seconds=seconds,
                augment=augment,
                paths=reads.paths,
            )
            frame["error"] = [
                fetched or decoded for fetched, decoded in zip(reads.errors, frame["error"], strict=True)
            ]
            seconds["read"] += sum(reads.read_seconds)
            seconds["read_wait"] += reads.wait_seconds
            yield frame
            if kill:  # a test's injected fault: this worker dies mid-task, the task is retried
                os.kill(os.getpid(), signal.SIGKILL)
        task.close()
        seconds["udf"] = time.perf_counter() - entered
        if counters is not None:
            counters.tasks_with_tensorflow.add(int("tensorflow" in sys.modules))
            counters.engines.add({resolved_engine(spec).describe(): 1})
            counters.phases.add(seconds)

    udf = pandas_udf(embed, EMBEDDED_TYPE)  # type: ignore[call-overload]
    return udf.asNondeterministic()(paths)  # type: ignore[no-any-return]
