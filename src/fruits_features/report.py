"""The run's report: ``<run>/report/index.html`` and the PNGs beside it, drawn with Matplotlib.

What it shows: counts and timings from the manifest; the explained variance per component and
cumulative; the first two components of the most frequent classes; with the classifier, its
accuracy and macro F1, the confusion matrix (whole, and zoomed on the most confused classes), the
most-confused image pairs, and every class's precision and recall.

Two halves: *gathering* runs Spark and S3 reads with bounded results (a sample of points per
class, a few thumbnails); *drawing* is plain functions of those results, testable without Spark.
The page needs no network and no script: PNGs by relative path, inline CSS.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from boto3.exceptions import Boto3Error
from botocore.exceptions import BotoCoreError, ClientError
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from fruits_features.classifier import PREDICTED_COL, SPLIT_COL, TEST, TRAIN, Confusion, Metrics
from fruits_features.decoding import ImageDecodeError, decode_image
from fruits_features.reduction import COMPONENTS_COL
from fruits_features.storage import S3Uri, describe_error, read_object

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

INDEX_FILE = "index.html"
VARIANCE_PNG = "variance.png"
SCATTER_PNG = "components.png"
CONFUSION_PNG = "confusion_matrix.png"
CONFUSED_CLASSES_PNG = "confused_classes.png"
PAIRS_PNG = "confused_pairs.png"
THUMBNAIL_SIZE = 100  # Fruits 360's own size
_DPI = 100
# Class names on the axes of the whole confusion matrix up to this many classes; beyond, the
# zoomed matrix names the classes that matter.
_NAMED_CLASSES = 40
_ZOOM_CLASSES = 16


# -- gathering (Spark, S3; every result bounded) ------------------------------------------------


def most_frequent(class_counts: Mapping[str, int], count: int) -> list[str]:
    """The ``count`` classes with the most images, ties broken by name."""
    return [label for label, _ in sorted(class_counts.items(), key=lambda kv: (-kv[1], kv[0]))[:count]]


def scatter_sample(
    projected: DataFrame, classes: Sequence[str], per_class: int, seed: int = 0
) -> pd.DataFrame:
    """``label, pc_1, pc_2`` of at most ``per_class`` images of each of ``classes``, on the driver.

    The images kept are chosen by a hash of the path, so the sample is reproducible. With a
    single component, ``pc_2`` is 0.
    """
    order = Window.partitionBy("label").orderBy(F.xxhash64(F.lit(seed), F.col("path")), F.col("path"))
    components = vector_to_array(F.col(COMPONENTS_COL))
    second = F.when(F.size(components) > 1, components.getItem(1)).otherwise(F.lit(0.0))
    rows = (
        projected.filter(F.col("label").isin(list(classes)))
        .withColumn("_rank", F.row_number().over(order))
        .filter(F.col("_rank") <= per_class)
        .select("label", components.getItem(0).alias("pc_1"), second.alias("pc_2"))
        .collect()
    )
    return pd.DataFrame([tuple(row) for row in rows], columns=["label", "pc_1", "pc_2"])


@dataclass(frozen=True)
class ConfusedExample:
    """One cell of the confusion matrix, with a picture of each side.

    Attributes:
        confusion: true class, predicted class, how many test images.
        image_path: a test image of the true class that was predicted as the other class.
        reference_path: a training image of the predicted class (what it was taken for).
        image: ``image_path``'s pixels, ``None`` when it could not be read.
        reference: ``reference_path``'s pixels, ``None`` when it could not be read.
    """

    confusion: Confusion
    image_path: str | None
    reference_path: str | None
    image: np.ndarray | None = field(default=None, repr=False)
    reference: np.ndarray | None = field(default=None, repr=False)


def example_paths(
    predictions: DataFrame, confusions: Sequence[Confusion]
) -> list[tuple[str | None, str | None]]:
    """For each confusion, one misclassified test image and one training image of the predicted class.

    Two small aggregations: one path per confused cell and one per predicted class reach the driver.
    """
    if not confusions:
        return []
    cells = [(c.true, c.predicted) for c in confusions]
    in_cells = F.lit(False)
    for true, predicted in cells:
        in_cells = in_cells | ((F.col("label") == true) & (F.col(PREDICTED_COL) == predicted))
    wrong = {
        (row["label"], row[PREDICTED_COL]): row["path"]
        for row in predictions.filter((F.col(SPLIT_COL) == TEST) & in_cells)
        .groupBy("label", PREDICTED_COL)
        .agg(F.min("path").alias("path"))
        .collect()
    }
    references = {
        row["label"]: row["path"]
        for row in predictions.filter(
            (F.col(SPLIT_COL) == TRAIN) & F.col("label").isin(sorted({p for _, p in cells}))
        )
        .groupBy("label")
        .agg(F.min("path").alias("path"))
        .collect()
    }
    return [(wrong.get(cell), references.get(cell[1])) for cell in cells]


def fetch_thumbnail(client: S3Client, path: str | None, size: int = THUMBNAIL_SIZE) -> np.ndarray | None:
    """An image from S3, decoded and resized for the report; ``None`` (logged) if it cannot be had."""
    if path is None:
        return None
    try:
        return decode_image(read_object(client, S3Uri.parse(path)), size, max_pixels=50_000_000)
    except (ClientError, BotoCoreError, Boto3Error) as exc:
        log.warning("report: cannot read %s: %s", path, describe_error(exc))
    except ImageDecodeError as exc:
        log.warning("report: cannot decode %s: %s", path, exc)
    return None


def confused_examples(
    client: S3Client, predictions: DataFrame, confusions: Sequence[Confusion]
) -> list[ConfusedExample]:
    """:func:`example_paths` with their thumbnails, read from S3 by the driver (two per confusion)."""
    examples = []
    for confusion, (image_path, reference_path) in zip(
        confusions, example_paths(predictions, confusions), strict=True
    ):
        examples.append(
            ConfusedExample(
                confusion=confusion,
                image_path=image_path,
                reference_path=reference_path,
                image=fetch_thumbnail(client, image_path),
                reference=fetch_thumbnail(client, reference_path),
            )
        )
    return examples


# -- drawing (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report shows, already on the driver.

    Attributes:
        manifest: the run's manifest so far (counts, PCA, classifier, timings, versions).
        spectrum: explained variance of every component PCA computed (at least the k kept).
        scatter: ``label, pc_1, pc_2`` of a bounded sample, or ``None``.
        metrics: the classifier's evaluation, or ``None`` without a classifier.
        examples: the most-confused pairs with thumbnails.
    """

    manifest: Mapping[str, Any]
    spectrum: Sequence[float]
    scatter: pd.DataFrame | None = None
    metrics: Metrics | None = None
    examples: Sequence[ConfusedExample] = ()


