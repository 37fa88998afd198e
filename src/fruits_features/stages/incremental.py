"""Incremental runs: featurize only the images a previous run does not hold.

A run written with ``output.incremental_base`` holds ``embeddings/`` (path, label, ETag and the
features of every image it featurized) and ``model/`` (its fitted scaler + PCA, with the
classifier when it had one). Against such a run, the listed images split three ways
(:func:`plan_increment`): **new** (a path it does not hold), **changed** (an ETag other than the one
it recorded; a listing without ETags, a key list, sees no change) and **unchanged**. Only the new
and changed images go through the embed stage. Then, as ``incremental.mode`` says:

- ``apply``: the previous run's fitted pipeline, loaded and checked as the scoring job loads it
  (:mod:`fruits_features.stages.model_store`), projects the new images (and, with a classifier,
  predicts them); the unchanged images keep the components the previous run wrote, read back from
  its ``features/`` to the bit;
- ``refit``: the unchanged images' features come from the previous ``embeddings/``, and the
  reduction (and the classifier) are fitted on every image, as in a full run.

Either way the run writes its own ``embeddings/`` and ``model/`` for every image listed, so it is
the base of the next increment. The images the previous run held but the listing no longer has
are left out (counted as ``removed``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError
from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.ml.functions import array_to_vector
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DoubleType,
    FloatType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from fruits_features.config import JobConfig
from fruits_features.errors import InputError
from fruits_features.features.model_files import weights_sha256
from fruits_features.io.folders import copy_folder
from fruits_features.io.labels import with_folder
from fruits_features.io.listing import Listing
from fruits_features.io.outputs import (
    EMBEDDINGS_DIR,
    FEATURES_DIR,
    MANIFEST_FILE,
    MODEL_DIR,
    PREDICTIONS_DIR,
    SUCCESS_FILE,
    WrittenPart,
    read_parts,
    write_parts,
)
from fruits_features.io.s3 import S3Settings, describe_error, read_object
from fruits_features.io.uri import S3Uri
from fruits_features.stages.classify import with_predictions
from fruits_features.stages.embed import listed_keys
from fruits_features.stages.model_info import ModelInfo, ModelMismatchError, check_backbone, check_compatible
from fruits_features.stages.model_store import (
    load_model,
    read_model_info,
    save_run_model,
)
from fruits_features.stages.reduce import (
    COMPONENTS_COL,
    VECTOR_COL,
    Reduction,
    component_names,
    components_to_columns,
    project,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from fruits_features.job_run import JobRun

log = logging.getLogger(__name__)

EMBEDDINGS_SCHEMA = StructType(
    [
        StructField("path", StringType()),
        StructField("label", StringType()),
        StructField("etag", StringType()),
        StructField("features", ArrayType(FloatType())),
    ]
)
_STATUS = "_status"
# embeddings/ of a run with augment.copies: 0 for an image, 1, 2, ... for its augmented copies.
COPY_COL = "copy"


class PreviousRunError(InputError):
    """The previous run of an incremental run cannot be had, or cannot be its base (exit code 3)."""


@dataclass(frozen=True)
class PreviousRun:
    """A finished run written with ``output.incremental_base``, and its fitted model's description."""

    uri: S3Uri
    manifest: dict[str, Any]
    model: ModelInfo

    @property
    def run_id(self) -> str:
        """The previous run's id."""
        return str(self.manifest.get("run_id", ""))


def previous_run_uri(config: JobConfig) -> S3Uri | None:
    """``incremental.previous_run`` as a run folder: an ``s3://`` URI as it is, a run id under
    ``output.uri``; ``None`` for a full run."""
    value = config.incremental.previous_run
    if value is None:
        return None
    return S3Uri.parse(value) if value.startswith("s3://") else S3Uri.parse(config.output.uri).join(value)


