"""Standardisation and PCA: a Spark ML pipeline fitted on the featurized rows.

The fit is one pass of blockwise moments (:mod:`fruits_features.stages.pca_fit`) built into Spark
ML's own ``StandardScalerModel`` and ``PCAModel``: the same pipeline model as
``Pipeline([StandardScaler, PCA]).fit`` gives, saved and reloaded the same way, in a fraction of
its time.

``pca.k`` is either a number of components or a variance target. For a target, the decomposition
keeps every component the data can have (min(rows, features)), the smallest k reaching the target
is chosen from the explained variances, and a ``VectorSlicer`` keeps only those k: the transform,
the CSV and a saved model all carry k columns, with no second fit.

A principal component is defined up to its sign, and the sign an eigensolver returns is not
stable: LAPACK is free to return any component negated, and partial sums added in another order
(another partitioning) differ in their last bits. A sign convention fixes it after the fit
(scikit-learn's ``svd_flip``): each component is negated where needed so that its
largest-magnitude loading is positive. The signs are an ``ElementwiseProduct`` stage of the fitted
pipeline itself, right after the PCA, so a saved model, the scoring job and an incremental
``apply`` project exactly as the fit did.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.ml.feature import ElementwiseProduct, PCAModel, VectorSlicer
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.linalg import DenseVector
from pyspark.sql import DataFrame
from pyspark.sql.functions import col

from fruits_features.stages.pca_fit import built_models, fit_moments, standardized_pca

VECTOR_COL = "_vector"  # the pipeline's input: array_to_vector(features)
COMPONENTS_COL = "_components"  # its output: the k kept components, a vector
_SCALED_COL = "_scaled"
_PCA_COL = "_pca"  # the PCA's output, each component with the sign the SVD happened to give it
_ALL_COMPONENTS_COL = "_all_components"

# Cumulative variances are sums of floats: 0.1 + 0.2 + ... may land a hair under a target it
# reaches exactly. Targets are met within this tolerance.
_VARIANCE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Reduction:
    """The fitted pipeline (``VECTOR_COL`` in, ``COMPONENTS_COL`` out) and what it keeps.

    Attributes:
        model: StandardScaler, PCA, the sign convention (:func:`component_signs`) and, for a
            variance target, the slicer keeping k components.
        k: the number of components kept.
        variance_target: the fraction of variance asked for, or ``None`` when k was given.
    """

    model: PipelineModel
    k: int
    variance_target: float | None = None

    @property
    def spectrum(self) -> list[float]:
        """Explained variance of every component the PCA computed (k, or all for a target)."""
        pca = self.model.stages[1]
        if not isinstance(pca, PCAModel):
            raise TypeError(f"expected the second stage to be a PCAModel, got {type(pca).__name__}")
        return [float(v) for v in pca.explainedVariance.toArray()]

    @property
    def explained_variance(self) -> list[float]:
        """Fraction of the standardized features' variance each kept component explains."""
        return self.spectrum[: self.k]

    @property
    def cumulative_variance(self) -> list[float]:
        """Running total of :attr:`explained_variance`."""
        return list(itertools.accumulate(self.explained_variance))


def component_names(k: int) -> list[str]:
    """``pc_1`` ... ``pc_k``."""
    return [f"pc_{i}" for i in range(1, k + 1)]


def component_signs(loadings: np.ndarray) -> np.ndarray:
    """+1 or -1 per component: the sign that makes its largest-magnitude loading positive.

    Args:
        loadings: ``(d, k)``, one column per principal component (``PCAModel.pc``).

    Returns:
        ``(k,)`` float64 of +1.0 and -1.0; a column of zeros keeps +1. The rule depends only on
        the component, never on how the fit summed: scikit-learn's ``svd_flip``, by columns.
    """
    if loadings.ndim != 2:
        raise ValueError(f"loadings are a (d, k) matrix, got shape {loadings.shape}")
    if loadings.shape[1] == 0:
        return np.ones(0)
    largest = loadings[np.argmax(np.abs(loadings), axis=0), np.arange(loadings.shape[1])]
    return np.where(largest < 0, -1.0, 1.0)


