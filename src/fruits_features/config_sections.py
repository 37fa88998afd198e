"""The sections of the job's configuration beside the model, the PCA and the classifier: the
report, Spark, S3, incremental runs and augmentation; and the base every section shares.

:mod:`fruits_features.config` assembles them into :class:`~fruits_features.config.JobConfig`
(and re-exports them); like it, this module does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator


class Section(BaseModel):
    """A configuration section: frozen, and an unknown key is an error."""

    # extra="forbid" turns a misspelt key into an error instead of a silently ignored value;
    # strict ints refuse "50" or 50.5 where a count is expected.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReportConfig(Section):
    """The HTML report written under ``<run>/report/``."""

    enabled: bool = Field(True, description="Write `<run>/report/`: `index.html` and its PNGs.")
    classes: Annotated[StrictInt, Field(ge=1, le=20)] = Field(
        10,
        description="Classes in the PC1/PC2 scatter, chosen to show the spread: the most frequent first, "
        "then each time the class whose mean (PC1, PC2) is farthest from those chosen (ties by name).",
    )
    points_per_class: Annotated[StrictInt, Field(ge=1, le=5000)] = Field(
        200, description="At most this many points per class reach the driver for the scatter."
    )
    confused_pairs: Annotated[StrictInt, Field(ge=0, le=32)] = Field(
        8,
        description="Most-confused (true, predicted) cells shown as image pairs; the driver reads two "
        "thumbnails each from S3.",
    )


class SparkConfig(Section):
    """Spark settings the job applies to its session."""

    app_name: str = Field("fruits-features", description="The Spark application's name.")
    log_level: Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"] = Field(
        "WARN",
        description="Spark's log level. At `WARN` and above the project's log4j2 settings keep Spark's "
        "start-up INFO lines off the console; at `INFO`, `DEBUG` or `ALL` (`--verbose`) Spark logs as it "
        "comes.",
    )
    partitions: Annotated[StrictInt, Field(ge=0)] = Field(
        0,
        description="Partitions of the image list; `0`: one per core (measured best on one machine), none "
        "smaller than a model batch.",
    )
    conf: dict[str, str] = Field(
        default_factory=dict,
        description="Spark settings applied to the session, as strings (driver memory goes on the "
        "`spark-submit` line instead).",
    )

    @field_validator("conf", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        # YAML reads `true` and `64` as bool and int; Spark wants every value as a string.
        if isinstance(value, Mapping):
            return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
        return value


class S3Config(Section):
    """How boto3 talks to S3 (endpoint, region and credentials come from the environment)."""

    retry_mode: Literal["standard", "adaptive", "legacy"] = Field(
        "standard",
        description="boto3's retry mode; `standard` and `adaptive` retry throttling (503 SlowDown), 5xx "
        "errors and dropped connections with exponential backoff; `adaptive` also slows its own requests.",
    )
    max_attempts: Annotated[StrictInt, Field(ge=1, le=50)] = Field(
        10, description="boto3 attempts per request, the first included."
    )
    max_pool_connections: Annotated[StrictInt, Field(ge=1, le=1000)] = Field(
        16, description="Connections each boto3 client keeps open."
    )
    expected_bucket_owner: Annotated[str, Field(pattern=r"^[0-9]{12}$")] | None = Field(
        None,
        description="A 12-digit account id sent as `ExpectedBucketOwner` with every request: S3 refuses when "
        "a bucket (input, output, model files) belongs to another account.",
    )

    @field_validator("expected_bucket_owner", mode="before")
    @classmethod
    def _account_id_as_text(cls, value: Any) -> Any:
        # An account id written without quotes (YAML, --set) arrives as a number.
        return f"{value:012d}" if isinstance(value, int) and not isinstance(value, bool) else value

    fetch_threads: Annotated[StrictInt, Field(ge=1, le=256)] = Field(
        8, description="Objects each task reads at once: S3 latency, not bandwidth, bounds small images."
    )


class IncrementalConfig(Section):
    """An incremental run: featurize only what a previous run has not."""

    previous_run: str | None = Field(
        None,
        description="A run id under `output.uri`, or the `s3://` URI of a run folder, written with "
        "`output.incremental_base`: only the images it does not hold (new keys, or an ETag that changed) "
        "are featurized; the images no longer listed are left out. Unset: a full run.",
    )
    mode: Literal["apply", "refit"] = Field(
        "apply",
        description="`apply`: the previous run's scaler + PCA (+ classifier) project the new images, and the "
        "unchanged ones keep their components exactly, so every row is comparable with the previous run. "
        "`refit`: StandardScaler + PCA (+ classifier) are fitted again on all the images, the unchanged "
        "ones from the previous run's `embeddings/`.",
    )


Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class AugmentConfig(Section):
    """Augmented copies of every image, embedded beside it: the fruit off Fruits 360's white."""

    copies: Annotated[StrictInt, Field(ge=0, le=16)] = Field(
        0,
        description="Augmented copies per image; `0`: none (augmentation off). The executors make each copy "
        "between decoding and the model, in the same task. `features/` keeps one row per listed image; the "
        "copies' components go to `augmented/` (`path` of the source image, `copy` 1, 2, ...) and, with "
        "`output.incremental_base`, their features to `embeddings/` (`copy` > 0). The PCA is fitted on the "
        "originals only; the classifier trains on its training images and their copies and is tested on "
        "untouched originals.",
    )
    seed: StrictInt = Field(
        0,
        description="With the image's path and the copy number, decides every random draw: a rerun or a "
        "retried task gives the same pixels.",
    )
    background: Probability = Field(
        1.0,
        description="Probability that a copy's background (near-white, see `white_threshold`) becomes a "
        "smooth random colour field with noise.",
    )
    white_threshold: Annotated[StrictInt, Field(ge=1, le=255)] = Field(
        230, description="A pixel whose three channels are all at least this is background."
    )
    feather: Annotated[float, Field(ge=0.0, le=10.0)] = Field(
        1.5, description="The fruit mask's edge softening: a Gaussian radius, in pixels."
    )
    scale: Probability = Field(
        0.0, description="Probability that the fruit is shrunk (see `min_scale`) and moved within the frame."
    )
    min_scale: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.6, description="The smallest scale of the fruit when `scale` applies."
    )
    colour: Probability = Field(
        0.0, description="Probability that brightness, contrast and saturation are jittered."
    )
    colour_strength: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.3, description="How far each of them moves: a factor in `[1 - s, 1 + s]`."
    )
    equalize: Probability = Field(0.0, description="Probability of histogram equalisation.")
    noise: Probability = Field(0.0, description="Probability of Gaussian noise (see `noise_sigma`).")
    noise_sigma: Annotated[float, Field(ge=0.0, le=64.0)] = Field(
        8.0, description="The noise's standard deviation, in grey levels."
    )
