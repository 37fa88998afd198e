"""The cluster's pinned dependencies: one requirements file per engine (``model.engine``), the
run-time closure of what that engine's nodes import, every version from ``constraints.txt``.

See :mod:`fruits_features.deploy.package` for what each file holds and why pyspark, py4j and the
installer tooling are left out.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from fruits_features.deploy.errors import PackageError

PROJECT = "fruits-features"
# model.engine -> the pyproject.toml extras its nodes install beside the core dependencies.
ENGINE_EXTRAS: dict[str, tuple[str, ...]] = {
    "onnxruntime": (),
    "tensorflow": ("tensorflow",),
    "openvino": ("openvino",),
    "auto": ("openvino",),  # OpenVINO where the CPU has native bf16, ONNX Runtime elsewhere
}
ENGINES = tuple(ENGINE_EXTRAS)
CONSTRAINTS = "constraints.txt"
# Provided by the cluster: EMR's own Spark, whose Python package spark-submit puts on the path.
PROVIDED_BY_EMR = frozenset({"pyspark", "py4j"})
# Installer tooling that `pip freeze` leaves out of constraints.txt (tensorflow and astunparse
# declare setuptools and wheel): a node's venv keeps the versions its python3.11 comes with.
INSTALLER_TOOLING = frozenset({"pip", "setuptools", "wheel"})

_PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


@dataclass(frozen=True)
class Pin:
    """One pinned distribution, ``name==version``."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


def read_pins(path: Path) -> dict[str, Pin]:
    """The ``name==version`` lines of a constraints or requirements file, by canonical name.

    Raises:
        PackageError: if the file is missing or a line is not a plain pin.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise PackageError(f"{path}: {exc.strerror or exc}") from exc
    pins: dict[str, Pin] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN_RE.match(line)
        if not match:
            raise PackageError(f"{path}:{number}: expected name==version, got {line!r}")
        pins[canonicalize_name(match.group(1))] = Pin(match.group(1), match.group(2))
    return pins


def requirements_name(engine: str) -> str:
    """The requirements file of the nodes that run ``engine``: ``requirements-emr-<engine>.txt``."""
    if engine not in ENGINE_EXTRAS:
        raise PackageError(f"unknown engine {engine!r}: expected one of {', '.join(ENGINES)}")
    return f"requirements-emr-{engine}.txt"


REQUIREMENTS = {engine: requirements_name(engine) for engine in ENGINES}


def declared_requirements(pyproject: Path, extras: Iterable[str] = ()) -> list[Requirement]:
    """The project's direct dependencies in ``pyproject.toml``, with those of ``extras``.

    Raises:
        PackageError: if the file cannot be read or an extra is not declared.
    """
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise PackageError(f"{pyproject}: no [project] table to read the dependencies from ({exc})") from exc
    lines = list(project.get("dependencies", []))
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise PackageError(f"{pyproject} declares no extra {extra!r}")
        lines += optional[extra]
    return [Requirement(line) for line in lines]


def runtime_closure(requirements: Iterable[Requirement]) -> set[str]:
    """Canonical names of every distribution ``requirements`` need at run time, themselves included.

    Walks the installed distributions' ``Requires-Dist`` metadata, evaluating environment markers
    for this interpreter and following requested extras.

    Raises:
        PackageError: if a needed distribution is not installed.
    """
    seen: set[str] = set()
    pending: list[tuple[str, frozenset[str]]] = []
    for requirement in requirements:
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            dependency = canonicalize_name(requirement.name)
            seen.add(dependency)
            pending.append((dependency, frozenset(requirement.extras)))
    visited: set[tuple[str, frozenset[str]]] = set()
    while pending:
        name, extras = pending.pop()
        if (name, extras) in visited:
            continue
        visited.add((name, extras))
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError as exc:
            raise PackageError(f"{name} is needed at run time but not installed: run make setup") from exc
        for line in requires:
            requirement = Requirement(line)
            wanted = any(
                requirement.marker is None or requirement.marker.evaluate({"extra": extra})
                for extra in (extras or {""})
            )
            if not wanted:
                continue
            dependency = canonicalize_name(requirement.name)
            seen.add(dependency)
            pending.append((dependency, frozenset(requirement.extras)))
    seen.discard(canonicalize_name(PROJECT))
    return seen


def cluster_pins(constraints: Path, requirements: Iterable[Requirement]) -> list[Pin]:
    """The pins of the nodes' requirements: the run-time closure of ``requirements`` less EMR's own Spark.

    Raises:
        PackageError: if a needed distribution has no pin in ``constraints``, or the installed
            version differs from it (the environment is stale: ``make setup``).
    """
    pins = read_pins(constraints)
    result: list[Pin] = []
    for name in sorted(runtime_closure(requirements) - PROVIDED_BY_EMR - INSTALLER_TOOLING):
        pin = pins.get(name)
        if pin is None:
            raise PackageError(f"{name} is needed at run time but has no pin in {constraints}")
        installed = metadata.version(name)
        if installed != pin.version:
            raise PackageError(
                f"{name} {installed} is installed but {constraints} pins {pin.version}: run make setup"
            )
        result.append(pin)
    return result


def engine_pins(root: Path, engine: str) -> list[Pin]:
    """The pins of the nodes that run ``engine``, checked against the ranges ``pyproject.toml`` declares.

    Raises:
        PackageError: for an unknown engine, a missing pin or a pin outside its declared range.
    """
    requirements_name(engine)  # an unknown engine is refused by name
    extras = ENGINE_EXTRAS[engine]
    pyproject = root / "pyproject.toml"
    pins = cluster_pins(root / CONSTRAINTS, declared_requirements(pyproject, extras))
    check_project_ranges(pins, pyproject, extras)
    return pins


def check_project_ranges(pins: Iterable[Pin], pyproject: Path, extras: Iterable[str] = ()) -> None:
    """Make sure each of the project's direct dependencies (and those of ``extras``) is pinned inside
    its declared range.

    Raises:
        PackageError: naming the dependency, its pin and its range.
    """
    by_name = {canonicalize_name(pin.name): pin for pin in pins}
    for requirement in declared_requirements(pyproject, extras):
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue  # another platform
        name = canonicalize_name(requirement.name)
        if name in PROVIDED_BY_EMR:
            continue
        pin = by_name.get(name)
        if pin is None:
            raise PackageError(f"{requirement.name} is a dependency in {pyproject} but is not pinned")
        if not requirement.specifier.contains(pin.version, prereleases=True):
            raise PackageError(f"{pin} is outside the range {requirement} of {pyproject}")


def requirements_text(pins: Iterable[Pin], engine: str, constraints_name: str = CONSTRAINTS) -> str:
    """The body of ``requirements-emr-<engine>.txt``."""
    extras = ENGINE_EXTRAS[engine]
    what = f"{PROJECT}[{','.join(extras)}]" if extras else PROJECT
    header = [
        f"# Generated by `make package` from {constraints_name}: the run-time dependencies of {what},",
        f"# pinned, for the EMR nodes that run model.engine: {engine}",
        f"# (installed by bootstrap-emr.sh --engine {engine} into a Python 3.11 venv).",
        "# pyspark and py4j are not here: the nodes run EMR's own Spark 3.5; nor are pip, setuptools, wheel.",
    ]
    return "\n".join([*header, *(str(pin) for pin in pins)]) + "\n"
