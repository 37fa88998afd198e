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
      requirements-emr-<engine>.lock               with --environment: those pins with their hashes
      environment-<engine>.tar.gz                  with --environment: the packed venv the nodes unpack
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
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from fruits_features.deploy.environment import pack_environment
from fruits_features.deploy.errors import PackageError
from fruits_features.deploy.pins import (
    CONSTRAINTS,
    ENGINES,
    REQUIREMENTS,
    engine_pins,
    read_pins,
    requirements_text,
)

log = logging.getLogger(__name__)

ENTRY_POINT = "extract_features.py"
BOOTSTRAP = "bootstrap-emr.sh"
SUMS = "SHA256SUMS"
_SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip file can hold


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
    def environment(self) -> str | None:
        """The packed environment's file name (``environment-<engine>.tar.gz``), if one was built."""
        return next((f for f in self.files if f.startswith("environment-") and f.endswith(".tar.gz")), None)

    @property
    def archive(self) -> str:
        """The ``--py-files`` archive's file name."""
        return f"fruits_features-{self.version}.zip"


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


def build_package(
    root: Path,
    dist: Path,
    python: str = sys.executable,
    *,
    environment: str | None = None,
    environment_python: str = "python3.11",
    python_prefix: str = "/usr",
) -> Package:
    """Build ``dist`` from the repository at ``root``.

    Args:
        root: the repository (``pyproject.toml``, ``src/``, ``jobs/``, ``conf/``, ``scripts/``).
        dist: the folder to (re)create; its previous content is removed.
        python: the interpreter whose pip builds the wheel, and whose environment gives the
            dependency closure (the project's ``.venv``).
        environment: an engine whose environment to pack as well
            (:mod:`fruits_features.deploy.environment`); ``None``: none.
        environment_python: the interpreter that environment is made with.
        python_prefix: where the nodes have that interpreter.

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
    if environment is not None:
        if environment not in REQUIREMENTS:
            raise PackageError(f"--environment must be one of {sorted(REQUIREMENTS)}, got {environment!r}")
        pack_environment(dist, environment, wheel, environment_python, python_prefix)
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
    parser.add_argument(
        "--environment", choices=sorted(REQUIREMENTS), help="also pack this engine's environment"
    )
    parser.add_argument("--environment-python", default="python3.11", help="its interpreter")
    parser.add_argument("--python-prefix", default="/usr", help="where the nodes have that interpreter")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        package = build_package(
            root,
            (args.dist or root / "dist").resolve(),
            environment=args.environment,
            environment_python=args.environment_python,
            python_prefix=args.python_prefix,
        )
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
