"""The package's dependency rules (docs/architecture.md), checked on the source: each module's imports,
at module level and inside functions alike, and what importing a light module drags in."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "fruits_features"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (``from x import y`` gives ``x`` and ``x.y``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def importers_of(target: str) -> set[str]:
    return {
        m
        for m, imported in MODULES.items()
        if any(i == target or i.startswith(target + ".") for i in imported)
    }


def uses(module: str, prefix: str) -> set[str]:
    return {i for i in MODULES[module] if i == prefix or i.startswith(prefix + ".")}


def test_the_rules_see_every_layer() -> None:
    for layer in ("io", "features", "stages", "reporting", "deploy", "dev"):
        assert any(m.startswith(f"fruits_features.{layer}.") for m in MODULES), layer
    assert "pyspark.sql" in MODULES["fruits_features.pipeline"]  # the parser finds imports at all


def test_nothing_under_features_but_the_udf_imports_pyspark() -> None:
    offenders = {
        m: uses(m, "pyspark")
        for m in MODULES
        if m.startswith("fruits_features.features") and m != "fruits_features.features.udf"
    }
    assert {m: found for m, found in offenders.items() if found} == {}


def test_the_config_module_imports_no_io_and_only_pure_modules() -> None:
    package = {i for i in MODULES["fruits_features.config"] if i.startswith("fruits_features.")}
    allowed = (
        "fruits_features.config_sections",
        "fruits_features.errors",
        "fruits_features.io.uri",
        "fruits_features.features.model_paths",
        "fruits_features.features.backbones",
    )
    assert {i for i in package if not i.startswith(allowed)} == set()
    sections = {i for i in MODULES["fruits_features.config_sections"] if i.startswith("fruits_features.")}
    assert sections == set()
    for io_library in ("boto3", "botocore", "pyspark", "s3transfer"):
        assert uses("fruits_features.config", io_library) == set()
        assert uses("fruits_features.config_sections", io_library) == set()


def test_the_jobs_orchestration_modules_never_import_each_other() -> None:
    assert uses("fruits_features.pipeline", "fruits_features.scoring") == set()
    assert uses("fruits_features.scoring", "fruits_features.pipeline") == set()
    # and no library module reaches up into them (only cli-level code and jobs/ do)
    assert importers_of("fruits_features.pipeline") == set()
    assert importers_of("fruits_features.scoring") == set()


def test_lower_layers_never_import_higher_ones() -> None:
    higher = {
        "fruits_features.io": (
            "fruits_features.features",
            "fruits_features.stages",
            "fruits_features.reporting",
        ),
        "fruits_features.features": ("fruits_features.stages", "fruits_features.reporting"),
        "fruits_features.stages": ("fruits_features.reporting", "fruits_features.cli"),
        "fruits_features.reporting": ("fruits_features.cli",),
    }
    offenders = {
        m: found
        for layer, banned in higher.items()
        for m in MODULES
        if m.startswith(layer + ".")
        for found in [{i for i in MODULES[m] if i.startswith(banned)}]
        if found
    }
    assert offenders == {}


def test_the_jobs_never_import_the_development_helpers() -> None:
    assert {
        m for m in importers_of("fruits_features.dev") if not m.startswith("fruits_features.dev")
    } == set()


def test_no_module_is_over_the_size_limit() -> None:
    sizes = {module_name(p): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}


@pytest.mark.parametrize(
    ("module", "banned"),
    [
        ("fruits_features.config", ("boto3", "pyspark")),  # reading the config loads no I/O
        ("fruits_features.settings", ("pyspark",)),  # the ONNX export tool builds its S3 settings here
        ("fruits_features.features.engines", ("pyspark",)),
        ("fruits_features.features.onnx_export", ("pyspark",)),
    ],
)
def test_importing_a_light_module_loads_no_heavy_library(module: str, banned: tuple[str, ...]) -> None:
    code = f"import sys, {module}; print(' '.join(m for m in {banned!r} if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == ""
