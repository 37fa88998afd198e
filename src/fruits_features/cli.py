"""Command-line plumbing for the job entry point: arguments, run ids, logging, the session."""

from __future__ import annotations

import argparse
import logging
import re
import secrets
import tempfile
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fruits_features.config import JobConfig
from fruits_features.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,127}$")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own exit is also 2, but with usage noise
        raise ConfigError(f"command line: {message}")


def _add_config(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument("--config", required=True, help="YAML config, e.g. conf/local.yaml")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=f"override one config key, e.g. --set {example} (repeatable)",
    )


def _job_parser(prog: str, description: str, *, model: bool = False) -> argparse.ArgumentParser:
    parser = _Parser(prog=prog, description=description)
    _add_config(parser, "model.weights=/path/w.h5")
    if model:
        parser.add_argument("--model", required=True, help="s3://bucket/prefix/<training run>/model/")
    parser.add_argument("--input", help="s3://bucket/prefix/ of <Class>/<file> images (input.uri)")
    parser.add_argument("--output", help="s3://bucket/prefix/ to write <run-id>/ under (output.uri)")
    parser.add_argument("--run-id", help="names the output folder; default: UTC time + random suffix")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Spark's INFO lines too, from its start on (the same as --set spark.log_level=INFO)",
    )
    return parser


def config_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides, with ``--verbose`` as ``spark.log_level=INFO`` after them."""
    overrides: list[str] = list(args.overrides)
    if getattr(args, "verbose", False):
        overrides.append("spark.log_level=INFO")
    return overrides


def build_parser() -> argparse.ArgumentParser:
    """The job's arguments (the contract other tools call it with)."""
    return _job_parser(
        "extract_features.py",
        "S3 images -> ResNet50 features -> StandardScaler + PCA -> labelled CSV on S3.",
    )


def build_score_parser() -> argparse.ArgumentParser:
    """The scoring job's arguments: the feature job's, plus the model to apply."""
    return _job_parser(
        "score.py",
        "S3 images -> ResNet50 features -> a saved scaler + PCA + classifier -> labels.",
        model=True,
    )


def build_export_parser() -> argparse.ArgumentParser:
    """The ONNX export's arguments: the config's model section says what to export, and where."""
    parser = _Parser(
        prog="export_onnx.py",
        description="Export model.backbone (model.weights, model.image_size) to ONNX at model.onnx, "
        "verified against its source framework (Keras, PyTorch) on sample images.",
    )
    _add_config(parser, "model.onnx=s3://bucket/models/r50.224px.onnx")
    parser.add_argument(
        "--samples", help="a local folder or s3:// prefix of images to verify on (default: input.uri)"
    )
    parser.add_argument("--count", type=int, default=16, help="sample images to verify on (default 16)")
    return parser


def new_run_id() -> str:
    """``20261126T041500Z-3f9a1c``: sortable by time, unique across concurrent submissions."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def check_run_id(run_id: str) -> str:
    """Refuse run ids that would not make one clean S3 folder name.

    Raises:
        ConfigError: naming ``--run-id``.
    """
    if not _RUN_ID_RE.match(run_id):
        raise ConfigError(f"--run-id {run_id!r}: use 1-128 letters, digits, '.', '_', '=' or '-' (no '/')")
    return run_id


def configure_logging(level: int = logging.INFO) -> None:
    """Log lines with time, level and module, once, for the driver."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


LOG4J2_FILE = "log4j2.properties"
VERBOSE_LEVELS = ("ALL", "DEBUG", "INFO")


def quiet_spark_console(log_level: str) -> bool:
    """Give the driver's JVM the project's log4j2 settings before Spark starts; True if applied.

    Spark logs some 40 INFO lines while its context starts, before ``setLogLevel`` can act. Under
    ``spark-submit`` the JVM runs before this Python driver does, so the settings are applied
    to it through the gateway, from the file shipped in this package (a wheel or a zip alike).
    Left alone: a verbose ``log_level``, or a ``log4j2.configurationFile`` of the user's own.
    Where the JVM refuses (another Spark line), Spark's own logging stays: nothing fails.
    """
    if log_level in VERBOSE_LEVELS:
        return False
    from py4j.protocol import Py4JError
    from pyspark import SparkContext

    SparkContext._ensure_initialized()  # the gateway to spark-submit's JVM (or a new one)
    jvm = SparkContext._jvm
    assert jvm is not None
    system = jvm.java.lang.System
    if system.getProperty("log4j2.configurationFile") or system.getProperty("log4j.configurationFile"):
        return False
    settings = resources.files("fruits_features").joinpath(LOG4J2_FILE).read_text(encoding="utf-8")
    with tempfile.NamedTemporaryFile("w", suffix=".properties", prefix="log4j2-", delete=False) as file:
        file.write(settings)
    try:
        # Spark sets up its logging once per JVM, on first use, and loads its own defaults then
        # (spark-submit resets it before the application): done now, so that the context's
        # start does not replace the settings below.
        jvm.org.apache.spark.SparkConf(False).initializeLogIfNecessary(False)
        jvm.org.apache.logging.log4j.core.config.Configurator.reconfigure(
            jvm.java.net.URI.create(Path(file.name).as_uri())
        )
    except Py4JError as exc:
        logging.getLogger(__name__).debug("Spark's logging left as it is: %s", exc)
        return False
    finally:
        Path(file.name).unlink(missing_ok=True)
    return True


