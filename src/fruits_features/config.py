"""Typed, validated job configuration.

One frozen object is read from ``conf/<target>.yaml``, overridden from the command line
(``--input``, ``--output``, ``--set section.key=value``) and validated before Spark starts.
Every problem surfaces as a :class:`ConfigError` whose one-line message names the key.

Secrets never belong here: S3 is reached through the standard AWS credential chain and the
standard ``AWS_REGION`` / ``AWS_ENDPOINT_URL_S3`` variables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from fruits_features.errors import ConfigError
from fruits_features.storage import IMAGE_EXTENSIONS, S3Uri
from fruits_features.weights import default_onnx_location

IMAGENET = "imagenet"


class _Section(BaseModel):
    # extra="forbid" turns a misspelt key into an error instead of a silently ignored value;
    # strict ints refuse "50" or 50.5 where a count is expected.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _s3_uri(value: str) -> str:
    S3Uri.parse(value)  # raises ValueError with the reason, which pydantic reports under the key
    return value


class InputConfig(_Section):
    """Where the images are listed from."""

    uri: str = Field(description="s3://bucket/prefix/ holding <Class name>/<file> images.")
    extensions: tuple[str, ...] = IMAGE_EXTENSIONS

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


class OutputConfig(_Section):
    """Where results go: ``<uri>/<run id>/``, and how they are encrypted at rest."""

    uri: str = Field(description="s3://bucket/prefix/ under which each run writes its own folder.")
    # The part files' format (features/ and predictions/); rejected.csv and manifest.json stay.
    format: Literal["csv", "parquet"] = "csv"
    # "none" leaves it to the bucket's default encryption (SSE-S3 on every bucket since 2023).
    sse: Literal["none", "AES256", "aws:kms"] = "none"
    kms_key_id: str | None = None

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


class ModelConfig(_Section):
    """The ResNet50 feature extractor and the engine that runs it."""

    weights: str = Field(
        default=IMAGENET,
        description="'imagenet' (Keras download), a local .h5 path, or an s3:// URI.",
    )
    # auto (the default): each executor takes OpenVINO bf16 where its CPU has native bf16 (AMX,
    # AVX-512 BF16) and OpenVINO is installed, ONNX Runtime fp32 elsewhere: the fastest path
    # `make bench` measured on each kind of CPU. onnxruntime: the same model exported to ONNX
    # (make export-onnx), executors that need no TensorFlow. tensorflow: Keras runs the weights
    # directly. openvino: the ONNX file compiled by OpenVINO (fp32 or bf16).
    engine: Literal["tensorflow", "onnxruntime", "openvino", "auto"] = "auto"
    # openvino/auto: fp32, bf16, or auto (bf16 where the CPU has it natively). bf16 features
    # differ from fp32 ones (cosine >= 0.999 per image); tensorflow and onnxruntime run fp32.
    precision: Literal["fp32", "bf16", "auto"] = "auto"
    onnx: str | None = Field(
        default=None,
        description="The ONNX export of the weights (local path or s3:// URI); "
        "unset: next to the weights, '<weights stem>.<image_size>px.onnx'.",
    )
    image_size: Annotated[StrictInt, Field(ge=32, le=1024)] = 224
    batch_size: Annotated[StrictInt, Field(ge=1, le=1024)] = 32
    # 0 means "the cores Spark gives each task" (spark.task.cpus), so that concurrent
    # Python workers do not oversubscribe the CPU.
    threads: Annotated[StrictInt, Field(ge=0, le=256)] = 0
    max_image_pixels: Annotated[StrictInt, Field(ge=1)] = 50_000_000

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
        return self

    @property
    def uses_onnx(self) -> bool:
        """Whether the executors run the ONNX export (every engine but ``tensorflow``)."""
        return self.engine != "tensorflow"

    def onnx_location(self) -> str:
        """The ONNX file the ONNX-based engines run: ``onnx``, or its place next to the weights."""
        return self.onnx or default_onnx_location(self.weights, self.image_size)


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


class PcaConfig(_Section):
    """Standardisation + PCA."""

    # An int: that many components. A float in (0, 1]: the smallest k whose components explain
    # at least that fraction of the standardized features' variance (the manifest records k).
    k: Annotated[int | float, PlainValidator(_check_k)] = 50

    @property
    def variance_target(self) -> float | None:
        """The fraction of variance to keep, or ``None`` when ``k`` is a component count."""
        return float(self.k) if isinstance(self.k, float) else None


class ClassifierConfig(_Section):
    """The optional fruit classifier: multinomial logistic regression on the PCA components."""

    enabled: bool = False
    # Per class: round(train_fraction * n) images train, at least one, and every class with two
    # or more images keeps at least one test image.
    train_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.7
    seed: StrictInt = 42
    reg_param: Annotated[float, Field(ge=0.0)] = 0.003
    elastic_net_param: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    max_iter: Annotated[StrictInt, Field(ge=1, le=10_000)] = 200
    # How the fitted pipeline reaches <run>/model/: "boto3" saves it with Spark's writer to a
    # folder on the driver's disk and uploads it (local mode, one machine: executors share that
    # disk); "hadoop" lets Spark write the s3:// URI itself (EMRFS on EMR; not S3A-less setups).
    model_transfer: Literal["boto3", "hadoop"] = "boto3"
    # Where "boto3" stages the model; none = the system's temporary folder.
    staging_dir: str | None = None


class ReportConfig(_Section):
    """The HTML report written under ``<run>/report/``."""

    enabled: bool = True
    classes: Annotated[StrictInt, Field(ge=1, le=20)] = 10  # most frequent classes in the PC1/PC2 scatter
    points_per_class: Annotated[StrictInt, Field(ge=1, le=5000)] = 200  # at most, collected to the driver
    confused_pairs: Annotated[StrictInt, Field(ge=0, le=32)] = 8  # image pairs in the grid, fetched from S3


class SparkConfig(_Section):
    """Spark settings the job applies to its session."""

    app_name: str = "fruits-features"
    log_level: Literal["ALL", "DEBUG", "INFO", "WARN", "ERROR", "FATAL", "OFF"] = "WARN"
    # 0 means "auto": enough partitions to keep every core busy, none smaller than a batch.
    partitions: Annotated[StrictInt, Field(ge=0)] = 0
    conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("conf", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        # YAML reads `true` and `64` as bool and int; Spark wants every value as a string.
        if isinstance(value, Mapping):
            return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
        return value


class S3Config(_Section):
    """How boto3 talks to S3 (endpoint, region and credentials come from the environment)."""

    retry_mode: Literal["standard", "adaptive", "legacy"] = "standard"
    max_attempts: Annotated[StrictInt, Field(ge=1, le=50)] = 10
    max_pool_connections: Annotated[StrictInt, Field(ge=1, le=1000)] = 16
    # Sent as ExpectedBucketOwner with every request: S3 refuses when the bucket belongs to
    # another account (a deleted and re-created bucket name, a typo).
    expected_bucket_owner: Annotated[str, Field(pattern=r"^[0-9]{12}$")] | None = None

    @field_validator("expected_bucket_owner", mode="before")
    @classmethod
    def _account_id_as_text(cls, value: Any) -> Any:
        # An account id written without quotes (YAML, --set) arrives as a number.
        return f"{value:012d}" if isinstance(value, int) and not isinstance(value, bool) else value

    # Objects fetched at once by each task: S3 latency, not bandwidth, bounds small images.
    fetch_threads: Annotated[StrictInt, Field(ge=1, le=256)] = 8


class JobConfig(_Section):
    """The whole job's configuration."""

    input: InputConfig
    output: OutputConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    pca: PcaConfig = Field(default_factory=PcaConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    s3: S3Config = Field(default_factory=S3Config)
    # A run whose rejected images exceed this fraction of the listed images fails (exit 5, no
    # _SUCCESS); below it, rejects are logged as a warning and listed in rejected.csv.
    max_rejected_fraction: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05
    # The driver logs the progress of every long stage this often (images done, images/s, ETA
    # for the embed stage); 0 turns the lines off.
    progress_interval_seconds: Annotated[float, Field(ge=0.0)] = 15.0

    def to_dict(self) -> dict[str, Any]:
        """The effective configuration as plain JSON-ready data (for the manifest)."""
        return self.model_dump(mode="json")


def _format_validation_error(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<root>"
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "required key is missing"
    elif "input" in first and first["type"] not in {"value_error"}:
        message = f"{message} (got {first['input']!r})"
    more = len(error.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"config key '{key}': {message}{suffix}"


def _parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects section.key=value, got {item!r}")
    # The value is parsed as YAML so that numbers and booleans get their types
    # (`pca.k=10` is an int), while paths and URIs stay strings.
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if value is None or isinstance(value, dict):
        value = raw  # "a: b" in a path is text, not a mapping
    path = key.strip().split(".")
    if path[:2] == ["spark", "conf"] and len(path) > 2:
        # Spark's own keys contain dots: spark.conf.spark.task.cpus=2 sets "spark.task.cpus".
        path = ["spark", "conf", ".".join(path[2:])]
    return path, value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``section.key=value`` override applied.

    Args:
        data: the configuration as read from YAML.
        overrides: items such as ``"model.weights=/path/w.h5"`` or ``"pca.k=10"``.

    Returns:
        A new nested dict; ``data`` is left untouched.

    Raises:
        ConfigError: if an item is not of the form ``key=value`` or walks into a non-section.
    """
    result: dict[str, Any] = _deep_copy(data)
    for item in overrides:
        path, value = _parse_override(item)
        node = result
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"config key '{'.'.join(path)}': '{part}' is not a section")
            node = child
        node[path[-1]] = value
    return result


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a config file into a dict.

    Raises:
        ConfigError: if the file is missing, is not YAML, or is not a mapping.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config file {str(path)!r}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections")
    return data


def build_config(data: Mapping[str, Any]) -> JobConfig:
    """Validate plain data into a :class:`JobConfig`.

    Raises:
        ConfigError: naming the first offending key.
    """
    try:
        return JobConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc)) from exc


def load_config(
    path: Path,
    *,
    input_uri: str | None = None,
    output_uri: str | None = None,
    overrides: Iterable[str] = (),
) -> JobConfig:
    """Read, override and validate the job configuration.

    Args:
        path: the YAML file (``conf/local.yaml``, ``conf/ec2.yaml``, ``conf/emr.yaml``).
        input_uri: replaces ``input.uri`` when given (``--input``).
        output_uri: replaces ``output.uri`` when given (``--output``).
        overrides: ``section.key=value`` items (``--set``), applied last.

    Returns:
        The validated, frozen configuration.

    Raises:
        ConfigError: for a missing file, an unknown key, a wrong type or a malformed URI.
    """
    data = read_yaml(path)
    for section, uri in (("input", input_uri), ("output", output_uri)):
        if uri is None:
            continue
        node = data.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key '{section}': must be a section")
        node["uri"] = uri  # verbatim: a URI is never parsed as YAML
    return build_config(apply_overrides(data, overrides))
