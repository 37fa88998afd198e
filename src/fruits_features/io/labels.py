"""The label an image is learnt and scored by: its class folder (``labels.rule: folder``), the fruit
the folder names (``fruit``), or an explicit table (``table``).

Fruits 360's folders name a fruit and a variety (``Apple Braeburn``, ``Banana Lady Finger``). A model
that tells apples from bananas wants the fruit: with 13 apple varieties against one orange class,
every doubtful photo leans toward "some apple". The fruit is the folder's first word, capitalised,
for all but the Fruits 360 classes in :data:`FRUITS360_FRUITS` (each of the 131 classes checked).

The listing labels every image by its folder; :func:`resolve_labels` maps the folders found to
labels on the driver (a few hundred at most), and :func:`relabel` applies that mapping to a keys
frame, so that every listing mode gets the same labels. :func:`with_folder` puts the folder back
beside the label in what a run writes, where the two differ.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fruits_features.config_sections import LabelsConfig
from fruits_features.errors import ConfigError
from fruits_features.io.uri import S3Uri

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

FOLDER_COL = "folder"

# The Fruits 360 classes whose first word is not the fruit they show (the other classes of the
# 131 are their first word: "Tomato Cherry Red" is a tomato, "Cherry Wax Red" a cherry). Maracuja is
# the passion fruit's Portuguese name: one fruit, two Fruits 360 classes.
FRUITS360_FRUITS: Mapping[str, str] = {
    "Cactus fruit": "Cactus fruit",
    "Maracuja": "Passion Fruit",
    "Nut Forest": "Nut Forest",
    "Nut Pecan": "Pecan",
    "Passion Fruit": "Passion Fruit",
    "Potato Sweet": "Sweet Potato",
}


class UnknownClassesError(ConfigError):
    """``labels.rule: table`` and listed folders that the table does not name (exit code 2)."""


def fruit_of(folder: str) -> str:
    """The fruit a class folder names: :data:`FRUITS360_FRUITS`' entry, else its first word with a
    capital initial (``Apple Braeburn`` -> ``Apple``, ``banana`` -> ``Banana``)."""
    if folder in FRUITS360_FRUITS:
        return FRUITS360_FRUITS[folder]
    words = folder.split()
    if not words:
        return folder
    return words[0][:1].upper() + words[0][1:]


def keeps_folder(rule: LabelsConfig) -> bool:
    """Whether every label is its folder (``rule: folder`` and no table)."""
    return rule.rule == "folder" and not rule.table


def label_of(rule: LabelsConfig, folder: str) -> str | None:
    """The label of ``folder``; ``None`` where ``rule: table`` does not name it."""
    if folder in rule.table:
        return rule.table[folder]
    if rule.rule == "fruit":
        return fruit_of(folder)
    if rule.rule == "folder":
        return folder
    return None


@dataclass(frozen=True)
class Labels:
    """The folders a listing found and the label of each.

    Attributes:
        mapping: folder -> label for every folder found (``""`` -> ``""``: images outside a folder,
            which only a scoring run lists).
        unknown: folders ``rule: table`` does not name (a scoring run labels them ``""``).
    """

    rule: LabelsConfig
    mapping: Mapping[str, str]
    unknown: tuple[str, ...] = ()

    def classes(self) -> dict[str, list[str]]:
        """Label -> its folders, sorted; the manifest's ``labels.classes``."""
        grouped: dict[str, list[str]] = {}
        for folder, label in sorted(self.mapping.items()):
            if folder:
                grouped.setdefault(label, []).append(folder)
        return dict(sorted(grouped.items()))

    def section(self) -> dict[str, Any]:
        """The manifest's ``labels`` section."""
        rule = self.rule.model_dump(mode="json")
        return {**rule, "classes": self.classes(), "unknown_folders": list(self.unknown)}


def resolve_labels(rule: LabelsConfig, folders: Iterable[str], *, unknown_allowed: bool) -> Labels:
    """Map every folder a listing found to its label.

    Args:
        rule: ``labels``' settings.
        folders: the folder of every listed image (``""``: outside a folder).
        unknown_allowed: ``False`` (the feature job): a folder ``rule: table`` does not name is an
            error; ``True`` (scoring): it is labelled ``""`` (unlabelled) with a warning.

    Raises:
        UnknownClassesError: naming the folders the table does not name.
    """
    mapping: dict[str, str] = {}
    unknown: list[str] = []
    for folder in sorted(set(folders)):
        label = "" if folder == "" else label_of(rule, folder)
        if label is None:
            unknown.append(folder)
            label = ""
        mapping[folder] = label
    if unknown and not unknown_allowed:
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        shown = ", ".join(repr(f) for f in unknown[:10]) + more
        raise UnknownClassesError(
            f"labels.rule table: {len(unknown)} listed class folders have no entry in labels.table: {shown}"
        )
    if unknown:
        log.warning("%d folders are not in labels.table, scored unlabelled: %s", len(unknown), unknown[:10])
    merged = {label: names for label, names in Labels(rule, mapping).classes().items() if len(names) > 1}
    if merged:
        log.info(
            "labels.rule %s: %d folders -> %d labels (%s)",
            rule.rule,
            sum(1 for f in mapping if f),
            len({label for f, label in mapping.items() if f}),
            "; ".join(f"{label}: {len(names)} folders" for label, names in list(merged.items())[:8]),
        )
    return Labels(rule, mapping, tuple(unknown))


def relabel(frame: DataFrame, mapping: Mapping[str, str]) -> DataFrame:
    """Stage: ``label`` (a folder; null for a skipped key) replaced by its label in ``mapping``."""
    from pyspark.sql import functions as F

    pairs = [F.lit(value) for item in sorted(mapping.items()) for value in item]
    return frame.withColumn("label", F.element_at(F.create_map(*pairs), F.col("label")))


def with_folder(frame: DataFrame, rule: LabelsConfig, input_uri: S3Uri) -> DataFrame:
    """Stage: ``folder`` after ``label``, where ``rule`` makes labels that are not the folder: the
    image's class folder below ``input_uri``, as the listing read it (``""`` for an image directly
    under the prefix, which only a scoring run lists); ``frame`` as it is otherwise."""
    if keeps_folder(rule) or FOLDER_COL in frame.columns:
        return frame
    from pyspark.sql import functions as F

    root = f"s3://{input_uri.bucket}/{input_uri.prefix}"
    relative = F.col("path").substr(F.lit(len(root) + 1), F.length("path"))
    folder = F.regexp_extract(relative, r"^(?:.*/)?([^/]+)/[^/]*$", 1)
    columns: list[Any] = []
    for name in frame.columns:
        columns.append(F.col(name))
        if name == "label":
            columns.append(folder.alias(FOLDER_COL))
    return frame.select(*columns)
