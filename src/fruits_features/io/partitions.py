"""A driver-side list as an RDD or a DataFrame of even, ordered partitions."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from pyspark import RDD, SparkContext
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.types import StructType

T = TypeVar("T")


def parallelize_evenly(context: SparkContext, items: Sequence[T], slices: int) -> RDD[T]:
    """``items`` over ``slices`` partitions (at least one) of contiguous runs whose sizes differ by
    one at most, in order.

    ``SparkContext.parallelize`` alone splits its input in pickled batches of up to 1,024 items and
    deals out the batches, not the items: 3,000 items over 2 partitions would be 1,024 and 1,976,
    131 over 8 would be 32 in one partition and 16 or fewer in the others, and the stage would
    wait for the longest task. Here each partition is given its own slice as one element.
    """
    count = max(1, slices)
    bounds = [len(items) * i // count for i in range(count + 1)]
    runs = [list(items[start:end]) for start, end in itertools.pairwise(bounds)]
    return context.parallelize(runs, count).flatMap(lambda run: run)


def frame_evenly(
    spark: SparkSession, rows: Sequence[tuple[object, ...]], schema: StructType, slices: int
) -> DataFrame:
    """``rows`` as a DataFrame of ``schema`` over ``slices`` partitions (at least one) of contiguous
    runs whose sizes differ by one at most, in order.

    Where ``slices`` is Spark's default parallelism and PySpark takes Arrow tables (4.0 on), the
    rows reach the JVM as one Arrow table and become a local relation, which Spark slices so
    itself: the tasks that read it start no Python worker (a first job about 1.5 s shorter on
    2 cores). Otherwise through :func:`parallelize_evenly`, whose tasks each run a Python worker to
    turn the pickled rows into Spark's.
    """
    if slices == spark.sparkContext.defaultParallelism and takes_arrow_tables():
        import pyarrow as pa

        columns = list(zip(*rows, strict=True)) if rows else [()] * len(schema.names)
        table = pa.table(dict(zip(schema.names, (list(column) for column in columns), strict=True)))
        return spark.createDataFrame(table, schema)
    return spark.createDataFrame(parallelize_evenly(spark.sparkContext, rows, slices), schema)


def takes_arrow_tables() -> bool:
    """Whether ``SparkSession.createDataFrame`` takes a ``pyarrow.Table`` (PySpark 4.0 on)."""
    import pyspark

    return int(pyspark.__version__.split(".", 1)[0]) >= 4
