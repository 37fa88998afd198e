"""The classifier's metrics from a confusion matrix: accuracy, macro F1, per class, the most confused
pairs. Plain numpy, no Spark: the report draws them too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ClassMetrics:
    """One class's test metrics (precision is 0 when nothing was predicted as the class)."""

    precision: float
    recall: float
    f1: float
    support: int  # test images of the class
    predicted: int  # test images predicted as the class


@dataclass(frozen=True)
class Confusion:
    """Test images of class ``true`` predicted as ``predicted``."""

    true: str
    predicted: str
    count: int


@dataclass(frozen=True)
class Metrics:
    """The classifier's evaluation on the test images.

    Attributes:
        labels: the classes, in the confusion matrix's order.
        confusion: ``C x C`` counts, rows the true class, columns the predicted one.
        accuracy: correct predictions over test images.
        macro_f1: the unweighted mean of the F1 scores of the classes that have test images or
            were predicted (scikit-learn's ``f1_score(average="macro")``).
        per_class: the metrics of those classes.
    """

    labels: tuple[str, ...]
    confusion: np.ndarray
    accuracy: float
    macro_f1: float
    per_class: dict[str, ClassMetrics]

    @property
    def test_images(self) -> int:
        """Images evaluated."""
        return int(self.confusion.sum())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready metrics, per class in label order."""
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "test_images": self.test_images,
            "per_class": {
                label: {
                    "precision": m.precision,
                    "recall": m.recall,
                    "f1": m.f1,
                    "support": m.support,
                    "predicted": m.predicted,
                }
                for label, m in self.per_class.items()
            },
        }


def classification_metrics(labels: Sequence[str], confusion: np.ndarray) -> Metrics:
    """Accuracy, macro F1 and per-class precision, recall and F1 from confusion counts.

    Args:
        labels: the ``C`` classes.
        confusion: ``C x C`` non-negative counts, rows the true class, columns the prediction.

    Returns:
        The :class:`Metrics`.

    Raises:
        ValueError: if the matrix is not ``C x C`` or holds no test image.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    if counts.shape != (len(labels), len(labels)):
        raise ValueError(f"expected a {len(labels)}x{len(labels)} confusion matrix, got {counts.shape}")
    total = int(counts.sum())
    if total == 0:
        raise ValueError("no test images to evaluate")
    correct = np.diag(counts)
    support = counts.sum(axis=1)
    predicted = counts.sum(axis=0)
    per_class: dict[str, ClassMetrics] = {}
    for i, label in enumerate(labels):
        if support[i] == 0 and predicted[i] == 0:
            continue  # neither in the test set nor predicted: nothing to say about it
        precision = correct[i] / predicted[i] if predicted[i] else 0.0
        recall = correct[i] / support[i] if support[i] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = ClassMetrics(
            precision=float(precision),
            recall=float(recall),
            f1=float(f1),
            support=int(support[i]),
            predicted=int(predicted[i]),
        )
    return Metrics(
        labels=tuple(labels),
        confusion=counts,
        accuracy=float(correct.sum() / total),
        macro_f1=float(np.mean([m.f1 for m in per_class.values()])),
        per_class=per_class,
    )


def most_confused(labels: Sequence[str], confusion: np.ndarray, count: int) -> list[Confusion]:
    """The ``count`` largest off-diagonal cells: which class is most often taken for which.

    Ties are broken by the class names, so the choice is reproducible.
    """
    cells = [
        Confusion(true=labels[i], predicted=labels[j], count=int(confusion[i, j]))
        for i, j in zip(*np.nonzero(confusion), strict=True)
        if i != j
    ]
    cells.sort(key=lambda cell: (-cell.count, cell.true, cell.predicted))
    return cells[:count]


def scored_metrics(cells: Iterable[tuple[str, str, int]], labels: Sequence[str]) -> dict[str, Any]:
    """What a scoring run's labelled images say of the model (the manifest's ``classifier``
    section of a scoring run).

    Args:
        cells: ``(label, predicted, count)`` for the scored images; ``label`` ``""`` for an image
            with no label (outside a class folder, or a folder ``labels.table`` does not name).
        labels: the model's classes.

    Returns:
        ``status: evaluated`` with the accuracy, macro F1, per-class metrics and the confusion
        counts over the images whose label is one of ``labels``, and ``other_labels``: the images
        of each label the model does not know (never counted); ``status: unlabelled`` when no
        image has a label the model knows.
    """
    index = {label: i for i, label in enumerate(labels)}
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    other: dict[str, int] = {}
    unlabelled = 0
    for label, predicted, count in cells:
        if label == "":
            unlabelled += count
        elif label in index:
            confusion[index[label], index[predicted]] += count
        else:
            other[label] = other.get(label, 0) + count
    section: dict[str, Any] = {"unlabelled_images": unlabelled, "other_labels": dict(sorted(other.items()))}
    if not confusion.sum():
        return {"status": "unlabelled", **section}
    metrics = classification_metrics(labels, confusion)
    return {
        "status": "evaluated",
        **metrics.to_dict(),
        **section,
        "labels": list(labels),
        "confusion": confusion.tolist(),
        "most_confused": [asdict(c) for c in most_confused(labels, confusion, 10)],
    }
