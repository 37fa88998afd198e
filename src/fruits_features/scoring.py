"""Scoring new images with a saved model: list, embed with the model's own settings, predict, write.

Output under ``<output>/<run id>/``::

    predictions/part-00000.csv ...  path,label,predicted,probability (label: the image's folder, or empty;
                                    with the model's labels.rule fruit or table, its label and then folder)
    rejected/, manifest.json, _SUCCESS      as for the feature job

The images are embedded exactly as the training images were: the image size comes from the
model's ``model.json``, and ``model.weights`` must be the same file (its SHA-256 is checked), so a
model trained at 64 px is never fed 224 px features.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack

from pyspark.ml.functions import array_to_vector
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from fruits_features.config import JobConfig
from fruits_features.errors import PipelineError
from fruits_features.features.model_files import weights_sha256
from fruits_features.io.labels import with_folder
from fruits_features.io.outputs import PREDICTIONS_DIR, write_parts
from fruits_features.io.uri import S3Uri
from fruits_features.job_run import JobRun
from fruits_features.manifest import RunResult
from fruits_features.stages.classify import PREDICTED_COL, with_predictions
from fruits_features.stages.embed import run_embed_stage
from fruits_features.stages.metrics import scored_metrics
from fruits_features.stages.model_info import ModelUnavailableError, check_backbone, check_compatible
from fruits_features.stages.model_store import (
    check_model_transfer,
    load_model,
    read_model_info,
)
from fruits_features.stages.preflight import preflight
from fruits_features.stages.reduce import VECTOR_COL

log = logging.getLogger(__name__)


def run_scoring(spark: SparkSession, config: JobConfig, model: str, run_id: str) -> RunResult:
    """Score every image under ``input.uri`` with the model at ``model``.

    Args:
        spark: the session (local, EC2 or EMR).
        config: S3, Spark and model settings; ``model.image_size`` is taken from the model.
        model: ``s3://.../<training run>/model/``.
        run_id: names the output folder ``<output>/<run_id>/``.

    Raises:
        ConfigError: ``classifier.model_transfer`` cannot work with this master.
        ModelUnavailableError: the model cannot be read.
        ModelMismatchError: ``model.backbone`` or ``model.weights`` is not what the model was trained with.
        InputError, OutputError, WeightsUnavailableError, TooManyRejectsError, PipelineError:
            as for the feature job.
    """
    job = JobRun.start(spark, config, "scoring", run_id)
    try:
        model_uri = S3Uri.parse(model)
    except ValueError as exc:
        raise ModelUnavailableError(f"--model: {exc}") from exc
    check_model_transfer(config, spark.sparkContext.master or "")
    with job.timer.stage("model_info"):
        info = read_model_info(job.client, model_uri)
    check_backbone(info, config.model, str(model_uri))
    if not info.labels:
        raise ModelUnavailableError(
            f"{model_uri} holds the scaler + PCA of run {info.run_id} but no classifier: score with the "
            "model/ of a run with classifier.enabled"
        )
    job.manifest.scoring_model = {
        "uri": str(model_uri),
        **{key: value for key, value in info.to_dict().items() if key != "labels"},
    }
    if info.label_rule != config.labels:
        log.info("labelling the folders as the model learnt them: labels.rule %s", info.label_rule.rule)
        config = config.model_copy(update={"labels": info.label_rule})
    if info.image_size != config.model.image_size:
        log.info(
            "embedding at %dpx, the model's image size (model.image_size=%d is not used)",
            info.image_size,
            config.model.image_size,
        )
        model_config = config.model.model_copy(update={"image_size": info.image_size})
        config = config.model_copy(update={"model": model_config})
    checked = preflight(job, config, labelled_only=False)
    with job.timer.stage("weights_check"):
        digest = weights_sha256(config.model.weights, job.settings, config.model.network)
        check_compatible(info, config.model, digest, model)
    with job.timer.stage("model_load"):
        pipeline_model = load_model(
            model_uri,
            job.client,
            transfer=config.classifier.model_transfer,
            staging_dir=config.classifier.staging_dir,
        )

    with ExitStack() as cleanup, job.failure_recorded():
        embedded = run_embed_stage(job, config, checked, cleanup=cleanup)
        counts = embedded.counts
        vectors = embedded.featurized.select(
            "path", "label", array_to_vector(F.col("features")).alias(VECTOR_COL)
        )
        scored = with_predictions(vectors, [pipeline_model])
        with job.timer.stage("write"):
            predictions = with_folder(scored, config.labels, config.input_uri)
            parts = write_parts(predictions, job.uri, job.settings, PREDICTIONS_DIR, config.output.format)
        written = sum(part.rows for part in parts)
        if written != counts.featurized:
            raise PipelineError(f"wrote {written} predictions but {counts.featurized} images were featurized")
        counts.part_files = len(parts)
        log.info("scored %d images: predictions under %s", written, job.uri.join(PREDICTIONS_DIR))
        with job.timer.stage("evaluate"):
            cells = scored.groupBy("label", PREDICTED_COL).count().collect()
            job.manifest.classifier = scored_metrics(
                [(row["label"], row[PREDICTED_COL], int(row["count"])) for row in cells], info.labels
            )
        evaluation = job.manifest.classifier
        if evaluation["status"] == "evaluated":
            log.info(
                "accuracy %.3f on the %d images labelled with one of the model's %d classes",
                evaluation["accuracy"],
                evaluation["test_images"],
                len(info.labels),
            )
        return job.finish(embedded)
