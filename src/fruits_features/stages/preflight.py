"""The checks before any Spark work: list the input (on the driver or the executors, as
``input.listing`` says), make sure the model files can be had and agree, and that the run's folder
is empty; cheap, so that a bad input or setting fails in seconds, not after the embed stage.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

from pyspark.sql import SparkSession

from fruits_features.config import JobConfig
from fruits_features.errors import ConfigError, InputError
from fruits_features.features.model_files import check_weights
from fruits_features.features.onnx_export import check_onnx
from fruits_features.io.inventory import list_images_from_files
from fruits_features.io.labels import keeps_folder, resolve_labels
from fruits_features.io.listing import Listing, list_images
from fruits_features.io.parallel_listing import list_images_in_parallel
from fruits_features.io.s3 import S3Settings, check_output_writable
from fruits_features.io.uri import S3Uri
from fruits_features.manifest import EngineSection

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from fruits_features.job_run import JobRun

log = logging.getLogger(__name__)


def check_model(config: JobConfig, settings: S3Settings) -> EngineSection:
    """Make sure the engine's model files can be had and agree; the manifest's ``model`` section.

    Raises:
        WeightsUnavailableError: ``model.weights`` (or the ONNX file) cannot be had.
        OnnxMismatchError: the ONNX file was exported for another backbone or size, or from other weights.
    """
    model = config.model
    network = model.network
    check_weights(model.weights, settings, network)
    if model.engine == "tensorflow":
        if importlib.util.find_spec("tensorflow") is None:
            raise ConfigError(
                "model.engine=tensorflow, but TensorFlow is not installed: install the 'tensorflow' "
                "extra (pip install 'fruits-features[tensorflow]') or use model.engine=onnxruntime"
            )
        return EngineSection(engine=model.engine, backbone=network.describe())
    if model.engine == "openvino" and importlib.util.find_spec("openvino") is None:
        raise ConfigError(
            "model.engine=openvino, but OpenVINO is not installed: install the 'openvino' extra "
            "(pip install 'fruits-features[openvino]') or use model.engine=auto or onnxruntime"
        )
    location = model.onnx_location()
    info = check_onnx(location, model.weights, model.image_size, settings, network)
    log.info(
        "ONNX model %s: %s exported from %s, %dpx", location, network.title, info.weights, info.image_size
    )
    return EngineSection(
        engine=model.engine,
        backbone=network.describe(),
        precision=model.precision,
        onnx=location,
        onnx_export=asdict(info),
    )


def list_input(
    spark: SparkSession | None,
    client: S3Client,
    settings: S3Settings,
    config: JobConfig,
    *,
    labelled_only: bool,
) -> Listing:
    """The images under ``input.uri``, found as ``input.listing`` says: on the driver
    (``sequential``), or on the executors (``parallel``, ``inventory``, ``key_list``).

    Raises:
        InputError: the prefix, the report or the list cannot be read.
        InventoryError: the report or the list is malformed.
    """
    uri = S3Uri.parse(config.input.uri)
    mode = config.input.listing
    extensions = config.input.extensions
    if mode == "sequential":
        return list_images(client, uri, extensions, labelled_only=labelled_only)
    if spark is None:
        raise ValueError(f"input.listing {mode} needs the Spark session")
    if mode == "parallel":
        return list_images_in_parallel(spark, client, settings, uri, extensions, labelled_only=labelled_only)
    source = S3Uri.parse((config.input.inventory if mode == "inventory" else config.input.key_list) or "")
    return list_images_from_files(
        spark, client, settings, uri, source, kind=mode, extensions=extensions, labelled_only=labelled_only
    )


@dataclass(frozen=True)
class Preflight:
    """What the checks before any Spark work found: the images, and the model to embed them with."""

    listing: Listing
    model: EngineSection  # the manifest's ``model`` section, see :func:`check_model`


def preflight(job: JobRun, config: JobConfig, *, labelled_only: bool = True) -> Preflight:
    """Everything that can be checked cheaply, before Spark does any heavy work; sets the
    manifest's ``model`` section.

    Args:
        job: the run; its folder must be empty, its timer records the ``list`` and ``preflight``
            stages.
        config: the job's configuration.
        labelled_only: list only images in class folders (the feature job), or any image (scoring).

    Returns:
        The images listed under ``input.uri`` (labelled as ``labels`` says) and the checked model
        files.

    Raises:
        InputError: the input cannot be listed or holds no images.
        InventoryError: the inventory report or key list is malformed.
        UnknownClassesError: ``labels.rule: table`` and a listed folder that the table does not name
            (the feature job only).
        OutputError: the output cannot be listed or the run's folder is not empty.
        WeightsUnavailableError: ``model.weights`` or ``model.onnx`` cannot be had.
        OnnxMismatchError: the ONNX file was exported for another backbone or size, or from other weights.
    """
    input_uri = S3Uri.parse(config.input.uri)
    with job.timer.stage("list"):
        listing = list_input(job.spark, job.client, job.settings, config, labelled_only=labelled_only)
    log.info(
        "listed %d keys under %s: %d images, %d other keys skipped",
        listing.keys_listed,
        input_uri,
        listing.count,
        listing.skipped,
    )
    try:
        if not listing.count:
            raise InputError(
                f"no images ({', '.join(config.input.extensions)}) in class folders under {input_uri} "
                f"({listing.keys_listed} keys listed)"
            )
        with job.timer.stage("preflight"):
            if not keeps_folder(config.labels):
                labels = resolve_labels(config.labels, listing.folders(), unknown_allowed=not labelled_only)
                listing = replace(listing, labels=labels)
                job.manifest.labels = labels.section()
            check_output_writable(job.client, job.uri)
            model = check_model(config, job.settings)
    except BaseException:
        if listing.frame is not None:  # a parallel listing's keys: released with the run that failed
            listing.frame.unpersist()
        raise
    job.manifest.model = model
    return Preflight(listing, model)
