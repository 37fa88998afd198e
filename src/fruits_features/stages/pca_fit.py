"""The StandardScaler + PCA fit from one pass of blockwise moments, built as Spark ML's own models.

Spark ML fits the pair in two passes over the rows: ``StandardScaler`` summarises the columns,
then ``PCA`` builds the covariance of the scaled rows one row at a time (a packed rank-1 update per
row, ``RowMatrix.computeGramianMatrix``) before one SVD on the driver. At 2048 features that row
loop is most of the fit. Here each partition turns its rows into a ``(rows, d)`` block and adds
``Xᵀ X`` with one BLAS call (:func:`block_moments`); the partial sums come to the driver in one
Arrow collect, or meet in a tree on the executors when there are many partitions; the driver
derives the scaler's mean and standard deviation and the correlation matrix from them, and
decomposes it (:func:`standardized_pca`). The results are handed to the JVM as a
``StandardScalerModel`` and a ``PCAModel`` (:func:`built_models`): the same classes,
saved and reloaded as before, projecting as Spark's own fit does (tests/test_reduction.py holds
them equal within 1e-6 after the sign convention).

What matches Spark's definitions: the standard deviation is the sample one (n - 1); a column of
zero deviation scales to 0; the covariance of the scaled rows is the correlation matrix (zero
where a column is constant); the components are its eigenvectors by decreasing eigenvalue; each
explained variance is an eigenvalue over the sum of all of them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.ml.feature import PCAModel, StandardScalerModel
    from pyspark.sql import DataFrame

__all__ = [
    "Moments",
    "StandardizedPCA",
    "block_moments",
    "built_models",
    "collects_directly",
    "fit_moments",
    "standardized_pca",
]


@dataclass(frozen=True)
class Moments:
    """Row count, column sums and ``Xᵀ X`` of a set of rows (float64); moments of two sets add up."""

    rows: int
    sums: np.ndarray  # (d,)
    gram: np.ndarray  # (d, d)

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.rows + other.rows, self.sums + other.sums, self.gram + other.gram)

    def to_bytes(self) -> tuple[int, bytes, bytes]:
        return self.rows, self.sums.tobytes(), self.gram.tobytes()

    @classmethod
    def from_bytes(cls, rows: int, sums: bytes, gram: bytes) -> Moments:
        totals = np.frombuffer(sums, dtype=np.float64).copy()
        return cls(
            rows, totals, np.frombuffer(gram, dtype=np.float64).reshape(totals.size, totals.size).copy()
        )


def block_moments(block: np.ndarray) -> Moments:
    """The moments of a ``(rows, d)`` block, in float64 (``Xᵀ X`` is one BLAS call)."""
    if block.ndim != 2:
        raise ValueError(f"a block of rows is (rows, d), got shape {block.shape}")
    x = np.asarray(block, dtype=np.float64)
    return Moments(x.shape[0], x.sum(axis=0), x.T @ x)


@dataclass(frozen=True)
class StandardizedPCA:
    """What the fit gives Spark's models: the scaler's ``mean``/``std`` (d,), the components
    ``pc`` (d, k) and each one's fraction of the variance ``explained`` (k,)."""

    mean: np.ndarray
    std: np.ndarray
    pc: np.ndarray
    explained: np.ndarray


def standardized_pca(moments: Moments, k: int) -> StandardizedPCA:
    """Standardise with the sample deviation, then the first ``k`` principal components.

    Raises:
        ValueError: for fewer than two rows, or ``k`` outside 1..d.
    """
    n, d = moments.rows, moments.sums.size
    if n < 2:
        raise ValueError(f"PCA needs at least two rows to fit, got {n}")
    if not 1 <= k <= d:
        raise ValueError(f"k must be within 1..{d} (the features' length), got {k}")
    mean = moments.sums / n
    covariance = (moments.gram - n * np.outer(mean, mean)) / (n - 1)
    std = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    # Spark's StandardScaler maps a constant column to 0, so it adds nothing to the covariance.
    inverse = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
    correlation = covariance * np.outer(inverse, inverse)
    eigenvalues, eigenvectors = np.linalg.eigh((correlation + correlation.T) / 2)
    order = np.argsort(eigenvalues)[::-1]
    # An SVD of a positive semi-definite matrix, as Spark takes, gives |eigenvalue|: rounding can
    # leave the null space's eigenvalues a hair below zero.
    spectrum = np.abs(eigenvalues[order])
    total = spectrum.sum()
    explained = spectrum[:k] / total if total > 0 else np.zeros(k)
    return StandardizedPCA(mean=mean, std=std, pc=eigenvectors[:, order[:k]], explained=explained)


