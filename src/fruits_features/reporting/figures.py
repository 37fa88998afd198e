"""The report's figures, drawn with Matplotlib: plain functions of :class:`ReportInputs`, testable
without Spark."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fruits_features.reporting.inputs import AugmentedExample, ConfusedExample, ReportInputs
from fruits_features.stages.metrics import Confusion, Metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)
VARIANCE_PNG = "variance.png"
SCATTER_PNG = "components.png"
CONFUSION_PNG = "confusion_matrix.png"
CONFUSED_CLASSES_PNG = "confused_classes.png"
PAIRS_PNG = "confused_pairs.png"
AUGMENTED_PNG = "augmented_examples.png"
_DPI = 100
# Class names on the axes of the whole confusion matrix up to this many classes; beyond, the
# zoomed matrix names the classes that matter.
_NAMED_CLASSES = 40
_ZOOM_CLASSES = 16


def _figure(width: float, height: float) -> Figure:
    # A bare Figure renders with Agg on savefig: no pyplot, no global state, no display needed.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def variance_figure(
    spectrum: Sequence[float], k: int, target: float | None, backbone: str = "ResNet50"
) -> Figure:
    """Bars: each component's share of the variance; line: the cumulative share; k marked."""
    shown = min(len(spectrum), max(k + max(5, k // 4), 10))
    values = np.asarray(spectrum[:shown], dtype=float) * 100
    cumulative = np.cumsum(values)
    positions = np.arange(1, shown + 1)
    figure = _figure(9, 4.2)
    bars = figure.add_subplot()
    colours = ["#3b75af" if i <= k else "#b9c9dc" for i in positions]
    bars.bar(positions, values, color=colours, width=0.85, label="per component")
    bars.set_xlabel("principal component")
    bars.set_ylabel("variance explained by the component (%)")
    bars.set_xlim(0.3, shown + 0.7)
    line = bars.twinx()
    line.plot(positions, cumulative, color="#d1651d", marker="o", markersize=3, label="cumulative")
    line.set_ylabel("cumulative variance explained (%)")
    line.set_ylim(0, 100)
    if k <= shown:
        line.axvline(k, color="#555555", linestyle="--", linewidth=1)
        line.annotate(
            f"k = {k}: {cumulative[k - 1]:.1f}%",
            (k, cumulative[k - 1]),
            xytext=(-8, 8),
            textcoords="offset points",
            ha="right",
            fontsize=9,
        )
    if target is not None:
        line.axhline(100 * target, color="#d1651d", linestyle=":", linewidth=1)
        line.annotate(
            f"target {100 * target:g}%",
            (shown + 0.7, 100 * target),
            xytext=(-4, -13),
            textcoords="offset points",
            ha="right",
            fontsize=9,
        )
    handles = bars.get_legend_handles_labels()[0] + line.get_legend_handles_labels()[0]
    bars.legend(handles, ["per component (kept)", "cumulative"], loc="lower right", fontsize=9)
    bars.set_title(f"Explained variance of the standardized {backbone} features")
    return figure


def scatter_figure(sample: pd.DataFrame) -> Figure:
    """PC1 against PC2, one colour per class (the classes in ``sample``, in name order)."""
    figure = _figure(9, 6)
    axes = figure.add_subplot()
    labels = sorted(set(sample["label"]))
    colours = _palette(len(labels))
    for label, colour in zip(labels, colours, strict=True):
        points = sample[sample["label"] == label]
        axes.scatter(
            points["pc_1"], points["pc_2"], s=22, color=colour, alpha=0.8, label=f"{label} ({len(points)})"
        )
    axes.set_xlabel("PC1")
    axes.set_ylabel("PC2")
    axes.axhline(0, color="#cccccc", linewidth=0.8, zorder=0)
    axes.axvline(0, color="#cccccc", linewidth=0.8, zorder=0)
    axes.legend(
        loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, title="class (points)", frameon=False
    )
    axes.set_title(f"The first two components, {len(labels)} classes chosen to show their spread")
    return figure


def _palette(count: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if count <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(count)]


def row_normalised(confusion: np.ndarray) -> np.ndarray:
    """Each row divided by its sum (rows without test images stay 0): recall on the diagonal."""
    totals = confusion.sum(axis=1, keepdims=True).astype(float)
    shares: np.ndarray = np.divide(
        confusion, totals, out=np.zeros(confusion.shape, dtype=float), where=totals > 0
    )
    return shares


def confusion_figure(metrics: Metrics) -> Figure:
    """The whole confusion matrix, rows normalised; class names on the axes for up to 40 classes."""
    labels = metrics.labels
    count = len(labels)
    side = 6.5 if count <= _NAMED_CLASSES else 8.5
    figure = _figure(side + 1.5, side)
    axes = figure.add_subplot()
    image = axes.imshow(
        row_normalised(metrics.confusion), cmap="Blues", vmin=0, vmax=1, interpolation="nearest"
    )
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the true class's test images")
    if count <= _NAMED_CLASSES:
        axes.set_xticks(range(count), labels, rotation=90, fontsize=7)
        axes.set_yticks(range(count), labels, fontsize=7)
    axes.set_xlabel("predicted class" + ("" if count <= _NAMED_CLASSES else f" (all {count}, alphabetical)"))
    axes.set_ylabel("true class" + ("" if count <= _NAMED_CLASSES else " (alphabetical)"))
    axes.set_title(
        f"Confusion matrix: {metrics.test_images} test images, accuracy {100 * metrics.accuracy:.1f}%"
    )
    return figure


def confused_classes(confusions: Sequence[Confusion], limit: int = _ZOOM_CLASSES) -> list[str]:
    """The classes of the most confused cells, in order of appearance, at most ``limit``."""
    chosen: list[str] = []
    for confusion in confusions:
        for label in (confusion.true, confusion.predicted):
            if label not in chosen and len(chosen) < limit:
                chosen.append(label)
    return chosen


def confused_classes_figure(metrics: Metrics, classes: Sequence[str]) -> Figure:
    """The confusion counts among ``classes`` only, each cell annotated."""
    index = [metrics.labels.index(label) for label in classes]
    counts = metrics.confusion[np.ix_(index, index)]
    count = len(classes)
    figure = _figure(max(5.5, 0.55 * count + 3), max(4.5, 0.5 * count + 2.5))
    axes = figure.add_subplot()
    axes.imshow(counts, cmap="Oranges", vmin=0, vmax=max(1, int(counts.max())), interpolation="nearest")
    for i in range(count):
        for j in range(count):
            if counts[i, j]:
                dark = counts[i, j] > counts.max() / 2
                axes.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                )
    axes.set_xticks(range(count), classes, rotation=60, ha="right", fontsize=8)
    axes.set_yticks(range(count), classes, fontsize=8)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title("Test images among the most confused classes (counts)")
    return figure


def pairs_figure(examples: Sequence[ConfusedExample]) -> Figure:
    """A grid: for each confusion, the misclassified test image and a training image of its prediction."""
    per_row = 2  # pairs side by side, a narrow empty column between them
    rows = math.ceil(len(examples) / per_row)
    figure = _figure(9.4, 2.9 * rows)
    grid = figure.add_gridspec(rows, 3 * per_row - 1, width_ratios=[1, 1, 0.25] * (per_row - 1) + [1, 1])
    for n, example in enumerate(examples):
        row, column = divmod(n, per_row)
        c = example.confusion
        images = "1 test image" if c.count == 1 else f"{c.count} test images"
        left = figure.add_subplot(grid[row, 3 * column])
        right = figure.add_subplot(grid[row, 3 * column + 1])
        _thumbnail(left, example.image, f"true: {_short(c.true)}")
        _thumbnail(right, example.reference, f"taken for: {_short(c.predicted)}\n({images})")
    figure.suptitle(
        "Most confused pairs: a misclassified test image, and a training image of the class chosen"
    )
    return figure


def augmented_figure(examples: Sequence[AugmentedExample]) -> Figure:
    """A grid, one row per image: the original, then its copies 1, 2, ... (the axes row by row)."""
    rows, columns = len(examples), 1 + max(len(example.copies) for example in examples)
    figure = _figure(2.1 * columns + 0.3, 2.3 * rows + 0.6)
    for row, example in enumerate(examples):
        shown = [(example.original, f"{_short(example.label)}\noriginal")]
        shown += [(pixels, f"copy {n}") for n, pixels in enumerate(example.copies, start=1)]
        for column, (pixels, title) in enumerate(shown):
            _thumbnail(figure.add_subplot(rows, columns, row * columns + column + 1), pixels, title)
    figure.suptitle("Augmented copies beside their originals, as the model was given them")
    return figure


def _thumbnail(axes: Any, pixels: np.ndarray | None, title: str) -> None:
    axes.set_axis_off()
    axes.set_title(title, fontsize=8)
    if pixels is None:
        axes.text(
            0.5, 0.5, "image\nunavailable", ha="center", va="center", fontsize=8, transform=axes.transAxes
        )
    else:
        axes.imshow(pixels)


def _short(label: str, width: int = 24) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def save_png(figure: Figure, path: Path) -> Path:
    """Write ``figure`` as a PNG (Agg) and return the path."""
    figure.savefig(path, format="png", dpi=_DPI)
    return path


def draw(inputs: ReportInputs, folder: Path) -> dict[str, Path]:
    """Draw every picture the inputs allow into ``folder``.

    Returns:
        The PNGs written, by their file name.
    """
    folder.mkdir(parents=True, exist_ok=True)
    pca = inputs.manifest["pca"]
    variance = variance_figure(
        inputs.spectrum, int(pca["k"]), pca.get("variance_target"), inputs.backbone_title
    )
    pictures = {VARIANCE_PNG: variance}
    if inputs.scatter is not None and len(inputs.scatter):
        pictures[SCATTER_PNG] = scatter_figure(inputs.scatter)
    if inputs.metrics is not None:
        pictures[CONFUSION_PNG] = confusion_figure(inputs.metrics)
        classes = confused_classes([e.confusion for e in inputs.examples])
        if len(classes) >= 2:
            pictures[CONFUSED_CLASSES_PNG] = confused_classes_figure(inputs.metrics, classes)
    if inputs.examples:
        pictures[PAIRS_PNG] = pairs_figure(inputs.examples)
    if inputs.augmented:
        pictures[AUGMENTED_PNG] = augmented_figure(inputs.augmented)
    return {name: save_png(figure, folder / name) for name, figure in pictures.items()}
