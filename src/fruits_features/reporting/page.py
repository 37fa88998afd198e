"""The report's page, ``<run>/report/index.html``: counts and timings from the manifest, the figures
beside it by relative path, inline CSS, no network and no script."""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fruits_features.reporting.augmentation import describe_augmentation
from fruits_features.reporting.figures import (
    AUGMENTED_PNG,
    CONFUSED_CLASSES_PNG,
    CONFUSION_PNG,
    PAIRS_PNG,
    SCATTER_PNG,
    VARIANCE_PNG,
    draw,
)
from fruits_features.reporting.inputs import ReportInputs

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

INDEX_FILE = "index.html"


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


def _variance_html(pca: Mapping[str, Any], pictures: Mapping[str, Path], backbone: str) -> str:
    kept = _kept(pca)
    target = pca.get("variance_target")
    if target is not None:
        how = f"k = {pca['k']} components, the fewest reaching the variance target of {_percent(target)},"
    else:
        how = f"k = {pca['k']} components (a fixed count)"
    return "\n".join(
        [
            "<h2>Explained variance</h2>",
            f"<p>{_e(how)} keep {_percent(kept)} of the variance of the standardized {_e(backbone)} "
            "features.</p>",
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
        "A bounded sample of classes chosen to show the spread: from the most frequent, each time the "
        "class whose mean is farthest from those chosen (points per class in the legend).",
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
        _variance_html(pca, pictures, inputs.backbone_title),
        "<h2>The first two components</h2>",
        scatter or '<p class="muted">No sample to show.</p>',
        _augmented_html(inputs, pictures),
        _classifier_html(inputs, m.get("classifier") or {}, pictures),
        _run_html(m),
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part) + "\n"


def _augmented_html(inputs: ReportInputs, pictures: Mapping[str, Path]) -> str:
    """The augmented examples' section; none when augmentation was off."""
    if inputs.augment is None:
        return ""
    figure = _figure_html(
        AUGMENTED_PNG,
        pictures,
        "Images beside their augmented copies",
        "Each row: the first image (by path) of one of a few classes chosen to show the spread, then "
        "its first copies, made by the same function, from the same seed, path and copy number as "
        "the executors made them for the model.",
    )
    return "\n".join(
        [
            "<h2>Augmented examples</h2>",
            f"<p>{_e(describe_augmentation(inputs.augment))}</p>",
            figure or '<p class="muted">No example image could be read (the log says why).</p>',
        ]
    )


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
