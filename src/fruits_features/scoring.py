"""Scoring new images with a saved model: list, embed with the model's own settings, predict, write.

Output under ``<output>/<run id>/``::

    predictions/part-00000.csv ...  path,label,predicted,probability (label: the image's folder, or empty)
    rejected.csv, manifest.json, _SUCCESS   as for the feature job

The images are embedded exactly as the training images were: the image size comes from the
model's ``model.json``, and ``model.weights`` must be the same file (its SHA-256 is checked), so a
model trained at 64 px is never fed 224 px features.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from pyspark.ml.functions import array_to_vector
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fruits_features.classifier import with_predictions
from fruits_features.config import JobConfig
from fruits_features.errors import PipelineError
from fruits_features.manifest import utc_now
from fruits_features.model_store import (
    ModelUnavailableError,
    check_compatible,
    load_model,
    read_model_info,
)
from fruits_features.output import PREDICTIONS_DIR, finish_run, write_parts
from fruits_features.pipeline import (
    RunResult,
    check_embedded,
    check_model_transfer,
    embed_listing,
    embed_spec,
    preflight,
    run_details,
    s3_settings,
    stage_timer,
)
from fruits_features.reduction import VECTOR_COL
from fruits_features.storage import ImageRef, Listing, S3Uri, iter_keys, label_for_key, s3_client
from fruits_features.weights import weights_sha256

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)


def list_any_images(client: S3Client, uri: S3Uri, extensions: tuple[str, ...]) -> Listing:
    """Every image under ``uri``, sorted by key, whether or not it sits in a class folder.

    The label is the image's folder when it has one below the prefix, else empty: new images
    need no class, and a labelled prefix can be checked against the predictions.

    Raises:
        InputError: if the prefix cannot be listed.
    """
    images: list[ImageRef] = []
    listed = 0
    for key in iter_keys(client, uri):
        listed += 1
        name = key.rsplit("/", 1)[-1]
        if key.endswith("/") or name.startswith(".") or not name.lower().endswith(extensions):
            continue
        label = label_for_key(key, uri.prefix, extensions) or ""
        images.append(ImageRef(str(S3Uri(uri.bucket, key)), label))
    images.sort(key=lambda ref: ref.path)
    return Listing(images=images, keys_listed=listed, skipped=listed - len(images))


def run_scoring(spark: SparkSession, config: JobConfig, model: str, run_id: str) -> RunResult:
    """Score every image under ``input.uri`` with the model at ``model``.

    Args:
        spark: the session (local, EC2 or EMR).
        config: S3, Spark and model settings; ``model.image_size`` is taken from the model.
        model: ``s3://.../<training run>/model/``.
        run_id: names the output folder ``<output>/<run_id>/``.

    Returns:
        The run's URI and manifest.

    Raises:
        ConfigError: ``classifier.model_transfer`` cannot work with this master.
        ModelUnavailableError: the model cannot be read.
        ModelMismatchError: ``model.weights`` is not the file the model was trained with.
        InputError, OutputError, WeightsUnavailableError, TooManyRejectsError, PipelineError:
            as for the feature job.
    """
    started = time.perf_counter()
    timer = stage_timer(spark, config)
    settings = s3_settings(config)
    client = s3_client(settings)
    run_uri = S3Uri.parse(config.output.uri).join(run_id)
    try:
        model_uri = S3Uri.parse(model)
    except ValueError as exc:
        raise ModelUnavailableError(f"--model: {exc}") from exc
    check_model_transfer(config, spark.sparkContext.master or "")
    with timer.stage("model_info"):
        info = read_model_info(client, model_uri)
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "status": "running",
        "input": config.input.uri,
        "output": str(run_uri),
        "model": str(model_uri),
        "model_info": {key: value for key, value in info.to_dict().items() if key != "labels"},
        "started_at": utc_now(),
        "config": config.to_dict(),
    }
    if info.image_size != config.model.image_size:
        log.info(
            "embedding at %dpx, the model's image size (model.image_size=%d is not used)",
            info.image_size,
            config.model.image_size,
        )
        model_config = config.model.model_copy(update={"image_size": info.image_size})
        config = config.model_copy(update={"model": model_config})
    checked = preflight(client, config, run_uri, timer, lister=list_any_images)
    manifest["model_engine"] = checked.model
    with timer.stage("weights_check"):
        check_compatible(info, config.model.weights, weights_sha256(config.model.weights, settings), model)
    with timer.stage("model_load"):
        pipeline_model = load_model(
            model_uri,
            client,
            transfer=config.classifier.model_transfer,
            staging_dir=config.classifier.staging_dir,
        )
    embedded = embed_listing(spark, config, embed_spec(config), checked.listing, timer)
    manifest["model_engine"]["executors"] = dict(embedded.counters.engines.value)
    try:
        counts = manifest["counts"] = embedded.counts
        check_embedded(embedded, config, client, run_uri, manifest)
        vectors = embedded.featurized.select(
            "path", "label", array_to_vector(F.col("features")).alias(VECTOR_COL)
        )
        scored = with_predictions(vectors, [pipeline_model])
        with timer.stage("write"):
            parts = write_parts(scored, run_uri, settings, PREDICTIONS_DIR, config.output.format)
        written = sum(part.rows for part in parts)
        if written != counts["featurized"]:
            raise PipelineError(
                f"wrote {written} predictions but {counts['featurized']} images were featurized"
            )
        counts["part_files"] = len(parts)
        log.info("scored %d images: predictions under %s", written, run_uri.join(PREDICTIONS_DIR))
        manifest.update(
            status="succeeded", finished_at=utc_now(), **run_details(spark, embedded, timer, started)
        )
        finish_run(client, run_uri, embedded.rejected, manifest)
    finally:
        embedded.unpersist()
    return RunResult(run_uri=str(run_uri), manifest=manifest)
