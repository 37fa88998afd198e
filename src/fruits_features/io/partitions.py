"""A driver-side list as an RDD of even, ordered partitions."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from pyspark import RDD, SparkContext

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
