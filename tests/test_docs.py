"""The docs stay true: the configuration reference is the config model's own, and every relative link
in the README and docs/ reaches a file and a heading that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fruits_features.dev.config_reference import TARGET, render

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_configuration_reference_is_written_from_the_config_model() -> None:
    assert TARGET.read_text() == render(), "docs/configuration.md is stale: run `make docs`"


def test_every_config_key_is_in_the_reference() -> None:
    from fruits_features.config import JobConfig

    text = TARGET.read_text()
    for name, field in JobConfig.model_fields.items():
        section = field.annotation
        keys = [f"{name}.{key}" for key in getattr(section, "model_fields", {})] or [name]
        for key in keys:
            assert f"| `{key}` |" in text, key


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    in_code = False
    found = set()
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            found.add(slug(line.lstrip("#")))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_reach_a_file_and_a_heading(page: Path) -> None:
    broken = []
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (anchor and file.suffix == ".md" and anchor not in anchors(file)):
            broken.append(target)
    assert broken == []
