"""Saving the fitted scaler + PCA + classifier under ``<run>/model/``, and loading it back to score.

Layout::

    <run>/model/model.json   what the pipeline expects: image size, weights and their SHA-256,
                             feature length, k, the labels, where and when it was trained
    <run>/model/pipeline/    the Spark ML PipelineModel (Spark's own format: metadata/, stages/)

Spark ML writes and reads models through Hadoop filesystems, and the executors take part (each
stage's metadata and data are small files written and read by Spark tasks). Two ways to reach S3:

- ``classifier.model_transfer: boto3`` (default): Spark writes to a folder (under
  ``classifier.staging_dir``, default the temporary folder), which the driver checks and boto3
  uploads; loading downloads the folder first. The executors write and read that folder on their
  own machines, so it must be one folder for the driver and every executor: any folder in local
  mode and on one machine; with another master a shared mount (or any folder when the workers run
  on the driver's machine), given as ``classifier.staging_dir``, which the job requires there.
- ``classifier.model_transfer: hadoop``: Spark reads and writes the ``s3://`` URI itself. On EMR,
  EMRFS serves ``s3://``; elsewhere it needs a Hadoop S3 connector this project does not ship.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError
from py4j.protocol import Py4JError, Py4JJavaError
from pyspark.errors.exceptions.captured import CapturedException
from pyspark.ml import PipelineModel

from fruits_features.config import JobConfig
from fruits_features.errors import ConfigError, InputError, PipelineError
from fruits_features.features.model_files import weights_sha256
from fruits_features.io.folders import download_folder, upload_folder
from fruits_features.io.outputs import MODEL_DIR, json_bytes
from fruits_features.io.s3 import describe_error, read_object, write_object
from fruits_features.io.uri import S3Uri
from fruits_features.manifest import utc_now
from fruits_features.stages.model_info import ModelInfo, ModelUnavailableError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from fruits_features.job_run import JobRun

log = logging.getLogger(__name__)

MODEL_INFO_FILE = "model.json"
PIPELINE_DIR = "pipeline"

Transfer = Literal["boto3", "hadoop"]


class ModelStagingError(PipelineError):
    """The driver and the executors did not share ``classifier.staging_dir`` (exit code 1)."""


def fetch_pipeline(client: S3Client, uri: S3Uri, folder: Path) -> int:
    """Download the saved pipeline under ``uri`` into ``folder``; returns the file count.

    Raises:
        ModelUnavailableError: the prefix cannot be listed or read, or holds nothing.
    """
    try:
        count = download_folder(client, uri, folder)
    except InputError as exc:
        raise ModelUnavailableError(f"cannot read the model: {exc}") from exc
    except (ClientError, BotoCoreError, Boto3Error) as exc:
        raise ModelUnavailableError(f"cannot read the model under {uri}: {describe_error(exc)}") from exc
    if count == 0:
        raise ModelUnavailableError(f"no objects under {uri}: the saved pipeline is missing")
    return count


def save_model(
    model: PipelineModel,
    info: ModelInfo,
    model_uri: S3Uri,
    client: S3Client,
    *,
    transfer: Transfer,
    staging_dir: str | None = None,
) -> None:
    """Save ``model`` and ``info`` under ``model_uri`` (``<run>/model/``).

    Args:
        model: the fitted pipeline, ``_vector`` (the features) in, ``predicted`` out.
        info: what the pipeline expects, written last as ``model.json``.
        model_uri: the model's folder.
        client: the run's boto3 client (its encryption and bucket-owner settings apply).
        transfer: ``boto3`` (Spark saves to a staging folder, boto3 uploads) or ``hadoop`` (Spark writes S3).
        staging_dir: the parent of the staging folder for ``boto3``; ``None``: the temporary folder.

    Raises:
        ModelStagingError: the staged folder lacks files the executors wrote (they wrote elsewhere).
    """
    pipeline_uri = model_uri.join(PIPELINE_DIR)
    if transfer == "hadoop":
        model.write().save(str(pipeline_uri))
    else:
        staging = Path(tempfile.mkdtemp(prefix="fruits-model-", dir=staging_dir))
        try:
            local = staging / PIPELINE_DIR
            # An explicit file:// URI: with a cluster's default filesystem (HDFS), a bare path
            # would go there instead of the driver's disk.
            model.write().save(local.as_uri())
            check_staged_pipeline(local, staging_dir)
            files = upload_folder(client, local, pipeline_uri)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("uploaded the fitted pipeline (%d files) to %s", files, pipeline_uri)
    # model.json last: a folder without it is not a model (an interrupted save).
    write_object(client, model_uri.join(MODEL_INFO_FILE), json_bytes(info.to_dict()), "application/json")


def save_run_model(
    job: JobRun,
    config: JobConfig,
    model: PipelineModel,
    *,
    k: int,
    variance_target: float | None,
    labels: tuple[str, ...] = (),
) -> None:
    """Save the pipeline a run fitted under ``<run>/model/``, described as this run embedded its
    images (``labels``: the classifier's classes; none for the scaler + PCA alone)."""
    info = ModelInfo(
        image_size=config.model.image_size,
        weights=config.model.weights,
        weights_sha256=weights_sha256(config.model.weights, job.settings, config.model.network),
        feature_dim=config.model.network.feature_dim,
        k=k,
        variance_target=variance_target,
        labels=labels,
        run_id=job.run_id,
        trained_at=utc_now(),
        spark_version=job.spark.version,
        backbone=config.model.backbone,
        label_rule=config.labels,
    )
    save_model(
        model,
        info,
        job.uri.join(MODEL_DIR),
        job.client,
        transfer=config.classifier.model_transfer,
        staging_dir=config.classifier.staging_dir,
    )


def read_model_info(client: S3Client, model_uri: S3Uri) -> ModelInfo:
    """``model.json`` of the model under ``model_uri``.

    Raises:
        ModelUnavailableError: missing, unreadable or not this job's.
    """
    uri = model_uri.join(MODEL_INFO_FILE)
    try:
        body = read_object(client, uri)
    except (ClientError, BotoCoreError, Boto3Error) as exc:
        raise ModelUnavailableError(
            f"cannot read {uri}: {describe_error(exc)} (is {model_uri} the model/ folder of a run "
            "with classifier.enabled?)"
        ) from exc
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise ModelUnavailableError(f"{uri} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelUnavailableError(f"{uri} does not hold a JSON object")
    return ModelInfo.from_dict(data, str(uri))


def load_model(
    model_uri: S3Uri, client: S3Client, *, transfer: Transfer, staging_dir: str | None = None
) -> PipelineModel:
    """Load the pipeline saved by :func:`save_model`.

    Raises:
        ModelUnavailableError: the pipeline's files cannot be fetched.
        ModelStagingError: Spark could not read the folder staged under ``staging_dir``.
    """
    pipeline_uri = model_uri.join(PIPELINE_DIR)
    if transfer == "hadoop":
        return PipelineModel.load(str(pipeline_uri))
    staging = Path(tempfile.mkdtemp(prefix="fruits-model-", dir=staging_dir))
    local = staging / PIPELINE_DIR
    try:
        files = fetch_pipeline(client, pipeline_uri, local)
        log.info("downloaded the fitted pipeline (%d files) from %s", files, pipeline_uri)
        # Loading reads every stage's data into the driver, so the copy can go right after.
        return PipelineModel.load(local.as_uri())
    except (Py4JJavaError, CapturedException) as exc:
        if staging_dir is None:
            raise
        # The executors read the metadata and the data: where they do not see the driver's
        # folder, their tasks fail on a missing file.
        raise ModelStagingError(
            f"config key 'classifier.staging_dir' ({staging_dir}): Spark could not load the pipeline "
            f"staged in {local} ({first_line(exc)}); every executor must see that folder at the same path"
        ) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message; for a JVM error, of its root cause (a task's
    ``java.io.FileNotFoundException: File file:/... does not exist``, say)."""
    text = str(exc)
    if isinstance(exc, Py4JJavaError):
        try:
            cause = exc.java_exception
            while cause.getCause() is not None:
                cause = cause.getCause()
            text = str(cause.toString())
        except Py4JError:  # the JVM is gone: py4j's own message
            pass
    return next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)


def _part_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("part-*") if p.is_file()) if folder.is_dir() else []


def staged_pipeline_gaps(folder: Path) -> list[str]:
    """What a pipeline Spark saved in ``folder`` lacks, as this machine sees it (empty: nothing).

    Spark ML's writer runs Spark jobs: the executors write every ``metadata/`` and ``data/`` part
    file and the driver's job commit adds ``_SUCCESS``. Where an executor wrote to its own disk,
    the driver's folder has ``_SUCCESS`` and no part file. Checked: the pipeline's metadata, and for
    each stage it names (``stageUids``) its folder, its metadata and, when it has ``data/``, a part
    file there.
    """
    metadata = _part_files(folder / "metadata")
    if not metadata:
        return ["metadata/part-*"]
    try:
        uids = json.loads(metadata[0].read_text().splitlines()[0])["paramMap"]["stageUids"]
    except (ValueError, IndexError, KeyError, TypeError):
        return [f"a pipeline's metadata in {metadata[0].relative_to(folder)}"]
    gaps: list[str] = []
    for uid in uids:
        stages = sorted((folder / "stages").glob(f"*_{uid}"))
        if len(stages) != 1:
            gaps.append(f"stages/<n>_{uid}/")
            continue
        name = stages[0].relative_to(folder)
        if not _part_files(stages[0] / "metadata"):
            gaps.append(f"{name}/metadata/part-*")
        if (stages[0] / "data").exists() and not _part_files(stages[0] / "data"):
            gaps.append(f"{name}/data/part-*")
    return gaps


def check_staged_pipeline(folder: Path, staging_dir: str | None) -> None:
    """Refuse to upload a pipeline whose files Spark's executors wrote somewhere else.

    Raises:
        ModelStagingError: naming ``classifier.staging_dir`` and what is missing.
    """
    gaps = staged_pipeline_gaps(folder)
    if gaps:
        more = f" and {len(gaps) - 1} more" if len(gaps) > 1 else ""
        raise ModelStagingError(
            f"config key 'classifier.staging_dir' ({staging_dir or 'unset: the temporary folder'}): "
            f"Spark saved the pipeline to {folder}, but the driver finds no {gaps[0]}{more} there: the "
            "executors wrote to a folder of their own; it must be one that the driver and every "
            "executor see at the same path (a shared mount)"
        )


def check_model_transfer(config: JobConfig, master: str) -> None:
    """Refuse a model transfer that cannot work with ``master``, before any heavy work.

    Spark ML's writer and reader run Spark jobs: with ``classifier.model_transfer: boto3`` the
    executors write and read the staging folder on their own machines. In local mode (``local``,
    ``local[N]``, ``local-cluster[...]``) they run on the driver's; with another master,
    ``classifier.staging_dir`` must name a folder they all see at the same path, checked here to
    be an existing absolute folder on the driver (the executors' side is checked after the save).

    Raises:
        ConfigError: naming the setting and the master.
    """
    classifier = config.classifier
    if classifier.model_transfer != "boto3":
        return
    staging_dir = classifier.staging_dir
    key = "config key 'classifier.staging_dir'"
    if staging_dir is None:
        if master.startswith("local"):
            return
        raise ConfigError(
            f"{key}: unset, but <run>/model/ (saved with classifier.enabled or output.incremental_base) "
            f"through classifier.model_transfer boto3 with master {master!r} needs a folder that the "
            "driver and every executor see at the same path (a shared mount; any local folder when all "
            "workers run on this machine); on EMR use model_transfer hadoop (EMRFS)"
        )
    if not master.startswith("local") and not Path(staging_dir).is_absolute():
        raise ConfigError(
            f"{key}: {staging_dir!r} is relative, and the executors of master {master!r} would "
            "resolve it from their own working folders; give an absolute path"
        )
    if not Path(staging_dir).is_dir():
        raise ConfigError(f"{key}: {staging_dir} is not a folder on the driver")
