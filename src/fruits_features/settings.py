"""What each layer takes, built from the validated config: boto3 settings and the executors' model spec.

No Spark and no I/O: the ONNX export tool and the deploy commands build their S3 settings here too.
"""

from __future__ import annotations

from fruits_features.config import JobConfig
from fruits_features.features.augment import AugmentSpec
from fruits_features.features.engines import EmbedSpec
from fruits_features.io.s3 import S3Settings


def s3_settings(config: JobConfig) -> S3Settings:
    """The boto3 settings for this job's clients, on the driver and the executors."""
    return S3Settings(
        retry_mode=config.s3.retry_mode,
        max_attempts=config.s3.max_attempts,
        max_pool_connections=config.s3.max_pool_connections,
        expected_bucket_owner=config.s3.expected_bucket_owner,
        sse=config.output.sse,
        sse_kms_key_id=config.output.kms_key_id,
    )


def embed_spec(config: JobConfig, s3: S3Settings) -> EmbedSpec:
    """The model settings shipped to the executors, with the run's S3 settings."""
    return EmbedSpec(
        weights=config.model.weights,
        image_size=config.model.image_size,
        batch_size=config.model.batch_size,
        threads=config.model.threads,
        max_image_pixels=config.model.max_image_pixels,
        s3=s3,
        engine=config.model.engine,
        onnx=config.model.onnx_location() if config.model.uses_onnx else None,
        precision=config.model.precision,
        backbone=config.model.backbone,
    )


def augment_spec(config: JobConfig) -> AugmentSpec | None:
    """The augmented copies the executors make (``augment``), or ``None`` when ``augment.copies`` is 0."""
    return config.augment if config.augment.copies else None