def _partition_moments(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """mapInArrow: one row with this partition's moments (none for an empty partition)."""
    import pyarrow as pa

    total: Moments | None = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        lists = batch.column(0)
        values = lists.flatten().to_numpy(zero_copy_only=False)
        if values.size % batch.num_rows:
            raise ValueError("every row must have features of the same length to fit PCA")
        part = block_moments(values.reshape(batch.num_rows, -1))
        total = part if total is None else total + part
    if total is not None:
        rows, sums, gram = total.to_bytes()
        yield pa.RecordBatch.from_pydict(
            {"rows": [rows], "sums": [sums], "gram": [gram]},
            schema=pa.schema([("rows", pa.int64()), ("sums", pa.binary()), ("gram", pa.binary())]),
        )


# Up to this many partitions the partial moments come to the driver in one Arrow collect: no more
# than treeAggregate (depth 2) would bring it (it adds a level of its own from 6 partitions on), and
# without its trip through pickled rows and a second set of Python workers (about a second less at
# 2 partitions of 2048 features). Beyond it, the partials meet in a tree on the executors.
DIRECT_PARTIALS = 5

_PARTIALS_SCHEMA = "rows long, sums binary, gram binary"


def collects_directly(partitions: int) -> bool:
    """Whether the partials of ``partitions`` partitions come to the driver in one Arrow collect
    (``DataFrame.toArrow``, PySpark 4 on) rather than through ``treeAggregate``."""
    return partitions <= DIRECT_PARTIALS


def fit_moments(featurized: DataFrame, features_col: str = "features") -> Moments:
    """The moments of the non-null ``array<float>`` column ``features_col``.

    Each partition sends one ``d x d`` block (32 MiB at 2048 features) on, never a row: to the
    driver at once for a few partitions (:func:`collects_directly`), else summed in a tree.

    Raises:
        ValueError: when there are no rows.
    """
    partials = featurized.select(features_col).mapInArrow(_partition_moments, _PARTIALS_SCHEMA)
    total: Moments | None = None
    # PySpark 3.5 has no toArrow: there the fit runs as it always did, partitions not even asked.
    if hasattr(partials, "toArrow") and collects_directly(featurized.rdd.getNumPartitions()):
        for row in partials.toArrow().to_pylist():
            total = _add_moments(total, Moments.from_bytes(row["rows"], row["sums"], row["gram"]))
    else:
        moments = partials.rdd.map(lambda row: Moments.from_bytes(row.rows, row.sums, row.gram))
        total = moments.treeAggregate(None, _add_moments, _add_moments)
    if total is None:
        raise ValueError("cannot fit PCA on no rows")
    return total


def _add_moments(left: Moments | None, right: Moments | None) -> Moments | None:
    """Adds moments, ``None`` standing for no rows (the aggregation's zero)."""
    if left is None:
        return right
    return left if right is None else left + right


def built_models(
    fit: StandardizedPCA, input_col: str, scaled_col: str, output_col: str
) -> tuple[StandardScalerModel, PCAModel]:
    """Spark ML's own ``StandardScalerModel`` (withMean, withStd) and ``PCAModel`` holding ``fit``."""
    from pyspark.ml.linalg import DenseMatrix, DenseVector
    from pyspark.ml.wrapper import JavaParams

    d, k = fit.pc.shape
    # The uids a fit from Python gives them (the estimators' uids, Identifiable._randomUID): a saved
    # pipeline's stage folders keep their names (stages/1_PCA_..., as before).
    scaler: StandardScalerModel = JavaParams._from_java(
        JavaParams._new_java_obj(
            "org.apache.spark.ml.feature.StandardScalerModel",
            f"StandardScaler_{uuid.uuid4().hex[-12:]}",
            DenseVector(fit.std),
            DenseVector(fit.mean),
        )
    )
    scaler._set(inputCol=input_col, outputCol=scaled_col, withMean=True, withStd=True)
    pca: PCAModel = JavaParams._from_java(
        JavaParams._new_java_obj(
            "org.apache.spark.ml.feature.PCAModel",
            f"PCA_{uuid.uuid4().hex[-12:]}",
            DenseMatrix(d, k, fit.pc.ravel(order="F")),
            DenseVector(fit.explained),
        )
    )
    pca._set(inputCol=scaled_col, outputCol=output_col, k=k)
    for model in (scaler, pca):
        model._transfer_params_to_java()
    return scaler, pca
