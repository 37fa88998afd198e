"""``make package``: everything a cluster needs, in ``dist/``.

::

    dist/
      fruits_features-<version>-py3-none-any.whl   the project, installed on every node by the bootstrap
      fruits_features-<version>.zip                the same package for spark-submit --py-files
      extract_features.py                          the entry point
      bootstrap-emr.sh                             the EMR bootstrap action
      requirements-emr-onnxruntime.txt             the nodes' pinned dependencies, model.engine: onnxruntime
      requirements-emr-tensorflow.txt              the same with TensorFlow, model.engine: tensorflow
      constraints.txt                              the project's pins, for the bootstrap's check
      conf/*.yaml                                  the configs
      SHA256SUMS                                   what was built; its digest names the S3 folder

One requirements file per engine (``model.engine``), each the run-time dependency closure of what
that engine's nodes need, read from the installed ``.venv`` (which ``make setup`` installs from
``constraints.txt``), with every version taken from ``constraints.txt``:

- ``requirements-emr-onnxruntime.txt``: the project's own dependencies (``[project] dependencies``
  of ``pyproject.toml``, ONNX Runtime among them) and theirs. No TensorFlow, Keras, tf2onnx or
  onnx, nor anything only they need: the ONNX engine's nodes never import them.
- ``requirements-emr-tensorflow.txt``: the same plus the ``tensorflow`` extra (TensorFlow, Keras)
  and their dependencies.

The project's direct dependencies are read from ``pyproject.toml``, the source the wheel is built
from, not from the installed project's metadata (which an editable install leaves stale until the
next ``make setup``). pyspark and py4j are left out: an EMR node runs its own Spark (3.5 on EMR 7),
and spark-submit puts that Spark's Python package first on the path. So are pip, setuptools and
wheel, which ``pip freeze`` leaves out of ``constraints.txt``: a node's venv keeps the versions its
Python comes with.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from fruits_features.deploy.errors import PackageError

log = logging.getLogger(__name__)

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
ENTRY_POINT = "extract_features.py"
BOOTSTRAP = "bootstrap-emr.sh"
SUMS = "SHA256SUMS"
# Provided by the cluster: EMR's own Spark, whose Python package spark-submit puts on the path.
PROVIDED_BY_EMR = frozenset({"pyspark", "py4j"})
# Installer tooling that `pip freeze` leaves out of constraints.txt (tensorflow and astunparse
# declare setuptools and wheel): a node's venv keeps the versions its python3.11 comes with.
INSTALLER_TOOLING = frozenset({"pip", "setuptools", "wheel"})

_SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip file can hold
_PIN_RE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)$")


@dataclass(frozen=True)
class Pin:
    """One pinned distribution, ``name==version``."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class Package:
    """A built ``dist/``: its files and the name of the S3 folder it is uploaded to."""

    dist: Path
    version: str
    files: tuple[str, ...]
    digest: str

    @property
    def tag(self) -> str:
        """``0.1.0-3f9a1c2b4d5e``: version plus a digest of every file, one S3 folder per build."""
        return f"{self.version}-{self.digest[:12]}"

    @property
    def wheel(self) -> str:
        """The wheel's file name."""
        return f"fruits_features-{self.version}-py3-none-any.whl"

    @property
    def archive(self) -> str:
        """The ``--py-files`` archive's file name."""
        return f"fruits_features-{self.version}.zip"


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


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _build_wheel(root: Path, dist: Path, python: str) -> Path:
    # Built from a copy holding only what the wheel needs, so that the build leaves no
    # build/ or *.egg-info/ behind in the working tree.
    with tempfile.TemporaryDirectory(prefix="fruits-features-build-") as scratch:
        source = Path(scratch) / "source"
        source.mkdir()
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(root / name, source / name)
        shutil.copytree(
            root / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
        command = [
            python,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--quiet",
            "--wheel-dir",
            str(dist),
            str(source),
        ]
        # A fixed timestamp makes the wheel reproducible: the same source gives the same digest,
        # hence the same artifact folder, and a resubmission uploads to where it did before.
        env = {**os.environ, "SOURCE_DATE_EPOCH": _SOURCE_DATE_EPOCH}
        result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        if result.returncode != 0:
            raise PackageError(f"building the wheel failed: {result.stderr.strip()[-2000:]}")
    wheels = sorted(dist.glob("fruits_features-*.whl"))
    if len(wheels) != 1:
        raise PackageError(f"expected one wheel in {dist}, found {[w.name for w in wheels]}")
    return wheels[0]


def _write_archive(wheel: Path, archive: Path) -> None:
    # The package alone, for --py-files: Spark puts .zip files (not .whl) on every Python
    # worker's path, ahead of site-packages.
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            if info.filename.startswith("fruits_features/"):
                target.writestr(info, source.read(info))


def build_package(root: Path, dist: Path, python: str = sys.executable) -> Package:
    """Build ``dist`` from the repository at ``root``.

    Args:
        root: the repository (``pyproject.toml``, ``src/``, ``jobs/``, ``conf/``, ``scripts/``).
        dist: the folder to (re)create; its previous content is removed.
        python: the interpreter whose pip builds the wheel, and whose environment gives the
            dependency closure (the project's ``.venv``).

    Returns:
        The built package.

    Raises:
        PackageError: for a failed build, a missing pin or a pin outside its declared range.
    """
    pins = {engine: engine_pins(root, engine) for engine in ENGINES}
    if dist.exists():
        shutil.rmtree(dist)
    dist.mkdir(parents=True)
    wheel = _build_wheel(root, dist, python)
    version = wheel.name.split("-")[1]
    _write_archive(wheel, dist / f"fruits_features-{version}.zip")
    shutil.copy2(root / "jobs" / ENTRY_POINT, dist / ENTRY_POINT)
    shutil.copy2(root / "scripts" / BOOTSTRAP, dist / BOOTSTRAP)
    shutil.copy2(root / CONSTRAINTS, dist / CONSTRAINTS)
    (dist / "conf").mkdir()
    for config in sorted((root / "conf").glob("*.yaml")):
        shutil.copy2(config, dist / "conf" / config.name)
    for engine, engine_set in pins.items():
        (dist / REQUIREMENTS[engine]).write_text(requirements_text(engine_set, engine), encoding="utf-8")
    files = sorted(p.relative_to(dist).as_posix() for p in dist.rglob("*") if p.is_file())
    (dist / SUMS).write_text("".join(f"{_sha256(dist / name)}  {name}\n" for name in files), encoding="utf-8")
    return load_package(dist)


def load_package(dist: Path) -> Package:
    """Read a built ``dist`` and verify every file against ``SHA256SUMS``.

    Raises:
        PackageError: if ``dist`` was not built, is incomplete, or was changed after the build.
    """
    sums_path = dist / SUMS
    if not sums_path.is_file():
        raise PackageError(f"{dist} holds no built package ({SUMS} is missing): run make package")
    sums = sums_path.read_text(encoding="utf-8")
    files: list[str] = []
    for line in sums.splitlines():
        expected, _, name = line.partition("  ")
        path = dist / name
        if not path.is_file():
            raise PackageError(f"{path} is listed in {SUMS} but missing: run make package")
        if _sha256(path) != expected:
            raise PackageError(f"{path} changed after the build: run make package")
        files.append(name)
    wheels = [name for name in files if name.endswith(".whl")]
    if len(wheels) != 1:
        raise PackageError(f"{dist} should hold exactly one wheel, found {wheels}: run make package")
    package = Package(
        dist=dist,
        version=wheels[0].split("-")[1],
        files=tuple(files),
        digest=hashlib.sha256(sums.encode("utf-8")).hexdigest(),
    )
    for needed in (package.archive, ENTRY_POINT, BOOTSTRAP, *REQUIREMENTS.values(), CONSTRAINTS):
        if needed not in files:
            raise PackageError(f"{dist} has no {needed}: run make package")
    return package


def main(argv: list[str] | None = None) -> int:
    """``python -m fruits_features.deploy.package [--root .] [--dist dist]``."""
    from fruits_features.cli import configure_logging
    from fruits_features.errors import FruitsFeaturesError

    configure_logging()
    parser = argparse.ArgumentParser(description="Build dist/: what an EMR cluster or an EC2 machine needs.")
    parser.add_argument("--root", type=Path, default=Path.cwd(), help="the repository (default: .)")
    parser.add_argument("--dist", type=Path, default=None, help="output folder (default: <root>/dist)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        package = build_package(root, (args.dist or root / "dist").resolve())
    except FruitsFeaturesError as exc:
        log.error("%s", exc)
        return exc.exit_code
    log.info("built %s (%d files, artifact folder %s):", package.dist, len(package.files), package.tag)
    for name in package.files:
        log.info("  %s", name)
    for engine, name in REQUIREMENTS.items():
        log.info("model.engine %s: %s, %d pins", engine, name, len(read_pins(package.dist / name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
