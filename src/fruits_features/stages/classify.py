"""The fruit classifier: a stratified split, multinomial logistic regression on the PCA components,
and its evaluation (accuracy, macro F1, per-class precision and recall, the confusion matrix).

The split and the metrics are plain functions over counts, testable without Spark; Spark does the
per-row work: ranking the images of each class, fitting, predicting, counting (true, predicted)
pairs. Only per-class counts and the ``C x C`` confusion counts reach the driver.

The scaler and PCA are fitted on every featurized image, as the written features are; they never
see a label. The classifier is fitted on the training images only (and, with ``augment.copies``,
their augmented copies: never a copy of a test image) and evaluated on the rest, originals only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pyspark import StorageLevel
from pyspark.ml import PipelineModel, Transformer
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
from pyspark.ml.feature import IndexToString, StringIndexerModel
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from fruits_features.config import ClassifierConfig, JobConfig
from fruits_features.errors import FruitsFeaturesError
from fruits_features.io.labels import with_folder
from fruits_features.io.outputs import METRICS_FILE, MODEL_DIR, PREDICTIONS_DIR, json_bytes, write_parts
from fruits_features.io.s3 import write_object
from fruits_features.stages.metrics import Metrics, classification_metrics, most_confused
from fruits_features.stages.model_store import save_run_model
from fruits_features.stages.reduce import COMPONENTS_COL, Reduction

if TYPE_CHECKING:
    from fruits_features.job_run import JobRun

log = logging.getLogger(__name__)

TRAIN = "train"
TEST = "test"
SPLIT_COL = "split"
PREDICTED_COL = "predicted"
PROBABILITY_COL = "probability"
_LABEL_INDEX_COL = "_label_index"
_PREDICTION_COL = "_prediction"
_PROBABILITIES_COL = "_probabilities"
_RAW_PREDICTION_COL = "_raw_prediction"
_TRAIN_COUNT_COL = "_train_count"
_WEIGHT_COL = "_weight"
# classifier.class_weight auto: balanced past this ratio of the largest class's training images to
# the smallest's (docs/photos.md: what it changed on the dev images).
BALANCE_RATIO = 2.0


class ClassifierError(FruitsFeaturesError):
    """The classifier cannot be trained or evaluated on these images (exit code 1)."""


def train_count(images: int, fraction: float) -> int:
    """How many of a class's ``images`` go to training.

    ``fraction * images`` rounded half up, but at least one (every class is learnt) and, for a
    class of two or more images, at most ``images - 1`` (every such class is evaluated).

    Args:
        images: the class's featurized images.
        fraction: ``classifier.train_fraction``, in (0, 1).

    Returns:
        The number of training images; the rest are test images.
    """
    if images <= 1:
        return images
    wanted = math.floor(fraction * images + 0.5)
    return min(images - 1, max(1, wanted))


def class_weights(train_counts: Mapping[str, int], mode: str) -> dict[str, float] | None:
    """Each class's weight per training image, or ``None`` for none (every image 1).

    Args:
        train_counts: training images per class (augmented copies, as many per image in every
            class, change no ratio).
        mode: ``classifier.class_weight``; ``auto`` is ``balanced`` past :data:`BALANCE_RATIO`.

    Returns:
        ``n / (C x n_c)`` for class ``c`` of ``n_c`` of the ``n`` images in ``C`` classes: every
        class weighs ``n / C`` in all, and the weights sum to ``n``.
    """
    sizes = {label: n for label, n in train_counts.items() if n > 0}
    if mode == "none" or not sizes:
        return None
    if mode == "auto" and max(sizes.values()) <= BALANCE_RATIO * min(sizes.values()):
        return None
    total = sum(sizes.values())
    return {label: total / (len(sizes) * n) for label, n in sorted(sizes.items())}


def stratified_split(
    frame: DataFrame, class_counts: Mapping[str, int], fraction: float, seed: int
) -> DataFrame:
    """Stage: add ``split`` (``train`` or ``test``), :func:`train_count` images of each class training.

    Within a class, images are ordered by a hash of the seed and the path, so the split depends
    only on the seed and the image set, not on partitioning or on the order rows arrive in.

    Args:
        frame: rows with ``path`` and ``label``.
        class_counts: images per label in ``frame``.
        fraction: the training fraction.
        seed: changes the order within each class, hence which images train.
    """
    spark = frame.sparkSession
    quotas = spark.createDataFrame(
        [(label, train_count(count, fraction)) for label, count in sorted(class_counts.items())],
        f"label string, {_TRAIN_COUNT_COL} int",
    )
    order = Window.partitionBy("label").orderBy(F.xxhash64(F.lit(seed), F.col("path")), F.col("path"))
    ranked = frame.join(F.broadcast(quotas), on="label", how="left").withColumn(
        "_rank", F.row_number().over(order)
    )
    split = F.when(F.col("_rank") <= F.col(_TRAIN_COUNT_COL), F.lit(TRAIN)).otherwise(F.lit(TEST))
    return ranked.withColumn(SPLIT_COL, split).select(*frame.columns, SPLIT_COL)


@dataclass(frozen=True)
class TrainedClassifier:
    """The fitted logistic regression and the labels its class indices stand for."""

    model: LogisticRegressionModel
    labels: tuple[str, ...]

    def stages(self) -> list[Transformer]:
        """``COMPONENTS_COL`` -> ``predicted`` (the label) and ``_probabilities`` (a vector).

        Appended to the reduction's stages, these make the saved scoring pipeline.
        """
        to_label = IndexToString(inputCol=_PREDICTION_COL, outputCol=PREDICTED_COL, labels=list(self.labels))
        return [self.model, to_label]


def label_indexer(labels: Sequence[str]) -> StringIndexerModel:
    """``label`` -> ``_label_index``, the position of the label in ``labels``."""
    return StringIndexerModel.from_labels(
        list(labels), inputCol="label", outputCol=_LABEL_INDEX_COL, handleInvalid="error"
    )


def training_rows(split: DataFrame, copies: DataFrame | None = None) -> DataFrame:
    """Stage: the rows the classifier learns from: ``split``'s training rows, and the ``copies``
    (``path`` of their source image, ``label``, ``COMPONENTS_COL``) of those images only.

    A copy follows its source image's split by its path: no copy of a test image is returned.
    """
    training = split.filter(F.col(SPLIT_COL) == TRAIN).select("path", "label", COMPONENTS_COL)
    if copies is None:
        return training
    of_training = copies.join(training.select("path"), on="path", how="left_semi")
    return training.unionByName(of_training.select("path", "label", COMPONENTS_COL))


def train_classifier(
    split: DataFrame,
    labels: Sequence[str],
    config: ClassifierConfig,
    copies: DataFrame | None = None,
    weights: Mapping[str, float] | None = None,
) -> TrainedClassifier:
    """Fit a multinomial logistic regression on the training rows of ``split`` (and their copies).

    Args:
        split: rows with ``label``, ``split`` and ``COMPONENTS_COL``; persist it first, since
            L-BFGS passes over the training rows once per iteration.
        labels: every class, sorted; class ``i`` of the model is ``labels[i]``.
        config: regularisation and iterations.
        copies: augmented copies, see :func:`training_rows`.
        weights: each class's weight per image (:func:`class_weights`); ``None``: 1 each.
    """
    training = label_indexer(labels).transform(training_rows(split, copies))
    weighting: dict[str, Any] = {}
    if weights is not None:
        pairs = [F.lit(value) for item in sorted(weights.items()) for value in item]
        training = training.withColumn(_WEIGHT_COL, F.element_at(F.create_map(*pairs), F.col("label")))
        weighting["weightCol"] = _WEIGHT_COL
    regression = LogisticRegression(
        family="multinomial",
        featuresCol=COMPONENTS_COL,
        labelCol=_LABEL_INDEX_COL,
        predictionCol=_PREDICTION_COL,
        probabilityCol=_PROBABILITIES_COL,
        rawPredictionCol=_RAW_PREDICTION_COL,
        regParam=config.reg_param,
        elasticNetParam=config.elastic_net_param,
        maxIter=config.max_iter,
        **weighting,
    )
    model = regression.fit(training)
    summary = model.summary
    log.info(
        "fitted multinomial logistic regression: %d classes, %d iterations, final loss %.4f",
        len(labels),
        summary.totalIterations,
        summary.objectiveHistory[-1] if summary.objectiveHistory else float("nan"),
    )
    return TrainedClassifier(model=model, labels=tuple(labels))


def with_predictions(frame: DataFrame, stages: Sequence[Transformer]) -> DataFrame:
    """Apply ``stages`` to ``frame`` and keep its columns plus ``predicted`` and ``probability``.

    ``probability`` is the model's probability of the predicted class.
    """
    transformed = frame
    for stage in stages:
        transformed = stage.transform(transformed)
    keep = [c for c in frame.columns if not c.startswith("_")]
    return transformed.select(
        *keep,
        F.col(PREDICTED_COL),
        F.array_max(vector_to_array(F.col(_PROBABILITIES_COL))).alias(PROBABILITY_COL),
    )


def confusion_counts(predictions: DataFrame, labels: Sequence[str]) -> np.ndarray:
    """The test rows' ``C x C`` confusion counts; one row per non-empty cell reaches the driver."""
    index = {label: i for i, label in enumerate(labels)}
    cells = predictions.filter(F.col(SPLIT_COL) == TEST).groupBy("label", PREDICTED_COL).count().collect()
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for row in cells:
        counts[index[row["label"]], index[row[PREDICTED_COL]]] = int(row["count"])
    return counts