def _figure(width: float, height: float) -> Figure:
    # A bare Figure renders with Agg on savefig: no pyplot, no global state, no display needed.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=_DPI, layout="constrained")


def variance_figure(spectrum: Sequence[float], k: int, target: float | None) -> Figure:
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
    bars.set_title("Explained variance of the standardized ResNet50 features")
    return figure


def scatter_figure(sample: pd.DataFrame) -> Figure:
    """PC1 against PC2, one colour per class (the classes in ``sample``, most frequent first)."""
    figure = _figure(9, 6)
    axes = figure.add_subplot()
    labels = list(dict.fromkeys(sample["label"]))
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
    axes.set_title(f"The first two components, {len(labels)} most frequent classes")
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
    pictures = {VARIANCE_PNG: variance_figure(inputs.spectrum, int(pca["k"]), pca.get("variance_target"))}
    if inputs.scatter is not None and len(inputs.scatter):
        pictures[SCATTER_PNG] = scatter_figure(inputs.scatter)
    if inputs.metrics is not None:
        pictures[CONFUSION_PNG] = confusion_figure(inputs.metrics)
        classes = confused_classes([e.confusion for e in inputs.examples])
        if len(classes) >= 2:
            pictures[CONFUSED_CLASSES_PNG] = confused_classes_figure(inputs.metrics, classes)
    if inputs.examples:
        pictures[PAIRS_PNG] = pairs_figure(inputs.examples)
    return {name: save_png(figure, folder / name) for name, figure in pictures.items()}


