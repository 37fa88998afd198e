"""The sections of the job's configuration beside the input, the output, the model and the PCA: the
labels and the classifier, the report, Spark, S3, incremental runs and augmentation; and the base
every section shares.

:mod:`fruits_features.config` assembles them into :class:`~fruits_features.config.JobConfig`
(and re-exports them); like it, this module does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator, model_validator


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


class ClassifierConfig(Section):
    """The optional fruit classifier: multinomial logistic regression on the PCA components."""

    enabled: bool = Field(
        False, description="Train, evaluate and save the classifier (`true` in `conf/local.yaml`)."
    )
    train_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        0.7,
        description="Per class, `round(fraction x images)` images train (half up), at least one; every class "
        "with two images or more keeps at least one test image; a class of one image trains only (listed in "
        "`untested_classes`).",
    )
    seed: StrictInt = Field(
        42,
        description="Which images of each class train: images are ordered by a hash of the seed and the "
        "path, so the split does not depend on partitioning.",
    )
    reg_param: Annotated[float, Field(ge=0.0)] = Field(
        0.003,
        description="L2 regularisation (Spark's `regParam`), chosen by 5-fold cross-validation on the "
        "training images of the dev set; a sweep on backgrounds and photo-like scenes for the fruit-level "
        "model found nothing better (docs/photos.md).",
    )
    elastic_net_param: Annotated[float, Field(ge=0.0, le=1.0)] = Field(0.0, description="0 = L2, 1 = L1.")
    class_weight: Literal["auto", "balanced", "none"] = Field(
        "auto",
        description="Each training image's weight in the fit. `balanced`: `n / (classes x n_c)` for an "
        "image of a class of `n_c` of the `n` training images, so that every class weighs the same (13 "
        "apple varieties no longer pull a doubtful image toward `Apple`); `none`: 1 each. `auto`: "
        "`balanced` where the largest class has more than twice the training images of the smallest, "
        "`none` otherwise (docs/photos.md gives the measurement). The manifest says which was used.",
    )
    max_iter: Annotated[StrictInt, Field(ge=1, le=10_000)] = Field(
        200, description="L-BFGS iterations at most."
    )
    model_transfer: Literal["boto3", "hadoop"] = Field(
        "boto3",
        description="How the fitted pipeline reaches `<run>/model/` and back: `boto3` saves it with Spark's "
        "writer to a staging folder, checks that the driver sees every file, and uploads it (local mode, one "
        "EC2 machine; any other master needs `staging_dir`); `hadoop` lets Spark write and read the `s3://` "
        "URI itself (EMRFS on EMR).",
    )
    staging_dir: str | None = Field(
        None,
        description="Where `boto3` stages the model; unset: the temporary folder, but refused (exit 2) with "
        "a master other than `local[...]`, whose executors write and read it: there, an absolute path that "
        "the driver and every executor see as one folder (a shared mount; any folder when the workers run on "
        "the driver's machine). A save whose files the driver does not find there fails, naming this key.",
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

# What a fruit-level model (labels.rule: fruit) is trained with, for every augment key the
# configuration leaves out, in a full run (an incremental run does not augment): the steps that
# helped on photo-like scenes, one at a time (docs/photos.md, make bench-robustness).
FRUIT_MODEL_AUGMENT: dict[str, Any] = {"copies": 1, "scale": 1.0, "min_scale": 0.4, "blur": 1.0}


class AugmentConfig(Section):
    """Augmented copies of every image, embedded beside it: the fruit off Fruits 360's white."""

    copies: Annotated[StrictInt, Field(ge=0, le=16)] = Field(
        0,
        description="Augmented copies per image; `0`: none (augmentation off; with `labels.rule: fruit`, "
        "every `augment` key left out takes the photo augmentation of docs/photos.md). The executors make "
        "each copy "
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
    # The photo-like steps (issue 34): drawn from a second generator of the same seed, path and copy,
    # so that with them off a copy is the same pixels as before they existed.
    texture: Probability = Field(
        0.0,
        description="Probability that the new background (when `background` applies) is a cluttered "
        "texture (blobs, stripes and shapes in several colours at several scales) instead of the smooth "
        "colour field.",
    )
    cut: Probability = Field(
        0.0,
        description="Probability that the fruit, once `scale` has placed it, lies partly outside the frame "
        "(up to `cut_fraction` of its width or height), as a photo's frame cuts a fruit.",
    )
    cut_fraction: Annotated[float, Field(gt=0.0, lt=1.0)] = Field(
        0.3, description="The most of the fruit that `cut` puts outside the frame."
    )
    several: Probability = Field(
        0.0,
        description="Probability of a second fruit: a smaller, mirrored copy of the same fruit behind it.",
    )
    shadow: Probability = Field(
        0.0, description="Probability of a soft contact shadow on the background under the fruit."
    )
    light: Probability = Field(
        0.0,
        description="Probability that light falls off across the frame: the pixels scaled by a ramp from "
        "0.6-0.8 to 1.0-1.2 in a random direction.",
    )
    blur: Probability = Field(0.0, description="Probability of a Gaussian blur (see `blur_radius`).")
    blur_radius: Annotated[float, Field(gt=0.0, le=10.0)] = Field(
        1.5, description="The largest blur radius, in pixels of the model's input; each blur draws up to it."
    )
    jpeg: Probability = Field(
        0.0,
        description="Probability that the copy is JPEG-compressed at a quality drawn from `jpeg_quality` "
        "to 95 (the blocks and ringing of phone and web photos).",
    )
    jpeg_quality: Annotated[StrictInt, Field(ge=5, le=95)] = Field(
        40, description="The lowest JPEG quality `jpeg` draws."
    )


class LabelsConfig(Section):
    """The label each image is learnt and scored by: its class folder, or the fruit the folder names."""

    rule: Literal["folder", "fruit", "table"] = Field(
        "folder",
        description="`folder`: the class folder's name (`Apple Braeburn`). `fruit`: the fruit it names, "
        "the first word capitalised (`Apple Braeburn` -> `Apple`, `Tomato Cherry Red` -> `Tomato`), except "
        "the Fruits 360 classes whose first word is not the fruit (`Potato Sweet` -> `Sweet Potato`, "
        "`Passion Fruit`, `Maracuja` -> `Passion Fruit`; docs/outputs.md lists them). `table`: `table`'s "
        "entry only, and a listed folder it does not name is refused before any image is embedded (a "
        'scoring run labels it `""`). With `fruit` or `table`, `features/` and `predictions/` keep the '
        "folder beside the label (`folder`), and the classifier, its report and a scoring run's summary "
        "count the label. `fruit` is the model for photos: a full run also takes the photo augmentation "
        "for every `augment` key left out (docs/photos.md).",
    )
    table: dict[str, str] = Field(
        default_factory=dict,
        description='Folder name -> label, applied before `rule` (`{"Nut Forest": Hazelnut}`); '
        "the only mapping with `rule: table`.",
    )

    @field_validator("table")
    @classmethod
    def _check_table(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [
            f"{folder!r}: {label!r}"
            for folder, label in value.items()
            if not folder.strip() or "/" in folder or not label.strip()
        ]
        if bad:
            raise ValueError(
                f"folder names are non-empty, with no '/', and labels non-empty: {', '.join(bad)}"
            )
        return value

    @model_validator(mode="after")
    def _table_rule_needs_table(self) -> LabelsConfig:
        if self.rule == "table" and not self.table:
            raise ValueError("labels.rule 'table' needs labels.table: folder name -> label")
        return self