@dataclass(frozen=True)
class Evaluation:
    """What the classifier stage produced."""

    classifier: TrainedClassifier
    predictions: DataFrame  # path, label, split, predicted, probability: every image; persisted
    metrics: Metrics
    train_images: int
    untested_classes: tuple[str, ...]  # classes of one image: trained on, never evaluated
    class_weight: str = "none"  # what classifier.class_weight came to: balanced or none


def train_and_evaluate(
    projected: DataFrame,
    class_counts: Mapping[str, int],
    config: ClassifierConfig,
    copies: DataFrame | None = None,
) -> Evaluation:
    """Split, fit on the training rows, predict every row, evaluate on the test rows.

    Args:
        projected: ``path, label, COMPONENTS_COL`` for every featurized image; persisted by the
            caller (the split, the fit and the predictions each pass over it).
        class_counts: images per label.
        config: the ``classifier`` section.
        copies: augmented copies (``path, label, COMPONENTS_COL``): those of training images train too.

    Returns:
        The classifier, the predictions (persisted: the caller unpersists them) and the metrics.

    Raises:
        ClassifierError: fewer than two classes, or no class with two images to test on.
    """
    labels = sorted(class_counts)
    if len(labels) < 2:
        raise ClassifierError(f"a classifier needs at least two classes, found {len(labels)}: {labels}")
    quotas = {label: train_count(n, config.train_fraction) for label, n in class_counts.items()}
    train_images = sum(quotas.values())
    if train_images == sum(class_counts.values()):
        raise ClassifierError("no class has two or more images: nothing is left to test the classifier on")
    untested = tuple(label for label in labels if class_counts[label] == quotas[label])
    if untested:
        log.warning(
            "%d classes have a single image, used for training only: %s", len(untested), list(untested)
        )

    weights = class_weights(quotas, config.class_weight)
    if weights is not None:
        log.info(
            "class weights balanced (classifier.class_weight %s): %.3g to %.3g per image",
            config.class_weight,
            min(weights.values()),
            max(weights.values()),
        )
    split = stratified_split(projected, class_counts, config.train_fraction, config.seed)
    classifier = train_classifier(split, labels, config, copies, weights)
    # Persisted: counted here, then written and sampled for the report.
    predictions = with_predictions(split, classifier.stages()).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        metrics = classification_metrics(labels, confusion_counts(predictions, labels))
    except BaseException:
        predictions.unpersist()
        raise
    log.info(
        "classifier on %d test images of %d classes: accuracy %.3f, macro F1 %.3f",
        metrics.test_images,
        len(labels),
        metrics.accuracy,
        metrics.macro_f1,
    )
    return Evaluation(
        classifier=classifier,
        predictions=predictions,
        metrics=metrics,
        train_images=train_images,
        untested_classes=untested,
        class_weight="none" if weights is None else "balanced",
    )