# -- the page -----------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto;
       max-width: 70rem; padding: 0 1rem; color: #1d2733; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #d8dee6; }
.muted { color: #5b6b7c; } .ok { color: #1d7a34; } .failed { color: #b3261e; }
table { border-collapse: collapse; margin: 0.6rem 0; font-size: 0.92rem; }
th, td { padding: 0.25rem 0.8rem; border-bottom: 1px solid #e5e9ee; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8rem; margin: 1rem 0; }
.card { border: 1px solid #d8dee6; border-radius: 8px; padding: 0.6rem 1rem; min-width: 9rem; }
.card .value { font-size: 1.5rem; font-weight: 600; } .card .name { font-size: 0.85rem; color: #5b6b7c; }
figure { margin: 1rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eef1f4; }
figcaption { font-size: 0.9rem; color: #5b6b7c; }
code { background: #f3f5f7; padding: 0 0.25rem; border-radius: 3px; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[bool]) -> str:
    head = "".join(
        f'<th class="{"num" if n else ""}">{_e(h)}</th>' for h, n in zip(header, numeric, strict=True)
    )
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{"num" if n else ""}">{_e(v)}</td>' for v, n in zip(row, numeric, strict=True))
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _card(name: str, value: str) -> str:
    return f'<div class="card"><div class="value">{_e(value)}</div><div class="name">{_e(name)}</div></div>'


def _figure_html(name: str, pictures: Mapping[str, Path], alt: str, caption: str) -> str:
    if name not in pictures:
        return ""
    return f'<figure><img src="{_e(name)}" alt="{_e(alt)}"><figcaption>{_e(caption)}</figcaption></figure>'


def _header_html(m: Mapping[str, Any], cards: Sequence[str]) -> str:
    status = str(m.get("status", ""))
    return "\n".join(
        [
            f"<h1>Fruits features: run <code>{_e(m.get('run_id', ''))}</code></h1>",
            f'<p class="muted">{_e(m.get("input", ""))} → {_e(m.get("output", ""))}<br>',
            f"started {_e(m.get('started_at', ''))}, status ",
            f'<span class="{"ok" if status == "succeeded" else "failed"}">{_e(status)}</span></p>',
            f'<div class="cards">{"".join(cards)}</div>',
        ]
    )


def _variance_html(pca: Mapping[str, Any], pictures: Mapping[str, Path]) -> str:
    kept = _kept(pca)
    target = pca.get("variance_target")
    if target is not None:
        how = f"k = {pca['k']} components, the fewest reaching the variance target of {_percent(target)},"
    else:
        how = f"k = {pca['k']} components (a fixed count)"
    return "\n".join(
        [
            "<h2>Explained variance</h2>",
            f"<p>{_e(how)} keep {_percent(kept)} of the variance of the standardized ResNet50 features.</p>",
            _figure_html(
                VARIANCE_PNG,
                pictures,
                "Explained variance per component and cumulative",
                "Bars: each component's share of the variance (dark: kept). Line: the running total.",
            ),
        ]
    )


def _kept(pca: Mapping[str, Any]) -> float:
    cumulative = pca.get("cumulative_explained_variance") or [0.0]
    return float(cumulative[-1])


def _run_html(m: Mapping[str, Any]) -> str:
    spark = m.get("spark") or {}
    timings = [(name, f"{seconds:.1f}") for name, seconds in (m.get("timings_seconds") or {}).items()]
    return "\n".join(
        [
            "<h2>Timings</h2>",
            _table(["stage", "seconds"], timings, [False, True]),
            '<p class="muted">Executor times (<code>executor_decode</code>, <code>executor_model</code>) '
            "are summed over tasks; the others are wall-clock seconds on the driver, up to the report.</p>",
            "<h2>Versions</h2>",
            _table(["library", "version"], list((m.get("versions") or {}).items()), [False, False]),
            f'<p class="muted">Spark {_e(spark.get("version", ""))}, '
            f"master <code>{_e(spark.get('master', ''))}</code>. "
            "The numbers come from <code>manifest.json</code>, beside this folder.</p>",
        ]
    )


def render_html(inputs: ReportInputs, pictures: Mapping[str, Path]) -> str:
    """The report page, referring to ``pictures`` by file name (they sit beside it)."""
    m = inputs.manifest
    counts = m.get("counts") or {}
    pca = m["pca"]
    cards = [
        _card("images featurized", f"{counts.get('featurized', 0)} of {counts.get('images', 0)}"),
        _card("PCA components", str(pca["k"])),
        _card("variance kept", _percent(_kept(pca))),
    ]
    if inputs.metrics is not None:
        cards += [
            _card("test accuracy", _percent(inputs.metrics.accuracy)),
            _card("macro F1", f"{inputs.metrics.macro_f1:.3f}"),
        ]
    scatter = _figure_html(
        SCATTER_PNG,
        pictures,
        "Scatter of PC1 against PC2 coloured by class",
        "A bounded sample of the most frequent classes (points per class in the legend).",
    )
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Fruits features: run {_e(m.get('run_id', ''))}</title>",
        f"<style>{_STYLE}</style></head><body>",
        _header_html(m, cards),
        "<h2>Counts</h2>",
        _table(["", "count"], [(name.replace("_", " "), n) for name, n in counts.items()], [False, True]),
        _variance_html(pca, pictures),
        "<h2>The first two components</h2>",
        scatter or '<p class="muted">No sample to show.</p>',
        _classifier_html(inputs, m.get("classifier") or {}, pictures),
        _run_html(m),
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def _classifier_html(
    inputs: ReportInputs, classifier: Mapping[str, Any], pictures: Mapping[str, Path]
) -> str:
    if inputs.metrics is None:
        reason = classifier.get("reason")
        text = f"Skipped: {_e(reason)}" if reason else "Not run (<code>classifier.enabled</code> is false)."
        return f'<h2>Classifier</h2><p class="muted">{text}</p>'
    metrics = inputs.metrics
    per_class = sorted(metrics.per_class.items(), key=lambda kv: (kv[1].f1, kv[0]))
    rows = [
        (label, f"{c.precision:.2f}", f"{c.recall:.2f}", f"{c.f1:.2f}", c.support, c.predicted)
        for label, c in per_class
    ]
    untested = classifier.get("untested_classes") or []
    split = (
        f"trained on {_e(classifier.get('train_images', ''))} images and tested on {metrics.test_images} "
        f"(a stratified split: {_e(classifier.get('train_fraction', ''))} of each class trains, "
        f"seed {_e(classifier.get('seed', ''))})"
    )
    scores = (
        f"Test accuracy <strong>{_percent(metrics.accuracy)}</strong>, macro F1 "
        f"<strong>{metrics.macro_f1:.3f}</strong> over {len(metrics.per_class)} classes."
    )
    return "\n".join(
        [
            "<h2>Classifier</h2>",
            f"<p>Multinomial logistic regression on the {_e(inputs.manifest['pca']['k'])} components, "
            f"{split}. {scores}</p>",
            f'<p class="muted">{len(untested)} classes with a single image are trained on, not tested.</p>'
            if untested
            else "",
            _figure_html(
                CONFUSION_PNG,
                pictures,
                "Confusion matrix of the classifier",
                "Rows: true class; columns: predicted class; colour: share of the row's test images.",
            ),
            _figure_html(
                CONFUSED_CLASSES_PNG,
                pictures,
                "Confusion counts among the most confused classes",
                "The classes of the most frequent mistakes, with their test-image counts.",
            ),
            _figure_html(
                PAIRS_PNG,
                pictures,
                "Most confused image pairs",
                "Each pair: a test image the classifier got wrong, and a training image of the class chosen.",
            ),
            "<details><summary>Precision and recall of every class (worst F1 first)</summary>",
            _table(
                ["class", "precision", "recall", "F1", "test images", "predicted"],
                rows,
                [False, True, True, True, True, True],
            ),
            "</details>",
        ]
    )


def write_report_folder(inputs: ReportInputs, folder: Path) -> list[Path]:
    """Draw the pictures and write ``index.html`` into ``folder``; returns every file written."""
    pictures = draw(inputs, folder)
    index = folder / INDEX_FILE
    index.write_text(render_html(inputs, pictures), encoding="utf-8")
    return [index, *pictures.values()]
