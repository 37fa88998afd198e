"""Saving the fitted scaler + PCA + classifier under ``<run>/model/``, and loading it back to score.

Layout::

    <run>/model/model.json   what the pipeline expects: image size, weights and their SHA-256,
                             feature length, k, the labels, where and when it was trained
    <run>/model/pipeline/    the Spark ML PipelineModel (Spark's own format: metadata/, stages/)

Spark ML writes and reads models through Hadoop filesystems, and the executors take part (each
stage's data is a small Parquet file written by a Spark job). Two ways to reach S3:

- ``classifier.model_transfer: boto3`` (default): Spark writes to a folder on the driver's disk
  (``classifier.staging_dir``, default the temporary folder), which boto3 then uploads; loading
  downloads the folder first. Only right where the executors share the driver's disk: local
  mode, one machine (EC2). The job refuses it for any other master.
- ``classifier.model_transfer: hadoop``: Spark reads and writes the ``s3://`` URI itself. On EMR,
  EMRFS serves ``s3://``; elsewhere it needs a Hadoop S3 connector this project does not ship.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError
from pyspark.ml import PipelineModel

from fruits_features.config import JobConfig
from fruits_features.errors import ConfigError, InputError
from fruits_features.io.outputs import json_bytes, upload_folder
from fruits_features.io.s3 import describe_error, iter_keys, read_object, write_object
from fruits_features.io.uri import S3Uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

MODEL_INFO_FILE = "model.json"
PIPELINE_DIR = "pipeline"
FORMAT_VERSION = 1

Transfer = Literal["boto3", "hadoop"]


class ModelUnavailableError(InputError):
    """The model folder cannot be read or is not a model this job wrote (exit code 3)."""


class ModelMismatchError(ConfigError):
    """The configuration would embed images differently from the images the model learnt (exit code 2)."""


@dataclass(frozen=True)
class ModelInfo:
    """What a saved pipeline expects of its input, stored beside it as ``model.json``.

    Attributes:
        image_size: images are resized to this square before ResNet50.
        weights: ``model.weights`` at training time (where they were then; informational).
        weights_sha256: the digest of the weights file: scoring with other weights is refused.
        feature_dim: the length of the ResNet50 feature vector.
        k: the PCA components the classifier reads.
        variance_target: ``pca.k`` when it was a variance target, else ``None``.
        labels: the classes, in the classifier's index order.
        run_id: the training run.
        trained_at: UTC time of training.
        spark_version: the Spark that wrote the pipeline.
        format_version: this layout's version.
    """

    image_size: int
    weights: str
    weights_sha256: str
    feature_dim: int
    k: int
    variance_target: float | None
    labels: tuple[str, ...]
    run_id: str
    trained_at: str
    spark_version: str
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        data = asdict(self)
        data["labels"] = list(self.labels)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str) -> ModelInfo:
        """Read ``model.json``'s content.

        Raises:
            ModelUnavailableError: for a missing field or another format version.
        """
        if data.get("format_version") != FORMAT_VERSION:
            raise ModelUnavailableError(
                f"{source}: format_version {data.get('format_version')!r}, this job reads {FORMAT_VERSION}"
            )
        try:
            return cls(
                image_size=int(data["image_size"]),
                weights=str(data["weights"]),
                weights_sha256=str(data["weights_sha256"]),
                feature_dim=int(data["feature_dim"]),
                k=int(data["k"]),
                variance_target=None if data["variance_target"] is None else float(data["variance_target"]),
                labels=tuple(str(label) for label in data["labels"]),
                run_id=str(data["run_id"]),
                trained_at=str(data["trained_at"]),
                spark_version=str(data["spark_version"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelUnavailableError(
                f"{source}: not a model description this job wrote ({exc!r})"
            ) from exc


def check_compatible(info: ModelInfo, weights: str, digest: str, model_uri: str) -> None:
    """Refuse to score with weights other than the model's.

    Raises:
        ModelMismatchError: naming both settings.
    """
    if digest != info.weights_sha256:
        raise ModelMismatchError(
            f"model.weights={weights} (sha256 {digest[:12]}...) differs from the weights the model at "
            f"{model_uri} was trained with ({info.weights}, sha256 {info.weights_sha256[:12]}...): its "
            "features would mean something else; set model.weights to the same file"
        )


def download_folder(client: S3Client, uri: S3Uri, folder: Path) -> int:
    """Copy every object under ``uri`` into ``folder``, keeping relative paths; returns the count.

    Raises:
        ModelUnavailableError: the prefix cannot be listed or read, or holds nothing.
    """
    count = 0
    try:
        for key in iter_keys(client, uri):
            relative = key[len(uri.prefix) :]
            if not relative or relative.endswith("/"):
                continue
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(read_object(client, S3Uri(uri.bucket, key)))
            count += 1
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
        transfer: ``boto3`` (stage on the driver's disk, upload) or ``hadoop`` (Spark writes S3).
        staging_dir: the parent of the staging folder for ``boto3``; ``None``: the temporary folder.
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
            files = upload_folder(client, local, pipeline_uri)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("uploaded the fitted pipeline (%d files) to %s", files, pipeline_uri)
    # model.json last: a folder without it is not a model (an interrupted save).
    write_object(client, model_uri.join(MODEL_INFO_FILE), json_bytes(info.to_dict()), "application/json")


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
    """
    pipeline_uri = model_uri.join(PIPELINE_DIR)
    if transfer == "hadoop":
        return PipelineModel.load(str(pipeline_uri))
    staging = Path(tempfile.mkdtemp(prefix="fruits-model-", dir=staging_dir))
    try:
        files = download_folder(client, pipeline_uri, staging / PIPELINE_DIR)
        log.info("downloaded the fitted pipeline (%d files) from %s", files, pipeline_uri)
        # Loading reads every stage's data into the driver, so the copy can go right after.
        return PipelineModel.load((staging / PIPELINE_DIR).as_uri())
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_model_transfer(config: JobConfig, master: str) -> None:
    """Refuse to stage a Spark ML model on the driver's disk when executors do not share it.

    Spark ML's writer and reader run Spark jobs: with ``classifier.model_transfer: boto3`` the
    executors write and read the staging folder, which is only the driver's folder in local mode.

    Raises:
        ConfigError: naming the setting and the master.
    """
    if config.classifier.model_transfer == "boto3" and not master.startswith("local"):
        raise ConfigError(
            f"config key 'classifier.model_transfer': boto3 stages the model on the driver's disk, which "
            f"the executors of master {master!r} cannot reach; use hadoop (EMRFS serves s3:// on EMR)"
        )