def class_counts(featurized: DataFrame) -> dict[str, int]:
    """Featurized images per label (one row per class reaches the driver)."""
    return {row["label"]: int(row["count"]) for row in featurized.groupBy("label").count().collect()}


def run_classifier(
    job: JobRun,
    config: JobConfig,
    *,
    reduction: Reduction,
    projected: DataFrame,
    classes: dict[str, int],
    copies: DataFrame | None = None,
) -> tuple[Evaluation | None, dict[str, Any]]:
    """Train, evaluate, write predictions and metrics, save the scoring pipeline.

    Returns:
        The evaluation (its predictions persisted: the caller unpersists them), or ``None`` when
        these images cannot train a classifier; and the manifest's ``classifier`` section.
    """
    timer, run_uri = job.timer, job.uri
    section: dict[str, Any] = {
        "train_fraction": config.classifier.train_fraction,
        "seed": config.classifier.seed,
    }
    try:
        with timer.stage("classifier"):
            evaluation = train_and_evaluate(projected, classes, config.classifier, copies)
    except ClassifierError as exc:
        log.warning("classifier skipped: %s", exc)
        return None, {"status": "skipped", "reason": str(exc), **section}
    try:
        metrics = evaluation.metrics
        confusions = most_confused(metrics.labels, metrics.confusion, 10)
        with timer.stage("predictions"):
            predictions = with_folder(evaluation.predictions, config.labels, config.input_uri)
            parts = write_parts(predictions, run_uri, job.settings, PREDICTIONS_DIR, config.output.format)
            metrics_body = {
                **metrics.to_dict(),
                "labels": list(metrics.labels),
                "confusion": metrics.confusion.tolist(),
                "most_confused": [asdict(c) for c in most_confused(metrics.labels, metrics.confusion, 50)],
            }
            write_object(job.client, run_uri.join(METRICS_FILE), json_bytes(metrics_body), "application/json")
        with timer.stage("model_save"):
            save_run_model(
                job,
                config,
                PipelineModel(stages=[*reduction.model.stages, *evaluation.classifier.stages()]),
                k=reduction.k,
                variance_target=reduction.variance_target,
                labels=evaluation.classifier.labels,
            )
    except BaseException:
        evaluation.predictions.unpersist()
        raise
    section.update(
        status="trained",
        classes=len(metrics.labels),
        class_weight=evaluation.class_weight,
        train_images=evaluation.train_images,
        # each training image's augmented copies trained beside it (augment.copies)
        train_copies=evaluation.train_images * config.augment.copies if copies is not None else 0,
        test_images=metrics.test_images,
        accuracy=metrics.accuracy,
        macro_f1=metrics.macro_f1,
        untested_classes=list(evaluation.untested_classes),
        most_confused=[asdict(c) for c in confusions],
        per_class=metrics.to_dict()["per_class"],
        prediction_files=len(parts),
        model=str(run_uri.join(MODEL_DIR)) + "/",
        metrics=str(run_uri.join(METRICS_FILE)),
        predictions=str(run_uri.join(PREDICTIONS_DIR)) + "/",
    )
    log.info(
        "classifier: accuracy %.3f, macro F1 %.3f on %d test images; model saved under %s",
        metrics.accuracy,
        metrics.macro_f1,
        metrics.test_images,
        section["model"],
    )
    return evaluation, section