def sign_stage(pca: PCAModel, output_col: str) -> ElementwiseProduct:
    """The sign convention for a fitted ``pca``: its output times :func:`component_signs`."""
    signs = component_signs(pca.pc.toArray())
    return ElementwiseProduct(
        scalingVec=DenseVector(signs), inputCol=pca.getOutputCol(), outputCol=output_col
    )


def components_for_variance(explained: Sequence[float], target: float) -> int:
    """The smallest k whose first k components explain at least ``target`` of the variance.

    Args:
        explained: each component's fraction of the variance, largest first.
        target: the fraction to reach, in (0, 1].

    Returns:
        k; all of ``explained`` when even their sum falls short (the rest of the variance is
        in components the data cannot have, e.g. beyond its rank).

    Raises:
        ValueError: for a target outside (0, 1] or no components at all.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"a variance target is in (0, 1], got {target}")
    if not explained:
        raise ValueError("no explained variances to choose k from")
    for k, total in enumerate(itertools.accumulate(explained), start=1):
        if total >= target - _VARIANCE_TOLERANCE:
            return k
    return len(explained)


def fit_reduction(
    featurized: DataFrame,
    k: int | float,
    features_col: str = "features",
) -> Reduction:
    """Fit ``StandardScaler(withMean, withStd)`` then PCA on an ``array<float>`` column.

    Args:
        featurized: rows whose ``features_col`` is non-null; persist it first (the fit passes over
            it once, and the caller projects it after).
        k: an int, the number of components; or a float in (0, 1], the variance target.
        features_col: the column holding the features (2048 for ResNet50, 1280 for EfficientNet-Lite2).

    Returns:
        The fitted :class:`Reduction`, with k components kept.

    Raises:
        ValueError: for fewer than two rows, or k beyond the features' length.
    """
    moments = fit_moments(featurized, features_col)
    if isinstance(k, int):
        scaler_model, pca_model = built_models(
            standardized_pca(moments, k), VECTOR_COL, _SCALED_COL, _PCA_COL
        )
        signs = sign_stage(pca_model, COMPONENTS_COL)
        return Reduction(model=PipelineModel(stages=[scaler_model, pca_model, signs]), k=k)

    # n rows span at most n dimensions: components beyond min(n, d) explain nothing.
    full = min(moments.rows, moments.sums.size)
    scaler_model, pca_model = built_models(standardized_pca(moments, full), VECTOR_COL, _SCALED_COL, _PCA_COL)
    signs = sign_stage(pca_model, _ALL_COMPONENTS_COL)
    explained = [float(v) for v in pca_model.explainedVariance.toArray()]
    chosen = components_for_variance(explained, k)
    slicer = VectorSlicer(inputCol=_ALL_COMPONENTS_COL, outputCol=COMPONENTS_COL, indices=list(range(chosen)))
    return Reduction(
        model=PipelineModel(stages=[scaler_model, pca_model, signs, slicer]),
        k=chosen,
        variance_target=float(k),
    )


def project(featurized: DataFrame, reduction: Reduction, features_col: str = "features") -> DataFrame:
    """Stage: replace ``features_col`` with ``COMPONENTS_COL``, a vector of the k components."""
    keep = [c for c in featurized.columns if c != features_col]
    projected = reduction.model.transform(
        featurized.withColumn(VECTOR_COL, array_to_vector(col(features_col)))
    )
    return projected.select(*keep, COMPONENTS_COL)


def components_to_columns(projected: DataFrame, k: int) -> DataFrame:
    """Stage: replace ``COMPONENTS_COL`` with the columns ``pc_1`` ... ``pc_k`` (doubles)."""
    keep = [c for c in projected.columns if c != COMPONENTS_COL]
    components = vector_to_array(col(COMPONENTS_COL))
    return projected.select(
        *keep,
        *[components.getItem(i).alias(name) for i, name in enumerate(component_names(k))],
    )


def reduce_features(featurized: DataFrame, reduction: Reduction, features_col: str = "features") -> DataFrame:
    """Stage: replace ``features_col`` with the columns ``pc_1`` ... ``pc_k`` (doubles)."""
    return components_to_columns(project(featurized, reduction, features_col), reduction.k)