def read_previous_run(client: S3Client, settings: S3Settings, uri: S3Uri, config: JobConfig) -> PreviousRun:
    """Read and check the previous run: finished, written with ``output.incremental_base``, its
    images embedded as this run would embed them (the same weights file and image size).

    Raises:
        PreviousRunError: it cannot be read, did not finish, or holds no ``embeddings/``.
        ModelMismatchError: another backbone, other weights or another image size (exit 2).
    """
    try:
        manifest = json.loads(read_object(client, uri.join(MANIFEST_FILE)))
        client.head_object(Bucket=uri.bucket, Key=uri.join(SUCCESS_FILE).key)
    except (ClientError, BotoCoreError, Boto3Error) as exc:
        raise PreviousRunError(
            f"incremental.previous_run {uri}: no finished run there ({describe_error(exc)}: "
            f"{MANIFEST_FILE} and {SUCCESS_FILE} are needed)"
        ) from exc
    except ValueError as exc:
        raise PreviousRunError(f"incremental.previous_run {uri}: {MANIFEST_FILE} is not JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("job") != "features" or not manifest.get("embeddings"):
        raise PreviousRunError(
            f"incremental.previous_run {uri} is not a feature run written with output.incremental_base "
            f"(its {MANIFEST_FILE} names no embeddings/)"
        )
    previous = PreviousRun(uri, manifest, read_model_info(client, uri.join(MODEL_DIR)))
    check_backbone(previous.model, config.model, str(uri.join(MODEL_DIR)))  # before the weights are read
    check_compatible(
        previous.model,
        config.model,
        weights_sha256(config.model.weights, settings, config.model.network),
        str(uri.join(MODEL_DIR)),
    )
    if previous.model.image_size != config.model.image_size:
        raise ModelMismatchError(
            f"model.image_size={config.model.image_size}, but the previous run {uri} embedded its images at "
            f"{previous.model.image_size}px: set model.image_size={previous.model.image_size}"
        )
    return previous


@dataclass
class Increment:
    """What an incremental run does against its previous run (the frames persisted until released).

    Attributes:
        previous: the base run.
        to_embed: the listing of the new and changed images, for the embed stage.
        unchanged: ``path`` of the listed images the previous run holds as they are.
        counts: ``new``, ``changed``, ``unchanged``, ``removed``.
    """

    previous: PreviousRun
    to_embed: Listing
    unchanged: DataFrame
    counts: dict[str, int]
    statuses: DataFrame

    def release(self) -> None:
        """Unpersist the frames."""
        self.statuses.unpersist()

    def section(self, mode: str) -> dict[str, Any]:
        """The manifest's ``incremental`` section."""
        return {"previous_run": str(self.previous.uri), "mode": mode, **self.counts}


def change_status(listed: DataFrame, previous_index: DataFrame) -> DataFrame:
    """``listed`` (``path, label, etag``) with ``_status``: ``new``, ``changed`` or ``unchanged``
    against ``previous_index`` (``path, etag``). An ETag missing on either side is no change."""
    held = previous_index.select("path", F.col("etag").alias("_previous_etag"), F.lit(True).alias("_held"))
    joined = listed.join(held, "path", "left")
    changed = (
        F.col("etag").isNotNull()
        & F.col("_previous_etag").isNotNull()
        & (F.col("etag") != F.col("_previous_etag"))
    )
    status = F.when(F.col("_held").isNull(), "new").when(changed, "changed").otherwise("unchanged")
    return joined.select("path", "label", "etag", status.alias(_STATUS))


def plan_increment(job: JobRun, listing: Listing, previous: PreviousRun) -> Increment:
    """Split the listed images against the previous run (see the module's notes); one aggregation
    counts them, and the previous run's index is read by the executors (``path, etag`` only).

    The caller releases the returned :class:`Increment`; the listing's frame is released here.
    """
    spark = job.spark
    listed = listed_keys(spark, listing, spark.sparkContext.defaultParallelism)
    index_schema = StructType([StructField("path", StringType()), StructField("etag", StringType())])
    index = previous_embeddings(job, previous, index_schema)
    statuses = change_status(listed, index).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        counts = {"new": 0, "changed": 0, "unchanged": 0}
        counts.update(
            {row[_STATUS]: int(row["count"]) for row in statuses.groupBy(_STATUS).count().collect()}
        )
        counts["removed"] = index.count() - counts["changed"] - counts["unchanged"]
    except BaseException:
        statuses.unpersist()
        raise
    if listing.frame is not None:
        listing.frame.unpersist()  # the statuses hold what this run needs of the listing
    to_embed = statuses.filter(F.col(_STATUS) != "unchanged").drop(_STATUS)
    embed_count = counts["new"] + counts["changed"]
    log.info(
        "against %s: %d new, %d changed, %d unchanged images (%d no longer listed)",
        previous.uri,
        counts["new"],
        counts["changed"],
        counts["unchanged"],
        counts["removed"],
    )
    return Increment(
        previous=previous,
        to_embed=Listing(images=[], keys_listed=embed_count, skipped=0, frame=to_embed),
        unchanged=statuses.filter(F.col(_STATUS) == "unchanged").select("path", "label"),
        counts=counts,
        statuses=statuses,
    )


def with_unchanged(job: JobRun, increment: Increment, featurized: DataFrame) -> DataFrame:
    """``featurized`` (``path, label, etag, features``: this run's images) and the unchanged images'
    rows of the previous run's ``embeddings/``: every listed image's features, labelled as this
    run's listing labels them (``labels`` may have changed since)."""
    previous = previous_embeddings(job, increment.previous, EMBEDDINGS_SCHEMA)
    columns = EMBEDDINGS_SCHEMA.fieldNames()
    kept = previous.drop("label").join(increment.unchanged, "path", "inner")
    return kept.select(*columns).unionByName(featurized.select(*columns))


def previous_embeddings(job: JobRun, previous: PreviousRun, schema: StructType) -> DataFrame:
    """The previous run's ``embeddings/`` as ``schema``'s columns, one row per image: a run with
    ``augment.copies`` also holds its copies there, flagged ``copy`` > 0, which are left out."""
    folder = previous.uri.join(EMBEDDINGS_DIR)
    if not previous.manifest.get("augment"):
        return read_parts(job.spark, job.client, folder, schema, job.settings)
    flagged = StructType([*schema.fields, StructField(COPY_COL, IntegerType())])
    rows = read_parts(job.spark, job.client, folder, flagged, job.settings)
    return rows.filter(F.col(COPY_COL) == 0).drop(COPY_COL)


def write_embeddings(
    job: JobRun, featurized: DataFrame, copies: DataFrame | None = None
) -> list[WrittenPart]:
    """``<run>/embeddings/part-NNNNN.parquet``: ``path, label, etag, features`` from the executors;
    with ``copies`` (``augment.copies``), each row also has ``copy``: 0 for the image itself, 1, 2,
    ... for its augmented copies (whose ``path`` is the source image's)."""
    names = EMBEDDINGS_SCHEMA.fieldNames()
    columns = featurized.select(*names)
    if copies is not None:
        flagged = columns.withColumn(COPY_COL, F.lit(0))
        columns = flagged.unionByName(copies.select(*names, F.col(COPY_COL).cast(IntegerType())))
    return write_parts(columns, job.uri, job.settings, EMBEDDINGS_DIR, "parquet")


def save_reduction(job: JobRun, config: JobConfig, reduction: Reduction) -> None:
    """Save the fitted scaler + PCA alone under ``<run>/model/`` (no classifier: no labels), the
    base of an incremental run when there is no classifier to save it with."""
    save_run_model(job, config, reduction.model, k=reduction.k, variance_target=reduction.variance_target)


@dataclass(frozen=True)
class Applied:
    """What ``incremental.mode: apply`` wrote: the feature parts, and the prediction parts if any."""

    features: list[WrittenPart]
    predictions: list[WrittenPart]
    k: int


def apply_previous(job: JobRun, config: JobConfig, increment: Increment, featurized: DataFrame) -> Applied:
    """``incremental.mode: apply``: project this run's images with the previous run's fitted
    pipeline, keep the unchanged images' components as the previous run wrote them, write both as
    ``features/``; with the previous classifier, write the new images' ``predictions/``; copy the
    previous ``model/`` so that this run is a base in turn."""
    previous = increment.previous
    spark, client, settings, run_uri = job.spark, job.client, job.settings, job.uri
    model = load_model(
        previous.uri.join(MODEL_DIR),
        client,
        transfer=config.classifier.model_transfer,
        staging_dir=config.classifier.staging_dir,
    )
    stages = list(model.stages)
    # The reduction ends with the stage that writes the components; the classifier follows it.
    end = next(i for i, stage in enumerate(stages) if stage.getOrDefault("outputCol") == COMPONENTS_COL) + 1
    reduction = Reduction(
        PipelineModel(stages=stages[:end]), previous.model.k, previous.model.variance_target
    )
    names = component_names(reduction.k)
    schema = StructType(
        [StructField("path", StringType()), StructField("label", StringType())]
        + [StructField(name, DoubleType()) for name in names]
    )
    written = read_parts(spark, client, previous.uri.join(FEATURES_DIR), schema, settings)
    kept = written.drop("label").join(increment.unchanged, "path").select(*schema.fieldNames())
    projected = components_to_columns(
        project(featurized.select("path", "label", "features"), reduction), reduction.k
    )
    features = write_parts(
        with_folder(kept.unionByName(projected), config.labels, config.input_uri),
        run_uri,
        settings,
        FEATURES_DIR,
        config.output.format,
    )
    predictions: list[WrittenPart] = []
    if stages[end:]:  # the previous run's classifier: the scoring job's way to predict
        vectors = featurized.select("path", "label", array_to_vector(F.col("features")).alias(VECTOR_COL))
        scored = with_folder(with_predictions(vectors, [model]), config.labels, config.input_uri)
        predictions = write_parts(scored, run_uri, settings, PREDICTIONS_DIR, config.output.format)
    if config.output.incremental_base:
        copy_folder(client, previous.uri.join(MODEL_DIR), run_uri.join(MODEL_DIR))
    return Applied(features, predictions, reduction.k)
