"""Standardisation and PCA: a Spark ML pipeline fitted on the featurized rows."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import PCA, StandardScaler
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql.functions import col


@dataclass(frozen=True)
class Reduction:
    """The fitted pipeline and what it keeps of the variance."""

    model: PipelineModel
    k: int

    @property
    def explained_variance(self) -> list[float]:
        """Fraction of the standardized features' variance each component explains."""
        pca = self.model.stages[-1]
        return [float(v) for v in pca.explainedVariance.toArray()]  # type: ignore[attr-defined]

    @property
    def cumulative_variance(self) -> list[float]:
        """Running total of :attr:`explained_variance`."""
        return list(itertools.accumulate(self.explained_variance))


def component_names(k: int) -> list[str]:
    """``pc_1`` ... ``pc_k``."""
    return [f"pc_{i}" for i in range(1, k + 1)]


def fit_reduction(featurized: DataFrame, k: int, features_col: str = "features") -> Reduction:
    """Fit ``StandardScaler(withMean, withStd)`` then ``PCA(k)`` on an ``array<float>`` column.

    Args:
        featurized: rows whose ``features_col`` is non-null; persist it first, since fitting
            passes over it several times.
        k: number of principal components.
        features_col: the column holding the 2048 features.

    Returns:
        The fitted :class:`Reduction`.
    """
    vectors = featurized.select(array_to_vector(col(features_col)).alias("_vector"))
    pipeline = Pipeline(
        stages=[
            StandardScaler(inputCol="_vector", outputCol="_scaled", withMean=True, withStd=True),
            PCA(k=k, inputCol="_scaled", outputCol="_components"),
        ]
    )
    return Reduction(model=pipeline.fit(vectors), k=k)


def reduce_features(featurized: DataFrame, reduction: Reduction, features_col: str = "features") -> DataFrame:
    """Stage: replace ``features_col`` with the columns ``pc_1`` ... ``pc_k`` (doubles)."""
    keep = [c for c in featurized.columns if c != features_col]
    projected = reduction.model.transform(
        featurized.withColumn("_vector", array_to_vector(col(features_col)))
    )
    components = vector_to_array(col("_components"))
    return projected.select(
        *keep,
        *[components.getItem(i).alias(name) for i, name in enumerate(component_names(reduction.k))],
    )