def build_session(config: JobConfig) -> SparkSession:
    """The SparkSession with ``spark.conf`` applied; the master comes from ``spark-submit``.

    The console stays quiet (Spark's warnings and errors only) unless ``spark.log_level`` is
    verbose: see :func:`quiet_spark_console`.
    """
    from pyspark.sql import SparkSession

    quiet_spark_console(config.spark.log_level)
    builder = SparkSession.builder.appName(config.spark.app_name)
    for key, value in config.spark.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(config.spark.log_level)
    return spark


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """A short human summary of a finished run, from its manifest."""
    counts = manifest["counts"]
    timings = manifest["timings_seconds"]
    embed = timings.get("load_and_embed") or 0.0
    pca = manifest["pca"]
    cumulative = pca["cumulative_explained_variance"]
    target = pca.get("variance_target")
    chosen = f" (the fewest for {100 * target:g}%)" if target is not None else ""
    lines = [
        f"run {manifest['run_id']}",
        f"  keys listed      {counts['keys_listed']} ({counts['keys_skipped']} not images, skipped)",
        f"  images           {counts['images']}",
        f"  featurized       {counts['featurized']}",
        f"  rejected         {counts['rejected']}",
        f"  PCA k={pca['k']}         {100 * cumulative[-1]:.1f}% of the variance explained"
        f" (first component {100 * pca['explained_variance'][0]:.1f}%){chosen}",
    ]
    labels = manifest.get("labels")
    if labels:
        folders = sum(len(names) for names in labels["classes"].values())
        kinds = len(labels["classes"])
        lines.append(f"  labels           {labels['rule']}: {folders} folders, {kinds} labels")
    increment = manifest.get("incremental")
    if increment:
        lines.append(
            f"  incremental      {increment['mode']} on {increment['previous_run']}: {increment['new']} new, "
            f"{increment['changed']} changed, {increment['unchanged']} unchanged, "
            f"{increment['removed']} removed"
        )
    classifier = manifest.get("classifier")
    if classifier and classifier.get("status") == "applied":
        lines.append(f"  classifier       the previous run's, applied: {classifier['predictions']}")
    elif classifier and classifier.get("status") == "trained":
        lines += [
            f"  classifier       accuracy {100 * classifier['accuracy']:.1f}%, macro F1 "
            f"{classifier['macro_f1']:.3f} on {classifier['test_images']} test images "
            f"({classifier['classes']} classes, {classifier['train_images']} training images"
            f"{', classes weighted' if classifier.get('class_weight') == 'balanced' else ''})",
            f"  model            {classifier['model']}",
        ]
    elif classifier:
        lines.append(f"  classifier       skipped: {classifier.get('reason', '')}")
    lines += [
        f"  embed stage      {embed:.1f}s, {counts['images'] / embed if embed else 0:.2f} images/s",
        f"  wall time        {timings['total']:.1f}s",
        f"  output           {manifest['output']}",
    ]
    if manifest.get("report"):
        lines.append(f"  report           {manifest['report']}")
    return lines


# A scoring summary lists each class's recall and precision up to this many classes.
SUMMARY_CLASSES = 10


def score_summary_lines(manifest: dict[str, Any]) -> list[str]:
    """A short human summary of a finished scoring run, from its manifest."""
    counts = manifest["counts"]
    timings = manifest["timings_seconds"]
    model = manifest["scoring_model"]
    lines = [
        f"scoring run {manifest['run_id']}",
        f"  model            {model['uri']} (trained by run {model['run_id']}, {model['image_size']}px)",
        f"  images           {counts['images']} ({counts['rejected']} rejected)",
        f"  scored           {counts['featurized']}",
    ]
    evaluation = manifest.get("classifier") or {}
    if evaluation.get("status") == "evaluated":
        lines.append(
            f"  accuracy         {100 * evaluation['accuracy']:.1f}% on {evaluation['test_images']} images "
            f"labelled with the model's classes, macro F1 {evaluation['macro_f1']:.3f}"
        )
        present = {label: s for label, s in evaluation["per_class"].items() if s["support"]}
        for label, scores in present.items() if len(present) <= SUMMARY_CLASSES else ():
            lines.append(
                f"    {label:<20} recall {100 * scores['recall']:5.1f}% of {scores['support']}, "
                f"precision {100 * scores['precision']:5.1f}% of {scores['predicted']} predicted"
            )
        for confusion in evaluation["most_confused"][:3]:
            lines.append(f"    {confusion['true']} taken for {confusion['predicted']}: {confusion['count']}")
    lines += [
        f"  wall time        {timings['total']:.1f}s",
        f"  predictions      {manifest['output']}/predictions/",
    ]
    return lines
